//! A user's skill workspace: the one writer of `<data_dir>/skills/<user_id>/`, and the in-memory
//! index of that user's skills.
//!
//! Every change to a user's skills (create, update, delete, upload) is a message to this actor, so
//! they happen one at a time and in order. Reads never go through the mailbox: the actor publishes
//! an immutable [`SkillIndex`] through an `ArcSwap` after every change, and readers take the current
//! one, which is always a whole, consistent state.
//!
//! Each change follows the same order so that the database row and the folder never disagree:
//! the new content is written to a staging folder first (validated there: `SKILL.md`, limits), then
//! the row is written, then the staged folder is swapped into place atomically. A failure before
//! the swap leaves nothing behind; a crash between row and swap is repaired when the workspace is
//! next loaded ([`load_index`]): the folder is the truth for what exists, rows without a folder are
//! deleted, folders without a row are removed, and descriptions follow `SKILL.md`.
//!
//! File-system work runs on the blocking pool; the handler awaits it, which holds up only this
//! user's mailbox.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

use super::reply;
use crate::config::SkillSettings;
use crate::domain::{SkillName, SkillPath};
use crate::error::AppError;
use crate::skills::files::{self, FileEntry, Limits, UploadError};
use crate::skills::manifest::{self, Manifest};
use crate::skills::zip_upload;
use crate::store::{self, NewSkill, SkillRecord, Store, StoreError, UniqueField};

/// The file every skill has at its root.
pub const SKILL_MD: &str = "SKILL.md";

/// One skill as the index holds it.
#[derive(Debug, Clone)]
pub struct IndexedSkill {
    pub record: SkillRecord,
    /// Regular files, sorted by path.
    pub files: Vec<FileEntry>,
    /// The sum of the files' sizes.
    pub bytes: u64,
    /// The text of `SKILL.md`, if it is UTF-8.
    pub skill_md: Option<Arc<str>>,
    /// The parsed front matter; `None` if `SKILL.md` no longer parses (a script may rewrite it).
    pub manifest: Option<Manifest>,
    /// `load_skill`'s result for `skill_md`, serialized at the first call (it depends on that
    /// text alone, which never changes in a published entry).
    pub load_skill_result: std::sync::OnceLock<Arc<str>>,
}

/// A consistent view of one user's skills.
#[derive(Debug, Default)]
pub struct SkillIndex {
    by_name: BTreeMap<String, Arc<IndexedSkill>>,
    by_id: HashMap<Uuid, Arc<IndexedSkill>>,
    bytes: u64,
    /// The `load_skill_metadata` text of this view, made at its first call: an index is never
    /// changed once published (a change publishes a new one), so the text stays true.
    listing: std::sync::OnceLock<Arc<str>>,
    /// `load_skill_metadata`'s result, serialized at its first call, for the same reason.
    listing_result: std::sync::OnceLock<Arc<str>>,
}

impl SkillIndex {
    pub(crate) fn from_skills(skills: impl IntoIterator<Item = IndexedSkill>) -> SkillIndex {
        let mut index = SkillIndex::default();
        for skill in skills {
            index.insert(Arc::new(skill));
        }
        index
    }

    fn insert(&mut self, skill: Arc<IndexedSkill>) {
        if let Some(old) = self.by_id.remove(&skill.record.id) {
            self.by_name.remove(&old.record.name);
            self.bytes -= old.bytes;
        }
        self.bytes += skill.bytes;
        self.by_name
            .insert(skill.record.name.clone(), Arc::clone(&skill));
        self.by_id.insert(skill.record.id, skill);
    }

    fn remove(&mut self, id: Uuid) {
        if let Some(old) = self.by_id.remove(&id) {
            self.by_name.remove(&old.record.name);
            self.bytes -= old.bytes;
        }
    }

