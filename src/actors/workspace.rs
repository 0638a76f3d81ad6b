//! A user's skill workspace: the one writer of `<data_dir>/skills/<user_id>/`, and the in-memory
//! index of that user's skills.
//!
//! Every change to a user's skills (create, update, delete, upload) is a message to this actor, so
//! they happen one at a time and in order. Reads never go through the mailbox: the actor publishes
//! an immutable [`SkillIndex`] through an `ArcSwap` after every change, and readers take the current
//! one, which is always a whole, consistent state.
//!
//! Every change of a skill's content makes a new, immutable version ([`crate::storage`]), in the
//! same order each time: the new content is written to a staging folder first (validated there:
//! `SKILL.md`, limits), its files are stored as blobs, the version is recorded (the skill's row
//! and its current-version pointer in the same transaction), then the staged folder is swapped in
//! as the skill's folder, which is the current version materialized. A failure before the record
//! leaves nothing but unreferenced blobs, which collection removes; a crash between record and
//! swap is repaired when the workspace is next loaded ([`load_index`]): the database is the truth,
//! and a folder that is not its skill's current version is materialized again from the blobs.
//! Folders without a row are removed; a skill written before versions becomes version 1.
//!
//! File-system work runs on the blocking pool; the handler awaits it, which holds up only this
//! user's mailbox.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use crate::skills::search::{self, SearchIndex, SearchText};
use crate::skills::zip_upload::{self, UnpackedSkill};
use crate::skills::{Cancel, Warning};
use crate::storage::{self, BlobError, BlobStore};
use crate::store::{
    self, NewSkill, NewSource, NewVersion, SkillRecord, SkillWrite, Store, StoreError, UniqueField,
    VersionFile,
};

/// The file every skill has at its root.
pub const SKILL_MD: &str = "SKILL.md";

/// One skill as the index holds it.
#[derive(Debug, Clone)]
pub struct IndexedSkill {
    pub record: SkillRecord,
    /// Regular files, sorted by path.
    pub files: Vec<FileEntry>,
    /// The digest of these files' manifest ([`storage::manifest_digest`]): the current
    /// version's, for a stored skill.
    pub digest: String,
    /// The sum of the files' sizes.
    pub bytes: u64,
    /// The text of `SKILL.md`, if it is UTF-8.
    pub skill_md: Option<Arc<str>>,
    /// The parsed front matter; `None` if `SKILL.md` no longer parses (a script may rewrite it).
    pub manifest: Option<Manifest>,
    /// `load_skill`'s result for `skill_md`, serialized at the first call (it depends on that
    /// text alone, which never changes in a published entry).
    pub load_skill_result: std::sync::OnceLock<Arc<str>>,
    /// The skill's line in `search_skills`' answer, escaped as inside a JSON string, made at the
    /// first search that finds it (it depends on the name and description alone).
    pub search_line_json: std::sync::OnceLock<Box<str>>,
    /// What works here but may not elsewhere (file names that differ only in case).
    pub warnings: Vec<Warning>,
}

impl IndexedSkill {
    /// The entity tag of the skill's state as the API shows it: its current version and whether
    /// it is active (every other change of the skill makes a new version). Quoted, as it goes in
    /// an `ETag` header; the same state always has the same tag, across restarts too.
    pub fn etag(&self) -> String {
        let active = if self.record.is_active {
            ""
        } else {
            "-inactive"
        };
        format!("\"v{}{active}\"", self.record.version)
    }
}

/// An `If-Match` condition on a change (RFC 9110, section 13.1.1): the change goes ahead only if
/// the skill it changes exists and, unless the condition is `*`, is in a state one of the entity
/// tags names. Comparison is strong: a weak tag (`W/"…"`) never matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Tags(Vec<String>),
}

impl IfMatch {
    /// Whether the condition holds for `skill` (`None`: the change would make a new skill).
    pub fn check(&self, skill: Option<&IndexedSkill>) -> Result<(), AppError> {
        match (self, skill) {
            (IfMatch::Any, Some(_)) => Ok(()),
            (IfMatch::Tags(tags), Some(skill)) => {
                let etag = skill.etag();
                if tags.contains(&etag) {
                    Ok(())
                } else {
                    Err(AppError::PreconditionFailed(format!(
                        "the skill {:?} changed since you read it: it is now {etag}, not {}; \
                         nothing was changed: read it again and make your change to that",
                        skill.record.name,
                        tags.join(", ")
                    )))
                }
            }
            (_, None) => Err(AppError::PreconditionFailed(
                "If-Match names a state of a skill, but there is no such skill: this would make a \
                 new one; nothing was changed"
                    .to_owned(),
            )),
        }
    }
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
    /// The ranked search over these skills: made with the index when a change publishes it
    /// (updated from the previous index's), else after the index is published, on the blocking
    /// pool, by the first of the background task that follows a load and a search that comes
    /// first ([`SkillIndex::prepare_search`]); never on a request's thread. A load publishes
    /// without waiting for it, so the first calls after a start (or a reload) do not wait for
    /// every skill to be tokenized.
    search: tokio::sync::OnceCell<Searched>,
    /// The search index this one's is made from (the previous index's, so that only changed
    /// skills are tokenized again); taken when it is made, so that an index does not keep its
    /// predecessor's search alive.
    search_from: std::sync::Mutex<Option<Arc<SearchIndex>>>,
}

/// The search of one index.
#[derive(Debug, Clone)]
struct Searched {
    index: Arc<SearchIndex>,
    /// Whether `index` is an earlier index's, its update for this one having failed: then a
    /// query reads names and descriptions from the skills here rather than from it.
    lags: bool,
}

impl SkillIndex {
    /// The index of `skills`; its search is made later ([`SkillIndex::prepare_search`]).
    pub(crate) fn from_skills(skills: impl IntoIterator<Item = IndexedSkill>) -> SkillIndex {
        let mut index = SkillIndex::default();
        for skill in skills {
            index.insert(Arc::new(skill));
        }
        index
    }

    /// [`SkillIndex::from_skills`] with its search made now: blocking work (it tokenizes every
    /// skill's text), for the blocking pool.
    pub(crate) fn from_skills_searched(
        skills: impl IntoIterator<Item = IndexedSkill>,
    ) -> SkillIndex {
        let index = SkillIndex::from_skills(skills);
        let searched = Searched {
            index: Arc::new(SearchIndex::default().updated(index.search_texts())),
            lags: false,
        };
        let _ = index.search.set(searched);
        index
    }

    /// The index made from `previous` by a load (a reload's skills, searched from where the
    /// previous index's search is, once that is made).
    fn with_search_from(mut self, previous: &SkillIndex) -> SkillIndex {
        *self
            .search_from
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            previous.search.get().map(|s| Arc::clone(&s.index));
        self
    }

    /// Makes this index's search if it is not made yet (on the blocking pool; a second caller
    /// waits for the first), so that [`SkillIndex::page`], [`SkillIndex::ranked`] and
    /// [`SkillIndex::ranked_first`] rank with it. Every searching caller awaits this first.
    pub async fn prepare_search(&self) {
        self.searched().await;
    }

    async fn searched(&self) -> &Searched {
        self.search
            .get_or_init(|| async {
                let skills: Vec<Arc<IndexedSkill>> = self.by_id.values().cloned().collect();
                // (Taken: a second attempt, after this one's caller gave up, starts from nothing.)
                let from = self
                    .search_from
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    .unwrap_or_default();
                let basis = Arc::clone(&from);
                let made = blocking(move || {
                    let started = std::time::Instant::now();
                    let texts = skills.iter().map(|skill| search_text(skill));
                    let (index, stats) = basis.updated_with_stats(texts);
                    tracing::debug!(
                        skills = index.len(),
                        tokenized = stats.tokenized,
                        removed = stats.removed,
                        elapsed_us =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        "search index made"
                    );
                    index
                })
                .await;
                match made {
                    Ok(index) => Searched {
                        index: Arc::new(index),
                        lags: false,
                    },
                    // The search keeps its previous state (which finds nothing it should not:
                    // hits are looked up in this index) until the next change or reload.
                    Err(e) => {
                        tracing::error!(error = %e, "could not make the search index");
                        Searched {
                            index: from,
                            lags: true,
                        }
                    }
                }
            })
            .await
    }

