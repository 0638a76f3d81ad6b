//! API tokens: `ask_live_` followed by 64 hex digits (256 bits from the OS RNG).
//!
//! Only the BLAKE3 hash of the whole token string is stored; the token itself exists in memory
//! between its creation and the response that shows it once.

use std::fmt;

/// Every API token starts with this.
pub const TOKEN_PREFIX: &str = "ask_live_";

const HEX_LEN: usize = 64;
/// How much of a token `GET /tokens` shows so that people can tell their tokens apart.
const SHOWN_LEN: usize = TOKEN_PREFIX.len() + 8;

/// A freshly generated token, or one presented by a client. Its `Debug` never shows it.
pub struct ApiTokenSecret(String);

impl ApiTokenSecret {
    /// Draws 256 bits from the operating system's random number generator.
    pub fn generate() -> Result<ApiTokenSecret, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(ApiTokenSecret(format!(
            "{TOKEN_PREFIX}{}",
            hex::encode(bytes)
        )))
    }

    /// Accepts a presented token only if it has the exact shape of one this service issues, so
    /// that garbage is refused before any lookup.
    pub fn parse(raw: &str) -> Option<ApiTokenSecret> {
        let hex = raw.strip_prefix(TOKEN_PREFIX)?;
        let ok =
            hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| ApiTokenSecret(raw.to_owned()))
    }

    /// The BLAKE3 hash that is stored and looked up.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(self.0.as_bytes()).as_bytes()
    }

    /// The beginning of the token, safe to show again later.
    pub fn shown_prefix(&self) -> String {
        self.0[..SHOWN_LEN].to_owned()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiTokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiTokenSecret(<redacted>)")
    }
}

/// A token's name: 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(raw: &str) -> Result<TokenName, &'static str> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("must not be empty");
        }
        if s.chars().count() > 100 {
            return Err("must be at most 100 characters");
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(TokenName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let a = ApiTokenSecret::generate().unwrap();
        let b = ApiTokenSecret::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), TOKEN_PREFIX.len() + 64);
        assert!(ApiTokenSecret::parse(a.expose()).is_some());
        assert_eq!(a.hash(), ApiTokenSecret::parse(a.expose()).unwrap().hash());
        assert!(a.expose().starts_with(&a.shown_prefix()));
        assert!(!format!("{a:?}").contains(&a.expose()[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = format!("{TOKEN_PREFIX}{}", "a".repeat(64));
        assert!(ApiTokenSecret::parse(&good).is_some());
        for bad in [
            String::new(),
            "a".repeat(64),
            format!("{TOKEN_PREFIX}{}", "a".repeat(63)),
            format!("{TOKEN_PREFIX}{}", "A".repeat(64)),
            format!("{TOKEN_PREFIX}{}", "g".repeat(64)),
            format!("ask_test_{}", "a".repeat(64)),
        ] {
            assert!(ApiTokenSecret::parse(&bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn token_names_are_checked() {
        assert_eq!(TokenName::parse("  laptop ").unwrap().as_str(), "laptop");
        assert!(TokenName::parse("").is_err());
        assert!(TokenName::parse(&"x".repeat(101)).is_err());
        assert!(TokenName::parse("a\nb").is_err());
    }
}
