-- Where imported skills come from. Mirrors sql/sqlite/V0008__skill_sources.sql: a Git repository,
-- the ref asked for (NULL: the remote's default branch), the skill's folder in it ('' for the
-- repository's root), and how the last syncs went. synced_version is the skill's version whose
-- files are commit_id's: a skill whose current version is another was changed by hand since, and
-- a sync does not overwrite it unless forced.
CREATE TABLE skill_sources (
    skill_id            UUID        PRIMARY KEY REFERENCES skills (id) ON DELETE CASCADE,
    user_id             UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url                 TEXT        NOT NULL,
    git_ref             TEXT,
    path                TEXT        NOT NULL,
    commit_id           TEXT        NOT NULL,
    synced_version      BIGINT      NOT NULL,
    -- NULL: synced only when asked; otherwise every so many hours by the server.
    sync_interval_hours BIGINT CHECK (sync_interval_hours IS NULL OR sync_interval_hours >= 1),
    synced_at           TIMESTAMPTZ NOT NULL,
    checked_at          TIMESTAMPTZ NOT NULL,
    next_sync_at        TIMESTAMPTZ,
    last_error          TEXT
);

CREATE INDEX skill_sources_user_idx ON skill_sources (user_id);
CREATE INDEX skill_sources_due_idx ON skill_sources (next_sync_at) WHERE next_sync_at IS NOT NULL;
