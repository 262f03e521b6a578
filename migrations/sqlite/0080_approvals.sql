-- Approvals: one row per permission request of a running command, pending until exactly
-- one decision (allowed, denied, expired, cancelled), and each project's approval policy.
-- Times are INTEGER milliseconds since the Unix epoch.

CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    command_id   TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    project_id   TEXT NOT NULL,
    tool         TEXT NOT NULL,
    tool_call_id TEXT,
    input        TEXT NOT NULL,
    summary      TEXT NOT NULL,
    options      TEXT NOT NULL,
    status       TEXT NOT NULL
        CHECK (status IN ('pending', 'allowed', 'denied', 'expired', 'cancelled')),
    decided_by   TEXT,
    decided_at   INTEGER,
    message      TEXT,
    remember     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX approvals_project ON approvals (project_id, created_at DESC);
CREATE INDEX approvals_pending ON approvals (command_id) WHERE status = 'pending';

CREATE TABLE approval_policies (
    project_id   TEXT PRIMARY KEY,
    mode         TEXT NOT NULL CHECK (mode IN ('ask', 'deny', 'allow')),
    rules        TEXT NOT NULL,
    timeout_secs INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
