-- Dashboard sessions (/ui/): a browser signs in with an API token and keeps only a random
-- session id in an HttpOnly cookie. The row holds the SHA-256 digest of that id, never the
-- id, and the digest of the token it stands for (as api_tokens stores it), so revoking the
-- token ends its sessions too. Sign-out deletes the row; expired rows are purged.

CREATE TABLE ui_sessions (
    digest       TEXT PRIMARY KEY,
    token_digest TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX ui_sessions_expires_at ON ui_sessions (expires_at);
