//! The OAuth 2.1 authorization server of the MCP endpoints, apart from HTTP.
//!
//! - [`client`]: clients, their redirect URIs, dynamic registration (RFC 7591).
//! - [`cimd`]: client ID metadata documents, fetched behind SSRF guards.
//! - [`tokens`]: access tokens (MAC'd, checked in memory), refresh tokens, codes, PKCE.
//! - [`OAuth`]: the flows: codes issued after consent, the token endpoint's two grants
//!   (`authorization_code` with PKCE S256, `refresh_token` with rotation and reuse detection),
//!   revocation (RFC 7009), and ending grants (which refuses their access tokens at once, and
//!   ends their MCP sessions and streams).
//!
//! The HTTP side (metadata documents, the endpoints, the consent page) is in
//! `http::handlers::oauth` and the console.

pub mod cimd;
pub mod client;
pub mod tokens;

use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::actors::token_registry::TokenRegistry;
use crate::config::OAuthSettings;
use crate::domain::Scopes;
use crate::error::AppError;
use crate::mcp::Sessions;
use crate::mcp::listen::ListenStreams;
use crate::store::{
    self, CodeRedemption, NewOAuthCode, NewOAuthGrant, OAuthClientRecord, OAuthCodeGrant,
    OAuthGrantRecord, RefreshRotation, Store,
};
use client::{Client, ClientKind, MetadataError};
use tokens::{ACCESS_PREFIX, CODE_PREFIX, REFRESH_PREFIX};

/// How long an authorization code works.
pub const CODE_LIFETIME: time::Duration = time::Duration::minutes(1);
/// How long a registered client that never got a grant is kept.
pub const UNUSED_CLIENT_LIFETIME: time::Duration = time::Duration::days(1);
/// Prefix of the `client_id`s this server gives registered clients.
pub const CLIENT_ID_PREFIX: &str = "ask_client_";

/// A refusal of the token or revocation endpoint (RFC 6749, section 5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub error: &'static str,
    pub description: String,
}

impl TokenError {
    fn new(error: &'static str, description: impl Into<String>) -> TokenError {
        TokenError {
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> TokenError {
        TokenError::new("invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> TokenError {
        TokenError::new("invalid_grant", description)
    }

    /// 401 for a client that could not be identified, 400 for the rest; 5xx for the server's.
    pub fn status(&self) -> u16 {
        match self.error {
            "invalid_client" => 401,
            "server_error" => 500,
            "temporarily_unavailable" => 503,
            _ => 400,
        }
    }
}

impl From<AppError> for TokenError {
    fn from(e: AppError) -> Self {
        let status = e.status();
        if status >= 500 {
            // Logged with its cause where it is answered.
            tracing::error!(error = %e, "OAuth token request failed");
        }
        TokenError::new(
            if status == 503 {
                "temporarily_unavailable"
            } else {
                "server_error"
            },
            "the server could not complete the request; try again",
        )
    }
}

/// What the token endpoint answers (RFC 6749, section 5.1).
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub scope: Scopes,
}

/// The token endpoint's form, each parameter at most once.
#[derive(Debug, Default)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub client_id: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

impl TokenForm {
    /// Reads `application/x-www-form-urlencoded` pairs; a parameter given twice is refused
    /// (RFC 6749, section 3.2).
    pub fn parse(body: &[u8]) -> Result<TokenForm, TokenError> {
        let mut form = TokenForm::default();
        for (key, value) in form_urlencoded::parse(body) {
            let slot = match key.as_ref() {
                "grant_type" => &mut form.grant_type,
                "code" => &mut form.code,
                "redirect_uri" => &mut form.redirect_uri,
                "client_id" => &mut form.client_id,
                "code_verifier" => &mut form.code_verifier,
                "refresh_token" => &mut form.refresh_token,
                "resource" => &mut form.resource,
                "scope" => &mut form.scope,
                _ => continue,
            };
            if slot.is_some() {
                return Err(TokenError::invalid_request(format!(
                    "{key} is given more than once"
                )));
            }
            *slot = Some(value.into_owned());
        }
        Ok(form)
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, TokenError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| TokenError::invalid_request(format!("{name} is required")))
}

/// The scopes a client asked for: the ones this server knows (`skills:run` brings
/// `skills:read`), others ignored as RFC 6749 allows; none known or none asked: every scope.
pub fn requested_scopes(scope: Option<&str>) -> Scopes {
    let known: Vec<&str> = scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| Scopes::supported().contains(s))
        .collect();
    if known.is_empty() {
        return Scopes::ALL;
    }
    let mut names = known;
    names.push("skills:read");
    names.sort_unstable();
    names.dedup();
    Scopes::parse(names).unwrap_or(Scopes::ALL)
}

/// The flows; one per server, shared by every request.
#[derive(Debug, Clone)]
pub struct OAuth {
    store: Store,
    registry: TokenRegistry,
    documents: cimd::Documents,
    sessions: Arc<Sessions>,
    listen: Arc<ListenStreams>,
    access_lifetime: time::Duration,
    refresh_lifetime: time::Duration,
}

impl OAuth {
    pub fn new(
        store: Store,
        registry: TokenRegistry,
        sessions: Arc<Sessions>,
        listen: Arc<ListenStreams>,
        settings: &OAuthSettings,
    ) -> Result<OAuth, String> {
        let documents = cimd::Documents::new(settings.cimd_allow_loopback);
        Ok(OAuth {
            store,
            registry,
            documents,
            sessions,
            listen,
            access_lifetime: time::Duration::minutes(
                i64::try_from(settings.access_token_minutes).unwrap_or(i64::MAX / 60),
            ),
            refresh_lifetime: time::Duration::days(
                i64::try_from(settings.refresh_token_days).unwrap_or(i64::MAX / 86_400),
            ),
        })
    }

