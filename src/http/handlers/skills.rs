//! `/api/v1/skills*`: a user's skills, their files, uploads and exports.
//!
//! Reads come from the user's in-memory index (no database, no directory scan); changes go to the
//! user's workspace actor. Another user's skill is 404 everywhere.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Checks;
use super::accounts::authenticated;
use crate::actors::workspace::{IfMatch, IndexedSkill, UploadPayload, UploadTarget, UploadedSkill};
use crate::app::AppState;
use crate::domain::{SkillName, SkillPath};
use crate::error::{AppError, FieldError};
use crate::http::Body;
use crate::http::request::json_body;
use crate::http::response::{full, json, no_content, with_body};
use crate::skills::Warning;
use crate::skills::files::{self, FileEntry, ReadError};

const MAX_LIMIT: usize = 100;
const DEFAULT_LIMIT: usize = 20;

#[derive(Serialize)]
struct SkillSummary<'a> {
    id: Uuid,
    name: &'a str,
    description: &'a str,
    is_active: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    file_count: usize,
    /// The current version's number.
    version: i64,
}

impl<'a> From<&'a IndexedSkill> for SkillSummary<'a> {
    fn from(s: &'a IndexedSkill) -> Self {
        SkillSummary {
            id: s.record.id,
            name: &s.record.name,
            description: &s.record.description,
            is_active: s.record.is_active,
            created_at: s.record.created_at,
            updated_at: s.record.updated_at,
            file_count: s.files.len(),
            version: s.record.version,
        }
    }
}

#[derive(Serialize)]
struct SkillDetail<'a> {
    #[serde(flatten)]
    summary: SkillSummary<'a>,
    skill_dir: &'a str,
    files: &'a [FileEntryView<'a>],
    warnings: &'a [Warning],
}

#[derive(Serialize)]
struct FileEntryView<'a> {
    path: &'a str,
    size: u64,
    sha256: &'a str,
}

fn file_views(files: &[FileEntry]) -> Vec<FileEntryView<'_>> {
    files
        .iter()
        .map(|f| FileEntryView {
            path: &f.path,
            size: f.size,
            sha256: &f.sha256,
        })
        .collect()
}

pub(crate) fn detail(status: StatusCode, skill: &IndexedSkill) -> Response<Body> {
    let files = file_views(&skill.files);
    let response = json(
        status,
        &SkillDetail {
            summary: SkillSummary::from(skill),
            skill_dir: &skill.record.skill_dir,
            files: &files,
            warnings: &skill.warnings,
        },
    );
    with_etag(response, skill)
}

/// `response` with the skill's `ETag`: what a client sends back in `If-Match` to change the skill
/// only if nobody changed it since.
pub(crate) fn with_etag(mut response: Response<Body>, skill: &IndexedSkill) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&skill.etag()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The `If-Match` condition of a request, if it has one: `*`, or a list of entity tags (RFC
/// 9110, section 13.1.1). A value that is neither is 400, rather than a condition that silently
/// never holds.
pub(crate) fn if_match(headers: &http::HeaderMap) -> Result<Option<IfMatch>, AppError> {
    let mut tags = Vec::new();
    let mut any = false;
    for value in headers.get_all(header::IF_MATCH) {
        let text = value.to_str().map_err(|_| invalid_if_match())?;
        for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let opaque = tag.strip_prefix("W/").unwrap_or(tag);
            if tag == "*" {
                any = true;
            } else if opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"') {
                tags.push(tag.to_owned());
            } else {
                return Err(invalid_if_match());
            }
        }
    }
    Ok(match (any, tags.is_empty()) {
        (true, _) => Some(IfMatch::Any),
        (false, false) => Some(IfMatch::Tags(tags)),
        (false, true) => None,
    })
}

fn invalid_if_match() -> AppError {
    AppError::BadRequest {
        code: "if-match-invalid",
        detail: "If-Match must be * or entity tags as the ETag header gives them (\"v3\", quotes \
                 included)"
            .to_owned(),
    }
}

