-- Initial schema (SQLite).
--
-- Conventions, mirrored by src/store/sqlite.rs:
-- - STRICT tables, so a value of the wrong type is an error rather than silently stored.
-- - UUIDs are 16-byte BLOBs (rusqlite's `uuid` feature), times INTEGER microseconds since the Unix
--   epoch (UTC), booleans INTEGER 0/1.
-- - Case-insensitive uniqueness of email and username comes from COLLATE NOCASE, which folds ASCII
--   only: emails are stored lower-case by the callers and usernames are ASCII.

CREATE TABLE users (
    id            BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    email         TEXT    NOT NULL COLLATE NOCASE UNIQUE,
    username      TEXT    NOT NULL COLLATE NOCASE UNIQUE,
    password_hash TEXT    NOT NULL,
    is_active     INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    is_superuser  INTEGER NOT NULL DEFAULT 0 CHECK (is_superuser IN (0, 1)),
    token_version INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- A login session: one family of refresh tokens.
CREATE TABLE auth_sessions (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    user_id    BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

-- Revoking every session of a user, and the cascade from users.
CREATE INDEX auth_sessions_user_id_idx ON auth_sessions (user_id);

-- id is the refresh JWT's `jti`.
CREATE TABLE refresh_tokens (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    session_id BLOB    NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;

-- The cascade from auth_sessions and purge's "sessions left without tokens".
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
-- purge_expired.
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

CREATE TABLE api_tokens (
    id           BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    user_id      BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    -- BLAKE3 of the whole token.
    token_hash   BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    is_active    INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    expires_at   INTEGER,
    last_used_at INTEGER,
    created_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE TABLE skills (
    id          BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    user_id     BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    skill_dir   TEXT    NOT NULL,
    is_active   INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- Also serves lookups by user_id (its leading column) and the cascade from users.
    UNIQUE (user_id, name)
) STRICT;

-- A single counter that every process can poll to learn that its cached API tokens may be stale.
CREATE TABLE registry_epoch (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
) STRICT;

INSERT INTO registry_epoch (id, value) VALUES (1, 0);
