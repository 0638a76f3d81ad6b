//! The workspace supervisor: user → skill-workspace actor.
//!
//! [`Workspaces`] is the handle the rest of the service uses. Looking up a user's workspace reads
//! an `ArcSwap`ed map and takes no lock; the first request for a user starts their actor (loading
//! the index from the database and the disk), and a per-user `OnceCell` makes sure concurrent
//! first requests start exactly one. Actors are linked to the [`WorkspaceSupervisor`] actor:
//! when one stops (idle) or fails (a panic in a handler), the supervisor drops it from the map,
//! and the next request for that user starts a fresh one from the database and the disk, which
//! are consistent after every step (see [`super::workspace`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::workspace::{
    IfMatch, IndexedSkill, Repair, Shared, SkillIndex, SourcedOutcome, SourcedSkill, UploadPayload,
    UploadTarget, Uploaded, WorkspaceActor, WorkspaceArgs, WorkspaceMessage, load_index,
};
use crate::config::SkillSettings;
use crate::domain::SkillName;
use crate::error::AppError;
use crate::skills::Cancel;
use crate::storage::BlobStore;
use crate::store::Store;

/// How long a change to a user's skills may take (an upload unpacks, hashes and syncs files).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A running workspace: its actor and the index it publishes.
#[derive(Clone)]
struct Workspace {
    actor: ActorRef<WorkspaceMessage>,
    shared: Arc<Shared>,
}

impl Workspace {
    /// Starting or running: messages sent now will be handled.
    fn is_alive(&self) -> bool {
        ractor::ACTIVE_STATES.contains(&self.actor.get_status())
    }
}

/// One user's entry; the cell is filled by whichever request starts the actor.
#[derive(Default)]
struct Slot {
    workspace: OnceCell<Workspace>,
}

type SlotMap = HashMap<Uuid, Arc<Slot>>;

/// The handle: cheap to clone.
#[derive(Clone)]
pub struct Workspaces {
    inner: Arc<Inner>,
}

struct Inner {
    slots: ArcSwap<SlotMap>,
    /// Serializes changes to `slots` (never held across an await).
    writers: Mutex<()>,
    supervisor: ActorRef<SupervisorMessage>,
    store: Store,
    blobs: BlobStore,
    skills_root: PathBuf,
    settings: SkillSettings,
    repair: Repair,
    /// Told of every change to a user's skills (open MCP sessions are notified).
    listener: Arc<OnceLock<ChangeListener>>,
}

/// What [`Workspaces::ready_dir`] gives: the folder at once when it is there, else a boxed future
/// that makes it first (so that the futures of file reads stay small).
pub type ReadyDir<'a> = futures_util::future::Either<
    std::future::Ready<PathBuf>,
    std::pin::Pin<Box<dyn std::future::Future<Output = PathBuf> + Send + 'a>>,
>;

/// Called with the user whose skills just changed.
pub type ChangeListener = Arc<dyn Fn(Uuid) + Send + Sync>;

impl std::fmt::Debug for Workspaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspaces")
            .field("live", &self.live_count())
            .finish_non_exhaustive()
    }
}

impl Workspaces {
    /// Starts the supervisor of the serving process, which owns the skill folders. `skills_root`
    /// is `<data_dir>/skills`.
    pub async fn start(
        store: Store,
        blobs: BlobStore,
        skills_root: PathBuf,
        settings: SkillSettings,
    ) -> Result<Workspaces, String> {
        Self::start_with(store, blobs, skills_root, settings, Repair::Yes).await
    }

    /// Starts a supervisor for a process that only reads beside a running server (`stdio
    /// --token`): loading a workspace repairs nothing.
    pub async fn start_reader(
        store: Store,
        blobs: BlobStore,
        skills_root: PathBuf,
        settings: SkillSettings,
    ) -> Result<Workspaces, String> {
        Self::start_with(store, blobs, skills_root, settings, Repair::No).await
    }

