//! The sandbox `run_shell_command` runs in.
//!
//! A command runs as `sh -c <command>` in a scratch copy of the skill's folder, never in the
//! stored skill: what it writes is thrown away when it ends. It goes through these layers, each
//! probed at start ([`probe`]) and shown on `/health`:
//! - **bubblewrap**: new mount, PID, network, IPC and UTS namespaces (and a user namespace), a
//!   new session, killed with the server; only the system directories a shell needs, read-only,
//!   on a read-only root; a private `/proc` and a few devices. No network at all, not even
//!   loopback.
//! - **scratch space**: [`init`] inside bubblewrap mounts a tmpfs bounded in bytes and in files
//!   on `/skill` and on `/tmp`, unpacks the skill's files (which the server reads and writes to
//!   it as an archive) into `/skill`, detaches its own mount, then drops every capability.
//!   Without it (no bubblewrap, degraded or off), the command runs in a copy of the skill in a
//!   private host folder, bounded only per file.
//! - **Landlock** (ABI 6, hard requirement) applied inside by [`init`]: read-only system paths,
//!   read-write `/skill` and `/tmp`, no TCP, signals and abstract sockets scoped.
//! - **rlimits**: CPU, data (`RLIMIT_DATA`), file size, open files, processes, no core dumps; the
//!   process limit binds because commands of a root server run as another user id.
//! - inherited file descriptors closed; the environment cleared to `PATH`, `HOME`, `LANG`.
//! - a wall-clock timeout and capped stdout and stderr; killing the sandbox's first process ends
//!   its PID namespace, so nothing it started (`setsid` included) survives.
//!
//! Policy ([`SandboxMode`]): `strict` runs only when the file system, network, processes and
//! signals are isolated and writes bounded (bubblewrap and the scratch space work); `degraded`
//! runs with what is there and warns on every run; `off` runs unconfined (in a host copy too). Capacity: a per-user cap, a global cap and a bounded queue; a full
//! queue answers "busy" at once. [`Sandbox::shutdown`] kills every running command.

pub mod init;
mod probe;
mod run;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, SetOnce, watch};
use uuid::Uuid;

pub use probe::Layers;
pub use run::Outcome;

use crate::config::{SandboxMode, SandboxSettings};
use crate::metrics::Metrics;

/// Why a command was not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Sandbox unavailable: {0}. The command was not run.")]
    Unavailable(String),
    #[error("Busy, retry: too many commands are running or waiting. The command was not run.")]
    Busy,
    #[error("The server is shutting down. The command was not run.")]
    ShuttingDown,
    #[error("The command could not be run: {0}")]
    Failed(String),
}

/// What `/health` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub mode: SandboxMode,
    /// Whether `run_shell_command` runs commands.
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub layers: Layers,
    pub running: usize,
    pub waiting: usize,
}

