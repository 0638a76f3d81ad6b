-- Skill content as immutable versions: a manifest per version (its files, by sha256), files stored
-- once per user as blobs, and the skill's current version a number on its row. 0 means "not yet
-- versioned": a skill written by a release before this one, made version 1 at the next start.
ALTER TABLE skills ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE skill_versions (
    skill_id     BLOB    NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL CHECK (version >= 1),
    user_id      BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    -- sha256 of the manifest: every file's path, sha256 and executable bit, in path order.
    digest       TEXT    NOT NULL,
    file_count   INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    -- The SKILL.md front matter as JSON, as it was read for this version.
    front_matter TEXT    NOT NULL,
    PRIMARY KEY (skill_id, version)
) STRICT;

CREATE TABLE version_files (
    skill_id   BLOB    NOT NULL,
    version    INTEGER NOT NULL,
    path       TEXT    NOT NULL,
    user_id    BLOB    NOT NULL,
    sha256     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    executable INTEGER NOT NULL CHECK (executable IN (0, 1)),
    PRIMARY KEY (skill_id, version, path),
    FOREIGN KEY (skill_id, version) REFERENCES skill_versions (skill_id, version) ON DELETE CASCADE
) STRICT;

-- Which versions still use a blob: what collection asks before it removes one.
CREATE INDEX version_files_blob_idx ON version_files (user_id, sha256);

-- Every blob a user holds, written before any version refers to it; the sum of their sizes is
-- what the quota counts.
CREATE TABLE blobs (
    user_id    BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sha256     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, sha256)
) STRICT;
