//! JWTs for REST sessions: HS256 only, with `sub, exp, nbf, iat, iss, aud, jti`, a token type, the
//! user's token version and the login session they belong to.
//!
//! Access and refresh tokens differ in `typ` and are never accepted for each other. Checks beyond
//! the signature and the registered claims (token version, revoked session) need the database and
//! happen in the auth actor.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::AuthSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Refresh,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
    pub jti: Uuid,
    pub typ: TokenKind,
    /// The user's token version when this token was issued.
    pub ver: i64,
    /// The login session (refresh-token family) this token belongs to.
    pub sid: Uuid,
}

/// Why a presented JWT was refused. The variants matter only to the log; clients all get 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
    #[error("the token is of the wrong type")]
    WrongType,
}

/// Signing keys and validation rules, built once from the settings.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl_secs: i64,
    refresh_ttl_secs: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8], settings: &AuthSettings) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.jwt_issuer]);
        validation.set_audience(&[&settings.jwt_audience]);
        // `iat`, `jti` and our own claims are required by `Claims` itself (no defaults).
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = settings.jwt_leeway_secs;
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            access_ttl_secs: i64::try_from(settings.access_token_minutes * 60).unwrap_or(i64::MAX),
            refresh_ttl_secs: i64::try_from(settings.refresh_token_days * 86_400)
                .unwrap_or(i64::MAX),
        }
    }

    /// Lifetime of an access token, for `expires_in`.
    pub fn access_ttl_secs(&self) -> i64 {
        self.access_ttl_secs
    }

    pub fn refresh_ttl_secs(&self) -> i64 {
        self.refresh_ttl_secs
    }

    /// Signs a token of `kind` for `user` in session `sid`; returns it with its `jti` and expiry.
    pub fn issue(
        &self,
        kind: TokenKind,
        user: Uuid,
        version: i64,
        sid: Uuid,
        now: OffsetDateTime,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let iat = now.unix_timestamp();
        let ttl = match kind {
            TokenKind::Access => self.access_ttl_secs,
            TokenKind::Refresh => self.refresh_ttl_secs,
        };
        let claims = Claims {
            sub: user,
            exp: iat.saturating_add(ttl),
            nbf: iat,
            iat,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::new_v4(),
            typ: kind,
            ver: version,
            sid,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Checks signature, algorithm, issuer, audience, times and type.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, TokenRejected> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenRejected::Expired,
                _ => TokenRejected::Invalid,
            })?;
        if data.claims.typ != kind {
            return Err(TokenRejected::WrongType);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7u8; 32], &AuthSettings::default())
    }

    #[test]
    fn a_token_verifies_as_its_own_kind_only() {
        let k = keys();
        let user = Uuid::new_v4();
        let sid = Uuid::new_v4();
        let (access, claims) = k
            .issue(TokenKind::Access, user, 3, sid, OffsetDateTime::now_utc())
            .unwrap();
        let got = k.verify(&access, TokenKind::Access).unwrap();
        assert_eq!(got, claims);
        assert_eq!((got.sub, got.ver, got.sid), (user, 3, sid));
        assert_eq!(
            k.verify(&access, TokenKind::Refresh),
            Err(TokenRejected::WrongType)
        );
    }

    #[test]
    fn expired_and_foreign_tokens_are_refused() {
        let k = keys();
        let long_ago = OffsetDateTime::now_utc() - time::Duration::hours(2);
        let (old, _) = k
            .issue(
                TokenKind::Access,
                Uuid::new_v4(),
                0,
                Uuid::new_v4(),
                long_ago,
            )
            .unwrap();
        assert_eq!(
            k.verify(&old, TokenKind::Access),
            Err(TokenRejected::Expired)
        );

        let other = JwtKeys::new(&[8u8; 32], &AuthSettings::default());
        let (foreign, _) = other
            .issue(
                TokenKind::Access,
                Uuid::new_v4(),
                0,
                Uuid::new_v4(),
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        assert_eq!(
            k.verify(&foreign, TokenKind::Access),
            Err(TokenRejected::Invalid)
        );

        let future = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let (early, _) = k
            .issue(TokenKind::Access, Uuid::new_v4(), 0, Uuid::new_v4(), future)
            .unwrap();
        assert_eq!(
            k.verify(&early, TokenKind::Access),
            Err(TokenRejected::Invalid)
        );
    }
}
