//! Skills imported from Git repositories and kept in sync with them (SPEC section 14).
//!
//! [`Imports`] fetches (`skills::git`, on the blocking pool, at most `import.max_concurrent` at
//! once), reads the skills out of the fetched commit, and hands them to the user's workspace actor
//! (`Workspaces::sourced`), which makes the versions and records the sources in one transaction.
//! An import takes every skill under a folder of the repository; a sync fetches a skill's source
//! again and makes a version only when the content changed, refusing (unless forced) to replace a
//! skill changed by hand since. [`Imports::sync_due`] is the periodic sync, run by a task in
//! `app.rs`: sources whose `sync_interval_hours` has passed are claimed (one replica gets each)
//! and synced, never forced; how it went is recorded on the source.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::actors::workspace::{SourceDraft, SourcedOutcome, SourcedSkill};
use crate::actors::workspaces::Workspaces;
use crate::config::{ImportSettings, SkillSettings};
use crate::error::AppError;
use crate::outbound::Reach;
use crate::skills::git::{self, Checkout, FetchError, FetchOptions, GitUrl};
use crate::skills::zip_upload::UnpackedSkill;
use crate::skills::{Cancel, Limits, UploadError};
use crate::store::{SourceRecord, Store};

/// The longest periodic sync interval, a year.
pub const MAX_SYNC_INTERVAL_HOURS: i64 = 24 * 366;

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub url: String,
    pub git_ref: Option<String>,
    pub path: Option<String>,
    /// `None`: keep a source's interval if it has one, else no periodic sync.
    pub sync_interval_hours: Option<i64>,
}

/// What an import did.
#[derive(Debug)]
pub struct ImportReport {
    pub url: String,
    pub git_ref: Option<String>,
    pub commit: String,
    pub skills: Vec<SourcedOutcome>,
    /// Files left out: outside every skill, other systems' litter, symbolic links, submodules.
    pub ignored: Vec<String>,
}

/// What a sync did to one skill, or why it did nothing.
#[derive(Debug)]
pub struct SyncReport {
    pub skill_id: Uuid,
    pub commit: Option<String>,
    pub outcome: Result<SourcedOutcome, AppError>,
}

/// Imports and syncs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Imports {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    workspaces: Workspaces,
    settings: ImportSettings,
    limits: Limits,
    max_unpacked_bytes: u64,
    /// Where fetches are cloned to (the skills' staging area, swept at start).
    scratch: PathBuf,
    turns: Semaphore,
}

impl Imports {
    pub fn new(
        store: Store,
        workspaces: Workspaces,
        settings: ImportSettings,
        skills: &SkillSettings,
    ) -> Imports {
        let scratch = workspaces.skills_root().join(".staging");
        let turns = Semaphore::new(usize::try_from(settings.max_concurrent.max(1)).unwrap_or(1));
        Imports {
            inner: Arc::new(Inner {
                store,
                workspaces,
                limits: Limits {
                    max_file_bytes: skills.max_file_bytes,
                    max_skill_bytes: skills.max_skill_bytes,
                    max_skill_files: skills.max_skill_files,
                },
                max_unpacked_bytes: skills.max_unpacked_bytes,
                settings,
                scratch,
                turns,
            }),
        }
    }

    fn reach(&self) -> Reach {
        if self.inner.settings.allow_private_hosts {
            Reach::Any
        } else {
            Reach::Public
        }
    }

