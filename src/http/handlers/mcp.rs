//! `/mcp`: authentication of MCP clients by API token.
//!
//! Until the MCP protocol itself is served, a request with a valid token gets 501; one without a
//! valid token gets 401 with `WWW-Authenticate: Bearer`, exactly as it will then.

use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::error::AppError;
use crate::http::Body;
use crate::http::request::require_bearer;

pub(crate) async fn mcp(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let token = require_bearer(req.headers())?;
    let principal = state
        .registry
        .authenticate(token)
        .ok_or(AppError::Unauthorized {
            code: "invalid-token",
            detail: "the API token is unknown, revoked or expired",
        })?;
    tracing::debug!(user_id = %principal.user_id, token_id = %principal.token_id, "MCP request authenticated");
    Err(AppError::NotImplemented(
        "the MCP protocol is not served by this build yet",
    ))
}
