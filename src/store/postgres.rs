//! The PostgreSQL back end: tokio-postgres behind a deadpool pool, schema in `sql/postgres`.
//!
//! Every statement goes through the connection's statement cache (`prepare_cached`), so each is
//! parsed once per connection. Operation bodies are written as async blocks that fail with
//! [`Fail`]; the operation then gives the failure its context once, in [`fail`].
//!
//! Concurrency relies on row locks under the default READ COMMITTED isolation: `rotate_refresh`
//! locks the refresh token and its session (`FOR UPDATE`), `insert_api_token` locks the owner's
//! user row while it counts.

use std::time::{Duration, Instant};

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::{
    AccountCounts, ApiTokenRecord, BrowserSessionRecord, Collected, LiveApiToken, NewApiToken,
    NewBrowserSession, NewRefreshToken, NewSource, NewUser, NewVersion, RotateOutcome, SkillRecord,
    SkillWrite, StoreError, StoreResult, UniqueField, UserRecord, VersionFile, VersionRecord,
};
use crate::config::DatabaseSettings;
use crate::domain::email_skeleton;

pub(crate) mod listen;
mod oauth;
mod sessions;
mod sources;

/// The migrations of `sql/postgres`, compiled in so that the binary needs no files at run time.
/// Edits to a file are picked up by the next build; a new file only once this module is rebuilt.
mod embedded {
    refinery::embed_migrations!("sql/postgres");
}

/// Session-level advisory lock held while migrating, so that processes starting together apply
/// each migration once (refinery itself does not lock). Any fixed number unlikely to be used by
/// others: "agsk" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6167_736b;

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
pub struct PgStore {
    pool: Pool,
    /// For connections outside the pool (the listener of other replicas' changes); boxed, as
    /// it is large and rarely used.
    config: Box<tokio_postgres::Config>,
}

impl PgStore {
    /// Starts listening for other replicas' changes on a connection of its own.
    pub(crate) fn listen(
        &self,
    ) -> (
        listen::ListenerHealth,
        tokio::sync::mpsc::UnboundedReceiver<super::Announcement>,
    ) {
        let mut config = (*self.config).clone();
        // A connection a network dropped without a word is found by TCP's keepalives too.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        listen::spawn(config)
    }