    /// Checks an import's fields, each error naming its field.
    fn check(&self, request: &ImportRequest) -> Result<(GitUrl, Option<String>, String), AppError> {
        let mut errors = Vec::new();
        let url = GitUrl::parse(&request.url, self.reach())
            .map_err(|why| errors.push(crate::error::FieldError::new("url", why)))
            .ok();
        let git_ref = match request.git_ref.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => git::check_ref(raw)
                .map_err(|why| errors.push(crate::error::FieldError::new("ref", why)))
                .ok(),
        };
        let path = git::check_path(request.path.as_deref().unwrap_or(""))
            .map_err(|why| errors.push(crate::error::FieldError::new("path", why)))
            .ok();
        if let Some(hours) = request.sync_interval_hours
            && !(1..=MAX_SYNC_INTERVAL_HOURS).contains(&hours)
        {
            errors.push(crate::error::FieldError::new(
                "sync_interval_hours",
                format!("must be from 1 to {MAX_SYNC_INTERVAL_HOURS} hours, or left out for none"),
            ));
        }
        match (url, path) {
            (Some(url), Some(path)) if errors.is_empty() => Ok((url, git_ref, path)),
            _ => Err(AppError::Validation(errors)),
        }
    }

    /// Imports every skill under `path` of the repository at `ref`: each made, or changed to a
    /// new version of exactly the repository's files, all in one step; each records its source.
    pub async fn import(
        &self,
        user_id: Uuid,
        request: ImportRequest,
    ) -> Result<ImportReport, AppError> {
        let (url, git_ref, path) = self.check(&request)?;
        let (commit, unpacked) = {
            let base = path.clone();
            self.fetch_then(&url, git_ref.as_deref(), move |checkout, inner, cancel| {
                checkout.skills(&base, &inner.limits, inner.max_unpacked_bytes, cancel)
            })
            .await?
        };
        let skills = unpacked
            .skills
            .into_iter()
            .map(|skill| SourcedSkill {
                skill_id: None,
                synced_version: None,
                source: SourceDraft {
                    url: url.as_str().to_owned(),
                    git_ref: git_ref.clone(),
                    path: join(&path, &skill.root),
                    commit: commit.clone(),
                    sync_interval_hours: request.sync_interval_hours,
                    keep_interval: request.sync_interval_hours.is_none(),
                },
                folder: skill.folder,
                files: skill.files,
                executable: skill.executable,
            })
            .collect();
        let outcomes = self.inner.workspaces.sourced(user_id, skills, true).await?;
        Ok(ImportReport {
            url: url.as_str().to_owned(),
            git_ref,
            commit,
            skills: outcomes,
            ignored: unpacked
                .ignored
                .into_iter()
                .map(|p| join(&path, &p))
                .collect(),
        })
    }

    /// The user's sources.
    pub async fn sources(&self, user_id: Uuid) -> Result<Vec<SourceRecord>, AppError> {
        Ok(self.inner.store.sources(user_id).await?)
    }

    /// The source of one skill; 404 `no-source` when it was not imported.
    pub async fn source(&self, user_id: Uuid, skill_id: Uuid) -> Result<SourceRecord, AppError> {
        self.inner
            .store
            .source(user_id, skill_id)
            .await?
            .ok_or_else(no_source)
    }

    /// Sets or turns off a skill's periodic sync.
    pub async fn set_interval(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        hours: Option<i64>,
    ) -> Result<SourceRecord, AppError> {
        if let Some(h) = hours
            && !(1..=MAX_SYNC_INTERVAL_HOURS).contains(&h)
        {
            return Err(AppError::validation(
                "sync_interval_hours",
                format!("must be from 1 to {MAX_SYNC_INTERVAL_HOURS} hours, or null for none"),
            ));
        }
        if !self
            .inner
            .store
            .set_sync_interval(user_id, skill_id, hours, crate::store::now())
            .await?
        {
            return Err(no_source());
        }
        self.source(user_id, skill_id).await
    }

    /// Syncs one skill with its source.
    pub async fn sync_one(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        force: bool,
    ) -> Result<SyncReport, AppError> {
        let source = self.source(user_id, skill_id).await?;
        let mut reports = self.sync_group(user_id, vec![source], force).await;
        reports
            .pop()
            .ok_or_else(|| AppError::internal("a sync gave no report"))
    }

    /// Syncs every source of the user's skills, each repository fetched once.
    pub async fn sync_all(&self, user_id: Uuid, force: bool) -> Result<Vec<SyncReport>, AppError> {
        let sources = self.sources(user_id).await?;
        let mut reports = Vec::with_capacity(sources.len());
        for (_, group) in by_repository(sources) {
            reports.extend(self.sync_group(user_id, group, force).await);
        }
        Ok(reports)
    }

    /// The periodic sync: claims the sources that are due (at most 100 a round) and syncs them,
    /// never forced; how each went is recorded on its source. Returns how many were synced.
    pub async fn sync_due(&self) -> Result<usize, AppError> {
        self.sync_due_at(crate::store::now()).await
    }

    /// [`Imports::sync_due`] as if it were `now` (tests: a sync due in an hour, now).
    pub async fn sync_due_at(&self, now: time::OffsetDateTime) -> Result<usize, AppError> {
        let due = self.inner.store.claim_due_sources(now, 100).await?;
        let mut users: BTreeMap<Uuid, Vec<SourceRecord>> = BTreeMap::new();
        for source in due {
            users.entry(source.user_id).or_default().push(source);
        }
        let mut count = 0;
        for (user_id, sources) in users {
            for (_, group) in by_repository(sources) {
                for report in self.sync_group(user_id, group, false).await {
                    count += 1;
                    if let Err(e) = &report.outcome {
                        tracing::info!(%user_id, skill_id = %report.skill_id, error = %e, "a periodic sync did not go through");
                    }
                }
            }
        }
        Ok(count)
    }

    /// Syncs sources of one repository and ref: one fetch, then each skill on its own (one
    /// refused or failed does not hold back the others). Every failure is recorded on its source.
    async fn sync_group(
        &self,
        user_id: Uuid,
        group: Vec<SourceRecord>,
        force: bool,
    ) -> Vec<SyncReport> {
        let Some(first) = group.first() else {
            return Vec::new();
        };
        // A URL recorded while private hosts were allowed is checked again against today's rule.
        let fetched = match GitUrl::parse(&first.url, self.reach()) {
            Ok(url) => {
                let paths: Vec<String> = group.iter().map(|s| s.path.clone()).collect();
                self.fetch_then(
                    &url,
                    first.git_ref.as_deref(),
                    move |checkout, inner, cancel| {
                        Ok(paths
                            .iter()
                            .map(|path| {
                                checkout
                                    .skills(path, &inner.limits, inner.max_unpacked_bytes, cancel)
                                    .and_then(|unpacked| at_root(unpacked, path))
                            })
                            .collect::<Vec<_>>())
                    },
                )
                .await
            }
            Err(why) => Err(AppError::Unprocessable {
                code: "invalid-url",
                detail: format!("the source's URL is refused now: {why}"),
            }),
        };
        let (commit, found) = match fetched {
            Ok(found) => found,
            Err(e) => {
                let mut reports = Vec::with_capacity(group.len());
                for source in group {
                    self.record_failure(user_id, &source, &e).await;
                    reports.push(SyncReport {
                        skill_id: source.skill_id,
                        commit: None,
                        outcome: Err(copy_error(&e)),
                    });
                }
                return reports;
            }
        };
        let mut reports = Vec::with_capacity(group.len());
        for (source, skill) in group.into_iter().zip(found) {
            let outcome = match skill {
                Err(e) => Err(crate::actors::workspace::upload_error(e)),
                Ok(skill) => {
                    let sourced = SourcedSkill {
                        skill_id: Some(source.skill_id),
                        synced_version: Some(source.synced_version),
                        folder: skill.folder,
                        files: skill.files,
                        executable: skill.executable,
                        source: SourceDraft {
                            url: source.url.clone(),
                            git_ref: source.git_ref.clone(),
                            path: source.path.clone(),
                            commit: commit.clone(),
                            sync_interval_hours: source.sync_interval_hours,
                            keep_interval: true,
                        },
                    };
                    self.inner
                        .workspaces
                        .sourced(user_id, vec![sourced], force)
                        .await
                        .and_then(|mut done| {
                            done.pop().ok_or_else(|| {
                                AppError::internal("a sync of one skill gave no outcome")
                            })
                        })
                }
            };
            if let Err(e) = &outcome {
                self.record_failure(user_id, &source, e).await;
            }
            reports.push(SyncReport {
                skill_id: source.skill_id,
                commit: Some(commit.clone()),
                outcome,
            });
        }
        reports
    }

    async fn record_failure(&self, user_id: Uuid, source: &SourceRecord, e: &AppError) {
        let text = e.to_string();
        if let Err(e) = self
            .inner
            .store
            .record_sync(
                user_id,
                source.skill_id,
                None,
                Some(&text),
                crate::store::now(),
            )
            .await
        {
            tracing::warn!(%user_id, error = %e, "could not record a failed sync");
        }
    }

    /// Fetches `url` at `git_ref` on the blocking pool (waiting for a turn first), then runs
    /// `read` on the checkout there; returns the commit with what `read` found.
    async fn fetch_then<T: Send + 'static>(
        &self,
        url: &GitUrl,
        git_ref: Option<&str>,
        read: impl FnOnce(&Checkout, &Inner, &Cancel) -> Result<T, UploadError> + Send + 'static,
    ) -> Result<(String, T), AppError> {
        let _turn = self
            .inner
            .turns
            .acquire()
            .await
            .map_err(AppError::internal)?;
        let cancel = Cancel::default();
        let guard = cancel.on_drop();
        let inner = Arc::clone(&self.inner);
        let (url, git_ref) = (url.clone(), git_ref.map(str::to_owned));
        let options = FetchOptions {
            reach: self.reach(),
            max_bytes: inner.settings.max_bytes,
            timeout: Duration::from_secs(inner.settings.timeout_secs),
        };
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let checkout = git::fetch(&url, git_ref.as_deref(), &inner.scratch, &options, &cancel)
                .map_err(fetch_error)?;
            let found =
                read(&checkout, &inner, &cancel).map_err(crate::actors::workspace::upload_error)?;
            Ok::<_, AppError>((checkout.commit(), found))
        })
        .await
        .map_err(AppError::internal)?;
        guard.disarm();
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = done.is_ok(),
            "fetched a repository"
        );
        done
    }
}

