//! Unified diffs of a skill's text files between two versions.
//!
//! A file is text when it is UTF-8 without NUL bytes; anything else is binary and gets no diff,
//! only its sizes and digests. The diff of large files is not made (it would be as large as they
//! are, and no reader wants it), and the diff algorithm runs under a deadline, after which it
//! gives a correct but coarser diff: a hostile pair of files cannot hold a thread for long.

use std::time::Duration;

use similar::TextDiff;

/// Files larger than this (either side) get no diff.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// How long the diff algorithm looks for the smallest diff of one file before it settles for a
/// coarser one.
const DEADLINE: Duration = Duration::from_millis(250);

/// What can be shown of how a file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextChange {
    /// The unified diff, with `a/<path>` and `b/<path>` (or `/dev/null`) as its header.
    Diff(String),
    /// One side is not text.
    Binary,
    /// One side is larger than [`MAX_TEXT_BYTES`].
    TooLarge,
}

impl TextChange {
    /// Why there is no diff, as the API says it; `None` when there is one.
    pub fn omitted(&self) -> Option<&'static str> {
        match self {
            TextChange::Diff(_) => None,
            TextChange::Binary => Some("binary"),
            TextChange::TooLarge => Some("too-large"),
        }
    }
}

/// The unified diff of `path` from `old` to `new` (`None`: the file is not on that side), with
/// three lines of context.
pub fn unified(path: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> TextChange {
    let sides = [old, new];
    if sides.iter().flatten().any(|b| b.len() > MAX_TEXT_BYTES) {
        return TextChange::TooLarge;
    }
    let mut texts = [""; 2];
    for (text, side) in texts.iter_mut().zip(sides) {
        if let Some(bytes) = side {
            match std::str::from_utf8(bytes) {
                Ok(s) if !s.contains('\0') => *text = s,
                _ => return TextChange::Binary,
            }
        }
    }
    let diff = TextDiff::configure()
        .timeout(DEADLINE)
        .diff_lines(texts[0], texts[1]);
    let header = |side: Option<&[u8]>, prefix: &str| match side {
        Some(_) => format!("{prefix}/{path}"),
        None => "/dev/null".to_owned(),
    };
    TextChange::Diff(
        diff.unified_diff()
            .context_radius(3)
            .header(&header(old, "a"), &header(new, "b"))
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_line_is_a_hunk_with_context() {
        let old = b"one\ntwo\nthree\nfour\n";
        let new = b"one\ntwo\n3\nfour\n";
        let TextChange::Diff(diff) = unified("SKILL.md", Some(old), Some(new)) else {
            panic!("text files have a diff");
        };
        assert_eq!(
            diff,
            "--- a/SKILL.md\n+++ b/SKILL.md\n@@ -1,4 +1,4 @@\n one\n two\n-three\n+3\n four\n"
        );
    }

    #[test]
    fn an_added_or_removed_file_is_diffed_against_nothing() {
        let TextChange::Diff(added) = unified("notes.md", None, Some(b"hello\n")) else {
            panic!("an added text file has a diff");
        };
        assert_eq!(
            added,
            "--- /dev/null\n+++ b/notes.md\n@@ -0,0 +1 @@\n+hello\n"
        );
        let TextChange::Diff(removed) = unified("notes.md", Some(b"bye"), None) else {
            panic!("a removed text file has a diff");
        };
        assert!(removed.starts_with("--- a/notes.md\n+++ /dev/null\n"));
        assert!(removed.contains("-bye\n\\ No newline at end of file"));
    }

    #[test]
    fn binary_and_large_files_get_no_diff() {
        assert_eq!(
            unified("logo.png", Some(b"\x89PNG\r\n\x1a\n\0"), Some(b"x")),
            TextChange::Binary
        );
        assert_eq!(
            unified("latin1.txt", Some(b"caf\xe9"), Some(b"cafe")),
            TextChange::Binary
        );
        let big = vec![b'a'; MAX_TEXT_BYTES + 1];
        assert_eq!(
            unified("big.txt", Some(b"a"), Some(&big)),
            TextChange::TooLarge
        );
        assert_eq!(TextChange::TooLarge.omitted(), Some("too-large"));
    }

    #[test]
    fn crlf_lines_are_compared_as_written() {
        let TextChange::Diff(diff) = unified("a.txt", Some(b"x\r\ny\r\n"), Some(b"x\ny\r\n"))
        else {
            panic!("text");
        };
        assert!(diff.contains("-x\r\n+x\n"), "{diff:?}");
    }
}
