-- Projects, the command queue, event streams, the audit trail and credentials.
-- Times are INTEGER milliseconds since the Unix epoch, so they compare numerically.

CREATE TABLE projects (
    id           TEXT PRIMARY KEY,
    display_name TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE commands (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    project_id       TEXT NOT NULL REFERENCES projects (id),
    provider         TEXT NOT NULL,
    request          TEXT NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    idempotency_key  TEXT,
    submitted_by     TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    process_started  INTEGER NOT NULL DEFAULT 0,
    idempotent       INTEGER NOT NULL DEFAULT 0,
    result           TEXT,
    error            TEXT,
    event_seq        INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    UNIQUE (project_id, idempotency_key)
);
CREATE INDEX commands_pending ON commands (seq) WHERE status = 'pending';
CREATE INDEX commands_project_pending ON commands (project_id, seq) WHERE status = 'pending';
CREATE INDEX commands_project_running ON commands (project_id) WHERE status = 'running';
CREATE INDEX commands_leases ON commands (lease_expires_at) WHERE status = 'running';

CREATE TABLE events (
    stream TEXT NOT NULL REFERENCES commands (id),
    seq    INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    event  TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
);

CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    project_id TEXT,
    command_id TEXT,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TABLE credentials (
    name            TEXT PRIMARY KEY,
    sealed          BLOB NOT NULL,
    key_fingerprint TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