    async fn start_with(
        store: Store,
        blobs: BlobStore,
        skills_root: PathBuf,
        settings: SkillSettings,
        repair: Repair,
    ) -> Result<Workspaces, String> {
        let (supervisor, _) = Actor::spawn(None, WorkspaceSupervisor, ())
            .await
            .map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner {
            slots: ArcSwap::from_pointee(SlotMap::new()),
            writers: Mutex::new(()),
            supervisor,
            store,
            blobs,
            skills_root,
            settings,
            repair,
            listener: Arc::new(OnceLock::new()),
        });
        // The supervisor holds the map weakly: it must not keep a shut-down service alive.
        inner
            .supervisor
            .cast(SupervisorMessage::Attach(Arc::downgrade(&inner)))
            .map_err(|e| e.to_string())?;
        Ok(Workspaces { inner })
    }

    /// Sets what is told of every change to a user's skills (once; later calls are ignored).
    pub fn on_change(&self, listener: ChangeListener) {
        if self.inner.listener.set(listener).is_err() {
            tracing::warn!("a second skill-change listener was ignored");
        }
    }

    /// The folder of a skill: `<data_dir>/skills/<user_id>/<name>`.
    /// `<data_dir>/skills`.
    pub fn skills_root(&self) -> &std::path::Path {
        &self.inner.skills_root
    }

    pub fn skill_dir(&self, skill: &crate::store::SkillRecord) -> PathBuf {
        self.inner
            .skills_root
            .join(skill.user_id.to_string())
            .join(&skill.name)
    }

    /// [`Workspaces::skill_dir`], made again from the blobs first if it is missing (this
    /// replica's copies are a cache: wiped or evicted, they come back on the next read). One
    /// `stat` when it is there. A folder that cannot be made is left to the read, which then
    /// fails as for a missing file.
    pub fn ready_dir(&self, skill: &crate::store::SkillRecord) -> ReadyDir<'_> {
        let dir = self.skill_dir(skill);
        if std::fs::symlink_metadata(&dir).is_ok() {
            return futures_util::future::Either::Left(std::future::ready(dir));
        }
        // Boxed: the rare path's future is large, and every file read's would carry it.
        let user_id = skill.user_id;
        futures_util::future::Either::Right(Box::pin(async move {
            let made = self
                .call(user_id, |reply| WorkspaceMessage::Rematerialize { reply })
                .await;
            if let Err(e) = made {
                tracing::warn!(%user_id, error = %e, "could not make a skill's folder again");
            }
            dir
        }))
    }

    /// Workspace actors alive now.
    pub fn live_count(&self) -> usize {
        self.inner
            .slots
            .load()
            .values()
            // Starting counts: an actor that has just been spawned may not say Running yet.
            .filter(|s| s.workspace.get().is_some_and(Workspace::is_alive))
            .count()
    }

    /// The user's skills as they are now. Starts the workspace if it is not running.
    pub async fn index(&self, user_id: Uuid) -> Result<Arc<SkillIndex>, AppError> {
        let workspace = self.workspace(user_id).await?;
        workspace.shared.touch();
        Ok(workspace.shared.index.load_full())
    }

    pub async fn create(
        &self,
        user_id: Uuid,
        name: SkillName,
        description: String,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        let cancel = Cancel::default();
        let guard = cancel.on_drop();
        let created = self
            .call(user_id, |reply| WorkspaceMessage::Create {
                name: name.clone(),
                description: description.clone(),
                cancel: cancel.clone(),
                reply,
            })
            .await;
        guard.disarm();
        created
    }

    pub async fn update(
        &self,
        user_id: Uuid,
        id: Uuid,
        description: Option<String>,
        is_active: Option<bool>,
        if_match: Option<IfMatch>,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        let cancel = Cancel::default();
        let guard = cancel.on_drop();
        let updated = self
            .call(user_id, |reply| WorkspaceMessage::Update {
                id,
                description: description.clone(),
                is_active,
                if_match: if_match.clone(),
                cancel: cancel.clone(),
                reply,
            })
            .await;
        guard.disarm();
        updated
    }

    /// Makes the skill's version `version` its current content again, as a new version.
    pub async fn restore(
        &self,
        user_id: Uuid,
        id: Uuid,
        version: i64,
        if_match: Option<IfMatch>,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        let cancel = Cancel::default();
        let guard = cancel.on_drop();
        let restored = self
            .call(user_id, |reply| WorkspaceMessage::Restore {
                id,
                version,
                if_match: if_match.clone(),
                cancel: cancel.clone(),
                reply,
            })
            .await;
        guard.disarm();
        restored
    }

    /// The versions of the user's skill `id` that are kept, newest first (none: no such skill).
    pub async fn versions(
        &self,
        user_id: Uuid,
        id: Uuid,
    ) -> Result<Vec<crate::store::VersionRecord>, AppError> {
        Ok(self.inner.store.versions(user_id, id).await?)
    }

    /// One kept version of the user's skill `id`, with its files by path.
    pub async fn version(
        &self,
        user_id: Uuid,
        id: Uuid,
        version: i64,
    ) -> Result<(crate::store::VersionRecord, Vec<crate::store::VersionFile>), AppError> {
        self.inner
            .store
            .version(user_id, id, version)
            .await?
            .ok_or(AppError::NotFound("version"))
    }

    /// The bytes of one of the user's blobs. A blob collected a moment ago (its version was
    /// pruned meanwhile) is 404, like its version.
    /// The blob store (for readiness checks).
    pub fn blob_store(&self) -> &BlobStore {
        &self.inner.blobs
    }

    pub async fn blob(&self, user_id: Uuid, sha256: &str) -> Result<bytes::Bytes, AppError> {
        match self.inner.blobs.get(user_id, sha256).await {
            Ok(bytes) => Ok(bytes),
            Err(crate::storage::BlobError::Missing(_)) => Err(AppError::NotFound("version")),
            Err(e) => Err(crate::actors::workspace::blob_error(e)),
        }
    }

    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<(), AppError> {
        self.call(user_id, |reply| WorkspaceMessage::Delete { id, reply })
            .await
    }

    pub async fn upload(
        &self,
        user_id: Uuid,
        target: UploadTarget,
        payload: UploadPayload,
    ) -> Result<Uploaded, AppError> {
        // Dropped with this future when the client goes away or the request times out: the
        // workspace then stops the upload at its next step.
        let cancel = Cancel::default();
        let guard = cancel.on_drop();
        let uploaded = self
            .call(user_id, |reply| WorkspaceMessage::Upload {
                target: target.clone(),
                payload: payload.clone(),
                cancel: cancel.clone(),
                reply,
            })
            .await;
        guard.disarm();
        uploaded
    }

    /// Makes or changes skills fetched from a repository, with their sources (see
    /// `WorkspaceActor::sourced`): all or nothing.
    pub async fn sourced(
        &self,
        user_id: Uuid,
        skills: Vec<SourcedSkill>,
        force: bool,
    ) -> Result<Vec<SourcedOutcome>, AppError> {
        let cancel = Cancel::default();
        let guard = cancel.on_drop();
        let done = self
            .call(user_id, |reply| WorkspaceMessage::Sourced {
                skills: skills.clone(),
                force,
                cancel: cancel.clone(),
                reply,
            })
            .await;
        guard.disarm();
        done
    }

    /// Stops the user's workspace and removes their folder (their account was deleted). The actor
    /// is stopped and waited for first, so no change of theirs can be writing meanwhile.
    pub async fn remove_user(&self, user_id: Uuid) -> Result<(), AppError> {
        self.stop_workspace(user_id, "account deleted").await;
        let folder = self.inner.skills_root.join(user_id.to_string());
        tokio::task::spawn_blocking(move || crate::skills::files::remove_skill_dir(&folder))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::internal)?;
        // Their blob rows went with the account; their bytes go now.
        self.inner
            .blobs
            .remove_user(user_id)
            .await
            .map_err(crate::actors::workspace::blob_error)
    }

    /// Stops the user's workspace, if one runs, and forgets it: the next request starts a fresh
    /// one from the database and the disk.
    async fn stop_workspace(&self, user_id: Uuid, why: &str) {
        let slot = self.inner.slots.load().get(&user_id).cloned();
        if let Some(workspace) = slot.as_ref().and_then(|s| s.workspace.get())
            && let Err(e) = workspace
                .actor
                .stop_and_wait(Some(why.to_owned()), Some(CALL_TIMEOUT))
                .await
        {
            tracing::warn!(%user_id, error = %e, "workspace did not stop in time");
        }
        self.inner.remove_slot(user_id, slot.as_ref());
    }

    /// A digest of the user's skills as another process sees them: their rows (id, name,
    /// description, flag, time of the last change) and the modification times of their folders
    /// (see [`crate::skills::files::modification_times`]). Two equal stamps, no change in between
    /// that the stamp can see. For a process that only reads beside a running server (`stdio
    /// --token`): the server's own changes reach it through [`Workspaces::on_change`] instead.
    pub async fn stamp(&self, user_id: Uuid) -> Result<[u8; 32], AppError> {
        let rows = self.inner.store.skills_of_user(user_id).await?;
        let root = self.inner.skills_root.join(user_id.to_string());
        let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
        let times = tokio::task::spawn_blocking(move || {
            crate::skills::files::modification_times(&root, &names)
        })
        .await
        .map_err(AppError::internal)?;
        let mut digest = blake3::Hasher::new();
        for row in &rows {
            digest.update(row.id.as_bytes());
            for text in [&row.name, &row.description] {
                digest.update(&(text.len() as u64).to_le_bytes());
                digest.update(text.as_bytes());
            }
            digest.update(&[u8::from(row.is_active)]);
            digest.update(&row.version.to_le_bytes());
            digest.update(&row.updated_at.unix_timestamp_nanos().to_le_bytes());
        }
        for time in times {
            let nanos = time
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(u128::MAX, |d| d.as_nanos());
            digest.update(&nanos.to_le_bytes());
        }
        Ok(*digest.finalize().as_bytes())
    }

    /// Another replica changed the user's skills, which are now at `version`: a workspace
    /// running here reloads them (unless it is there already); one not running will load them
    /// fresh when first used. Never waits.
    pub fn announced(&self, user_id: Uuid, version: i64) {
        self.reload_where(user_id, Some(version));
    }

    /// Checks every running workspace against the database's skills versions and reloads those
    /// behind (after the announcements may have been missed: the listening connection was made
    /// again, or the periodic backstop); forgets those whose account is gone.
    pub async fn resync(&self) -> Result<(), AppError> {
        let users: Vec<Uuid> = self
            .inner
            .slots
            .load()
            .iter()
            .filter(|(_, slot)| slot.workspace.get().is_some_and(Workspace::is_alive))
            .map(|(user, _)| *user)
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        let versions: HashMap<Uuid, i64> = self
            .inner
            .store
            .skills_versions(&users)
            .await?
            .into_iter()
            .collect();
        for user in users {
            match versions.get(&user) {
                Some(version) => self.reload_where(user, Some(*version)),
                None => self.forget_user(user).await?,
            }
        }
        Ok(())
    }

    fn reload_where(&self, user_id: Uuid, version: Option<i64>) {
        if let Some(workspace) = self
            .inner
            .slots
            .load()
            .get(&user_id)
            .and_then(|slot| slot.workspace.get())
            && workspace.is_alive()
            && let Err(e) = workspace.actor.cast(WorkspaceMessage::Reload { version })
        {
            tracing::debug!(%user_id, error = %e, "a stopping workspace was not told to reload");
        }
    }

    /// Another replica deleted the user's account: stops their workspace here and removes their
    /// folder of this replica's copies (the blobs are the deleting replica's to remove).
    pub async fn forget_user(&self, user_id: Uuid) -> Result<(), AppError> {
        self.stop_workspace(user_id, "account deleted elsewhere")
            .await;
        let folder = self.inner.skills_root.join(user_id.to_string());
        tokio::task::spawn_blocking(move || crate::skills::files::remove_skill_dir(&folder))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::internal)
    }

    /// Keeps this replica's copies of users' skills (`<data_dir>/skills/<user>/`) under `limit`
    /// bytes (`storage.cache_bytes`): the copies of the users whose skills were used least
    /// recently go first, each after its workspace stopped (so no change is writing it); a read
    /// that comes later makes what it needs again from the blobs ([`Workspaces::ready_dir`]),
    /// and a workspace that starts again makes its folders. Returns how many users' copies went.
    pub async fn evict(&self, limit: u64) -> Result<usize, AppError> {
        let root = self.inner.skills_root.clone();
        let mut folders: Vec<(Uuid, u64, i64)> = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                let Some(user) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Uuid::parse_str(n).ok())
                else {
                    continue;
                };
                let (bytes, modified) = crate::skills::files::folder_usage(&entry.path());
                let seconds = modified
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                found.push((user, bytes, seconds));
            }
            found
        })
        .await
        .map_err(AppError::internal)?;
        let mut total: u64 = folders.iter().map(|(_, bytes, _)| *bytes).sum();
        if total <= limit {
            return Ok(0);
        }
        // A running workspace's last use is what counts; else the folder's last write.
        let slots = self.inner.slots.load();
        for (user, _, used) in &mut folders {
            if let Some(workspace) = slots.get(user).and_then(|slot| slot.workspace.get()) {
                *used = (*used).max(workspace.shared.last_used.load(Ordering::Relaxed));
            }
        }
        drop(slots);
        folders.sort_by_key(|(_, _, used)| *used);
        let mut evicted = 0;
        for (user, bytes, _) in folders {
            if total <= limit {
                break;
            }
            self.stop_workspace(user, "its skills' copies were evicted from the cache")
                .await;
            let folder = self.inner.skills_root.join(user.to_string());
            tokio::task::spawn_blocking(move || crate::skills::files::remove_skill_dir(&folder))
                .await
                .map_err(AppError::internal)?
                .map_err(AppError::from_io)?;
            total = total.saturating_sub(bytes);
            evicted += 1;
        }
        Ok(evicted)
    }

    /// Forgets the user's loaded skills, so that the next read loads them afresh: for a process
    /// that only reads beside a running server (`stdio --token`) and has seen, by
    /// [`Workspaces::stamp`], that the server changed them.
    pub async fn reload(&self, user_id: Uuid) {
        self.stop_workspace(user_id, "reloaded").await;
    }

    /// Sends a change to the user's actor. A message that could not be delivered (the actor
    /// stopped for being idle a moment ago) is sent again to a fresh actor; the change itself is
    /// never run twice.
    async fn call<T: Send + 'static>(
        &self,
        user_id: Uuid,
        build: impl Fn(RpcReplyPort<Result<T, AppError>>) -> WorkspaceMessage,
    ) -> Result<T, AppError> {
        for _ in 0..3 {
            let workspace = self.workspace(user_id).await?;
            workspace.shared.touch();
            match workspace.actor.call(&build, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(result)) => return result,
                Ok(CallResult::Timeout) => return Err(AppError::Timeout("skill workspace")),
                // The actor dropped the request while handling it: it failed (the supervisor has
                // logged why); the change may be half done on disk, which the next load repairs.
                Ok(CallResult::SenderError) => {
                    return Err(AppError::internal(
                        "the skill workspace stopped while handling the request",
                    ));
                }
                Err(_) => self.inner.remove_slot_of(user_id, &workspace),
            }
        }
        Err(AppError::Timeout("skill workspace"))
    }

    /// The user's running workspace, started if need be.
    async fn workspace(&self, user_id: Uuid) -> Result<Workspace, AppError> {
        // The hot path: a live workspace, found without awaiting anything.
        if let Some(workspace) = self.inner.slot(user_id).workspace.get()
            && workspace.is_alive()
        {
            return Ok(workspace.clone());
        }
        // Boxed: starting a workspace (an actor, a database read) makes a future kilobytes large,
        // and every MCP request's future would carry it (see `http::router::dispatch`).
        Box::pin(self.start_workspace(user_id)).await
    }

    async fn start_workspace(&self, user_id: Uuid) -> Result<Workspace, AppError> {
        for _ in 0..3 {
            let slot = self.inner.slot(user_id);
            let workspace = slot
                .workspace
                .get_or_try_init(|| self.inner.spawn(user_id))
                .await?
                .clone();
            if workspace.is_alive() {
                return Ok(workspace);
            }
            // Stopped but not yet dropped by the supervisor.
            self.inner.remove_slot_of(user_id, &workspace);
        }
        Err(AppError::Timeout("skill workspace"))
    }

    /// Makes the workspace's handler panic, for the supervision test.
    #[cfg(test)]
    async fn crash(&self, user_id: Uuid) -> Result<(), AppError> {
        let workspace = self.workspace(user_id).await?;
        workspace
            .actor
            .cast(WorkspaceMessage::Panic)
            .map_err(|e| AppError::internal(e.to_string()))
    }
}

