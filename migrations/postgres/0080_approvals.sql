-- Approvals: one row per permission request of a running command, pending until exactly
-- one decision (allowed, denied, expired, cancelled), and each project's approval policy.
-- A decision is announced with NOTIFY rdev_approvals '<approval id>' so the replica whose
-- worker waits for it hears at once.

CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    command_id   TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    project_id   TEXT NOT NULL,
    tool         TEXT NOT NULL,
    tool_call_id TEXT,
    input        JSONB NOT NULL,
    summary      TEXT NOT NULL,
    options      JSONB NOT NULL,
    status       TEXT NOT NULL
        CHECK (status IN ('pending', 'allowed', 'denied', 'expired', 'cancelled')),
    decided_by   TEXT,
    decided_at   TIMESTAMPTZ,
    message      TEXT,
    remember     BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX approvals_project ON approvals (project_id, created_at DESC);
CREATE INDEX approvals_pending ON approvals (command_id) WHERE status = 'pending';

CREATE TABLE approval_policies (
    project_id   TEXT PRIMARY KEY,
    mode         TEXT NOT NULL CHECK (mode IN ('ask', 'deny', 'allow')),
    rules        JSONB NOT NULL,
    timeout_secs BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
