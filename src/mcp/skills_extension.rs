//! The MCP Skills extension (SEP-2640, `io.modelcontextprotocol/skills`): `skills/list`,
//! `skills/get` and `resources/directory/read` over the user's active skills.
//!
//! A skill is named by the URI of its `SKILL.md` (`skill://<name>/SKILL.md`); its entry carries
//! the front matter as written and every file with its `sha256:` digest and size, so a client can
//! fetch the files with `resources/read` and check them, and in its `_meta` the skill's version
//! and that version's digest ([`resources::version_meta`]). The index already holds each file's
//! digest and size, so none of this touches the disk.

use std::collections::BTreeMap;

use rmcp::model::{DIRECTORY_MIME_TYPE, Resource};
use serde_json::{Value, json};

use super::codes;
use super::dispatch::RpcError;
use super::resources::{self, SCHEME};
use crate::actors::workspace::{IndexedSkill, SKILL_MD, SkillIndex};

/// The extension's identifier, the key of its entry in `capabilities.extensions`.
pub const ID: &str = "io.modelcontextprotocol/skills";

/// Skills per `skills/list` page.
const SKILLS_PAGE: usize = 50;
/// Children per `resources/directory/read` page.
const DIRECTORY_PAGE: usize = 100;

/// The extension's settings as the server declares them.
pub fn capability() -> Value {
    json!({"directoryRead": true})
}

fn active(index: &SkillIndex) -> impl Iterator<Item = &std::sync::Arc<IndexedSkill>> {
    index.skills().filter(|s| s.record.is_active)
}

fn invalid(message: impl Into<String>) -> RpcError {
    RpcError::new(codes::INVALID_PARAMS, message)
}

/// A cursor of ours: `<prefix><offset>`; anything else is -32602.
fn offset(cursor: Option<&str>, prefix: &str) -> Result<usize, RpcError> {
    match cursor {
        None => Ok(0),
        Some(c) => c
            .strip_prefix(prefix)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| invalid("invalid cursor")),
    }
}

/// One skill's entry: its `SKILL.md` URI, front matter and files.
fn entry(skill: &IndexedSkill) -> Value {
    let name = &skill.record.name;
    let front_matter = skill.manifest.as_ref().map_or_else(
        || json!({"name": name, "description": skill.record.description}),
        |m| m.front_matter.clone(),
    );
    let files: Vec<Value> = skill
        .files
        .iter()
        .map(|f| {
            json!({
                "uri": resources::uri(name, &f.path),
                "digest": format!("sha256:{}", f.sha256),
                "size": f.size,
            })
        })
        .collect();
    json!({
        "uri": resources::uri(name, SKILL_MD),
        "frontmatter": front_matter,
        "resources": files,
        "_meta": resources::version_meta(skill),
    })
}

/// The `_meta` key of `skills/list`'s query: an extension of ours, following the open proposal
/// for filtering `skills/list` (which names no key yet). A plain `query` key in `_meta` is
/// taken too, for clients written to that proposal's wording.
pub const META_QUERY: &str = "io.agentskills/query";

/// The longest query `skills/list` takes, in bytes.
const MAX_QUERY_BYTES: usize = 1024;

/// The query of a `skills/list` request, from its `_meta` (`io.agentskills/query`, else
/// `query`): `None` without one or with a blank one (every skill, by name); -32602 when it is
/// not a string or is too long.
pub fn query(params: Option<&Value>) -> Result<Option<&str>, RpcError> {
    let Some(meta) = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
    else {
        return Ok(None);
    };
    let Some(value) = meta.get(META_QUERY).or_else(|| meta.get("query")) else {
        return Ok(None);
    };
    let query = value
        .as_str()
        .ok_or_else(|| {
            invalid(format!(
                "invalid params: `_meta[\"{META_QUERY}\"]` must be a string"
            ))
        })?
        .trim();
    if query.len() > MAX_QUERY_BYTES {
        return Err(invalid(format!(
            "invalid params: the query is {} bytes; it may be at most {MAX_QUERY_BYTES}",
            query.len()
        )));
    }
    Ok(Some(query).filter(|q| !q.is_empty()))
}

