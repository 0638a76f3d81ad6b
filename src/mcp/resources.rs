//! Skill files as MCP resources: `skill://<skill_name>/<path>` for each file of each active skill.
//!
//! `SKILL.md` is `text/markdown` named after its skill and described by its front matter; UTF-8
//! files are text, anything else a base64 blob. Paths are percent-encoded in the URI where they
//! hold characters a URI cannot carry as they are.

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rmcp::model::{MetaObject, ReadResourceResult, Resource, ResourceContents, ResourceTemplate};

use super::McpServer;
use super::codes;
use super::dispatch::RpcError;
use crate::actors::workspace::{IndexedSkill, SKILL_MD, SkillIndex};
use crate::domain::SkillPath;
use crate::skills::files::{self, ReadError};

pub const SCHEME: &str = "skill://";
/// Resources per `resources/list` page.
const PAGE: usize = 100;

/// Characters kept as they are in a path segment of a `skill://` URI (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URI of a file of a skill.
pub fn uri(skill: &str, path: &str) -> String {
    let encoded: Vec<String> = path
        .split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    format!("{SCHEME}{skill}/{}", encoded.join("/"))
}

/// A MIME type from the file name; `text/markdown` for Markdown (and so for `SKILL.md`).
pub fn mime_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "md" | "markdown" => "text/markdown",
        "txt" | "text" => "text/plain",
        "py" => "text/x-python",
        "sh" | "bash" => "text/x-shellscript",
        "js" | "mjs" | "cjs" => "text/javascript",
        "ts" => "text/x-typescript",
        "json" => "application/json",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

fn active(index: &SkillIndex) -> impl Iterator<Item = &std::sync::Arc<IndexedSkill>> {
    index.skills().filter(|s| s.record.is_active)
}

/// One page of resources and the cursor of the next; the cursor is opaque to clients.
pub fn list(
    index: &SkillIndex,
    cursor: Option<&str>,
) -> Result<(Vec<Resource>, Option<String>), RpcError> {
    let start = match cursor {
        None => 0,
        Some(c) => c
            .strip_prefix("r")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| RpcError::new(codes::INVALID_PARAMS, "invalid cursor"))?,
    };
    let mut all = active(index).flat_map(|skill| skill.files.iter().map(move |f| (skill, f)));
    let page: Vec<Resource> = all
        .by_ref()
        .skip(start)
        .take(PAGE)
        .map(|(skill, file)| {
            let name = &skill.record.name;
            let resource = Resource::new(
                uri(name, &file.path),
                if file.path == SKILL_MD {
                    name.clone()
                } else {
                    format!("{name}/{}", file.path)
                },
            )
            .with_mime_type(mime_type(&file.path))
            .with_size(file.size)
            .with_meta(file_meta(skill, &file.sha256));
            if file.path == SKILL_MD {
                resource.with_description(skill.record.description.clone())
            } else {
                resource
            }
        })
        .collect();
    let next = (all.next().is_some()).then(|| format!("r{}", start + page.len()));
    Ok((page, next))
}

/// The `_meta` key prefix of what this server adds to MCP objects: a reverse-DNS name, as MCP
/// asks of `_meta` keys (the MCP registry's `io.github.<owner>` form).
pub const META_PREFIX: &str = "io.github.agentskills-mcp";

/// A skill's version and its digest, for a `_meta`: a client that keeps them knows which version
/// it read, and sees a new one by its number. A plain folder of skills (`stdio --skills-dir`) has
/// no versions: only the digest of its files.
pub fn version_meta(skill: &IndexedSkill) -> serde_json::Value {
    let mut meta = serde_json::json!({
        format!("{META_PREFIX}/digest"): format!("sha256:{}", skill.digest),
    });
    if skill.record.version > 0 {
        meta[format!("{META_PREFIX}/version")] = serde_json::json!(skill.record.version);
    }
    meta
}

/// A resource's `_meta`: its skill's version and digest, and its own sha256.
fn file_meta(skill: &IndexedSkill, sha256: &str) -> MetaObject {
    let mut meta = match version_meta(skill) {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    meta.insert(
        format!("{META_PREFIX}/sha256"),
        serde_json::Value::String(sha256.to_owned()),
    );
    MetaObject(meta)
}

/// The one resource template.
const TEMPLATE: &str = "skill://{skill_name}/{path}";

pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(TEMPLATE, "skill-file")
            .with_title("A file of a skill")
            .with_description("Any file of one of your skills; SKILL.md holds its instructions."),
    ]
}

/// Most completions returned at once (the protocol's cap).
const MAX_COMPLETIONS: usize = 100;