    pub(crate) fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// Builds the pool and makes one connection, so that a wrong URL, password or host fails
    /// start-up rather than the first request. Does not migrate.
    pub(crate) async fn connect(url: &str, settings: &DatabaseSettings) -> StoreResult<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| setup("parsing the PostgreSQL URL", e))?;
        let connect = Duration::from_secs(settings.connect_timeout_secs);
        let acquire = Duration::from_secs(settings.acquire_timeout_secs);
        config.connect_timeout(connect);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(
                usize::try_from(settings.max_connections)
                    .unwrap_or(usize::MAX)
                    .max(1),
            )
            .wait_timeout(Some(acquire))
            .create_timeout(Some(connect))
            .recycle_timeout(Some(connect))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| setup("building the PostgreSQL pool", e))?;
        drop(
            pool.get()
                .await
                .map_err(|e| setup("connecting to PostgreSQL", e))?,
        );
        Ok(PgStore {
            pool,
            config: Box::new(config),
        })
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }

    pub(crate) async fn migrate(&self) -> StoreResult<usize> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| setup("connecting to PostgreSQL to migrate", e))?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(|e| setup("waiting for the PostgreSQL migration lock", e))?;
        let report = embedded::migrations::runner()
            .run_async(&mut **client)
            .await;
        if client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .is_err()
        {
            // Closing the connection ends its session and with it the lock; never pool it.
            drop(Object::take(client));
        }
        let report = report.map_err(|e| setup("applying PostgreSQL migrations", e))?;
        Ok(report.applied_migrations().len())
    }

    /// Time to get a connection and run `SELECT 1` on it, which is what a request would wait for.
    pub(crate) async fn ping(&self) -> StoreResult<Duration> {
        let start = Instant::now();
        let client = self.client().await?;
        let run = async {
            let stmt = client.prepare_cached("SELECT 1").await?;
            client.query_one(&stmt, &[]).await?;
            Ok(())
        };
        run.await.map_err(fail("pinging"))?;
        Ok(start.elapsed())
    }

    /// Rows written before `email_skeleton` existed: (id, email as stored).
    pub(crate) async fn emails_without_skeleton(&self) -> StoreResult<Vec<(Uuid, String)>> {
        let client = self.client().await?;
        let run = async {
            let rows = client
                .query(
                    "SELECT id, email FROM users WHERE email_skeleton IS NULL
                     ORDER BY created_at, id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("reading emails to back-fill"))
    }

    /// Back-fills one row: its skeleton, and its email's normal form when that differs.
    pub(crate) async fn backfill_email(
        &self,
        id: Uuid,
        email: Option<&str>,
        skeleton: &str,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE users SET email = coalesce($2, email), email_skeleton = $3
                 WHERE id = $1 AND email_skeleton IS NULL",
                &[&id, &email, &skeleton],
            )
            .await
            .map_err(|e| pg_error("back-filling an email", e))?;
        Ok(())
    }

    // ---- users ----

    pub(crate) async fn insert_user(&self, user: &NewUser) -> StoreResult<UserRecord> {
        let skeleton = email_skeleton(&user.email);
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            if lock_and_check_email(&tx, &user.email, &skeleton, user.id).await? {
                return Ok(None);
            }
            let stmt = tx
                .prepare_cached(concat!(
                    "INSERT INTO users
                       (id, email, email_skeleton, username, password_hash, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)
                     RETURNING ",
                    user_columns!()
                ))
                .await?;
            let row = tx
                .query_one(
                    &stmt,
                    &[
                        &user.id,
                        &user.email,
                        &skeleton,
                        &user.username,
                        &user.password_hash,
                        &user.created_at,
                    ],
                )
                .await?;
            let user = user_from_row(&row)?;
            tx.commit().await?;
            Ok(Some(user))
        };
        run.await
            .map_err(fail("creating a user"))?
            .ok_or(StoreError::Duplicate(UniqueField::Email))
    }

    pub(crate) async fn email_taken(&self, email: &str, except: Option<Uuid>) -> StoreResult<bool> {
        let skeleton = email_skeleton(email);
        let client = self.client().await?;
        email_taken(&client, email, &skeleton, except.unwrap_or_else(Uuid::nil))
            .await
            .map_err(|e| pg_error("checking whether an email is taken", e))
    }

    pub(crate) async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        self.one_user(sql, &id, "reading a user").await
    }

    pub(crate) async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        // Written as lower(email) so that the unique index users_email_key serves it.
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE lower(email) = lower($1)"
        );
        self.one_user(sql, &email, "reading a user by email").await
    }

    pub(crate) async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE lower(username) = lower($1)"
        );
        self.one_user(sql, &username, "reading a user by username")
            .await
    }

    /// Runs a query for at most one user with one parameter.
    async fn one_user(
        &self,
        sql: &'static str,
        param: &(dyn tokio_postgres::types::ToSql + Sync),
        context: &'static str,
    ) -> StoreResult<Option<UserRecord>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client.prepare_cached(sql).await?;
            client
                .query_opt(&stmt, &[param])
                .await?
                .as_ref()
                .map(user_from_row)
                .transpose()
        };
        run.await.map_err(fail(context))
    }

    pub(crate) async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users ORDER BY created_at, id"
                ))
                .await?;
            client
                .query(&stmt, &[])
                .await?
                .iter()
                .map(user_from_row)
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("listing users"))
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
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            if let (Some(email), Some(skeleton)) = (email, &skeleton)
                && lock_and_check_email(&tx, email, skeleton, id).await?
            {
                return Ok(Err(StoreError::Duplicate(UniqueField::Email)));
            }
            let stmt = tx
                .prepare_cached(concat!(
                    "UPDATE users
                     SET email = coalesce($2, email), email_skeleton = coalesce($3, email_skeleton),
                         username = coalesce($4, username), updated_at = $5
                     WHERE id = $1
                     RETURNING ",
                    user_columns!()
                ))
                .await?;
            let user = tx
                .query_opt(&stmt, &[&id, &email, &skeleton, &username, &now])
                .await?
                .as_ref()
                .map(user_from_row)
                .transpose()?;
            tx.commit().await?;
            Ok(Ok(user))
        };
        run.await.map_err(fail("updating a profile"))?
    }

    pub(crate) async fn set_password(
        &self,
        id: Uuid,
        hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE users
                     SET password_hash = $2, updated_at = $3, token_version = token_version + 1
                     WHERE id = $1",
                )
                .await?;
            let found = tx.execute(&stmt, &[&id, &hash, &now]).await? > 0;
            revoke_all_sessions(&tx, id, now).await?;
            tx.commit().await?;
            Ok(found)
        };
        run.await.map_err(fail("setting a password"))
    }

    pub(crate) async fn upgrade_password_hash(
        &self,
        id: Uuid,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
                )
                .await?;
            Ok(client.execute(&stmt, &[&id, &old, &new]).await? > 0)
        };
        run.await.map_err(fail("upgrading a password hash"))
    }

    pub(crate) async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let found = if active {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE users SET is_active = TRUE, updated_at = $2 WHERE id = $1",
                    )
                    .await?;
                tx.execute(&stmt, &[&id, &now]).await? > 0
            } else {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE users
                         SET is_active = FALSE, updated_at = $2, token_version = token_version + 1
                         WHERE id = $1",
                    )
                    .await?;
                let found = tx.execute(&stmt, &[&id, &now]).await? > 0;
                revoke_all_sessions(&tx, id, now).await?;
                found
            };
            if found {
                bump_epoch(&tx).await?;
            }
            tx.commit().await?;
            Ok(found)
        };
        run.await.map_err(fail("changing whether a user is active"))
    }

    pub(crate) async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            // Sessions, refresh tokens, API tokens and skills go with it (ON DELETE CASCADE).
            let stmt = tx.prepare_cached("DELETE FROM users WHERE id = $1").await?;
            let found = tx.execute(&stmt, &[&id]).await? > 0;
            if found {
                bump_epoch(&tx).await?;
            }
            tx.commit().await?;
            Ok(found)
        };
        run.await.map_err(fail("deleting a user"))
    }

    pub(crate) async fn end_all_sessions(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached("UPDATE users SET token_version = token_version + 1 WHERE id = $1")
                .await?;
            let found = tx.execute(&stmt, &[&id]).await? > 0;
            revoke_all_sessions(&tx, id, now).await?;
            tx.commit().await?;
            Ok(found)
        };
        run.await.map_err(fail("ending all sessions"))
    }

    pub(crate) async fn account_counts(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<AccountCounts> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "SELECT
                        (SELECT count(*) FROM skills WHERE user_id = $1),
                        (SELECT count(*) FROM api_tokens
                         WHERE user_id = $1 AND is_active
                           AND (expires_at IS NULL OR expires_at > $2))",
                )
                .await?;
            let row = client.query_one(&stmt, &[&id, &now]).await?;
            Ok(AccountCounts {
                skills: row.try_get(0)?,
                tokens: row.try_get(1)?,
            })
        };
        run.await
            .map_err(fail("counting a user's skills and tokens"))
    }

    // ---- login sessions and refresh tokens ----

    pub(crate) async fn insert_session(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        refresh: NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO auth_sessions (id, user_id, created_at) VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&stmt, &[&session_id, &user_id, &now]).await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO refresh_tokens (id, session_id, expires_at, created_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .await?;
            tx.execute(
                &stmt,
                &[&refresh.id, &session_id, &refresh.expires_at, &now],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        };
        run.await.map_err(fail("starting a session"))
    }

    pub(crate) async fn access_context(
        &self,
        user_id: Uuid,
        session_id: Uuid,
    ) -> StoreResult<Option<(UserRecord, bool)>> {
        let client = self.client().await?;
        let run = async {
            // Column order as in user_columns!, so user_from_row can read the first eight.
            let stmt = client
                .prepare_cached(
                    "SELECT u.id, u.email, u.username, u.password_hash, u.is_active,
                            u.token_version, u.created_at, u.updated_at,
                            s.id IS NULL OR s.revoked_at IS NOT NULL
                     FROM users u
                     LEFT JOIN auth_sessions s ON s.id = $2 AND s.user_id = u.id
                     WHERE u.id = $1",
                )
                .await?;
            match client.query_opt(&stmt, &[&user_id, &session_id]).await? {
                Some(row) => Ok(Some((user_from_row(&row)?, row.try_get(8)?))),
                None => Ok(None),
            }
        };
        run.await.map_err(fail("reading a user and session"))
    }

    pub(crate) async fn rotate_refresh(
        &self,
        old: Uuid,
        new: NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            // FOR UPDATE locks the token and its session until commit: a concurrent rotation of the
            // same token waits here, then reads the row as this transaction left it (used_at set,
            // or the session revoked).
            let stmt = tx
                .prepare_cached(
                    "SELECT r.session_id, s.user_id, r.expires_at, r.used_at IS NOT NULL,
                            s.revoked_at IS NOT NULL
                     FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id
                     WHERE r.id = $1
                     FOR UPDATE",
                )
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&old]).await? else {
                return Ok(RotateOutcome::Unknown);
            };
            let session_id: Uuid = row.try_get(0)?;
            let user_id: Uuid = row.try_get(1)?;
            let expires_at: OffsetDateTime = row.try_get(2)?;
            let used: bool = row.try_get(3)?;
            let revoked: bool = row.try_get(4)?;
            // Nothing is written before the early returns: dropping `tx` rolls back and unlocks.
            if revoked {
                return Ok(RotateOutcome::SessionRevoked);
            }
            if expires_at <= now {
                return Ok(RotateOutcome::Unknown);
            }
            if used {
                // A used token presented again: it was copied. End the whole family.
                let stmt = tx
                    .prepare_cached(
                        "UPDATE auth_sessions SET revoked_at = $2
                         WHERE id = $1 AND revoked_at IS NULL",
                    )
                    .await?;
                tx.execute(&stmt, &[&session_id, &now]).await?;
                tx.commit().await?;
                return Ok(RotateOutcome::Reused {
                    session_id,
                    user_id,
                });
            }
            let stmt = tx
                .prepare_cached("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1")
                .await?;
            tx.execute(&stmt, &[&old, &now]).await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO refresh_tokens (id, session_id, expires_at, created_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .await?;
            tx.execute(&stmt, &[&new.id, &session_id, &new.expires_at, &now])
                .await?;
            tx.commit().await?;
            Ok(RotateOutcome::Rotated {
                session_id,
                user_id,
            })
        };
        run.await.map_err(fail("rotating a refresh token"))
    }

    pub(crate) async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "UPDATE auth_sessions SET revoked_at = $3
                     WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL",
                )
                .await?;
            Ok(client
                .execute(&stmt, &[&user_id, &session_id, &now])
                .await?
                > 0)
        };
        run.await.map_err(fail("revoking a session"))
    }

    pub(crate) async fn purge_expired(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached("DELETE FROM refresh_tokens WHERE expires_at <= $1")
                .await?;
            let tokens = tx.execute(&stmt, &[&now]).await?;
            let stmt = tx
                .prepare_cached("DELETE FROM browser_sessions WHERE expires_at <= $1")
                .await?;
            let browsers = tx.execute(&stmt, &[&now]).await?;
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM auth_sessions s
                     WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.session_id = s.id)
                       AND NOT EXISTS (SELECT 1 FROM browser_sessions b WHERE b.session_id = s.id)",
                )
                .await?;
            let sessions = tx.execute(&stmt, &[]).await?;
            tx.commit().await?;
            Ok(tokens + browsers + sessions)
        };
        run.await.map_err(fail("purging expired sessions"))
    }

    pub(crate) async fn insert_browser_session(
        &self,
        session: &NewBrowserSession,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO auth_sessions (id, user_id, created_at) VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&stmt, &[&session.session_id, &session.user_id, &now])
                .await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO browser_sessions
                         (id_hash, session_id, token_version, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &session.id_hash.as_slice(),
                    &session.session_id,
                    &session.token_version,
                    &now,
                    &session.expires_at,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        };
        run.await.map_err(fail("starting a browser session"))
    }

    pub(crate) async fn browser_session(
        &self,
        id_hash: [u8; 32],
    ) -> StoreResult<Option<BrowserSessionRecord>> {
        let client = self.client().await?;
        let run = async {
            // Column order as in user_columns!, so user_from_row can read the first eight.
            let stmt = client
                .prepare_cached(
                    "SELECT u.id, u.email, u.username, u.password_hash, u.is_active,
                            u.token_version, u.created_at, u.updated_at,
                            s.id, s.revoked_at IS NOT NULL, b.token_version, b.expires_at
                     FROM browser_sessions b
                     JOIN auth_sessions s ON s.id = b.session_id
                     JOIN users u ON u.id = s.user_id
                     WHERE b.id_hash = $1",
                )
                .await?;
            match client.query_opt(&stmt, &[&id_hash.as_slice()]).await? {
                Some(row) => Ok(Some(BrowserSessionRecord {
                    user: user_from_row(&row)?,
                    session_id: row.try_get(8)?,
                    revoked: row.try_get(9)?,
                    token_version: row.try_get(10)?,
                    expires_at: row.try_get(11)?,
                })),
                None => Ok(None),
            }
        };
        run.await.map_err(fail("reading a browser session"))
    }

    pub(crate) async fn delete_browser_session(&self, id_hash: [u8; 32]) -> StoreResult<bool> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached("DELETE FROM browser_sessions WHERE id_hash = $1")
                .await?;
            Ok(client.execute(&stmt, &[&id_hash.as_slice()]).await? > 0)
        };
        run.await.map_err(fail("ending a browser session"))
    }

    // ---- skills ----

    pub(crate) async fn skills_of_user(&self, user_id: Uuid) -> StoreResult<Vec<SkillRecord>> {
        let client = self.client().await?;
        let run = async {
            // COLLATE "C" orders names by their UTF-8 bytes, as SQLite's BINARY collation does,
            // whatever the database's collation.
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    skill_columns!(),
                    " FROM skills WHERE user_id = $1 ORDER BY name COLLATE \"C\", id"
                ))
                .await?;
            client
                .query(&stmt, &[&user_id])
                .await?
                .iter()
                .map(skill_from_row)
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("listing skills"))
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
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            bump_skills(&tx, user_id, expected).await?;
            let stmt = tx
                .prepare_cached(concat!(
                    "UPDATE skills
                     SET description = coalesce($3, description),
                         is_active = coalesce($4, is_active), updated_at = $5
                     WHERE id = $2 AND user_id = $1
                     RETURNING ",
                    skill_columns!()
                ))
                .await?;
            // No such skill: dropping the transaction rolls the version's bump back.
            let Some(row) = tx
                .query_opt(&stmt, &[&user_id, &id, &description, &is_active, &now])
                .await?
            else {
                return Ok(None);
            };
            let record = skill_from_row(&row)?;
            tx.commit().await?;
            Ok(Some(record))
        };
        run.await.map_err(fail("updating a skill"))
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
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            // First: the user's row is locked from here to the commit, so another writer of their
            // skills waits, then finds the version moved on.
            bump_skills(&tx, user_id, expected).await?;
            let insert = tx
                .prepare_cached(concat!(
                    "INSERT INTO skills (id, user_id, name, description, skill_dir,
                                         created_at, updated_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, 1)
                     RETURNING ",
                    skill_columns!()
                ))
                .await?;
            let update = tx
                .prepare_cached(concat!(
                    "UPDATE skills
                     SET description = $3, is_active = coalesce($5, is_active), updated_at = $4,
                         version = version + 1
                     WHERE id = $2 AND user_id = $1
                     RETURNING ",
                    skill_columns!()
                ))
                .await?;
            let mut records = Vec::with_capacity(writes.len());
            for write in writes {
                let row = match write {
                    SkillWrite::Insert(skill, _) => Some(
                        tx.query_one(
                            &insert,
                            &[
                                &skill.id,
                                &skill.user_id,
                                &skill.name,
                                &skill.description,
                                &skill.skill_dir,
                                &skill.created_at,
                            ],
                        )
                        .await?,
                    ),
                    SkillWrite::Update {
                        id,
                        description,
                        is_active,
                        ..
                    } => {
                        tx.query_opt(&update, &[&user_id, id, description, &now, is_active])
                            .await?
                    }
                };
                // Dropping the transaction rolls it back.
                let Some(row) = row else {
                    return Ok(None);
                };
                let record = skill_from_row(&row)?;
                let version = match write {
                    SkillWrite::Insert(_, version) | SkillWrite::Update { version, .. } => version,
                };
                write_version(&tx, user_id, record.id, record.version, version, now, keep).await?;
                records.push(record);
            }
            for source in sources {
                sources::upsert(&tx, user_id, source, now).await?;
            }
            tx.commit().await?;
            Ok(Some(records))
        };
        run.await.map_err(fail("writing skills"))
    }

    pub(crate) async fn versions(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
    ) -> StoreResult<Vec<VersionRecord>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "SELECT skill_id, version, created_at, digest, file_count, size, front_matter
                     FROM skill_versions WHERE user_id = $1 AND skill_id = $2
                     ORDER BY version DESC",
                )
                .await?;
            client
                .query(&stmt, &[&user_id, &skill_id])
                .await?
                .iter()
                .map(version_from_row)
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("listing versions"))
    }

    pub(crate) async fn version(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        version: i64,
    ) -> StoreResult<Option<(VersionRecord, Vec<VersionFile>)>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "SELECT skill_id, version, created_at, digest, file_count, size, front_matter
                     FROM skill_versions WHERE user_id = $1 AND skill_id = $2 AND version = $3",
                )
                .await?;
            let Some(row) = client
                .query_opt(&stmt, &[&user_id, &skill_id, &version])
                .await?
            else {
                return Ok(None);
            };
            let record = version_from_row(&row)?;
            let stmt = client
                .prepare_cached(
                    "SELECT path, sha256, size, executable FROM version_files
                     WHERE skill_id = $1 AND version = $2 ORDER BY path",
                )
                .await?;
            let files = client
                .query(&stmt, &[&skill_id, &version])
                .await?
                .iter()
                .map(|row| {
                    Ok(VersionFile {
                        path: row.try_get(0)?,
                        sha256: row.try_get(1)?,
                        size: u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
                        executable: row.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, Fail>>()?;
            Ok(Some((record, files)))
        };
        run.await.map_err(fail("reading a version"))
    }

    pub(crate) async fn blob_bytes(&self, user_id: Uuid) -> StoreResult<u64> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "SELECT coalesce(sum(size), 0)::bigint FROM blobs WHERE user_id = $1",
                )
                .await?;
            let bytes: i64 = client.query_one(&stmt, &[&user_id]).await?.try_get(0)?;
            Ok(u64::try_from(bytes).unwrap_or(0))
        };
        run.await.map_err(fail("counting blobs"))
    }

    pub(crate) async fn unreferenced_blobs(
        &self,
        user_id: Uuid,
    ) -> StoreResult<Vec<(String, u64)>> {
        let client = self.client().await?;
        unreferenced(&client, user_id)
            .await
            .map_err(fail("finding unreferenced blobs"))
    }

    pub(crate) async fn blobs_of(&self, user_id: Uuid) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached("SELECT sha256 FROM blobs WHERE user_id = $1")
                .await?;
            client
                .query(&stmt, &[&user_id])
                .await?
                .iter()
                .map(|row| Ok(row.try_get(0)?))
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("listing blobs"))
    }

    pub(crate) async fn current_files(
        &self,
        user_id: Uuid,
    ) -> StoreResult<Vec<(Uuid, VersionFile)>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "SELECT f.skill_id, f.path, f.sha256, f.size, f.executable
                     FROM version_files AS f JOIN skills AS s
                          ON s.id = f.skill_id AND s.version = f.version
                     WHERE s.user_id = $1 ORDER BY f.skill_id, f.path",
                )
                .await?;
            client
                .query(&stmt, &[&user_id])
                .await?
                .iter()
                .map(|row| {
                    Ok((
                        row.try_get(0)?,
                        VersionFile {
                            path: row.try_get(1)?,
                            sha256: row.try_get(2)?,
                            size: u64::try_from(row.try_get::<_, i64>(3)?).unwrap_or(0),
                            executable: row.try_get(4)?,
                        },
                    ))
                })
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("reading current versions"))
    }

    pub(crate) async fn unversioned_skills(&self) -> StoreResult<Vec<SkillRecord>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(concat!(
                    "SELECT ",
                    skill_columns!(),
                    " FROM skills WHERE version = 0 ORDER BY user_id, name"
                ))
                .await?;
            client
                .query(&stmt, &[])
                .await?
                .iter()
                .map(skill_from_row)
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("listing unversioned skills"))
    }

    pub(crate) async fn delete_skill(
        &self,
        user_id: Uuid,
        id: Uuid,
        expected: Option<i64>,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            bump_skills(&tx, user_id, expected).await?;
            let stmt = tx
                .prepare_cached("DELETE FROM skills WHERE id = $2 AND user_id = $1")
                .await?;
            if tx.execute(&stmt, &[&user_id, &id]).await? == 0 {
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        };
        run.await.map_err(fail("deleting a skill"))
    }

    /// The user's skills version (`None`: no such user).
    pub(crate) async fn skills_version(&self, user_id: Uuid) -> StoreResult<Option<i64>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached("SELECT skills_version FROM users WHERE id = $1")
                .await?;
            Ok(client
                .query_opt(&stmt, &[&user_id])
                .await?
                .map(|row| row.try_get(0))
                .transpose()?)
        };
        run.await.map_err(fail("reading a skills version"))
    }

    /// The skills versions of those of `users` who exist.
    pub(crate) async fn skills_versions(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached("SELECT id, skills_version FROM users WHERE id = ANY($1)")
                .await?;
            client
                .query(&stmt, &[&users])
                .await?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("reading skills versions"))
    }

    /// Collection: the user's blobs that no version refers to are handed to `remove` (which
    /// deletes their bytes and returns those it deleted), then their rows are deleted and the
    /// skills version bumped, all while the user's row is locked: a writer that would refer to
    /// one of them again waits, then finds the version moved on and stores its bytes afresh.
    /// Nothing to collect: nothing is written. `expected` is the version the collector read.
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
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached("SELECT skills_version FROM users WHERE id = $1 FOR NO KEY UPDATE")
                .await?;
            let found: Option<i64> = tx
                .query_opt(&stmt, &[&user_id])
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
            if found != Some(expected) {
                return Err(Fail::Stale);
            }
            let unreferenced = unreferenced(&tx, user_id).await?;
            if unreferenced.is_empty() {
                return Ok(Collected {
                    removed: Vec::new(),
                    version: expected,
                });
            }
            let removed = remove(unreferenced).await;
            let shas: Vec<&str> = removed.iter().map(|(sha, _)| sha.as_str()).collect();
            let stmt = tx
                .prepare_cached("DELETE FROM blobs WHERE user_id = $1 AND sha256 = ANY($2)")
                .await?;
            tx.execute(&stmt, &[&user_id, &shas]).await?;
            bump_skills(&tx, user_id, Some(expected)).await?;
            tx.commit().await?;
            Ok(Collected {
                removed,
                version: expected + 1,
            })
        };
        run.await.map_err(fail("collecting blobs"))
    }

    // ---- API tokens ----

    pub(crate) async fn insert_api_token(
        &self,
        token: &NewApiToken,
        max_per_user: u32,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            // Lock the owner so that concurrent inserts for one user count one after the other.
            // NO KEY UPDATE does not conflict with the KEY SHARE locks of foreign-key checks.
            let stmt = tx
                .prepare_cached("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
                .await?;
            tx.query_opt(&stmt, &[&token.user_id]).await?;
            let stmt = tx
                // Expired tokens do not count: they no longer work, and a user should not have to
                // clean them up to make a new one.
                .prepare_cached(
                    "SELECT count(*) FROM api_tokens
                     WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
                )
                .await?;
            let count: i64 = tx
                .query_one(&stmt, &[&token.user_id, &token.created_at])
                .await?
                .try_get(0)?;
            if count >= i64::from(max_per_user) {
                tx.rollback().await?;
                return Ok(false);
            }
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO api_tokens
                         (id, user_id, name, prefix, token_hash, expires_at, created_at, scopes)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &token.id,
                    &token.user_id,
                    &token.name,
                    &token.prefix,
                    &token.token_hash.as_slice(),
                    &token.expires_at,
                    &token.created_at,
                    &token.scopes,
                ],
            )
            .await?;
            bump_epoch(&tx).await?;
            tx.commit().await?;
            Ok(true)
        };
        if run.await.map_err(fail("creating an API token"))? {
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
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "SELECT id, user_id, name, prefix,
                            is_active AND (expires_at IS NULL OR expires_at > $2),
                            created_at, expires_at, last_used_at, scopes
                     FROM api_tokens
                     WHERE user_id = $1
                     ORDER BY created_at DESC, id",
                )
                .await?;
            let rows = client.query(&stmt, &[&user_id, &now]).await?;
            rows.iter()
                .map(|row| {
                    Ok(ApiTokenRecord {
                        id: row.try_get(0)?,
                        user_id: row.try_get(1)?,
                        name: row.try_get(2)?,
                        prefix: row.try_get(3)?,
                        is_active: row.try_get(4)?,
                        created_at: row.try_get(5)?,
                        expires_at: row.try_get(6)?,
                        last_used_at: row.try_get(7)?,
                        scopes: row.try_get(8)?,
                    })
                })
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("listing API tokens"))
    }

    pub(crate) async fn delete_api_token(&self, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached("DELETE FROM api_tokens WHERE id = $2 AND user_id = $1")
                .await?;
            let found = tx.execute(&stmt, &[&user_id, &id]).await? > 0;
            if found {
                bump_epoch(&tx).await?;
            }
            tx.commit().await?;
            Ok(found)
        };
        run.await.map_err(fail("deleting an API token"))
    }

    pub(crate) async fn live_api_tokens(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<LiveApiToken>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "SELECT t.id, t.user_id, t.token_hash, t.expires_at, t.scopes
                     FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.is_active AND u.is_active
                       AND (t.expires_at IS NULL OR t.expires_at > $1)",
                )
                .await?;
            let rows = client.query(&stmt, &[&now]).await?;
            rows.iter()
                .map(|row| {
                    let hash: &[u8] = row.try_get(2)?;
                    Ok(LiveApiToken {
                        id: row.try_get(0)?,
                        user_id: row.try_get(1)?,
                        // The CHECK constraint makes this impossible; refuse rather than panic.
                        token_hash: hash
                            .try_into()
                            .map_err(|_| Fail::Data("an API token hash is not 32 bytes"))?,
                        expires_at: row.try_get(3)?,
                        scopes: row.try_get(4)?,
                    })
                })
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("loading live API tokens"))
    }

    pub(crate) async fn record_token_use(
        &self,
        uses: &[(Uuid, OffsetDateTime)],
    ) -> StoreResult<()> {
        self.record_use("api_tokens", "recording API token use", uses)
            .await
    }

    /// Writes `last_used_at` of rows of `table` (API tokens, OAuth grants) in one statement,
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
        let (ids, ats): (Vec<Uuid>, Vec<OffsetDateTime>) = uses.iter().copied().unzip();
        let client = self.client().await?;
        let run = async {
            // One statement for the whole batch. The same id may appear more than once: group
            // first, since UPDATE … FROM applies only one of several matching rows. GREATEST
            // ignores NULL.
            let stmt = client
                .prepare_cached(&format!(
                    "UPDATE {table} t
                     SET last_used_at = GREATEST(t.last_used_at, u.at)
                     FROM (SELECT id, max(at) AS at
                           FROM unnest($1::uuid[], $2::timestamptz[]) AS x(id, at)
                           GROUP BY id) u
                     WHERE t.id = u.id"
                ))
                .await?;
            client.execute(&stmt, &[&ids, &ats]).await?;
            Ok(())
        };
        run.await.map_err(fail(context))
    }

    pub(crate) async fn registry_epoch(&self) -> StoreResult<i64> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached("SELECT value FROM registry_epoch WHERE id = 1")
                .await?;
            Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
        };
        run.await.map_err(fail("reading the registry epoch"))
    }
}

