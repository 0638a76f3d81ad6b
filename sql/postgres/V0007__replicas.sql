-- Several replicas on one database. Mirrors sql/sqlite/V0007__replicas.sql, plus the NOTIFY
-- triggers (SQLite has one process, and nothing to tell).
--
-- users.skills_version: bumped by every change to the user's skills or blobs, in the change's
-- own transaction, as a compare-and-set on the version the writer read (a writer that finds
-- another number reloads and tries again), so two replicas' changes to one user's skills take
-- turns and neither is lost.
ALTER TABLE users ADD COLUMN skills_version BIGINT NOT NULL DEFAULT 0;

-- The announcements every replica listens for, on the channel `agentskills`; payloads carry ids
-- and numbers only, and are sent when (and only if) the transaction commits:
--   s <user id> <skills_version>   the user's skills changed: reload them
--   t <registry epoch>             API tokens, OAuth grants or accounts changed: reload the map
--   d <user id>                    the account was deleted: forget its skills
CREATE FUNCTION agentskills_notify_skills() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentskills', 's ' || NEW.id::text || ' ' || NEW.skills_version::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_skills_version_notify
    AFTER UPDATE OF skills_version ON users
    FOR EACH ROW WHEN (OLD.skills_version IS DISTINCT FROM NEW.skills_version)
    EXECUTE FUNCTION agentskills_notify_skills();

CREATE FUNCTION agentskills_notify_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentskills', 't ' || NEW.value::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER registry_epoch_notify
    AFTER UPDATE ON registry_epoch
    FOR EACH ROW EXECUTE FUNCTION agentskills_notify_epoch();

CREATE FUNCTION agentskills_notify_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentskills', 'd ' || OLD.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_deleted_notify
    AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION agentskills_notify_deleted();

-- Streamable HTTP sessions, so that a request with its Mcp-Session-Id is answered by whichever
-- replica receives it: a replica that does not hold the session yet reads its facts here once
-- (its first request there), then serves it from memory. token_id is an API token's or an OAuth
-- grant's id; a session of a credential that is gone is never used again (every request is
-- authenticated first) and goes when it is idle. last_seen_at is written in batches by each
-- replica's reaper, which also deletes sessions idle for longer than mcp.session_idle_secs.
-- Legacy HTTP+SSE sessions are not here: their stream and their POSTs meet on one replica.
CREATE TABLE mcp_sessions (
    id                  TEXT        PRIMARY KEY,
    user_id             UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_id            UUID        NOT NULL,
    scopes              TEXT        NOT NULL,
    protocol_version    TEXT        NOT NULL,
    client_capabilities TEXT        NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    last_seen_at        TIMESTAMPTZ NOT NULL
);

CREATE INDEX mcp_sessions_token_idx ON mcp_sessions (token_id, last_seen_at);
CREATE INDEX mcp_sessions_seen_idx ON mcp_sessions (last_seen_at);

--   e <session id>                 the session ended (DELETE, the cap, idleness): end it here too
CREATE FUNCTION agentskills_notify_session_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentskills', 'e ' || OLD.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER mcp_sessions_ended_notify
    AFTER DELETE ON mcp_sessions
    FOR EACH ROW EXECUTE FUNCTION agentskills_notify_session_ended();
