//! `/api/v1/skills/import`, `/api/v1/skills/sync`, `/api/v1/skills/sources` and a skill's
//! `/source` and `/sync`: skills from Git repositories (`crate::imports`), for the API and the
//! console (which calls the `*_as` functions with its browser session's user).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::accounts::authenticated;
use crate::actors::workspace::{SourcedAction, SourcedOutcome};
use crate::app::AppState;
use crate::error::AppError;
use crate::http::Body;
use crate::http::request::{json_body, optional_json_body};
use crate::http::response::json;
use crate::imports::{ImportReport, ImportRequest, SyncReport};
use crate::skills::Warning;
use crate::store::SourceRecord;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportBody {
    pub(crate) url: String,
    #[serde(rename = "ref")]
    pub(crate) git_ref: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) sync_interval_hours: Option<i64>,
}

#[derive(Serialize)]
struct SkillOutcome<'a> {
    id: Uuid,
    name: &'a str,
    /// The skill's folder in the repository.
    path: &'a str,
    action: SourcedAction,
    version: i64,
    warnings: &'a [Warning],
}

fn outcome_view(outcome: &SourcedOutcome) -> SkillOutcome<'_> {
    SkillOutcome {
        id: outcome.skill.record.id,
        name: &outcome.skill.record.name,
        path: &outcome.path,
        action: outcome.action,
        version: outcome.skill.record.version,
        warnings: &outcome.skill.warnings,
    }
}

#[derive(Serialize)]
struct ImportView<'a> {
    url: &'a str,
    #[serde(rename = "ref")]
    git_ref: Option<&'a str>,
    commit: &'a str,
    skills: Vec<SkillOutcome<'a>>,
    ignored: &'a [String],
}

/// `POST /skills/import {url, ref?, path?, sync_interval_hours?}`.
pub(crate) async fn import(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let body: ImportBody = json_body(req, &state.settings.server).await?;
    let report = import_as(state, me.user.id, body).await?;
    Ok(import_response(&report))
}

/// An import for `user_id`, whoever authenticated it (the API, or the console).
pub(crate) async fn import_as(
    state: &AppState,
    user_id: Uuid,
    body: ImportBody,
) -> Result<ImportReport, AppError> {
    state.rate_limits.upload(user_id)?;
    state
        .imports
        .import(
            user_id,
            ImportRequest {
                url: body.url,
                git_ref: body.git_ref,
                path: body.path,
                sync_interval_hours: body.sync_interval_hours,
            },
        )
        .await
}

fn import_response(report: &ImportReport) -> Response<Body> {
    json(
        StatusCode::OK,
        &ImportView {
            url: &report.url,
            git_ref: report.git_ref.as_deref(),
            commit: &report.commit,
            skills: report.skills.iter().map(outcome_view).collect(),
            ignored: &report.ignored,
        },
    )
}

/// A source as the API shows it.
#[derive(Serialize)]
pub(crate) struct SourceView<'a> {
    skill_id: Uuid,
    url: &'a str,
    #[serde(rename = "ref")]
    git_ref: Option<&'a str>,
    path: &'a str,
    commit: &'a str,
    /// The skill's version that holds `commit`'s files.
    synced_version: i64,
    /// Whether the skill's current version is another one: a change made here since the last
    /// sync, which a sync does not overwrite unless forced. `null` if the skill is not loaded.
    changed_by_hand: Option<bool>,
    sync_interval_hours: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    synced_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    checked_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    next_sync_at: Option<OffsetDateTime>,
    last_error: Option<&'a str>,
}

pub(crate) fn source_view(source: &SourceRecord, current_version: Option<i64>) -> SourceView<'_> {
    SourceView {
        skill_id: source.skill_id,
        url: &source.url,
        git_ref: source.git_ref.as_deref(),
        path: &source.path,
        commit: &source.commit_id,
        synced_version: source.synced_version,
        changed_by_hand: current_version.map(|v| v != source.synced_version),
        sync_interval_hours: source.sync_interval_hours,
        synced_at: source.synced_at,
        checked_at: source.checked_at,
        next_sync_at: source.next_sync_at,
        last_error: source.last_error.as_deref(),
    }
}

