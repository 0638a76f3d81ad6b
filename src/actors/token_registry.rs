//! The token registry: owns API tokens and answers "whose token is this?" without the database.
//!
//! The actor is the only writer of the in-memory map from BLAKE3 token hash to token; readers
//! ([`TokenRegistry::authenticate`], called on every MCP request) load the current map through an
//! `ArcSwap` and never wait for the actor or a lock. The actor replaces the map on every change:
//! changes are rare (token created or revoked, user deactivated or deleted), lookups are not.
//!
//! - Create, list and revoke go through the actor, which writes the database first and then the map,
//!   so a revoked token fails on the very next request.
//! - Changes made elsewhere (the admin commands, another instance on the same PostgreSQL) bump a
//!   counter in the database; the actor polls it every `tokens.sync_interval_secs` and reloads.
//! - `last_used_at` is kept in an atomic per token and written in one batch every
//!   `tokens.last_used_flush_secs`, so at most one write per token per interval, and on shutdown.
//!
//! ```text
//! let principal = registry.authenticate(bearer).ok_or(unauthorized)?;
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ask, reply};
use crate::config::TokenSettings;
use crate::domain::{ApiTokenSecret, Scopes, TokenName};
use crate::error::AppError;
use crate::oauth::tokens::{ACCESS_PREFIX, AccessTokens};
use crate::store::{
    self, ApiTokenRecord, LiveApiToken, NewApiToken, OAuthGrantRecord, Store, StoreError,
};

/// Who a valid API token or OAuth access token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    /// The API token's id, or the OAuth grant's (every access token of a grant is one
    /// credential: sessions and limits follow the grant, and survive its refreshes).
    pub token_id: Uuid,
    /// What the token may do.
    pub scopes: Scopes,
}

impl Principal {
    /// Whom an MCP request with this token is for.
    pub fn caller(&self) -> crate::mcp::dispatch::Caller {
        crate::mcp::dispatch::Caller {
            user_id: self.user_id,
            scopes: self.scopes,
        }
    }
}

/// A token just created: the only time its secret is shown.
#[derive(Debug)]
pub struct CreatedToken {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret: ApiTokenSecret,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub scopes: Scopes,
}

/// A token that may authenticate, as kept in memory.
#[derive(Debug)]
struct LiveToken {
    id: Uuid,
    user_id: Uuid,
    hash: [u8; 32],
    /// Unix seconds; `None` = never expires.
    expires_at: Option<i64>,
    scopes: Scopes,
    /// Unix microseconds of the last successful use; 0 = not used since loaded.
    last_used: AtomicI64,
    /// The `last_used` value last written to the database.
    flushed: AtomicI64,
}

type LiveMap = HashMap<[u8; 32], Arc<LiveToken>>;

/// An OAuth grant whose access tokens may authenticate, as kept in memory.
#[derive(Debug)]
struct LiveGrant {
    id: Uuid,
    user_id: Uuid,
    scopes: Scopes,
    /// The resource (RFC 8707) its tokens were issued for.
    resource: Box<str>,
    client_id: Box<str>,
    last_used: AtomicI64,
    flushed: AtomicI64,
}

type GrantMap = HashMap<Uuid, Arc<LiveGrant>>;

/// The handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct TokenRegistry {
    actor: ActorRef<RegistryMessage>,
    live: Arc<ArcSwap<LiveMap>>,
    grants: Arc<ArcSwap<GrantMap>>,
    access: AccessTokens,
    timeout: Duration,
    ended: Arc<OnceLock<EndedListener>>,
}

/// Told the ids of API tokens and OAuth grants that a reload from the database found gone
/// (revoked, expired, or their user deactivated or deleted, by another replica or process), so
/// that their sessions and streams end here too.
pub type EndedListener = Arc<dyn Fn(&[Uuid]) + Send + Sync>;

impl std::fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRegistry")
            .field("live_tokens", &self.live.load().len())
            .field("live_grants", &self.grants.load().len())
            .finish_non_exhaustive()
    }
}

