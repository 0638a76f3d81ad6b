-- Several replicas on one database (SQLite serves one process; the column keeps the two back
-- ends alike). Mirrors sql/postgres/V0007__replicas.sql, whose NOTIFY triggers SQLite has no use
-- for.
--
-- users.skills_version: bumped by every change to the user's skills or blobs, in the change's
-- own transaction, as a compare-and-set on the version the writer read.
ALTER TABLE users ADD COLUMN skills_version INTEGER NOT NULL DEFAULT 0;