    /// Skills by name whose name or description contains `search` (case-insensitive), the page
    /// `skip..skip+limit` of them, and how many matched in all.
    pub fn page(
        &self,
        search: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> (Vec<Arc<IndexedSkill>>, usize) {
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let matches = self.by_name.values().filter(|s| match &needle {
            None => true,
            Some(n) => {
                s.record.name.contains(n.as_str())
                    || s.record.description.to_lowercase().contains(n.as_str())
            }
        });
        let mut total = 0;
        let mut page = Vec::new();
        for skill in matches {
            if total >= skip && page.len() < limit {
                page.push(Arc::clone(skill));
            }
            total += 1;
        }
        (page, total)
    }

    pub fn get(&self, id: Uuid) -> Option<&Arc<IndexedSkill>> {
        self.by_id.get(&id)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<IndexedSkill>> {
        self.by_name.get(name)
    }

    /// Every skill, by name.
    pub fn skills(&self) -> impl Iterator<Item = &Arc<IndexedSkill>> {
        self.by_name.values()
    }

    /// The listing of these skills that `make` writes, made once per published index.
    pub fn listing(&self, make: impl FnOnce(&SkillIndex) -> String) -> Arc<str> {
        Arc::clone(self.listing.get_or_init(|| Arc::from(make(self))))
    }

    /// The serialized result of the listing that `make` writes, made once per published index.
    pub fn listing_result(&self, make: impl FnOnce(&SkillIndex) -> String) -> Arc<str> {
        Arc::clone(self.listing_result.get_or_init(|| Arc::from(make(self))))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Bytes used by all the user's skills.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// What an upload names as its target.
#[derive(Debug, Clone, Default)]
pub struct UploadTarget {
    pub skill_id: Option<Uuid>,
    pub skill_name: Option<SkillName>,
    pub description: Option<String>,
}

/// The files of an upload: parts with their relative paths, or one zip archive.
#[derive(Debug, Clone)]
pub enum UploadPayload {
    Files(Vec<(SkillPath, Bytes)>),
    Zip(Bytes),
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub skill: Arc<IndexedSkill>,
    pub uploaded_files: Vec<String>,
    pub created: bool,
}

/// State shared by the actor and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) index: ArcSwap<SkillIndex>,
    /// Unix seconds of the last request that used this workspace.
    pub(crate) last_used: AtomicI64,
}

impl Shared {
    pub(crate) fn touch(&self) {
        self.last_used.store(unix_now(), Ordering::Relaxed);
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) enum WorkspaceMessage {
    Create {
        name: SkillName,
        description: String,
        reply: RpcReplyPort<Result<Arc<IndexedSkill>, AppError>>,
    },
    Update {
        id: Uuid,
        description: Option<String>,
        is_active: Option<bool>,
        reply: RpcReplyPort<Result<Arc<IndexedSkill>, AppError>>,
    },
    Delete {
        id: Uuid,
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    Upload {
        target: UploadTarget,
        payload: UploadPayload,
        reply: RpcReplyPort<Result<Uploaded, AppError>>,
    },
    /// Timer: stop when unused for the idle time.
    IdleCheck,
    /// Tests: make the handler panic, to see supervision at work.
    #[cfg(test)]
    Panic,
}

pub(crate) struct WorkspaceActor;

pub(crate) struct WorkspaceArgs {
    pub(crate) user_id: Uuid,
    pub(crate) store: Store,
    pub(crate) skills_root: PathBuf,
    pub(crate) settings: SkillSettings,
    pub(crate) shared: Arc<Shared>,
    pub(crate) listener: Arc<std::sync::OnceLock<super::workspaces::ChangeListener>>,
}

pub(crate) struct WorkspaceState {
    user_id: Uuid,
    store: Store,
    /// `<data_dir>/skills/<user_id>`.
    user_root: PathBuf,
    /// `<data_dir>/skills/.staging`: on the same file system, so swaps are renames.
    staging: PathBuf,
    settings: SkillSettings,
    shared: Arc<Shared>,
    listener: Arc<std::sync::OnceLock<super::workspaces::ChangeListener>>,
    timer: Option<ractor::concurrency::JoinHandle<()>>,
}

impl Actor for WorkspaceActor {
    type Msg = WorkspaceMessage;
    type State = WorkspaceState;
    type Arguments = WorkspaceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WorkspaceArgs,
    ) -> Result<WorkspaceState, ActorProcessingErr> {
        Ok(WorkspaceState {
            user_id: args.user_id,
            store: args.store,
            user_root: args.skills_root.join(args.user_id.to_string()),
            staging: staging_root(&args.skills_root),
            settings: args.settings,
            shared: args.shared,
            listener: args.listener,
            timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut WorkspaceState,
    ) -> Result<(), ActorProcessingErr> {
        let idle = Duration::from_secs(state.settings.workspace_idle_secs);
        let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        state.timer = Some(myself.send_interval(every, || WorkspaceMessage::IdleCheck));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut WorkspaceState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: WorkspaceMessage,
        state: &mut WorkspaceState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkspaceMessage::Create {
                name,
                description,
                reply: port,
            } => reply(port, state.create(name, description).await),
            WorkspaceMessage::Update {
                id,
                description,
                is_active,
                reply: port,
            } => reply(port, state.update(id, description, is_active).await),
            WorkspaceMessage::Delete { id, reply: port } => reply(port, state.delete(id).await),
            WorkspaceMessage::Upload {
                target,
                payload,
                reply: port,
            } => reply(port, state.upload(target, payload).await),
            WorkspaceMessage::IdleCheck => {
                let idle = i64::try_from(state.settings.workspace_idle_secs).unwrap_or(i64::MAX);
                if unix_now() - state.shared.last_used.load(Ordering::Relaxed) >= idle {
                    tracing::debug!(user_id = %state.user_id, "workspace idle; stopping");
                    myself.stop(Some("idle".to_owned()));
                }
            }
            #[cfg(test)]
            WorkspaceMessage::Panic => panic!("a test asked the workspace to panic"),
        }
        Ok(())
    }
}

pub(crate) fn staging_root(skills_root: &Path) -> PathBuf {
    skills_root.join(".staging")
}

impl WorkspaceState {
    fn limits(&self) -> Limits {
        Limits {
            max_file_bytes: self.settings.max_file_bytes,
            max_skill_bytes: self.settings.max_skill_bytes,
            max_skill_files: self.settings.max_skill_files,
        }
    }

    fn index(&self) -> Arc<SkillIndex> {
        self.shared.index.load_full()
    }

    /// Publishes a new index made from the current one by `change`.
    fn publish(&self, change: impl FnOnce(&mut SkillIndex)) {
        let current = self.index();
        let mut next = SkillIndex {
            by_name: current.by_name.clone(),
            by_id: current.by_id.clone(),
            bytes: current.bytes,
            listing: std::sync::OnceLock::new(),
            listing_result: std::sync::OnceLock::new(),
        };
        change(&mut next);
        self.shared.index.store(Arc::new(next));
        if let Some(listener) = self.listener.get() {
            listener(self.user_id);
        }
    }

    fn check_quota(&self, replacing: u64, new_bytes: u64) -> Result<(), AppError> {
        let after = self
            .index()
            .bytes()
            .saturating_sub(replacing)
            .saturating_add(new_bytes);
        if after > self.settings.max_user_bytes {
            return Err(AppError::TooLarge {
                code: "quota-exceeded",
                detail: format!(
                    "your skills would take {after} bytes; an account may keep at most {} bytes",
                    self.settings.max_user_bytes
                ),
            });
        }
        Ok(())
    }

    async fn create(
        &mut self,
        name: SkillName,
        description: String,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        if self.index().by_name(name.as_str()).is_some() {
            return Err(StoreError::Duplicate(UniqueField::SkillName).into());
        }
        let text = manifest::render(&name, &description);
        let files = vec![(skill_md_path()?, text.into_bytes())];
        self.store_new(&name, files).await
    }

    async fn update(
        &mut self,
        id: Uuid,
        description: Option<String>,
        is_active: Option<bool>,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        let current = Arc::clone(self.index().get(id).ok_or(AppError::NotFound("skill"))?);
        let description = description.filter(|d| *d != current.record.description);
        let Some(description) = description else {
            let record = self
                .store
                .update_skill(self.user_id, id, None, is_active, store::now())
                .await?
                .ok_or(AppError::NotFound("skill"))?;
            let skill = Arc::new(IndexedSkill {
                record,
                ..(*current).clone()
            });
            self.publish(|index| index.insert(Arc::clone(&skill)));
            return Ok(skill);
        };
        let text = match current.skill_md.as_deref() {
            Some(text) => manifest::with_description(text, &description).map_err(manifest_error)?,
            None => manifest::render(&skill_name(&current.record.name)?, &description),
        };
        let files = vec![(skill_md_path()?, text.into_bytes())];
        self.replace(&current, files, is_active).await
    }

    async fn delete(&mut self, id: Uuid) -> Result<(), AppError> {
        let current = Arc::clone(self.index().get(id).ok_or(AppError::NotFound("skill"))?);
        if !self.store.delete_skill(self.user_id, id).await? {
            return Err(AppError::NotFound("skill"));
        }
        self.publish(|index| index.remove(id));
        let dir = self.user_root.join(&current.record.name);
        // The row is gone, so the skill is gone; a folder left by a failure here is removed the
        // next time this workspace is loaded.
        match blocking(move || files::remove_skill_dir(&dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(user_id = %self.user_id, skill = %current.record.name, error = %e, "could not remove a deleted skill's folder")
            }
            Err(e) => {
                tracing::error!(user_id = %self.user_id, error = %e, "skill folder removal did not finish")
            }
        }
        Ok(())
    }

    async fn upload(
        &mut self,
        target: UploadTarget,
        payload: UploadPayload,
    ) -> Result<Uploaded, AppError> {
        let limits = self.limits();
        let mut files: Vec<(SkillPath, Vec<u8>)> = match payload {
            UploadPayload::Files(parts) => {
                parts.into_iter().map(|(p, b)| (p, b.to_vec())).collect()
            }
            UploadPayload::Zip(bytes) => blocking(move || zip_upload::unpack(&bytes, &limits))
                .await?
                .map_err(upload_error)?,
        };
        let uploaded_files: Vec<String> =
            files.iter().map(|(p, _)| p.as_str().to_owned()).collect();
        let index = self.index();
        let existing = match (&target.skill_id, &target.skill_name) {
            (Some(id), name) => {
                let skill = index.get(*id).ok_or(AppError::NotFound("skill"))?;
                if let Some(name) = name
                    && name.as_str() != skill.record.name
                {
                    return Err(name_mismatch(name.as_str(), &skill.record.name));
                }
                Some(Arc::clone(skill))
            }
            (None, Some(name)) => index.by_name(name.as_str()).cloned(),
            (None, None) => {
                let manifest = uploaded_manifest(&files)?.ok_or_else(|| {
                    AppError::validation(
                        "skill_name",
                        "give `skill_id`, `skill_name` or a SKILL.md to name the skill",
                    )
                })?;
                index.by_name(&manifest.name).cloned()
            }
        };
        let name = match (&existing, &target.skill_name) {
            (Some(skill), _) => skill_name(&skill.record.name)?,
            (None, Some(name)) => name.clone(),
            (None, None) => {
                let manifest = uploaded_manifest(&files)?.ok_or_else(missing_skill_md)?;
                skill_name(&manifest.name)?
            }
        };
        if let Some(description) = &target.description {
            let uploaded = files.iter().position(|(p, _)| p.as_str() == SKILL_MD);
            let base_text = match uploaded {
                Some(i) => Some(String::from_utf8(files[i].1.clone()).map_err(|_| {
                    AppError::Unprocessable {
                        code: "skill-md-invalid",
                        detail: "SKILL.md must be UTF-8 text".into(),
                    }
                })?),
                None => existing
                    .as_ref()
                    .and_then(|s| s.skill_md.as_deref().map(str::to_owned)),
            };
            let text = match base_text {
                Some(text) => {
                    manifest::with_description(&text, description).map_err(manifest_error)?
                }
                None => manifest::render(&name, description),
            };
            match uploaded {
                Some(i) => files[i].1 = text.into_bytes(),
                None => files.push((skill_md_path()?, text.into_bytes())),
            }
        }
        match existing {
            Some(current) => {
                let skill = self.replace(&current, files, None).await?;
                Ok(Uploaded {
                    skill,
                    uploaded_files,
                    created: false,
                })
            }
            None => {
                let skill = self.store_new(&name, files).await?;
                Ok(Uploaded {
                    skill,
                    uploaded_files,
                    created: true,
                })
            }
        }
    }

    /// Stages `files` as a new skill `name`, writes its row, moves it into place.
    async fn store_new(
        &mut self,
        name: &SkillName,
        files: Vec<(SkillPath, Vec<u8>)>,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        let staged = self.stage(None, files).await?;
        if staged.manifest.name != name.as_str() {
            return Err(name_mismatch(&staged.manifest.name, name.as_str()));
        }
        self.check_quota(0, staged.bytes)?;
        let new = NewSkill {
            id: Uuid::new_v4(),
            user_id: self.user_id,
            name: name.as_str().to_owned(),
            description: staged.manifest.description.clone(),
            skill_dir: format!("{}/{}", self.user_id, name.as_str()),
            created_at: store::now(),
        };
        let record = self.store.insert_skill(&new).await?;
        let (folder, skill) = staged.into_indexed(record);
        let dir = self.user_root.join(name.as_str());
        if let Err(e) = blocking(move || folder.commit_new(&dir)).await? {
            // Undo the row so that row and folder agree; if that fails too, the next load of this
            // workspace removes the row (it has no folder).
            if let Err(undo) = self.store.delete_skill(self.user_id, skill.record.id).await {
                tracing::error!(error = %undo, "could not remove the row of a skill whose folder failed");
            }
            return Err(AppError::from_io(e));
        }
        self.publish(|index| index.insert(Arc::clone(&skill)));
        Ok(skill)
    }

    /// Stages `files` over the skill's current folder, updates its row, swaps the folder in.
    async fn replace(
        &mut self,
        current: &IndexedSkill,
        files: Vec<(SkillPath, Vec<u8>)>,
        is_active: Option<bool>,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        let dir = self.user_root.join(&current.record.name);
        let staged = self.stage(Some(dir.clone()), files).await?;
        if staged.manifest.name != current.record.name {
            return Err(name_mismatch(&staged.manifest.name, &current.record.name));
        }
        self.check_quota(current.bytes, staged.bytes)?;
        let record = self
            .store
            .update_skill(
                self.user_id,
                current.record.id,
                Some(&staged.manifest.description),
                is_active,
                store::now(),
            )
            .await?
            .ok_or(AppError::NotFound("skill"))?;
        let (folder, skill) = staged.into_indexed(record);
        blocking(move || folder.commit_replace(&dir))
            .await?
            .map_err(AppError::from_io)?;
        self.publish(|index| index.insert(Arc::clone(&skill)));
        Ok(skill)
    }

    /// Writes `files` over a copy of `base` in a staging folder and validates the result.
    async fn stage(
        &self,
        base: Option<PathBuf>,
        files: Vec<(SkillPath, Vec<u8>)>,
    ) -> Result<StagedSkill, AppError> {
        let staging = self.staging.clone();
        let limits = self.limits();
        blocking(move || {
            let staged = files::write_staged(&staging, base.as_deref(), &files, &limits)
                .map_err(upload_error)?;
            let entries = files::scan(staged.dir()).map_err(AppError::from_io)?;
            let skill_md = std::fs::read_to_string(staged.dir().join(SKILL_MD))
                .ok()
                .map(Arc::from);
            let manifest = staged.manifest().clone();
            Ok(StagedSkill {
                bytes: total(&entries),
                staged,
                entries,
                skill_md,
                manifest,
            })
        })
        .await?
    }
}

/// A skill written to the staging area and validated, not yet in place.
struct StagedSkill {
    staged: files::Staged,
    entries: Vec<FileEntry>,
    bytes: u64,
    skill_md: Option<Arc<str>>,
    manifest: Manifest,
}

impl StagedSkill {
    /// The index entry this becomes once `record` is written and the folder is in place.
    fn into_indexed(self, record: SkillRecord) -> (files::Staged, Arc<IndexedSkill>) {
        let skill = IndexedSkill {
            record,
            files: self.entries,
            bytes: self.bytes,
            skill_md: self.skill_md,
            manifest: Some(self.manifest),
            load_skill_result: std::sync::OnceLock::new(),
        };
        (self.staged, Arc::new(skill))
    }
}

/// Whether loading an index may change the disk and the database to make them agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The serving process: it owns the folders and repairs what a crash left.
    Yes,
    /// A reader beside a running server (`stdio --token`): it must not touch what the server is
    /// in the middle of writing, so it only leaves out what does not agree.
    No,
}

/// Builds a user's index from the database and the disk, repairing any disagreement a crash left
/// (with [`Repair::Yes`]).
pub(crate) async fn load_index(
    store: &Store,
    user_id: Uuid,
    skills_root: &Path,
    settings: &SkillSettings,
    repair: Repair,
) -> Result<SkillIndex, AppError> {
    let rows = store.skills_of_user(user_id).await?;
    let user_root = skills_root.join(user_id.to_string());
    let max_read = settings.max_file_bytes;
    let Folders { found, orphans } =
        blocking(move || read_folders(&user_root, rows, max_read, repair)).await??;
    for orphan in orphans {
        tracing::warn!(%user_id, folder = %orphan, "removed a skill folder that had no database row");
    }
    let mut skills = Vec::with_capacity(found.len());
    for (record, folder) in found {
        let Some(folder) = folder else {
            if repair == Repair::Yes {
                tracing::warn!(%user_id, skill = %record.name, "removed a skill row whose folder is missing");
                store.delete_skill(user_id, record.id).await?;
            }
            continue;
        };
        let record = match &folder.manifest {
            Some(m) if repair == Repair::Yes && m.description != record.description => store
                .update_skill(user_id, record.id, Some(&m.description), None, store::now())
                .await?
                .unwrap_or(record),
            _ => record,
        };
        skills.push(IndexedSkill {
            record,
            bytes: total(&folder.files),
            files: folder.files,
            skill_md: folder.skill_md,
            manifest: folder.manifest,
            load_skill_result: std::sync::OnceLock::new(),
        });
    }
    Ok(SkillIndex::from_skills(skills))
}

/// Each row with its folder (`None`: missing), and the folders removed for having no row.
struct Folders {
    found: Vec<(SkillRecord, Option<Folder>)>,
    orphans: Vec<String>,
}

struct Folder {
    files: Vec<FileEntry>,
    skill_md: Option<Arc<str>>,
    manifest: Option<Manifest>,
}

/// Reads each row's folder; removes folders that belong to no row. Blocking.
fn read_folders(
    user_root: &Path,
    rows: Vec<SkillRecord>,
    max_read: u64,
    repair: Repair,
) -> Result<Folders, AppError> {
    let mut orphans = Vec::new();
    match std::fs::read_dir(user_root) {
        Ok(_) if repair == Repair::No => {}
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(AppError::internal)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !rows.iter().any(|r| r.name == name) {
                    files::remove_skill_dir(&entry.path()).map_err(AppError::internal)?;
                    orphans.push(name);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AppError::internal(e)),
    }
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let dir = user_root.join(&row.name);
        if !dir.is_dir() {
            found.push((row, None));
            continue;
        }
        found.push((row, Some(read_folder(&dir, max_read)?)));
    }
    Ok(Folders { found, orphans })
}

/// A skill's files, its `SKILL.md` and front matter, as they are on disk. Blocking.
fn read_folder(dir: &Path, max_read: u64) -> Result<Folder, AppError> {
    let files = files::scan(dir).map_err(AppError::internal)?;
    let skill_md = skill_md_path()
        .ok()
        .and_then(|p| files::read_beneath(dir, &p, max_read).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let manifest = skill_md.as_deref().and_then(|t| manifest::parse(t).ok());
    Ok(Folder {
        files,
        skill_md: skill_md.map(Arc::from),
        manifest,
    })
}

fn total(entries: &[FileEntry]) -> u64 {
    entries.iter().map(|f| f.size).sum()
}

fn skill_md_path() -> Result<SkillPath, AppError> {
    SkillPath::parse(SKILL_MD).map_err(AppError::internal)
}

fn skill_name(name: &str) -> Result<SkillName, AppError> {
    SkillName::parse(name).map_err(|e| AppError::Unprocessable {
        code: "skill-name-invalid",
        detail: format!("skill name {name:?} {e}"),
    })
}

/// The parsed `SKILL.md` among uploaded files, if there is one.
fn uploaded_manifest(files: &[(SkillPath, Vec<u8>)]) -> Result<Option<Manifest>, AppError> {
    let Some((_, bytes)) = files.iter().find(|(p, _)| p.as_str() == SKILL_MD) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(bytes).map_err(|_| AppError::Unprocessable {
        code: "skill-md-invalid",
        detail: "SKILL.md must be UTF-8 text".into(),
    })?;
    manifest::parse(text).map(Some).map_err(manifest_error)
}

fn name_mismatch(found: &str, expected: &str) -> AppError {
    AppError::Unprocessable {
        code: "skill-name-mismatch",
        detail: format!(
            "SKILL.md names the skill {found:?}, but this skill is {expected:?}; `name` must equal the skill's name"
        ),
    }
}

fn missing_skill_md() -> AppError {
    upload_error(UploadError::MissingSkillMd)
}

pub(crate) fn manifest_error(e: manifest::ManifestError) -> AppError {
    AppError::Unprocessable {
        code: "skill-md-invalid",
        detail: e.to_string(),
    }
}

/// Maps an upload failure: the client's mistakes are 413 or 422, a full disk is 507, any other
/// I/O failure of the server's is 500.
pub(crate) fn upload_error(e: UploadError) -> AppError {
    match e {
        UploadError::Io(io) => AppError::from_io(io),
        UploadError::FileTooLarge { .. }
        | UploadError::SkillTooLarge { .. }
        | UploadError::TooManyFiles { .. } => AppError::TooLarge {
            code: e.code(),
            detail: e.to_string(),
        },
        other => AppError::Unprocessable {
            code: other.code(),
            detail: other.to_string(),
        },
    }
}

/// Runs blocking work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(AppError::internal)
}
