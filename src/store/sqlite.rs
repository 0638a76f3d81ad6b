//! The SQLite back end: one database file, pooled connections (deadpool-sqlite), schema in
//! `sql/sqlite`.
//!
//! rusqlite is blocking, so every operation runs as one closure on a pooled connection's thread
//! (`interact`). Representation, matching `sql/sqlite/V0001__initial.sql`: UUIDs are 16-byte BLOBs,
//! times INTEGER microseconds since the Unix epoch, booleans INTEGER 0/1.
//!
//! SQLite has one writer at a time. An operation that reads and then writes opens its transaction
//! with `BEGIN IMMEDIATE`, which takes the write lock up front (waiting up to `busy_timeout`): a
//! deferred transaction that later tries to upgrade its read lock can fail with `SQLITE_BUSY` at
//! once, whatever the timeout, when another connection wrote in between.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deadpool_sqlite::{Config, Hook, HookError, Pool, Runtime};
use rusqlite::types::Type;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior, ffi, params,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AccountCounts, ApiTokenRecord, BrowserSessionRecord, Collected, LiveApiToken, NewApiToken,
    NewBrowserSession, NewRefreshToken, NewSource, NewUser, NewVersion, RotateOutcome, SkillRecord,
    SkillWrite, StoreError, StoreResult, UniqueField, UserRecord, VersionFile, VersionRecord,
};
use crate::config::DatabaseSettings;
use crate::domain::email_skeleton;

mod oauth;
mod sessions;
mod sources;

/// The migrations of `sql/sqlite`, compiled in so that the binary needs no files at run time.
/// Edits to a file are picked up by the next build; a new file only once this module is rebuilt.
mod embedded {
    refinery::embed_migrations!("sql/sqlite");
}

/// Run on every new connection. `foreign_keys` is per connection and off by default; `busy_timeout`
/// makes a writer wait for the lock instead of failing; WAL lets readers run alongside the writer,
/// and with WAL `synchronous = NORMAL` is still crash-safe (it can only lose the last commits on
/// power loss).
const CONNECTION_PRAGMAS: &str = "PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;";

/// Prepared statements kept per connection; more than the number of distinct statements below, so
/// none is ever re-prepared.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// The columns [`user_from_row`] reads, in its order.
macro_rules! user_columns {
    () => {
        "id, email, username, password_hash, is_active, token_version, created_at, updated_at"
    };
}

/// The columns [`skill_from_row`] reads, in its order.
macro_rules! skill_columns {
    () => {
        "id, user_id, name, description, skill_dir, is_active, created_at, updated_at, version"
    };
}

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: Pool,
    path: PathBuf,
}

impl SqliteStore {
    pub(crate) fn pool_status(&self) -> deadpool_sqlite::Status {
        self.pool.status()
    }

