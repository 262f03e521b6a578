-- API tokens: only the SHA-256 digest of each secret is kept.
CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    digest     TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    -- JSON array of project ids a member token may use.
    projects   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
