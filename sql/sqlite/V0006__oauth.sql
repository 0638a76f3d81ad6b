-- OAuth 2.1 for MCP clients (SQLite). Mirrors sql/postgres/V0006__oauth.sql.
--
-- oauth_clients: clients registered through dynamic registration (RFC 7591). A client that never
-- gets a grant (used_at NULL) is deleted a day after it registered. Clients named by a metadata
-- document (an https client_id) are not stored: their document is fetched and cached in memory.
--
-- oauth_codes: authorization codes, by the BLAKE3 hash of the code. A code works once: redeeming
-- it sets used_at; a second redemption finds used_at set and ends the grant the first made
-- (grant_id), as OAuth 2.1 asks.
--
-- oauth_grants: what a user allowed a client (its scopes, for one resource). Access tokens are
-- signed by the server and name their grant: deleting the grant refuses them all at once.
-- expires_at moves forward with every refresh.
--
-- oauth_refresh_tokens: by hash; a used one stays until it expires so that its reuse is noticed,
-- and ends its grant.

CREATE TABLE oauth_clients (
    client_id     TEXT    NOT NULL PRIMARY KEY,
    client_name   TEXT    NOT NULL,
    redirect_uris TEXT    NOT NULL,
    metadata      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    used_at       INTEGER
) STRICT;

CREATE INDEX oauth_clients_unused_idx ON oauth_clients (created_at) WHERE used_at IS NULL;

CREATE TABLE oauth_grants (
    id           BLOB    NOT NULL PRIMARY KEY,
    user_id      BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id    TEXT    NOT NULL,
    client_name  TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,
    resource     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX oauth_grants_user_id_idx ON oauth_grants (user_id);
CREATE INDEX oauth_grants_expires_at_idx ON oauth_grants (expires_at);

CREATE TABLE oauth_codes (
    code_hash      BLOB    NOT NULL PRIMARY KEY CHECK (length(code_hash) = 32),
    user_id        BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id      TEXT    NOT NULL,
    client_name    TEXT    NOT NULL,
    redirect_uri   TEXT    NOT NULL,
    code_challenge TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    resource       TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    grant_id       BLOB
) STRICT;

CREATE INDEX oauth_codes_expires_at_idx ON oauth_codes (expires_at);

CREATE TABLE oauth_refresh_tokens (
    token_hash BLOB    NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    grant_id   BLOB    NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;

CREATE INDEX oauth_refresh_tokens_grant_id_idx ON oauth_refresh_tokens (grant_id);
CREATE INDEX oauth_refresh_tokens_expires_at_idx ON oauth_refresh_tokens (expires_at);