/// Test-only access to rows the interface does not expose.
#[cfg(test)]
impl PgStore {
    pub(crate) async fn count_rows_for_test(&self, table: &'static str) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(|e| pg_error("counting test rows", e))?;
        row.try_get(0)
            .map_err(|e| pg_error("counting test rows", e))
    }

    /// Applies the migrations up to `version` only, as an earlier release would have.
    pub(crate) async fn migrate_to_for_test(&self, version: i32) -> StoreResult<()> {
        let mut client = self.client().await?;
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(version))
            .run_async(&mut **client)
            .await
            .map_err(|e| setup("migrating for a test", e))?;
        Ok(())
    }

    /// Inserts a user row with the columns of `V0001` only, as releases before `V0002` did.
    pub(crate) async fn insert_v1_user_for_test(
        &self,
        id: Uuid,
        email: &str,
        username: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO users (id, email, username, password_hash, created_at, updated_at)
                 VALUES ($1, $2, $3, 'x', $4, $4)",
                &[&id, &email, &username, &at],
            )
            .await
            .map_err(|e| pg_error("inserting a test row", e))?;
        Ok(())
    }

    /// Inserts a session row as releases before `V0009` did (no count kept).
    pub(crate) async fn insert_v8_session_for_test(
        &self,
        s: &crate::store::McpSessionRecord,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO mcp_sessions (id, user_id, token_id, scopes, protocol_version,
                                           client_capabilities, created_at, last_seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &s.id,
                    &s.user_id,
                    &s.token_id,
                    &s.scopes,
                    &s.protocol_version,
                    &s.client_capabilities,
                    &s.created_at,
                    &s.last_seen_at,
                ],
            )
            .await
            .map_err(|e| pg_error("inserting a test row", e))?;
        Ok(())
    }
}