#[derive(Serialize)]
struct SourceList<'a> {
    items: Vec<SourceView<'a>>,
}

/// `GET /skills/sources`: every imported skill's source.
pub(crate) async fn list_sources(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let sources = state.imports.sources(me.user.id).await?;
    let index = state.workspaces.index(me.user.id).await?;
    let items = sources
        .iter()
        .filter_map(|s| {
            // A source is deleted with its skill; one whose skill this replica has not loaded
            // yet is left out rather than shown without it.
            let skill = index.get(s.skill_id)?;
            Some(source_view(s, Some(skill.record.version)))
        })
        .collect();
    Ok(json(StatusCode::OK, &SourceList { items }))
}

/// `GET /skills/{id}/source`: where the skill comes from, and how its syncs went.
pub(crate) async fn get_source(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let skill = super::skills::owned(state, me.user.id, id).await?;
    let source = state.imports.source(me.user.id, id).await?;
    Ok(json(
        StatusCode::OK,
        &source_view(&source, Some(skill.record.version)),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    /// Required, `null` to turn the periodic sync off.
    sync_interval_hours: Option<i64>,
}

/// `PATCH /skills/{id}/source {sync_interval_hours}`.
pub(crate) async fn update_source(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let skill = super::skills::owned(state, me.user.id, id).await?;
    let body: SourceBody = json_body(req, &state.settings.server).await?;
    let source = state
        .imports
        .set_interval(me.user.id, id, body.sync_interval_hours)
        .await?;
    Ok(json(
        StatusCode::OK,
        &source_view(&source, Some(skill.record.version)),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncBody {
    /// Replace changes made here since the last sync with the repository's files.
    #[serde(default)]
    pub(crate) force: bool,
}

#[derive(Serialize)]
struct SyncView<'a> {
    skill_id: Uuid,
    commit: Option<&'a str>,
    #[serde(flatten)]
    result: SyncResult<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum SyncResult<'a> {
    Done { skill: SkillOutcome<'a> },
    Failed { error: ErrorView<'a> },
}

#[derive(Serialize)]
struct ErrorView<'a> {
    code: &'a str,
    detail: String,
    status: u16,
}

fn sync_view(report: &SyncReport) -> SyncView<'_> {
    SyncView {
        skill_id: report.skill_id,
        commit: report.commit.as_deref(),
        result: match &report.outcome {
            Ok(outcome) => SyncResult::Done {
                skill: outcome_view(outcome),
            },
            Err(e) => SyncResult::Failed {
                error: ErrorView {
                    code: e.code(),
                    detail: e.to_string(),
                    status: e.status(),
                },
            },
        },
    }
}

/// `POST /skills/{id}/sync {force?}`: the skill fetched again from its source; a new version if
/// the content changed. A failure is the answer's status (409 `changed-by-hand`, 422, …).
pub(crate) async fn sync_one(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let body: SyncBody = optional_json_body(req, &state.settings.server).await?;
    let report = sync_one_as(state, me.user.id, id, body.force).await?;
    match report.outcome {
        Ok(_) => Ok(json(StatusCode::OK, &sync_view(&report))),
        Err(e) => Err(e),
    }
}

/// One skill's sync for `user_id`, whoever authenticated it.
pub(crate) async fn sync_one_as(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
    force: bool,
) -> Result<SyncReport, AppError> {
    super::skills::owned(state, user_id, id).await?;
    state.rate_limits.upload(user_id)?;
    state.imports.sync_one(user_id, id, force).await
}

#[derive(Serialize)]
struct SyncList<'a> {
    items: Vec<SyncView<'a>>,
}

/// `POST /skills/sync {force?}`: every imported skill synced, each on its own; 200 with each
/// skill's outcome or error.
pub(crate) async fn sync_all(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let body: SyncBody = optional_json_body(req, &state.settings.server).await?;
    state.rate_limits.upload(me.user.id)?;
    let reports = state.imports.sync_all(me.user.id, body.force).await?;
    Ok(json(
        StatusCode::OK,
        &SyncList {
            items: reports.iter().map(sync_view).collect(),
        },
    ))
}