    /// Every skill's text as the search index takes it.
    fn search_texts(&self) -> impl Iterator<Item = SearchText<'_>> {
        self.by_id.values().map(|skill| search_text(skill))
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

    /// The page `skip..skip+limit` of the user's skills and how many there are in all: every
    /// skill by name, or with `search` those that match it ([`SkillIndex::ranked`]), best first.
    pub fn page(
        &self,
        search: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> (Vec<Arc<IndexedSkill>>, usize) {
        match search.filter(|s| !s.trim().is_empty()) {
            None => {
                let page = self
                    .by_name
                    .values()
                    .skip(skip)
                    .take(limit)
                    .cloned()
                    .collect();
                (page, self.len())
            }
            Some(query) => {
                let (found, total) = self.ranked_first(query, |_| true, skip.saturating_add(limit));
                (found.into_iter().skip(skip).collect(), total)
            }
        }
    }

    /// The skills `wanted` keeps that match `query`, best first. A skill matches when the ranked
    /// search finds it, or when its name or description contains `query` as typed
    /// (case-insensitive: a part of a word, which the search's whole terms miss, so whatever the
    /// substring filter of earlier releases found is still found). The order: skills whose name
    /// contains `query` as typed first (someone typing a name means that skill), then by score,
    /// then by name.
    pub fn ranked(
        &self,
        query: &str,
        wanted: impl Fn(&IndexedSkill) -> bool,
    ) -> Vec<Arc<IndexedSkill>> {
        self.ranked_first(query, wanted, usize::MAX).0
    }

    /// The first `limit` of [`SkillIndex::ranked`], and how many match in all.
    pub fn ranked_first(
        &self,
        query: &str,
        wanted: impl Fn(&IndexedSkill) -> bool,
        limit: usize,
    ) -> (Vec<Arc<IndexedSkill>>, usize) {
        // Not made yet (a caller that did not prepare it): the substring match alone, by scan.
        let Some(searched) = self.search.get() else {
            return self.ranked_by_scan(&SearchIndex::default(), query, wanted, limit);
        };
        if searched.lags {
            return self.ranked_by_scan(&searched.index, query, wanted, limit);
        }
        let keep = |id: Uuid| self.by_id.get(&id).is_some_and(|s| wanted(s));
        let (found, total) = searched.index.found(query, keep, limit);
        let found = found
            .iter()
            .filter_map(|found| self.by_id.get(&found.id).cloned())
            .collect();
        (found, total)
    }

    /// [`SkillIndex::ranked_first`] when the search index is not this index's (its update
    /// failed): scores from it, names and descriptions from every skill here, one by one.
    fn ranked_by_scan(
        &self,
        search: &SearchIndex,
        query: &str,
        wanted: impl Fn(&IndexedSkill) -> bool,
        limit: usize,
    ) -> (Vec<Arc<IndexedSkill>>, usize) {
        let keep = |id: Uuid| self.by_id.get(&id).is_some_and(|s| wanted(s));
        let scores: HashMap<Uuid, f32> = search
            .search(query, keep)
            .into_iter()
            .map(|hit| (hit.id, hit.score))
            .collect();
        let needle = query.trim().to_lowercase();
        let contains = |text: &str| !needle.is_empty() && text.contains(needle.as_str());
        let mut found: Vec<(bool, f32, &Arc<IndexedSkill>)> = self
            .by_name
            .values()
            .filter(|s| wanted(s))
            .filter_map(|s| {
                let in_name = contains(&s.record.name);
                let score = scores.get(&s.record.id).copied();
                let matches =
                    in_name || score.is_some() || contains(&s.record.description.to_lowercase());
                matches.then(|| (in_name, score.unwrap_or(0.0), s))
            })
            .collect();
        // `by_name` is in name order and the sort is stable: equals stay by name.
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.total_cmp(&a.1)));
        let total = found.len();
        let found = found
            .into_iter()
            .take(limit)
            .map(|(_, _, s)| Arc::clone(s))
            .collect();
        (found, total)
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

    /// How many of the skills are active (what MCP sees).
    pub fn active_len(&self) -> usize {
        self.by_id.values().filter(|s| s.record.is_active).count()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Bytes used by all the user's skills.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Makes `index`'s search in the background, so that the first search after a load seldom
/// waits for it (one that comes first makes it, and this task then waits for that).
pub(crate) fn prepare_search_soon(index: Arc<SkillIndex>) {
    tokio::spawn(async move { index.prepare_search().await });
}

/// A skill's text as the search index takes it.
fn search_text(skill: &IndexedSkill) -> SearchText<'_> {
    SearchText {
        id: skill.record.id,
        name: &skill.record.name,
        description: &skill.record.description,
        body: skill
            .skill_md
            .as_deref()
            .map(search::body)
            .unwrap_or_default(),
        version: &skill.digest,
    }
}

/// What an upload names as its target.
#[derive(Debug, Clone, Default)]
pub struct UploadTarget {
    pub skill_id: Option<Uuid>,
    pub skill_name: Option<SkillName>,
    pub description: Option<String>,
    /// The state the skill must be in for the upload to go ahead.
    pub if_match: Option<IfMatch>,
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
    /// One skill; an archive may hold several, each made or changed here, by name.
    pub skills: Vec<UploadedSkill>,
    /// Archive entries left out: other systems' litter (`__MACOSX/`, `.DS_Store`, …) and files
    /// outside every skill.
    pub ignored: Vec<String>,
}

/// One skill an upload made or changed.
#[derive(Debug, Clone)]
pub struct UploadedSkill {
    pub skill: Arc<IndexedSkill>,
    pub uploaded_files: Vec<String>,
    pub created: bool,
}

/// A skill fetched from a repository, to import or to sync.
#[derive(Debug, Clone)]
pub struct SourcedSkill {
    /// The skill to sync; `None` to import: the skill its `SKILL.md` names, made or changed.
    pub skill_id: Option<Uuid>,
    /// For a sync: the version the source last held. A current version other than this one was
    /// made by hand, and is not overwritten unless forced.
    pub synced_version: Option<i64>,
    /// Its folder's last name in the repository, for the warning when it differs from the name.
    pub folder: Option<String>,
    pub files: Vec<(SkillPath, Vec<u8>)>,
    pub executable: files::ExecBits,
    pub source: SourceDraft,
}

/// The source to record with a sourced skill.
#[derive(Debug, Clone)]
pub struct SourceDraft {
    pub url: String,
    pub git_ref: Option<String>,
    /// The skill's folder in the repository.
    pub path: String,
    pub commit: String,
    /// The periodic sync's interval; `None` for none.
    pub sync_interval_hours: Option<i64>,
    /// Keep the interval the source already has, if it has one (an import that did not say).
    pub keep_interval: bool,
}

impl SourceDraft {
    /// The row to record: the skill `skill_id` at `version` holds this source's files.
    fn record(&self, skill_id: Uuid, version: i64, now: time::OffsetDateTime) -> NewSource {
        NewSource {
            skill_id,
            url: self.url.clone(),
            git_ref: self.git_ref.clone(),
            path: self.path.clone(),
            commit_id: self.commit.clone(),
            synced_version: version,
            sync_interval_hours: self.sync_interval_hours,
            next_sync_at: self
                .sync_interval_hours
                .map(|h| now + time::Duration::hours(h)),
            keep_interval: self.keep_interval,
        }
    }
}

/// What an import or a sync did to a skill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourcedAction {
    Created,
    Updated,
    /// The content was already the skill's current version: no version made.
    Unchanged,
}