/// Why an operation's body failed, before it is given the operation's context.
#[derive(Debug)]
enum Fail {
    Db(tokio_postgres::Error),
    /// A stored value that the model cannot represent.
    Data(&'static str),
    /// The user's skills version was not the one the writer read (see [`bump_skills`]).
    Stale,
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

fn fail(context: &'static str) -> impl FnOnce(Fail) -> StoreError {
    move |f| match f {
        Fail::Db(e) => pg_error(context, e),
        Fail::Data(what) => StoreError::Backend {
            context,
            source: what.into(),
        },
        Fail::Stale => StoreError::Stale,
    }
}

fn user_from_row(row: &Row) -> Result<UserRecord, Fail> {
    Ok(UserRecord {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        username: row.try_get(2)?,
        password_hash: row.try_get(3)?,
        is_active: row.try_get(4)?,
        token_version: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}

fn skill_from_row(row: &Row) -> Result<SkillRecord, Fail> {
    Ok(SkillRecord {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        name: row.try_get(2)?,
        description: row.try_get(3)?,
        skill_dir: row.try_get(4)?,
        is_active: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
        version: row.try_get(8)?,
    })
}

fn version_from_row(row: &Row) -> Result<VersionRecord, Fail> {
    Ok(VersionRecord {
        skill_id: row.try_get(0)?,
        version: row.try_get(1)?,
        created_at: row.try_get(2)?,
        digest: row.try_get(3)?,
        file_count: row.try_get(4)?,
        size: row.try_get(5)?,
        front_matter: row.try_get(6)?,
    })
}

/// Records `version` of a skill (its row, its files, their blob rows) and prunes the skill's
/// versions older than the newest `keep`.
async fn write_version(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: Uuid,
    skill_id: Uuid,
    number: i64,
    version: &NewVersion,
    now: OffsetDateTime,
    keep: u32,
) -> Result<(), Fail> {
    let size: u64 = version.files.iter().map(|f| f.size).sum();
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let count = i64::try_from(version.files.len()).unwrap_or(i64::MAX);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO skill_versions
                 (skill_id, version, user_id, created_at, digest, file_count, size, front_matter)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &skill_id,
            &number,
            &user_id,
            &now,
            &version.digest,
            &count,
            &size,
            &version.front_matter,
        ],
    )
    .await?;
    // One statement for all the files and one for their blobs, whatever their number.
    let paths: Vec<&str> = version.files.iter().map(|f| f.path.as_str()).collect();
    let shas: Vec<&str> = version.files.iter().map(|f| f.sha256.as_str()).collect();
    let sizes: Vec<i64> = version
        .files
        .iter()
        .map(|f| i64::try_from(f.size).unwrap_or(i64::MAX))
        .collect();
    let executable: Vec<bool> = version.files.iter().map(|f| f.executable).collect();
    let files = tx
        .prepare_cached(
            "INSERT INTO version_files (skill_id, version, path, user_id, sha256, size, executable)
             SELECT $1, $2, f.path, $3, f.sha256, f.size, f.executable
             FROM unnest($4::text[], $5::text[], $6::bigint[], $7::boolean[])
                  AS f (path, sha256, size, executable)",
        )
        .await?;
    tx.execute(
        &files,
        &[
            &skill_id,
            &number,
            &user_id,
            &paths,
            &shas,
            &sizes,
            &executable,
        ],
    )
    .await?;
    let blobs = tx
        .prepare_cached(
            "INSERT INTO blobs (user_id, sha256, size, created_at)
             SELECT DISTINCT ON (b.sha256) $1, b.sha256, b.size, $2
             FROM unnest($3::text[], $4::bigint[]) AS b (sha256, size)
             ON CONFLICT (user_id, sha256) DO NOTHING",
        )
        .await?;
    tx.execute(&blobs, &[&user_id, &now, &shas, &sizes]).await?;
    if let Some(oldest_kept) = number.checked_sub(i64::from(keep)) {
        let prune = tx
            .prepare_cached("DELETE FROM skill_versions WHERE skill_id = $1 AND version <= $2")
            .await?;
        tx.execute(&prune, &[&skill_id, &oldest_kept]).await?;
    }
    Ok(())
}

/// The first key of the advisory locks taken on email skeletons ("mail" in ASCII); the second is
/// taken from the skeleton's hash. Two-key advisory locks do not share a key space with the
/// one-key lock of the migrations.
const EMAIL_LOCK_CLASS: i32 = 0x6d61_696c;

/// Takes the transaction's advisory lock on `skeleton`, then checks [`email_taken`]: every writer
/// of an address takes this lock first, so two look-alike addresses can never both pass the check
/// in transactions that run at the same time. The lock ends with the transaction.
async fn lock_and_check_email(
    tx: &deadpool_postgres::Transaction<'_>,
    email: &str,
    skeleton: &str,
    except: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    let hash = blake3::hash(skeleton.as_bytes());
    let [a, b, c, d, ..] = *hash.as_bytes();
    let key = i32::from_le_bytes([a, b, c, d]);
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1, $2)")
        .await?;
    tx.execute(&stmt, &[&EMAIL_LOCK_CLASS, &key]).await?;
    email_taken(tx, email, skeleton, except).await
}

/// Whether an account other than `except` has this address, or a look-alike of it: the same
/// skeleton, unless both addresses are plain ASCII (see [`email_skeleton`]). Written as
/// `lower(email)` so that the unique index users_email_key serves it.
async fn email_taken(
    c: &impl GenericClient,
    email: &str,
    skeleton: &str,
    except: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    let stmt = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id <> $4 AND (lower(email) = lower($1) OR (
                 email_skeleton = $2 AND ($3 OR char_length(email) <> octet_length(email)))))",
        )
        .await?;
    c.query_one(&stmt, &[&email, &skeleton, &!email.is_ascii(), &except])
        .await?
        .try_get(0)
}

