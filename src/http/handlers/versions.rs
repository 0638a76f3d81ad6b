//! `/api/v1/skills/{id}/versions*` and `/api/v1/skills/{id}/diff`: a skill's immutable versions,
//! read back, exported, restored and compared.
//!
//! Reads come from the database (a version's manifest) and the blob store (its bytes), not from
//! the in-memory index, which holds the current version only. Restoring is a change like any
//! other, so it goes to the user's workspace actor.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::accounts::authenticated;
use super::skills::{build_zip, detail, download, if_match, owned, parse_path_param, zip_response};
use crate::app::AppState;
use crate::error::AppError;
use crate::http::Body;
use crate::http::response::json;
use crate::skills::diff::{self, TextChange};
use crate::store::{VersionFile, VersionRecord};

/// The most diff text one answer carries; the files past it are listed without their diff.
const MAX_DIFF_BYTES: usize = 4 * 1024 * 1024;

#[derive(Serialize)]
struct VersionSummary<'a> {
    version: i64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    file_count: i64,
    size: i64,
    /// sha256 of the version's manifest: two versions with the same files have the same digest.
    digest: &'a str,
    /// Whether this is the skill's current version.
    current: bool,
}

fn summary(record: &VersionRecord, current: i64) -> VersionSummary<'_> {
    VersionSummary {
        version: record.version,
        created_at: record.created_at,
        file_count: record.file_count,
        size: record.size,
        digest: &record.digest,
        current: record.version == current,
    }
}

#[derive(Serialize)]
struct VersionList<'a> {
    items: Vec<VersionSummary<'a>>,
    total: usize,
}

/// `GET /skills/{id}/versions`: the versions kept, newest first.
pub(crate) async fn list(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let skill = owned(state, me.user.id, id).await?;
    let versions = state.workspaces.versions(me.user.id, id).await?;
    let items: Vec<VersionSummary<'_>> = versions
        .iter()
        .map(|v| summary(v, skill.record.version))
        .collect();
    Ok(json(
        StatusCode::OK,
        &VersionList {
            total: items.len(),
            items,
        },
    ))
}

#[derive(Serialize)]
struct FileView<'a> {
    path: &'a str,
    size: u64,
    sha256: &'a str,
    executable: bool,
}

impl<'a> From<&'a VersionFile> for FileView<'a> {
    fn from(f: &'a VersionFile) -> Self {
        FileView {
            path: &f.path,
            size: f.size,
            sha256: &f.sha256,
            executable: f.executable,
        }
    }
}

#[derive(Serialize)]
struct VersionDetail<'a> {
    #[serde(flatten)]
    summary: VersionSummary<'a>,
    /// The `SKILL.md` front matter of the version, as JSON.
    front_matter: serde_json::Value,
    files: Vec<FileView<'a>>,
}

/// `GET /skills/{id}/versions/{n}`: the version with its files.
pub(crate) async fn get(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
    number: i64,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let skill = owned(state, me.user.id, id).await?;
    let (record, files) = state.workspaces.version(me.user.id, id, number).await?;
    let front_matter = serde_json::from_str(&record.front_matter).unwrap_or_default();
    Ok(json(
        StatusCode::OK,
        &VersionDetail {
            summary: summary(&record, skill.record.version),
            front_matter,
            files: files.iter().map(FileView::from).collect(),
        },
    ))
}

/// `GET /skills/{id}/versions/{n}/files/{path}`: a file of the version, byte for byte.
pub(crate) async fn get_file(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
    number: i64,
    raw_path: &str,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let path = parse_path_param(raw_path)?;
    owned(state, me.user.id, id).await?;
    let (_, files) = state.workspaces.version(me.user.id, id, number).await?;
    let file = files
        .iter()
        .find(|f| f.path == path.as_str())
        .ok_or(AppError::NotFound("file"))?;
    let bytes = state.workspaces.blob(me.user.id, &file.sha256).await?;
    Ok(download(bytes, path.as_str()))
}

/// `GET /skills/{id}/versions/{n}/export`: the version as a zip that `POST /skills/upload` takes
/// back as it is.
pub(crate) async fn export(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
    number: i64,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let skill = owned(state, me.user.id, id).await?;
    let (_, files) = state.workspaces.version(me.user.id, id, number).await?;
    let mut entries = Vec::with_capacity(files.len());
    for file in files {
        let bytes = state.workspaces.blob(me.user.id, &file.sha256).await?;
        entries.push((file.path, bytes.to_vec(), file.executable));
    }
    let name = skill.record.name.clone();
    let archive = tokio::task::spawn_blocking(move || build_zip(&name, &entries))
        .await
        .map_err(AppError::internal)??;
    Ok(zip_response(
        archive,
        &format!("{}-v{number}", skill.record.name),
    ))
}

/// `POST /skills/{id}/versions/{n}/restore`: a new current version with the files of version `n`.
/// With `If-Match`, only if the skill is still in the state its ETag names.
pub(crate) async fn restore(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
    number: i64,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let condition = if_match(req.headers())?;
    let skill = state
        .workspaces
        .restore(me.user.id, id, number, condition)
        .await?;
    tracing::info!(user_id = %me.user.id, skill = %skill.record.name, from = number, version = skill.record.version, "skill version restored");
    Ok(detail(StatusCode::OK, &skill))
}

#[derive(Serialize)]
struct Side<'a> {
    size: u64,
    sha256: &'a str,
    executable: bool,
}

