//! Skill names and the paths of files inside a skill.
//!
//! A skill name becomes a folder name and a file path becomes a path under that folder, so both
//! are checked by rejection: input that is not already in the one accepted form is refused, never
//! cleaned up, so that what the user sent is exactly what lands on disk.

use std::fmt;

/// A skill's name (Agent Skills format): 1 to 64 of `a-z`, `0-9` and `-`, not starting or ending
/// with `-`, no `--`. It is also the name of the skill's folder.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkillName(String);

impl SkillName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<SkillName, &'static str> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.len() > Self::MAX_LEN {
            return Err("must be at most 64 characters");
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("may contain only lower-case letters a-z, digits 0-9 and '-'");
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err("must not start or end with '-'");
        }
        if raw.contains("--") {
            return Err("must not contain '--'");
        }
        Ok(SkillName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SkillName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SkillName").field(&self.0).finish()
    }
}

impl fmt::Display for SkillName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The path of a file inside a skill, relative to the skill's folder, with `/` between
/// components (`scripts/convert.py`).
///
/// It cannot name anything outside the folder: no absolute path, no `.` or `..`, no empty
/// component, no backslash (a separator on Windows), no drive letter, no NUL or control
/// character; at most 16 components of at most 255 bytes each, 4096 bytes in all (the Linux
/// limits, so that every accepted path can be created).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkillPath(String);

impl SkillPath {
    pub const MAX_LEN: usize = 4096;
    pub const MAX_COMPONENTS: usize = 16;
    pub const MAX_COMPONENT_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<SkillPath, &'static str> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.len() > Self::MAX_LEN {
            return Err("must be at most 4096 bytes long");
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain NUL or control characters");
        }
        if raw.contains('\\') {
            return Err("must use '/' between folders, never a backslash");
        }
        if raw.starts_with('/') {
            return Err("must be relative to the skill folder (no leading '/')");
        }
        // `C:` and `C:foo` are drive-relative on Windows; a colon anywhere in the first component
        // is refused so that no form of drive prefix gets through.
        let first = raw.split('/').next().unwrap_or(raw);
        if first.contains(':') {
            return Err("must not start with a drive letter (no ':' in the first component)");
        }
        let mut count = 0;
        for component in raw.split('/') {
            count += 1;
            if component.is_empty() {
                return Err("must not contain empty components ('//' or a trailing '/')");
            }
            if component == "." || component == ".." {
                return Err("must not contain '.' or '..' components");
            }
            if component.len() > Self::MAX_COMPONENT_LEN {
                return Err("each folder or file name must be at most 255 bytes long");
            }
        }
        if count > Self::MAX_COMPONENTS {
            return Err("must be at most 16 levels deep");
        }
        Ok(SkillPath(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The folder names and the file name, in order; never empty, never `.` or `..`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Debug for SkillPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SkillPath").field(&self.0).finish()
    }
}

impl fmt::Display for SkillPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_names_follow_the_agent_skills_rules() {
        for good in ["a", "pdf", "pdf-tools", "a1-b2-c3", "0", &"a".repeat(64)] {
            assert_eq!(SkillName::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "-pdf",
            "pdf-",
            "pdf--tools",
            "PDF",
            "pdf_tools",
            "pdf tools",
            "pdf.tools",
            "pdf/tools",
            "pdé",
            &"a".repeat(65),
        ] {
            assert!(SkillName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn skill_name_messages_name_the_rule() {
        assert_eq!(
            SkillName::parse("pdf--x").unwrap_err(),
            "must not contain '--'"
        );
        assert_eq!(
            SkillName::parse("-x").unwrap_err(),
            "must not start or end with '-'"
        );
        assert!(SkillName::parse("A").unwrap_err().contains("lower-case"));
    }

    #[test]
    fn good_paths_are_kept_exactly() {
        for good in [
            "SKILL.md",
            "scripts/convert.py",
            "a/b/c/d.txt",
            ".hidden",
            "a/.b/c",
            "...",
            "dir/file:with-colon",
            "spaces are fine/ok.txt",
            "ünïcödé/ファイル.md",
        ] {
            let p = SkillPath::parse(good).unwrap();
            assert_eq!(p.as_str(), good);
            assert_eq!(p.to_string(), good);
        }
        let p = SkillPath::parse("a/b/c.txt").unwrap();
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b", "c.txt"]);
    }

    #[test]
    fn dangerous_paths_are_rejected_not_rewritten() {
        for bad in [
            "",
            "/etc/passwd",
            "/",
            "../x",
            "a/../b",
            "a/..",
            "./a",
            "a/./b",
            ".",
            "..",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "C:\\x",
            "C:",
            "C:x",
            "c:/x",
            "weird:name/x",
            "a\0b",
            "a\nb",
            "a\tb",
            "a\u{7f}b",
            "a\u{85}b",
        ] {
            assert!(SkillPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn path_length_and_depth_are_capped() {
        let deep16 = vec!["d"; 16].join("/");
        assert!(SkillPath::parse(&deep16).is_ok());
        let deep17 = vec!["d"; 17].join("/");
        assert_eq!(
            SkillPath::parse(&deep17).unwrap_err(),
            "must be at most 16 levels deep"
        );

        assert!(SkillPath::parse(&"n".repeat(255)).is_ok());
        assert!(SkillPath::parse(&"n".repeat(256)).is_err());
        // 255 bytes but fewer characters: the cap is on bytes, as the file system counts.
        assert!(SkillPath::parse(&"é".repeat(128)).is_err());

        let long = vec!["n".repeat(255); 16].join("/");
        assert!(long.len() < 4096);
        assert!(SkillPath::parse(&long).is_ok());
        let too_long = "n".repeat(4097);
        assert_eq!(
            SkillPath::parse(&too_long).unwrap_err(),
            "must be at most 4096 bytes long"
        );
    }
}