async fn revoke_all_sessions(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<u64, tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "UPDATE auth_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .await?;
    tx.execute(&stmt, &[&user_id, &now]).await
}

/// The user's blobs that no version refers to, with their sizes.
async fn unreferenced(
    client: &impl GenericClient,
    user_id: Uuid,
) -> Result<Vec<(String, u64)>, Fail> {
    let stmt = client
        .prepare_cached(
            "SELECT sha256, size FROM blobs AS b WHERE user_id = $1 AND NOT EXISTS
                 (SELECT 1 FROM version_files AS f
                  WHERE f.user_id = b.user_id AND f.sha256 = b.sha256)",
        )
        .await?;
    client
        .query(&stmt, &[&user_id])
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .collect()
}

/// Bumps the user's skills version, inside a change's transaction: a compare-and-set when
/// `expected` (the version the writer's view of the skills was loaded at) is given, which fails
/// with [`Fail::Stale`] when another writer got there first. The row stays locked to the commit,
/// and the commit announces the new version (`NOTIFY`, by the trigger of `V0007`).
async fn bump_skills(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: Uuid,
    expected: Option<i64>,
) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "UPDATE users SET skills_version = skills_version + 1
             WHERE id = $1 AND ($2::bigint IS NULL OR skills_version = $2)",
        )
        .await?;
    if tx.execute(&stmt, &[&user_id, &expected]).await? == 0 {
        return Err(Fail::Stale);
    }
    Ok(())
}

