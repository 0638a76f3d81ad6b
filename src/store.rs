//! Persistence: one interface, two back ends.
//!
//! [`Store`] is what the rest of the service talks to. It is an enum rather than a trait object so
//! that every call is a plain `match` with no boxing, and so that both back ends must implement the
//! same inherent methods (a missing one is a compile error in the `dispatch!` below).
//!
//! - [`sqlite`]: the embedded default, a file in the data dir, pooled with deadpool-sqlite.
//! - [`postgres`]: tokio-postgres behind deadpool-postgres, chosen when `DATABASE_URL` is a
//!   `postgres://` (or `postgresql://`) URL.
//!
//! Both run their refinery migrations (`sql/sqlite`, `sql/postgres`) when opened.
//!
//! Times cross this boundary as [`OffsetDateTime`] in UTC truncated to whole microseconds (see
//! [`now`]), which both back ends store without loss, so a value read back equals the value written.

pub(crate) mod postgres;
pub(crate) mod sqlite;
#[cfg(test)]
#[path = "store/tests.rs"]
mod tests_backends;

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::DatabaseSettings;

/// A boxed error from a database driver or pool.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Which unique constraint a write ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueField {
    Email,
    Username,
    /// A user's skill names are unique.
    SkillName,
}

impl UniqueField {
    pub fn as_str(self) -> &'static str {
        match self {
            UniqueField::Email => "email",
            UniqueField::Username => "username",
            UniqueField::SkillName => "skill name",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint (case-insensitive email or username) or the look-alike rule for emails
    /// refused the write.
    #[error("{} is already taken", .0.as_str())]
    Duplicate(UniqueField),
    /// A per-user cap (such as the number of API tokens) would be exceeded.
    #[error("limit reached")]
    LimitReached,
    /// The database cannot be reached right now (pool timeout, refused connection, closed socket).
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    /// The database's disk is full (SQLite's `SQLITE_FULL`, PostgreSQL's `disk_full`): the write
    /// was refused and rolled back, and will work again once space is freed.
    #[error("the database's storage is full")]
    StorageFull(#[source] BoxError),
    /// The database answered with an error that is not the caller's fault.
    #[error("database error while {context}")]
    Backend {
        context: &'static str,
        #[source]
        source: BoxError,
    },
    /// A change's compare-and-set of the user's skills version found another number: another
    /// writer (another replica) changed their skills since the writer loaded them. Nothing was
    /// written; reload and try again.
    #[error("the skills changed meanwhile")]
    Stale,
    /// Opening or migrating the database failed.
    #[error("{context}")]
    Setup {
        context: String,
        #[source]
        source: BoxError,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which back end a [`Store`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The current time in UTC, truncated to whole microseconds so that both back ends store it exactly.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    let micros = t.microsecond();
    t.replace_microsecond(micros).unwrap_or(t)
}

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    /// In its normal form (NFKC, lower case), as made by [`crate::domain::Email`].
    pub email: String,
    /// As the user typed it; unique without regard to ASCII case.
    pub username: String,
    /// A PHC string (`$scrypt$ln=…,r=…,p=…$salt$hash`).
    pub password_hash: String,
    pub is_active: bool,
    /// Bumped on logout-everywhere, password change and deactivation; every JWT carries the version
    /// it was issued under and is refused once they differ.
    pub token_version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    /// In its normal form: [`crate::domain::Email::as_str`].
    pub email: String,
    pub username: String,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
}

/// One refresh token (identified by its JWT `jti`) of a login session (its "family").
#[derive(Debug, Clone, Copy)]
pub struct NewRefreshToken {
    pub id: Uuid,
    pub expires_at: OffsetDateTime,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was unused: it is now used and `new` belongs to the same session.
    Rotated { session_id: Uuid, user_id: Uuid },
    /// The token had been used before: the whole session is now revoked.
    Reused { session_id: Uuid, user_id: Uuid },
    /// The token's session had already been revoked (logout, reuse, password change).
    SessionRevoked,
    /// No such token (never issued here, or purged after expiry).
    Unknown,
}

/// An API token row. The hash never leaves the store layer in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// The first characters of the token (`ask_live_` and a few hex digits), for recognising it.
    pub prefix: String,
    pub is_active: bool,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    /// What it may do over MCP, space-separated (`Scopes`'s written form).
    pub scopes: String,
}

#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    /// BLAKE3 of the whole token string.
    pub token_hash: [u8; 32],
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    /// Space-separated scopes.
    pub scopes: String,
}

/// An API token that may authenticate right now: active, unexpired, of an active user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveApiToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub token_hash: [u8; 32],
    pub expires_at: Option<OffsetDateTime>,
    /// Space-separated scopes.
    pub scopes: String,
}

