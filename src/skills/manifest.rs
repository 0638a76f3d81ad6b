//! `SKILL.md`: its YAML front matter read and checked against the Agent Skills rules, a new one
//! written, and its description updated in place.
//!
//! The front matter is the part between a first line `---` and the next line that is exactly
//! `---`; everything after that is the body, which this module never changes. The YAML is read by
//! a real parser (serde_yaml_ng), so block scalars (`>`, `|`), quoting and escapes mean what YAML
//! says they mean.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use crate::domain::SkillName;

/// The most characters a description may have (after trimming surrounding whitespace).
pub const DESCRIPTION_MAX_CHARS: usize = 1024;
/// The most characters `compatibility` may have.
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

/// The top-level keys the Agent Skills format defines; any other key is refused so that a typo
/// (`descripton`) is reported instead of silently ignored.
const KNOWN_FIELDS: [&str; 6] = [
    "name",
    "description",
    "license",
    "compatibility",
    "metadata",
    "allowed-tools",
];

/// The checked front matter of a `SKILL.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// A valid [`SkillName`] (checked; kept as text).
    pub name: String,
    /// 1 to 1024 characters, surrounding whitespace trimmed (a folded `>` scalar ends with a line
    /// break that is not part of the description).
    pub description: String,
    /// Trimmed; `None` when absent, empty or `null`.
    pub license: Option<String>,
    /// 1 to 500 characters, trimmed; `None` when absent or `null`.
    pub compatibility: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Space-separated tool names; a YAML list of strings is joined with spaces.
    pub allowed_tools: Option<String>,
    /// The front matter as written, as JSON (every field, untrimmed): what the Skills extension
    /// of MCP serves as a skill's `frontmatter`.
    pub front_matter: serde_json::Value,
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
    let mapping = front_matter(text, &parts)?;
    check(&mapping)
}

/// [`parse`] for a file's raw bytes: a `SKILL.md` must be UTF-8.
pub fn parse_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ManifestError::new("encoding-invalid", "SKILL.md: the file must be UTF-8 text")
    })?;
    parse(text)
}