#[derive(Serialize)]
struct SkillPage<'a> {
    items: Vec<SkillSummary<'a>>,
    total: usize,
    skip: usize,
    limit: usize,
}

/// `GET /skills?skip=0&limit=20&search=`.
pub(crate) async fn list(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let (skip, limit, search) = list_query(req.uri().query().unwrap_or(""))?;
    let index = state.workspaces.index(me.user.id).await?;
    if search.is_some() {
        index.prepare_search().await;
    }
    let (page, total) = index.page(search.as_deref(), skip, limit);
    Ok(json(
        StatusCode::OK,
        &SkillPage {
            items: page
                .iter()
                .map(|s| SkillSummary::from(s.as_ref()))
                .collect(),
            total,
            skip,
            limit,
        },
    ))
}

fn list_query(query: &str) -> Result<(usize, usize, Option<String>), AppError> {
    let mut checks = Checks::default();
    let (mut skip, mut limit, mut search) = (Some(0), Some(DEFAULT_LIMIT), None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "skip" => {
                skip = checks.check(
                    "skip",
                    value
                        .parse::<usize>()
                        .map_err(|_| "must be a whole number ≥ 0"),
                )
            }
            "limit" => {
                limit = checks.check(
                    "limit",
                    match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                        _ => Err("must be a whole number from 1 to 100"),
                    },
                )
            }
            "search" => {
                search = checks
                    .check(
                        "search",
                        if value.chars().count() <= 200 {
                            Ok(Some(value.into_owned()))
                        } else {
                            Err("must be at most 200 characters")
                        },
                    )
                    .flatten()
            }
            _ => {}
        }
    }
    let (skip, limit) = checks.finish(skip.zip(limit))?;
    Ok((skip, limit, search))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    description: String,
}

#[derive(Serialize)]
struct Created<'a> {
    id: Uuid,
    name: &'a str,
    description: &'a str,
    is_active: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    skill_dir: &'a str,
    version: i64,
    warnings: &'a [Warning],
}

/// `POST /skills {name, description}`: a new skill with a `SKILL.md` made from them.
pub(crate) async fn create(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let body: CreateBody = json_body(req, &state.settings.server).await?;
    let skill = create_skill(state, me.user.id, &body.name, &body.description).await?;
    let response = json(
        StatusCode::CREATED,
        &Created {
            id: skill.record.id,
            name: &skill.record.name,
            description: &skill.record.description,
            is_active: skill.record.is_active,
            created_at: skill.record.created_at,
            skill_dir: &skill.record.skill_dir,
            version: skill.record.version,
            warnings: &skill.warnings,
        },
    );
    Ok(with_etag(response, &skill))
}

/// A new skill's checks and the skill, for the API and the console.
pub(crate) async fn create_skill(
    state: &AppState,
    user_id: Uuid,
    name: &str,
    description: &str,
) -> Result<Arc<IndexedSkill>, AppError> {
    let mut checks = Checks::default();
    let name = checks.check("name", SkillName::parse(name));
    let description = checks.check("description", check_description(description));
    let (name, description) = checks.finish(name.zip(description))?;
    let skill = state.workspaces.create(user_id, name, description).await?;
    tracing::info!(%user_id, skill = %skill.record.name, "skill created");
    Ok(skill)
}

/// A description the API is to write into `SKILL.md`: not empty, within the front matter's room
/// (over 1024 characters is accepted, with a warning in the answer).
pub(crate) fn check_description(raw: &str) -> Result<String, String> {
    crate::skills::manifest::check_description(raw)
        .map(str::to_owned)
        .map_err(|e| {
            e.message
                .trim_start_matches("SKILL.md: `description` ")
                .to_owned()
        })
}

/// The user's skill `id`, or 404.
pub(crate) async fn owned(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
) -> Result<Arc<IndexedSkill>, AppError> {
    let index = state.workspaces.index(user_id).await?;
    index.get(id).cloned().ok_or(AppError::NotFound("skill"))
}