/// A client registered through dynamic registration (RFC 7591).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClientRecord {
    pub client_id: String,
    pub client_name: String,
    /// The registered redirect URIs, as a JSON array.
    pub redirect_uris: String,
    /// The registration as it was answered (JSON), to answer it again.
    pub metadata: String,
    pub created_at: OffsetDateTime,
    /// When it got its first grant; a client never used is deleted a day after it registered.
    pub used_at: Option<OffsetDateTime>,
}

/// An authorization code, as issued: by the hash of the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOAuthCode {
    pub code_hash: [u8; 32],
    pub grant: OAuthCodeGrant,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What a code was issued for, which its redemption must match and its grant gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthCodeGrant {
    pub user_id: Uuid,
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    /// The PKCE S256 challenge (base64url of a SHA-256).
    pub code_challenge: String,
    /// Space-separated scopes.
    pub scopes: String,
    pub resource: String,
}

/// What redeeming a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// The code was unused and unexpired; it is used now.
    Fresh(OAuthCodeGrant),
    /// The code was used before: the grant it made (if it made one) must end.
    Reused { grant_id: Option<Uuid> },
    /// No such code, or it expired.
    Unknown,
}

/// A grant about to be made, with its first refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOAuthGrant {
    pub id: Uuid,
    pub user_id: Uuid,
    pub client_id: String,
    pub client_name: String,
    pub scopes: String,
    pub resource: String,
    pub created_at: OffsetDateTime,
    /// When the grant ends unless refreshed (its refresh token's expiry).
    pub expires_at: OffsetDateTime,
    pub refresh_hash: [u8; 32],
}

/// A grant row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrantRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub client_id: String,
    pub client_name: String,
    /// Space-separated scopes.
    pub scopes: String,
    pub resource: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub expires_at: OffsetDateTime,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRotation {
    /// The token was current: it is used now and the new one recorded; the grant as it stands.
    Rotated(OAuthGrantRecord),
    /// The token was used before: its grant is deleted.
    Reused { grant_id: Uuid, user_id: Uuid },
    /// No such token, expired, another client's, or its user is inactive.
    Unknown,
}

/// A change another replica (or process) made, as the database announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// The user's skills changed; they are now at `version` (`users.skills_version`).
    Skills { user_id: Uuid, version: i64 },
    /// API tokens, OAuth grants or accounts changed (the registry epoch moved).
    Tokens,
    /// The account was deleted.
    UserDeleted { user_id: Uuid },
    /// The Streamable HTTP session ended (deleted, evicted at its credential's cap, idle).
    SessionEnded { id: String },
    /// The listening connection was made (again): anything announced while it was away was
    /// lost, so whatever depends on announcements must be read again.
    Resync,
}

pub use postgres::listen::ListenerHealth;

/// Where an imported skill comes from (`skill_sources`), and how its syncs went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub skill_id: Uuid,
    pub user_id: Uuid,
    /// The repository's URL, as the user gave it (never with credentials: they are refused).
    pub url: String,
    /// The branch or tag asked for; `None`: the remote's default branch.
    pub git_ref: Option<String>,
    /// The skill's folder in the repository, `""` for its root.
    pub path: String,
    /// The commit last imported or synced.
    pub commit_id: String,
    /// The skill's version that holds `commit_id`'s files: a current version other than this
    /// one was made by hand since.
    pub synced_version: i64,
    pub sync_interval_hours: Option<i64>,
    /// The last time the source was found at a commit (an import, or a sync that succeeded).
    pub synced_at: OffsetDateTime,
    /// The last attempt, successful or not.
    pub checked_at: OffsetDateTime,
    pub next_sync_at: Option<OffsetDateTime>,
    /// Why the last attempt failed; `None` if it succeeded.
    pub last_error: Option<String>,
}

/// A source to record with an import or a sync ([`Store::write_skills_sourced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSource {
    pub skill_id: Uuid,
    pub url: String,
    pub git_ref: Option<String>,
    pub path: String,
    pub commit_id: String,
    pub synced_version: i64,
    pub sync_interval_hours: Option<i64>,
    pub next_sync_at: Option<OffsetDateTime>,
    /// Keep the interval (and next due time) a source already recorded has, instead of these.
    pub keep_interval: bool,
}

