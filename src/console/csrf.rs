//! CSRF tokens of the console's forms: synchronizer tokens that are never stored.
//!
//! A signed-in form's token is a keyed BLAKE3 hash of the browser session's secret; a sign-in or
//! sign-up form's is one of a random visitor cookie's. The key is derived from the server's
//! signing secret, so a token cannot be made without it, and one is valid exactly as long as the
//! cookie it is bound to. The HTTP glue checks the token together with the request's `Origin`:
//! the cookie alone never authorizes a change.

use std::fmt;

use crate::domain::BrowserSessionSecret;

/// The keys tokens are made with.
pub struct Csrf {
    session_key: [u8; 32],
    visitor_key: [u8; 32],
}

impl fmt::Debug for Csrf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Csrf(<keys redacted>)")
    }
}

impl Csrf {
    /// Derives the keys from the server's signing secret (one key per use, so neither token can
    /// stand in for the other, nor for a JWT signature).
    pub fn new(secret: &[u8]) -> Csrf {
        Csrf {
            session_key: blake3::derive_key("agentskills-mcp 2026-12 console csrf session", secret),
            visitor_key: blake3::derive_key("agentskills-mcp 2026-12 console csrf visitor", secret),
        }
    }

    /// The token of a signed-in browser's forms.
    pub fn session_token(&self, session: &BrowserSessionSecret) -> String {
        blake3::keyed_hash(&self.session_key, session.expose().as_bytes())
            .to_hex()
            .to_string()
    }

    /// Whether `given` is the token of `session` (compared in constant time).
    pub fn check_session(&self, session: &BrowserSessionSecret, given: &str) -> bool {
        let expected = blake3::keyed_hash(&self.session_key, session.expose().as_bytes());
        blake3::Hash::from_hex(given).is_ok_and(|given| given == expected)
    }

    /// The token of a visitor's sign-in and sign-up forms.
    pub fn visitor_token(&self, visitor: &VisitorId) -> String {
        blake3::keyed_hash(&self.visitor_key, visitor.0.as_bytes())
            .to_hex()
            .to_string()
    }

    /// Whether `given` is the token of `visitor` (compared in constant time).
    pub fn check_visitor(&self, visitor: &VisitorId, given: &str) -> bool {
        let expected = blake3::keyed_hash(&self.visitor_key, visitor.0.as_bytes());
        blake3::Hash::from_hex(given).is_ok_and(|given| given == expected)
    }
}

/// A visitor cookie's value: 64 hex digits from the OS RNG.
#[derive(Clone, PartialEq, Eq)]
pub struct VisitorId(String);

impl fmt::Debug for VisitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VisitorId(<redacted>)")
    }
}

impl VisitorId {
    pub fn generate() -> Result<VisitorId, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(VisitorId(hex::encode(bytes)))
    }

    /// Only the shape this server issues.
    pub fn parse(raw: &str) -> Option<VisitorId> {
        let ok = raw.len() == 64 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| VisitorId(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_fits_only_its_own_cookie_and_key() {
        let csrf = Csrf::new(b"a signing secret of at least thirty-two bytes");
        let other = Csrf::new(b"another signing secret, also long enough here");
        let session = BrowserSessionSecret::generate().unwrap();
        let token = csrf.session_token(&session);
        assert!(csrf.check_session(&session, &token));
        assert!(!other.check_session(&session, &token));
        assert!(!csrf.check_session(&BrowserSessionSecret::generate().unwrap(), &token));
        assert!(!csrf.check_session(&session, ""));
        assert!(!csrf.check_session(&session, "not hex"));
        let visitor = VisitorId::generate().unwrap();
        let token = csrf.visitor_token(&visitor);
        assert!(csrf.check_visitor(&visitor, &token));
        // A visitor's token is no session's token, even for the same 64 hex digits.
        let same = BrowserSessionSecret::parse(visitor.expose()).unwrap();
        assert!(!csrf.check_session(&same, &token));
        assert!(VisitorId::parse("x").is_none());
    }
}
