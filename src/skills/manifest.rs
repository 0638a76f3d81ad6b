//! `SKILL.md`: its front matter read as leniently as the tools people use read it, checked
//! against the Agent Skills rules (refusing only what makes a skill unusable, warning about the
//! rest), a new one written, and its description changed in place.
//!
//! The front matter is the part between a first line `---` and the next line that is exactly
//! `---`; everything after that is the body, which this module never changes. It is bounded first
//! (size, nesting, brackets, aliases: `check_bounds`), then read by a real YAML parser
//! (serde_yaml_ng), so block scalars (`>`, `|`), quoting and escapes mean what YAML says. When
//! that fails (most often a plain value holding `: `, as in `description: Tools: a, b`), it is read
//! as the original AgentSkills server and Claude Code read it: top-level `key: value` lines, the
//! value the rest of the line with surrounding quotes removed, indented lines after it appended,
//! and a warning says how to make it valid YAML.
//!
//! Refused ([`ManifestError`]): no front matter, no `name` or `description`, a `name` that cannot
//! be a skill name (it is a folder, a URI segment and a key), a front matter past its bounds.
//! Warned ([`Warning`]): everything else the Agent Skills rules say (unknown fields, which are
//! kept and served as written; a description over 1024 characters; a `compatibility` over 500;
//! fields of the wrong type; YAML that a strict parser refuses).

use std::fmt;

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use super::Warning;
use crate::domain::SkillName;

/// Descriptions longer than this (after trimming surrounding whitespace) are accepted with a
/// warning: the Agent Skills format asks for at most 1024 characters.
pub const DESCRIPTION_MAX_CHARS: usize = 1024;
/// The largest description the API writes into a `SKILL.md` (bytes of UTF-8): it must leave the
/// front matter within [`FRONT_MATTER_MAX_BYTES`].
pub const DESCRIPTION_MAX_BYTES: usize = 8 * 1024;
/// `compatibility` longer than this is accepted with a warning.
pub const COMPATIBILITY_MAX_CHARS: usize = 500;

/// The largest front matter read, in bytes. Real ones are a few hundred bytes to a few KB; the
/// YAML parser's time grows with size times nesting, so this (with the limits below) is what keeps
/// one upload from holding a core for seconds.
pub const FRONT_MATTER_MAX_BYTES: usize = 16 * 1024;
/// The deepest nesting of lists and mappings read (by indentation and by brackets together).
pub const FRONT_MATTER_MAX_DEPTH: usize = 32;
/// The most `[` and `{` a front matter may hold (outside comments). The parser's work per token
/// grows with the number of brackets open, and this bounds that number whatever the quoting.
pub const FRONT_MATTER_MAX_BRACKETS: usize = 128;
/// The most YAML aliases (`*name`) a front matter may use: each one replays what its anchor
/// holds, so a few nested ones multiply a small text into millions of values.
pub const FRONT_MATTER_MAX_ALIASES: usize = 8;

/// The top-level keys the Agent Skills format defines.
const KNOWN_FIELDS: [&str; 6] = [
    "name",
    "description",
    "license",
    "compatibility",
    "metadata",
    "allowed-tools",
];

/// Fields Claude Code defines for its skills: kept and served as written, with a gentler warning
/// than a field nobody defines (which may be a typo).
const CLAUDE_CODE_FIELDS: [&str; 9] = [
    "disable-model-invocation",
    "user-invocable",
    "argument-hint",
    "model",
    "context",
    "agent",
    "hooks",
    "version",
    "when_to_use",
];

/// The front matter of a `SKILL.md`, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// A valid [`SkillName`] (checked; kept as text).
    pub name: String,
    /// Not empty, surrounding whitespace trimmed (a folded `>` scalar ends with a line break that
    /// is not part of the description).
    pub description: String,
    /// The front matter as written, as JSON (every field, untrimmed; read line by line when it is
    /// not valid YAML): what the Skills extension of MCP serves as a skill's `frontmatter`.
    pub front_matter: serde_json::Value,
    /// What the Agent Skills rules say that this front matter does not keep to.
    pub warnings: Vec<Warning>,
}

/// Why a `SKILL.md` was refused. `rule` is stable (for tests and logs); `message` is meant for the
/// user and names the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub rule: &'static str,
    pub message: String,
}

impl ManifestError {
    fn new(rule: &'static str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Reads and checks the front matter of a `SKILL.md`.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let parts = split(text)?;
    check_bounds(parts.yaml)?;
    let (mapping, warnings) = read_front_matter(text, &parts);
    check(&mapping, warnings)
}

/// [`parse`] for a file's raw bytes: a `SKILL.md` must be UTF-8.
pub fn parse_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ManifestError::new("encoding-invalid", "SKILL.md: the file must be UTF-8 text")
    })?;
    parse(text)
}

/// Checks a description the API is to write into a `SKILL.md` and returns it trimmed: not empty,
/// at most [`DESCRIPTION_MAX_BYTES`] bytes. Longer than 1024 characters is allowed (with a
/// warning when the file is read).
pub fn check_description(description: &str) -> Result<&str, ManifestError> {
    let trimmed = description.trim();
    if trimmed.is_empty() {
        return Err(ManifestError::new(
            "description-missing",
            "SKILL.md: `description` is required and must not be empty",
        ));
    }
    if trimmed.len() > DESCRIPTION_MAX_BYTES {
        return Err(ManifestError::new(
            "description-too-long",
            format!(
                "SKILL.md: `description` may be at most {DESCRIPTION_MAX_BYTES} bytes (it has {}); \
                 the Agent Skills format asks for at most {DESCRIPTION_MAX_CHARS} characters",
                trimmed.len()
            ),
        ));
    }
    Ok(trimmed)
}

