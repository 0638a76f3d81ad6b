//! Start-up and shutdown: [`App::build`] turns [`Settings`] into a bound listener, an open
//! database and the running actors; [`App::run_until_stopped`] serves until told to stop, then
//! drains connections and flushes what is buffered.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use agentskills_mcp::{app::App, config::Settings};
//! let app = App::build(Settings::load(None)?).await?;
//! println!("listening on {}", app.local_addr());
//! app.run_until_stopped(std::future::pending()).await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::actors::auth::{AuthCore, AuthService};
use crate::actors::token_registry::TokenRegistry;
use crate::actors::workspace::staging_root;
use crate::actors::workspaces::Workspaces;
use crate::auth::{JwtKeys, PasswordHasher};
use crate::config::Settings;
use crate::console::csrf::Csrf;
use crate::http::rate_limit::RateLimits;
use crate::mcp::limits::Limits;
use crate::mcp::listen::{Change, ListenStreams};
use crate::mcp::{McpServer, Sessions, SkillSource};
use crate::metrics::Metrics;
use crate::oauth::OAuth;
use crate::sandbox::Sandbox;
use crate::store::{Store, StoreError};

/// What every request handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub store: Store,
    pub auth: AuthService,
    pub registry: TokenRegistry,
    pub workspaces: Workspaces,
    pub mcp: McpServer,
    pub sessions: Arc<Sessions>,
    /// The `subscriptions/listen` streams of clients without a session.
    pub listen: Arc<ListenStreams>,
    pub sandbox: Sandbox,
    pub rate_limits: RateLimits,
    pub metrics: Arc<Metrics>,
    /// The web console's CSRF keys, derived from the signing secret.
    pub csrf: Csrf,
    /// The OAuth authorization server's flows.
    pub oauth: OAuth,
    /// Skills from Git repositories: imports and syncs.
    pub imports: crate::imports::Imports,
    /// The connection that listens for other replicas' changes (PostgreSQL only).
    pub listener: Option<crate::store::ListenerHealth>,
    /// Set when shutdown begins with a drain (`server.shutdown_drain_secs`): not ready, and
    /// every HTTP/1 response closes its connection.
    pub draining: std::sync::atomic::AtomicBool,
    pub started: Instant,
}

/// Every `import.sync_check_secs`, the sources whose periodic sync is due are synced (a weak
/// reference: the task ends with the server).
fn spawn_periodic_sync(state: &Arc<AppState>) {
    let weak = Arc::downgrade(state);
    let every = Duration::from_secs(state.settings.import.sync_check_secs.max(1));
    tokio::spawn(async move {
        // The first look one interval after start: nothing is added to start-up.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(state) = weak.upgrade() else { break };
            let imports = state.imports.clone();
            drop(state);
            match imports.sync_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(synced = n, "periodic sync of imported skills"),
                Err(e) => tracing::warn!(error = %e, "the periodic sync could not run"),
            }
        }
    });
}

/// Why the server could not start. Each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the signing secret file {path}: {why}")]
    Secret { path: PathBuf, why: String },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("an actor did not start: {0}")]
    Actor(String),
    #[error("cannot use the blob store (storage.backend): {0}")]
    Storage(String),
}