    /// Opens (creating if missing) the database file and its directory; does not migrate.
    pub(crate) async fn open(path: &Path, settings: &DatabaseSettings) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Setup {
                    context: format!("creating the database directory {}", dir.display()),
                    source: Box::new(e),
                })?;
        }
        // The database is the server's alone (owner read and write): the data dir lets the
        // sandbox's user pass through. SQLite gives its -wal and -shm files the same mode.
        {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            let private = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .and_then(|_| {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                });
            private.map_err(|e| StoreError::Setup {
                context: format!("creating the database file {}", path.display()),
                source: Box::new(e),
            })?;
        }
        let acquire = Duration::from_secs(settings.acquire_timeout_secs);
        let connect = Duration::from_secs(settings.connect_timeout_secs);
        let pool = Config::new(path)
            .builder(Runtime::Tokio1)
            .map_err(|e| setup(path, "configuring the pool for", e))?
            .max_size(
                usize::try_from(settings.max_connections)
                    .unwrap_or(usize::MAX)
                    .max(1),
            )
            .wait_timeout(Some(acquire))
            .create_timeout(Some(connect))
            .recycle_timeout(Some(connect))
            .post_create(Hook::async_fn(|conn, _| {
                Box::pin(async move {
                    conn.interact(|c| {
                        c.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
                        c.execute_batch(CONNECTION_PRAGMAS)
                    })
                    .await
                    .map_err(|e| HookError::message(format!("setting up the connection: {e}")))?
                    .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| setup(path, "building the pool for", e))?;
        // Open one connection now: a file that cannot be opened fails start-up with a clear
        // message, and the switch to WAL (which needs a moment of exclusive access) happens before
        // there is any concurrency.
        drop(pool.get().await.map_err(|e| setup(path, "opening", e))?);
        Ok(SqliteStore {
            pool,
            path: path.to_owned(),
        })
    }

    /// Runs `f` on a pooled connection's thread.
    async fn with_conn<T, F>(&self, context: &'static str, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        match conn.interact(f).await {
            Ok(result) => result.map_err(|e| sqlite_error(context, e)),
            // The closure panicked; the pool's recycle check discards the poisoned connection.
            Err(e) => Err(StoreError::Backend {
                context,
                source: format!("connection task failed: {e}").into(),
            }),
        }
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction, committed when `f` returns `Ok`.
    async fn write<T, F>(&self, context: &'static str, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.with_conn(context, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }

    pub(crate) async fn migrate(&self) -> StoreResult<usize> {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| setup(&self.path, "opening", e))?;
        let report = conn
            .interact(|c| embedded::migrations::runner().run(c))
            .await
            .map_err(|e| StoreError::Setup {
                context: format!(
                    "migrating {}: the migration task failed",
                    self.path.display()
                ),
                source: e.to_string().into(),
            })?
            .map_err(|e| setup(&self.path, "migrating", e))?;
        Ok(report.applied_migrations().len())
    }

    /// Time to get a connection and run `SELECT 1` on it, which is what a request would wait for.
    pub(crate) async fn ping(&self) -> StoreResult<Duration> {
        let start = Instant::now();
        self.with_conn("pinging", |c| {
            c.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
        })
        .await?;
        Ok(start.elapsed())
    }

    /// Rows written before `email_skeleton` existed: (id, email as stored).
    pub(crate) async fn emails_without_skeleton(&self) -> StoreResult<Vec<(Uuid, String)>> {
        self.with_conn("reading emails to back-fill", |c| {
            c.prepare(
                "SELECT id, email FROM users WHERE email_skeleton IS NULL ORDER BY created_at, id",
            )?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
        })
        .await
    }

    /// Back-fills one row: its skeleton, and its email's normal form when that differs.
    pub(crate) async fn backfill_email(
        &self,
        id: Uuid,
        email: Option<&str>,
        skeleton: &str,
    ) -> StoreResult<()> {
        let (email, skeleton) = (email.map(str::to_owned), skeleton.to_owned());
        self.with_conn("back-filling an email", move |c| {
            c.prepare(
                "UPDATE users SET email = coalesce(?2, email), email_skeleton = ?3
                 WHERE id = ?1 AND email_skeleton IS NULL",
            )?
            .execute(params![id, email, skeleton])?;
            Ok(())
        })
        .await
    }

    // ---- users ----

    pub(crate) async fn insert_user(&self, user: &NewUser) -> StoreResult<UserRecord> {
        let user = user.clone();
        let skeleton = email_skeleton(&user.email);
        // BEGIN IMMEDIATE: no other writer between the look-alike check and the insert.
        self.write("creating a user", move |tx| {
            if email_taken(tx, &user.email, &skeleton, user.id)? {
                return Ok(None);
            }
            let at = micros(user.created_at);
            tx.prepare_cached(concat!(
                "INSERT INTO users
                   (id, email, email_skeleton, username, password_hash, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 RETURNING ",
                user_columns!()
            ))?
            .query_row(
                params![
                    user.id,
                    user.email,
                    skeleton,
                    user.username,
                    user.password_hash,
                    at
                ],
                user_from_row,
            )
            .map(Some)
        })
        .await?
        .ok_or(StoreError::Duplicate(UniqueField::Email))
    }

    pub(crate) async fn email_taken(&self, email: &str, except: Option<Uuid>) -> StoreResult<bool> {
        let skeleton = email_skeleton(email);
        let email = email.to_owned();
        self.with_conn("checking whether an email is taken", move |c| {
            email_taken(c, &email, &skeleton, except.unwrap_or_else(Uuid::nil))
        })
        .await
    }

    pub(crate) async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        self.with_conn("reading a user", move |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = ?1"
            ))?
            .query_row([id], user_from_row)
            .optional()
        })
        .await
    }

    pub(crate) async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let email = email.to_owned();
        // The column's NOCASE collation makes this comparison case-insensitive and lets it use the
        // unique index.
        self.with_conn("reading a user by email", move |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE email = ?1"
            ))?
            .query_row([email], user_from_row)
            .optional()
        })
        .await
    }

    pub(crate) async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.with_conn("reading a user by username", move |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE username = ?1"
            ))?
            .query_row([username], user_from_row)
            .optional()
        })
        .await
    }

    pub(crate) async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        self.with_conn("listing users", |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users ORDER BY created_at, id"
            ))?
            .query_map([], user_from_row)?
            .collect()
        })
        .await
    }

    pub(crate) async fn update_profile(
        &self,
        id: Uuid,
        email: Option<&str>,
        username: Option<&str>,
        now: OffsetDateTime,
    ) -> StoreResult<Option<UserRecord>> {
        if email.is_none() && username.is_none() {
            // Nothing to change: do not touch updated_at.
            return self.user_by_id(id).await;
        }
        let skeleton = email.map(email_skeleton);
        let (email, username) = (email.map(str::to_owned), username.map(str::to_owned));
        // BEGIN IMMEDIATE: no other writer between the look-alike check and the update.
        self.write("updating a profile", move |tx| {
            if let (Some(email), Some(skeleton)) = (&email, &skeleton)
                && email_taken(tx, email, skeleton, id)?
            {
                return Ok(Err(StoreError::Duplicate(UniqueField::Email)));
            }
            tx.prepare_cached(concat!(
                "UPDATE users
                 SET email = coalesce(?2, email), email_skeleton = coalesce(?3, email_skeleton),
                     username = coalesce(?4, username), updated_at = ?5
                 WHERE id = ?1
                 RETURNING ",
                user_columns!()
            ))?
            .query_row(
                params![id, email, skeleton, username, micros(now)],
                user_from_row,
            )
            .optional()
            .map(Ok)
        })
        .await?
    }

    pub(crate) async fn set_password(
        &self,
        id: Uuid,
        hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let hash = hash.to_owned();
        self.write("setting a password", move |tx| {
            let now = micros(now);
            let found = tx
                .prepare_cached(
                    "UPDATE users
                     SET password_hash = ?2, updated_at = ?3, token_version = token_version + 1
                     WHERE id = ?1",
                )?
                .execute(params![id, hash, now])?
                > 0;
            revoke_all_sessions(tx, id, now)?;
            Ok(found)
        })
        .await
    }

    pub(crate) async fn upgrade_password_hash(
        &self,
        id: Uuid,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let (old, new) = (old.to_owned(), new.to_owned());
        self.with_conn("upgrading a password hash", move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2",
                )?
                .execute(params![id, old, new])?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write("changing whether a user is active", move |tx| {
            let now = micros(now);
            let found = if active {
                tx.prepare_cached("UPDATE users SET is_active = 1, updated_at = ?2 WHERE id = ?1")?
                    .execute(params![id, now])?
                    > 0
            } else {
                let found = tx
                    .prepare_cached(
                        "UPDATE users
                         SET is_active = 0, updated_at = ?2, token_version = token_version + 1
                         WHERE id = ?1",
                    )?
                    .execute(params![id, now])?
                    > 0;
                revoke_all_sessions(tx, id, now)?;
                found
            };
            if found {
                bump_epoch(tx)?;
            }
            Ok(found)
        })
        .await
    }

    pub(crate) async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        self.write("deleting a user", move |tx| {
            // Sessions, refresh tokens, API tokens and skills go with it (ON DELETE CASCADE).
            let found = tx
                .prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([id])?
                > 0;
            if found {
                bump_epoch(tx)?;
            }
            Ok(found)
        })
        .await
    }

    pub(crate) async fn end_all_sessions(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write("ending all sessions", move |tx| {
            let found = tx
                .prepare_cached("UPDATE users SET token_version = token_version + 1 WHERE id = ?1")?
                .execute([id])?
                > 0;
            revoke_all_sessions(tx, id, micros(now))?;
            Ok(found)
        })
        .await
    }

    pub(crate) async fn account_counts(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<AccountCounts> {
        self.with_conn("counting a user's skills and tokens", move |c| {
            c.prepare_cached(
                "SELECT
                    (SELECT count(*) FROM skills WHERE user_id = ?1),
                    (SELECT count(*) FROM api_tokens
                     WHERE user_id = ?1 AND is_active = 1
                       AND (expires_at IS NULL OR expires_at > ?2))",
            )?
            .query_row(params![id, micros(now)], |row| {
                Ok(AccountCounts {
                    skills: row.get(0)?,
                    tokens: row.get(1)?,
                })
            })
        })
        .await
    }

    // ---- login sessions and refresh tokens ----

    pub(crate) async fn insert_session(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        refresh: NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        self.write("starting a session", move |tx| {
            let now = micros(now);
            tx.prepare_cached(
                "INSERT INTO auth_sessions (id, user_id, created_at)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![session_id, user_id, now])?;
            tx.prepare_cached(
                "INSERT INTO refresh_tokens (id, session_id, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                refresh.id,
                session_id,
                micros(refresh.expires_at),
                now
            ])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn access_context(
        &self,
        user_id: Uuid,
        session_id: Uuid,
    ) -> StoreResult<Option<(UserRecord, bool)>> {
        self.with_conn("reading a user and session", move |c| {
            // Column order as in user_columns!, so user_from_row can read the first eight.
            c.prepare_cached(
                "SELECT u.id, u.email, u.username, u.password_hash, u.is_active, u.token_version,
                        u.created_at, u.updated_at,
                        s.id IS NULL OR s.revoked_at IS NOT NULL
                 FROM users u
                 LEFT JOIN auth_sessions s ON s.id = ?2 AND s.user_id = u.id
                 WHERE u.id = ?1",
            )?
            .query_row(params![user_id, session_id], |row| {
                Ok((user_from_row(row)?, row.get(8)?))
            })
            .optional()
        })
        .await
    }

    pub(crate) async fn rotate_refresh(
        &self,
        old: Uuid,
        new: NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        // BEGIN IMMEDIATE makes the read and the writes below one critical section: a second
        // rotation of the same token waits, then sees used_at set.
        self.write("rotating a refresh token", move |tx| {
            let now = micros(now);
            let found = tx
                .prepare_cached(
                    "SELECT r.session_id, s.user_id, r.expires_at, r.used_at IS NOT NULL,
                            s.revoked_at IS NOT NULL
                     FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id
                     WHERE r.id = ?1",
                )?
                .query_row([old], |row| {
                    Ok((
                        row.get::<_, Uuid>(0)?,
                        row.get::<_, Uuid>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, bool>(3)?,
                        row.get::<_, bool>(4)?,
                    ))
                })
                .optional()?;
            let Some((session_id, user_id, expires_at, used, revoked)) = found else {
                return Ok(RotateOutcome::Unknown);
            };
            if revoked {
                return Ok(RotateOutcome::SessionRevoked);
            }
            if expires_at <= now {
                return Ok(RotateOutcome::Unknown);
            }
            if used {
                // A used token presented again: it was copied. End the whole family.
                tx.prepare_cached(
                    "UPDATE auth_sessions SET revoked_at = ?2
                     WHERE id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![session_id, now])?;
                return Ok(RotateOutcome::Reused {
                    session_id,
                    user_id,
                });
            }
            tx.prepare_cached("UPDATE refresh_tokens SET used_at = ?2 WHERE id = ?1")?
                .execute(params![old, now])?;
            tx.prepare_cached(
                "INSERT INTO refresh_tokens (id, session_id, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![new.id, session_id, micros(new.expires_at), now])?;
            Ok(RotateOutcome::Rotated {
                session_id,
                user_id,
            })
        })
        .await
    }

    pub(crate) async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.with_conn("revoking a session", move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE auth_sessions SET revoked_at = ?3
                     WHERE id = ?2 AND user_id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![user_id, session_id, micros(now)])?;
            Ok(changed > 0)
        })
        .await
    }

    pub(crate) async fn purge_expired(&self, now: OffsetDateTime) -> StoreResult<u64> {
        self.write("purging expired sessions", move |tx| {
            let tokens = tx
                .prepare_cached("DELETE FROM refresh_tokens WHERE expires_at <= ?1")?
                .execute([micros(now)])?;
            let browsers = tx
                .prepare_cached("DELETE FROM browser_sessions WHERE expires_at <= ?1")?
                .execute([micros(now)])?;
            let sessions = tx
                .prepare_cached(
                    "DELETE FROM auth_sessions
                     WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens r
                                       WHERE r.session_id = auth_sessions.id)
                       AND NOT EXISTS (SELECT 1 FROM browser_sessions b
                                       WHERE b.session_id = auth_sessions.id)",
                )?
                .execute([])?;
            Ok((tokens + browsers + sessions) as u64)
        })
        .await
    }

    pub(crate) async fn insert_browser_session(
        &self,
        session: &NewBrowserSession,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let session = session.clone();
        self.write("starting a browser session", move |tx| {
            let now = micros(now);
            tx.prepare_cached(
                "INSERT INTO auth_sessions (id, user_id, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![session.session_id, session.user_id, now])?;
            tx.prepare_cached(
                "INSERT INTO browser_sessions
                     (id_hash, session_id, token_version, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                session.id_hash,
                session.session_id,
                session.token_version,
                now,
                micros(session.expires_at)
            ])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn browser_session(
        &self,
        id_hash: [u8; 32],
    ) -> StoreResult<Option<BrowserSessionRecord>> {
        self.with_conn("reading a browser session", move |c| {
            // Column order as in user_columns!, so user_from_row can read the first eight.
            c.prepare_cached(
                "SELECT u.id, u.email, u.username, u.password_hash, u.is_active, u.token_version,
                        u.created_at, u.updated_at,
                        s.id, s.revoked_at IS NOT NULL, b.token_version, b.expires_at
                 FROM browser_sessions b
                 JOIN auth_sessions s ON s.id = b.session_id
                 JOIN users u ON u.id = s.user_id
                 WHERE b.id_hash = ?1",
            )?
            .query_row([id_hash], |row| {
                Ok(BrowserSessionRecord {
                    user: user_from_row(row)?,
                    session_id: row.get(8)?,
                    revoked: row.get(9)?,
                    token_version: row.get(10)?,
                    expires_at: time_at(row, 11)?,
                })
            })
            .optional()
        })
        .await
    }

    pub(crate) async fn delete_browser_session(&self, id_hash: [u8; 32]) -> StoreResult<bool> {
        self.with_conn("ending a browser session", move |c| {
            Ok(
                c.prepare_cached("DELETE FROM browser_sessions WHERE id_hash = ?1")?
                    .execute([id_hash])?
                    > 0,
            )
        })
        .await
    }

    // ---- skills ----

    pub(crate) async fn skills_of_user(&self, user_id: Uuid) -> StoreResult<Vec<SkillRecord>> {
        // The column's default BINARY collation orders names by their UTF-8 bytes, like the
        // PostgreSQL back end's COLLATE "C".
        self.with_conn("listing skills", move |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                skill_columns!(),
                " FROM skills WHERE user_id = ?1 ORDER BY name, id"
            ))?
            .query_map([user_id], skill_from_row)?
            .collect()
        })
        .await
    }

    pub(crate) async fn update_skill(
        &self,
        user_id: Uuid,
        id: Uuid,
        description: Option<&str>,
        is_active: Option<bool>,
        now: OffsetDateTime,
        expected: Option<i64>,
    ) -> StoreResult<Option<SkillRecord>> {
        let description = description.map(str::to_owned);
        self.with_conn("updating a skill", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            bump_skills(&tx, user_id, expected)?;
            let record = tx
                .prepare_cached(concat!(
                    "UPDATE skills
                     SET description = coalesce(?3, description),
                         is_active = coalesce(?4, is_active), updated_at = ?5
                     WHERE id = ?2 AND user_id = ?1
                     RETURNING ",
                    skill_columns!()
                ))?
                .query_row(
                    params![user_id, id, description, is_active, micros(now)],
                    skill_from_row,
                )
                .optional()?;
            // No such skill: dropping the transaction rolls the version's bump back.
            if record.is_some() {
                tx.commit()?;
            }
            Ok(record)
        })
        .await
    }

    pub(crate) async fn write_skills(
        &self,
        user_id: Uuid,
        writes: &[SkillWrite],
        sources: &[NewSource],
        now: OffsetDateTime,
        keep: u32,
        expected: Option<i64>,
    ) -> StoreResult<Option<Vec<SkillRecord>>> {
        let writes = writes.to_vec();
        let sources = sources.to_vec();
        self.with_conn("writing skills", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            bump_skills(&tx, user_id, expected)?;
            let mut records = Vec::with_capacity(writes.len());
            for write in &writes {
                let record = match write {
                    SkillWrite::Insert(skill, _) => tx
                        .prepare_cached(concat!(
                            "INSERT INTO skills (id, user_id, name, description, skill_dir,
                                                 created_at, updated_at, version)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1)
                             RETURNING ",
                            skill_columns!()
                        ))?
                        .query_row(
                            params![
                                skill.id,
                                skill.user_id,
                                skill.name,
                                skill.description,
                                skill.skill_dir,
                                micros(skill.created_at)
                            ],
                            skill_from_row,
                        )
                        .optional()?,
                    SkillWrite::Update {
                        id,
                        description,
                        is_active,
                        ..
                    } => tx
                        .prepare_cached(concat!(
                            "UPDATE skills
                             SET description = ?3, is_active = coalesce(?5, is_active),
                                 updated_at = ?4, version = version + 1
                             WHERE id = ?2 AND user_id = ?1
                             RETURNING ",
                            skill_columns!()
                        ))?
                        .query_row(
                            params![user_id, id, description, micros(now), is_active],
                            skill_from_row,
                        )
                        .optional()?,
                };
                // Dropping the transaction rolls it back.
                let Some(record) = record else {
                    return Ok(None);
                };
                let version = match write {
                    SkillWrite::Insert(_, version) | SkillWrite::Update { version, .. } => version,
                };
                write_version(
                    &tx,
                    user_id,
                    record.id,
                    record.version,
                    version,
                    micros(now),
                    keep,
                )?;
                records.push(record);
            }
            for source in &sources {
                sources::upsert(&tx, user_id, source, micros(now))?;
            }
            tx.commit()?;
            Ok(Some(records))
        })
        .await
    }

    pub(crate) async fn versions(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
    ) -> StoreResult<Vec<VersionRecord>> {
        self.with_conn("listing versions", move |c| {
            c.prepare_cached(
                "SELECT skill_id, version, created_at, digest, file_count, size, front_matter
                 FROM skill_versions WHERE user_id = ?1 AND skill_id = ?2 ORDER BY version DESC",
            )?
            .query_map(params![user_id, skill_id], version_from_row)?
            .collect()
        })
        .await
    }

    pub(crate) async fn version(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        version: i64,
    ) -> StoreResult<Option<(VersionRecord, Vec<VersionFile>)>> {
        self.with_conn("reading a version", move |c| {
            let Some(record) = c
                .prepare_cached(
                    "SELECT skill_id, version, created_at, digest, file_count, size, front_matter
                     FROM skill_versions WHERE user_id = ?1 AND skill_id = ?2 AND version = ?3",
                )?
                .query_row(params![user_id, skill_id, version], version_from_row)
                .optional()?
            else {
                return Ok(None);
            };
            let files = c
                .prepare_cached(
                    "SELECT path, sha256, size, executable FROM version_files
                     WHERE skill_id = ?1 AND version = ?2 ORDER BY path",
                )?
                .query_map(params![skill_id, version], |row| {
                    Ok(VersionFile {
                        path: row.get(0)?,
                        sha256: row.get(1)?,
                        size: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                        executable: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((record, files)))
        })
        .await
    }

    pub(crate) async fn blob_bytes(&self, user_id: Uuid) -> StoreResult<u64> {
        self.with_conn("counting blobs", move |c| {
            let bytes: i64 = c
                .prepare_cached("SELECT coalesce(sum(size), 0) FROM blobs WHERE user_id = ?1")?
                .query_row([user_id], |row| row.get(0))?;
            Ok(u64::try_from(bytes).unwrap_or(0))
        })
        .await
    }

    pub(crate) async fn unreferenced_blobs(
        &self,
        user_id: Uuid,
    ) -> StoreResult<Vec<(String, u64)>> {
        self.with_conn("finding unreferenced blobs", move |c| {
            c.prepare_cached(
                "SELECT sha256, size FROM blobs AS b WHERE user_id = ?1 AND NOT EXISTS
                     (SELECT 1 FROM version_files AS f
                      WHERE f.user_id = b.user_id AND f.sha256 = b.sha256)",
            )?
            .query_map([user_id], |row| {
                Ok((
                    row.get(0)?,
                    u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })?
            .collect()
        })
        .await
    }

    pub(crate) async fn blobs_of(&self, user_id: Uuid) -> StoreResult<Vec<String>> {
        self.with_conn("listing blobs", move |c| {
            c.prepare_cached("SELECT sha256 FROM blobs WHERE user_id = ?1")?
                .query_map([user_id], |row| row.get(0))?
                .collect()
        })
        .await
    }

    pub(crate) async fn current_files(
        &self,
        user_id: Uuid,
    ) -> StoreResult<Vec<(Uuid, VersionFile)>> {
        self.with_conn("reading current versions", move |c| {
            c.prepare_cached(
                "SELECT f.skill_id, f.path, f.sha256, f.size, f.executable
                 FROM version_files AS f JOIN skills AS s
                      ON s.id = f.skill_id AND s.version = f.version
                 WHERE s.user_id = ?1 ORDER BY f.skill_id, f.path",
            )?
            .query_map([user_id], |row| {
                Ok((
                    row.get(0)?,
                    VersionFile {
                        path: row.get(1)?,
                        sha256: row.get(2)?,
                        size: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                        executable: row.get(4)?,
                    },
                ))
            })?
            .collect()
        })
        .await
    }

    pub(crate) async fn unversioned_skills(&self) -> StoreResult<Vec<SkillRecord>> {
        self.with_conn("listing unversioned skills", move |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                skill_columns!(),
                " FROM skills WHERE version = 0 ORDER BY user_id, name"
            ))?
            .query_map([], skill_from_row)?
            .collect()
        })
        .await
    }

    pub(crate) async fn delete_skill(
        &self,
        user_id: Uuid,
        id: Uuid,
        expected: Option<i64>,
    ) -> StoreResult<bool> {
        self.with_conn("deleting a skill", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            bump_skills(&tx, user_id, expected)?;
            let deleted = tx
                .prepare_cached("DELETE FROM skills WHERE id = ?2 AND user_id = ?1")?
                .execute(params![user_id, id])?;
            if deleted > 0 {
                tx.commit()?;
            }
            Ok(deleted > 0)
        })
        .await
    }

    /// The user's skills version (`None`: no such user).
    pub(crate) async fn skills_version(&self, user_id: Uuid) -> StoreResult<Option<i64>> {
        self.with_conn("reading a skills version", move |c| {
            c.prepare_cached("SELECT skills_version FROM users WHERE id = ?1")?
                .query_row([user_id], |row| row.get(0))
                .optional()
        })
        .await
    }

    /// The skills versions of those of `users` who exist.
    pub(crate) async fn skills_versions(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        let users = users.to_vec();
        self.with_conn("reading skills versions", move |c| {
            let mut stmt = c.prepare_cached("SELECT skills_version FROM users WHERE id = ?1")?;
            let mut found = Vec::with_capacity(users.len());
            for user in users {
                if let Some(version) = stmt.query_row([user], |row| row.get(0)).optional()? {
                    found.push((user, version));
                }
            }
            Ok(found)
        })
        .await
    }

    /// Collection, as PostgreSQL's: the unreferenced blobs handed to `remove`, then the rows of
    /// those it removed deleted and the skills version bumped. SQLite serves one process, whose
    /// workspace actor is the user's only writer, so no lock is held while `remove` runs; the
    /// compare-and-set at the end still refuses a version that moved.
    pub(crate) async fn collect_blobs<F, Fut>(
        &self,
        user_id: Uuid,
        expected: i64,
        remove: F,
    ) -> StoreResult<Collected>
    where
        F: FnOnce(Vec<(String, u64)>) -> Fut + Send,
        Fut: std::future::Future<Output = Vec<(String, u64)>> + Send,
    {
        if self.skills_version(user_id).await? != Some(expected) {
            return Err(StoreError::Stale);
        }
        let unreferenced = self.unreferenced_blobs(user_id).await?;
        if unreferenced.is_empty() {
            return Ok(Collected {
                removed: Vec::new(),
                version: expected,
            });
        }
        let removed = remove(unreferenced).await;
        let shas: Vec<String> = removed.iter().map(|(sha, _)| sha.clone()).collect();
        self.with_conn("collecting blobs", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            bump_skills(&tx, user_id, Some(expected))?;
            let mut stmt = tx.prepare_cached(
                "DELETE FROM blobs WHERE user_id = ?1 AND sha256 = ?2 AND NOT EXISTS
                     (SELECT 1 FROM version_files WHERE user_id = ?1 AND sha256 = ?2)",
            )?;
            for sha in &shas {
                stmt.execute(params![user_id, sha])?;
            }
            drop(stmt);
            tx.commit()
        })
        .await?;
        Ok(Collected {
            removed,
            version: expected + 1,
        })
    }

    // ---- API tokens ----

    pub(crate) async fn insert_api_token(
        &self,
        token: &NewApiToken,
        max_per_user: u32,
    ) -> StoreResult<()> {
        let token = token.clone();
        let inserted = self
            .write("creating an API token", move |tx| {
                // The write lock taken by BEGIN IMMEDIATE keeps the count true until the insert.
                // Expired tokens do not count: they no longer work, and a user should not have to
                // clean them up to make a new one.
                let count: i64 = tx
                    .prepare_cached(
                        "SELECT count(*) FROM api_tokens
                         WHERE user_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                    )?
                    .query_row(params![token.user_id, micros(token.created_at)], |row| {
                        row.get(0)
                    })?;
                if count >= i64::from(max_per_user) {
                    return Ok(false);
                }
                tx.prepare_cached(
                    "INSERT INTO api_tokens
                         (id, user_id, name, prefix, token_hash, expires_at, created_at, scopes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    token.id,
                    token.user_id,
                    token.name,
                    token.prefix,
                    token.token_hash,
                    token.expires_at.map(micros),
                    micros(token.created_at),
                    token.scopes,
                ])?;
                bump_epoch(tx)?;
                Ok(true)
            })
            .await?;
        if inserted {
            Ok(())
        } else {
            Err(StoreError::LimitReached)
        }
    }

    pub(crate) async fn list_api_tokens(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<ApiTokenRecord>> {
        self.with_conn("listing API tokens", move |c| {
            c.prepare_cached(
                "SELECT id, user_id, name, prefix,
                        is_active = 1 AND (expires_at IS NULL OR expires_at > ?2),
                        created_at, expires_at, last_used_at, scopes
                 FROM api_tokens
                 WHERE user_id = ?1
                 ORDER BY created_at DESC, id",
            )?
            .query_map(params![user_id, micros(now)], |row| {
                Ok(ApiTokenRecord {
                    id: row.get(0)?,
                    user_id: row.get(1)?,
                    name: row.get(2)?,
                    prefix: row.get(3)?,
                    is_active: row.get(4)?,
                    created_at: time_at(row, 5)?,
                    expires_at: opt_time_at(row, 6)?,
                    last_used_at: opt_time_at(row, 7)?,
                    scopes: row.get(8)?,
                })
            })?
            .collect()
        })
        .await
    }

    pub(crate) async fn delete_api_token(&self, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        self.write("deleting an API token", move |tx| {
            let found = tx
                .prepare_cached("DELETE FROM api_tokens WHERE id = ?2 AND user_id = ?1")?
                .execute(params![user_id, id])?
                > 0;
            if found {
                bump_epoch(tx)?;
            }
            Ok(found)
        })
        .await
    }

    pub(crate) async fn live_api_tokens(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<LiveApiToken>> {
        self.with_conn("loading live API tokens", move |c| {
            c.prepare_cached(
                "SELECT t.id, t.user_id, t.token_hash, t.expires_at, t.scopes
                 FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.is_active = 1 AND u.is_active = 1
                   AND (t.expires_at IS NULL OR t.expires_at > ?1)",
            )?
            .query_map([micros(now)], |row| {
                Ok(LiveApiToken {
                    id: row.get(0)?,
                    user_id: row.get(1)?,
                    // rusqlite refuses a BLOB that is not exactly 32 bytes.
                    token_hash: row.get(2)?,
                    expires_at: opt_time_at(row, 3)?,
                    scopes: row.get(4)?,
                })
            })?
            .collect()
        })
        .await
    }

    pub(crate) async fn record_token_use(
        &self,
        uses: &[(Uuid, OffsetDateTime)],
    ) -> StoreResult<()> {
        self.record_use("api_tokens", "recording API token use", uses)
            .await
    }

    /// Writes `last_used_at` of rows of `table` (API tokens, OAuth grants) in one transaction,
    /// never moving it backwards.
    async fn record_use(
        &self,
        table: &'static str,
        context: &'static str,
        uses: &[(Uuid, OffsetDateTime)],
    ) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let uses: Vec<(Uuid, i64)> = uses.iter().map(|&(id, at)| (id, micros(at))).collect();
        self.write(context, move |tx| {
            // Two-argument max() is SQLite's scalar maximum; coalesce covers a first use.
            let mut update = tx.prepare_cached(&format!(
                "UPDATE {table} SET last_used_at = max(coalesce(last_used_at, ?2), ?2)
                 WHERE id = ?1"
            ))?;
            for (id, at) in uses {
                update.execute(params![id, at])?;
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn registry_epoch(&self) -> StoreResult<i64> {
        self.with_conn("reading the registry epoch", |c| {
            c.prepare_cached("SELECT value FROM registry_epoch WHERE id = 1")?
                .query_row([], |row| row.get(0))
        })
        .await
    }
}

/// Test-only access to rows the interface does not expose.
#[cfg(test)]
impl SqliteStore {
    pub(crate) async fn count_rows_for_test(&self, table: &'static str) -> StoreResult<i64> {
        self.with_conn("counting test rows", move |c| {
            c.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
        })
        .await
    }

    /// Applies the migrations up to `version` only, as an earlier release would have.
    pub(crate) async fn migrate_to_for_test(&self, version: i32) -> StoreResult<()> {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| setup(&self.path, "opening", e))?;
        conn.interact(move |c| {
            embedded::migrations::runner()
                .set_target(refinery::Target::Version(version))
                .run(c)
        })
        .await
        .map_err(|e| StoreError::Setup {
            context: "migrating for a test".to_owned(),
            source: e.to_string().into(),
        })?
        .map_err(|e| setup(&self.path, "migrating", e))?;
        Ok(())
    }

    /// Inserts a session row as releases before `V0009` did (no count kept).
    pub(crate) async fn insert_v8_session_for_test(
        &self,
        s: &crate::store::McpSessionRecord,
    ) -> StoreResult<()> {
        let s = s.clone();
        self.with_conn("inserting a test session", move |c| {
            c.execute(
                "INSERT INTO mcp_sessions (id, user_id, token_id, scopes, protocol_version,
                                           client_capabilities, created_at, last_seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params![
                    s.id,
                    s.user_id,
                    s.token_id,
                    s.scopes,
                    s.protocol_version,
                    s.client_capabilities,
                    micros(s.created_at),
                    micros(s.last_seen_at),
                ],
            )
            .map(drop)
        })
        .await
    }

    /// Inserts a user row with the columns of `V0001` only, as releases before `V0002` did.
    pub(crate) async fn insert_v1_user_for_test(
        &self,
        id: Uuid,
        email: &str,
        username: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let (email, username) = (email.to_owned(), username.to_owned());
        self.with_conn("inserting a test row", move |c| {
            c.execute(
                "INSERT INTO users (id, email, username, password_hash, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'x', ?4, ?4)",
                params![id, email, username, micros(at)],
            )
            .map(drop)
        })
        .await
    }
}

/// Whether an account other than `except` has this address, or a look-alike of it: the same
/// skeleton, unless both addresses are plain ASCII (see [`email_skeleton`]). The address is in
/// its normal form, so `email = ?1` (NOCASE) is the exact comparison.
fn email_taken(
    c: &Connection,
    email: &str,
    skeleton: &str,
    except: Uuid,
) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id <> ?4 AND (email = ?1 OR (
             email_skeleton = ?2 AND (?3 OR length(email) <> length(CAST(email AS BLOB))))))",
    )?
    .query_row(params![email, skeleton, !email.is_ascii(), except], |row| {
        row.get(0)
    })
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        email: row.get(1)?,
        username: row.get(2)?,
        password_hash: row.get(3)?,
        is_active: row.get(4)?,
        token_version: row.get(5)?,
        created_at: time_at(row, 6)?,
        updated_at: time_at(row, 7)?,
    })
}