/// A new `SKILL.md` for a skill created from a name and a description: front matter with both,
/// then a short body. The description is written trimmed, so `parse(&render(n, d))` gives back
/// `n` and `d.trim()` exactly, whatever characters `d` holds. Check `d` with [`check_description`]
/// first: a description that breaks its rules gives a file that [`parse`] refuses.
pub fn render(name: &SkillName, description: &str) -> String {
    #[derive(Serialize)]
    struct FrontMatter<'a> {
        name: &'a str,
        description: &'a str,
    }

    let description = description.trim();
    let front_matter = FrontMatter {
        name: name.as_str(),
        description,
    };
    // Serializing two strings into memory does not fail; should it ever, a double-quoted scalar
    // says the same.
    let yaml = serde_yaml_ng::to_string(&front_matter).unwrap_or_else(|_| {
        format!(
            "name: {}\ndescription: {}\n",
            double_quoted(name.as_str()),
            double_quoted(description)
        )
    });
    format!(
        "---\n{yaml}---\n\n# {name}\n\n{description}\n",
        name = name.as_str()
    )
}

/// `text` as a YAML double-quoted scalar: `"` and `\` escaped, and every control character (which
/// YAML does not allow unescaped) as `\uXXXX`.
fn double_quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `text` (a `SKILL.md`) with its front matter's `description` set to `description` (checked and
/// trimmed as in [`check_description`]). Only the `description` entry changes: it is written as
/// one double-quoted line where the old one was (or at the end of the front matter), and every
/// other byte, comments and invalid YAML included, is kept. The result is checked with [`parse`]
/// before it is returned.
pub fn with_description(text: &str, description: &str) -> Result<String, ManifestError> {
    let description = check_description(description)?;
    let parts = split(text)?;
    let eol = if parts.head.ends_with("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let entry = format!("description: {}{eol}", double_quoted(description));
    let mut yaml = String::with_capacity(parts.yaml.len() + entry.len());
    let mut placed = false;
    let mut lines = parts.yaml.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if !is_top_level_key(line, "description") {
            yaml.push_str(line);
            continue;
        }
        // The entry goes where the first one was; every line that belongs to one (indented or
        // blank lines after it: a block scalar, a continued plain value) goes.
        if !placed {
            yaml.push_str(&entry);
            placed = true;
        }
        let mut blank = String::new();
        while let Some(next) = lines.peek() {
            let content = line_content(next);
            if content.trim().is_empty() {
                blank.push_str(next);
            } else if content.starts_with([' ', '\t']) {
                blank.clear();
            } else {
                break;
            }
            lines.next();
        }
        // Blank lines before the next key are not the description's.
        yaml.push_str(&blank);
    }
    if !placed {
        if !yaml.is_empty() && !yaml.ends_with('\n') {
            yaml.push_str(eol);
        }
        yaml.push_str(&entry);
    }
    let updated = format!("{}{yaml}{}{}", parts.head, parts.closing, parts.body);
    let manifest = parse(&updated)?;
    if manifest.description != description {
        // A front matter laid out in a way the line edit does not fit (a flow mapping as its
        // root, say): nothing is written rather than something else.
        return Err(ManifestError::new(
            "description-not-updated",
            "SKILL.md: the description could not be changed in this front matter; edit the file \
             and upload it",
        ));
    }
    Ok(updated)
}

/// Whether `line` starts a top-level `key:` entry.
fn is_top_level_key(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .and_then(|rest| rest.trim_start_matches([' ', '\t']).strip_prefix(':'))
        .is_some_and(|after| after.is_empty() || after.starts_with([' ', '\t', '\r', '\n']))
}

/// A `SKILL.md` cut into its pieces; concatenated they give back the text.
struct Parts<'a> {
    /// Up to and including the opening `---` line (a byte-order mark may precede it).
    head: &'a str,
    /// The YAML between the two `---` lines.
    yaml: &'a str,
    /// The closing `---` line with its line ending, if it has one.
    closing: &'a str,
    body: &'a str,
}

fn split(text: &str) -> Result<Parts<'_>, ManifestError> {
    let missing = || {
        ManifestError::new(
            "front-matter-missing",
            "SKILL.md: the file must start with a `---` line that opens the YAML front matter",
        )
    };
    // Editors on Windows may put a byte-order mark first; it is not content.
    let start = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let mut lines = text[start..].split_inclusive('\n');
    let first = lines.next().ok_or_else(missing)?;
    if line_content(first) != "---" {
        return Err(missing());
    }
    let yaml_start = start + first.len();
    let mut offset = yaml_start;
    for line in lines {
        if line_content(line) == "---" {
            return Ok(Parts {
                head: &text[..yaml_start],
                yaml: &text[yaml_start..offset],
                closing: &text[offset..offset + line.len()],
                body: &text[offset + line.len()..],
            });
        }
        offset += line.len();
    }
    Err(ManifestError::new(
        "front-matter-unclosed",
        "SKILL.md: the front matter opened by `---` on the first line is never closed by a `---` line",
    ))
}

