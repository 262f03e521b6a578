-- Which build of its provider ran a command (name, version, ABI, component sha256), written
-- with process_started; NULL for commands that never started or started before this column.
ALTER TABLE commands ADD COLUMN provenance TEXT;
