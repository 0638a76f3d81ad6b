//! The four tools of the original AgentSkills MCP server, with its names, arguments and text, and
//! a fifth of ours, `search_skills`: the skills that match a query, ranked
//! ([`crate::skills::search`]), in `load_skill_metadata`'s line format.
//!
//! Failures are results with `isError: true` and a sentence saying what is wrong, never an empty
//! string and never a JSON-RPC error (an unknown tool name is the one JSON-RPC error: -32602).
//! Only the user's active skills are visible.

use std::sync::Arc;

use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::{Value, json};
use uuid::Uuid;

use super::McpServer;
use super::dispatch::{Caller, RpcError};
use crate::actors::workspace::{IndexedSkill, SKILL_MD, SkillIndex};
use crate::domain::{Scopes, SkillPath};
use crate::sandbox::Outcome;
use crate::skills::files::{self, ReadError};

/// Given to clients at `initialize`.
pub const INSTRUCTIONS: &str = "This server holds your Agent Skills. Call load_skill_metadata to see \
which skills exist, load_skill to read one skill's instructions (SKILL.md), read_reference_file to \
read the other files it mentions, and run_shell_command to run its scripts. When the listing does \
not show a skill for the task (a user with many skills may get only the most recently used ones), \
call search_skills with a few words about the task to find it.";

const METADATA_HEADER: &str =
    "Available skills (each line is \"- <skill_name>: <skill_description>\"):";

/// The tool that searches.
pub const SEARCH_SKILLS: &str = "search_skills";
/// `search_skills`' answers when `limit` is not given, and at most.
const SEARCH_DEFAULT_LIMIT: usize = 10;
const SEARCH_MAX_LIMIT: usize = 50;
/// The longest query `search_skills` takes, in bytes: words about a task, not a document.
const SEARCH_MAX_QUERY_BYTES: usize = 1024;

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The tools a credential with `scopes` may call: `run_shell_command` only with `skills:run`.
pub fn definitions_for(scopes: Scopes) -> Vec<Tool> {
    let mut tools = definitions();
    if !scopes.contains(Scopes::RUN) {
        tools.retain(|t| t.name != RUN_SHELL_COMMAND);
    }
    tools
}

/// The tool that needs `skills:run`.
pub const RUN_SHELL_COMMAND: &str = "run_shell_command";

/// What a caller without `skills:run` is told when it calls `run_shell_command` anyway.
pub const NEEDS_RUN_SCOPE: &str = "This token may not run commands: run_shell_command needs the \
    skills:run scope, and this token has skills:read only. Make a token with skills:run (or \
    sign in again allowing it) to run commands.";

/// What `tools/list` returns to a credential with every scope.
pub fn definitions() -> Vec<Tool> {
    // Names, descriptions and argument descriptions as the original server (mcp-agentskills 0.1.2)
    // gives them, except run_shell_command's, which here runs in a scratch copy of the skill's
    // folder by itself: an agent that expects its writes to last should know they do not.
    let skill_name = json!({"type": "string", "description": "skill name"});
    let mut run = Tool::new(
        "run_shell_command",
        "Run a shell command (sh -c) in the skill's folder, in a sandbox, to run the skill's scripts. \
         It runs in a scratch copy of the skill's current version: files it writes are \
         discarded after the run and never change the skill (only its owner's uploads and edits \
         make a new version). Returns stdout, stderr and the exit code.",
        schema(json!({
            "type": "object",
            "properties": {
                "skill_name": skill_name,
                "command": {"type": "string", "description": "shell command, run with sh -c in the skill's folder"}
            },
            "required": ["skill_name", "command"]
        })),
    );
    run.output_schema = Some(schema(json!({
        "type": "object",
        "properties": {
            "exit_code": {"type": ["integer", "null"], "description": "The exit code; null if a signal ended the command."},
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "timed_out": {"type": "boolean"},
            "truncated": {"type": "boolean", "description": "Whether stdout or stderr was cut at its size limit."},
            "signal": {"type": ["integer", "null"], "description": "The signal that ended the command, if one did."},
            "duration_ms": {"type": "integer", "description": "How long the command ran."}
        },
        "required": ["exit_code", "stdout", "stderr", "timed_out", "truncated"]
    })));
    vec![
        Tool::new(
            "load_skill_metadata",
            "Load metadata (name and description) for all available skills from the skills directory.",
            schema(json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "load_skill",
            "Load one skill's instructions from the SKILL.md.",
            schema(json!({
                "type": "object",
                "properties": {"skill_name": skill_name},
                "required": ["skill_name"]
            })),
        ),
        Tool::new(
            "read_reference_file",
            "Read a reference file from a skill (e.g., forms.md, reference.md, ooxml.md)",
            schema(json!({
                "type": "object",
                "properties": {
                    "skill_name": skill_name,
                    "file_name": {"type": "string", "description": "reference file name or file path"}
                },
                "required": ["skill_name", "file_name"]
            })),
        ),
        run,
        Tool::new(
            SEARCH_SKILLS,
            "Search the available skills by what they do: returns the skills whose name, \
             description or instructions match the query, best match first, one line each \
             (\"- <skill_name>: <skill_description>\", as load_skill_metadata lists them). Call \
             load_skill_metadata first; when the skill a task needs is not among the skills it \
             lists (a user with many skills may get only the most recently used, with a last line \
             saying so), search here with a few words about the task, then call load_skill with \
             the name found.",
            schema(json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "words about the task or the skill, e.g. \"fill a pdf form\""},
                    "limit": {"type": "integer", "minimum": 1, "maximum": SEARCH_MAX_LIMIT, "description": "how many skills to return at most (default 10)"}
                },
                "required": ["query"]
            })),
        ),
    ]
}