impl Inner {
    fn slot(&self, user_id: Uuid) -> Arc<Slot> {
        if let Some(slot) = self.slots.load().get(&user_id) {
            return Arc::clone(slot);
        }
        let _guard = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.slots.load_full();
        if let Some(slot) = current.get(&user_id) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(Slot::default());
        let mut next = (*current).clone();
        next.insert(user_id, Arc::clone(&slot));
        self.slots.store(Arc::new(next));
        slot
    }

    /// Drops the user's slot if it still holds `workspace`.
    fn remove_slot_of(&self, user_id: Uuid, workspace: &Workspace) {
        let slot = self.slots.load().get(&user_id).cloned();
        let same = slot
            .as_ref()
            .and_then(|s| s.workspace.get())
            .is_some_and(|w| w.actor.get_id() == workspace.actor.get_id());
        if same {
            self.remove_slot(user_id, slot.as_ref());
        }
    }

    /// Drops the user's slot if it is still `expected`.
    fn remove_slot(&self, user_id: Uuid, expected: Option<&Arc<Slot>>) {
        let Some(expected) = expected else { return };
        let _guard = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.slots.load_full();
        if current
            .get(&user_id)
            .is_some_and(|s| Arc::ptr_eq(s, expected))
        {
            let mut next = (*current).clone();
            next.remove(&user_id);
            self.slots.store(Arc::new(next));
        }
    }