/// `GET /skills/{id}`: the skill with its files.
pub(crate) async fn get(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let skill = owned(state, me.user.id, id).await?;
    Ok(detail(StatusCode::OK, &skill))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    description: Option<String>,
    is_active: Option<bool>,
}

/// `PUT /skills/{id} {description?, is_active?}`; the description is written into `SKILL.md` too
/// (a new version). With `If-Match`, only if the skill is still in the state its ETag names.
pub(crate) async fn update(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let condition = if_match(req.headers())?;
    let body: UpdateBody = json_body(req, &state.settings.server).await?;
    let skill = update_skill(
        state,
        me.user.id,
        id,
        body.description.as_deref(),
        body.is_active,
        condition,
    )
    .await?;
    Ok(detail(StatusCode::OK, &skill))
}

/// A change of description (written into `SKILL.md`) or of the active flag, for the API and the
/// console.
pub(crate) async fn update_skill(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
    description: Option<&str>,
    is_active: Option<bool>,
    if_match: Option<IfMatch>,
) -> Result<Arc<IndexedSkill>, AppError> {
    let mut checks = Checks::default();
    let description = description.map(|d| checks.check("description", check_description(d)));
    let description = checks.finish(Some(description.flatten()))?;
    state
        .workspaces
        .update(user_id, id, description, is_active, if_match)
        .await
}

/// `DELETE /skills/{id}`: the row and the folder.
pub(crate) async fn delete(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    delete_skill(state, me.user.id, id).await?;
    Ok(no_content())
}

/// Deletes one of the user's skills, row and folder.
pub(crate) async fn delete_skill(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
) -> Result<(), AppError> {
    state.workspaces.delete(user_id, id).await?;
    tracing::info!(%user_id, skill_id = %id, "skill deleted");
    Ok(())
}

#[derive(Serialize)]
struct FileList<'a> {
    items: Vec<FileEntryView<'a>>,
    total: usize,
}

/// `GET /skills/{id}/files`.
pub(crate) async fn list_files(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let skill = owned(state, me.user.id, id).await?;
    let items = file_views(&skill.files);
    Ok(json(
        StatusCode::OK,
        &FileList {
            total: items.len(),
            items,
        },
    ))
}

/// `GET /skills/{id}/files/{path}`: the raw bytes, read without following symlinks.
pub(crate) async fn get_file(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
    raw_path: &str,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let (shown, bytes) = read_file(state, me.user.id, id, raw_path).await?;
    Ok(download(bytes, &shown))
}

/// A skill file's bytes (its path as given in the URL, percent-encoded), read without following
/// symlinks, with its path: for the API and the console.
pub(crate) async fn read_file(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
    raw_path: &str,
) -> Result<(String, Vec<u8>), AppError> {
    let path = parse_path_param(raw_path)?;
    let skill = owned(state, user_id, id).await?;
    let dir = state.workspaces.ready_dir(&skill.record).await;
    let max = state.settings.skills.max_skill_bytes;
    let shown = path.as_str().to_owned();
    let bytes = tokio::task::spawn_blocking(move || files::read_beneath(&dir, &path, max))
        .await
        .map_err(AppError::internal)?
        .map_err(|e| read_error(e, &shown))?;
    Ok((shown, bytes))
}

/// A file as a download: `application/octet-stream` and `Content-Disposition: attachment`, so
/// no browser shows it as a page of this origin.
pub(crate) fn download(bytes: impl Into<Bytes>, path: &str) -> Response<Body> {
    let mut response = with_body(StatusCode::OK, "application/octet-stream", full(bytes));
    let file_name = path.rsplit('/').next().unwrap_or("file");
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        file_name.replace(
            |c: char| c == '"' || c == '\\' || !c.is_ascii_graphic() && c != ' ',
            "_"
        )
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The path part of the URL, percent-decoded and validated.
pub(crate) fn parse_path_param(raw: &str) -> Result<SkillPath, AppError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| AppError::validation("path", "must be UTF-8"))?;
    SkillPath::parse(&decoded).map_err(|e| AppError::validation("path", e))
}