    /// The client `client_id` names: a registered one, or the one its metadata document
    /// describes (fetched only if `may_fetch` allows). The error is worded for the person at the
    /// consent page.
    pub async fn client(
        &self,
        client_id: &str,
        may_fetch: impl FnOnce() -> Result<(), AppError>,
    ) -> Result<Arc<Client>, ClientLookup> {
        if cimd::Documents::names_document(client_id) {
            return self
                .documents
                .client(client_id, may_fetch)
                .await?
                .map_err(|e| ClientLookup::Invalid(e.0));
        }
        let Some(record) = self
            .store
            .oauth_client(client_id)
            .await
            .map_err(AppError::from)?
        else {
            return Err(ClientLookup::Invalid(
                "this app is not registered here (its registration may have expired unused); \
                 connect it again from the app"
                    .into(),
            ));
        };
        let redirect_uris: Vec<String> = serde_json::from_str(&record.redirect_uris)
            .map_err(|e| AppError::internal(format!("stored redirect URIs: {e}")))?;
        Ok(Arc::new(Client {
            client_id: record.client_id,
            name: record.client_name,
            redirect_uris,
            kind: ClientKind::Registered,
        }))
    }

    /// Dynamic registration: checks the request and stores the client; the JSON answer.
    pub async fn register(&self, body: &[u8]) -> Result<serde_json::Value, Registration> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(AppError::internal)?;
        let client_id = format!("{CLIENT_ID_PREFIX}{}", hex::encode(id));
        let now = store::now();
        let done = client::register(body, client_id, now.unix_timestamp())
            .map_err(Registration::Invalid)?;
        let record = OAuthClientRecord {
            client_id: done.client.client_id.clone(),
            client_name: done.client.name.clone(),
            redirect_uris: serde_json::to_string(&done.client.redirect_uris)
                .map_err(AppError::internal)?,
            metadata: done.answer.to_string(),
            created_at: now,
            used_at: None,
        };
        self.store
            .insert_oauth_client(&record)
            .await
            .map_err(AppError::from)?;
        tracing::info!(client_id = %record.client_id, client_name = %record.client_name, "OAuth client registered");
        Ok(done.answer)
    }

    /// A code for what the user just allowed.
    pub async fn issue_code(&self, grant: OAuthCodeGrant) -> Result<String, AppError> {
        let (code, code_hash) = tokens::random_secret(CODE_PREFIX).map_err(AppError::internal)?;
        let now = store::now();
        self.store
            .insert_oauth_code(&NewOAuthCode {
                code_hash,
                grant,
                created_at: now,
                expires_at: now + CODE_LIFETIME,
            })
            .await?;
        Ok(code)
    }

    /// Whether the user has a grant of `client_id` already (the consent page warns otherwise).
    pub async fn knows_client(&self, user_id: Uuid, client_id: &str) -> Result<bool, AppError> {
        Ok(self
            .registry
            .list_grants(user_id)
            .await?
            .iter()
            .any(|g| g.client_id == client_id))
    }

    /// The token endpoint.
    pub async fn token(&self, form: &TokenForm) -> Result<Issued, TokenError> {
        match required(&form.grant_type, "grant_type")? {
            "authorization_code" => self.redeem(form).await,
            "refresh_token" => self.refresh(form).await,
            other => Err(TokenError::new(
                "unsupported_grant_type",
                format!(
                    "grant_type {other} is not offered: use authorization_code or refresh_token"
                ),
            )),
        }
    }

