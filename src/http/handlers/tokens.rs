//! `/api/v1/tokens`: the user's API tokens for MCP clients.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Checks;
use super::accounts::authenticated;
use crate::actors::token_registry::CreatedToken;
use crate::app::AppState;
use crate::domain::{Scopes, TokenName};
use crate::error::AppError;
use crate::http::Body;
use crate::http::request::json_body;
use crate::http::response::{json, no_content};
use crate::store::ApiTokenRecord;

/// Longest lifetime a token can be given.
const MAX_EXPIRES_IN_DAYS: u32 = 3650;

#[derive(Serialize)]
struct TokenView<'a> {
    id: Uuid,
    name: &'a str,
    prefix: &'a str,
    is_active: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    scopes: Vec<&'static str>,
}

impl<'a> From<&'a ApiTokenRecord> for TokenView<'a> {
    fn from(t: &'a ApiTokenRecord) -> Self {
        TokenView {
            id: t.id,
            name: &t.name,
            prefix: &t.prefix,
            is_active: t.is_active,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            scopes: Scopes::from_stored(&t.scopes).names(),
        }
    }
}

#[derive(Serialize)]
struct TokenList<'a> {
    items: Vec<TokenView<'a>>,
    total: usize,
}

pub(crate) async fn list(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let tokens = state.registry.list(me.user.id).await?;
    let items: Vec<TokenView<'_>> = tokens.iter().map(TokenView::from).collect();
    Ok(json(
        StatusCode::OK,
        &TokenList {
            total: items.len(),
            items,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    expires_in_days: Option<u32>,
    /// What the token may do; both scopes when left out.
    scopes: Option<Vec<String>>,
}

#[derive(Serialize)]
struct CreatedView<'a> {
    id: Uuid,
    name: &'a str,
    token: &'a str,
    prefix: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    scopes: Vec<&'static str>,
}

pub(crate) async fn create(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let body: CreateBody = json_body(req, &state.settings.server).await?;
    let created = create_token(
        state,
        me.user.id,
        &body.name,
        body.expires_in_days,
        body.scopes.as_deref(),
    )
    .await?;
    Ok(json(
        StatusCode::CREATED,
        &CreatedView {
            id: created.id,
            name: &created.name,
            token: created.secret.expose(),
            prefix: &created.prefix,
            created_at: created.created_at,
            expires_at: created.expires_at,
            scopes: created.scopes.names(),
        },
    ))
}

/// A new API token's checks and the token, for the API and the console.
pub(crate) async fn create_token(
    state: &AppState,
    user_id: Uuid,
    name: &str,
    expires_in_days: Option<u32>,
    scopes: Option<&[String]>,
) -> Result<CreatedToken, AppError> {
    let mut checks = Checks::default();
    let name = checks.check("name", TokenName::parse(name));
    let days = checks.check(
        "expires_in_days",
        match expires_in_days {
            Some(d) if d == 0 || d > MAX_EXPIRES_IN_DAYS => {
                Err("must be between 1 and 3650 (omit it for a token that never expires)")
            }
            other => Ok(other),
        },
    );
    let scopes = checks.check(
        "scopes",
        match scopes {
            None => Ok(Scopes::ALL),
            Some(names) => Scopes::parse(names.iter().map(String::as_str)),
        },
    );
    let ((name, days), scopes) = checks.finish(name.zip(days).zip(scopes))?;
    let lifetime = days.map(|d| time::Duration::days(i64::from(d)));
    let created = state
        .registry
        .create(user_id, name, lifetime, scopes)
        .await?;
    tracing::info!(%user_id, token_id = %created.id, "API token created");
    Ok(created)
}

pub(crate) async fn delete(
    state: &AppState,
    req: Request<Incoming>,
    id: Uuid,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    revoke_token(state, me.user.id, id).await?;
    Ok(no_content())
}

/// Revokes one of the user's tokens (404 for anyone else's); its MCP sessions end at once.
pub(crate) async fn revoke_token(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
) -> Result<(), AppError> {
    if !state.registry.revoke(user_id, id).await? {
        return Err(AppError::NotFound("token"));
    }
    state.sessions.close_where(|s| s.token_id == id);
    state.listen.close_where(|_, token_id| token_id == id);
    tracing::info!(%user_id, token_id = %id, "API token revoked");
    Ok(())
}
