-- How many Streamable HTTP sessions each credential holds (mcp_sessions.token_id), kept by a
-- trigger in the same transaction as the change, so that opening a session reads one row to check
-- mcp.max_sessions_per_token. Counting the credential's sessions instead cost a walk over all of
-- them at every new one: an operator who raises the cap to hold many thousands of streams on one
-- credential saw opening slow down in proportion. Opening still takes the credential's advisory
-- lock first (see store/postgres/sessions.rs), so the cap holds across replicas.
CREATE TABLE mcp_session_counts (
    token_id UUID   PRIMARY KEY,
    held     BIGINT NOT NULL
);

INSERT INTO mcp_session_counts (token_id, held)
    SELECT token_id, count(*) FROM mcp_sessions GROUP BY token_id;

CREATE FUNCTION agentskills_count_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO mcp_session_counts (token_id, held) VALUES (NEW.token_id, 1)
            ON CONFLICT (token_id) DO UPDATE SET held = mcp_session_counts.held + 1;
    ELSE
        UPDATE mcp_session_counts SET held = held - 1 WHERE token_id = OLD.token_id;
        DELETE FROM mcp_session_counts WHERE token_id = OLD.token_id AND held <= 0;
    END IF;
    RETURN NULL;
END;
$$;

-- Also run for the rows that deleting a user removes (ON DELETE CASCADE).
CREATE TRIGGER mcp_sessions_counted
    AFTER INSERT OR DELETE ON mcp_sessions
    FOR EACH ROW EXECUTE FUNCTION agentskills_count_sessions();
