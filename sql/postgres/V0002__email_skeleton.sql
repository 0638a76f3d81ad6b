-- Look-alike email addresses (PostgreSQL). Mirrors sql/sqlite/V0002__email_skeleton.sql.
--
-- email_skeleton is the address's confusable skeleton (Unicode TS #39, computed in Rust by
-- crate::domain::email_skeleton; SQL has no such function). The store refuses a new or changed
-- address whose skeleton equals another account's unless both addresses are plain ASCII, checked
-- inside the writing transaction after taking a transaction-level advisory lock on the skeleton,
-- so two writers of look-alike addresses take turns. That rule is not an equivalence (`al١` with
-- an Arabic-Indic one looks like both `al1` and `all`, which may both exist), so no unique index
-- can state it; this index serves the check.
--
-- NULL only for rows written by earlier releases: Store::migrate fills it in (and brings their
-- email to its NFKC form) right after the migrations, at every start, until none is left.

ALTER TABLE users ADD COLUMN email_skeleton TEXT;

CREATE INDEX users_email_skeleton_idx ON users (email_skeleton);