/// The handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: SandboxSettings,
    /// What the probe at start found; empty until it has finished.
    layers: SetOnce<Layers>,
    global: Arc<Semaphore>,
    global_slots: usize,
    per_user: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
    /// User ids free for the next command (root server only): one per global slot.
    uids: Mutex<Vec<u32>>,
    waiting: AtomicUsize,
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Sandbox {
    /// Starts probing the layers, in the background: the probe runs `bwrap` and the helper,
    /// tens of milliseconds that would otherwise hold up the server's start (every other tool
    /// answers meanwhile). [`Sandbox::status`] and commands wait for it; what was found is
    /// logged when it is known.
    pub async fn start(settings: &SandboxSettings, metrics: Arc<Metrics>) -> Sandbox {
        let sandbox = Sandbox::unprobed(settings, metrics);
        let probing = sandbox.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let layers = probe::probe(&settings).await;
            probing.probed(layers);
            let status = probing.status().await;
            match (status.mode, status.ready) {
                (SandboxMode::Strict, true) => {
                    tracing::info!(layers = ?status.layers, "sandbox ready (strict)");
                }
                (SandboxMode::Strict, false) => tracing::warn!(
                    reason = status.reason.as_deref().unwrap_or_default(),
                    "sandbox unavailable: run_shell_command will refuse to run commands (sandbox.mode = strict)"
                ),
                (SandboxMode::Degraded, _) => tracing::warn!(
                    layers = ?status.layers,
                    "sandbox degraded: commands run with only the layers found"
                ),
                (SandboxMode::Off, _) => tracing::warn!(
                    "SANDBOX OFF: run_shell_command runs commands unconfined, as this server's user, with \
                     access to everything it can reach; use this only for single-user development"
                ),
            }
        });
        sandbox
    }

    fn unprobed(settings: &SandboxSettings, metrics: Arc<Metrics>) -> Sandbox {
        let global_slots = if settings.global == 0 {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        } else {
            settings.global
        };
        Sandbox {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                uids: Mutex::new(Vec::new()),
                layers: SetOnce::new(),
                global: Arc::new(Semaphore::new(global_slots)),
                global_slots,
                per_user: Mutex::new(HashMap::new()),
                waiting: AtomicUsize::new(0),
                shutdown: watch::channel(false).0,
                metrics,
            }),
        }
    }

    /// Records what the probe found: the user ids commands run as (one per global slot), then
    /// the layers, which lets waiting callers on.
    fn probed(&self, layers: Layers) {
        let inner = &self.inner;
        let uids: Vec<u32> = layers
            .run_as_uid
            .map(|first| {
                (0..inner.global_slots)
                    .filter_map(|i| u32::try_from(i).ok().and_then(|i| first.checked_add(i)))
                    .rev()
                    .collect()
            })
            .unwrap_or_default();
        *inner.uids.lock().unwrap_or_else(PoisonError::into_inner) = uids;
        // Set once, by the one probe.
        let _ = inner.layers.set(layers);
    }

    /// The sandbox's state, once the probe at start has finished.
    pub async fn status(&self) -> Status {
        let layers = self.inner.layers.wait().await;
        self.status_of(Some(layers))
    }

    /// The sandbox's state now, without waiting: while the probe at start runs, not ready, and
    /// the reason says so.
    pub fn status_now(&self) -> Status {
        self.status_of(self.inner.layers.get())
    }

    fn status_of(&self, layers: Option<&Layers>) -> Status {
        let inner = &self.inner;
        let (ready, reason) = match (inner.settings.mode, layers) {
            (_, None) => (false, Some("the sandbox is still being checked".into())),
            (SandboxMode::Strict, Some(layers)) => match layers.missing() {
                None => (true, None),
                Some(why) => (false, Some(why)),
            },
            (SandboxMode::Degraded, Some(layers)) => (true, layers.missing()),
            (SandboxMode::Off, Some(_)) => (
                true,
                Some("sandbox.mode = off: commands run unconfined".into()),
            ),
        };
        Status {
            mode: inner.settings.mode,
            ready,
            reason,
            layers: layers.cloned().unwrap_or_default(),
            running: inner.global_slots - inner.global.available_permits(),
            waiting: inner.waiting.load(Ordering::Relaxed),
        }
    }

    /// Runs `command` with `sh -c` in a scratch copy of `skill_dir` for `user`, within the
    /// limits; `skill_dir` itself is only read.
    pub async fn run(
        &self,
        user: Uuid,
        skill_dir: &Path,
        command: &str,
    ) -> Result<Outcome, Refusal> {
        let result = self.run_counted(user, skill_dir, command).await;
        let outcome = match &result {
            Ok(o) if o.timed_out => "timed_out",
            Ok(o) if o.truncated => "truncated",
            Ok(o) if o.killed_at_shutdown => "killed",
            Ok(o) if o.exit_code == Some(0) => "ok",
            Ok(_) => "failed",
            Err(Refusal::Busy) => "busy",
            Err(Refusal::Unavailable(_) | Refusal::ShuttingDown) => "refused",
            Err(Refusal::Failed(_)) => "error",
        };
        self.inner.metrics.sandbox_run(outcome);
        result
    }

    async fn run_counted(
        &self,
        user: Uuid,
        skill_dir: &Path,
        command: &str,
    ) -> Result<Outcome, Refusal> {
        let inner = &self.inner;
        let status = self.status().await;
        if !status.ready {
            return Err(Refusal::Unavailable(status.reason.unwrap_or_default()));
        }
        if *inner.shutdown.borrow() {
            return Err(Refusal::ShuttingDown);
        }
        let user_slots = {
            let mut map = inner
                .per_user
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                map.entry(user)
                    .or_insert_with(|| Arc::new(Semaphore::new(inner.settings.per_user))),
            )
        };
        // Slots at once when free; otherwise a place in the bounded queue, or "busy" at once.
        let permits = match (
            Arc::clone(&user_slots).try_acquire_owned(),
            Arc::clone(&inner.global).try_acquire_owned(),
        ) {
            (Ok(user_permit), Ok(global_permit)) => (user_permit, global_permit),
            (user_permit, global_permit) => {
                let queued = inner.waiting.fetch_add(1, Ordering::AcqRel);
                let _leave = Waiting(&inner.waiting);
                if queued >= inner.settings.queue {
                    return Err(Refusal::Busy);
                }
                let mut shutdown = inner.shutdown.subscribe();
                let acquire = async {
                    let user_permit = match user_permit {
                        Ok(p) => p,
                        Err(_) => Arc::clone(&user_slots).acquire_owned().await.ok()?,
                    };
                    let global_permit = match global_permit {
                        Ok(p) => p,
                        Err(_) => Arc::clone(&inner.global).acquire_owned().await.ok()?,
                    };
                    Some((user_permit, global_permit))
                };
                tokio::select! {
                    permits = acquire => permits.ok_or(Refusal::ShuttingDown)?,
                    _ = shutdown.wait_for(|stop| *stop) => return Err(Refusal::ShuttingDown),
                }
            }
        };
        // A user id of its own: the process limit counts per user id, so one command's fork bomb
        // cannot keep another from starting. There are as many ids as global slots.
        let layers = inner.layers.wait().await;
        let uid = layers.run_as_uid.and_then(|_| {
            inner
                .uids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
        });
        if layers.run_as_uid.is_some() && uid.is_none() {
            return Err(Refusal::Busy);
        }
        let lent = uid.map(|uid| LentUid(&inner.uids, uid));
        let mut shutdown = inner.shutdown.subscribe();
        let outcome = run::run(
            &inner.settings,
            layers,
            uid,
            skill_dir,
            command,
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            },
        )
        .await;
        // The id goes back before the slot, so whoever gets the slot finds an id.
        drop(lent);
        drop(permits);
        drop(user_slots);
        self.forget_idle_user(user);
        outcome.map_err(Refusal::Failed)
    }

    /// Drops a user's slot counter when nobody is using it, so the map does not grow forever.
    fn forget_idle_user(&self, user: Uuid) {
        let mut map = self
            .inner
            .per_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.get(&user).is_some_and(|s| {
            Arc::strong_count(s) == 1 && s.available_permits() == self.inner.settings.per_user
        }) {
            map.remove(&user);
        }
    }

    /// Kills every running command and refuses new ones.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.global.close();
    }

    /// The time limit of one command.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.inner.settings.timeout_secs)
    }

    pub fn mode(&self) -> SandboxMode {
        self.inner.settings.mode
    }
}

/// Gives a user id back to the pool when dropped.
struct LentUid<'a>(&'a Mutex<Vec<u32>>, u32);

impl Drop for LentUid<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.1);
    }
}

/// Leaves the queue when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