fn skill_from_row(row: &Row<'_>) -> rusqlite::Result<SkillRecord> {
    Ok(SkillRecord {
        id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        skill_dir: row.get(4)?,
        is_active: row.get(5)?,
        created_at: time_at(row, 6)?,
        updated_at: time_at(row, 7)?,
        version: row.get(8)?,
    })
}

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<VersionRecord> {
    Ok(VersionRecord {
        skill_id: row.get(0)?,
        version: row.get(1)?,
        created_at: time_at(row, 2)?,
        digest: row.get(3)?,
        file_count: row.get(4)?,
        size: row.get(5)?,
        front_matter: row.get(6)?,
    })
}

/// Records `version` of a skill (its row, its files, their blob rows) and prunes the skill's
/// versions older than the newest `keep`.
fn write_version(
    tx: &Transaction<'_>,
    user_id: Uuid,
    skill_id: Uuid,
    number: i64,
    version: &NewVersion,
    now: i64,
    keep: u32,
) -> rusqlite::Result<()> {
    let size: u64 = version.files.iter().map(|f| f.size).sum();
    tx.prepare_cached(
        "INSERT INTO skill_versions
             (skill_id, version, user_id, created_at, digest, file_count, size, front_matter)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        skill_id,
        number,
        user_id,
        now,
        version.digest,
        i64::try_from(version.files.len()).unwrap_or(i64::MAX),
        i64::try_from(size).unwrap_or(i64::MAX),
        version.front_matter,
    ])?;
    let mut file = tx.prepare_cached(
        "INSERT INTO version_files (skill_id, version, path, user_id, sha256, size, executable)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut blob = tx.prepare_cached(
        "INSERT INTO blobs (user_id, sha256, size, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, sha256) DO NOTHING",
    )?;
    for f in &version.files {
        let size = i64::try_from(f.size).unwrap_or(i64::MAX);
        file.execute(params![
            skill_id,
            number,
            f.path,
            user_id,
            f.sha256,
            size,
            f.executable
        ])?;
        blob.execute(params![user_id, f.sha256, size, now])?;
    }
    if let Some(oldest_kept) = number.checked_sub(i64::from(keep)) {
        tx.prepare_cached("DELETE FROM skill_versions WHERE skill_id = ?1 AND version <= ?2")?
            .execute(params![skill_id, oldest_kept])?;
    }
    Ok(())
}