/// One skill an import or a sync went through.
#[derive(Debug, Clone)]
pub struct SourcedOutcome {
    pub skill: Arc<IndexedSkill>,
    pub action: SourcedAction,
    pub path: String,
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
        cancel: Cancel,
        reply: RpcReplyPort<Result<Arc<IndexedSkill>, AppError>>,
    },
    Update {
        id: Uuid,
        description: Option<String>,
        is_active: Option<bool>,
        if_match: Option<IfMatch>,
        cancel: Cancel,
        reply: RpcReplyPort<Result<Arc<IndexedSkill>, AppError>>,
    },
    /// A new version of the skill with the files of its version `version`.
    Restore {
        id: Uuid,
        version: i64,
        if_match: Option<IfMatch>,
        cancel: Cancel,
        reply: RpcReplyPort<Result<Arc<IndexedSkill>, AppError>>,
    },
    Delete {
        id: Uuid,
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    Upload {
        target: UploadTarget,
        payload: UploadPayload,
        cancel: Cancel,
        reply: RpcReplyPort<Result<Uploaded, AppError>>,
    },
    /// Skills fetched from a repository: made or changed (new versions of exactly the fetched
    /// files), with their sources recorded, all or nothing.
    Sourced {
        skills: Vec<SourcedSkill>,
        force: bool,
        cancel: Cancel,
        reply: RpcReplyPort<Result<Vec<SourcedOutcome>, AppError>>,
    },
    /// The folder of a skill is missing (this replica's copies were wiped or evicted): load the
    /// skills again, which makes every missing folder from the blobs, then answer.
    Rematerialize {
        reply: RpcReplyPort<Result<(), AppError>>,
    },
    /// Another replica changed the user's skills (announced with their new skills version, or
    /// `None`: perhaps, so look): load them again from the database unless this workspace is at
    /// that version already, and tell the listener if anything a reader sees changed.
    Reload { version: Option<i64> },
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
    pub(crate) blobs: BlobStore,
    pub(crate) skills_root: PathBuf,
    pub(crate) settings: SkillSettings,
    pub(crate) shared: Arc<Shared>,
    pub(crate) listener: Arc<std::sync::OnceLock<super::workspaces::ChangeListener>>,
    /// Whether this process owns the user's folders and blobs (it serves) or reads beside a
    /// server that does (`stdio --token`): only the owner collects and sweeps.
    pub(crate) repair: Repair,
    /// The user's skills version, read before the index was loaded.
    pub(crate) version: i64,
}

