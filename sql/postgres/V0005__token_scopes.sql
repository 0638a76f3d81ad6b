-- What an API token may do over MCP: `skills:read`, `skills:run`, separated by spaces. Tokens
-- made before scopes keep both.
ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'skills:read skills:run';