/// A Streamable HTTP session's facts, shared by the replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpSessionRecord {
    /// The `Mcp-Session-Id`.
    pub id: String,
    pub user_id: Uuid,
    /// The API token's or OAuth grant's id the session is bound to.
    pub token_id: Uuid,
    /// Its credential's scopes, space-separated.
    pub scopes: String,
    pub protocol_version: String,
    /// The client's `capabilities` from its `initialize`, as JSON.
    pub client_capabilities: String,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
}

/// What a collection removed (digest and size of each blob) and the skills version after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub removed: Vec<(String, u64)>,
    pub version: i64,
}

/// A skill row. The folder `<data_dir>/skills/<user_id>/<name>/` holds its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub description: String,
    /// The folder, relative to `<data_dir>/skills` (`<user_id>/<name>`).
    pub skill_dir: String,
    pub is_active: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The current version; 0 for a skill a release before versions wrote, not yet versioned.
    pub version: i64,
}

/// One file of a version: what its manifest records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFile {
    pub path: String,
    /// Lower-case hex: the blob that holds its bytes.
    pub sha256: String,
    pub size: u64,
    pub executable: bool,
}

/// A new version's content, written together with its skill's row.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Sorted by path.
    pub files: Vec<VersionFile>,
    /// sha256 of the manifest (see `storage::manifest_digest`).
    pub digest: String,
    /// The `SKILL.md` front matter, as JSON text.
    pub front_matter: String,
}

/// A version as its list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub skill_id: Uuid,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub digest: String,
    pub file_count: i64,
    pub size: i64,
    pub front_matter: String,
}

#[derive(Debug, Clone)]
pub struct NewSkill {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub description: String,
    pub skill_dir: String,
    pub created_at: OffsetDateTime,
}

/// One skill row to write as part of [`Store::write_skills`], with the version it makes.
#[derive(Debug, Clone)]
pub enum SkillWrite {
    /// A new skill, at version 1.
    Insert(NewSkill, NewVersion),
    /// A new version of an existing skill (its number the current one's plus one), its
    /// description, and its `is_active` if given (its `updated_at` set to the write's time).
    Update {
        id: Uuid,
        description: String,
        is_active: Option<bool>,
        version: NewVersion,
    },
}

/// A new browser session of the web console: a login session whose credential is a cookie.
#[derive(Debug, Clone)]
pub struct NewBrowserSession {
    /// BLAKE3 of the cookie's secret; the secret itself is never stored.
    pub id_hash: [u8; 32],
    /// The login session it belongs to (an `auth_sessions` row made with it).
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// The user's token version at sign-in: the session is refused once it moves on.
    pub token_version: i64,
    pub expires_at: OffsetDateTime,
}

/// What checking a browser session's cookie needs, read in one query.
#[derive(Debug, Clone)]
pub struct BrowserSessionRecord {
    pub user: UserRecord,
    pub session_id: Uuid,
    pub token_version: i64,
    /// Its login session is revoked.
    pub revoked: bool,
    pub expires_at: OffsetDateTime,
}

/// Counts shown on `GET /users/me`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountCounts {
    pub skills: i64,
    /// Active, unexpired API tokens.
    pub tokens: i64,
}