    async fn redeem(&self, form: &TokenForm) -> Result<Issued, TokenError> {
        let code = required(&form.code, "code")?;
        let client_id = required(&form.client_id, "client_id")?;
        let verifier = required(&form.code_verifier, "code_verifier")?;
        let redirect_uri = required(&form.redirect_uri, "redirect_uri")?;
        let code_hash = tokens::secret_hash(code);
        let now = store::now();
        let grant = match self
            .store
            .redeem_oauth_code(code_hash, now)
            .await
            .map_err(AppError::from)?
        {
            CodeRedemption::Fresh(grant) => grant,
            CodeRedemption::Reused { grant_id } => {
                if let Some(id) = grant_id {
                    tracing::warn!(grant_id = %id, "authorization code used twice; its grant is ended");
                    self.end_grant(None, id).await?;
                }
                return Err(TokenError::invalid_grant(
                    "this code was already used; every token it gave is revoked",
                ));
            }
            CodeRedemption::Unknown => {
                return Err(TokenError::invalid_grant("the code is unknown or expired"));
            }
        };
        if grant.client_id != client_id {
            return Err(TokenError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        if grant.redirect_uri != redirect_uri {
            return Err(TokenError::invalid_grant(
                "redirect_uri is not the one the code was issued for",
            ));
        }
        if !tokens::verifier_matches(verifier, &grant.code_challenge) {
            return Err(TokenError::invalid_grant(
                "code_verifier does not match the code_challenge (PKCE S256)",
            ));
        }
        if let Some(resource) = form.resource.as_deref()
            && resource != grant.resource
        {
            return Err(TokenError::new(
                "invalid_target",
                "resource is not the one the code was issued for",
            ));
        }
        let (refresh_token, refresh_hash) =
            tokens::random_secret(REFRESH_PREFIX).map_err(AppError::internal)?;
        let record = NewOAuthGrant {
            id: Uuid::new_v4(),
            user_id: grant.user_id,
            client_id: grant.client_id.clone(),
            client_name: grant.client_name.clone(),
            scopes: grant.scopes.clone(),
            resource: grant.resource.clone(),
            created_at: now,
            expires_at: now + self.refresh_lifetime,
            refresh_hash,
        };
        self.store
            .insert_oauth_grant(&record, code_hash)
            .await
            .map_err(AppError::from)?;
        let live = OAuthGrantRecord {
            id: record.id,
            user_id: record.user_id,
            client_id: record.client_id,
            client_name: record.client_name,
            scopes: record.scopes,
            resource: record.resource,
            created_at: record.created_at,
            last_used_at: None,
            expires_at: record.expires_at,
        };
        let scope = Scopes::from_stored(&live.scopes);
        let grant_id = live.id;
        tracing::info!(user_id = %live.user_id, %grant_id, client_id = %live.client_id, "OAuth grant made");
        self.registry.grant_made(live).await?;
        self.issue(grant_id, now, refresh_token, scope)
    }

    async fn refresh(&self, form: &TokenForm) -> Result<Issued, TokenError> {
        let presented = required(&form.refresh_token, "refresh_token")?;
        let client_id = required(&form.client_id, "client_id")?;
        let old_hash = tokens::secret_hash(presented);
        let now = store::now();
        if form.resource.is_some() || form.scope.is_some() {
            // Checked before the rotation, so that a refused request does not use the token up.
            if let Some(grant) = self
                .store
                .grant_of_refresh(old_hash, now)
                .await
                .map_err(AppError::from)?
            {
                if form
                    .resource
                    .as_deref()
                    .is_some_and(|r| r != grant.resource)
                {
                    return Err(TokenError::new(
                        "invalid_target",
                        "resource is not the one this grant was made for",
                    ));
                }
                if let Some(scope) = form.scope.as_deref()
                    && !Scopes::from_stored(&grant.scopes).contains(requested_scopes(Some(scope)))
                {
                    return Err(TokenError::new(
                        "invalid_scope",
                        "a refresh cannot add scopes the user did not allow",
                    ));
                }
            }
        }
        let (refresh_token, new_hash) =
            tokens::random_secret(REFRESH_PREFIX).map_err(AppError::internal)?;
        let rotation = self
            .store
            .rotate_oauth_refresh(
                old_hash,
                new_hash,
                client_id,
                now,
                now + self.refresh_lifetime,
            )
            .await
            .map_err(AppError::from)?;
        match rotation {
            RefreshRotation::Rotated(grant) => self.issue(
                grant.id,
                now,
                refresh_token,
                Scopes::from_stored(&grant.scopes),
            ),
            RefreshRotation::Reused { grant_id, user_id } => {
                tracing::warn!(%user_id, %grant_id, "OAuth refresh token reused; grant ended");
                self.grant_gone(vec![grant_id]).await?;
                Err(TokenError::invalid_grant(
                    "this refresh token was already used; the app's access is revoked, connect it again",
                ))
            }
            RefreshRotation::Unknown => Err(TokenError::invalid_grant(
                "the refresh token is unknown, expired, revoked or another client's",
            )),
        }
    }

    fn issue(
        &self,
        grant_id: Uuid,
        now: OffsetDateTime,
        refresh_token: String,
        scope: Scopes,
    ) -> Result<Issued, TokenError> {
        let expires_at = now + self.access_lifetime;
        let access_token = self
            .registry
            .issue_access(grant_id, expires_at.unix_timestamp())?;
        Ok(Issued {
            access_token,
            expires_in: self.access_lifetime.whole_seconds(),
            refresh_token,
            scope,
        })
    }

    /// Revocation (RFC 7009): an access or refresh token of this server ends its grant (the
    /// whole of it: every token of the grant stops). Unknown tokens, and tokens of another
    /// client than `client_id` when one is given, are left alone; both answer the same.
    pub async fn revoke(&self, token: &str, client_id: Option<&str>) -> Result<(), AppError> {
        let grant = if token.starts_with(ACCESS_PREFIX) {
            self.registry.access_grant(token)
        } else if token.starts_with(REFRESH_PREFIX) {
            self.store
                .grant_of_refresh(tokens::secret_hash(token), store::now())
                .await?
                .map(|g| (g.id, g.user_id, g.client_id))
        } else {
            None
        };
        let Some((grant_id, user_id, owner)) = grant else {
            return Ok(());
        };
        if client_id.is_some_and(|c| c != owner) {
            return Ok(());
        }
        self.end_grant(None, grant_id).await?;
        tracing::info!(%user_id, %grant_id, "OAuth grant revoked by its client");
        Ok(())
    }

    /// The user's grants, with their latest use.
    pub async fn grants(&self, user_id: Uuid) -> Result<Vec<OAuthGrantRecord>, AppError> {
        self.registry.list_grants(user_id).await
    }

    /// Ends a grant (the user's, when `user_id` is given): its tokens are refused from now on,
    /// and its MCP sessions and streams end. `false` if there was none.
    pub async fn end_grant(&self, user_id: Option<Uuid>, id: Uuid) -> Result<bool, AppError> {
        let found = self.store.delete_oauth_grant(user_id, id).await?;
        if found {
            self.grant_gone(vec![id]).await?;
        }
        Ok(found)
    }

    /// Ends every grant of the user (password change, sign out everywhere).
    pub async fn end_user_grants(&self, user_id: Uuid) -> Result<usize, AppError> {
        let ids = self.store.delete_oauth_grants_of(user_id).await?;
        let n = ids.len();
        if n > 0 {
            self.grant_gone(ids).await?;
            tracing::info!(%user_id, grants = n, "OAuth grants ended");
        }
        Ok(n)
    }

    async fn grant_gone(&self, ids: Vec<Uuid>) -> Result<(), AppError> {
        self.sessions.close_where(|s| ids.contains(&s.token_id));
        self.listen
            .close_where(|_, token_id| ids.contains(&token_id));
        self.registry.grants_ended(ids).await
    }

    /// Deletes expired codes, refresh tokens and grants, and registrations never used.
    pub async fn purge(&self) -> Result<u64, AppError> {
        let now = store::now();
        Ok(self
            .store
            .purge_oauth(now, now - UNUSED_CLIENT_LIFETIME)
            .await?)
    }
}

/// Why a client could not be found: words for the person, or the server's own failure.
#[derive(Debug)]
pub enum ClientLookup {
    Invalid(String),
    Failed(AppError),
}

impl From<AppError> for ClientLookup {
    fn from(e: AppError) -> Self {
        ClientLookup::Failed(e)
    }
}

/// Why a registration was refused.
#[derive(Debug)]
pub enum Registration {
    Invalid(MetadataError),
    Failed(AppError),
}

impl From<AppError> for Registration {
    fn from(e: AppError) -> Self {
        Registration::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_asked_for_are_read_generously() {
        assert_eq!(requested_scopes(None), Scopes::ALL);
        assert_eq!(requested_scopes(Some("")), Scopes::ALL);
        assert_eq!(requested_scopes(Some("skills:read")), Scopes::READ);
        assert_eq!(requested_scopes(Some("skills:run")), Scopes::ALL);
        assert_eq!(
            requested_scopes(Some("openid skills:read offline_access")),
            Scopes::READ
        );
        assert_eq!(requested_scopes(Some("openid")), Scopes::ALL);
    }

    #[test]
    fn a_token_form_parameter_given_twice_is_refused() {
        let form = TokenForm::parse(b"grant_type=authorization_code&code=a&code=b");
        assert_eq!(form.unwrap_err().error, "invalid_request");
        let form =
            TokenForm::parse(b"grant_type=refresh_token&refresh_token=x&client_id=c&extra=1");
        assert!(form.is_ok());
    }
}
