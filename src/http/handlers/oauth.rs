//! The OAuth endpoints of the MCP resources (`crate::oauth` has the flows):
//!
//! - `GET /.well-known/oauth-protected-resource[/mcp|/sse]`: protected resource metadata
//!   (RFC 9728). The root form describes the server as one resource (`B`, valid at every MCP
//!   endpoint); the suffixed forms describe `B/mcp` and `B/sse` (`/messages` is `/sse`'s).
//! - `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`:
//!   authorization server metadata (RFC 8414), the same document at both.
//! - `POST /oauth/register` (RFC 7591), `POST /oauth/token`, `POST /oauth/revoke` (RFC 7009).
//! - `GET /api/v1/oauth/grants`, `DELETE /api/v1/oauth/grants/{id}`: the user's connected apps,
//!   with the REST API's bearer JWT.
//!
//! `/oauth/authorize`, the sign-in and consent pages, is the console's. Every URL here is built
//! from `server.public_url`, or the request's checked `Host` (and scheme, from a trusted proxy)
//! when none is set.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::accounts::authenticated;
use super::console::site_origin;
use crate::app::AppState;
use crate::domain::Scopes;
use crate::error::AppError;
use crate::http::Body;
use crate::http::request::{bearer, client_ip, form_bytes, read_json_bytes};
use crate::http::response::{self, json, no_content};
use crate::oauth::{ClientLookup, Registration, TokenForm};
use crate::store::OAuthGrantRecord;

/// An MCP resource of this server: what a token's audience names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The server as a whole (`B`): every MCP endpoint.
    Root,
    /// `B/mcp`, Streamable HTTP.
    Mcp,
    /// `B/sse`, the legacy HTTP+SSE transport (its `/messages` too).
    Sse,
}

impl Resource {
    fn path(self) -> &'static str {
        match self {
            Resource::Root => "",
            Resource::Mcp => "/mcp",
            Resource::Sse => "/sse",
        }
    }

    /// The resource's URL on `origin`.
    pub fn url(self, origin: &str) -> String {
        format!("{origin}{}", self.path())
    }

    /// Its protected resource metadata's URL on `origin`.
    pub fn metadata_url(self, origin: &str) -> String {
        format!(
            "{origin}/.well-known/oauth-protected-resource{}",
            self.path()
        )
    }

    /// Whether a token issued for `audience` may be used at this endpoint of `origin`: one
    /// for the endpoint itself, or one for the whole server.
    pub fn accepts(self, origin: &str, audience: &str) -> bool {
        audience
            .strip_prefix(origin)
            .is_some_and(|path| path.is_empty() || path == "/" || path == self.path())
    }

    /// The resource a `resource` parameter names on `origin`, if it is one of ours.
    pub fn named(origin: &str, url: &str) -> Option<Resource> {
        match url.strip_prefix(origin)? {
            "" | "/" => Some(Resource::Root),
            "/mcp" => Some(Resource::Mcp),
            "/sse" => Some(Resource::Sse),
            _ => None,
        }
    }
}