fn revoke_all_sessions(tx: &Transaction<'_>, user_id: Uuid, now: i64) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE auth_sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![user_id, now])
}

/// The mark of a compare-and-set of the skills version that found another number
/// ([`StoreError::Stale`]), carried through rusqlite's error type.
#[derive(Debug)]
struct StaleMark;

impl std::fmt::Display for StaleMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the skills version moved on")
    }
}

impl std::error::Error for StaleMark {}

/// Bumps the user's skills version inside a change's transaction; with `expected`, only from that
/// number (see the PostgreSQL back end's `bump_skills`).
fn bump_skills(tx: &Transaction<'_>, user_id: Uuid, expected: Option<i64>) -> rusqlite::Result<()> {
    let changed = tx
        .prepare_cached(
            "UPDATE users SET skills_version = skills_version + 1
             WHERE id = ?1 AND (?2 IS NULL OR skills_version = ?2)",
        )?
        .execute(params![user_id, expected])?;
    if changed == 0 {
        return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(StaleMark)));
    }
    Ok(())
}

/// Tells every process that cached API tokens may be stale; runs inside the change's transaction so
/// that a reader never sees the new epoch without the change.
fn bump_epoch(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE registry_epoch SET value = value + 1 WHERE id = 1")?
        .execute([])?;
    Ok(())
}