fn read_error(e: ReadError, path: &str) -> AppError {
    match e {
        ReadError::TooLarge { size } => AppError::TooLarge {
            code: "file-too-large",
            detail: format!("{path} is {size} bytes, more than can be read at once"),
        },
        ReadError::Io(io) => AppError::internal(io),
        // Missing, a directory, a symlink or a special file: there is no such file to read.
        _ => AppError::NotFound("file"),
    }
}

/// `GET /skills/{id}/export`: a zip with the skill's files under a folder named after it, which
/// is a layout `POST /skills/upload` takes back.
pub(crate) async fn export(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    export_skill(state, me.user.id, id).await
}

/// A skill as a zip, for the API and the console.
pub(crate) async fn export_skill(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let skill = owned(state, user_id, id).await?;
    let dir = state.workspaces.ready_dir(&skill.record).await;
    let max = state.settings.skills.max_skill_bytes;
    let name = skill.record.name.clone();
    let stem = name.clone();
    let archive = tokio::task::spawn_blocking(move || {
        let mut files = Vec::with_capacity(skill.files.len());
        for entry in &skill.files {
            let Ok(path) = SkillPath::parse(&entry.path) else {
                continue;
            };
            match files::read_beneath(&dir, &path, max) {
                Ok(bytes) => files.push((entry.path.clone(), bytes, entry.executable)),
                // Changed since it was indexed (a script removed or replaced it): left out.
                Err(ReadError::Io(e)) => return Err(AppError::internal(e)),
                Err(_) => {}
            }
        }
        build_zip(&name, &files)
    })
    .await
    .map_err(AppError::internal)??;
    Ok(zip_response(archive, &stem))
}

/// A zip to download as `<file_stem>.zip`.
pub(crate) fn zip_response(archive: Vec<u8>, file_stem: &str) -> Response<Body> {
    let mut response = with_body(StatusCode::OK, "application/zip", full(archive));
    // Skill names are `a-z0-9-` (and version numbers digits), always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_stem}.zip\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// A zip of a skill's files (path, bytes, executable) under a folder named `name`: a layout
/// `POST /skills/upload` takes back as it is. Scripts keep their executable bit (mode 0755, the
/// rest 0644).
pub(crate) fn build_zip(
    name: &str,
    entries: &[(String, Vec<u8>, bool)],
) -> Result<Vec<u8>, AppError> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, bytes, executable) in entries {
        let mode = if *executable { 0o755 } else { 0o644 };
        zip.start_file(format!("{name}/{path}"), options.unix_permissions(mode))
            .map_err(AppError::internal)?;
        zip.write_all(bytes).map_err(AppError::internal)?;
    }
    Ok(zip.finish().map_err(AppError::internal)?.into_inner())
}

/// Form fields an upload may have.
const UPLOAD_FIELDS: [&str; 5] = ["skill_id", "skill_name", "description", "files", "files[]"];

/// `POST /skills/upload` (multipart: `skill_id?`, `skill_name?`, `description?`, `files[]`).
pub(crate) async fn upload(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    upload_as(state, me.user.id, req).await
}

