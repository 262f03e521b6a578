-- A writer that retries an audit append after losing the commit's acknowledgement passes the
-- same key again; the adapter returns the stored entry instead of chaining a second copy.
ALTER TABLE audit_log ADD COLUMN append_key TEXT;
CREATE UNIQUE INDEX audit_log_append_key ON audit_log (append_key) WHERE append_key IS NOT NULL;
