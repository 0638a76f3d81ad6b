-- Skill content as immutable versions: a manifest per version (its files, by sha256), files stored
-- once per user as blobs, and the skill's current version a number on its row. 0 means "not yet
-- versioned": a skill written by a release before this one, made version 1 at the next start.
ALTER TABLE skills ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE skill_versions (
    skill_id     UUID        NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
    version      BIGINT      NOT NULL CHECK (version >= 1),
    user_id      UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    -- sha256 of the manifest: every file's path, sha256 and executable bit, in path order.
    digest       TEXT        NOT NULL,
    file_count   BIGINT      NOT NULL,
    size         BIGINT      NOT NULL,
    -- The SKILL.md front matter as JSON, as it was read for this version.
    front_matter TEXT        NOT NULL,
    PRIMARY KEY (skill_id, version)
);

CREATE TABLE version_files (
    skill_id   UUID    NOT NULL,
    version    BIGINT  NOT NULL,
    path       TEXT    NOT NULL COLLATE "C",
    user_id    UUID    NOT NULL,
    sha256     TEXT    NOT NULL,
    size       BIGINT  NOT NULL,
    executable BOOLEAN NOT NULL,
    PRIMARY KEY (skill_id, version, path),
    FOREIGN KEY (skill_id, version) REFERENCES skill_versions (skill_id, version) ON DELETE CASCADE
);

-- Which versions still use a blob: what collection asks before it removes one.
CREATE INDEX version_files_blob_idx ON version_files (user_id, sha256);

-- Every blob a user holds, written before any version refers to it; the sum of their sizes is
-- what the quota counts.
CREATE TABLE blobs (
    user_id    UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sha256     TEXT        NOT NULL,
    size       BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, sha256)
);