    /// Drops the slot whose actor is `actor` (called by the supervisor).
    fn remove_actor(&self, actor: &ActorCell) -> Option<Uuid> {
        let found = self.slots.load().iter().find_map(|(user, slot)| {
            slot.workspace
                .get()
                .filter(|w| w.actor.get_id() == actor.get_id())
                .map(|_| (*user, Arc::clone(slot)))
        });
        let (user, slot) = found?;
        self.remove_slot(user, Some(&slot));
        Some(user)
    }

    async fn spawn(&self, user_id: Uuid) -> Result<Workspace, AppError> {
        // The version first: a change committed while the index loads makes the workspace's first
        // compare-and-set fail and reload, so the index is never taken for newer than it is.
        let version = self.store.skills_version(user_id).await?.unwrap_or(0);
        let index = load_index(
            &self.store,
            &self.blobs,
            user_id,
            &self.skills_root,
            &self.settings,
            self.repair,
        )
        .await?;
        let shared = Arc::new(Shared {
            index: ArcSwap::from_pointee(index),
            last_used: AtomicI64::new(0),
        });
        shared.touch();
        crate::actors::workspace::prepare_search_soon(shared.index.load_full());
        let args = WorkspaceArgs {
            user_id,
            store: self.store.clone(),
            blobs: self.blobs.clone(),
            skills_root: self.skills_root.clone(),
            settings: self.settings.clone(),
            shared: Arc::clone(&shared),
            listener: Arc::clone(&self.listener),
            repair: self.repair,
            version,
        };
        let (actor, _) =
            Actor::spawn_linked(None, WorkspaceActor, args, self.supervisor.get_cell())
                .await
                .map_err(|e| AppError::internal(e.to_string()))?;
        tracing::debug!(%user_id, "workspace started");
        Ok(Workspace { actor, shared })
    }
}

