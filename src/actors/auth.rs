//! The auth actor: registration, login, refresh-token rotation, logout, password change and
//! account deletion.
//!
//! The actor's handler never does the work itself: each request is moved into a task of its own
//! (password hashing then goes to a low-priority hashing thread behind the hasher's semaphore), so
//! one slow login never holds up another. The actor also runs the hourly purge of expired refresh tokens.
//!
//! Checking an access token on a REST request ([`AuthService::authenticate`]) does not go through
//! the mailbox at all: it is a signature check and one indexed query. A browser session of the web
//! console is a login session too, whose credential is a cookie's secret instead of a pair of JWTs
//! ([`AuthService::login_browser`], [`AuthService::authenticate_browser`]): it is checked by the
//! same rule ([`session_is_current`]), so everything that ends a login's JWTs ends it as well.
//!
//! Rules (SPEC section 7): one 401 message for an unknown login and a wrong password, with the same
//! cost (a dummy hash for unknown users); refresh tokens rotate and a reused one revokes its whole
//! session; a per-user token version ends every JWT on logout-everywhere, password change and
//! deactivation; hashes made with older parameters are upgraded at login.

use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use time::OffsetDateTime;
use uuid::Uuid;

use super::token_registry::TokenRegistry;
use super::workspaces::Workspaces;
use super::{ask, reply};
use crate::auth::{HashError, JwtKeys, PasswordHasher, TokenKind, TokenRejected};
use crate::domain::{BrowserSessionSecret, Email, Password, Username};
use crate::error::AppError;
use crate::store::{
    self, NewBrowserSession, NewRefreshToken, NewUser, RotateOutcome, Store, UserRecord,
};

/// The words a user must type to delete their account.
pub const DELETE_CONFIRMATION: &str = "DELETE MY ACCOUNT";

/// A user authenticated by an access token.
#[derive(Debug, Clone)]
pub struct AuthedUser {
    pub user: UserRecord,
    /// The login session the access token belongs to.
    pub session_id: Uuid,
}

/// A fresh access and refresh token.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// A browser session just started: its secret goes into the cookie, once, and is never kept.
#[derive(Debug)]
pub struct BrowserLogin {
    pub secret: BrowserSessionSecret,
    pub user: AuthedUser,
    pub expires_at: OffsetDateTime,
}

/// What a login names the account by, in the normal form of [`Email::normalize`] (which for a
/// username is its lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginName {
    Email(String),
    Username(String),
}

impl LoginName {
    /// An email if it has an `@` (once normalized, so a full-width `＠` counts), else a username.
    pub fn parse(raw: &str) -> LoginName {
        let login = Email::normalize(raw);
        if login.contains('@') {
            LoginName::Email(login)
        } else {
            LoginName::Username(login)
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LoginName::Email(login) | LoginName::Username(login) => login,
        }
    }
}

/// The account a login names, looked up before the per-account rate limit and the password
/// check: `None` for a name that belongs to no account.
#[derive(Debug, Clone)]
pub struct LoginTarget {
    pub name: LoginName,
    pub user: Option<UserRecord>,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub email: Email,
    pub username: Username,
    pub password: Password,
}

