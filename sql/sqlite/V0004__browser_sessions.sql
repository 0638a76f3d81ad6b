-- Browser sessions of the web console (SQLite). Mirrors sql/postgres/V0003__browser_sessions.sql.
--
-- A browser session is a login session (auth_sessions) whose credential is a cookie instead of a
-- pair of JWTs: revoking the login session (sign out, sign out everywhere, password change,
-- deactivation, deletion) ends it, under the same rules as the JWTs of a login.
--
-- id_hash is the BLAKE3 hash of the cookie's secret (32 random bytes): the secret itself is never
-- stored. token_version is the user's version at sign-in; the session is refused once the user's
-- version moves on, as a JWT is.

CREATE TABLE browser_sessions (
    id_hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(id_hash) = 32),
    session_id    BLOB    NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    token_version INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;

-- The cascade from auth_sessions and purge's "sessions left without tokens".
CREATE INDEX browser_sessions_session_id_idx ON browser_sessions (session_id);
-- purge_expired.
CREATE INDEX browser_sessions_expires_at_idx ON browser_sessions (expires_at);
