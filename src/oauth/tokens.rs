//! The secrets OAuth hands out: access tokens, refresh tokens and authorization codes; and the
//! PKCE check.
//!
//! An **access token** is `ask_oat_` and the base64url of 64 bytes: the grant's id (16), its
//! expiry in Unix seconds (8), 8 random bytes, and a keyed BLAKE3 MAC of those 32 bytes (32) under
//! a key derived from the server's signing secret. It is checked in memory (the MAC, the expiry,
//! then the grant in the token registry's map) with no database round trip, like an API token;
//! revoking the grant refuses every access token of it at once.
//!
//! **Refresh tokens** (`ask_ort_`) and **codes** (`ask_oac_`) are 256 random bits in hex; only
//! their BLAKE3 hash is stored.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Every OAuth access token starts with this.
pub const ACCESS_PREFIX: &str = "ask_oat_";
pub const REFRESH_PREFIX: &str = "ask_ort_";
pub const CODE_PREFIX: &str = "ask_oac_";

const PAYLOAD: usize = 32;
const ACCESS_LEN: usize = 86;

/// Issues and checks access tokens.
#[derive(Clone)]
pub struct AccessTokens {
    key: [u8; 32],
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessTokens(<key>)")
    }
}

impl AccessTokens {
    pub fn new(secret: &[u8]) -> AccessTokens {
        AccessTokens {
            key: blake3::derive_key("agentskills-mcp 2026-12 oauth access token", secret),
        }
    }

    /// A token for `grant` that stops working at `expires_at` (Unix seconds).
    pub fn issue(&self, grant: Uuid, expires_at: i64) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; PAYLOAD + 32];
        bytes[..16].copy_from_slice(grant.as_bytes());
        bytes[16..24].copy_from_slice(&expires_at.to_be_bytes());
        getrandom::fill(&mut bytes[24..PAYLOAD])?;
        let mac = blake3::keyed_hash(&self.key, &bytes[..PAYLOAD]);
        bytes[PAYLOAD..].copy_from_slice(mac.as_bytes());
        Ok(format!("{ACCESS_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The grant and expiry of a token this server made; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<(Uuid, i64)> {
        let encoded = token.strip_prefix(ACCESS_PREFIX)?;
        if encoded.len() != ACCESS_LEN {
            return None;
        }
        let mut bytes = [0u8; PAYLOAD + 32];
        let n = URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes).ok()?;
        if n != bytes.len() {
            return None;
        }
        let expected = blake3::keyed_hash(&self.key, &bytes[..PAYLOAD]);
        let mut given = [0u8; 32];
        given.copy_from_slice(&bytes[PAYLOAD..]);
        // blake3::Hash compares in constant time.
        if expected != blake3::Hash::from(given) {
            return None;
        }
        let grant = Uuid::from_slice(&bytes[..16]).ok()?;
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&bytes[16..24]);
        Some((grant, i64::from_be_bytes(exp)))
    }
}

/// A random secret with `prefix` (a refresh token or a code), and the hash that is stored.
pub fn random_secret(prefix: &str) -> Result<(String, [u8; 32]), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let secret = format!("{prefix}{}", hex::encode(bytes));
    let hash = secret_hash(&secret);
    Ok((secret, hash))
}

/// The stored hash of a refresh token or code.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// Whether `challenge` is a well-formed S256 challenge: base64url of 32 bytes, no padding.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// PKCE (RFC 7636, S256): the verifier is 43 to 128 unreserved characters and its SHA-256, in
/// base64url, is the challenge.
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let digest = Sha256::digest(verifier.as_bytes());
    let computed = URL_SAFE_NO_PAD.encode(digest);
    // Both are public values once the code is redeemed; still, compare without an early exit.
    computed.len() == challenge.len()
        && computed
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn access_tokens_round_trip_and_refuse_tampering() {
        let tokens = AccessTokens::new(b"a signing secret of at least 32 bytes!!");
        let grant = Uuid::new_v4();
        let token = tokens.issue(grant, 1_900_000_000).unwrap();
        assert!(token.starts_with(ACCESS_PREFIX));
        assert_eq!(tokens.verify(&token), Some((grant, 1_900_000_000)));
        // Another server's key.
        let other = AccessTokens::new(b"another signing secret of 32 bytes or more");
        assert_eq!(other.verify(&token), None);
        // Every single character changed is refused.
        let body = &token[ACCESS_PREFIX.len()..];
        for i in 0..body.len() {
            let mut changed = body.as_bytes().to_vec();
            changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
            let changed = format!("{ACCESS_PREFIX}{}", String::from_utf8(changed).unwrap());
            assert_eq!(tokens.verify(&changed), None, "position {i}");
        }
        assert_eq!(tokens.verify(&token[..token.len() - 1]), None);
        assert_eq!(tokens.verify("ask_live_00"), None);
    }

    #[test]
    fn pkce_s256_follows_rfc_7636() {
        // The example of RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches(challenge, challenge));
        // `plain` (the verifier as its own challenge) is not S256.
        assert!(!verifier_matches(verifier, verifier));
        assert!(!verifier_matches("short", challenge));
        assert!(!is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c="
        ));
    }

    #[test]
    fn secrets_are_prefixed_and_hashed() {
        let (secret, hash) = random_secret(REFRESH_PREFIX).unwrap();
        assert!(secret.starts_with(REFRESH_PREFIX));
        assert_eq!(secret.len(), REFRESH_PREFIX.len() + 64);
        assert_eq!(secret_hash(&secret), hash);
    }
}