fn text(result: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(result)])
}

fn failure(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// A string argument, or the sentence saying it is missing.
fn argument<'a>(call: &'a CallToolRequestParams, name: &str) -> Result<&'a str, CallToolResult> {
    match call.arguments.as_ref().and_then(|a| a.get(name)) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(failure(format!("The argument `{name}` must be a string."))),
        None => Err(failure(format!("The argument `{name}` is required."))),
    }
}

fn active_skill<'a>(
    index: &'a SkillIndex,
    name: &str,
) -> Result<&'a Arc<IndexedSkill>, CallToolResult> {
    index
        .by_name(name)
        .filter(|s| s.record.is_active)
        .ok_or_else(|| failure(format!("❌ Skill '{name}' not found")))
}

/// Runs a tool. An unknown tool is a JSON-RPC error (-32602); everything else is a result.
pub async fn call(
    index: &SkillIndex,
    server: &McpServer,
    caller: Caller,
    call: &CallToolRequestParams,
) -> Result<CallToolResult, RpcError> {
    let name = call.name.as_ref();
    if matches!(
        name,
        "load_skill" | "read_reference_file" | RUN_SHELL_COMMAND
    ) && (name != RUN_SHELL_COMMAND || caller.scopes.contains(Scopes::RUN))
    {
        record_use(index, server, caller, call);
    }
    let result = match name {
        "load_skill_metadata" => match server.listing_budget() {
            Some(budget) => budgeted_metadata(index, server, caller, budget),
            None => load_skill_metadata(index),
        },
        "load_skill" => load_skill(index, server, call).await,
        // Boxed: they read files or run a sandbox, and their futures would otherwise make every
        // request's (and so every connection's) future kilobytes larger.
        "read_reference_file" => Box::pin(read_reference_file(index, server, call)).await,
        RUN_SHELL_COMMAND if !caller.scopes.contains(Scopes::RUN) => {
            Err(failure(NEEDS_RUN_SCOPE.to_owned()))
        }
        RUN_SHELL_COMMAND => Box::pin(run_shell_command(index, server, caller.user_id, call)).await,
        SEARCH_SKILLS => search_skills(index, call),
        other => {
            return Err(RpcError::new(
                super::codes::INVALID_PARAMS,
                format!("unknown tool: {other}"),
            ));
        }
    };
    Ok(result.unwrap_or_else(|failure| failure))
}

/// Remembers that the caller used the skill `call` names, when the listing is budgeted (which
/// lists the most recently used first); nothing otherwise.
pub(super) fn record_use(
    index: &SkillIndex,
    server: &McpServer,
    caller: Caller,
    call: &CallToolRequestParams,
) {
    if let Some(recent) = server.recent_use()
        && let Ok(name) = argument(call, "skill_name")
        && let Ok(skill) = active_skill(index, name)
    {
        recent.record(caller.user_id, skill.record.id);
    }
}