/// The handle used by HTTP handlers and the admin commands.
#[derive(Clone)]
pub struct AuthService {
    actor: ActorRef<AuthMessage>,
    core: Arc<AuthCore>,
    timeout: Duration,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

enum AuthMessage {
    Register(Registration, RpcReplyPort<Result<UserRecord, AppError>>),
    Login(
        LoginTarget,
        Password,
        RpcReplyPort<Result<TokenPair, AppError>>,
    ),
    BrowserLogin(
        LoginTarget,
        Password,
        RpcReplyPort<Result<BrowserLogin, AppError>>,
    ),
    Refresh(String, RpcReplyPort<Result<TokenPair, AppError>>),
    Logout {
        user: AuthedUser,
        everywhere: bool,
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    ChangePassword {
        user: AuthedUser,
        current: Password,
        new: Password,
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    DeleteAccount {
        user: AuthedUser,
        password: Password,
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    /// Timer: delete expired refresh tokens and empty sessions.
    Purge,
}

/// Everything the flows need; shared by the tasks the actor spawns.
#[derive(Debug)]
pub struct AuthCore {
    pub store: Store,
    pub hasher: PasswordHasher,
    pub jwt: JwtKeys,
    pub registry: TokenRegistry,
    pub workspaces: Workspaces,
}

impl AuthService {
    pub async fn start(
        core: AuthCore,
        hash_wait: Duration,
    ) -> Result<(AuthService, JoinHandle<()>), String> {
        let core = Arc::new(core);
        let (actor, handle) = Actor::spawn(None, AuthActor, Arc::clone(&core))
            .await
            .map_err(|e| e.to_string())?;
        // A call may wait for a hashing slot, then hash, then use the database.
        let timeout = hash_wait + Duration::from_secs(30);
        Ok((
            AuthService {
                actor,
                core,
                timeout,
            },
            handle,
        ))
    }

    pub fn core(&self) -> &AuthCore {
        &self.core
    }

    pub fn stop(&self) {
        self.actor.stop(None);
    }

    pub async fn register(&self, form: Registration) -> Result<UserRecord, AppError> {
        ask(&self.actor, self.timeout, "auth", |r| {
            AuthMessage::Register(form, r)
        })
        .await
    }

    /// Looks up the account `name` names: one indexed query, whether or not there is one, and no
    /// mailbox. The caller applies the per-account rate limit to the result, then calls
    /// [`AuthService::login`].
    pub async fn find_login(&self, name: LoginName) -> Result<LoginTarget, AppError> {
        let user = match &name {
            LoginName::Email(email) => self.core.store.user_by_email(email).await?,
            LoginName::Username(username) => self.core.store.user_by_username(username).await?,
        };
        Ok(LoginTarget { name, user })
    }

    /// Checks the password against the account [`AuthService::find_login`] found (against a dummy
    /// hash when there is none, at the same cost) and starts a login session.
    pub async fn login(
        &self,
        target: LoginTarget,
        password: Password,
    ) -> Result<TokenPair, AppError> {
        ask(&self.actor, self.timeout, "auth", |r| {
            AuthMessage::Login(target, password, r)
        })
        .await
    }

    /// [`AuthService::login`] for the web console: the same checks (the caller applies the same
    /// rate limits first), then a login session whose credential is a browser session's secret,
    /// valid for as long as a refresh token would be.
    pub async fn login_browser(
        &self,
        target: LoginTarget,
        password: Password,
    ) -> Result<BrowserLogin, AppError> {
        ask(&self.actor, self.timeout, "auth", |r| {
            AuthMessage::BrowserLogin(target, password, r)
        })
        .await
    }

    pub async fn refresh(&self, refresh_token: String) -> Result<TokenPair, AppError> {
        ask(&self.actor, self.timeout, "auth", |r| {
            AuthMessage::Refresh(refresh_token, r)
        })
        .await
    }

    pub async fn logout(&self, user: AuthedUser, everywhere: bool) -> Result<(), AppError> {
        ask(&self.actor, self.timeout, "auth", |reply| {
            AuthMessage::Logout {
                user,
                everywhere,
                reply,
            }
        })
        .await
    }

    pub async fn change_password(
        &self,
        user: AuthedUser,
        current: Password,
        new: Password,
    ) -> Result<(), AppError> {
        ask(&self.actor, self.timeout, "auth", |reply| {
            AuthMessage::ChangePassword {
                user,
                current,
                new,
                reply,
            }
        })
        .await
    }

    pub async fn delete_account(
        &self,
        user: AuthedUser,
        password: Password,
    ) -> Result<(), AppError> {
        ask(&self.actor, self.timeout, "auth", |reply| {
            AuthMessage::DeleteAccount {
                user,
                password,
                reply,
            }
        })
        .await
    }

    /// Checks an access token: signature and claims, then that the user is active, the token
    /// version current and the session not revoked.
    pub async fn authenticate(&self, bearer: &str) -> Result<AuthedUser, AppError> {
        let claims = self
            .core
            .jwt
            .verify(bearer, TokenKind::Access)
            .map_err(rejected)?;
        let (user, revoked) = self
            .core
            .store
            .access_context(claims.sub, claims.sid)
            .await?
            .ok_or_else(invalid_token)?;
        if !session_is_current(&user, claims.ver, revoked) {
            return Err(invalid_token());
        }
        Ok(AuthedUser {
            user,
            session_id: claims.sid,
        })
    }

    /// Checks a browser session's secret: one indexed query, then the rule of
    /// [`AuthService::authenticate`] (the user active, the token version the one of sign-in, the
    /// login session not revoked) and the session's expiry.
    pub async fn authenticate_browser(
        &self,
        secret: &BrowserSessionSecret,
    ) -> Result<AuthedUser, AppError> {
        let found = self
            .core
            .store
            .browser_session(secret.hash())
            .await?
            .ok_or_else(invalid_token)?;
        if !session_is_current(&found.user, found.token_version, found.revoked)
            || found.expires_at <= OffsetDateTime::now_utc()
        {
            return Err(invalid_token());
        }
        Ok(AuthedUser {
            user: found.user,
            session_id: found.session_id,
        })
    }

    /// Signs this browser out: its login session is revoked (as `POST /auth/logout` does) and
    /// its row deleted.
    pub async fn end_browser_session(
        &self,
        user: AuthedUser,
        secret: &BrowserSessionSecret,
    ) -> Result<(), AppError> {
        let hash = secret.hash();
        self.logout(user, false).await?;
        self.core.store.delete_browser_session(hash).await?;
        Ok(())
    }
}

/// The one rule for every credential of a login session (an access token, a browser session):
/// the user is active, the credential was issued under the user's current token version (which
/// logout-everywhere, a password change and deactivation bump) and its session is not revoked.
fn session_is_current(user: &UserRecord, version: i64, revoked: bool) -> bool {
    !revoked && user.is_active && user.token_version == version
}

struct AuthActor;

struct AuthState {
    core: Arc<AuthCore>,
    purge_timer: Option<JoinHandle<()>>,
}

impl Actor for AuthActor {
    type Msg = AuthMessage;
    type State = AuthState;
    type Arguments = Arc<AuthCore>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        core: Arc<AuthCore>,
    ) -> Result<AuthState, ActorProcessingErr> {
        Ok(AuthState {
            core,
            purge_timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut AuthState,
    ) -> Result<(), ActorProcessingErr> {
        state.purge_timer =
            Some(myself.send_interval(Duration::from_secs(3600), || AuthMessage::Purge));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut AuthState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.purge_timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: AuthMessage,
        state: &mut AuthState,
    ) -> Result<(), ActorProcessingErr> {
        let core = Arc::clone(&state.core);
        match message {
            AuthMessage::Register(form, port) => {
                tokio::spawn(async move { reply(port, core.register(form).await) });
            }
            AuthMessage::Login(target, password, port) => {
                tokio::spawn(async move { reply(port, core.login(target, password).await) });
            }
            AuthMessage::BrowserLogin(target, password, port) => {
                tokio::spawn(
                    async move { reply(port, core.login_browser(target, password).await) },
                );
            }
            AuthMessage::Refresh(token, port) => {
                tokio::spawn(async move { reply(port, core.refresh(&token).await) });
            }
            AuthMessage::Logout {
                user,
                everywhere,
                reply: port,
            } => {
                tokio::spawn(async move { reply(port, core.logout(&user, everywhere).await) });
            }
            AuthMessage::ChangePassword {
                user,
                current,
                new,
                reply: port,
            } => {
                tokio::spawn(async move {
                    reply(port, core.change_password(&user, &current, &new).await)
                });
            }
            AuthMessage::DeleteAccount {
                user,
                password,
                reply: port,
            } => {
                tokio::spawn(
                    async move { reply(port, core.delete_account(&user, &password).await) },
                );
            }
            AuthMessage::Purge => {
                tokio::spawn(async move {
                    match core.store.purge_expired(store::now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rows = n, "purged expired refresh tokens"),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not purge expired refresh tokens")
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

impl AuthCore {
    async fn register(&self, form: Registration) -> Result<UserRecord, AppError> {
        // Refuse known duplicates and look-alikes before spending a hash on them; the store checks
        // again when it inserts, which decides races between two registrations.
        if self.store.email_taken(form.email.as_str(), None).await? {
            return Err(store::StoreError::Duplicate(store::UniqueField::Email).into());
        }
        if self
            .store
            .user_by_username(form.username.as_str())
            .await?
            .is_some()
        {
            return Err(store::StoreError::Duplicate(store::UniqueField::Username).into());
        }
        let password_hash = self.hasher.hash(&form.password).await.map_err(hash_error)?;
        let user = NewUser {
            id: Uuid::new_v4(),
            email: form.email.as_str().to_owned(),
            username: form.username.as_str().to_owned(),
            password_hash,
            created_at: store::now(),
        };
        Ok(self.store.insert_user(&user).await?)
    }

    async fn login(&self, target: LoginTarget, password: Password) -> Result<TokenPair, AppError> {
        let user = self.check_login(target, &password).await?;
        let now = OffsetDateTime::now_utc();
        let session_id = Uuid::new_v4();
        let (pair, refresh) = self.issue_pair(&user, session_id, now)?;
        self.store
            .insert_session(session_id, user.id, refresh, store::now())
            .await?;
        Ok(pair)
    }

    async fn login_browser(
        &self,
        target: LoginTarget,
        password: Password,
    ) -> Result<BrowserLogin, AppError> {
        let user = self.check_login(target, &password).await?;
        let secret = BrowserSessionSecret::generate().map_err(AppError::internal)?;
        let now = store::now();
        let expires_at = now + time::Duration::seconds(self.jwt.refresh_ttl_secs());
        let session = NewBrowserSession {
            id_hash: secret.hash(),
            session_id: Uuid::new_v4(),
            user_id: user.id,
            token_version: user.token_version,
            expires_at,
        };
        self.store.insert_browser_session(&session, now).await?;
        Ok(BrowserLogin {
            secret,
            user: AuthedUser {
                user,
                session_id: session.session_id,
            },
            expires_at,
        })
    }

    /// The password check of every login: against the account's hash (a dummy one when there is
    /// none, at the same cost), the account active, the hash upgraded when its parameters are old.
    async fn check_login(
        &self,
        target: LoginTarget,
        password: &Password,
    ) -> Result<UserRecord, AppError> {
        let user = target.user;
        let matched = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(hash_error)?;
        let user = match user {
            Some(user) if matched => user,
            _ => return Err(invalid_credentials()),
        };
        if !user.is_active {
            return Err(AppError::Forbidden {
                code: "account-inactive",
                detail: "this account has been deactivated",
            });
        }
        if self.hasher.needs_upgrade(&user.password_hash) {
            self.upgrade_hash(&user, password).await;
        }
        Ok(user)
    }

    async fn refresh(&self, token: &str) -> Result<TokenPair, AppError> {
        let claims = self
            .jwt
            .verify(token, TokenKind::Refresh)
            .map_err(rejected)?;
        let user = self
            .store
            .user_by_id(claims.sub)
            .await?
            .ok_or_else(invalid_token)?;
        if !user.is_active || user.token_version != claims.ver {
            return Err(invalid_token());
        }
        let (pair, next) = self.issue_pair(&user, claims.sid, OffsetDateTime::now_utc())?;
        match self
            .store
            .rotate_refresh(claims.jti, next, store::now())
            .await?
        {
            RotateOutcome::Rotated {
                session_id,
                user_id,
            } if session_id == claims.sid && user_id == user.id => Ok(pair),
            RotateOutcome::Reused { session_id, .. } => {
                tracing::warn!(user_id = %user.id, %session_id, "refresh token reused; session revoked");
                Err(AppError::Unauthorized {
                    code: "refresh-token-reused",
                    detail: "this refresh token was already used; the session has been ended, log in again",
                })
            }
            _ => Err(invalid_token()),
        }
    }

    async fn logout(&self, user: &AuthedUser, everywhere: bool) -> Result<(), AppError> {
        let now = store::now();
        if everywhere {
            self.store.end_all_sessions(user.user.id, now).await?;
        } else {
            self.store
                .revoke_session(user.user.id, user.session_id, now)
                .await?;
        }
        Ok(())
    }

    async fn change_password(
        &self,
        user: &AuthedUser,
        current: &Password,
        new: &Password,
    ) -> Result<(), AppError> {
        self.check_password(&user.user, current, "current_password")
            .await?;
        let hash = self.hasher.hash(new).await.map_err(hash_error)?;
        self.store
            .set_password(user.user.id, &hash, store::now())
            .await?;
        Ok(())
    }

    async fn delete_account(&self, user: &AuthedUser, password: &Password) -> Result<(), AppError> {
        self.check_password(&user.user, password, "password")
            .await?;
        self.store.delete_user(user.user.id).await?;
        self.registry.forget_user(user.user.id).await?;
        // The account is gone either way; a folder left behind is logged for the operator.
        if let Err(e) = self.workspaces.remove_user(user.user.id).await {
            tracing::error!(user_id = %user.user.id, error = %e, "could not remove a deleted user's skill folder");
        }
        tracing::info!(user_id = %user.user.id, "account deleted");
        Ok(())
    }

    async fn check_password(
        &self,
        user: &UserRecord,
        password: &Password,
        field: &'static str,
    ) -> Result<(), AppError> {
        let matched = self
            .hasher
            .verify(password, Some(&user.password_hash))
            .await
            .map_err(hash_error)?;
        if matched {
            Ok(())
        } else {
            Err(AppError::BadRequest {
                code: "wrong-password",
                detail: format!("`{field}` is not the account's password"),
            })
        }
    }

    /// Re-hashes with the current parameters after a successful login. Failure only costs the
    /// upgrade, never the login.
    async fn upgrade_hash(&self, user: &UserRecord, password: &Password) {
        match self.hasher.hash(password).await {
            Ok(new) => {
                if let Err(e) = self
                    .store
                    .upgrade_password_hash(user.id, &user.password_hash, &new)
                    .await
                {
                    tracing::warn!(user_id = %user.id, error = %e, "could not store upgraded password hash");
                }
            }
            Err(e) => {
                tracing::debug!(user_id = %user.id, error = %e, "password hash upgrade skipped")
            }
        }
    }

    fn issue_pair(
        &self,
        user: &UserRecord,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<(TokenPair, NewRefreshToken), AppError> {
        let (access_token, _) = self
            .jwt
            .issue(
                TokenKind::Access,
                user.id,
                user.token_version,
                session_id,
                now,
            )
            .map_err(AppError::internal)?;
        let (refresh_token, claims) = self
            .jwt
            .issue(
                TokenKind::Refresh,
                user.id,
                user.token_version,
                session_id,
                now,
            )
            .map_err(AppError::internal)?;
        let expires_at =
            OffsetDateTime::from_unix_timestamp(claims.exp).map_err(AppError::internal)?;
        Ok((
            TokenPair {
                access_token,
                refresh_token,
                expires_in: self.jwt.access_ttl_secs(),
            },
            NewRefreshToken {
                id: claims.jti,
                expires_at,
            },
        ))
    }
}

fn hash_error(e: HashError) -> AppError {
    match e {
        HashError::Busy(wait) => AppError::Busy(wait),
        HashError::Failed(why) => AppError::internal(why),
    }
}

fn invalid_credentials() -> AppError {
    AppError::Unauthorized {
        code: "invalid-credentials",
        detail: "wrong email, username or password",
    }
}

fn invalid_token() -> AppError {
    AppError::Unauthorized {
        code: "invalid-token",
        detail: "the token is not valid (it may have been revoked); log in again",
    }
}

fn rejected(e: TokenRejected) -> AppError {
    match e {
        TokenRejected::Expired => AppError::Unauthorized {
            code: "token-expired",
            detail: "the token has expired",
        },
        TokenRejected::Invalid | TokenRejected::WrongType => invalid_token(),
    }
}
