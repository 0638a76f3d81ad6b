//! Building responses: JSON, empty, and the one place errors become responses.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use serde::Serialize;

use super::Body;
use crate::error::{AppError, FieldError};

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub(crate) fn empty() -> Body {
    Empty::new().boxed()
}

/// A JSON response. Serialising our own types cannot fail short of a bug; if it does, the client
/// gets a 500 and the log says why.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_body(status, "application/json", full(bytes)),
        Err(e) => error(&AppError::internal(e)),
    }
}

pub(crate) fn no_content() -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: Body,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: String,
    code: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

/// The response for an error: status, `{"detail", "code"}` body and the headers that go with it.
/// A 5xx is logged here with its cause, which the client never sees.
pub(crate) fn error(err: &AppError) -> Response<Body> {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        let cause = std::error::Error::source(err).map(ToString::to_string);
        tracing::error!(code = err.code(), error = %err, cause = cause.as_deref().unwrap_or(""), "request failed");
    }
    let body = ErrorBody {
        detail: err.to_string(),
        code: err.code(),
        errors: err.field_errors(),
    };
    let bytes = serde_json::to_vec(&body)
        .unwrap_or_else(|_| br#"{"detail":"internal error","code":"internal-error"}"#.to_vec());
    let mut response = with_body(status, "application/json", full(bytes));
    let headers = response.headers_mut();
    if let Some(secs) = err.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    match err {
        AppError::Unauthorized { code, .. } => {
            let challenge = match *code {
                "not-authenticated" => HeaderValue::from_static("Bearer"),
                _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
            };
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        AppError::MethodNotAllowed(allowed) => {
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                headers.insert(header::ALLOW, value);
            }
        }
        _ => {}
    }
    response
}
