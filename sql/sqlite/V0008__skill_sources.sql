-- Where imported skills come from: a Git repository, the ref asked for (NULL: the remote's default
-- branch), the skill's folder in it ('' for the repository's root), and how the last syncs went.
-- synced_version is the skill's version whose files are commit_id's: a skill whose current version
-- is another was changed by hand since, and a sync does not overwrite it unless forced.
-- Times are microseconds since the Unix epoch, as everywhere in this schema.
CREATE TABLE skill_sources (
    skill_id            BLOB    PRIMARY KEY REFERENCES skills (id) ON DELETE CASCADE,
    user_id             BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url                 TEXT    NOT NULL,
    git_ref             TEXT,
    path                TEXT    NOT NULL,
    commit_id           TEXT    NOT NULL,
    synced_version      INTEGER NOT NULL,
    -- NULL: synced only when asked; otherwise every so many hours by the server.
    sync_interval_hours INTEGER CHECK (sync_interval_hours IS NULL OR sync_interval_hours >= 1),
    synced_at           INTEGER NOT NULL,
    checked_at          INTEGER NOT NULL,
    next_sync_at        INTEGER,
    last_error          TEXT
) STRICT;

CREATE INDEX skill_sources_user_idx ON skill_sources (user_id);
CREATE INDEX skill_sources_due_idx ON skill_sources (next_sync_at) WHERE next_sync_at IS NOT NULL;
