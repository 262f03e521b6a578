-- A writer that retries an append after losing the commit's acknowledgement passes the same
-- key again; the adapter returns the stored event instead of appending a second copy.
ALTER TABLE events ADD COLUMN append_key TEXT;
CREATE UNIQUE INDEX events_append_key ON events (stream, append_key) WHERE append_key IS NOT NULL;