/// `skills/list`: a page of skills by name, or with `query` of the skills that match it, best
/// first ([`SkillIndex::ranked`]). The cursor is an offset into that order, which stays the
/// same while the skills do.
pub fn list(
    index: &SkillIndex,
    cursor: Option<&str>,
    query: Option<&str>,
) -> Result<Value, RpcError> {
    let start = offset(cursor, "s")?;
    let (page, more) = match query {
        None => {
            let mut all = active(index).skip(start);
            let page: Vec<Value> = all.by_ref().take(SKILLS_PAGE).map(|s| entry(s)).collect();
            (page, all.next().is_some())
        }
        Some(query) => {
            let end = start.saturating_add(SKILLS_PAGE);
            let (found, total) = index.ranked_first(query, |s| s.record.is_active, end);
            let page = found.iter().skip(start).map(|s| entry(s)).collect();
            (page, total > end)
        }
    };
    let mut result = json!({"skills": page});
    if more {
        result["nextCursor"] = json!(format!("s{}", start + SKILLS_PAGE));
    }
    Ok(result)
}

/// `skills/get`: the skill whose `SKILL.md` is `uri`, and its id.
pub fn get(index: &SkillIndex, uri: &str) -> Result<(uuid::Uuid, Value), RpcError> {
    let unknown = || invalid(format!("no skill has the URI {uri}"));
    let name = uri
        .strip_prefix(SCHEME)
        .and_then(|rest| rest.strip_suffix(SKILL_MD))
        .and_then(|rest| rest.strip_suffix('/'))
        .ok_or_else(unknown)?;
    let skill = index
        .by_name(name)
        .filter(|s| s.record.is_active)
        .ok_or_else(unknown)?;
    Ok((skill.record.id, json!({"skill": entry(skill)})))
}

/// `resources/directory/read`: the direct children of `skill://<name>` or of a folder in it;
/// folders have the MIME type `inode/directory`. A file or an unknown URI is -32602.
pub fn directory(index: &SkillIndex, uri: &str, cursor: Option<&str>) -> Result<Value, RpcError> {
    let not_directory = || invalid(format!("{uri} is not a directory of one of your skills"));
    let rest = uri
        .strip_prefix(SCHEME)
        .ok_or_else(not_directory)?
        .trim_end_matches('/');
    let (name, folder) = match rest.split_once('/') {
        Some((name, encoded)) => {
            let folder = percent_encoding::percent_decode_str(encoded)
                .decode_utf8()
                .map_err(|_| not_directory())?;
            (name, folder.into_owned())
        }
        None => (rest, String::new()),
    };
    let skill = index
        .by_name(name)
        .filter(|s| s.record.is_active)
        .ok_or_else(not_directory)?;
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    // Direct children: files right here, and the first component of anything deeper. Sorted by
    // path, so the listing (and its pages) is stable.
    let mut children: BTreeMap<String, Option<&crate::skills::files::FileEntry>> = BTreeMap::new();
    for file in &skill.files {
        let Some(below) = file.path.strip_prefix(&prefix) else {
            continue;
        };
        match below.split_once('/') {
            Some((sub, _)) => {
                children.entry(format!("{prefix}{sub}")).or_insert(None);
            }
            None => {
                children.insert(file.path.clone(), Some(file));
            }
        }
    }
    if children.is_empty() {
        // No file lies below it: a file's path, or nothing at all.
        return Err(not_directory());
    }
    let start = offset(cursor, "d")?;
    let page: Vec<Resource> = children
        .iter()
        .skip(start)
        .take(DIRECTORY_PAGE)
        .map(|(path, file)| {
            let child = path.rsplit('/').next().unwrap_or(path).to_owned();
            match file {
                Some(file) => Resource::new(resources::uri(name, path), child)
                    .with_mime_type(resources::mime_type(path))
                    .with_size(file.size),
                None => Resource::new(resources::uri(name, path), child)
                    .with_mime_type(DIRECTORY_MIME_TYPE),
            }
        })
        .collect();
    let mut result = json!({"resources": page});
    if children.len() > start + DIRECTORY_PAGE {
        result["nextCursor"] = json!(format!("d{}", start + DIRECTORY_PAGE));
    }
    Ok(result)
}