impl<'a> From<&'a VersionFile> for Side<'a> {
    fn from(f: &'a VersionFile) -> Self {
        Side {
            size: f.size,
            sha256: &f.sha256,
            executable: f.executable,
        }
    }
}

/// One file that differs between the two versions.
#[derive(Serialize)]
struct FileChange<'a> {
    path: &'a str,
    /// The file in the `from` version; `null` when it was added.
    from: Option<Side<'a>>,
    /// The file in the `to` version; `null` when it was removed.
    to: Option<Side<'a>>,
    /// The unified diff, for text files; `null` with `diff_omitted` saying why otherwise.
    diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff_omitted: Option<&'static str>,
}

#[derive(Serialize)]
struct Diff<'a> {
    from: i64,
    to: i64,
    added: Vec<FileChange<'a>>,
    removed: Vec<FileChange<'a>>,
    changed: Vec<FileChange<'a>>,
    /// Files the same in both.
    unchanged: usize,
}

/// `GET /skills/{id}/diff?from=a&to=b`: what changed from version `a` to version `b` (by default
/// from the version before `to`, to the current one).
pub(crate) async fn diff(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let skill = owned(state, me.user.id, id).await?;
    let (from, to) = diff_query(req.uri().query().unwrap_or(""), skill.record.version)?;
    let (_, old) = state.workspaces.version(me.user.id, id, from).await?;
    let (_, new) = state.workspaces.version(me.user.id, id, to).await?;
    let old: BTreeMap<&str, &VersionFile> = old.iter().map(|f| (f.path.as_str(), f)).collect();
    let new: BTreeMap<&str, &VersionFile> = new.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut answer = Diff {
        from,
        to,
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        unchanged: 0,
    };
    let mut budget = MAX_DIFF_BYTES;
    let paths: std::collections::BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
    for path in paths {
        let (a, b) = (old.get(path).copied(), new.get(path).copied());
        if let (Some(a), Some(b)) = (a, b)
            && a.sha256 == b.sha256
            && a.executable == b.executable
        {
            answer.unchanged += 1;
            continue;
        }
        let (diff, diff_omitted) = text_change(state, me.user.id, path, a, b, &mut budget).await?;
        let change = FileChange {
            path,
            from: a.map(Side::from),
            to: b.map(Side::from),
            diff,
            diff_omitted,
        };
        match (a, b) {
            (None, _) => answer.added.push(change),
            (_, None) => answer.removed.push(change),
            _ => answer.changed.push(change),
        }
    }
    Ok(json(StatusCode::OK, &answer))
}

/// The diff of one file, or why there is none: `binary`, `too-large` (a side over
/// [`diff::MAX_TEXT_BYTES`]), `limit` (the answer already holds [`MAX_DIFF_BYTES`] of diffs).
async fn text_change(
    state: &AppState,
    user_id: Uuid,
    path: &str,
    a: Option<&VersionFile>,
    b: Option<&VersionFile>,
    budget: &mut usize,
) -> Result<(Option<String>, Option<&'static str>), AppError> {
    if [a, b]
        .into_iter()
        .flatten()
        .any(|f| f.size > diff::MAX_TEXT_BYTES as u64)
    {
        return Ok((None, TextChange::TooLarge.omitted()));
    }
    if *budget == 0 {
        return Ok((None, Some("limit")));
    }
    let mut sides: [Option<Bytes>; 2] = [None, None];
    for (slot, file) in sides.iter_mut().zip([a, b]) {
        if let Some(file) = file {
            *slot = Some(state.workspaces.blob(user_id, &file.sha256).await?);
        }
    }
    let path = path.to_owned();
    let change = tokio::task::spawn_blocking(move || {
        let [old, new] = &sides;
        diff::unified(&path, old.as_deref(), new.as_deref())
    })
    .await
    .map_err(AppError::internal)?;
    Ok(match change {
        TextChange::Diff(d) if d.len() > *budget => {
            *budget = 0;
            (None, Some("limit"))
        }
        TextChange::Diff(d) => {
            *budget -= d.len();
            (Some(d), None)
        }
        other => (None, other.omitted()),
    })
}

/// `from` and `to` of a diff: version numbers; `to` is the current version unless given, `from`
/// the one before `to`.
fn diff_query(query: &str, current: i64) -> Result<(i64, i64), AppError> {
    let (mut from, mut to) = (None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "from" => &mut from,
            "to" => &mut to,
            _ => continue,
        };
        let number = value
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| AppError::validation(&key, "must be a version number (1 or more)"))?;
        *slot = Some(number);
    }
    let to = to.unwrap_or(current);
    let from = from.unwrap_or((to - 1).max(1));
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_defaults_to_the_last_change() {
        assert_eq!(diff_query("", 5).unwrap(), (4, 5));
        assert_eq!(diff_query("to=3", 5).unwrap(), (2, 3));
        assert_eq!(diff_query("from=1", 5).unwrap(), (1, 5));
        assert_eq!(diff_query("from=2&to=1", 5).unwrap(), (2, 1));
        assert_eq!(diff_query("", 1).unwrap(), (1, 1));
        for bad in ["from=0", "to=-1", "from=x", "to="] {
            assert!(
                matches!(diff_query(bad, 3), Err(AppError::Validation(_))),
                "{bad}"
            );
        }
    }
}
