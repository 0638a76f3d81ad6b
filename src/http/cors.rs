//! CORS from an exact allowlist (`server.cors_allowed_origins`).
//!
//! A response to a listed origin carries `Access-Control-Allow-Origin` with that very origin
//! (never `*`, and no credentials: the API takes bearer tokens, not cookies), the headers a page
//! may read, and `Vary: Origin`. A preflight (`OPTIONS` with `Access-Control-Request-Method`) from
//! a listed origin is answered 204 with the methods and headers allowed; from any other origin it
//! is 403 and reflects nothing.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::error::AppError;
use crate::http::Body;
use crate::http::response::no_content;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, accept, last-event-id, mcp-session-id, \
     mcp-protocol-version, mcp-method, mcp-name, x-request-id";
const EXPOSE_HEADERS: &str =
    "x-request-id, mcp-session-id, retry-after, www-authenticate, content-disposition";
/// How long a browser may reuse a preflight answer.
const MAX_AGE_SECS: &str = "600";

/// The request's `Origin` if it is one of `allowed` (compared exactly, ASCII case aside).
fn listed<'a>(origin: Option<&'a HeaderValue>, allowed: &[String]) -> Option<&'a HeaderValue> {
    let origin = origin?;
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(text))
        .then_some(origin)
}

/// A preflight request: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Answers a preflight: 204 with what is allowed for a listed origin, 403 for any other.
pub(crate) fn preflight(headers: &HeaderMap, allowed: &[String]) -> Response<Body> {
    let Some(origin) = listed(headers.get(header::ORIGIN), allowed) else {
        let mut refused = crate::http::response::error(&AppError::Forbidden {
            code: "cors-origin-not-allowed",
            detail: "this origin may not call this server (see server.cors_allowed_origins)",
        });
        refused
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
        return refused;
    };
    let mut response = no_content();
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// Adds the CORS headers to a response to a listed origin, and `Vary: Origin` whenever the
/// answer depends on the origin.
pub(crate) fn decorate(
    origin: Option<&HeaderValue>,
    response: &mut Response<Body>,
    allowed: &[String],
) {
    if allowed.is_empty() || origin.is_none() {
        return;
    }
    let origin = listed(origin, allowed).cloned();
    let out = response.headers_mut();
    out.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}
