-- How a project was created from a template, and where its CI registration stands.
-- Removing a project removes its setup (ON DELETE CASCADE).

CREATE TABLE project_setups (
    project_id  TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    template    TEXT NOT NULL,
    vars        JSONB NOT NULL,
    repo        TEXT,
    ci_repo     TEXT,
    ci_state    TEXT NOT NULL
        CHECK (ci_state IN ('pending', 'registered', 'failed', 'disabled')),
    ci_repo_id  BIGINT,
    ci_pipeline BIGINT,
    ci_pipeline_status TEXT,
    ci_error    TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