/// Checks a description as `SKILL.md` would hold it and returns it trimmed: 1 to 1024 characters
/// once surrounding whitespace is removed. Handlers use this to refuse a bad description with the
/// same words a bad `SKILL.md` gets.
pub fn check_description(description: &str) -> Result<&str, ManifestError> {
    let trimmed = description.trim();
    if trimmed.is_empty() {
        return Err(ManifestError::new(
            "description-missing",
            "SKILL.md: `description` is required and must be 1 to 1024 characters",
        ));
    }
    let count = trimmed.chars().count();
    if count > DESCRIPTION_MAX_CHARS {
        return Err(ManifestError::new(
            "description-too-long",
            format!("SKILL.md: `description` must be 1 to 1024 characters (it has {count})"),
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
/// trimmed as in [`check_description`]). The other keys keep their order and values; the body is
/// kept byte for byte. YAML comments inside the front matter are lost, since the front matter is
/// written anew. The result is checked with [`parse`] before it is returned.
pub fn with_description(text: &str, description: &str) -> Result<String, ManifestError> {
    let description = check_description(description)?;
    let parts = split(text)?;
    let mut mapping = front_matter(text, &parts)?;
    mapping.insert(
        Value::String("description".to_owned()),
        Value::String(description.to_owned()),
    );
    let mut yaml = to_yaml(&mapping)?;
    // Keep the file's line endings: YAML reads `\r\n` and `\n` alike, also inside block scalars.
    if parts.head.ends_with("\r\n") {
        yaml = yaml.replace('\n', "\r\n");
    }
    let updated = format!("{}{yaml}{}{}", parts.head, parts.closing, parts.body);
    parse(&updated)?;
    Ok(updated)
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

/// The front matter as a YAML mapping (an empty front matter is an empty mapping).
fn front_matter(text: &str, parts: &Parts<'_>) -> Result<Mapping, ManifestError> {
    // The opening `---` is also YAML's document marker, so the parser is given the file from its
    // start: the line numbers in its messages are then the lines of SKILL.md.
    // The byte-order mark, if any, is left out: the parser would take it for content.
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    check_bounds(parts.yaml)?;
    let document = &text[bom..parts.head.len() + parts.yaml.len()];
    let value: Value = serde_yaml_ng::from_str(document).map_err(|e| {
        ManifestError::new(
            "yaml-invalid",
            format!("SKILL.md: the front matter is not valid YAML: {e}"),
        )
    })?;
    match value {
        Value::Mapping(mapping) => Ok(mapping),
        Value::Null => Ok(Mapping::new()),
        other => Err(ManifestError::new(
            "front-matter-not-mapping",
            format!(
                "SKILL.md: the front matter must be `key: value` lines, not {}",
                kind(&other)
            ),
        )),
    }
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

fn to_yaml<T: Serialize>(value: &T) -> Result<String, ManifestError> {
    serde_yaml_ng::to_string(value).map_err(|e| {
        ManifestError::new(
            "yaml-invalid",
            format!("SKILL.md: the front matter could not be written as YAML: {e}"),
        )
    })
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

/// A field that must be text.
fn text_field<'a>(
    mapping: &'a Mapping,
    key: &str,
    rule: &'static str,
) -> Result<Option<&'a str>, ManifestError> {
    match field(mapping, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ManifestError::new(
            rule,
            format!(
                "SKILL.md: `{key}` must be text, not {} (put it in quotes)",
                kind(other)
            ),
        )),
    }
}

fn check(mapping: &Mapping) -> Result<Manifest, ManifestError> {
    for key in mapping.keys() {
        match key {
            Value::String(k) if KNOWN_FIELDS.contains(&k.as_str()) => {}
            Value::String(k) => {
                return Err(ManifestError::new(
                    "unknown-field",
                    format!(
                        "SKILL.md: unknown front matter field `{k}` (allowed: name, description, \
                         license, compatibility, metadata, allowed-tools)"
                    ),
                ));
            }
            other => {
                return Err(ManifestError::new(
                    "unknown-field",
                    format!(
                        "SKILL.md: front matter field names must be text, not {}",
                        kind(other)
                    ),
                ));
            }
        }
    }

    let name = match text_field(mapping, "name", "name-invalid")? {
        None => {
            return Err(ManifestError::new(
                "name-missing",
                "SKILL.md: `name` is required",
            ));
        }
        Some(raw) => SkillName::parse(raw).map_err(|why| {
            ManifestError::new(
                "name-invalid",
                format!("SKILL.md: `name` {why} (it is {raw:?})"),
            )
        })?,
    };

    let description = match text_field(mapping, "description", "description-invalid")? {
        None => check_description("")?,
        Some(raw) => check_description(raw)?,
    };

    let license = text_field(mapping, "license", "license-invalid")?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);

    let compatibility = match text_field(mapping, "compatibility", "compatibility-invalid")? {
        None => None,
        Some(raw) => {
            let trimmed = raw.trim();
            let count = trimmed.chars().count();
            if count == 0 {
                return Err(ManifestError::new(
                    "compatibility-invalid",
                    "SKILL.md: `compatibility` must be 1 to 500 characters when it is given",
                ));
            }
            if count > COMPATIBILITY_MAX_CHARS {
                return Err(ManifestError::new(
                    "compatibility-too-long",
                    format!(
                        "SKILL.md: `compatibility` must be at most 500 characters (it has {count})"
                    ),
                ));
            }
            Some(trimmed.to_owned())
        }
    };

    let metadata = match field(mapping, "metadata") {
        None => BTreeMap::new(),
        Some(Value::Mapping(entries)) => {
            let mut metadata = BTreeMap::new();
            for (k, v) in entries {
                let Value::String(k) = k else {
                    return Err(ManifestError::new(
                        "metadata-invalid",
                        format!(
                            "SKILL.md: the keys of `metadata` must be text, not {}",
                            kind(k)
                        ),
                    ));
                };
                let Value::String(v) = v else {
                    return Err(ManifestError::new(
                        "metadata-invalid",
                        format!(
                            "SKILL.md: `metadata.{k}` must be text, not {} (put it in quotes)",
                            kind(v)
                        ),
                    ));
                };
                metadata.insert(k.clone(), v.clone());
            }
            metadata
        }
        Some(other) => {
            return Err(ManifestError::new(
                "metadata-invalid",
                format!(
                    "SKILL.md: `metadata` must be `key: value` pairs of text, not {}",
                    kind(other)
                ),
            ));
        }
    };

    let allowed_tools = match field(mapping, "allowed-tools") {
        None => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(Value::Sequence(items)) => {
            let mut tools = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(tool) = item else {
                    return Err(ManifestError::new(
                        "allowed-tools-invalid",
                        format!(
                            "SKILL.md: every entry of `allowed-tools` must be text, not {}",
                            kind(item)
                        ),
                    ));
                };
                tools.push(tool.as_str());
            }
            Some(tools.join(" "))
        }
        Some(other) => {
            return Err(ManifestError::new(
                "allowed-tools-invalid",
                format!(
                    "SKILL.md: `allowed-tools` must be text or a list of text, not {}",
                    kind(other)
                ),
            ));
        }
    }
    .filter(|s| !s.is_empty());

    // Every key is a known string and every value plain YAML, so this conversion holds; the
    // fallback keeps the two fields every reader needs should it ever not.
    let front_matter = serde_json::to_value(mapping)
        .unwrap_or_else(|_| serde_json::json!({"name": name.as_str(), "description": description}));
    Ok(Manifest {
        name: name.as_str().to_owned(),
        description: description.to_owned(),
        license,
        compatibility,
        metadata,
        allowed_tools,
        front_matter,
    })
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
        assert_eq!(m.license.as_deref(), Some("Apache-2.0"));
        assert_eq!(
            m.compatibility.as_deref(),
            Some("Needs python3 and pdftotext")
        );
        assert_eq!(
            m.metadata.get("author").map(String::as_str),
            Some("example-org")
        );
        assert_eq!(m.metadata.get("version").map(String::as_str), Some("1.0"));
        assert_eq!(m.allowed_tools.as_deref(), Some("Bash(python3:*) Read"));
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
        // `----` and `--- ` are not the closing line.
        assert_eq!(
            rule_of("---\nname: a\ndescription: d\n----\n--- \n"),
            "front-matter-unclosed"
        );
        assert_eq!(rule_of("---\n- a\n- b\n---\n"), "front-matter-not-mapping");
        assert_eq!(rule_of("---\n---\n"), "name-missing");
    }

    #[test]
    fn bad_yaml_is_reported_with_the_line_of_skill_md() {
        let err = parse("---\nname: a\ndescription: [unclosed\n---\n").unwrap_err();
        assert_eq!(err.rule, "yaml-invalid");
        assert!(err.message.contains("line"), "{}", err.message);
        let dup = parse("---\nname: a\nname: b\ndescription: d\n---\n").unwrap_err();
        assert_eq!(dup.rule, "yaml-invalid");
        // The mapping that holds the duplicate starts on line 2 of SKILL.md (line 1 of the YAML).
        assert!(dup.message.contains("line 2"), "{}", dup.message);
    }

    #[test]
    fn name_rules() {
        assert_eq!(rule_of("---\ndescription: d\n---\n"), "name-missing");
        assert_eq!(rule_of("---\nname:\ndescription: d\n---\n"), "name-missing");
        let err = parse("---\nname: PDF_Tools\ndescription: d\n---\n").unwrap_err();
        assert_eq!(err.rule, "name-invalid");
        assert!(err.message.contains("`name`"), "{}", err.message);
        assert!(err.message.contains("PDF_Tools"), "{}", err.message);
        assert_eq!(
            rule_of("---\nname: a--b\ndescription: d\n---\n"),
            "name-invalid"
        );
        assert_eq!(
            rule_of("---\nname: 123\ndescription: d\n---\n"),
            "name-invalid"
        );
        assert_eq!(
            parse("---\nname: '123'\ndescription: d\n---\n")
                .unwrap()
                .name,
            "123"
        );
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
            rule_of("---\nname: a\ndescription: 42\n---\n"),
            "description-invalid"
        );

        let at_limit = format!("---\nname: a\ndescription: {}\n---\n", "é".repeat(1024));
        assert_eq!(parse(&at_limit).unwrap().description.chars().count(), 1024);
        let padded = format!(
            "---\nname: a\ndescription: '  {}  '\n---\n",
            "x".repeat(1024)
        );
        assert!(parse(&padded).is_ok());

        let long = format!("---\nname: a\ndescription: {}\n---\n", "x".repeat(1500));
        let err = parse(&long).unwrap_err();
        assert_eq!(err.rule, "description-too-long");
        assert_eq!(
            err.message,
            "SKILL.md: `description` must be 1 to 1024 characters (it has 1500)"
        );
        assert_eq!(err.to_string(), err.message);
    }

    #[test]
    fn optional_field_rules() {
        let base = "---\nname: a\ndescription: d\n";
        let with = |extra: &str| format!("{base}{extra}---\n");

        let m = parse(&with("")).unwrap();
        assert_eq!(m.license, None);
        assert_eq!(m.compatibility, None);
        assert!(m.metadata.is_empty());
        assert_eq!(m.allowed_tools, None);

        assert!(parse(&with(&format!("compatibility: {}\n", "c".repeat(500)))).is_ok());
        assert_eq!(
            rule_of(&with(&format!("compatibility: {}\n", "c".repeat(501)))),
            "compatibility-too-long"
        );
        assert_eq!(
            rule_of(&with("compatibility: ''\n")),
            "compatibility-invalid"
        );
        assert_eq!(rule_of(&with("license: [a]\n")), "license-invalid");
        assert_eq!(parse(&with("license:\n")).unwrap().license, None);

        assert_eq!(rule_of(&with("metadata: text\n")), "metadata-invalid");
        let err = parse(&with("metadata:\n  version: 1.0\n")).unwrap_err();
        assert_eq!(err.rule, "metadata-invalid");
        assert!(err.message.contains("metadata.version"), "{}", err.message);

        let list = parse(&with("allowed-tools:\n  - Read\n  - Bash(git:*)\n")).unwrap();
        assert_eq!(list.allowed_tools.as_deref(), Some("Read Bash(git:*)"));
        assert_eq!(
            rule_of(&with("allowed-tools: [1, 2]\n")),
            "allowed-tools-invalid"
        );
        assert_eq!(
            rule_of(&with("allowed-tools: {a: b}\n")),
            "allowed-tools-invalid"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = parse("---\nname: a\ndescription: d\nversion: 2\n---\n").unwrap_err();
        assert_eq!(err.rule, "unknown-field");
        assert!(err.message.contains("`version`"), "{}", err.message);
        assert_eq!(
            rule_of("---\nname: a\ndescription: d\n1: x\n---\n"),
            "unknown-field"
        );
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

    #[test]
    fn with_description_keeps_order_other_fields_and_the_body() {
        let body = "\n# Title\n\n---\nnot: front matter\n  odd   spacing\n";
        let text = format!(
            "---\nname: a\ndescription: old\nlicense: MIT\nmetadata:\n  z: '1'\n  a: '2'\n---\n{body}"
        );
        for d in AWKWARD {
            let updated = with_description(&text, d).unwrap();
            assert!(updated.ends_with(&format!("\n---\n{body}")), "{updated}");
            let m = parse(&updated).unwrap();
            assert_eq!(m.description, d);
            assert_eq!(m.name, "a");
            assert_eq!(m.license.as_deref(), Some("MIT"));
            assert_eq!(m.metadata.len(), 2);
            let order: Vec<usize> = [
                "name:",
                "description:",
                "license:",
                "metadata:",
                "  z:",
                "  a:",
            ]
            .iter()
            .map(|k| updated.find(k).unwrap())
            .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{updated}");
        }
        assert_eq!(
            with_description(&text, "").unwrap_err().rule,
            "description-missing"
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

    #[test]
    fn with_description_refuses_a_broken_file() {
        assert_eq!(
            with_description("no front matter", "d").unwrap_err().rule,
            "front-matter-missing"
        );
        assert_eq!(
            with_description("---\nname: a\nextra: x\n---\n", "d")
                .unwrap_err()
                .rule,
            "unknown-field"
        );
    }
}