/// The 401 of an MCP endpoint: the error's body, and `WWW-Authenticate` naming the resource
/// metadata (RFC 9728, section 5.1) and the scopes, with `error="invalid_token"` when a token
/// was presented (RFC 6750, section 3).
pub(crate) fn challenge(
    state: &AppState,
    req: &Request<Incoming>,
    resource: Resource,
    err: &AppError,
) -> Response<Body> {
    let mut response = response::error(err);
    if !matches!(err, AppError::Unauthorized { .. }) {
        return response;
    }
    let Ok(origin) = site_origin(state, req) else {
        return response;
    };
    let mut value = format!(
        "Bearer resource_metadata=\"{}\", scope=\"{}\"",
        resource.metadata_url(&origin),
        Scopes::ALL
    );
    if bearer(req.headers()).is_some() {
        value.push_str(", error=\"invalid_token\", error_description=\"the token is unknown, revoked, expired or for another resource\"");
    }
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// `GET /.well-known/oauth-protected-resource[/mcp|/sse]`.
pub(crate) fn protected_resource(
    state: &AppState,
    req: &Request<Incoming>,
    resource: Resource,
) -> Result<Response<Body>, AppError> {
    let origin = site_origin(state, req)?;
    Ok(public_json(&json!({
        "resource": resource.url(&origin),
        "authorization_servers": [origin],
        "scopes_supported": Scopes::supported(),
        "bearer_methods_supported": ["header"],
        "resource_name": "AgentSkills MCP",
        "resource_documentation": format!("{origin}/docs"),
    })))
}

/// `GET /.well-known/oauth-authorization-server` (and the OpenID discovery path).
pub(crate) fn authorization_server(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let origin = site_origin(state, req)?;
    Ok(public_json(&json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}/oauth/authorize"),
        "token_endpoint": format!("{origin}/oauth/token"),
        "registration_endpoint": format!("{origin}/oauth/register"),
        "revocation_endpoint": format!("{origin}/oauth/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": Scopes::supported(),
        "service_documentation": format!("{origin}/docs"),
    })))
}