/// A line without its `\n` or `\r\n`.
fn line_content(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// The front matter as a mapping, and the warnings reading it gave: by the YAML parser, or line
/// by line as the original server reads it when the YAML is not valid (or not a mapping).
fn read_front_matter(text: &str, parts: &Parts<'_>) -> (Mapping, Vec<Warning>) {
    // The opening `---` is also YAML's document marker, so the parser is given the file from its
    // start: the line numbers in its messages are then the lines of SKILL.md.
    // The byte-order mark, if any, is left out: the parser would take it for content.
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let document = &text[bom..parts.head.len() + parts.yaml.len()];
    let why = match serde_yaml_ng::from_str::<Value>(document) {
        Ok(Value::Mapping(mapping)) => return (mapping, Vec::new()),
        Ok(Value::Null) => return (Mapping::new(), Vec::new()),
        Ok(other) => format!("it is {}, not `key: value` lines", kind(&other)),
        Err(e) => e.to_string(),
    };
    let (mapping, colon_line) = read_lines(parts.yaml);
    let message = match &colon_line {
        Some((line, key)) => format!(
            "SKILL.md: the front matter is not valid YAML: line {} holds `: ` in the value of \
             `{key}`, which YAML reads as a new key. It was read line by line, as other tools \
             read it; to make it valid YAML, put the value in double quotes: \
             {key}: \"…\"",
            line + 2
        ),
        None => format!(
            "SKILL.md: the front matter is not valid YAML ({why}). It was read line by line \
             as `key: value`, as other tools read it; fix the YAML (quote values that hold `: `, \
             `#` or start with a quote) so every tool reads the same"
        ),
    };
    let code = if colon_line.is_some() {
        "unquoted-colon"
    } else {
        "yaml-invalid"
    };
    let warning = Warning {
        code,
        field: "front matter".to_owned(),
        message,
    };
    (mapping, vec![warning])
}

/// Reads a front matter as the original AgentSkills server does: each top-level `key: value`
/// line gives `key` the rest of the line, trimmed, with the quotes around it removed; an indented
/// line after it is appended (with a space; with a line break after `|`), so a value continued on
/// the next lines is not cut. A later line for the same key wins. Also returns the first line
/// (0-based, of the YAML) whose plain value holds `: `, and its key.
fn read_lines(yaml: &str) -> (Mapping, Option<(usize, String)>) {
    let mut entries: Vec<(String, String, bool)> = Vec::new();
    let mut colon_line = None;
    for (n, line) in yaml.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // A continuation of the last key's value.
            if let Some((_, value, literal)) = entries.last_mut() {
                let more = line.trim();
                if !value.is_empty() {
                    value.push(if *literal { '\n' } else { ' ' });
                }
                value.push_str(more);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.contains([' ', '\t']) && !key.starts_with(['"', '\'']) {
            continue;
        }
        let raw = rest.trim();
        if colon_line.is_none() && raw.contains(": ") && !raw.starts_with(['"', '\'']) {
            colon_line = Some((n, key.to_owned()));
        }
        // A block scalar's indicator (`|`, `>-`, …) is not part of the value: its lines are.
        let block = raw.len() <= 3 && raw.starts_with(['|', '>']);
        let value = if block {
            String::new()
        } else {
            raw.trim_matches(['"', '\'']).to_owned()
        };
        let key = key.trim_matches(['"', '\'']).to_owned();
        entries.retain(|(k, _, _)| *k != key);
        entries.push((key, value, block && raw.starts_with('|')));
    }
    let mut mapping = Mapping::new();
    for (key, value, _) in entries {
        mapping.insert(Value::String(key), Value::String(value));
    }
    (mapping, colon_line)
}

/// Refuses a front matter the parser would spend too long on, before the parser sees it: too many
/// bytes, nesting too deep, too many brackets, too many aliases. One pass over the text, no
/// allocation.
fn check_bounds(yaml: &str) -> Result<(), ManifestError> {
    if yaml.len() > FRONT_MATTER_MAX_BYTES {
        return Err(ManifestError::new(
            "front-matter-too-large",
            format!(
                "SKILL.md: the front matter is {} bytes; at most {FRONT_MATTER_MAX_BYTES} bytes \
                 are read (move long text into the body, after the closing `---`)",
                yaml.len()
            ),
        ));
    }
    let shape = Shape::of(yaml);
    if shape.brackets > FRONT_MATTER_MAX_BRACKETS {
        return Err(ManifestError::new(
            "front-matter-too-complex",
            format!(
                "SKILL.md: the front matter opens {} lists and mappings with `[` or `{{`; at \
                 most {FRONT_MATTER_MAX_BRACKETS} are read",
                shape.brackets
            ),
        ));
    }
    if shape.depth > FRONT_MATTER_MAX_DEPTH {
        return Err(ManifestError::new(
            "front-matter-too-deep",
            format!(
                "SKILL.md: the front matter nests lists and mappings {} levels deep; at most \
                 {FRONT_MATTER_MAX_DEPTH} levels are read",
                shape.depth
            ),
        ));
    }
    if shape.aliases > FRONT_MATTER_MAX_ALIASES {
        return Err(ManifestError::new(
            "front-matter-too-complex",
            format!(
                "SKILL.md: the front matter uses {} YAML aliases (`*name`); at most \
                 {FRONT_MATTER_MAX_ALIASES} are read",
                shape.aliases
            ),
        ));
    }
    Ok(())
}

/// What a cheap scan of a front matter finds, without parsing it.
///
/// `brackets` and `aliases` are upper bounds whatever the text holds, which is what makes them
/// safe limits: every `[` and `{` is counted, in quotes and comments too, and every `*` followed by
/// a name character in a place where a YAML node may start (after `:`, `-`, `?`, `[`, `{`, `,` or
/// only blanks on its line, whatever the blanks between). So the parser's open brackets, and the
/// aliases it expands, can never be more than the scan counts, however a text mixes quotes, plain
/// scalars and comments. `depth` estimates the nesting for the message people see: the levels of
/// indentation open on a line, plus each `- ` or `? ` that starts a nested node on it, plus the
/// brackets open (comments left out).
#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    depth: usize,
    brackets: usize,
    aliases: usize,
}