/// Tells every process that cached API tokens may be stale; runs inside the change's transaction so
/// that a reader never sees the new epoch without the change.
async fn bump_epoch(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached("UPDATE registry_epoch SET value = value + 1 WHERE id = 1")
        .await?;
    tx.execute(&stmt, &[]).await?;
    Ok(())
}

fn setup(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Setup {
        context: context.to_owned(),
        source: Box::new(e),
    }
}

fn pg_error(context: &'static str, e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            // The users' unique indexes are named in sql/postgres/V0001__initial.sql; the skills'
            // UNIQUE (user_id, name) gets PostgreSQL's default name, <table>_<columns>_key.
            match db.constraint() {
                Some("users_email_key") => return StoreError::Duplicate(UniqueField::Email),
                Some("users_username_key") => return StoreError::Duplicate(UniqueField::Username),
                Some("skills_user_id_name_key") => {
                    return StoreError::Duplicate(UniqueField::SkillName);
                }
                _ => {}
            }
        }
        if *code == SqlState::DISK_FULL {
            return StoreError::StorageFull(Box::new(e));
        }
        // Class 08 is "connection exception"; the others mean the server is going away or full.
        let unavailable = code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS;
        return if unavailable {
            StoreError::Unavailable(Box::new(e))
        } else {
            StoreError::Backend {
                context,
                source: Box::new(e),
            }
        };
    }
    // No answer from the server: the connection broke (closed, or an I/O error on the socket).
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend {
            context,
            source: Box::new(e),
        }
    }
}
