//! Browser sessions of the web console: the cookie holds 64 hex digits (256 bits from the OS
//! RNG); only their BLAKE3 hash is stored, so a copy of the database signs nobody in.

use std::fmt;

const HEX_LEN: usize = 64;

/// A browser session's secret, as its cookie carries it. Its `Debug` never shows it.
pub struct BrowserSessionSecret(String);

impl BrowserSessionSecret {
    /// Draws 256 bits from the operating system's random number generator.
    pub fn generate() -> Result<BrowserSessionSecret, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(BrowserSessionSecret(hex::encode(bytes)))
    }

    /// Accepts a cookie's value only if it has the exact shape of a secret this service issues,
    /// so that garbage is refused before any lookup.
    pub fn parse(raw: &str) -> Option<BrowserSessionSecret> {
        let ok =
            raw.len() == HEX_LEN && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| BrowserSessionSecret(raw.to_owned()))
    }

    /// The BLAKE3 hash that is stored and looked up.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(self.0.as_bytes()).as_bytes()
    }

    /// The secret itself: for the cookie, and for deriving the session's CSRF token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BrowserSessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrowserSessionSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_issued_shape_parses_and_debug_hides_it() {
        let secret = BrowserSessionSecret::generate().unwrap();
        let parsed = BrowserSessionSecret::parse(secret.expose()).unwrap();
        assert_eq!(parsed.hash(), secret.hash());
        assert_eq!(format!("{secret:?}"), "BrowserSessionSecret(<redacted>)");
        assert!(BrowserSessionSecret::parse("").is_none());
        assert!(BrowserSessionSecret::parse(&secret.expose().to_uppercase()).is_none());
        assert!(BrowserSessionSecret::parse(&format!("{}0", secret.expose())).is_none());
    }
}