/// An upload for `user_id`, whoever authenticated it: the API's bearer token, or the console's
/// browser session with its CSRF token and `Origin` (the console's script posts the same
/// multipart body the API takes, and gets the same answer).
pub(crate) async fn upload_as(
    state: &AppState,
    user_id: Uuid,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    state.rate_limits.upload(user_id)?;
    let condition = if_match(req.headers())?;
    let settings = &state.settings;
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or(AppError::Unprocessable {
            code: "multipart-expected",
            detail: "an upload must be multipart/form-data with a boundary".to_owned(),
        })?;
    let max_body = settings.skills.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(AppError::PayloadTooLarge(
            usize::try_from(max_body).unwrap_or(usize::MAX),
        ));
    }
    let constraints = multer::Constraints::new()
        .allowed_fields(UPLOAD_FIELDS.to_vec())
        .size_limit(
            multer::SizeLimit::new()
                .whole_stream(max_body)
                .per_field(settings.skills.max_file_bytes)
                .for_field("skill_id", 64)
                .for_field("skill_name", 256)
                .for_field("description", 16 * 1024),
        );
    // The whole body is read first (it is bounded by `skills.max_upload_bytes`), so a refusal of
    // one of its parts reaches a client that is still sending instead of a reset connection.
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs(settings.server.body_read_timeout_secs);
    let body = tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| AppError::BodyTimeout)?
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                AppError::PayloadTooLarge(limit)
            } else {
                AppError::Unprocessable {
                    code: "multipart-invalid",
                    detail: format!("the body could not be read: {e}"),
                }
            }
        })?
        .to_bytes();
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let max_parts = settings.skills.max_skill_files + UPLOAD_FIELDS.len();
    let form = read_upload(multipart, max_parts, max_body).await?;
    let (target, payload) = form.into_request(condition)?;
    let uploaded = state.workspaces.upload(user_id, target, payload).await?;
    for one in &uploaded.skills {
        tracing::info!(%user_id, skill = %one.skill.record.name, files = one.uploaded_files.len(), created = one.created, "skill uploaded");
    }
    let skills: Vec<UploadedView<'_>> = uploaded.skills.iter().map(UploadedView::from).collect();
    let single = match skills.as_slice() {
        [one] => Some(one),
        _ => None,
    };
    let response = json(
        StatusCode::CREATED,
        &UploadAnswer {
            single,
            skills: &skills,
            ignored: &uploaded.ignored,
        },
    );
    Ok(match uploaded.skills.as_slice() {
        [one] => with_etag(response, &one.skill),
        _ => response,
    })
}

/// An upload's answer: each skill it made or changed, and what of an archive was left out. An
/// upload of one skill (nearly all of them) also has that skill's fields at the top.
#[derive(Serialize)]
struct UploadAnswer<'a> {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    single: Option<&'a UploadedView<'a>>,
    skills: &'a [UploadedView<'a>],
    ignored: &'a [String],
}

#[derive(Serialize)]
struct UploadedView<'a> {
    id: Uuid,
    name: &'a str,
    description: &'a str,
    created: bool,
    version: i64,
    uploaded_files: &'a [String],
    warnings: &'a [Warning],
}

impl<'a> From<&'a UploadedSkill> for UploadedView<'a> {
    fn from(one: &'a UploadedSkill) -> Self {
        UploadedView {
            id: one.skill.record.id,
            name: &one.skill.record.name,
            description: &one.skill.record.description,
            created: one.created,
            version: one.skill.record.version,
            uploaded_files: &one.uploaded_files,
            warnings: &one.skill.warnings,
        }
    }
}

/// The fields of an upload as they arrived.
#[derive(Default)]
struct UploadForm {
    skill_id: Option<String>,
    skill_name: Option<String>,
    description: Option<String>,
    files: Vec<(String, Bytes)>,
}