impl Shape {
    fn of(yaml: &str) -> Shape {
        let mut shape = Shape::default();
        // Columns of the indentation levels open before this line, innermost last.
        let mut indents: Vec<usize> = Vec::new();
        let mut open_brackets = 0usize;
        for line in yaml.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let rest = line.trim_start_matches(' ');
            let indent = line.len() - rest.len();
            let content = rest.trim_start_matches([' ', '\t']);
            if !content.is_empty() && !content.starts_with('#') {
                while indents.last().is_some_and(|&open| open >= indent) {
                    indents.pop();
                }
                indents.push(indent);
            }
            // Nodes started on this line inside the one its indentation opens: `- - x`, `? x`.
            let mut nested = 0usize;
            let mut deepest_bracket = open_brackets;
            let mut node_start = true;
            let mut after_blank = true;
            let mut comment = false;
            let bytes = rest.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                let next = bytes.get(i + 1).copied();
                match b {
                    b'[' | b'{' => {
                        shape.brackets += 1;
                        if !comment {
                            open_brackets += 1;
                            deepest_bracket = deepest_bracket.max(open_brackets);
                        }
                    }
                    b']' | b'}' if !comment => open_brackets = open_brackets.saturating_sub(1),
                    // An alias needs a name: `*)` (as in `Bash(git:*)`) is not one.
                    b'*' if node_start
                        && next.is_some_and(|n| {
                            n.is_ascii_alphanumeric() || n == b'_' || n == b'-'
                        }) =>
                    {
                        shape.aliases += 1;
                    }
                    b'-' | b'?'
                        if node_start && !comment && matches!(next, None | Some(b' ' | b'\t')) =>
                    {
                        nested += 1;
                    }
                    b'#' if after_blank => comment = true,
                    _ => {}
                }
                after_blank = matches!(b, b' ' | b'\t');
                node_start = match b {
                    b' ' | b'\t' => node_start,
                    b':' | b'-' | b'?' | b'[' | b'{' | b',' => true,
                    _ => false,
                };
            }
            shape.depth = shape.depth.max(indents.len() + nested + deepest_bracket);
        }
        shape
    }
}

/// What kind of YAML value this is, in words for a message.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The value of `key`, with an explicit `null` (`license:` with nothing after it) read as absent.
fn field<'a>(mapping: &'a Mapping, key: &str) -> Option<&'a Value> {
    mapping.get(key).filter(|v| !v.is_null())
}

/// A scalar's text: strings as they are, numbers and booleans as YAML wrote them (`name: 123`).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn warning(code: &'static str, field: &str, message: String) -> Warning {
    Warning {
        code,
        field: field.to_owned(),
        message,
    }
}

/// A name like `raw` that follows the rule: lower case, runs of anything else as one `-`, no `-`
/// at either end, at most 64 characters.
pub fn suggest_name(raw: &str) -> String {
    let mut name = String::with_capacity(raw.len().min(64));
    for c in raw.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
    }
    name.truncate(64);
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "my-skill".to_owned()
    } else {
        name.to_owned()
    }
}

fn check(mapping: &Mapping, mut warnings: Vec<Warning>) -> Result<Manifest, ManifestError> {
    let name = match field(mapping, "name") {
        None => {
            return Err(ManifestError::new(
                "name-missing",
                "SKILL.md: `name` is required (a line `name: my-skill` in the front matter)",
            ));
        }
        Some(value) => {
            let Some(raw) = scalar_text(value) else {
                return Err(ManifestError::new(
                    "name-invalid",
                    format!("SKILL.md: `name` must be text, not {}", kind(value)),
                ));
            };
            if SkillName::parse(&raw).is_err() {
                let why = SkillName::parse(&raw).err().unwrap_or_default();
                return Err(ManifestError::new(
                    "name-invalid",
                    format!(
                        "SKILL.md: `name` {why} (it is {raw:?}); it names the skill's folder and \
                         URI, so it must follow the rule: try {:?}",
                        suggest_name(&raw)
                    ),
                ));
            }
            if !value.is_string() {
                warnings.push(warning(
                    "not-text",
                    "name",
                    format!(
                        "SKILL.md: `name` is {}; put it in quotes: name: \"{raw}\"",
                        kind(value)
                    ),
                ));
            }
            raw
        }
    };

    let description = match field(mapping, "description") {
        None => {
            return Err(ManifestError::new(
                "description-missing",
                "SKILL.md: `description` is required: say what the skill does and when to use it",
            ));
        }
        Some(value) => {
            let Some(raw) = scalar_text(value) else {
                return Err(ManifestError::new(
                    "description-invalid",
                    format!("SKILL.md: `description` must be text, not {}", kind(value)),
                ));
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                return Err(ManifestError::new(
                    "description-missing",
                    "SKILL.md: `description` must not be empty: say what the skill does and when \
                     to use it",
                ));
            }
            if !value.is_string() {
                warnings.push(warning(
                    "not-text",
                    "description",
                    format!(
                        "SKILL.md: `description` is {}; put it in quotes",
                        kind(value)
                    ),
                ));
            }
            let count = trimmed.chars().count();
            if count > DESCRIPTION_MAX_CHARS {
                warnings.push(warning(
                    "description-too-long",
                    "description",
                    format!(
                        "SKILL.md: `description` has {count} characters; the Agent Skills format \
                         asks for at most {DESCRIPTION_MAX_CHARS}, and some clients cut it there: \
                         say what the skill does and when to use it, and move the rest into the body"
                    ),
                ));
            }
            trimmed.to_owned()
        }
    };

    warnings.extend(other_field_warnings(mapping));
    Ok(Manifest {
        name,
        description,
        front_matter: to_json(mapping),
        warnings,
    })
}