/// `completion/complete` for the `skill://{skill_name}/{path}` template: skill names, or the
/// paths of the skill named in `context.arguments.skill_name`, that start with what was typed.
pub fn complete(
    index: &SkillIndex,
    params: Option<&serde_json::Value>,
) -> Result<serde_json::Value, RpcError> {
    let invalid =
        |why: &str| RpcError::new(codes::INVALID_PARAMS, format!("invalid params: {why}"));
    let params = params.ok_or_else(|| invalid("`ref` and `argument` are required"))?;
    let reference = params
        .get("ref")
        .ok_or_else(|| invalid("`ref` is required"))?;
    let argument = params
        .get("argument")
        .ok_or_else(|| invalid("`argument` is required"))?;
    let name = argument
        .get("name")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| invalid("`argument.name` is required"))?;
    let typed = argument
        .get("value")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let candidates: Vec<String> = match (
        reference.get("type").and_then(serde_json::Value::as_str),
        reference.get("uri").and_then(serde_json::Value::as_str),
    ) {
        (Some("ref/resource"), Some(uri)) if uri == TEMPLATE => match name {
            "skill_name" => active(index).map(|s| s.record.name.clone()).collect(),
            "path" => {
                let skill = params
                    .get("context")
                    .and_then(|c| c.get("arguments"))
                    .and_then(|a| a.get("skill_name"))
                    .and_then(serde_json::Value::as_str)
                    .and_then(|n| index.by_name(n))
                    .filter(|s| s.record.is_active);
                skill
                    .map(|s| s.files.iter().map(|f| f.path.clone()).collect())
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        },
        (Some("ref/resource" | "ref/prompt"), _) => Vec::new(),
        _ => return Err(invalid("`ref` must be a ref/resource or ref/prompt")),
    };
    let matching: Vec<String> = candidates
        .into_iter()
        .filter(|c| c.starts_with(typed))
        .collect();
    let total = matching.len();
    let values: Vec<String> = matching.into_iter().take(MAX_COMPLETIONS).collect();
    Ok(
        serde_json::json!({"completion": {"values": values, "total": total, "hasMore": total > MAX_COMPLETIONS}}),
    )
}

fn not_found(uri: &str) -> RpcError {
    RpcError::new(
        codes::RESOURCE_NOT_FOUND,
        format!("resource not found: {uri}"),
    )
    .with_data(serde_json::json!({"uri": uri}))
}

/// Reads `skill://<skill>/<path>` from the user's active skills.
pub async fn read(
    index: &SkillIndex,
    server: &McpServer,
    uri_text: &str,
) -> Result<ReadResourceResult, RpcError> {
    let rest = uri_text
        .strip_prefix(SCHEME)
        .ok_or_else(|| not_found(uri_text))?;
    let (skill_name, raw_path) = rest.split_once('/').ok_or_else(|| not_found(uri_text))?;
    let path = percent_decode_str(raw_path)
        .decode_utf8()
        .ok()
        .and_then(|p| SkillPath::parse(&p).ok())
        .ok_or_else(|| not_found(uri_text))?;
    let skill = index
        .by_name(skill_name)
        .filter(|s| s.record.is_active)
        .ok_or_else(|| not_found(uri_text))?;
    let dir = server.skills().ready_dir(&skill.record).await;
    let max = server.max_read_bytes();
    let shown = path.as_str().to_owned();
    let bytes = tokio::task::spawn_blocking(move || files::read_beneath(&dir, &path, max))
        .await
        .map_err(|e| RpcError::new(codes::INTERNAL_ERROR, e.to_string()))?
        .map_err(|e| match e {
            ReadError::TooLarge { size } => RpcError::new(
                codes::INVALID_PARAMS,
                format!("{shown} is {size} bytes, more than {max}"),
            ),
            ReadError::Io(io) => RpcError::new(codes::INTERNAL_ERROR, io.to_string()),
            _ => not_found(uri_text),
        })?;
    let mime = mime_type(&shown);
    let contents = match String::from_utf8(bytes) {
        Ok(text) => ResourceContents::text(text, uri_text).with_mime_type(mime),
        Err(e) => ResourceContents::blob(
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            uri_text,
        )
        .with_mime_type(mime),
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_encode_what_they_must() {
        assert_eq!(uri("pdf", "SKILL.md"), "skill://pdf/SKILL.md");
        assert_eq!(
            uri("pdf", "scripts/convert me.py"),
            "skill://pdf/scripts/convert%20me.py"
        );
        assert_eq!(uri("pdf", "a/é#?.txt"), "skill://pdf/a/%C3%A9%23%3F.txt");
        assert_eq!(mime_type("SKILL.md"), "text/markdown");
        assert_eq!(mime_type("x.PY"), "text/x-python");
        assert_eq!(mime_type("blob"), "application/octet-stream");
    }
}