/// A built, bound, not yet serving server.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl App {
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        let started = Instant::now();
        let data_dir = settings.server.data_dir.clone();
        create_data_dir(&data_dir)?;
        let secret = match settings.configured_secret() {
            Some(secret) => secret.as_bytes().to_vec(),
            None => load_or_create_secret(&data_dir)?,
        };
        let store = Store::open(&settings.database, &data_dir).await?;
        let skills_root = data_dir.join("skills");
        // What a crash cut short: uploads staged but never swapped in, and folders of deleted
        // accounts not yet removed.
        let staging = staging_root(&skills_root);
        let root = skills_root.clone();
        let cleanup = move || {
            Ok::<_, std::io::Error>(
                crate::skills::files::clean_staging(&staging)?
                    + crate::skills::files::clean_removed(&root)?,
            )
        };
        match tokio::task::spawn_blocking(cleanup).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::warn!(folders = n, "removed what a crash left unfinished"),
            Ok(Err(e)) => {
                return Err(StartError::DataDir {
                    path: skills_root,
                    source: e,
                });
            }
            Err(e) => return Err(StartError::Actor(e.to_string())),
        }
        let blobs = crate::storage::BlobStore::from_settings(&settings)
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let workspaces =
            Workspaces::start(store.clone(), blobs, skills_root, settings.skills.clone())
                .await
                .map_err(StartError::Actor)?;
        // Skills written by a release before versions become version 1 now, not at their
        // owner's first request.
        versions_for_old_skills(&store, &workspaces).await?;
        let access = crate::oauth::tokens::AccessTokens::new(&secret);
        let (registry, _) = TokenRegistry::start(store.clone(), &settings.tokens, access)
            .await
            .map_err(|e| StartError::Actor(e.to_string()))?;
        let hasher = password_hasher(&settings);
        let hash_wait = Duration::from_millis(settings.auth.hash_wait_ms);
        let core = AuthCore {
            store: store.clone(),
            hasher,
            jwt: JwtKeys::new(&secret, &settings.auth),
            registry: registry.clone(),
            workspaces: workspaces.clone(),
        };
        let (auth, _) = AuthService::start(core, hash_wait)
            .await
            .map_err(StartError::Actor)?;
        let addr = settings.server.bind;
        let listener = listen(addr).map_err(|source| StartError::Bind { addr, source })?;
        tracing::info!(
            database = store.backend().as_str(),
            data_dir = %data_dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ready"
        );
        let metrics = Arc::new(Metrics::for_replica(settings.server.replica_id.as_deref()));
        let sandbox = Sandbox::start(&settings.sandbox, Arc::clone(&metrics)).await;
        let mcp = McpServer::new(
            SkillSource::Accounts(workspaces.clone()),
            settings.skills.max_file_bytes,
            Limits::from_settings(&settings.mcp),
            sandbox.clone(),
        );
        let sessions = Arc::new(
            Sessions::new(
                Duration::from_secs(settings.mcp.session_idle_secs),
                settings.mcp.max_sessions_per_token,
                settings.mcp.max_queued_bytes,
            )
            .for_replica(settings.server.replica_id.as_deref()),
        );
        spawn_session_reaper(
            &sessions,
            &store,
            Duration::from_secs(settings.mcp.session_idle_secs),
        );
        let listen = Arc::new(ListenStreams::new(
            settings.mcp.max_listen_streams_per_token,
        ));
        {
            // Open MCP sessions and listen streams hear of every change to their user's skills.
            let sessions = Arc::downgrade(&sessions);
            let listen = Arc::downgrade(&listen);
            let changed = bytes::Bytes::from_static(
                br#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#,
            );
            workspaces.on_change(Arc::new(move |user_id| {
                if let Some(sessions) = sessions.upgrade() {
                    sessions.notify_user(user_id, &changed);
                }
                if let Some(listen) = listen.upgrade() {
                    listen.notify_user(user_id, Change::ResourcesListChanged);
                }
            }));
        }
        {
            // A token, grant or account another replica ended: its sessions and streams end here.
            let sessions = Arc::downgrade(&sessions);
            let listen = Arc::downgrade(&listen);
            registry.on_ended(Arc::new(move |ended: &[uuid::Uuid]| {
                if let Some(sessions) = sessions.upgrade() {
                    sessions.close_where(|s| ended.contains(&s.token_id));
                }
                if let Some(listen) = listen.upgrade() {
                    listen.close_where(|_, token_id| ended.contains(&token_id));
                }
            }));
        }
        let announcements = store.listen();
        if let Some((health, _)) = &announcements {
            // Ready once it hears the other replicas (a few milliseconds; at most two seconds,
            // then readiness says so until it does).
            let deadline = Instant::now() + Duration::from_secs(2);
            while !health.is_connected() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let rate_limits = RateLimits::new(&settings.rate_limits, Arc::clone(&metrics));
        let oauth = OAuth::new(
            store.clone(),
            registry.clone(),
            Arc::clone(&sessions),
            Arc::clone(&listen),
            &settings.oauth,
        )
        .map_err(StartError::Actor)?;
        let imports = crate::imports::Imports::new(
            store.clone(),
            workspaces.clone(),
            settings.import.clone(),
            &settings.skills,
        );
        let state = Arc::new(AppState {
            settings,
            store,
            auth,
            registry,
            workspaces,
            mcp,
            sessions,
            listen,
            sandbox,
            rate_limits,
            metrics,
            csrf: Csrf::new(&secret),
            oauth,
            imports,
            listener: announcements.as_ref().map(|(health, _)| health.clone()),
            draining: std::sync::atomic::AtomicBool::new(false),
            started,
        });
        spawn_rate_limit_pruner(&state);
        if state.settings.storage.cache_bytes > 0 {
            spawn_cache_keeper(&state, Duration::from_secs(60));
        }
        if let Some((_, received)) = announcements {
            spawn_coherence(&state, received);
        }
        spawn_periodic_sync(&state);
        Ok(App { listener, state })
    }

    /// The address the server listens on (with the real port when `bind` said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.settings.server.bind)
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` completes, then drains connections, flushes token use times and
    /// stops the actors.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let state = Arc::clone(&self.state);
        crate::http::serve(self.listener, Arc::clone(&state), shutdown).await;
        state.registry.shutdown().await;
        state.auth.stop();
        tracing::info!("stopped");
    }
}

/// Loads the workspace of every user who has a skill written by a release before versions, which
/// records it as its version 1 (`load_index`); the workspaces then stop when idle.
pub async fn versions_for_old_skills(
    store: &crate::store::Store,
    workspaces: &Workspaces,
) -> Result<usize, StartError> {
    let mut users: Vec<uuid::Uuid> = store
        .unversioned_skills()
        .await?
        .into_iter()
        .map(|s| s.user_id)
        .collect();
    users.sort_unstable();
    users.dedup();
    for user in &users {
        workspaces.index(*user).await.map_err(|e| {
            StartError::Actor(format!(
                "the skills of user {user} could not be given versions: {e}"
            ))
        })?;
    }
    if !users.is_empty() {
        tracing::info!(
            users = users.len(),
            "recorded skills from before versions as version 1"
        );
    }
    Ok(users.len())
}

/// Every minute, forgets rate-limit keys that recovered; every hour, purges expired OAuth rows;
/// stops when the service is dropped.
fn spawn_rate_limit_pruner(state: &Arc<AppState>) {
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.tick().await;
        let mut minutes: u64 = 0;
        loop {
            every.tick().await;
            let Some(state) = state.upgrade() else {
                return;
            };
            let left = state.rate_limits.prune();
            tracing::debug!(keys = left, "pruned rate-limit keys");
            // Hourly: expired OAuth codes, refresh tokens and grants, unused registrations.
            if minutes.is_multiple_of(60) {
                match state.oauth.purge().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(rows = n, "purged expired OAuth rows"),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not purge expired OAuth rows; will retry")
                    }
                }
            }
            minutes += 1;
        }
    });
}

/// Every `every`, keeps this replica's copies of skills under `storage.cache_bytes`; stops when
/// the service is dropped.
pub fn spawn_cache_keeper(state: &Arc<AppState>, every: Duration) {
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(state) = state.upgrade() else {
                return;
            };
            match state
                .workspaces
                .evict(state.settings.storage.cache_bytes)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    users = n,
                    "removed the least recently used skill copies to keep storage.cache_bytes"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "could not keep the skill copies under storage.cache_bytes; will retry")
                }
            }
        }
    });
}

/// Keeps this replica in step with the others: acts on each change the database announces, and
/// every `tokens.sync_interval_secs` checks the running workspaces against the database anyway
/// (the backstop for an announcement lost while the listening connection was away; the token
/// registry has its own). Stops when the service is dropped.
fn spawn_coherence(
    state: &Arc<AppState>,
    mut received: tokio::sync::mpsc::UnboundedReceiver<crate::store::Announcement>,
) {
    use crate::store::Announcement;
    let every = Duration::from_secs(state.settings.tokens.sync_interval_secs.max(1));
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut backstop = tokio::time::interval(every);
        backstop.tick().await;
        loop {
            let announcement = tokio::select! {
                announcement = received.recv() => match announcement {
                    Some(announcement) => Some(announcement),
                    None => return,
                },
                _ = backstop.tick() => None,
            };
            let Some(state) = state.upgrade() else {
                return;
            };
            match announcement {
                Some(Announcement::Skills { user_id, version }) => {
                    state.workspaces.announced(user_id, version);
                }
                Some(Announcement::Tokens) => state.registry.sync_now(),
                Some(Announcement::SessionEnded { id }) => {
                    state.sessions.close_id(&id);
                }
                Some(Announcement::UserDeleted { user_id }) => {
                    state.registry.sync_now();
                    state.sessions.close_where(|s| s.user_id == user_id);
                    state.listen.close_where(|user, _| user == user_id);
                    if let Err(e) = state.workspaces.forget_user(user_id).await {
                        tracing::warn!(%user_id, error = %e, "could not remove a deleted account's skill folders");
                    }
                }
                Some(Announcement::Resync) => {
                    state.registry.sync_now();
                    resync(&state).await;
                }
                None => resync(&state).await,
            }
        }
    });
}

async fn resync(state: &AppState) {
    if let Err(e) = state.workspaces.resync().await {
        tracing::warn!(error = %e, "could not check the loaded skills against the database; will retry");
    }
}

/// Ends idle MCP sessions now and then; stops when the sessions are dropped.
fn spawn_session_reaper(sessions: &Arc<Sessions>, store: &Store, idle: Duration) {
    let sessions = Arc::downgrade(sessions);
    let store = store.clone();
    let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(sessions) = sessions.upgrade() else {
                break;
            };
            // The sessions' use, written in one batch, then the shared rows idle everywhere
            // deleted (each replica ends its copy when that is announced), then the copies idle
            // here ended: a session used on another replica only is taken up again from its row.
            let seen = sessions.seen_since_flush(None);
            if let Err(e) = store.touch_mcp_sessions(&seen).await {
                tracing::warn!(error = %e, "could not record MCP session use; will retry");
            }
            let cutoff =
                crate::store::now() - time::Duration::try_from(idle).unwrap_or(time::Duration::MAX);
            match store.reap_mcp_sessions(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "deleted idle MCP sessions"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not delete idle MCP sessions; will retry")
                }
            }
            let reaped = sessions.reap();
            if reaped > 0 {
                tracing::debug!(reaped, "ended idle MCP sessions");
            }
        }
    });
}

/// The password hasher the settings describe (also used by the admin commands).
pub fn password_hasher(settings: &Settings) -> PasswordHasher {
    let auth = &settings.auth;
    // Validated at start (`Settings::validate`), so this cannot fail; fall back to the defaults
    // rather than panic if it ever did.
    let params = scrypt::Params::new(auth.scrypt_log_n, auth.scrypt_r, auth.scrypt_p, 32)
        .unwrap_or_else(|_| scrypt::Params::recommended());
    PasswordHasher::new(
        params,
        settings.hash_concurrency(),
        Duration::from_millis(auth.hash_wait_ms),
    )
}

fn create_data_dir(dir: &Path) -> Result<(), StartError> {
    let fail = |source| StartError::DataDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let skills = dir.join("skills");
    std::fs::create_dir_all(&skills).map_err(fail)?;
    // The data dir holds the secret and every user's files. Others may pass through it but not
    // list it: the sandbox's own user must reach a skill's folder to mount it. What is secret in
    // it (the signing secret, the SQLite database) is the owner's alone (0600).
    for dir in [dir, skills.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(fail)?;
    }
    Ok(())
}

const SECRET_FILE: &str = "secret_key";

/// Reads `<data_dir>/secret_key`, or creates it (64 random bytes, hex, mode 0600) on first start.
///
/// The file is written under a temporary name and hard-linked into place, so two processes starting
/// at once agree on one secret and neither ever reads a half-written file.
fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>, StartError> {
    let path = data_dir.join(SECRET_FILE);
    let fail = |why: String| StartError::Secret {
        path: path.clone(),
        why,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim();
            if secret.len() < 32 {
                return Err(fail(
                    "it holds fewer than 32 bytes; delete it to have a new one made".into(),
                ));
            }
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "the signing secret file can be read by other users; chmod 600 it");
            }
            return Ok(secret.as_bytes().to_vec());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let mut bytes = [0u8; 64];
    getrandom::fill(&mut bytes).map_err(|e| fail(e.to_string()))?;
    let secret = hex::encode(bytes);
    let tmp = data_dir.join(format!(".{SECRET_FILE}.{}", uuid::Uuid::new_v4().simple()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(secret.as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e.to_string()));
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new signing secret");
            Ok(secret.into_bytes())
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_secret(data_dir),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The listening socket, with a backlog of 4096 connections not yet accepted (tokio's
/// `TcpListener::bind` asks for 1024, and the kernel caps it at `net.core.somaxconn`): a burst
/// of clients connecting at once, thousands of event streams reopening after a restart, waits in
/// the queue instead of being dropped and retried.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server binds its port while the old connections
    // are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_made_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(first.len(), 128);
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(dir.path()).unwrap(), first);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_short_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRET_FILE), "short").unwrap();
        let err = load_or_create_secret(dir.path()).unwrap_err();
        assert!(err.to_string().contains("secret_key"), "{err}");
    }
}