/// What the Agent Skills rules say of the other fields: unknown ones, and known ones of the
/// wrong type or length. Nothing here refuses a skill.
fn other_field_warnings(mapping: &Mapping) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for key in mapping.keys() {
        let Some(key) = scalar_text(key) else {
            warnings.push(warning(
                "unknown-field",
                "front matter",
                format!(
                    "SKILL.md: a front matter key is {}; keys are names such as `license`",
                    kind(key)
                ),
            ));
            continue;
        };
        if KNOWN_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let message = if CLAUDE_CODE_FIELDS.contains(&key.as_str()) {
            format!(
                "SKILL.md: `{key}` is a Claude Code field, not part of the Agent Skills format: it \
                 is kept and served as written, and clients that do not know it ignore it"
            )
        } else {
            format!(
                "SKILL.md: `{key}` is not an Agent Skills field (name, description, license, \
                 compatibility, metadata, allowed-tools): it is kept and served as written; if it \
                 is a typo, fix it"
            )
        };
        warnings.push(warning("unknown-field", &key, message));
    }
    if let Some(value) = field(mapping, "license")
        && !value.is_string()
    {
        warnings.push(warning(
            "field-invalid",
            "license",
            format!("SKILL.md: `license` should be text, not {}", kind(value)),
        ));
    }
    match field(mapping, "compatibility") {
        None => {}
        Some(Value::String(text)) => {
            let count = text.trim().chars().count();
            if count > COMPATIBILITY_MAX_CHARS {
                warnings.push(warning(
                    "compatibility-too-long",
                    "compatibility",
                    format!(
                        "SKILL.md: `compatibility` has {count} characters; the Agent Skills format \
                         asks for at most {COMPATIBILITY_MAX_CHARS}"
                    ),
                ));
            }
        }
        Some(other) => warnings.push(warning(
            "field-invalid",
            "compatibility",
            format!(
                "SKILL.md: `compatibility` should be text, not {}",
                kind(other)
            ),
        )),
    }
    match field(mapping, "metadata") {
        None => {}
        Some(Value::Mapping(entries))
            if entries.iter().all(|(k, v)| k.is_string() && v.is_string()) => {}
        Some(other) => warnings.push(warning(
            "field-invalid",
            "metadata",
            format!(
                "SKILL.md: `metadata` should be `key: value` pairs of text (quote numbers such as \
                 version: \"1.0\"); it is {}",
                kind(other)
            ),
        )),
    }
    match field(mapping, "allowed-tools") {
        None | Some(Value::String(_)) => {}
        Some(Value::Sequence(items)) if items.iter().all(Value::is_string) => {}
        Some(other) => warnings.push(warning(
            "field-invalid",
            "allowed-tools",
            format!(
                "SKILL.md: `allowed-tools` should be text or a list of text, not {}",
                kind(other)
            ),
        )),
    }
    warnings
}