/// The result of `call` as a session gets it, serialized, when the index holds it ready:
/// `load_skill` of an active skill whose `SKILL.md` is cached as text, and `load_skill_metadata`
/// (unless the listing is budgeted and this user has more skills than the budget: that listing
/// follows the user's use, which changes between indexes). Each is made once (per skill entry,
/// per index) by the same code as [`call`]'s results, so it is the same JSON; every other call,
/// failures included, is `None` and goes through [`call`].
pub fn cached_result(
    index: &SkillIndex,
    server: &McpServer,
    call: &CallToolRequestParams,
) -> Option<Arc<str>> {
    let serialize = super::dispatch::session_result_json;
    let result = match call.name.as_ref() {
        "load_skill_metadata"
            if server
                .listing_budget()
                .is_some_and(|budget| index.active_len() > budget) =>
        {
            return None;
        }
        "load_skill_metadata" => index.listing_result(|index| {
            let result = load_skill_metadata(index).unwrap_or_else(|failure| failure);
            serialize(&result)
        }),
        "load_skill" => {
            let skill = active_skill(index, argument(call, "skill_name").ok()?).ok()?;
            let text_md = skill.skill_md.as_ref()?;
            Arc::clone(
                skill
                    .load_skill_result
                    .get_or_init(|| Arc::from(serialize(&text(text_md.to_string())))),
            )
        }
        _ => return None,
    };
    // An empty string would be a serialization failure: let the general path report it.
    (!result.is_empty()).then_some(result)
}

fn load_skill_metadata(index: &SkillIndex) -> Result<CallToolResult, CallToolResult> {
    let listing = index.listing(|index| {
        let mut out = String::from(METADATA_HEADER);
        for skill in index.skills().filter(|s| s.record.is_active) {
            // One line per skill, as the listing's first line promises: a description written
            // over several lines (a literal `|` block) is listed on one.
            push_skill_line(&mut out, skill);
        }
        out
    });
    Ok(text(listing.to_string()))
}

/// One line of a listing: `- <name>: <description on one line>`, after a line break.
fn push_skill_line(out: &mut String, skill: &IndexedSkill) {
    out.push_str("\n- ");
    out.push_str(&skill.record.name);
    out.push_str(": ");
    push_one_line(out, &skill.record.description);
}

/// `load_skill_metadata` under `mcp.metadata_max_skills`: every active skill when they are at
/// most `budget` (the same text as unlimited, from the index's cache); otherwise `budget` of
/// them, the ones the caller used most recently first, then the most recently updated, and a last
/// line saying how many are not listed and to search for them. Made per call: it follows the
/// caller's use, which changes without a new index (a sort of a user's skills, microseconds).
fn budgeted_metadata(
    index: &SkillIndex,
    server: &McpServer,
    caller: Caller,
    budget: usize,
) -> Result<CallToolResult, CallToolResult> {
    let total = index.active_len();
    if total <= budget {
        return load_skill_metadata(index);
    }
    let uses = server
        .recent_use()
        .map(|recent| recent.of(caller.user_id))
        .unwrap_or_default();
    let mut skills: Vec<&Arc<IndexedSkill>> =
        index.skills().filter(|s| s.record.is_active).collect();
    // Used (latest first), then never used (latest update first); by name among equals.
    skills.sort_by(|a, b| {
        let used = |s: &IndexedSkill| uses.get(&s.record.id).copied();
        used(b)
            .cmp(&used(a))
            .then_with(|| b.record.updated_at.cmp(&a.record.updated_at))
            .then_with(|| a.record.name.cmp(&b.record.name))
    });
    let mut out = String::from(METADATA_HEADER);
    for skill in skills.iter().take(budget) {
        push_skill_line(&mut out, skill);
    }
    out.push_str(&format!(
        "\n({} more skills are not listed: these {budget} are the ones used (or else updated) \
         most recently. Call search_skills with a few words about the task to find the others.)",
        total - budget
    ));
    Ok(text(out))
}

/// `search_skills`' answer, before it is written.
enum SearchAnswer {
    /// No skill matches: the whole text.
    Nothing(String),
    /// The first line, and the skills found, best first.
    Found {
        header: String,
        skills: Vec<Arc<IndexedSkill>>,
    },
}

