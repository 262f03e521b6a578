-- A project's MCP servers (PUT /projects/{id}/mcp-servers): the stdio programs and HTTP
-- endpoints its agents are given. Secret values are never here: an environment variable or
-- header that is a secret holds the name of a stored credential, resolved when the agent is
-- spawned. No row: the project has none. Removing a project removes them (ON DELETE CASCADE).

CREATE TABLE mcp_servers (
    project_id TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    servers    JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
