-- Initial schema (PostgreSQL). Mirrors sql/sqlite/V0001__initial.sql.

CREATE TABLE users (
    id            UUID        PRIMARY KEY,
    -- Stored lower-case by the callers; unique regardless of case (users_email_key below).
    email         TEXT        NOT NULL,
    -- Stored as typed; unique regardless of case (users_username_key below).
    username      TEXT        NOT NULL,
    password_hash TEXT        NOT NULL,
    is_active     BOOLEAN     NOT NULL DEFAULT TRUE,
    is_superuser  BOOLEAN     NOT NULL DEFAULT FALSE,
    token_version BIGINT      NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- The store maps a violation of these two to a "taken" error by their names: keep the names.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

-- A login session: one family of refresh tokens.
CREATE TABLE auth_sessions (
    id         UUID        PRIMARY KEY,
    user_id    UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);

-- Revoking every session of a user, and the cascade from users.
CREATE INDEX auth_sessions_user_id_idx ON auth_sessions (user_id);

-- id is the refresh JWT's `jti`.
CREATE TABLE refresh_tokens (
    id         UUID        PRIMARY KEY,
    session_id UUID        NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);

-- The cascade from auth_sessions and purge's "sessions left without tokens".
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
-- purge_expired.
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

CREATE TABLE api_tokens (
    id           UUID        PRIMARY KEY,
    user_id      UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT        NOT NULL,
    prefix       TEXT        NOT NULL,
    -- BLAKE3 of the whole token.
    token_hash   BYTEA       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    is_active    BOOLEAN     NOT NULL DEFAULT TRUE,
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE TABLE skills (
    id          UUID        PRIMARY KEY,
    user_id     UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT        NOT NULL,
    description TEXT        NOT NULL,
    skill_dir   TEXT        NOT NULL,
    is_active   BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    -- Also serves lookups by user_id (its leading column) and the cascade from users.
    UNIQUE (user_id, name)
);

-- A single counter that every process can poll to learn that its cached API tokens may be stale.
CREATE TABLE registry_epoch (
    id    SMALLINT PRIMARY KEY CHECK (id = 1),
    value BIGINT   NOT NULL
);

INSERT INTO registry_epoch (id, value) VALUES (1, 0);