/// `search_skills`: the active skills that match `query`, best first, at most `limit`, in
/// `load_skill_metadata`'s line format.
fn search_skills(
    index: &SkillIndex,
    call: &CallToolRequestParams,
) -> Result<CallToolResult, CallToolResult> {
    Ok(text(match search(index, call)? {
        SearchAnswer::Nothing(answer) => answer,
        SearchAnswer::Found {
            header: mut out,
            skills,
        } => {
            for skill in &skills {
                push_skill_line(&mut out, skill);
            }
            out
        }
    }))
}

/// `search_skills`' result as a session gets it, serialized (what [`cached_result`] gives for
/// the calls it answers), written from each skill's line escaped once for JSON and kept in its
/// index entry: no result or JSON tree is built. `None` for every other call and for
/// `search_skills`' failures, which go through [`call`].
pub fn written_result(index: &SkillIndex, call: &CallToolRequestParams) -> Option<String> {
    if call.name != SEARCH_SKILLS {
        return None;
    }
    let written = match search(index, call).ok()? {
        SearchAnswer::Nothing(answer) => super::dispatch::session_text_result_json([
            super::dispatch::json_escaped(&answer).as_str(),
        ]),
        SearchAnswer::Found { header, skills } => {
            let header = super::dispatch::json_escaped(&header);
            let lines: Vec<&str> = skills
                .iter()
                .map(|skill| {
                    &**skill.search_line_json.get_or_init(|| {
                        let mut line = String::new();
                        push_skill_line(&mut line, skill);
                        super::dispatch::json_escaped(&line).into_boxed_str()
                    })
                })
                .collect();
            // An empty piece would be a failure to escape (a line is never empty): let the
            // general path answer.
            if header.is_empty() || lines.iter().any(|line| line.is_empty()) {
                return None;
            }
            super::dispatch::session_text_result_json(std::iter::once(header.as_str()).chain(lines))
        }
    };
    (!written.is_empty()).then_some(written)
}

/// `search_skills`' arguments checked, and the search made.
fn search(
    index: &SkillIndex,
    call: &CallToolRequestParams,
) -> Result<SearchAnswer, CallToolResult> {
    let query = argument(call, "query")?.trim();
    if query.is_empty() {
        return Err(failure(
            "The argument `query` must not be empty: give a few words about the task or the skill."
                .to_owned(),
        ));
    }
    if query.len() > SEARCH_MAX_QUERY_BYTES {
        return Err(failure(format!(
            "The argument `query` is {} bytes; give at most {SEARCH_MAX_QUERY_BYTES}: a few words about the task or the skill.",
            query.len()
        )));
    }
    let limit = match call.arguments.as_ref().and_then(|a| a.get("limit")) {
        None | Some(Value::Null) => SEARCH_DEFAULT_LIMIT,
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=SEARCH_MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                failure(format!(
                    "The argument `limit` must be an integer from 1 to {SEARCH_MAX_LIMIT}."
                ))
            })?,
    };
    let (found, _) = index.ranked_first(query, |s| s.record.is_active, limit);
    // The query as the answer's first line repeats it: on one line, whatever it held.
    let query = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if found.is_empty() {
        return Ok(SearchAnswer::Nothing(format!(
            "No skills match \"{query}\". Try other words, or call load_skill_metadata to see \
             the skills listed."
        )));
    }
    Ok(SearchAnswer::Found {
        header: format!(
            "Skills matching \"{query}\", best first (each line is \"- <skill_name>: <skill_description>\"):"
        ),
        skills: found,
    })
}

/// `text` with each line break (and the blanks around it) as one space.
fn push_one_line(out: &mut String, text: &str) {
    let mut lines = text.lines();
    if let Some(first) = lines.next() {
        out.push_str(first.trim_end());
    }
    for line in lines {
        let line = line.trim();
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
    }
}

async fn load_skill(
    index: &SkillIndex,
    server: &McpServer,
    call: &CallToolRequestParams,
) -> Result<CallToolResult, CallToolResult> {
    let name = argument(call, "skill_name")?;
    let skill = active_skill(index, name)?;
    if let Some(text_md) = &skill.skill_md {
        return Ok(text(text_md.to_string()));
    }
    // Not cached as text (not UTF-8, or changed on disk): read it and say what is wrong.
    read_text(server, skill, SKILL_MD).await.map(text)
}

async fn read_reference_file(
    index: &SkillIndex,
    server: &McpServer,
    call: &CallToolRequestParams,
) -> Result<CallToolResult, CallToolResult> {
    let name = argument(call, "skill_name")?;
    let file = argument(call, "file_name")?;
    let skill = active_skill(index, name)?;
    read_text(server, skill, file).await.map(text)
}