/// Microseconds since the Unix epoch; finer digits are dropped (rounding towards the past).
fn micros(t: OffsetDateTime) -> i64 {
    let us = t.unix_timestamp_nanos().div_euclid(1_000);
    // Always in range: the `time` crate's dates span ±9999 years, i64 microseconds ±292,000.
    i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
}

fn from_micros(us: i64) -> Result<OffsetDateTime, time::error::ComponentRange> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
}

fn time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<OffsetDateTime> {
    from_micros(row.get(idx)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, Box::new(e)))
}

fn opt_time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<OffsetDateTime>> {
    row.get::<_, Option<i64>>(idx)?
        .map(|us| {
            from_micros(us).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, Box::new(e))
            })
        })
        .transpose()
}

fn setup(path: &Path, what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Setup {
        context: format!("{what} the SQLite database {}", path.display()),
        source: Box::new(e),
    }
}

fn sqlite_error(context: &'static str, e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::ToSqlConversionFailure(inner) = &e
        && inner.is::<StaleMark>()
    {
        return StoreError::Stale;
    }
    if let rusqlite::Error::SqliteFailure(code, message) = &e {
        if code.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE {
            // SQLite names the column, not the index: "UNIQUE constraint failed: users.email".
            match message.as_deref() {
                Some("UNIQUE constraint failed: users.email") => {
                    return StoreError::Duplicate(UniqueField::Email);
                }
                Some("UNIQUE constraint failed: users.username") => {
                    return StoreError::Duplicate(UniqueField::Username);
                }
                // UNIQUE (user_id, name): both columns, in the constraint's order.
                Some("UNIQUE constraint failed: skills.user_id, skills.name") => {
                    return StoreError::Duplicate(UniqueField::SkillName);
                }
                _ => {}
            }
        }
        // Still locked after busy_timeout: another writer holds the database; worth retrying later.
        if matches!(
            code.code,
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked
        ) {
            return StoreError::Unavailable(Box::new(e));
        }
        // The data dir's disk is full: the same condition, and the same answer, as a skill
        // upload that runs out of room, not a bug.
        if code.code == ErrorCode::DiskFull {
            return StoreError::StorageFull(Box::new(e));
        }
    }
    StoreError::Backend {
        context,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn a_full_disk_and_a_locked_database_are_told_apart_from_bugs() {
        assert!(matches!(
            sqlite_error("writing", failure(ffi::SQLITE_FULL)),
            StoreError::StorageFull(_)
        ));
        assert!(matches!(
            sqlite_error("writing", failure(ffi::SQLITE_BUSY)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            sqlite_error("writing", failure(ffi::SQLITE_CORRUPT)),
            StoreError::Backend { .. }
        ));
    }
}
