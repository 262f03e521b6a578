-- What each command changed in its project's workspace (GET /commands/{id}/changes): the
-- worker snapshots the workspace with git when the command starts and diffs it when the run
-- is over, then stores the bounded change set here, so it survives later edits of the
-- workspace. Exactly one of `changes` (the change set) and `unavailable` (why there is none:
-- no git in the workspace, a failed snapshot) is set.

CREATE TABLE command_changes (
    command_id  TEXT PRIMARY KEY REFERENCES commands (id) ON DELETE CASCADE,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    changes     JSONB,
    unavailable TEXT
);
