-- A project's own egress allow-list (PUT /projects/{id}/network): the rules its commands'
-- egress proxy admits instead of the server's default. No row: the default applies.
-- Removing a project removes its policy (ON DELETE CASCADE).

CREATE TABLE network_policies (
    project_id TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    allow      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