async fn read_upload(
    mut multipart: multer::Multipart<'static>,
    max_parts: usize,
    max_body: u64,
) -> Result<UploadForm, AppError> {
    let mut form = UploadForm::default();
    let mut parts = 0;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, max_body))?
    {
        parts += 1;
        if parts > max_parts {
            return Err(AppError::TooLarge {
                code: "too-many-parts",
                detail: format!("an upload may have at most {max_parts} parts"),
            });
        }
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e, max_body))?;
        let text = || {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| AppError::validation(&name, "must be UTF-8 text"))
        };
        // A text field given twice is refused: taking the first or the last would each surprise
        // someone (and a proxy or client could add one that the user never sees).
        let once = |slot: &mut Option<String>| -> Result<(), AppError> {
            if slot.is_some() {
                return Err(AppError::validation(
                    &name,
                    "is given more than once; give each of skill_id, skill_name and description at most once",
                ));
            }
            *slot = Some(text()?);
            Ok(())
        };
        match name.as_str() {
            "skill_id" => once(&mut form.skill_id)?,
            "skill_name" => once(&mut form.skill_name)?,
            "description" => once(&mut form.description)?,
            _ => {
                let file_name = file_name.ok_or_else(|| {
                    AppError::validation(
                        "files",
                        "each file part needs a filename: its path inside the skill",
                    )
                })?;
                form.files.push((file_name, bytes));
            }
        }
    }
    Ok(form)
}

impl UploadForm {
    fn into_request(
        self,
        if_match: Option<IfMatch>,
    ) -> Result<(UploadTarget, UploadPayload), AppError> {
        let mut errors: Vec<FieldError> = Vec::new();
        let skill_id = self
            .skill_id
            .and_then(|raw| match Uuid::parse_str(raw.trim()) {
                Ok(id) => Some(id),
                Err(_) => {
                    errors.push(FieldError::new("skill_id", "must be a skill id (a UUID)"));
                    None
                }
            });
        let skill_name = self
            .skill_name
            .and_then(|raw| match SkillName::parse(raw.trim()) {
                Ok(name) => Some(name),
                Err(e) => {
                    errors.push(FieldError::new("skill_name", e));
                    None
                }
            });
        let description = self
            .description
            .and_then(|raw| match check_description(&raw) {
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(FieldError::new("description", e));
                    None
                }
            });
        if self.files.is_empty() && description.is_none() {
            errors.push(FieldError::new("files", "give at least one file"));
        }
        let single_zip =
            self.files.len() == 1 && self.files[0].0.to_ascii_lowercase().ends_with(".zip");
        let payload = if single_zip {
            self.files
                .into_iter()
                .next()
                .map(|(_, bytes)| UploadPayload::Zip(bytes))
        } else {
            let mut parts = Vec::with_capacity(self.files.len());
            for (raw, bytes) in self.files {
                match SkillPath::parse(&raw) {
                    Ok(path)
                        if parts
                            .iter()
                            .any(|(p, _): &(SkillPath, Bytes)| p.as_str() == path.as_str()) =>
                    {
                        errors.push(FieldError::new(
                            "files",
                            format!("{:?} is given twice", path.as_str()),
                        ));
                    }
                    Ok(path) => parts.push((path, bytes)),
                    Err(e) => errors.push(FieldError::new("files", format!("{raw:?}: {e}"))),
                }
            }
            Some(UploadPayload::Files(parts))
        };
        match payload {
            Some(payload) if errors.is_empty() => Ok((
                UploadTarget {
                    skill_id,
                    skill_name,
                    description,
                    if_match,
                },
                payload,
            )),
            _ => Err(AppError::Validation(errors)),
        }
    }
}

fn multipart_error(e: multer::Error, max_body: u64) -> AppError {
    match e {
        multer::Error::StreamSizeExceeded { .. } => {
            AppError::PayloadTooLarge(usize::try_from(max_body).unwrap_or(usize::MAX))
        }
        multer::Error::FieldSizeExceeded { field_name, limit } => AppError::TooLarge {
            code: "file-too-large",
            detail: format!(
                "the part {:?} is larger than {limit} bytes",
                field_name.unwrap_or_default()
            ),
        },
        multer::Error::UnknownField { field_name } => AppError::validation(
            field_name.as_deref().unwrap_or("body"),
            "unknown field: an upload takes skill_id, skill_name, description and files",
        ),
        other => AppError::Unprocessable {
            code: "multipart-invalid",
            detail: format!("the multipart body could not be read: {other}"),
        },
    }
}