pub(crate) struct WorkspaceState {
    user_id: Uuid,
    store: Store,
    blobs: BlobStore,
    /// The user's blobs (their digests), and their total size: what the quota counts.
    blob_digests: HashSet<String>,
    blob_bytes: u64,
    /// `<data_dir>/skills/<user_id>`.
    user_root: PathBuf,
    /// `<data_dir>/skills/.staging`: on the same file system, so swaps are renames.
    staging: PathBuf,
    /// `<data_dir>/skills`.
    skills_root: PathBuf,
    /// The user's skills version this workspace's index and blob set were loaded at, or made:
    /// every change is a compare-and-set from it (`Store::write_skills`), so a change another
    /// replica made meanwhile is never written over (the change is tried again on a reload).
    version: i64,
    settings: SkillSettings,
    shared: Arc<Shared>,
    listener: Arc<std::sync::OnceLock<super::workspaces::ChangeListener>>,
    repair: Repair,
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
        let (blob_digests, blob_bytes) = blob_set(&args.store, args.user_id).await?;
        Ok(WorkspaceState {
            user_id: args.user_id,
            store: args.store,
            blobs: args.blobs,
            blob_digests,
            blob_bytes,
            user_root: args.skills_root.join(args.user_id.to_string()),
            staging: staging_root(&args.skills_root),
            skills_root: args.skills_root,
            version: args.version,
            settings: args.settings,
            shared: args.shared,
            listener: args.listener,
            repair: args.repair,
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
        // Whatever a crash or a stop left half done: blobs no version refers to (a collection cut
        // short, versions pruned just before), blobs stored for a change never recorded, partial
        // copies. Only the process that owns the blobs does it: a reader beside a server would
        // remove what the server is in the middle of storing.
        if state.repair == Repair::Yes {
            state.collect_garbage().await;
            state.sweep_unrecorded_blobs().await;
        }
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
            // A change whose caller has gone already (it waited behind others in the mailbox, then
            // its client left or its request timed out) is not started.
            WorkspaceMessage::Create {
                name,
                description,
                cancel,
                reply: port,
            } => reply(
                port,
                match cancel.check() {
                    Ok(()) => {
                        retry_stale!(
                            state,
                            state.create(name.clone(), description.clone(), &cancel)
                        )
                    }
                    Err(e) => Err(upload_error(e)),
                },
            ),
            WorkspaceMessage::Update {
                id,
                description,
                is_active,
                if_match,
                cancel,
                reply: port,
            } => reply(
                port,
                match cancel.check() {
                    Ok(()) => retry_stale!(
                        state,
                        state.update(
                            id,
                            description.clone(),
                            is_active,
                            if_match.as_ref(),
                            &cancel
                        )
                    ),
                    Err(e) => Err(upload_error(e)),
                },
            ),
            WorkspaceMessage::Restore {
                id,
                version,
                if_match,
                cancel,
                reply: port,
            } => reply(
                port,
                match cancel.check() {
                    Ok(()) => retry_stale!(
                        state,
                        state.restore(id, version, if_match.as_ref(), &cancel)
                    ),
                    Err(e) => Err(upload_error(e)),
                },
            ),
            WorkspaceMessage::Delete { id, reply: port } => {
                reply(port, retry_stale!(state, state.delete(id)));
            }
            WorkspaceMessage::Upload {
                target,
                payload,
                cancel,
                reply: port,
            } => reply(
                port,
                match cancel.check() {
                    Ok(()) => retry_stale!(
                        state,
                        state.upload(target.clone(), payload.clone(), &cancel)
                    ),
                    Err(e) => Err(upload_error(e)),
                },
            ),
            WorkspaceMessage::Sourced {
                skills,
                force,
                cancel,
                reply: port,
            } => reply(
                port,
                match cancel.check() {
                    Ok(()) => retry_stale!(state, state.sourced(skills.clone(), force, &cancel)),
                    Err(e) => Err(upload_error(e)),
                },
            ),
            WorkspaceMessage::Rematerialize { reply: port } => {
                let result = if state.folders_missing() {
                    state.reload().await
                } else {
                    Ok(())
                };
                reply(port, result);
            }
            WorkspaceMessage::Reload { version } => {
                if version.is_none_or(|v| v > state.version)
                    && let Err(e) = state.reload().await
                {
                    tracing::warn!(user_id = %state.user_id, error = %e, "could not reload the user's skills; the next announcement or check tries again");
                }
            }
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

/// How many times a change is tried when other replicas' changes to the same user's skills keep
/// getting there first (each failed try reloads the skills and starts again from the request).
const STALE_ATTEMPTS: u32 = 5;

/// Runs a change (an expression awaiting one of the state's change methods), and again after a
/// reload when its compare-and-set found the skills version moved on ([`AppError::Contended`]:
/// another replica changed the user's skills meanwhile), at most [`STALE_ATTEMPTS`] times.
macro_rules! retry_stale {
    ($state:ident, $change:expr) => {{
        let mut attempt = 1;
        // A change starts from this replica's copies of the skills: made again first if they
        // are gone (the cache was wiped or evicted).
        if $state.folders_missing() {
            if let Err(e) = $state.reload().await {
                tracing::warn!(user_id = %$state.user_id, error = %e, "could not make the skills' folders again");
            }
        }
        loop {
            match $change.await {
                Err(AppError::Contended) if attempt < STALE_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(user_id = %$state.user_id, attempt, "the skills changed meanwhile; reloading and trying again");
                    if let Err(e) = $state.reload().await {
                        break Err(e);
                    }
                }
                other => break other,
            }
        }
    }};
}
use retry_stale;

/// The user's blobs (their digests) and their total size: what the quota counts.
async fn blob_set(store: &Store, user_id: Uuid) -> Result<(HashSet<String>, u64), StoreError> {
    let digests = store.blobs_of(user_id).await?.into_iter().collect();
    Ok((digests, store.blob_bytes(user_id).await?))
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

    /// Publishes a new index made from the current one by `change`, with its search index
    /// updated from the current one's on the blocking pool (only changed skills are tokenized
    /// again; the current one's is made first if a load left it to be made).
    async fn publish(&self, change: impl FnOnce(&mut SkillIndex)) {
        let current = self.index();
        let previous = Arc::clone(&current.searched().await.index);
        let mut next = SkillIndex {
            by_name: current.by_name.clone(),
            by_id: current.by_id.clone(),
            bytes: current.bytes,
            listing: std::sync::OnceLock::new(),
            listing_result: std::sync::OnceLock::new(),
            search: tokio::sync::OnceCell::new(),
            search_from: std::sync::Mutex::new(Some(previous)),
        };
        change(&mut next);
        next.prepare_search().await;
        self.shared.index.store(Arc::new(next));
        if let Some(listener) = self.listener.get() {
            listener(self.user_id);
        }
    }

    /// Refuses a change whose new blobs would take the user's over their quota: what counts is
    /// each distinct file the user holds, in any skill and any version kept, once.
    fn check_quota(&self, new_bytes: u64) -> Result<(), AppError> {
        let after = self.blob_bytes.saturating_add(new_bytes);
        if after > self.settings.max_user_bytes {
            return Err(AppError::TooLarge {
                code: "quota-exceeded",
                detail: format!(
                    "your skills and their versions would take {after} bytes; an account may \
                     keep at most {} bytes (skills.keep_versions versions of each skill are \
                     kept: delete skills you no longer need)",
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
        cancel: &Cancel,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        if self.index().by_name(name.as_str()).is_some() {
            return Err(StoreError::Duplicate(UniqueField::SkillName).into());
        }
        let text = manifest::render(&name, &description);
        let files = vec![(skill_md_path()?, text.into_bytes())];
        let staged = self
            .stage(None, files, files::ExecBits::new(), cancel)
            .await?;
        let plan = Plan::new(name, None, staged, None);
        self.apply(vec![plan], Vec::new())
            .await?
            .pop()
            .ok_or(AppError::NotFound("skill"))
    }

    async fn update(
        &mut self,
        id: Uuid,
        description: Option<String>,
        is_active: Option<bool>,
        if_match: Option<&IfMatch>,
        cancel: &Cancel,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        let current = Arc::clone(self.index().get(id).ok_or(AppError::NotFound("skill"))?);
        if let Some(condition) = if_match {
            condition.check(Some(&current))?;
        }
        let description = description.filter(|d| *d != current.record.description);
        let Some(description) = description else {
            let record = self
                .store
                .update_skill(
                    self.user_id,
                    id,
                    None,
                    is_active,
                    store::now(),
                    Some(self.version),
                )
                .await?
                .ok_or(AppError::NotFound("skill"))?;
            self.version += 1;
            let skill = Arc::new(IndexedSkill {
                record,
                ..(*current).clone()
            });
            self.publish(|index| index.insert(Arc::clone(&skill))).await;
            return Ok(skill);
        };
        let base_text = current.skill_md.as_deref().map(str::to_owned);
        let text = described(base_text, skill_name(&current.record.name)?, description).await?;
        let files = vec![(skill_md_path()?, text.into_bytes())];
        let dir = self.user_root.join(&current.record.name);
        let staged = self
            .stage(Some(dir), files, files::ExecBits::new(), cancel)
            .await?;
        let name = skill_name(&current.record.name)?;
        let plan = Plan::new(name, Some(current), staged, is_active);
        self.apply(vec![plan], Vec::new())
            .await?
            .pop()
            .ok_or(AppError::NotFound("skill"))
    }

    /// Makes the files of the skill's version `number` its new current version.
    async fn restore(
        &mut self,
        id: Uuid,
        number: i64,
        if_match: Option<&IfMatch>,
        cancel: &Cancel,
    ) -> Result<Arc<IndexedSkill>, AppError> {
        let current = Arc::clone(self.index().get(id).ok_or(AppError::NotFound("skill"))?);
        if let Some(condition) = if_match {
            condition.check(Some(&current))?;
        }
        let (_, files) = self
            .store
            .version(self.user_id, id, number)
            .await?
            .ok_or(AppError::NotFound("version"))?;
        cancel.check().map_err(upload_error)?;
        let staged = stage_from_blobs(
            &self.blobs,
            self.user_id,
            &files,
            &self.staging,
            &self.limits(),
        )
        .await?;
        let staged = blocking(move || examine(staged)).await??;
        let name = skill_name(&current.record.name)?;
        let plan = Plan::new(name, Some(current), staged, None);
        self.apply(vec![plan], Vec::new())
            .await?
            .pop()
            .ok_or(AppError::NotFound("skill"))
    }

    async fn delete(&mut self, id: Uuid) -> Result<(), AppError> {
        let current = Arc::clone(self.index().get(id).ok_or(AppError::NotFound("skill"))?);
        if !self
            .store
            .delete_skill(self.user_id, id, Some(self.version))
            .await?
        {
            return Err(AppError::NotFound("skill"));
        }
        self.version += 1;
        self.publish(|index| index.remove(id)).await;
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
        // Its versions went with the row: their blobs, unless another version holds them, go.
        self.collect_garbage().await;
        Ok(())
    }

    /// Removes the user's blobs that no version refers to: each one's bytes first, then its row
    /// (`Store::collect_blobs`, which on PostgreSQL keeps other replicas' changes of this user
    /// waiting meanwhile). A crash in between leaves rows whose bytes are gone, which no version
    /// refers to either, and which the next collection removes; a version never points at a
    /// missing blob. Errors are logged: the blobs stay until the next collection.
    async fn collect_garbage(&mut self) {
        let (blobs, user_id) = (&self.blobs, self.user_id);
        let remove = |unreferenced: Vec<(String, u64)>| async move {
            let mut removed = Vec::with_capacity(unreferenced.len());
            for (sha256, size) in unreferenced {
                match blobs.delete(user_id, &sha256).await {
                    Ok(()) => removed.push((sha256, size)),
                    Err(e) => {
                        tracing::warn!(%user_id, error = %e, "could not remove an unreferenced blob");
                    }
                }
            }
            removed
        };
        match self
            .store
            .collect_blobs(user_id, self.version, remove)
            .await
        {
            Ok(collected) => {
                self.version = collected.version;
                if !collected.removed.is_empty() {
                    tracing::debug!(%user_id, collected = collected.removed.len(), "collected unreferenced blobs");
                }
                for (sha256, size) in collected.removed {
                    if self.blob_digests.remove(&sha256) {
                        self.blob_bytes = self.blob_bytes.saturating_sub(size);
                    }
                }
            }
            // Another replica changed the skills meanwhile: its own collection, or the next
            // one here, removes what is left.
            Err(StoreError::Stale) => {
                tracing::debug!(%user_id, "skills changed during collection; left for the next one");
            }
            Err(e) => {
                tracing::warn!(%user_id, error = %e, "could not collect unreferenced blobs");
            }
        }
    }

    /// Whether a folder this replica's copies need is missing: the user's, a skill's, or the
    /// staging area (a few `stat`s, before a change or when a read found a folder gone).
    fn folders_missing(&self) -> bool {
        let gone = |dir: &Path| std::fs::symlink_metadata(dir).is_err();
        let index = self.index();
        gone(&self.staging)
            || (!index.is_empty() && gone(&self.user_root))
            || index
                .skills()
                .any(|skill| gone(&self.user_root.join(&skill.record.name)))
    }

    /// Loads the user's skills again from the database (another replica changed them): the
    /// index, each changed skill's folder made its current version from the blobs, the blob set
    /// and the version; readers are told only if what they see changed.
    async fn reload(&mut self) -> Result<(), AppError> {
        // The version first: a change committed after this read makes the next compare-and-set
        // fail and reload again, so nothing is missed.
        let Some(version) = self.store.skills_version(self.user_id).await? else {
            // The account is gone; its removal stops this workspace.
            return Ok(());
        };
        let staging = self.staging.clone();
        blocking(move || std::fs::create_dir_all(&staging))
            .await?
            .map_err(AppError::from_io)?;
        let index = load_index(
            &self.store,
            &self.blobs,
            self.user_id,
            &self.skills_root,
            &self.settings,
            self.repair,
        )
        .await?;
        (self.blob_digests, self.blob_bytes) = blob_set(&self.store, self.user_id).await?;
        self.version = version;
        let current = self.index();
        let same = current.len() == index.len()
            && index.skills().all(|skill| {
                current
                    .get(skill.record.id)
                    .is_some_and(|seen| seen.record == skill.record && seen.digest == skill.digest)
            });
        let index = Arc::new(index.with_search_from(&current));
        self.shared.index.store(Arc::clone(&index));
        prepare_search_soon(index);
        if !same && let Some(listener) = self.listener.get() {
            listener(self.user_id);
        }
        Ok(())
    }

    /// Removes stored blobs that have no row (stored for a change that a crash stopped before it
    /// was recorded) and partial copies (a write a crash cut short). Only this actor stores the
    /// user's blobs, so none is in the middle of one.
    async fn sweep_unrecorded_blobs(&mut self) {
        let stored = match self.blobs.list_removing_leftovers(self.user_id).await {
            Ok((stored, 0)) => stored,
            Ok((stored, removed)) => {
                tracing::info!(user_id = %self.user_id, removed, "removed partial blob copies a crash left");
                stored
            }
            Err(e) => {
                tracing::warn!(user_id = %self.user_id, error = %e, "could not list the user's blobs");
                return;
            }
        };
        for sha256 in stored {
            if self.blob_digests.contains(&sha256) {
                continue;
            }
            if let Err(e) = self.blobs.delete(self.user_id, &sha256).await {
                tracing::warn!(user_id = %self.user_id, error = %e, "could not remove an unrecorded blob");
            }
        }
    }

    async fn upload(
        &mut self,
        target: UploadTarget,
        payload: UploadPayload,
        cancel: &Cancel,
    ) -> Result<Uploaded, AppError> {
        let limits = self.limits();
        let max_unpacked = self.settings.max_unpacked_bytes;
        let unpacking = cancel.clone();
        // Unpacking and reading the uploaded SKILL.md files are CPU work that a hostile upload
        // can make as long as its limits allow: never on the actor's (a runtime) thread.
        let (found, ignored) = blocking(move || {
            let (skills, ignored) = match payload {
                UploadPayload::Files(parts) => {
                    let files = parts.into_iter().map(|(p, b)| (p, b.to_vec())).collect();
                    (
                        vec![UnpackedSkill {
                            folder: None,
                            root: String::new(),
                            files,
                            executable: files::ExecBits::new(),
                        }],
                        Vec::new(),
                    )
                }
                UploadPayload::Zip(bytes) => {
                    let unpacked = zip_upload::unpack(&bytes, &limits, max_unpacked, &unpacking)?;
                    (unpacked.skills, unpacked.ignored)
                }
            };
            let found: Vec<(
                UnpackedSkill,
                Result<Option<Manifest>, manifest::ManifestError>,
            )> = skills
                .into_iter()
                .map(|skill| {
                    let manifest = skill
                        .files
                        .iter()
                        .find(|(p, _)| p.as_str() == SKILL_MD)
                        .map(|(_, bytes)| manifest::parse_bytes(bytes))
                        .transpose();
                    (skill, manifest)
                })
                .collect();
            Ok::<_, UploadError>((found, ignored))
        })
        .await?
        .map_err(upload_error)?;
        let several = found.len() > 1;
        if several
            && (target.skill_id.is_some()
                || target.skill_name.is_some()
                || target.description.is_some())
        {
            return Err(AppError::Unprocessable {
                code: "several-skills",
                detail: format!(
                    "the archive holds {} skills; skill_id, skill_name and description apply to \
                     one skill: leave them out, and each skill is named by its SKILL.md",
                    found.len()
                ),
            });
        }
        let index = self.index();
        let mut plans: Vec<Plan> = Vec::with_capacity(found.len());
        let mut uploaded: Vec<(Vec<String>, bool)> = Vec::with_capacity(found.len());
        for (unpacked, uploaded_manifest) in found {
            // The uploaded SKILL.md's name, needed only when nothing else names the skill.
            let uploaded_name = || -> Result<Option<String>, AppError> {
                match &uploaded_manifest {
                    Ok(manifest) => Ok(manifest.as_ref().map(|m| m.name.clone())),
                    Err(e) => Err(manifest_error(e.clone())),
                }
            };
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
                    let named = uploaded_name()?.ok_or_else(|| {
                        AppError::validation(
                            "skill_name",
                            "give `skill_id`, `skill_name` or a SKILL.md to name the skill",
                        )
                    })?;
                    index.by_name(&named).cloned()
                }
            };
            if let Some(condition) = &target.if_match {
                condition.check(existing.as_deref())?;
            }
            let name = match (&existing, &target.skill_name) {
                (Some(skill), _) => skill_name(&skill.record.name)?,
                (None, Some(name)) => name.clone(),
                (None, None) => skill_name(&uploaded_name()?.ok_or_else(missing_skill_md)?)?,
            };
            if plans.iter().any(|p| p.name == name) {
                return Err(AppError::Unprocessable {
                    code: "duplicate-skill",
                    detail: format!(
                        "the archive holds two skills named {:?}; each skill's SKILL.md must name \
                         a different skill",
                        name.as_str()
                    ),
                });
            }
            let mut files = unpacked.files;
            if let Some(description) = target.description.clone() {
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
                let text = described(base_text, name.clone(), description).await?;
                match uploaded {
                    Some(i) => files[i].1 = text.into_bytes(),
                    None => files.push((skill_md_path()?, text.into_bytes())),
                }
            }
            let uploaded_files: Vec<String> =
                files.iter().map(|(p, _)| p.as_str().to_owned()).collect();
            let base = existing
                .as_ref()
                .map(|skill| self.user_root.join(&skill.record.name));
            let mut staged = self.stage(base, files, unpacked.executable, cancel).await?;
            staged
                .warnings
                .extend(folder_warning(unpacked.folder, &name));
            uploaded.push((uploaded_files, existing.is_none()));
            plans.push(Plan::new(name, existing, staged, None));
        }
        let skills = self.apply(plans, Vec::new()).await?;
        Ok(Uploaded {
            skills: skills
                .into_iter()
                .zip(uploaded)
                .map(|(skill, (uploaded_files, created))| UploadedSkill {
                    skill,
                    uploaded_files,
                    created,
                })
                .collect(),
            ignored,
        })
    }

    /// Makes or changes each fetched skill as a new version of exactly its fetched files (a file
    /// gone from the repository is gone from the skill), records every source, all in one
    /// transaction. A skill whose content is already its current version gets no version, only
    /// its source. A sync refuses (409 `changed-by-hand`) a skill changed by hand since its last
    /// sync, unless `force`; nothing is changed then.
    async fn sourced(
        &mut self,
        fetched: Vec<SourcedSkill>,
        force: bool,
        cancel: &Cancel,
    ) -> Result<Vec<SourcedOutcome>, AppError> {
        let index = self.index();
        let now = store::now();
        let mut plans: Vec<Plan> = Vec::new();
        let mut unchanged: Vec<NewSource> = Vec::new();
        // Each outcome in the request's order: a plan's index, or a skill left as it is.
        let mut order: Vec<(Result<usize, Arc<IndexedSkill>>, String)> = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        let all_syncs = fetched.iter().all(|f| f.skill_id.is_some());
        for item in fetched {
            cancel.check().map_err(upload_error)?;
            let skill_md = item
                .files
                .iter()
                .find(|(p, _)| p.as_str() == SKILL_MD)
                .map(|(_, bytes)| bytes.clone());
            let named = match skill_md {
                Some(bytes) => blocking(move || manifest::parse_bytes(&bytes))
                    .await?
                    .map_err(manifest_error)
                    .map(|m| Some(m.name))?,
                None => None,
            };
            let existing = match item.skill_id {
                Some(id) => Some(Arc::clone(
                    index.get(id).ok_or(AppError::NotFound("skill"))?,
                )),
                None => {
                    let named = named.as_deref().ok_or_else(missing_skill_md)?;
                    index.by_name(named).cloned()
                }
            };
            if let (Some(synced), Some(current)) = (item.synced_version, &existing)
                && current.record.version != synced
                && !force
            {
                return Err(AppError::Conflict {
                    code: "changed-by-hand",
                    detail: format!(
                        "the skill {:?} was changed here since its last sync (it is at version \
                         {}, the repository's content is version {synced}); sync with force to \
                         replace those changes with the repository's files, or keep them",
                        current.record.name, current.record.version
                    ),
                });
            }
            let name = match &existing {
                Some(skill) => skill_name(&skill.record.name)?,
                None => skill_name(named.as_deref().ok_or_else(missing_skill_md)?)?,
            };
            if !names.insert(name.as_str().to_owned()) {
                return Err(AppError::Unprocessable {
                    code: "duplicate-skill",
                    detail: format!(
                        "two folders of the repository hold skills named {:?}; each skill's \
                         SKILL.md must name a different skill",
                        name.as_str()
                    ),
                });
            }
            let mut staged = self
                .stage(None, item.files, item.executable, cancel)
                .await?;
            if let Some(current) = &existing
                && files_digest(&staged.entries) == current.digest
            {
                unchanged.push(
                    item.source
                        .record(current.record.id, current.record.version, now),
                );
                order.push((Err(Arc::clone(current)), item.source.path));
                continue;
            }
            staged.warnings.extend(folder_warning(item.folder, &name));
            let mut plan = Plan::new(name, existing, staged, None);
            plan.source = Some(item.source.clone());
            order.push((Ok(plans.len()), item.source.path));
            plans.push(plan);
        }
        let created: Vec<bool> = plans.iter().map(|p| p.existing.is_none()).collect();
        let done = if plans.is_empty() && all_syncs {
            // Nothing changed and every source exists: no version, no compare-and-set.
            for source in &unchanged {
                self.store
                    .record_sync(
                        self.user_id,
                        source.skill_id,
                        Some((&source.commit_id, source.synced_version)),
                        None,
                        now,
                    )
                    .await?;
            }
            Vec::new()
        } else {
            self.apply(plans, unchanged).await?
        };
        order
            .into_iter()
            .map(|(outcome, path)| match outcome {
                Err(skill) => Ok(SourcedOutcome {
                    skill,
                    action: SourcedAction::Unchanged,
                    path,
                }),
                Ok(i) => {
                    let skill = done.get(i).cloned().ok_or_else(|| {
                        AppError::internal("a planned skill is missing from the change's result")
                    })?;
                    let action = if created.get(i).copied().unwrap_or(false) {
                        SourcedAction::Created
                    } else {
                        SourcedAction::Updated
                    };
                    Ok(SourcedOutcome {
                        skill,
                        action,
                        path,
                    })
                }
            })
            .collect()
    }

    /// Makes a new version of every planned skill, all or nothing as far as checks go: the quota
    /// for them together, their new blobs stored, their versions and rows recorded in one
    /// transaction, then each staged folder moved into place and the index published once. A
    /// folder that cannot be moved (an I/O failure after the record) fails the request; a new
    /// skill's row is then removed again, and a folder left behind its version is materialized
    /// again when the workspace is next loaded (the record is the truth).
    ///
    /// `also`: sources to record in the same transaction for skills this change leaves as they
    /// are (an import that found a skill's content already there).
    async fn apply(
        &mut self,
        plans: Vec<Plan>,
        also: Vec<NewSource>,
    ) -> Result<Vec<Arc<IndexedSkill>>, AppError> {
        // The blobs this change adds, each once, whichever skills hold them.
        let mut adding: Vec<(String, PathBuf)> = Vec::new();
        let mut added_bytes = 0u64;
        let mut seen: HashSet<&str> = HashSet::new();
        for plan in &plans {
            for entry in &plan.staged.entries {
                if !self.blob_digests.contains(&entry.sha256) && seen.insert(&entry.sha256) {
                    adding.push((
                        entry.sha256.clone(),
                        plan.staged.staged.dir().join(&entry.path),
                    ));
                    added_bytes = added_bytes.saturating_add(entry.size);
                }
            }
        }
        self.check_quota(added_bytes)?;
        // Stored before any version refers to them: a crash from here on leaves at most blobs
        // that no version refers to.
        self.blobs
            .put_files(self.user_id, &adding)
            .await
            .map_err(blob_error)?;
        let now = store::now();
        let mut sources = also;
        let writes: Vec<SkillWrite> = plans
            .iter()
            .map(|plan| {
                let version = new_version(&plan.staged.entries, &plan.staged.manifest);
                let (id, number, write) = match &plan.existing {
                    Some(current) => (
                        current.record.id,
                        current.record.version + 1,
                        SkillWrite::Update {
                            id: current.record.id,
                            description: plan.staged.manifest.description.clone(),
                            is_active: plan.is_active,
                            version,
                        },
                    ),
                    None => {
                        let id = Uuid::new_v4();
                        let skill = NewSkill {
                            id,
                            user_id: self.user_id,
                            name: plan.name.as_str().to_owned(),
                            description: plan.staged.manifest.description.clone(),
                            skill_dir: format!("{}/{}", self.user_id, plan.name.as_str()),
                            created_at: now,
                        };
                        (id, 1, SkillWrite::Insert(skill, version))
                    }
                };
                if let Some(source) = &plan.source {
                    sources.push(source.record(id, number, now));
                }
                write
            })
            .collect();
        let records = self
            .store
            .write_skills_sourced(
                self.user_id,
                &writes,
                &sources,
                now,
                self.settings.keep_versions,
                Some(self.version),
            )
            .await?
            .ok_or(AppError::NotFound("skill"))?;
        self.version += 1;
        for (sha256, path) in adding {
            let size = std::fs::symlink_metadata(&path).map_or(0, |m| m.len());
            if self.blob_digests.insert(sha256) {
                self.blob_bytes = self.blob_bytes.saturating_add(size);
            }
        }
        // Versions past `skills.keep_versions` were pruned with the record, which is possible
        // only once a skill has more.
        let pruned = records
            .iter()
            .any(|r| r.version > i64::from(self.settings.keep_versions));
        let mut done: Vec<Arc<IndexedSkill>> = Vec::with_capacity(plans.len());
        let mut failure = None;
        for (plan, record) in plans.into_iter().zip(records) {
            let id = record.id;
            if failure.is_some() {
                if plan.existing.is_none() {
                    self.undo_insert(id).await;
                }
                continue;
            }
            let (folder, skill) = plan.staged.into_indexed(record);
            let dir = self.user_root.join(plan.name.as_str());
            let replacing = plan.existing.is_some();
            let moved = blocking(move || {
                if replacing {
                    folder.commit_replace(&dir)
                } else {
                    folder.commit_new(&dir)
                }
            })
            .await?;
            match moved {
                Ok(()) => done.push(skill),
                Err(e) => {
                    if !replacing {
                        self.undo_insert(id).await;
                    }
                    failure = Some(AppError::from_io(e));
                }
            }
        }
        if !done.is_empty() {
            self.publish(|index| {
                for skill in &done {
                    index.insert(Arc::clone(skill));
                }
            })
            .await;
        }
        // The pruned versions' blobs may go, and those of a new skill whose row was removed again
        // (no other change leaves a blob without a version).
        if pruned || failure.is_some() {
            self.collect_garbage().await;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Removes the row of a new skill whose folder could not be put in place, so that row and
    /// folder agree; if that fails too, the next load of this workspace removes the row (it has
    /// no folder).
    async fn undo_insert(&mut self, id: Uuid) {
        match self
            .store
            .delete_skill(self.user_id, id, Some(self.version))
            .await
        {
            Ok(_) => self.version += 1,
            Err(undo) => {
                tracing::error!(error = %undo, "could not remove the row of a skill whose folder failed");
            }
        }
    }

    /// Writes `files` over a copy of `base` in a staging folder and validates the result.
    async fn stage(
        &self,
        base: Option<PathBuf>,
        files: Vec<(SkillPath, Vec<u8>)>,
        executable: files::ExecBits,
        cancel: &Cancel,
    ) -> Result<StagedSkill, AppError> {
        let staging = self.staging.clone();
        let limits = self.limits();
        let cancel = cancel.clone();
        blocking(move || {
            let staged = files::write_staged(
                &staging,
                base.as_deref(),
                &files,
                &executable,
                &limits,
                &cancel,
            )
            .map_err(upload_error)?;
            examine(staged)
        })
        .await?
    }
}

/// The warning for a skill that came in a folder named other than the skill (an archive's or a
/// repository's folder): it is stored by its `SKILL.md`'s name.
fn folder_warning(folder: Option<String>, name: &SkillName) -> Option<Warning> {
    let folder = folder.filter(|f| f != name.as_str())?;
    Some(Warning {
        code: "name-mismatch",
        field: "name".to_owned(),
        message: format!(
            "the folder {folder:?} holds the skill {:?}; it is stored by its SKILL.md's name: \
             rename the folder to match, so every tool finds it under one name",
            name.as_str()
        ),
    })
}

/// A staged skill with what the index needs of it: its files, `SKILL.md`, front matter and
/// warnings. Blocking.
fn examine(staged: files::Staged) -> Result<StagedSkill, AppError> {
    let entries = files::scan(staged.dir()).map_err(AppError::from_io)?;
    let skill_md = std::fs::read_to_string(staged.dir().join(SKILL_MD))
        .ok()
        .map(Arc::from);
    let manifest = staged.manifest().clone();
    let warnings = staged.warnings().to_vec();
    Ok(StagedSkill {
        warnings,
        bytes: total(&entries),
        staged,
        entries,
        skill_md,
        manifest,
    })
}

/// A skill to make or change: its name, what it is now (if it exists), its new content staged.
struct Plan {
    name: SkillName,
    existing: Option<Arc<IndexedSkill>>,
    staged: StagedSkill,
    /// A new `is_active`, when the change sets one.
    is_active: Option<bool>,
    /// The source to record with it (an import or a sync).
    source: Option<SourceDraft>,
}

impl Plan {
    /// The plan, with the warnings the staged skill gives under its stored name.
    fn new(
        name: SkillName,
        existing: Option<Arc<IndexedSkill>>,
        mut staged: StagedSkill,
        is_active: Option<bool>,
    ) -> Plan {
        let warnings = std::mem::take(&mut staged.warnings);
        staged.warnings = skill_warnings(name.as_str(), Some(&staged.manifest), warnings);
        Plan {
            name,
            existing,
            staged,
            is_active,
            source: None,
        }
    }
}

/// A skill written to the staging area and validated, not yet in place.
struct StagedSkill {
    staged: files::Staged,
    entries: Vec<FileEntry>,
    bytes: u64,
    skill_md: Option<Arc<str>>,
    manifest: Manifest,
    warnings: Vec<Warning>,
}

impl StagedSkill {
    /// The index entry this becomes once `record` is written and the folder is in place.
    fn into_indexed(self, record: SkillRecord) -> (files::Staged, Arc<IndexedSkill>) {
        let skill = IndexedSkill {
            record,
            digest: files_digest(&self.entries),
            files: self.entries,
            bytes: self.bytes,
            skill_md: self.skill_md,
            manifest: Some(self.manifest),
            load_skill_result: std::sync::OnceLock::new(),
            search_line_json: std::sync::OnceLock::new(),
            warnings: self.warnings,
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
/// (with [`Repair::Yes`]): the database is the truth, and each skill's folder is made its current
/// version again from the blobs where it is not; a skill written before versions becomes version 1
/// from its folder.
pub(crate) async fn load_index(
    store: &Store,
    blobs: &BlobStore,
    user_id: Uuid,
    skills_root: &Path,
    settings: &SkillSettings,
    repair: Repair,
) -> Result<SkillIndex, AppError> {
    let rows = store.skills_of_user(user_id).await?;
    let mut current: HashMap<Uuid, Vec<VersionFile>> = HashMap::new();
    if rows.iter().any(|r| r.version > 0) {
        for (skill_id, file) in store.current_files(user_id).await? {
            current.entry(skill_id).or_default().push(file);
        }
    }
    let user_root = skills_root.join(user_id.to_string());
    let max_read = settings.max_file_bytes;
    let scan_root = user_root.clone();
    let Folders { found, orphans } =
        blocking(move || read_folders(&scan_root, rows, max_read, repair)).await??;
    for orphan in orphans {
        tracing::info!(%user_id, folder = %orphan, "removed a skill folder that had no database row");
    }
    let mut skills = Vec::with_capacity(found.len());
    for (mut record, mut folder) in found {
        if repair == Repair::Yes {
            if record.version == 0 {
                // Written by a release before versions: its folder becomes version 1.
                let Some(found) = &folder else {
                    tracing::warn!(%user_id, skill = %record.name, "removed a skill row whose folder is missing");
                    store.delete_skill(user_id, record.id, None).await?;
                    continue;
                };
                let dir = user_root.join(&record.name);
                record = first_version(store, blobs, &record, found, &dir, settings).await?;
            } else {
                let want = current.remove(&record.id).unwrap_or_default();
                if folder.as_ref().is_none_or(|f| !is_version(&f.files, &want)) {
                    // After a crash, or another replica's change: the record is the truth.
                    tracing::info!(%user_id, skill = %record.name, version = record.version, "the skill's folder is not its current version: making it from its blobs");
                    let staging = staging_root(skills_root);
                    let dir = user_root.join(&record.name);
                    materialize(blobs, user_id, &want, &staging, &dir, settings).await?;
                    folder = Some(blocking(move || read_folder(&dir, max_read)).await??);
                }
            }
        }
        let Some(folder) = folder else {
            continue;
        };
        let warnings = skill_warnings(
            &record.name,
            folder.manifest.as_ref(),
            files::name_warnings(&folder.files),
        );
        skills.push(IndexedSkill {
            record,
            digest: files_digest(&folder.files),
            bytes: total(&folder.files),
            warnings,
            files: folder.files,
            skill_md: folder.skill_md,
            manifest: folder.manifest,
            load_skill_result: std::sync::OnceLock::new(),
            search_line_json: std::sync::OnceLock::new(),
        });
    }
    // The search is made after the index is published (see `SkillIndex::search`).
    Ok(SkillIndex::from_skills(skills))
}

/// Whether a folder's files are exactly a version's: the same paths, contents and executable
/// bits.
fn is_version(files: &[FileEntry], version: &[VersionFile]) -> bool {
    files.len() == version.len()
        && files
            .iter()
            .zip(version)
            .all(|(f, v)| f.path == v.path && f.sha256 == v.sha256 && f.executable == v.executable)
}

/// Records a skill written before versions as version 1 of itself: its folder's files stored as
/// blobs, then the version recorded. Returns its row as it now is.
async fn first_version(
    store: &Store,
    blobs: &BlobStore,
    record: &SkillRecord,
    folder: &Folder,
    dir: &Path,
    settings: &SkillSettings,
) -> Result<SkillRecord, AppError> {
    for file in &folder.files {
        blobs
            .put_file(record.user_id, &file.sha256, &dir.join(&file.path))
            .await
            .map_err(blob_error)?;
    }
    let front_matter = folder.manifest.as_ref().map_or_else(
        || serde_json::json!({"name": record.name, "description": record.description}),
        |m| m.front_matter.clone(),
    );
    let files = manifest_of(&folder.files);
    let version = NewVersion {
        digest: storage::manifest_digest(&files),
        files,
        front_matter: front_matter.to_string(),
    };
    let description = folder
        .manifest
        .as_ref()
        .map_or_else(|| record.description.clone(), |m| m.description.clone());
    let write = [SkillWrite::Update {
        id: record.id,
        description,
        is_active: None,
        version,
    }];
    let written = store
        .write_skills(
            record.user_id,
            &write,
            store::now(),
            settings.keep_versions,
            None,
        )
        .await?
        .and_then(|mut records| records.pop())
        .ok_or(AppError::NotFound("skill"))?;
    tracing::info!(user_id = %record.user_id, skill = %record.name, "recorded a skill from before versions as its version 1");
    Ok(written)
}

/// Writes a version's files from the blobs into a staging folder and checks it as an upload.
async fn stage_from_blobs(
    blobs: &BlobStore,
    user_id: Uuid,
    version: &[VersionFile],
    staging: &Path,
    limits: &Limits,
) -> Result<files::Staged, AppError> {
    let root = staging.to_owned();
    let folder = blocking(move || files::StagingDir::create(&root))
        .await?
        .map_err(AppError::from_io)?;
    for file in version {
        let path = SkillPath::parse(&file.path).map_err(AppError::internal)?;
        let target = folder.place(&path).map_err(AppError::from_io)?;
        blobs
            .copy_to(user_id, &file.sha256, &target, file.executable)
            .await
            .map_err(blob_error)?;
    }
    let root = staging.to_owned();
    let limits = *limits;
    blocking(move || folder.finish(&root, &limits).map_err(upload_error)).await?
}

/// Writes a version's files from the blobs into a staging folder, checks it as an upload, and
/// swaps it in as `dir` (made if it is missing).
async fn materialize(
    blobs: &BlobStore,
    user_id: Uuid,
    version: &[VersionFile],
    staging: &Path,
    dir: &Path,
    settings: &SkillSettings,
) -> Result<(), AppError> {
    let limits = Limits {
        max_file_bytes: settings.max_file_bytes,
        max_skill_bytes: settings.max_skill_bytes,
        max_skill_files: settings.max_skill_files,
    };
    let staged = stage_from_blobs(blobs, user_id, version, staging, &limits).await?;
    let dir = dir.to_owned();
    blocking(move || {
        if dir.exists() {
            staged.commit_replace(&dir)
        } else {
            staged.commit_new(&dir)
        }
        .map_err(AppError::from_io)
    })
    .await?
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

/// The manifest of a skill's files.
fn manifest_of(entries: &[FileEntry]) -> Vec<VersionFile> {
    entries
        .iter()
        .map(|e| VersionFile {
            path: e.path.clone(),
            sha256: e.sha256.clone(),
            size: e.size,
            executable: e.executable,
        })
        .collect()
}

/// The digest of a skill's files' manifest: its version's digest.
pub(crate) fn files_digest(entries: &[FileEntry]) -> String {
    storage::manifest_digest(&manifest_of(entries))
}

/// The version a skill's files make: their manifest, its digest, the front matter as JSON.
fn new_version(entries: &[FileEntry], manifest: &Manifest) -> NewVersion {
    let files = manifest_of(entries);
    NewVersion {
        digest: storage::manifest_digest(&files),
        files,
        front_matter: manifest.front_matter.to_string(),
    }
}

/// A blob store failure: a full disk is 507, anything else the server's problem.
pub(crate) fn blob_error(e: BlobError) -> AppError {
    match e {
        BlobError::Io(io) => AppError::from_io(io),
        other => AppError::internal(other),
    }
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

/// `SKILL.md` with its description set to `description`: `text` with its front matter's
/// `description` replaced, or a new file for `name` when there is no text. Parsing and writing
/// the front matter run on the blocking pool, never on the actor's thread.
async fn described(
    text: Option<String>,
    name: SkillName,
    description: String,
) -> Result<String, AppError> {
    blocking(move || match text {
        Some(text) => manifest::with_description(&text, &description).map_err(manifest_error),
        None => Ok(manifest::render(&name, &description)),
    })
    .await?
}

/// Two fields of one upload name different skills.
fn name_mismatch(found: &str, expected: &str) -> AppError {
    AppError::Unprocessable {
        code: "skill-name-mismatch",
        detail: format!(
            "skill_name is {found:?}, but the skill skill_id names is {expected:?}; give one of them"
        ),
    }
}

/// Everything to warn about in a skill stored as `name`: what its front matter breaks of the
/// Agent Skills rules, a front matter `name` that is not the skill's, then `others` (its file
/// names).
pub(crate) fn skill_warnings(
    name: &str,
    manifest: Option<&Manifest>,
    others: Vec<Warning>,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if let Some(manifest) = manifest {
        warnings.extend(manifest.warnings.iter().cloned());
        if manifest.name != name {
            warnings.push(Warning {
                code: "name-mismatch",
                field: "name".to_owned(),
                message: format!(
                    "SKILL.md names the skill {:?}, but it is stored and served as {name:?} (its \
                     folder's name); clients that read the front matter see {:?}: set `name: \
                     {name}`",
                    manifest.name, manifest.name
                ),
            });
        }
    }
    warnings.extend(others);
    warnings
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
        // Nobody waits for this answer any more; should one arrive, it says what happened.
        UploadError::Cancelled => AppError::Timeout("the upload"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(n: u128, name: &str, description: &str, body: &str, active: bool) -> IndexedSkill {
        let now = store::now();
        IndexedSkill {
            record: SkillRecord {
                id: Uuid::from_u128(n),
                user_id: Uuid::nil(),
                name: name.to_owned(),
                description: description.to_owned(),
                skill_dir: name.to_owned(),
                is_active: active,
                created_at: now,
                updated_at: now,
                version: 1,
            },
            files: Vec::new(),
            digest: format!("d{n}"),
            bytes: 0,
            skill_md: Some(Arc::from(format!(
                "---\nname: {name}\ndescription: {description}\n---\n{body}"
            ))),
            manifest: None,
            load_skill_result: std::sync::OnceLock::new(),
            search_line_json: std::sync::OnceLock::new(),
            warnings: Vec::new(),
        }
    }

    /// The search index's answer is the scan's (the order of releases before posting lists), in
    /// full and in part.
    #[test]
    fn ranked_from_the_search_index_is_ranked_by_scan() {
        let subjects = ["pdf", "csv", "git", "docker", "invoice", "pdfa", "mail"];
        let actions = ["fill", "convert", "audit", "summarize", "back-up"];
        let mut skills = Vec::new();
        for (i, subject) in subjects.iter().enumerate() {
            for (j, action) in actions.iter().enumerate() {
                let n = (i * actions.len() + j) as u128 + 1;
                skills.push(skill(
                    n,
                    &format!("{subject}-{action}"),
                    &format!("{action} {subject} files.\nKeep the {subject} originals."),
                    &format!(
                        "Use this to {action} {}.",
                        subjects[(i + 1) % subjects.len()]
                    ),
                    !n.is_multiple_of(4),
                ));
            }
        }
        let index = SkillIndex::from_skills_searched(skills);
        let names = |found: &[Arc<IndexedSkill>]| -> Vec<String> {
            found.iter().map(|s| s.record.name.clone()).collect()
        };
        for query in [
            "pdf",
            "PDF-F",
            "convert pdf files",
            "summarize git",
            "Keep the",
            "originals",
            "fil",
            "  back-up  ",
            "nothing",
        ] {
            for active_only in [false, true] {
                let wanted = |s: &IndexedSkill| !active_only || s.record.is_active;
                let search = &index.search.get().unwrap().index;
                let scanned = index.ranked_by_scan(search, query, wanted, usize::MAX);
                assert_eq!(index.ranked_first(query, wanted, usize::MAX).1, scanned.1);
                assert_eq!(
                    names(&index.ranked(query, wanted)),
                    names(&scanned.0),
                    "{query:?}"
                );
                for limit in [0, 1, 3, 10] {
                    let (first, total) = index.ranked_first(query, wanted, limit);
                    assert_eq!(total, scanned.1);
                    assert_eq!(
                        names(&first),
                        names(&scanned.0[..limit.min(scanned.0.len())])
                    );
                }
            }
        }
    }

    /// A load publishes its index before the search is made: a search prepared first ranks with
    /// the search index (stemmed words found), and two at once make it once; one that did not
    /// prepare still finds names and descriptions by their parts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loaded_index_makes_its_search_once_when_first_prepared() {
        let skills = || {
            vec![
                skill(
                    1,
                    "pdf-forms",
                    "Fills in PDF forms.",
                    "Filling forms.",
                    true,
                ),
                skill(
                    2,
                    "csv-tools",
                    "Converts tables.",
                    "Converting spreadsheets.",
                    true,
                ),
            ]
        };
        let index = Arc::new(SkillIndex::from_skills(skills()));
        assert!(index.search.get().is_none(), "not made with the index");
        let names = |found: Vec<Arc<IndexedSkill>>| -> Vec<String> {
            found.into_iter().map(|s| s.record.name.clone()).collect()
        };
        // Unprepared: the substring match alone (a stemmed word in the body is not found).
        assert_eq!(names(index.ranked("pdf", |_| true)), ["pdf-forms"]);
        assert!(index.ranked("spreadsheet", |_| true).is_empty());
        let (a, b) = tokio::join!(
            tokio::spawn({
                let index = Arc::clone(&index);
                async move { index.prepare_search().await }
            }),
            tokio::spawn({
                let index = Arc::clone(&index);
                async move { index.prepare_search().await }
            })
        );
        a.unwrap();
        b.unwrap();
        let made = index.search.get().unwrap();
        assert!(!made.lags);
        assert_eq!(made.index.len(), 2);
        assert_eq!(names(index.ranked("spreadsheet", |_| true)), ["csv-tools"]);
        // A reload's index is searched from where the previous one's search is.
        let reloaded = SkillIndex::from_skills(skills()).with_search_from(&index);
        assert!(reloaded.search_from.lock().unwrap().is_some());
        reloaded.prepare_search().await;
        assert!(
            reloaded.search_from.lock().unwrap().is_none(),
            "the previous search is let go once this one is made"
        );
        assert_eq!(names(reloaded.ranked("filling", |_| true)), ["pdf-forms"]);
    }
}