/// A metadata document: cacheable for a few minutes (its URLs change only with the
/// configuration).
fn public_json(value: &Value) -> Response<Body> {
    let mut response = json(StatusCode::OK, value);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// An OAuth error body (`{"error", "error_description"}`), never cached.
fn oauth_error(status: u16, error: &str, description: &str) -> Response<Body> {
    let mut response = json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &json!({"error": error, "error_description": description}),
    );
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Any other failure of an OAuth endpoint (a limit, a body too large, the database), in the
/// OAuth error shape clients parse, with the status and `Retry-After` it has anyway. A 5xx is
/// logged with its cause, which the answer never shows.
fn oauth_failure(err: &AppError, client_error: &'static str) -> Response<Body> {
    let status = err.status();
    let error = match status {
        429 | 503 => "temporarily_unavailable",
        s if s >= 500 => "server_error",
        _ => client_error,
    };
    let description = if status >= 500 {
        let _ = response::error(err);
        "the server could not complete the request; try again".to_owned()
    } else {
        err.to_string()
    };
    let mut response = oauth_error(status, error, &description);
    if let Some(secs) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// `POST /oauth/register`: dynamic client registration, limited per address.
pub(crate) async fn register(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let failed = |e: &AppError| Ok(oauth_failure(e, "invalid_client_metadata"));
    if let Err(e) = state.rate_limits.oauth_register(client_ip(&req)) {
        return failed(&e);
    }
    let body = match read_json_bytes(req, &state.settings.server).await {
        Ok((_, body)) => body,
        Err(e) => return failed(&e),
    };
    match state.oauth.register(&body).await {
        Ok(answer) => Ok(json(StatusCode::CREATED, &answer)),
        Err(Registration::Invalid(e)) => Ok(oauth_error(400, e.error, &e.description)),
        Err(Registration::Failed(e)) => failed(&e),
    }
}

/// The body of the `what` request, a form, or its refusal in the OAuth error shape.
async fn oauth_form(
    state: &AppState,
    req: Request<Incoming>,
    what: &str,
) -> Result<bytes::Bytes, Box<Response<Body>>> {
    match form_bytes(req, &state.settings.server).await {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(Box::new(oauth_error(
            400,
            "invalid_request",
            &format!("the {what} request must be application/x-www-form-urlencoded"),
        ))),
        Err(e) => Err(Box::new(oauth_failure(&e, "invalid_request"))),
    }
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let body = match oauth_form(state, req, "token").await {
        Ok(body) => body,
        Err(refused) => return Ok(*refused),
    };
    let result = match TokenForm::parse(&body) {
        Ok(form) => state.oauth.token(&form).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(issued) => {
            let mut response = json(
                StatusCode::OK,
                &json!({
                    "access_token": issued.access_token,
                    "token_type": "Bearer",
                    "expires_in": issued.expires_in,
                    "refresh_token": issued.refresh_token,
                    "scope": issued.scope.to_string(),
                }),
            );
            response
                .headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            Ok(response)
        }
        Err(e) => Ok(oauth_error(e.status(), e.error, &e.description)),
    }
}

/// `POST /oauth/revoke` (RFC 7009): 200 whether or not the token was known.
pub(crate) async fn revoke(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let body = match oauth_form(state, req, "revocation").await {
        Ok(body) => body,
        Err(refused) => return Ok(*refused),
    };
    let mut token = None;
    let mut client_id = None;
    for (key, value) in form_urlencoded::parse(&body) {
        match key.as_ref() {
            "token" => token = Some(value.into_owned()),
            "client_id" => client_id = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(oauth_error(400, "invalid_request", "token is required"));
    };
    match state.oauth.revoke(&token, client_id.as_deref()).await {
        Ok(()) => Ok(json(StatusCode::OK, &json!({}))),
        Err(e) => Ok(oauth_failure(&e, "invalid_request")),
    }
}

#[derive(Serialize)]
struct GrantView<'a> {
    id: Uuid,
    client_id: &'a str,
    client_name: &'a str,
    scopes: Vec<&'static str>,
    resource: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

impl<'a> From<&'a OAuthGrantRecord> for GrantView<'a> {
    fn from(g: &'a OAuthGrantRecord) -> Self {
        GrantView {
            id: g.id,
            client_id: &g.client_id,
            client_name: &g.client_name,
            scopes: Scopes::from_stored(&g.scopes).names(),
            resource: &g.resource,
            created_at: g.created_at,
            last_used_at: g.last_used_at,
            expires_at: g.expires_at,
        }
    }
}

/// `GET /api/v1/oauth/grants`.
pub(crate) async fn list_grants(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let grants = state.oauth.grants(me.user.id).await?;
    let items: Vec<GrantView<'_>> = grants.iter().map(GrantView::from).collect();
    Ok(json(
        StatusCode::OK,
        &json!({"total": items.len(), "items": items}),
    ))
}

/// `DELETE /api/v1/oauth/grants/{id}`.
pub(crate) async fn delete_grant(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    if !state.oauth.end_grant(Some(me.user.id), id).await? {
        return Err(AppError::NotFound("grant"));
    }
    tracing::info!(user_id = %me.user.id, grant_id = %id, "OAuth grant revoked");
    Ok(no_content())
}

/// Words for a client that cannot be used, or the server's failure.
pub(crate) fn client_problem(lookup: ClientLookup) -> Result<String, AppError> {
    match lookup {
        ClientLookup::Invalid(words) => Ok(words),
        ClientLookup::Failed(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_matched_per_endpoint() {
        let o = "http://127.0.0.1:8000";
        assert!(Resource::Mcp.accepts(o, "http://127.0.0.1:8000/mcp"));
        assert!(Resource::Mcp.accepts(o, "http://127.0.0.1:8000"));
        assert!(Resource::Sse.accepts(o, "http://127.0.0.1:8000/"));
        assert!(!Resource::Mcp.accepts(o, "http://127.0.0.1:8000/sse"));
        assert!(Resource::Sse.accepts(o, "http://127.0.0.1:8000/sse"));
        assert!(!Resource::Mcp.accepts(o, "http://127.0.0.1:8001/mcp"));
        assert!(!Resource::Mcp.accepts(o, "http://127.0.0.1:8000/mcp/x"));
        assert_eq!(
            Resource::named(o, "http://127.0.0.1:8000/"),
            Some(Resource::Root)
        );
        assert_eq!(
            Resource::named(o, "http://127.0.0.1:8000/sse"),
            Some(Resource::Sse)
        );
        assert_eq!(Resource::named(o, "https://evil.example/mcp"), None);
        assert_eq!(Resource::named(o, "http://127.0.0.1:8000/mcpx"), None);
    }
}