/// A file of the skill as UTF-8 text, or the sentence saying why not.
async fn read_text(
    server: &McpServer,
    skill: &IndexedSkill,
    file: &str,
) -> Result<String, CallToolResult> {
    let name = skill.record.name.clone();
    let path = SkillPath::parse(file).map_err(|why| {
        failure(format!(
            "The path '{file}' is not allowed: it {why}; give a path inside the skill '{name}'."
        ))
    })?;
    let dir = server.skills().ready_dir(&skill.record).await;
    let max = server.max_read_bytes();
    let bytes = tokio::task::spawn_blocking(move || files::read_beneath(&dir, &path, max))
        .await
        .map_err(|e| failure(format!("Reading '{file}' failed: {e}")))?
        .map_err(|e| match e {
            ReadError::NotFound => failure(format!("File '{file}' not found in skill '{name}'")),
            ReadError::NotAFile => failure(format!("'{file}' in skill '{name}' is not a regular file.")),
            ReadError::Symlink => failure(format!("'{file}' in skill '{name}' is a symbolic link, which is not followed.")),
            ReadError::TooLarge { size } => {
                failure(format!("File '{file}' in skill '{name}' is {size} bytes, more than the {max} bytes that can be read."))
            }
            ReadError::Io(io) => failure(format!("Reading '{file}' in skill '{name}' failed: {io}")),
        })?;
    String::from_utf8(bytes).map_err(|_| {
        failure(format!(
            "File '{file}' in skill '{name}' is not UTF-8 text."
        ))
    })
}

async fn run_shell_command(
    index: &SkillIndex,
    server: &McpServer,
    user_id: Uuid,
    call: &CallToolRequestParams,
) -> Result<CallToolResult, CallToolResult> {
    let name = argument(call, "skill_name")?;
    let command = argument(call, "command")?;
    let skill = active_skill(index, name)?;
    let dir = server.skills().ready_dir(&skill.record).await;
    let sandbox = server.sandbox();
    let outcome = sandbox
        .run(user_id, &dir, command)
        .await
        .map_err(|refusal| failure(format!("{refusal}")))?;
    if let Some(warning) = &outcome.warning {
        tracing::warn!(
            skill = name,
            warning = warning.as_str(),
            "command run in a degraded sandbox"
        );
    }
    Ok(shell_result(&outcome, sandbox.timeout()))
}

/// The original's text (stdout, a line break, stderr), then how the command ended; the same as
/// `structuredContent`. A command cut short (timed out, too much output, shutdown) is an error; a
/// command that ran and failed is not: its exit code says so.
fn shell_result(outcome: &Outcome, timeout: std::time::Duration) -> CallToolResult {
    let mut text = format!("{}\n{}", outcome.stdout, outcome.stderr);
    let ending = if outcome.timed_out {
        format!(
            "[timed out after {} s; the command was killed]",
            timeout.as_secs()
        )
    } else if outcome.killed_at_shutdown {
        "[the server shut down; the command was killed]".to_owned()
    } else if outcome.truncated {
        "[output cut at its size limit; the command was killed]".to_owned()
    } else if let Some(code) = outcome.exit_code {
        format!("[exit code: {code}]")
    } else {
        format!("[killed by signal {}]", outcome.signal.unwrap_or_default())
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&ending);
    if let Some(warning) = &outcome.warning {
        text.push_str(&format!("\n[warning: degraded sandbox: {warning}]"));
    }
    let structured = json!({
        "exit_code": outcome.exit_code,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "timed_out": outcome.timed_out,
        "truncated": outcome.truncated,
        "signal": outcome.signal,
        "duration_ms": u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
    });
    let mut result = if outcome.timed_out || outcome.truncated || outcome.killed_at_shutdown {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    result.structured_content = Some(structured);
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_description_over_several_lines_is_listed_on_one() {
        for (text, listed) in [
            ("One line.", "One line."),
            ("Line one.\nLine two.", "Line one. Line two."),
            ("a  \r\n\n   b\n", "a b"),
            ("", ""),
        ] {
            let mut out = String::new();
            super::push_one_line(&mut out, text);
            assert_eq!(out, listed, "{text:?}");
        }
    }
}
