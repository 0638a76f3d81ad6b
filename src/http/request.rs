//! Reading requests: bearer tokens and bounded, typed JSON bodies.

use std::time::Duration;

use http::header::{self, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::Request;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::config::ServerSettings;
use crate::error::{AppError, FieldError};

/// Longest `Authorization` value looked at; anything longer is not a token we issued.
const MAX_CREDENTIAL_LEN: usize = 4096;

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if value.len() > MAX_CREDENTIAL_LEN {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The bearer token, or 401 asking for one.
pub(crate) fn require_bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    bearer(headers).ok_or(AppError::Unauthorized {
        code: "not-authenticated",
        detail: "this endpoint needs an `Authorization: Bearer <token>` header",
    })
}

/// Reads a JSON body of type `T`, enforcing content type, size and time limits.
pub(crate) async fn json_body<T: DeserializeOwned>(
    req: Request<Incoming>,
    limits: &ServerSettings,
) -> Result<T, AppError> {
    let bytes = read_body(req, limits).await?;
    parse_json(&bytes)
}

/// Like [`json_body`], but an absent or empty body gives `T::default()`.
pub(crate) async fn optional_json_body<T: DeserializeOwned + Default>(
    req: Request<Incoming>,
    limits: &ServerSettings,
) -> Result<T, AppError> {
    let bytes = read_body(req, limits).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&bytes)
}

/// The request's head and the raw bytes of its JSON body, with the same checks as [`json_body`]
/// (for callers that parse the body themselves and still need the headers: they are moved out,
/// not copied).
pub(crate) async fn read_json_bytes(
    req: Request<Incoming>,
    limits: &ServerSettings,
) -> Result<(http::request::Parts, bytes::Bytes), AppError> {
    check_json_head(&req, limits)?;
    let (parts, body) = req.into_parts();
    let bytes = collect_limited(body, limits).await?;
    Ok((parts, bytes))
}

async fn read_body(
    req: Request<Incoming>,
    limits: &ServerSettings,
) -> Result<bytes::Bytes, AppError> {
    check_json_head(&req, limits)?;
    collect_limited(req.into_body(), limits).await
}

/// The bytes of an `application/x-www-form-urlencoded` body, within the JSON body's limits
/// (the OAuth endpoints' forms); `None` when the body says it is something else.
pub(crate) async fn form_bytes(
    req: Request<Incoming>,
    limits: &ServerSettings,
) -> Result<Option<bytes::Bytes>, AppError> {
    if !is_form(req.headers()) {
        return Ok(None);
    }
    check_declared_length(req.headers(), limits.max_json_body_bytes)?;
    collect_limited(req.into_body(), limits).await.map(Some)
}

/// Whether the body says it is `application/x-www-form-urlencoded`.
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// 413 before any byte is read when `Content-Length` says the body is over `max`.
fn check_declared_length(headers: &HeaderMap, max: usize) -> Result<(), AppError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(AppError::PayloadTooLarge(max));
    }
    Ok(())
}

/// The checks a JSON body's head must pass before its bytes are read.
fn check_json_head(req: &Request<Incoming>, limits: &ServerSettings) -> Result<(), AppError> {
    // A body without a Content-Type is read as JSON; one that says it is something else is refused.
    if let Some(content_type) = req.headers().get(header::CONTENT_TYPE)
        && !is_json(content_type.as_bytes())
    {
        return Err(AppError::UnsupportedMediaType);
    }
    check_declared_length(req.headers(), limits.max_json_body_bytes)
}

/// The body's bytes, at most `server.max_json_body_bytes` of them, within the body read timeout.
async fn collect_limited(
    body: Incoming,
    limits: &ServerSettings,
) -> Result<bytes::Bytes, AppError> {
    let max = limits.max_json_body_bytes;
    let body = Limited::new(body, max);
    let timeout = Duration::from_secs(limits.body_read_timeout_secs);
    let collected = tokio::time::timeout(timeout, body.collect())
        .await
        .map_err(|_| AppError::BodyTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(AppError::PayloadTooLarge(max))
        }
        Err(e) => Err(AppError::InvalidJson(format!(
            "the body could not be read: {e}"
        ))),
    }
}

fn is_json(content_type: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(content_type) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON: syntax errors are 400 `invalid-json`; values of the wrong type, missing or unknown
/// fields are 422 with the field named.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    use serde_json::error::Category;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => AppError::Validation(vec![field_error(&path, &inner)]),
            Category::Syntax | Category::Eof | Category::Io => {
                AppError::InvalidJson(inner.to_string())
            }
        }
    })?;
    // Trailing characters after the value are a syntax error, not part of some field.
    de.end().map_err(|e| AppError::InvalidJson(e.to_string()))?;
    Ok(value)
}

fn field_error(path: &str, e: &serde_json::Error) -> FieldError {
    // serde_json says "missing field `x` at line 1 column 2"; keep the sentence, drop the position.
    let text = e.to_string();
    let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    let field = match (named, base) {
        (Some(name), "") => name.to_owned(),
        // An unknown field's path already ends with it; a missing field's is its parent's.
        (Some(name), base) if base == name || base.ends_with(&format!(".{name}")) => {
            base.to_owned()
        }
        (Some(name), base) => format!("{base}.{name}"),
        (None, "") => "body".to_owned(),
        (None, base) => base.to_owned(),
    };
    FieldError::new(field, message)
}

/// The client's address as the router found it (the peer's, or a trusted proxy's word).
pub(crate) fn client_ip(req: &Request<Incoming>) -> std::net::IpAddr {
    req.extensions()
        .get::<super::router::ClientIp>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Form {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        count: Option<u32>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json::<Form>(br#"{"count": 1}"#).unwrap_err();
        assert_eq!(err.field_errors()[0].field, "name");
        let err = parse_json::<Form>(br#"{"name": 5}"#).unwrap_err();
        assert_eq!(err.field_errors()[0].field, "name");
        let err = parse_json::<Form>(br#"{"name": "a", "count": -1}"#).unwrap_err();
        assert_eq!(err.field_errors()[0].field, "count");
        let err = parse_json::<Form>(br#"{"name": "a", "extra": 1}"#).unwrap_err();
        assert_eq!(err.field_errors()[0].field, "extra");
        assert!(matches!(
            parse_json::<Form>(b"{nope"),
            Err(AppError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_json::<Form>(br#"{"name":"a"} x"#),
            Err(AppError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_json::<Form>(b"[1]"),
            Err(AppError::Validation(_))
        ));
    }

    #[test]
    fn bearer_tokens_are_read_with_any_scheme_case() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn json_media_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(is_json(b"application/merge-patch+json"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b"application/x-www-form-urlencoded"));
    }
}