/// The storage layer. Cloning is cheap (the pools are reference-counted).
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens the configured database and brings its schema up to date.
    ///
    /// An empty `settings.url` (or a `sqlite:` URL) selects SQLite; the file then defaults to
    /// `<data_dir>/agentskills.db`.
    pub async fn open(settings: &DatabaseSettings, data_dir: &Path) -> StoreResult<Store> {
        let store = Store::connect(settings, data_dir).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the configured database without migrating it.
    async fn connect(settings: &DatabaseSettings, data_dir: &Path) -> StoreResult<Store> {
        Ok(match settings.url.as_deref() {
            Some(url) if is_postgres_url(url) => {
                Store::Postgres(postgres::PgStore::connect(url, settings).await?)
            }
            other => {
                let path = match other.and_then(sqlite_path_from_url) {
                    Some(path) => path.into(),
                    None => data_dir.join("agentskills.db"),
                };
                Store::Sqlite(sqlite::SqliteStore::open(&path, settings).await?)
            }
        })
    }

    /// Starts listening for the changes other replicas announce (PostgreSQL only; SQLite serves
    /// one process, which hears its own changes directly): whether the listening connection is
    /// up, and the announcements, each delivered once, with [`Announcement::Resync`] whenever the
    /// connection was (re)made. Stops when the receiver is dropped.
    pub fn listen(
        &self,
    ) -> Option<(
        ListenerHealth,
        tokio::sync::mpsc::UnboundedReceiver<Announcement>,
    )> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(pg) => Some(pg.listen()),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// The pool's connections: (open, in use, most allowed).
    pub fn pool_use(&self) -> (usize, usize, usize) {
        let status = match self {
            Store::Sqlite(s) => s.pool_status(),
            Store::Postgres(s) => s.pool_status(),
        };
        (
            status.size,
            status.size.saturating_sub(status.available),
            status.max_size,
        )
    }

    /// Applies pending migrations, then back-fills what they could not compute in SQL; returns
    /// how many migrations were applied.
    pub async fn migrate(&self) -> StoreResult<usize> {
        let applied = dispatch!(self.migrate())?;
        self.backfill_email_skeletons().await?;
        Ok(applied)
    }

    /// Rows written by releases before `V0002` have no `email_skeleton`, and their email is only
    /// lower-cased, not in NFKC form. Gives each its skeleton and its email's normal form, so that
    /// the look-alike rule and logins by email treat them as the rows written since. Runs at every
    /// start and finds nothing once done; a crash half-way leaves only rows that the next start
    /// completes.
    ///
    /// Accounts that an earlier release let in although they collide now are kept, and logged for
    /// the operator: an email whose normal form is another account's keeps its old spelling (its
    /// user can still log in by username), and look-alikes of another account's address are named.
    async fn backfill_email_skeletons(&self) -> StoreResult<()> {
        for (id, stored) in dispatch!(self.emails_without_skeleton())? {
            let normalized = crate::domain::Email::normalize(&stored);
            let skeleton = crate::domain::email_skeleton(&normalized);
            if self.email_taken(&normalized, Some(id)).await? {
                tracing::warn!(
                    user_id = %id,
                    "this user's email is the same as, or looks like, another account's; both accounts are kept"
                );
            }
            let renamed = (normalized != stored).then_some(normalized.as_str());
            match dispatch!(self.backfill_email(id, renamed, &skeleton)) {
                Err(StoreError::Duplicate(UniqueField::Email)) => {
                    dispatch!(self.backfill_email(id, None, &skeleton))?;
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Round trip to the database (`SELECT 1`), for `/health`.
    pub async fn ping(&self) -> StoreResult<Duration> {
        dispatch!(self.ping())
    }

    // ---- users ----

    /// Inserts a user; `Duplicate` when the email (in its normal form) or the username is taken,
    /// or the email looks like another account's (see [`Store::email_taken`]). The store derives
    /// the row's `email_skeleton` from `email` itself, so the two never disagree.
    pub async fn insert_user(&self, user: &NewUser) -> StoreResult<UserRecord> {
        dispatch!(self.insert_user(user))
    }

    pub async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<UserRecord>> {
        dispatch!(self.user_by_id(id))
    }

    /// By the email's normal form ([`crate::domain::Email::normalize`]), which is how it is stored.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        dispatch!(self.user_by_email(email))
    }

    /// Case-insensitive.
    pub async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        dispatch!(self.user_by_username(username))
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        dispatch!(self.list_users())
    }

    /// Whether an account other than `except` has `email` (in its normal form) or a look-alike of
    /// it: the same confusable skeleton, unless both addresses are plain ASCII (see
    /// [`crate::domain::email_skeleton`]). `insert_user` and `update_profile` check the same inside
    /// their transaction; this is for refusing early, before work such as hashing a password.
    pub async fn email_taken(&self, email: &str, except: Option<Uuid>) -> StoreResult<bool> {
        dispatch!(self.email_taken(email, except))
    }

    /// Changes email and/or username; `None` when the user does not exist. A new email (in its
    /// normal form) that is another account's, or a look-alike of one, is `Duplicate(Email)`.
    pub async fn update_profile(
        &self,
        id: Uuid,
        email: Option<&str>,
        username: Option<&str>,
        now: OffsetDateTime,
    ) -> StoreResult<Option<UserRecord>> {
        dispatch!(self.update_profile(id, email, username, now))
    }

    /// Sets a new password hash, bumps the token version and revokes every session.
    pub async fn set_password(
        &self,
        id: Uuid,
        hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        dispatch!(self.set_password(id, hash, now))
    }

    /// Replaces the hash only if it is still `old` (re-hashing at login with new parameters);
    /// sessions and token version are untouched.
    pub async fn upgrade_password_hash(&self, id: Uuid, old: &str, new: &str) -> StoreResult<bool> {
        dispatch!(self.upgrade_password_hash(id, old, new))
    }

    /// Activates or deactivates a user. Deactivating bumps the token version and revokes every
    /// session; both directions bump the registry epoch. `false` when there is no such user.
    pub async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        dispatch!(self.set_active(id, active, now))
    }

    /// Deletes the user and, by cascade, every row that belongs to them; bumps the registry epoch.
    pub async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        dispatch!(self.delete_user(id))
    }

    /// Logout everywhere: bumps the token version and revokes every session.
    pub async fn end_all_sessions(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<bool> {
        dispatch!(self.end_all_sessions(id, now))
    }

    pub async fn account_counts(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<AccountCounts> {
        dispatch!(self.account_counts(id, now))
    }

    // ---- login sessions and refresh tokens ----

    /// Starts a login session with its first refresh token.
    pub async fn insert_session(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        refresh: NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        dispatch!(self.insert_session(session_id, user_id, refresh, now))
    }

    /// The user behind an access token and whether its session is revoked (a missing session counts
    /// as revoked). `None` when the user does not exist.
    pub async fn access_context(
        &self,
        user_id: Uuid,
        session_id: Uuid,
    ) -> StoreResult<Option<(UserRecord, bool)>> {
        dispatch!(self.access_context(user_id, session_id))
    }

    /// Uses refresh token `old` and, if it was unused, records `new` in the same session, atomically.
    pub async fn rotate_refresh(
        &self,
        old: Uuid,
        new: NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        dispatch!(self.rotate_refresh(old, new, now))
    }

    /// Revokes one session of the user; `false` if it is not theirs or already revoked.
    pub async fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        dispatch!(self.revoke_session(user_id, session_id, now))
    }

    /// Starts a login session whose credential is a browser session's cookie (no refresh token).
    pub async fn insert_browser_session(
        &self,
        session: &NewBrowserSession,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        dispatch!(self.insert_browser_session(session, now))
    }

    /// The browser session whose cookie hashes to `id_hash`, with its user and whether its login
    /// session is revoked; `None` when there is none.
    pub async fn browser_session(
        &self,
        id_hash: [u8; 32],
    ) -> StoreResult<Option<BrowserSessionRecord>> {
        dispatch!(self.browser_session(id_hash))
    }

    /// Deletes one browser session (its login session is revoked separately, by the caller).
    pub async fn delete_browser_session(&self, id_hash: [u8; 32]) -> StoreResult<bool> {
        dispatch!(self.delete_browser_session(id_hash))
    }

    /// Deletes refresh tokens and browser sessions past their expiry and login sessions left with
    /// neither; returns rows removed.
    pub async fn purge_expired(&self, now: OffsetDateTime) -> StoreResult<u64> {
        dispatch!(self.purge_expired(now))
    }

    // ---- skills ----

    /// Inserts a skill at version 1 with `version`; `Duplicate(SkillName)` if the user already
    /// has one of that name.
    pub async fn insert_skill(
        &self,
        skill: &NewSkill,
        version: &NewVersion,
    ) -> StoreResult<SkillRecord> {
        let insert = [SkillWrite::Insert(skill.clone(), version.clone())];
        self.write_skills(skill.user_id, &insert, skill.created_at, u32::MAX, None)
            .await?
            .and_then(|mut written| written.pop())
            .ok_or_else(|| StoreError::Backend {
                context: "creating a skill",
                source: "the insert returned no row".into(),
            })
    }

    /// Every skill of the user, by name.
    pub async fn skills_of_user(&self, user_id: Uuid) -> StoreResult<Vec<SkillRecord>> {
        dispatch!(self.skills_of_user(user_id))
    }

    /// Changes what is given and sets `updated_at`; `None` if the user has no such skill.
    ///
    /// Every change to a user's skills (this, [`Store::write_skills`], [`Store::delete_skill`],
    /// [`Store::collect_blobs`]) bumps their skills version in its transaction; with `expected`
    /// (the version the writer's view was loaded at) only from that number, else
    /// [`StoreError::Stale`] and nothing written. On PostgreSQL the commit announces the new
    /// version to every replica (`NOTIFY`).
    pub async fn update_skill(
        &self,
        user_id: Uuid,
        id: Uuid,
        description: Option<&str>,
        is_active: Option<bool>,
        now: OffsetDateTime,
        expected: Option<i64>,
    ) -> StoreResult<Option<SkillRecord>> {
        dispatch!(self.update_skill(user_id, id, description, is_active, now, expected))
    }

    /// Writes every change in one transaction: all or nothing. Each makes a version (its
    /// manifest, its files' blob rows, the skill's current version switched to it) and prunes the
    /// skill's versions to the newest `keep` (the current one always stays). The records come
    /// back in the order of `writes`; `None` (and nothing written) if a skill to update no longer
    /// exists; a name taken is `Duplicate(SkillName)`, with nothing written either. The blobs
    /// themselves must be stored before this is called: a version never points at a missing one.
    pub async fn write_skills(
        &self,
        user_id: Uuid,
        writes: &[SkillWrite],
        now: OffsetDateTime,
        keep: u32,
        expected: Option<i64>,
    ) -> StoreResult<Option<Vec<SkillRecord>>> {
        dispatch!(self.write_skills(user_id, writes, &[], now, keep, expected))
    }

    /// [`Store::write_skills`], with the sources of imported skills recorded (inserted or
    /// replaced) in the same transaction: an import or a sync is recorded whole or not at all.
    /// `writes` may be empty (an import whose content was already there records only sources).
    pub async fn write_skills_sourced(
        &self,
        user_id: Uuid,
        writes: &[SkillWrite],
        sources: &[NewSource],
        now: OffsetDateTime,
        keep: u32,
        expected: Option<i64>,
    ) -> StoreResult<Option<Vec<SkillRecord>>> {
        dispatch!(self.write_skills(user_id, writes, sources, now, keep, expected))
    }

    /// The user's imported skills' sources, by skill.
    pub async fn sources(&self, user_id: Uuid) -> StoreResult<Vec<SourceRecord>> {
        dispatch!(self.sources(user_id))
    }

    /// The source of the user's skill `skill_id`, if it was imported.
    pub async fn source(&self, user_id: Uuid, skill_id: Uuid) -> StoreResult<Option<SourceRecord>> {
        dispatch!(self.source(user_id, skill_id))
    }

    /// Records how a sync went without a new version: when `synced` is given, the source is at
    /// that commit and the skill's version holds its files (nothing had changed, or the content
    /// was already the same); `error` is the last attempt's failure, `None` after a success.
    /// `false` if the skill has no source (any more).
    pub async fn record_sync(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        synced: Option<(&str, i64)>,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        dispatch!(self.record_sync(user_id, skill_id, synced, error, now))
    }

    /// Sets (or turns off, with `None`) the periodic sync of a skill's source; the next one is
    /// due `hours` from `now`. `false` if the skill has no source.
    pub async fn set_sync_interval(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        hours: Option<i64>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        dispatch!(self.set_sync_interval(user_id, skill_id, hours, now))
    }

    /// Up to `limit` sources whose periodic sync is due at `now`, oldest first, each moved to its
    /// next due time in the same statement: of several replicas asking at once, one gets each.
    pub async fn claim_due_sources(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SourceRecord>> {
        dispatch!(self.claim_due_sources(now, limit))
    }

    /// The skill's versions, newest first.
    pub async fn versions(&self, user_id: Uuid, skill_id: Uuid) -> StoreResult<Vec<VersionRecord>> {
        dispatch!(self.versions(user_id, skill_id))
    }

    /// One version of the skill with its files (by path); `None` if there is no such version.
    pub async fn version(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        version: i64,
    ) -> StoreResult<Option<(VersionRecord, Vec<VersionFile>)>> {
        dispatch!(self.version(user_id, skill_id, version))
    }

    /// Bytes of the user's blobs: what the quota counts (a file kept by several versions or
    /// skills counts once).
    pub async fn blob_bytes(&self, user_id: Uuid) -> StoreResult<u64> {
        dispatch!(self.blob_bytes(user_id))
    }

    /// The user's blobs that no version refers to any more, with their sizes.
    pub async fn unreferenced_blobs(&self, user_id: Uuid) -> StoreResult<Vec<(String, u64)>> {
        dispatch!(self.unreferenced_blobs(user_id))
    }

    /// Every blob the user holds.
    pub async fn blobs_of(&self, user_id: Uuid) -> StoreResult<Vec<String>> {
        dispatch!(self.blobs_of(user_id))
    }

    /// The files of the current version of each of the user's skills.
    pub async fn current_files(&self, user_id: Uuid) -> StoreResult<Vec<(Uuid, VersionFile)>> {
        dispatch!(self.current_files(user_id))
    }

    /// Every skill a release before versions wrote (`version` 0), of every user.
    pub async fn unversioned_skills(&self) -> StoreResult<Vec<SkillRecord>> {
        dispatch!(self.unversioned_skills())
    }

    /// Deletes the user's skill; `false` if they have no such skill.
    pub async fn delete_skill(
        &self,
        user_id: Uuid,
        id: Uuid,
        expected: Option<i64>,
    ) -> StoreResult<bool> {
        dispatch!(self.delete_skill(user_id, id, expected))
    }

    /// The user's skills version: the number every change to their skills bumps (`None`: no
    /// such user).
    pub async fn skills_version(&self, user_id: Uuid) -> StoreResult<Option<i64>> {
        dispatch!(self.skills_version(user_id))
    }

    /// The skills versions of those of `users` who exist.
    pub async fn skills_versions(&self, users: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        dispatch!(self.skills_versions(users))
    }

    /// Removes the user's blobs that no version refers to: `remove` deletes their bytes and
    /// returns those it deleted; their rows then go and the skills version is bumped (from
    /// `expected`, else [`StoreError::Stale`]). On PostgreSQL the user's row stays locked while
    /// `remove` runs, so no other replica's change can come to refer to a blob whose bytes are
    /// going; such a change waits, finds the version moved on, and stores the bytes again.
    pub async fn collect_blobs<F, Fut>(
        &self,
        user_id: Uuid,
        expected: i64,
        remove: F,
    ) -> StoreResult<Collected>
    where
        F: FnOnce(Vec<(String, u64)>) -> Fut + Send,
        Fut: std::future::Future<Output = Vec<(String, u64)>> + Send,
    {
        dispatch!(self.collect_blobs(user_id, expected, remove))
    }

    // ---- MCP sessions ----

    /// Records a new session. A credential keeps at most `max_per_token` sessions: at the cap,
    /// its least recently used ones are deleted to make room, and their ids returned (each
    /// replica ends its copy of them when the deletion is announced).
    pub async fn insert_mcp_session(
        &self,
        session: &McpSessionRecord,
        max_per_token: u32,
    ) -> StoreResult<Vec<String>> {
        dispatch!(self.insert_mcp_session(session, max_per_token))
    }

    /// The session `id`, if it exists.
    pub async fn mcp_session(&self, id: &str) -> StoreResult<Option<McpSessionRecord>> {
        dispatch!(self.mcp_session(id))
    }

    /// Deletes the session `id`; `false` if there was none.
    pub async fn delete_mcp_session(&self, id: &str) -> StoreResult<bool> {
        dispatch!(self.delete_mcp_session(id))
    }

    /// Records when sessions were last used (a batch, never moving a time backwards).
    pub async fn touch_mcp_sessions(&self, seen: &[(String, OffsetDateTime)]) -> StoreResult<()> {
        dispatch!(self.touch_mcp_sessions(seen))
    }

    /// Deletes sessions last used before `before`; returns how many.
    pub async fn reap_mcp_sessions(&self, before: OffsetDateTime) -> StoreResult<u64> {
        dispatch!(self.reap_mcp_sessions(before))
    }

    // ---- API tokens ----

    /// Inserts a token unless the user already has `max_per_user` tokens (then `LimitReached`);
    /// bumps the registry epoch.
    pub async fn insert_api_token(
        &self,
        token: &NewApiToken,
        max_per_user: u32,
    ) -> StoreResult<()> {
        dispatch!(self.insert_api_token(token, max_per_user))
    }

    /// The user's tokens, newest first. `is_active` is false for expired ones.
    pub async fn list_api_tokens(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<ApiTokenRecord>> {
        dispatch!(self.list_api_tokens(user_id, now))
    }

    /// Deletes the user's token; `false` if it is not theirs. Bumps the registry epoch.
    pub async fn delete_api_token(&self, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        dispatch!(self.delete_api_token(user_id, id))
    }

    /// Every token that may authenticate at `now`.
    pub async fn live_api_tokens(&self, now: OffsetDateTime) -> StoreResult<Vec<LiveApiToken>> {
        dispatch!(self.live_api_tokens(now))
    }

    /// Writes `last_used_at` for a batch of tokens in one transaction, never moving it backwards.
    pub async fn record_token_use(&self, uses: &[(Uuid, OffsetDateTime)]) -> StoreResult<()> {
        dispatch!(self.record_token_use(uses))
    }

    // ---- OAuth ----

    /// Records a client registered through dynamic registration.
    pub async fn insert_oauth_client(&self, client: &OAuthClientRecord) -> StoreResult<()> {
        dispatch!(self.insert_oauth_client(client))
    }

    pub async fn oauth_client(&self, client_id: &str) -> StoreResult<Option<OAuthClientRecord>> {
        dispatch!(self.oauth_client(client_id))
    }

    pub async fn insert_oauth_code(&self, code: &NewOAuthCode) -> StoreResult<()> {
        dispatch!(self.insert_oauth_code(code))
    }

    /// Marks the code used, in one statement, so that two redemptions at once cannot both win.
    pub async fn redeem_oauth_code(
        &self,
        code_hash: [u8; 32],
        now: OffsetDateTime,
    ) -> StoreResult<CodeRedemption> {
        dispatch!(self.redeem_oauth_code(code_hash, now))
    }

    /// Makes the grant and its first refresh token, notes it on the code that made it (so that
    /// the code's reuse ends it) and on its registered client; bumps the registry epoch.
    pub async fn insert_oauth_grant(
        &self,
        grant: &NewOAuthGrant,
        code_hash: [u8; 32],
    ) -> StoreResult<()> {
        dispatch!(self.insert_oauth_grant(grant, code_hash))
    }

    /// Rotates a refresh token of `client_id`'s grant: `new_hash` replaces `old_hash`, and the
    /// grant lives until `expires_at`. A used token deletes its grant (reuse detection).
    pub async fn rotate_oauth_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        client_id: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> StoreResult<RefreshRotation> {
        dispatch!(self.rotate_oauth_refresh(old_hash, new_hash, client_id, now, expires_at))
    }

    /// The grant a refresh token (used or not, unexpired) belongs to.
    pub async fn grant_of_refresh(
        &self,
        token_hash: [u8; 32],
        now: OffsetDateTime,
    ) -> StoreResult<Option<OAuthGrantRecord>> {
        dispatch!(self.grant_of_refresh(token_hash, now))
    }

    /// The user's unexpired grants, newest first.
    pub async fn list_oauth_grants(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<OAuthGrantRecord>> {
        dispatch!(self.list_oauth_grants(user_id, now))
    }

    /// Deletes a grant (the user's, when `user_id` is given); `false` if there is none. Bumps
    /// the registry epoch.
    pub async fn delete_oauth_grant(&self, user_id: Option<Uuid>, id: Uuid) -> StoreResult<bool> {
        dispatch!(self.delete_oauth_grant(user_id, id))
    }

    /// Deletes every grant of the user; the ids deleted. Bumps the registry epoch.
    pub async fn delete_oauth_grants_of(&self, user_id: Uuid) -> StoreResult<Vec<Uuid>> {
        dispatch!(self.delete_oauth_grants_of(user_id))
    }

    /// Every grant that may authenticate at `now`: unexpired, of an active user.
    pub async fn live_oauth_grants(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<OAuthGrantRecord>> {
        dispatch!(self.live_oauth_grants(now))
    }

    /// Writes `last_used_at` for a batch of grants, never moving it backwards.
    pub async fn record_grant_use(&self, uses: &[(Uuid, OffsetDateTime)]) -> StoreResult<()> {
        dispatch!(self.record_grant_use(uses))
    }

    /// Deletes expired codes, refresh tokens and grants, and registered clients never used
    /// since `unused_before`; how many rows went.
    pub async fn purge_oauth(
        &self,
        now: OffsetDateTime,
        unused_before: OffsetDateTime,
    ) -> StoreResult<u64> {
        dispatch!(self.purge_oauth(now, unused_before))
    }

    /// A counter bumped by every change that can make a cached token invalid or valid (token created
    /// or deleted, user deactivated, activated or deleted), by this process or any other.
    pub async fn registry_epoch(&self) -> StoreResult<i64> {
        dispatch!(self.registry_epoch())
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `sqlite:///abs/path.db`, `sqlite://rel.db` or `sqlite:rel.db` → the path; anything else → `None`.
fn sqlite_path_from_url(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_path() {
        assert_eq!(
            sqlite_path_from_url("sqlite:///var/lib/a.db"),
            Some("/var/lib/a.db")
        );
        assert_eq!(sqlite_path_from_url("sqlite://a.db"), Some("a.db"));
        assert_eq!(sqlite_path_from_url("sqlite:a.db"), Some("a.db"));
        assert_eq!(sqlite_path_from_url("sqlite:"), None);
        assert_eq!(sqlite_path_from_url("postgres://x"), None);
        assert!(is_postgres_url("postgresql://u@h/db"));
        assert!(!is_postgres_url("mysql://u@h/db"));
    }

    #[test]
    fn now_is_whole_microseconds() {
        assert_eq!(now().nanosecond() % 1_000, 0);
    }
}