/// The one skill at the root of a sync's folder.
fn at_root(
    unpacked: crate::skills::zip_upload::Unpacked,
    path: &str,
) -> Result<UnpackedSkill, UploadError> {
    unpacked
        .skills
        .into_iter()
        .find(|s| s.root.is_empty())
        .ok_or_else(|| {
            UploadError::Repository(format!(
                "the folder {path:?} holds no SKILL.md at that commit any more"
            ))
        })
}

/// Sources grouped by repository and ref, so each is fetched once.
fn by_repository(
    sources: Vec<SourceRecord>,
) -> BTreeMap<(String, Option<String>), Vec<SourceRecord>> {
    let mut groups: BTreeMap<(String, Option<String>), Vec<SourceRecord>> = BTreeMap::new();
    for source in sources {
        groups
            .entry((source.url.clone(), source.git_ref.clone()))
            .or_default()
            .push(source);
    }
    groups
}

fn join(base: &str, inner: &str) -> String {
    match (base.is_empty(), inner.is_empty()) {
        (true, _) => inner.to_owned(),
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}/{inner}"),
    }
}

fn no_source() -> AppError {
    AppError::NotFound("source")
}

/// A fetch failure as the API says it.
fn fetch_error(e: FetchError) -> AppError {
    match e {
        FetchError::Io(io) => AppError::from_io(io),
        FetchError::Cancelled => AppError::Timeout("the fetch"),
        FetchError::TooLarge(_) => AppError::TooLarge {
            code: "repository-too-large",
            detail: e.to_string(),
        },
        FetchError::RefNotFound(_) => AppError::Unprocessable {
            code: "ref-not-found",
            detail: e.to_string(),
        },
        FetchError::TimedOut(_) => AppError::Unprocessable {
            code: "fetch-timeout",
            detail: e.to_string(),
        },
        FetchError::Failed(_) => AppError::Unprocessable {
            code: "fetch-failed",
            detail: e.to_string(),
        },
    }
}

/// The same error again, for each source of a group whose fetch failed.
fn copy_error(e: &AppError) -> AppError {
    match e {
        AppError::TooLarge { code, detail } => AppError::TooLarge {
            code,
            detail: detail.clone(),
        },
        AppError::Unprocessable { code, detail } => AppError::Unprocessable {
            code,
            detail: detail.clone(),
        },
        AppError::Conflict { code, detail } => AppError::Conflict {
            code,
            detail: detail.clone(),
        },
        AppError::Timeout(what) => AppError::Timeout(what),
        other => AppError::internal(other.to_string()),
    }
}