/// Watches the workspace actors and forgets those that stop or fail.
struct WorkspaceSupervisor;

enum SupervisorMessage {
    Attach(std::sync::Weak<Inner>),
}

struct SupervisorState {
    inner: Option<std::sync::Weak<Inner>>,
}

impl Actor for WorkspaceSupervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState { inner: None })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: SupervisorMessage,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Attach(inner) => state.inner = Some(inner),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(inner) = state.inner.as_ref().and_then(std::sync::Weak::upgrade) else {
            return Ok(());
        };
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(user_id) = inner.remove_actor(&cell) {
                    tracing::debug!(%user_id, reason = reason.as_deref().unwrap_or(""), "workspace stopped");
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let user_id = inner.remove_actor(&cell);
                tracing::error!(user_id = ?user_id, error = %error, "a workspace actor failed; it is started afresh on the next request");
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseSettings;
    use crate::store::NewUser;

    async fn setup() -> (tempfile::TempDir, Store, Workspaces) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&DatabaseSettings::default(), dir.path())
            .await
            .unwrap();
        let workspaces = Workspaces::start(
            store.clone(),
            BlobStore::local(&dir.path().join("blobs")).unwrap(),
            dir.path().join("skills"),
            SkillSettings::default(),
        )
        .await
        .unwrap();
        (dir, store, workspaces)
    }

    async fn user(store: &Store, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        store
            .insert_user(&NewUser {
                id,
                email: format!("{name}@example.com"),
                username: name.to_owned(),
                password_hash: "$scrypt$x".to_owned(),
                created_at: crate::store::now(),
            })
            .await
            .unwrap();
        id
    }

    fn name(s: &str) -> SkillName {
        SkillName::parse(s).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_start_one_actor() {
        let (_dir, store, workspaces) = setup().await;
        let ann = user(&store, "ann").await;
        let mut firsts = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let workspaces = workspaces.clone();
            firsts.spawn(async move { workspaces.workspace(ann).await.unwrap().actor.get_id() });
        }
        let ids = firsts.join_all().await;
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "more than one actor for one user"
        );
        assert_eq!(workspaces.live_count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_workspace_is_replaced_and_loses_nothing() {
        let (_dir, store, workspaces) = setup().await;
        let ann = user(&store, "ann").await;
        let bob = user(&store, "bob").await;
        let pdf = workspaces
            .create(ann, name("pdf"), "PDF.".into())
            .await
            .unwrap();
        workspaces
            .create(bob, name("notes"), "Notes.".into())
            .await
            .unwrap();
        let bob_actor = workspaces.workspace(bob).await.unwrap().actor.get_id();
        let crashed = workspaces.workspace(ann).await.unwrap().actor.get_id();

        workspaces.crash(ann).await.unwrap();
        let mut dropped = false;
        for _ in 0..100 {
            if workspaces.live_count() == 1 {
                dropped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(dropped, "the supervisor did not drop the failed actor");

        // The next request starts a fresh actor with everything the old one had written.
        let index = workspaces.index(ann).await.unwrap();
        assert!(index.get(pdf.record.id).is_some());
        assert_ne!(
            workspaces.workspace(ann).await.unwrap().actor.get_id(),
            crashed
        );
        workspaces
            .create(ann, name("docx"), "Word.".into())
            .await
            .unwrap();
        assert_eq!(workspaces.index(ann).await.unwrap().len(), 2);
        // Another user's workspace never noticed.
        assert_eq!(
            workspaces.workspace(bob).await.unwrap().actor.get_id(),
            bob_actor
        );
        assert_eq!(workspaces.index(bob).await.unwrap().len(), 1);
        assert_eq!(workspaces.live_count(), 2);
    }

    /// A process that only reads (`stdio --token`) notices the server's changes by their stamp,
    /// and serves them once it reloads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_notices_the_servers_changes_by_their_stamp() {
        let (dir, store, server) = setup().await;
        let ann = user(&store, "ann").await;
        let reader = Workspaces::start_reader(
            store.clone(),
            BlobStore::local(&dir.path().join("blobs")).unwrap(),
            dir.path().join("skills"),
            SkillSettings::default(),
        )
        .await
        .unwrap();
        let empty = reader.stamp(ann).await.unwrap();
        assert_eq!(reader.index(ann).await.unwrap().len(), 0);
        let pdf = server
            .create(ann, name("pdf"), "PDF.".into())
            .await
            .unwrap();
        let created = reader.stamp(ann).await.unwrap();
        assert_ne!(created, empty);
        assert_eq!(reader.stamp(ann).await.unwrap(), created, "nothing changed");
        assert_eq!(
            reader.index(ann).await.unwrap().len(),
            0,
            "the loaded index is kept until it is reloaded"
        );
        reader.reload(ann).await;
        assert_eq!(reader.index(ann).await.unwrap().len(), 1);
        server
            .update(
                ann,
                pdf.record.id,
                Some("Portable documents.".into()),
                None,
                None,
            )
            .await
            .unwrap();
        assert_ne!(reader.stamp(ann).await.unwrap(), created);
        // Another user's change is not this user's.
        let bob = user(&store, "bob").await;
        let ann_now = reader.stamp(ann).await.unwrap();
        server
            .create(bob, name("notes"), "Notes.".into())
            .await
            .unwrap();
        assert_eq!(reader.stamp(ann).await.unwrap(), ann_now);
    }

    /// A zip of `count` files of `size` bytes each, with a SKILL.md for `skill`.
    fn big_zip(skill: &str, count: usize, size: usize) -> bytes::Bytes {
        use std::io::Write as _;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("SKILL.md", options).unwrap();
        write!(zip, "---\nname: {skill}\ndescription: Big.\n---\n").unwrap();
        for i in 0..count {
            zip.start_file(format!("data/{i}.txt"), options).unwrap();
            zip.write_all(&vec![b'x'; size]).unwrap();
        }
        bytes::Bytes::from(zip.finish().unwrap().into_inner())
    }

    /// Work whose caller has gone (its client disconnected, its request timed out) stops: a
    /// change already given up is not started, and one given up half way is not finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_whose_caller_left_are_not_made() {
        let (_dir, store, workspaces) = setup().await;
        let ann = user(&store, "ann").await;
        let cancel = Cancel::default();
        drop(cancel.on_drop());
        let given_up = workspaces
            .call(ann, |reply| WorkspaceMessage::Upload {
                target: UploadTarget::default(),
                payload: UploadPayload::Zip(big_zip("early", 1, 10)),
                cancel: cancel.clone(),
                reply,
            })
            .await;
        assert!(
            matches!(given_up, Err(AppError::Timeout(_))),
            "{given_up:?}"
        );

        // The caller's future dropped while the workspace unpacks and writes 500 files.
        let payload = UploadPayload::Zip(big_zip("late", 500, 20_000));
        let upload = workspaces.upload(ann, UploadTarget::default(), payload);
        assert!(
            tokio::time::timeout(Duration::from_millis(1), upload)
                .await
                .is_err(),
            "the upload finished within a millisecond"
        );
        // Whatever the workspace was doing, it finishes (or stops) before the next message.
        workspaces
            .create(ann, name("after"), "After.".into())
            .await
            .unwrap();
        let index = workspaces.index(ann).await.unwrap();
        assert!(index.by_name("early").is_none());
        assert!(
            index.by_name("late").is_none(),
            "the given-up upload was made"
        );
        assert_eq!(index.len(), 1);
    }
}
