-- Projects, the command queue, event streams, the audit trail and credentials.

CREATE TABLE projects (
    id           TEXT PRIMARY KEY,
    display_name TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE commands (
    -- Queue order; ids are UUIDv7 but a sequence is cheaper to compare and never ties.
    seq              BIGSERIAL UNIQUE,
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL REFERENCES projects (id),
    provider         TEXT NOT NULL,
    request          JSONB NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    idempotency_key  TEXT,
    submitted_by     TEXT NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    -- Fencing token: incremented by every claim; every write by a worker names it.
    lease_token      BIGINT NOT NULL DEFAULT 0,
    lease_expires_at TIMESTAMPTZ,
    process_started  BOOLEAN NOT NULL DEFAULT false,
    idempotent       BOOLEAN NOT NULL DEFAULT false,
    result           JSONB,
    error            TEXT,
    -- Last sequence number used in this command's event stream.
    event_seq        BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    UNIQUE (project_id, idempotency_key)
);
CREATE INDEX commands_pending ON commands (seq) WHERE status = 'pending';
CREATE INDEX commands_project_pending ON commands (project_id, seq) WHERE status = 'pending';
CREATE INDEX commands_project_running ON commands (project_id) WHERE status = 'running';
CREATE INDEX commands_leases ON commands (lease_expires_at) WHERE status = 'running';
CREATE INDEX commands_project_created ON commands (project_id, seq DESC);

-- Wakes waiting workers on every replica when work may have become available: a command
-- became pending, or a running one ended (freeing its project's slot).
CREATE FUNCTION rdev_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'pending'
       OR (TG_OP = 'UPDATE' AND OLD.status = 'running' AND NEW.status <> 'running') THEN
        PERFORM pg_notify('rdev_work', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER commands_notify_work AFTER INSERT OR UPDATE OF status ON commands
    FOR EACH ROW EXECUTE FUNCTION rdev_notify_work();

CREATE TABLE events (
    stream TEXT NOT NULL REFERENCES commands (id),
    seq    BIGINT NOT NULL,
    at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    event  JSONB NOT NULL,
    PRIMARY KEY (stream, seq)
);

-- Announces a new event by id only (NOTIFY payloads are capped at 8000 bytes); readers
-- fetch the event from the table.
CREATE FUNCTION rdev_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rdev_events', NEW.stream || ':' || NEW.seq);
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION rdev_notify_event();

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    project_id TEXT,
    command_id TEXT,
    -- Exact serialized JSON, so the hashed bytes survive a round trip unchanged.
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);

CREATE FUNCTION rdev_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION rdev_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION rdev_audit_append_only();

CREATE TABLE credentials (
    name            TEXT PRIMARY KEY,
    -- nonce || XChaCha20-Poly1305 ciphertext, the name as associated data.
    sealed          BYTEA NOT NULL,
    key_fingerprint TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
