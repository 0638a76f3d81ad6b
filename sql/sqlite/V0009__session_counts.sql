-- How many Streamable HTTP sessions each credential holds (mcp_sessions.token_id), kept by
-- triggers in the same transaction as the change, so that opening a session reads one row to
-- check mcp.max_sessions_per_token. Counting the credential's sessions instead cost a walk over
-- all of them at every new one: an operator who raises the cap to hold many thousands of streams
-- on one credential saw opening slow down in proportion. Mirrors
-- sql/postgres/V0009__session_counts.sql.
CREATE TABLE mcp_session_counts (
    token_id BLOB    PRIMARY KEY,
    held     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO mcp_session_counts (token_id, held)
    SELECT token_id, count(*) FROM mcp_sessions GROUP BY token_id;

CREATE TRIGGER mcp_sessions_counted_in AFTER INSERT ON mcp_sessions
BEGIN
    INSERT INTO mcp_session_counts (token_id, held) VALUES (NEW.token_id, 1)
        ON CONFLICT (token_id) DO UPDATE SET held = held + 1;
END;

-- Also run for the rows that deleting a user removes (ON DELETE CASCADE).
CREATE TRIGGER mcp_sessions_counted_out AFTER DELETE ON mcp_sessions
BEGIN
    UPDATE mcp_session_counts SET held = held - 1 WHERE token_id = OLD.token_id;
    DELETE FROM mcp_session_counts WHERE token_id = OLD.token_id AND held <= 0;
END;