/// The mapping as JSON, keys that are not text written as text.
fn to_json(mapping: &Mapping) -> serde_json::Value {
    if let Ok(json) = serde_json::to_value(mapping) {
        return json;
    }
    let mut object = serde_json::Map::new();
    for (key, value) in mapping {
        let key = scalar_text(key).unwrap_or_else(|| format!("{key:?}"));
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        object.insert(key, value);
    }
    serde_json::Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> SkillName {
        SkillName::parse(s).unwrap()
    }

    fn rule_of(text: &str) -> &'static str {
        parse(text).unwrap_err().rule
    }

    #[test]
    fn block_scalars_and_quotes_are_yaml() {
        let folded = "---\nname: a\ndescription: >\n  Folded lines\n  join with spaces.\n---\n";
        assert_eq!(
            parse(folded).unwrap().description,
            "Folded lines join with spaces."
        );
        let literal = "---\nname: a\ndescription: |\n  Line one.\n  Line two.\n---\n";
        assert_eq!(parse(literal).unwrap().description, "Line one.\nLine two.");
        let single = "---\nname: a\ndescription: 'It''s: quoted'\n---\n";
        assert_eq!(parse(single).unwrap().description, "It's: quoted");
        let double = "---\nname: \"a\"\ndescription: \"Tab\\there \\u00e9\"\n---\n";
        assert_eq!(parse(double).unwrap().description, "Tab\there é");
    }

    #[test]
    fn crlf_bom_and_later_separators_are_handled() {
        let crlf = "---\r\nname: a\r\ndescription: Works\r\n---\r\nBody\r\n---\r\nmore\r\n";
        assert_eq!(parse(crlf).unwrap().description, "Works");
        let bom = "\u{feff}---\nname: a\ndescription: Works\n---\n";
        assert_eq!(parse(bom).unwrap().name, "a");
        // Only the first closing `---` ends the front matter; a later one belongs to the body.
        let body_rule = "---\nname: a\ndescription: d\n---\ntext\n---\nname: b\n";
        assert_eq!(parse(body_rule).unwrap().name, "a");
        // The closing line may end the file.
        assert!(parse("---\nname: a\ndescription: d\n---").is_ok());
    }

    /// Front matter as tools write it passes the bounds with room to spare.
    #[test]
    fn real_front_matter_is_within_the_bounds() {
        let hooks = "---\n\
            name: guard\n\
            description: 'Checks commands: [before] they run, {safely}.'\n\
            allowed-tools: Bash(git add:*), Bash(git status:*), Bash(git diff:*), Bash(git log:*), \
            Bash(npm run *), Bash(ls:*), Bash(cat:*), Bash(grep:*), Bash(find:*), Read, Edit\n\
            hooks:\n  PreToolUse:\n    - matcher: \"Bash\"\n      hooks:\n        - type: command\n\
            \x20         command: \"./scripts/check.sh\"   # see [docs]\n\
            metadata:\n  tags: [a, b, [c, d], {e: f}]\n  schema: |\n    {\"type\": \"object\", \"items\": [{\"a\": [1]}]}\n\
            ---\nBody\n";
        let parts = split(hooks).unwrap();
        let shape = Shape::of(parts.yaml);
        assert_eq!(
            shape.aliases, 0,
            "`:*)` and `run *` are not aliases: {shape:?}"
        );
        assert!(shape.depth <= 8, "{shape:?}");
        assert!(shape.brackets < 20, "{shape:?}");
        assert!(check_bounds(parts.yaml).is_ok());
        let anchors = "defaults: &d {a: 1}\nfirst: *d\nsecond:\n  <<: *d\n  - *d\n";
        assert_eq!(Shape::of(anchors).aliases, 3);
    }

    /// What made the parser take seconds is refused before it runs, with the limit in the message.
    #[test]
    fn costly_front_matter_is_refused_before_parsing() {
        let with = |yaml: &str| format!("---\nname: a\ndescription: d\n{yaml}\n---\nBody\n");
        let big = with(&format!("x: {}\n", "y".repeat(FRONT_MATTER_MAX_BYTES)));
        let err = parse(&big).unwrap_err();
        assert_eq!(err.rule, "front-matter-too-large");
        assert!(err.message.contains("16384"), "{}", err.message);

        // Brackets deep, closed or not: the depth is what people see.
        let huge = with(&format!("x: {}{}", "[".repeat(40_000), "]".repeat(40_000)));
        assert_eq!(parse(&huge).unwrap_err().rule, "front-matter-too-large");
        let deep_map = with(&format!("x: {}", "{a: ".repeat(40)));
        assert_eq!(parse(&deep_map).unwrap_err().rule, "front-matter-too-deep");
        let err = parse(&with(&format!("x: {}", "[".repeat(40)))).unwrap_err();
        assert_eq!(err.rule, "front-matter-too-deep");
        assert!(err.message.contains("at most 32 levels"), "{}", err.message);
        // Block nesting counts too: `- - - x` and indentation.
        let compact = with(&format!("x:\n{}1", "- ".repeat(40)));
        assert_eq!(parse(&compact).unwrap_err().rule, "front-matter-too-deep");
        let stairs: String = (0..40)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(
            parse(&with(&stairs)).unwrap_err().rule,
            "front-matter-too-deep"
        );

        // Brackets the depth estimate does not see (closed by a `]` inside quotes, as the parser
        // reads it) are still bounded by their number.
        let hidden = with(&format!("x: {}", "[ \"]\", ".repeat(200)));
        let err = parse(&hidden).unwrap_err();
        assert_eq!(
            err.rule,
            "front-matter-too-complex",
            "{:?}",
            Shape::of(&hidden)
        );
        assert!(err.message.contains("at most 128"), "{}", err.message);
        let in_quotes = with(&format!("x: '{}'", "{".repeat(129)));
        assert_eq!(
            parse(&in_quotes).unwrap_err().rule,
            "front-matter-too-complex"
        );

        // An alias bomb: each level replays the one before thirty times.
        let mut bomb = String::from("a0: &a0\n");
        bomb.push_str(&"  - xxxxxxxx\n".repeat(30));
        for i in 1..20 {
            bomb.push_str(&format!("a{i}: &a{i}\n"));
            bomb.push_str(&format!("  - *a{}\n", i - 1).repeat(30));
        }
        let err = parse(&with(&bomb)).unwrap_err();
        assert_eq!(err.rule, "front-matter-too-complex");
        assert!(err.message.contains("aliases"), "{}", err.message);
        // In flow style, and after blanks and line breaks.
        let flow = with(&format!("a: &a [x]\nb: [{}]", "\n  *a,".repeat(9)));
        assert_eq!(parse(&flow).unwrap_err().rule, "front-matter-too-complex");
        let few = "a: &a [x]\nb: [*a, *a]\nc: {k: *a}\nd: *a\n";
        assert_eq!(Shape::of(few).aliases, 4);
        assert!(check_bounds(few).is_ok());
    }

    fn codes(m: &Manifest) -> Vec<&'static str> {
        m.warnings.iter().map(|w| w.code).collect()
    }

    #[test]
    fn a_full_front_matter_is_read() {
        let text = "---\n\
            name: pdf-tools\n\
            description: Extract text and tables from PDF files.\n\
            license: Apache-2.0\n\
            compatibility: Needs python3 and pdftotext\n\
            metadata:\n  author: example-org\n  version: \"1.0\"\n\
            allowed-tools: Bash(python3:*) Read\n\
            ---\n\
            # PDF tools\n\nBody.\n";
        let m = parse(text).unwrap();
        assert_eq!(m.name, "pdf-tools");
        assert_eq!(m.description, "Extract text and tables from PDF files.");
        assert_eq!(m.front_matter["license"], "Apache-2.0");
        assert_eq!(m.front_matter["metadata"]["version"], "1.0");
        assert_eq!(m.front_matter["allowed-tools"], "Bash(python3:*) Read");
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn the_front_matter_must_be_there_and_closed() {
        assert_eq!(rule_of(""), "front-matter-missing");
        assert_eq!(rule_of("# Title\n"), "front-matter-missing");
        assert_eq!(rule_of("\n---\nname: a\n---\n"), "front-matter-missing");
        assert_eq!(rule_of("--- \nname: a\n---\n"), "front-matter-missing");
        assert_eq!(
            rule_of("---\nname: a\ndescription: d\n"),
            "front-matter-unclosed"
        );
        assert_eq!(
            rule_of("---\nname: a\ndescription: d\n----\n--- \n"),
            "front-matter-unclosed"
        );
        // Not `key: value` lines: read line by line, which finds no name.
        assert_eq!(rule_of("---\n- a\n- b\n---\n"), "name-missing");
        assert_eq!(rule_of("---\n---\n"), "name-missing");
    }

    /// What strict YAML parsers refuse and the tools people use read: a plain value holding
    /// `: `, duplicate keys, a stray quote. Read line by line, with a warning that says how to fix
    /// it; the values are what the original server shows.
    #[test]
    fn invalid_yaml_is_read_line_by_line() {
        let colon = "---\nname: polish\ndescription: Make interfaces production-ready: error \
            handling, empty states\nlicense: MIT\n---\nBody\n";
        let m = parse(colon).unwrap();
        assert_eq!(
            m.description,
            "Make interfaces production-ready: error handling, empty states"
        );
        assert_eq!(m.front_matter["license"], "MIT");
        assert_eq!(codes(&m), ["unquoted-colon"]);
        let message = &m.warnings[0].message;
        assert!(
            message.contains("line 3") && message.contains("double quotes"),
            "{message}"
        );

        let duplicate = "---\nname: a\ndescription: first\ndescription: 'second'\n---\n";
        let m = parse(duplicate).unwrap();
        assert_eq!(m.description, "second");
        assert_eq!(codes(&m), ["yaml-invalid"]);

        // Continued on indented lines (appended), quotes around the value removed, comments and
        // nested entries of other keys left alone.
        let continued = "---\nname: \"a\"\n# a comment\ndescription: 'Does: this'\n  and that\n\
            metadata:\n  author: me\nextra: [unclosed\n---\n";
        let m = parse(continued).unwrap();
        assert_eq!(m.name, "a");
        assert_eq!(m.description, "Does: this and that");
        assert_eq!(m.front_matter["metadata"], "author: me");
        assert_eq!(
            codes(&m),
            ["yaml-invalid", "unknown-field", "field-invalid"]
        );
        // A block scalar's indicator is not its value.
        let block = "---\nname: a\ndescription: |\n  one: two\n  three\nbad: \"x\n---\n";
        assert_eq!(parse(block).unwrap().description, "one: two\nthree");
        // The bounds hold for the lenient reading too: it comes after them.
        let deep = format!(
            "---\nname: a\ndescription: x: y\nz: {}\n---\n",
            "[".repeat(40)
        );
        assert_eq!(rule_of(&deep), "front-matter-too-deep");
    }

    #[test]
    fn name_rules() {
        assert_eq!(rule_of("---\ndescription: d\n---\n"), "name-missing");
        assert_eq!(rule_of("---\nname:\ndescription: d\n---\n"), "name-missing");
        let err = parse("---\nname: PDF_Tools\ndescription: d\n---\n").unwrap_err();
        assert_eq!(err.rule, "name-invalid");
        assert!(err.message.contains("PDF_Tools"), "{}", err.message);
        assert!(err.message.contains("try \"pdf-tools\""), "{}", err.message);
        assert_eq!(
            rule_of("---\nname: a--b\ndescription: d\n---\n"),
            "name-invalid"
        );
        assert_eq!(
            rule_of("---\nname: [a]\ndescription: d\n---\n"),
            "name-invalid"
        );
        // A number is the name it spells, with a warning to quote it.
        let m = parse("---\nname: 123\ndescription: d\n---\n").unwrap();
        assert_eq!(m.name, "123");
        assert_eq!(codes(&m), ["not-text"]);
        assert!(
            parse("---\nname: '123'\ndescription: d\n---\n")
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn names_are_suggested() {
        for (raw, suggested) in [
            ("PDF_Tools", "pdf-tools"),
            ("My Skill!", "my-skill"),
            ("--a--b--", "a-b"),
            ("Café au lait", "caf-au-lait"),
            ("___", "my-skill"),
            (&"x".repeat(80), &"x".repeat(64)),
        ] {
            let name = suggest_name(raw);
            assert_eq!(name, suggested, "{raw}");
            assert!(SkillName::parse(&name).is_ok(), "{name}");
        }
    }

    #[test]
    fn description_rules() {
        assert_eq!(rule_of("---\nname: a\n---\n"), "description-missing");
        assert_eq!(
            rule_of("---\nname: a\ndescription: ''\n---\n"),
            "description-missing"
        );
        assert_eq!(
            rule_of("---\nname: a\ndescription: '   '\n---\n"),
            "description-missing"
        );
        assert_eq!(
            rule_of("---\nname: a\ndescription: [a, b]\n---\n"),
            "description-invalid"
        );
        let m = parse("---\nname: a\ndescription: 42\n---\n").unwrap();
        assert_eq!(
            (m.description.as_str(), codes(&m)),
            ("42", vec!["not-text"])
        );

        let at_limit = format!("---\nname: a\ndescription: {}\n---\n", "é".repeat(1024));
        assert!(parse(&at_limit).unwrap().warnings.is_empty());
        let long = format!("---\nname: a\ndescription: {}\n---\n", "x".repeat(1500));
        let m = parse(&long).unwrap();
        assert_eq!(m.description.len(), 1500);
        assert_eq!(codes(&m), ["description-too-long"]);
        assert!(m.warnings[0].message.contains("1500"), "{:?}", m.warnings);
    }

    #[test]
    fn other_fields_are_warned_about_and_kept_as_written() {
        let base = "---\nname: a\ndescription: d\n";
        let with = |extra: &str| parse(&format!("{base}{extra}---\n")).unwrap();
        assert!(with("license:\ncompatibility:\n").warnings.is_empty());
        assert!(
            with(&format!("compatibility: {}\n", "c".repeat(500)))
                .warnings
                .is_empty()
        );
        let long = with(&format!("compatibility: {}\n", "c".repeat(501)));
        assert_eq!(codes(&long), ["compatibility-too-long"]);
        for (extra, field) in [
            ("license: [a]\n", "license"),
            ("metadata: text\n", "metadata"),
            ("metadata:\n  version: 1.0\n", "metadata"),
            ("allowed-tools: [1, 2]\n", "allowed-tools"),
            ("allowed-tools: {a: b}\n", "allowed-tools"),
        ] {
            let m = with(extra);
            assert_eq!(codes(&m), ["field-invalid"], "{extra}");
            assert_eq!(m.warnings[0].field, field);
        }
        assert!(
            with("allowed-tools:\n  - Read\n  - Bash(git:*)\n")
                .warnings
                .is_empty()
        );

        // Claude Code's fields, and anyone's: kept and served as written.
        let m = with("model: opus\nuser-invocable: false\nhooks:\n  Stop: [x]\nx-custom: 7\n");
        assert_eq!(codes(&m), ["unknown-field"; 4]);
        assert!(
            m.warnings[0].message.contains("Claude Code"),
            "{:?}",
            m.warnings
        );
        assert!(m.warnings[3].message.contains("typo"), "{:?}", m.warnings);
        assert_eq!(m.front_matter["user-invocable"], false);
        assert_eq!(m.front_matter["hooks"]["Stop"][0], "x");
        assert_eq!(m.front_matter["x-custom"], 7);
        let numbered = with("1: x\n");
        assert_eq!(codes(&numbered), ["unknown-field"]);
        assert_eq!(numbered.front_matter["1"], "x");
    }

    #[test]
    fn with_description_changes_that_entry_alone() {
        let body = "\n# Title\n\n---\nnot: front matter\n  odd   spacing\n";
        let text = format!(
            "---\nname: a\n# kept comment\ndescription: >\n  old\n  folded\n\nlicense: MIT\n\
             metadata:\n  z: '1'\n  a: '2'\n---\n{body}"
        );
        for d in AWKWARD {
            let updated = with_description(&text, d).unwrap();
            assert!(updated.ends_with(&format!("\n---\n{body}")), "{updated}");
            assert!(updated.contains("# kept comment\n"), "{updated}");
            assert!(
                updated.contains("\n\nlicense: MIT\nmetadata:\n  z: '1'\n  a: '2'\n"),
                "{updated}"
            );
            let m = parse(&updated).unwrap();
            assert_eq!(m.description, d);
            assert_eq!(m.name, "a");
            assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        }
        assert_eq!(
            with_description(&text, "").unwrap_err().rule,
            "description-missing"
        );
        let huge = "x".repeat(DESCRIPTION_MAX_BYTES + 1);
        assert_eq!(
            with_description(&text, &huge).unwrap_err().rule,
            "description-too-long"
        );
    }

    #[test]
    fn with_description_adds_a_missing_description_and_keeps_crlf() {
        let text = "---\r\nname: a\r\n---\r\nBody\r\n";
        let updated = with_description(text, "new\nlines").unwrap();
        assert!(
            updated.starts_with("---\r\nname: a\r\ndescription:"),
            "{updated:?}"
        );
        assert!(updated.ends_with("---\r\nBody\r\n"), "{updated:?}");
        assert!(!updated.replace("\r\n", "").contains('\n'), "{updated:?}");
        assert_eq!(parse(&updated).unwrap().description, "new\nlines");
    }

    /// A front matter that is not valid YAML keeps every other byte: the explicit change writes
    /// valid YAML for the description only, and the rest is still read as before.
    #[test]
    fn with_description_keeps_invalid_yaml_elsewhere() {
        let text = "---\nname: a\ndescription: Old: text\n  continued\nwhen: Use it: now\n---\nB\n";
        let updated = with_description(text, "New: text").unwrap();
        assert_eq!(
            updated,
            "---\nname: a\ndescription: \"New: text\"\nwhen: Use it: now\n---\nB\n"
        );
        let m = parse(&updated).unwrap();
        assert_eq!(m.description, "New: text");
        assert_eq!(m.front_matter["when"], "Use it: now");
        assert_eq!(
            with_description("no front matter", "d").unwrap_err().rule,
            "front-matter-missing"
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        assert_eq!(
            parse_bytes(b"---\nname: \xff\n---\n").unwrap_err().rule,
            "encoding-invalid"
        );
        assert!(parse_bytes(b"---\nname: a\ndescription: d\n---\n").is_ok());
    }

    const AWKWARD: [&str; 16] = [
        "plain words",
        "key: value with a colon",
        "ends with a colon:",
        "# looks like a comment",
        "- looks like a list item",
        "'single' and \"double\" quotes",
        "yes",
        "null",
        "1.0",
        "multi\nline\n\nwith a blank line",
        "---",
        "first\n---\nsecond",
        "trailing spaces   \non a line",
        "tabs\tand unicode é ✓ 🚀",
        "{not: a map}",
        "&anchor *alias !tag %directive @at `backtick`",
    ];

    #[test]
    fn render_round_trips_awkward_descriptions() {
        let n = name("my-skill");
        for d in AWKWARD {
            let text = render(&n, d);
            let m = parse(&text).unwrap_or_else(|e| panic!("{d:?}: {e}\n{text}"));
            assert_eq!(m.name, "my-skill");
            assert_eq!(m.description, d, "{text}");
            assert!(text.ends_with(&format!("# my-skill\n\n{d}\n")), "{text}");
        }
        // Names YAML would read as something other than text come back as text.
        for odd in [
            "123", "true", "null", "no", "on", "y", "1e3", "0x1f", "0o17", "1-2",
        ] {
            let text = render(&name(odd), "d");
            assert_eq!(parse(&text).unwrap().name, odd, "{text}");
            let fallback = format!("---\nname: {}\ndescription: d\n---\n", double_quoted(odd));
            assert_eq!(parse(&fallback).unwrap().name, odd);
        }
        // Written trimmed, so what is read back is what was checked.
        let padded = render(&n, "  padded \n");
        assert_eq!(parse(&padded).unwrap().description, "padded");
    }

    #[test]
    fn the_fallback_quoting_is_yaml() {
        for d in AWKWARD
            .iter()
            .chain(&["back\\slash \"q\" \u{0} \u{1b} \u{85} \u{9f} \r\n"])
        {
            let text = format!("---\nname: a\ndescription: {}\n---\n", double_quoted(d));
            let m = parse(&text).unwrap_or_else(|e| panic!("{d:?}: {e}\n{text}"));
            assert_eq!(m.description, d.trim(), "{text}");
        }
    }
}
