-- Usage accounting (GET /projects/{id}/usage) and budgets (PUT /projects/{id}/budget).
-- command_usage: one row per finished command, written in the transaction of its finish and
-- keyed by the command, so a retried finish counts nothing twice. `day` is the UTC date the
-- command finished (YYYY-MM-DD), the bucket the per-day totals and the month-to-date cost use.
-- budgets: a project's monthly limit; `exceeded_month` (YYYY-MM) is the month whose
-- budget.exceeded webhook event was sent, so it is sent once a month.

CREATE TABLE command_usage (
    command_id         TEXT PRIMARY KEY REFERENCES commands (id) ON DELETE CASCADE,
    project_id         TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    provider           TEXT NOT NULL,
    day                TEXT NOT NULL,
    input_tokens       BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0
);

CREATE INDEX command_usage_project_day ON command_usage (project_id, day);

CREATE TABLE budgets (
    project_id        TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    monthly_limit_usd DOUBLE PRECISION NOT NULL,
    exceeded_month    TEXT,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
