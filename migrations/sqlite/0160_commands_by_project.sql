-- A project's commands newest first (the API's and the dashboard's listings, keyset paged on
-- seq), as PostgreSQL's commands_project_created (0001) serves them.
CREATE INDEX commands_project_created ON commands (project_id, seq DESC);