enum RegistryMessage {
    Create {
        user_id: Uuid,
        name: TokenName,
        lifetime: Option<time::Duration>,
        scopes: Scopes,
        reply: RpcReplyPort<Result<CreatedToken, AppError>>,
    },
    List {
        user_id: Uuid,
        reply: RpcReplyPort<Result<Vec<ApiTokenRecord>, AppError>>,
    },
    Revoke {
        user_id: Uuid,
        token_id: Uuid,
        reply: RpcReplyPort<Result<bool, AppError>>,
    },
    /// A grant was made (its first tokens are about to be issued).
    GrantMade {
        grant: OAuthGrantRecord,
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    /// Grants were deleted: their access tokens stop now.
    GrantsEnded {
        ids: Vec<Uuid>,
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    /// The user's grants, with use times not yet written.
    ListGrants {
        user_id: Uuid,
        reply: RpcReplyPort<Result<Vec<OAuthGrantRecord>, AppError>>,
    },
    /// Drops every cached token of a user who was just deactivated or deleted.
    ForgetUser {
        user_id: Uuid,
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    /// Writes pending `last_used_at` values (timer, and on demand in tests and at shutdown).
    Flush {
        reply: Option<RpcReplyPort<Result<(), AppError>>>,
    },
    /// Reloads from the database if another process changed tokens or users (timer).
    Sync,
}

impl TokenRegistry {
    /// Loads the live tokens and starts the actor with its flush and sync timers.
    pub async fn start(
        store: Store,
        settings: &TokenSettings,
        access: AccessTokens,
    ) -> Result<(TokenRegistry, JoinHandle<()>), StartError> {
        let live = Arc::new(ArcSwap::from_pointee(LiveMap::new()));
        let grants = Arc::new(ArcSwap::from_pointee(GrantMap::new()));
        let ended = Arc::new(OnceLock::new());
        let args = RegistryArgs {
            ended: Arc::clone(&ended),
            store,
            live: Arc::clone(&live),
            grants: Arc::clone(&grants),
            flush_every: Duration::from_secs(settings.last_used_flush_secs),
            sync_every: Duration::from_secs(settings.sync_interval_secs),
            max_per_user: settings.max_per_user,
        };
        let (actor, handle) = Actor::spawn(None, RegistryActor, args)
            .await
            .map_err(|e| StartError(e.to_string()))?;
        let registry = TokenRegistry {
            actor,
            live,
            grants,
            access,
            timeout: Duration::from_secs(15),
            ended,
        };
        Ok((registry, handle))
    }

    /// Sets what is told of credentials a reload found gone (once; later calls are ignored).
    pub fn on_ended(&self, listener: EndedListener) {
        if self.ended.set(listener).is_err() {
            tracing::warn!("a second listener for ended credentials was ignored");
        }
    }

    /// Checks the database for token and account changes now, rather than at the next tick of
    /// `tokens.sync_interval_secs` (another replica announced one). Never waits.
    pub fn sync_now(&self) {
        if let Err(e) = self.actor.cast(RegistryMessage::Sync) {
            tracing::debug!(error = %e, "the token registry was not told to sync");
        }
    }

    /// Turns a bearer token into its owner, or `None` if it is malformed, unknown, revoked, expired
    /// or its user is inactive. No database round trip, no lock, no actor hop.
    pub fn authenticate(&self, bearer: &str) -> Option<Principal> {
        let secret = ApiTokenSecret::parse(bearer)?;
        let map = self.live.load();
        let token = map.get(&secret.hash())?;
        let now = OffsetDateTime::now_utc();
        if token
            .expires_at
            .is_some_and(|exp| exp <= now.unix_timestamp())
        {
            return None;
        }
        let micros = i64::try_from(now.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
        token.last_used.fetch_max(micros, Ordering::Relaxed);
        Some(Principal {
            user_id: token.user_id,
            token_id: token.id,
            scopes: token.scopes,
        })
    }

    /// [`TokenRegistry::authenticate`], and also an OAuth access token: its MAC and expiry, its
    /// grant still live, and the grant's resource one that `audience` accepts (the endpoint
    /// asked). Still no database round trip, no lock, no actor hop.
    pub fn authenticate_for(
        &self,
        bearer: &str,
        audience: impl FnOnce(&str) -> bool,
    ) -> Option<Principal> {
        if !bearer.starts_with(ACCESS_PREFIX) {
            return self.authenticate(bearer);
        }
        let (grant_id, expires_at) = self.access.verify(bearer)?;
        let now = OffsetDateTime::now_utc();
        if expires_at <= now.unix_timestamp() {
            return None;
        }
        let grants = self.grants.load();
        let grant = grants.get(&grant_id)?;
        if !audience(&grant.resource) {
            return None;
        }
        let micros = i64::try_from(now.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
        grant.last_used.fetch_max(micros, Ordering::Relaxed);
        Some(Principal {
            user_id: grant.user_id,
            token_id: grant.id,
            scopes: grant.scopes,
        })
    }

    /// Issues an access token of `grant` that stops at `expires_at` (Unix seconds).
    pub fn issue_access(&self, grant: Uuid, expires_at: i64) -> Result<String, AppError> {
        self.access
            .issue(grant, expires_at)
            .map_err(AppError::internal)
    }

    /// The live grant an access token of this server names (expired or not), with its user
    /// and client.
    pub fn access_grant(&self, token: &str) -> Option<(Uuid, Uuid, String)> {
        let (id, _) = self.access.verify(token)?;
        let grants = self.grants.load();
        let grant = grants.get(&id)?;
        Some((grant.id, grant.user_id, grant.client_id.to_string()))
    }

    pub async fn grant_made(&self, grant: OAuthGrantRecord) -> Result<(), AppError> {
        ask(&self.actor, self.timeout, "token registry", |reply| {
            RegistryMessage::GrantMade { grant, reply }
        })
        .await
    }

    pub async fn grants_ended(&self, ids: Vec<Uuid>) -> Result<(), AppError> {
        ask(&self.actor, self.timeout, "token registry", |reply| {
            RegistryMessage::GrantsEnded { ids, reply }
        })
        .await
    }

    pub async fn list_grants(&self, user_id: Uuid) -> Result<Vec<OAuthGrantRecord>, AppError> {
        ask(&self.actor, self.timeout, "token registry", |reply| {
            RegistryMessage::ListGrants { user_id, reply }
        })
        .await
    }

    /// Tokens held in memory (for `/health` and tests).
    pub fn live_count(&self) -> usize {
        self.live.load().len()
    }

    /// Creates a token that expires `lifetime` after its creation (`None`: never).
    pub async fn create(
        &self,
        user_id: Uuid,
        name: TokenName,
        lifetime: Option<time::Duration>,
        scopes: Scopes,
    ) -> Result<CreatedToken, AppError> {
        ask(&self.actor, self.timeout, "token registry", |reply| {
            RegistryMessage::Create {
                user_id,
                name,
                lifetime,
                scopes,
                reply,
            }
        })
        .await
    }

    pub async fn list(&self, user_id: Uuid) -> Result<Vec<ApiTokenRecord>, AppError> {
        ask(&self.actor, self.timeout, "token registry", |reply| {
            RegistryMessage::List { user_id, reply }
        })
        .await
    }

    /// Deletes the user's token; `false` if they have no such token.
    pub async fn revoke(&self, user_id: Uuid, token_id: Uuid) -> Result<bool, AppError> {
        ask(&self.actor, self.timeout, "token registry", |reply| {
            RegistryMessage::Revoke {
                user_id,
                token_id,
                reply,
            }
        })
        .await
    }

    pub async fn forget_user(&self, user_id: Uuid) -> Result<(), AppError> {
        ask(&self.actor, self.timeout, "token registry", |reply| {
            RegistryMessage::ForgetUser { user_id, reply }
        })
        .await
    }

    /// Writes pending `last_used_at` values now.
    pub async fn flush(&self) -> Result<(), AppError> {
        ask(&self.actor, self.timeout, "token registry", |reply| {
            RegistryMessage::Flush { reply: Some(reply) }
        })
        .await
    }

    /// Flushes and stops the actor.
    pub async fn shutdown(&self) {
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "could not flush token use times at shutdown");
        }
        self.actor.stop(None);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the token registry did not start: {0}")]
pub struct StartError(String);

struct RegistryActor;

struct RegistryArgs {
    ended: Arc<OnceLock<EndedListener>>,
    store: Store,
    live: Arc<ArcSwap<LiveMap>>,
    grants: Arc<ArcSwap<GrantMap>>,
    flush_every: Duration,
    sync_every: Duration,
    max_per_user: u32,
}

struct RegistryState {
    ended: Arc<OnceLock<EndedListener>>,
    store: Store,
    live: Arc<ArcSwap<LiveMap>>,
    by_id: HashMap<Uuid, Arc<LiveToken>>,
    grants_live: Arc<ArcSwap<GrantMap>>,
    grants: GrantMap,
    epoch: i64,
    max_per_user: u32,
    flush_every: Duration,
    sync_every: Duration,
    timers: Vec<JoinHandle<()>>,
}

impl Actor for RegistryActor {
    type Msg = RegistryMessage;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        let mut state = RegistryState {
            ended: args.ended,
            store: args.store,
            live: args.live,
            by_id: HashMap::new(),
            grants_live: args.grants,
            grants: GrantMap::new(),
            epoch: 0,
            max_per_user: args.max_per_user,
            flush_every: args.flush_every,
            sync_every: args.sync_every,
            timers: Vec::new(),
        };
        state.reload().await?;
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        state.timers.push(
            myself.send_interval(state.flush_every, || RegistryMessage::Flush { reply: None }),
        );
        state
            .timers
            .push(myself.send_interval(state.sync_every, || RegistryMessage::Sync));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        for timer in state.timers.drain(..) {
            timer.abort();
        }
        if let Err(e) = state.flush().await {
            tracing::warn!(error = %e, "could not flush token use times");
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: RegistryMessage,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMessage::Create {
                user_id,
                name,
                lifetime,
                scopes,
                reply: port,
            } => reply(port, state.create(user_id, name, lifetime, scopes).await),
            RegistryMessage::List {
                user_id,
                reply: port,
            } => reply(port, state.list(user_id).await),
            RegistryMessage::Revoke {
                user_id,
                token_id,
                reply: port,
            } => reply(port, state.revoke(user_id, token_id).await),
            RegistryMessage::ForgetUser {
                user_id,
                reply: port,
            } => {
                state.remove_where(|t| t.user_id == user_id);
                state.remove_grants_where(|g| g.user_id == user_id);
                reply(port, Ok(()));
            }
            RegistryMessage::GrantMade { grant, reply: port } => {
                state.grants.insert(grant.id, Arc::new(live_grant(&grant)));
                state.publish_grants();
                reply(port, Ok(()));
            }
            RegistryMessage::GrantsEnded { ids, reply: port } => {
                state.remove_grants_where(|g| ids.contains(&g.id));
                reply(port, Ok(()));
            }
            RegistryMessage::ListGrants {
                user_id,
                reply: port,
            } => reply(port, state.list_grants(user_id).await),
            RegistryMessage::Flush { reply: port } => {
                let result = state.flush().await.map_err(AppError::from);
                match port {
                    Some(port) => reply(port, result),
                    None => {
                        if let Err(e) = result {
                            tracing::warn!(error = %e, "could not flush token use times; will retry");
                        }
                    }
                }
            }
            RegistryMessage::Sync => {
                if let Err(e) = state.sync().await {
                    tracing::warn!(error = %e, "could not check for token changes; will retry");
                }
            }
        }
        Ok(())
    }
}

impl RegistryState {
    async fn create(
        &mut self,
        user_id: Uuid,
        name: TokenName,
        lifetime: Option<time::Duration>,
        scopes: Scopes,
    ) -> Result<CreatedToken, AppError> {
        let secret = ApiTokenSecret::generate().map_err(AppError::internal)?;
        let created_at = store::now();
        let expires_at = lifetime.map(|l| created_at + l);
        let record = NewApiToken {
            id: Uuid::new_v4(),
            user_id,
            name: name.as_str().to_owned(),
            prefix: secret.shown_prefix(),
            token_hash: secret.hash(),
            created_at,
            expires_at,
            scopes: scopes.to_string(),
        };
        match self
            .store
            .insert_api_token(&record, self.max_per_user)
            .await
        {
            Ok(()) => {}
            Err(StoreError::LimitReached) => {
                return Err(AppError::BadRequest {
                    code: "too-many-tokens",
                    detail: format!(
                        "an account may hold at most {} API tokens; delete one first",
                        self.max_per_user
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.insert(LiveApiToken {
            id: record.id,
            user_id,
            token_hash: record.token_hash,
            expires_at,
            scopes: record.scopes.clone(),
        });
        Ok(CreatedToken {
            id: record.id,
            name: record.name,
            prefix: record.prefix,
            secret,
            created_at: record.created_at,
            expires_at,
            scopes,
        })
    }

    async fn list(&self, user_id: Uuid) -> Result<Vec<ApiTokenRecord>, AppError> {
        let mut tokens = self.store.list_api_tokens(user_id, store::now()).await?;
        // Uses since the last flush are only in memory; show them too.
        for token in &mut tokens {
            let Some(live) = self.by_id.get(&token.id) else {
                continue;
            };
            let micros = live.last_used.load(Ordering::Relaxed);
            if let Some(seen) = from_micros(micros)
                && token.last_used_at.is_none_or(|stored| stored < seen)
            {
                token.last_used_at = Some(seen);
            }
        }
        Ok(tokens)
    }

    async fn revoke(&mut self, user_id: Uuid, token_id: Uuid) -> Result<bool, AppError> {
        let deleted = self.store.delete_api_token(user_id, token_id).await?;
        if deleted {
            self.remove_where(|t| t.id == token_id);
        }
        Ok(deleted)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flush_grants().await?;
        let pending: Vec<(&Arc<LiveToken>, i64)> = self
            .by_id
            .values()
            .filter_map(|t| {
                let used = t.last_used.load(Ordering::Relaxed);
                (used > t.flushed.load(Ordering::Relaxed)).then_some((t, used))
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let uses: Vec<(Uuid, OffsetDateTime)> = pending
            .iter()
            .filter_map(|(t, used)| from_micros(*used).map(|at| (t.id, at)))
            .collect();
        self.store.record_token_use(&uses).await?;
        for (token, used) in pending {
            token.flushed.store(used, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn flush_grants(&self) -> Result<(), StoreError> {
        let pending: Vec<(&Arc<LiveGrant>, i64)> = self
            .grants
            .values()
            .filter_map(|g| {
                let used = g.last_used.load(Ordering::Relaxed);
                (used > g.flushed.load(Ordering::Relaxed)).then_some((g, used))
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let uses: Vec<(Uuid, OffsetDateTime)> = pending
            .iter()
            .filter_map(|(g, used)| from_micros(*used).map(|at| (g.id, at)))
            .collect();
        self.store.record_grant_use(&uses).await?;
        for (grant, used) in pending {
            grant.flushed.store(used, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn list_grants(&self, user_id: Uuid) -> Result<Vec<OAuthGrantRecord>, AppError> {
        let mut grants = self.store.list_oauth_grants(user_id, store::now()).await?;
        for grant in &mut grants {
            let Some(live) = self.grants.get(&grant.id) else {
                continue;
            };
            if let Some(seen) = from_micros(live.last_used.load(Ordering::Relaxed))
                && grant.last_used_at.is_none_or(|stored| stored < seen)
            {
                grant.last_used_at = Some(seen);
            }
        }
        Ok(grants)
    }

    fn remove_grants_where(&mut self, doomed: impl Fn(&LiveGrant) -> bool) {
        let before = self.grants.len();
        self.grants.retain(|_, g| !doomed(g));
        if self.grants.len() != before {
            self.publish_grants();
        }
    }

    fn publish_grants(&self) {
        self.grants_live.store(Arc::new(self.grants.clone()));
    }

    async fn sync(&mut self) -> Result<(), StoreError> {
        let epoch = self.store.registry_epoch().await?;
        if epoch != self.epoch {
            self.reload().await?;
        }
        Ok(())
    }

    /// Rebuilds the map from the database, keeping the in-memory use times of tokens still live.
    async fn reload(&mut self) -> Result<(), StoreError> {
        // Read the epoch first: a change that lands between the two reads bumps it again and the
        // next sync reloads once more, so nothing is missed.
        let epoch = self.store.registry_epoch().await?;
        let rows = self.store.live_api_tokens(store::now()).await?;
        let grant_rows = self.store.live_oauth_grants(store::now()).await?;
        let mut grants = GrantMap::with_capacity(grant_rows.len());
        for row in grant_rows {
            let grant = match self.grants.get(&row.id) {
                Some(existing) => Arc::clone(existing),
                None => Arc::new(live_grant(&row)),
            };
            grants.insert(row.id, grant);
        }
        let ended_grants: Vec<Uuid> = self
            .grants
            .keys()
            .filter(|id| !grants.contains_key(id))
            .copied()
            .collect();
        self.grants = grants;
        self.publish_grants();
        let mut by_id = HashMap::with_capacity(rows.len());
        for row in rows {
            let token = match self.by_id.get(&row.id) {
                Some(existing) => Arc::clone(existing),
                None => Arc::new(live_token(&row)),
            };
            by_id.insert(row.id, token);
        }
        let ended: Vec<Uuid> = self
            .by_id
            .keys()
            .filter(|id| !by_id.contains_key(id))
            .chain(ended_grants.iter())
            .copied()
            .collect();
        self.by_id = by_id;
        self.epoch = epoch;
        self.publish();
        if !ended.is_empty()
            && let Some(listener) = self.ended.get()
        {
            listener(&ended);
        }
        Ok(())
    }

    fn insert(&mut self, row: LiveApiToken) {
        self.by_id.insert(row.id, Arc::new(live_token(&row)));
        self.publish();
    }

    fn remove_where(&mut self, doomed: impl Fn(&LiveToken) -> bool) {
        let before = self.by_id.len();
        self.by_id.retain(|_, t| !doomed(t));
        if self.by_id.len() != before {
            self.publish();
        }
    }

    /// Makes the current `by_id` the map readers see.
    fn publish(&self) {
        let map: LiveMap = self
            .by_id
            .values()
            .map(|t| (t.hash, Arc::clone(t)))
            .collect();
        self.live.store(Arc::new(map));
    }
}

fn live_token(row: &LiveApiToken) -> LiveToken {
    LiveToken {
        id: row.id,
        user_id: row.user_id,
        hash: row.token_hash,
        expires_at: row.expires_at.map(OffsetDateTime::unix_timestamp),
        scopes: Scopes::from_stored(&row.scopes),
        last_used: AtomicI64::new(0),
        flushed: AtomicI64::new(0),
    }
}

fn live_grant(row: &OAuthGrantRecord) -> LiveGrant {
    LiveGrant {
        id: row.id,
        user_id: row.user_id,
        scopes: Scopes::from_stored(&row.scopes),
        resource: row.resource.clone().into_boxed_str(),
        client_id: row.client_id.clone().into_boxed_str(),
        last_used: AtomicI64::new(0),
        flushed: AtomicI64::new(0),
    }
}

fn from_micros(micros: i64) -> Option<OffsetDateTime> {
    if micros <= 0 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()
}
