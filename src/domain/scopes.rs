//! What a credential for MCP may do: `skills:read` (list and load skills, read their files and
//! resources) and `skills:run` (`run_shell_command`). API tokens and, later, OAuth grants carry
//! them; a request that needs a scope its credential lacks is refused.

use std::fmt;

/// A set of scopes: a copyable bit set, written as OAuth writes scopes (names separated by
/// spaces, in a fixed order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

const READ_BIT: u8 = 1;
const RUN_BIT: u8 = 2;

/// Every scope's name and bit, in the order they are written.
const NAMES: [(&str, u8); 2] = [("skills:read", READ_BIT), ("skills:run", RUN_BIT)];

impl Scopes {
    pub const READ: Scopes = Scopes(READ_BIT);
    pub const RUN: Scopes = Scopes(RUN_BIT);
    /// Both: what an API token gets unless it asks for less, and what every token made before
    /// scopes existed has.
    pub const ALL: Scopes = Scopes(READ_BIT | RUN_BIT);

    /// Whether every scope of `other` is in this set.
    pub fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the scopes in this set.
    pub fn names(self) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(_, bit)| self.0 & bit != 0)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Every scope this server knows, in order.
    pub fn supported() -> Vec<&'static str> {
        Scopes::ALL.names()
    }

    /// Reads scope names (each once at most); an unknown name is refused, naming the known
    /// ones. `skills:read` is needed by everything else, so a set without it is refused too.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut bits = 0u8;
        for name in names {
            let Some((_, bit)) = NAMES.iter().find(|(n, _)| *n == name) else {
                return Err(format!(
                    "unknown scope {name:?}: the scopes are {}",
                    Scopes::supported().join(" and ")
                ));
            };
            bits |= bit;
        }
        if bits == 0 {
            return Err(format!(
                "give at least one scope: {}",
                Scopes::supported().join(", ")
            ));
        }
        let scopes = Scopes(bits);
        if !scopes.contains(Scopes::READ) {
            return Err(
                "skills:run needs skills:read too (a command runs in a skill it reads)".into(),
            );
        }
        Ok(scopes)
    }

    /// The scopes of a stored credential. The column holds what [`Scopes`]'s `Display` wrote; a
    /// value edited by hand into something else may only read.
    pub fn from_stored(text: &str) -> Scopes {
        Scopes::parse_spaced(text).unwrap_or(Scopes::READ)
    }

    /// Reads the space-separated form stored in the database and sent by OAuth clients.
    pub fn parse_spaced(text: &str) -> Result<Scopes, String> {
        Scopes::parse(text.split(' ').filter(|s| !s.is_empty()))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_read_and_written_in_one_order() {
        assert_eq!(
            Scopes::parse_spaced("skills:run skills:read"),
            Ok(Scopes::ALL)
        );
        assert_eq!(Scopes::ALL.to_string(), "skills:read skills:run");
        assert_eq!(Scopes::parse(["skills:read"]), Ok(Scopes::READ));
        assert_eq!(Scopes::READ.to_string(), "skills:read");
        assert!(Scopes::ALL.contains(Scopes::RUN));
        assert!(!Scopes::READ.contains(Scopes::RUN));
        assert!(Scopes::parse_spaced("  skills:read  ").is_ok());
        assert_eq!(Scopes::from_stored("skills:read skills:run"), Scopes::ALL);
        assert_eq!(Scopes::from_stored("garbage"), Scopes::READ);
    }

    #[test]
    fn unknown_empty_and_run_alone_are_refused() {
        let err = Scopes::parse(["skills:write"]).unwrap_err();
        assert!(err.contains("skills:read and skills:run"), "{err}");
        assert!(Scopes::parse([]).unwrap_err().contains("at least one"));
        assert!(
            Scopes::parse(["skills:run"])
                .unwrap_err()
                .contains("skills:read")
        );
        assert!(Scopes::parse_spaced("SKILLS:READ").is_err());
    }
}
