-- Several replicas on one database (SQLite serves one process; the column keeps the two back
-- ends alike). Mirrors sql/postgres/V0007__replicas.sql, whose NOTIFY triggers SQLite has no use
-- for.
--
-- users.skills_version: bumped by every change to the user's skills or blobs, in the change's
-- own transaction, as a compare-and-set on the version the writer read.
ALTER TABLE users ADD COLUMN skills_version INTEGER NOT NULL DEFAULT 0;

-- Streamable HTTP sessions (see sql/postgres/V0007__replicas.sql). Times in microseconds.
CREATE TABLE mcp_sessions (
    id                  TEXT    PRIMARY KEY,
    user_id             BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_id            BLOB    NOT NULL,
    scopes              TEXT    NOT NULL,
    protocol_version    TEXT    NOT NULL,
    client_capabilities TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL
);

CREATE INDEX mcp_sessions_token_idx ON mcp_sessions (token_id, last_seen_at);
CREATE INDEX mcp_sessions_seen_idx ON mcp_sessions (last_seen_at);
