//! `GET /openapi.json` and `GET /docs`: the API's description, and a page that renders it.
//!
//! The OpenAPI 3.1 document is `src/http/openapi.json`, written by hand and embedded in the
//! binary; the router's tests check that it documents exactly the routes and methods
//! [`Endpoint::parse`](crate::http::router::Endpoint::parse) serves, and
//! `tests/schemathesis/run.sh` checks the live server's answers against it. The server writes its
//! own version into `info.version` when it first serves the document, so the file never has to be
//! edited for a release.
//!
//! The page (`src/http/docs.html`) is self-contained: its one inline style and one inline script
//! are allowed by their SHA-256 hashes in a `Content-Security-Policy` that allows nothing else but
//! fetching from this origin, so it works on a server without internet access and runs no code
//! but its own.

use std::sync::OnceLock;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::error::AppError;
use crate::http::Body;
use crate::http::response::{full, with_body};

/// The document as written; [`openapi`] serves it with the crate's version.
pub(crate) const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The page, inline style and script included.
pub(crate) const DOCS_HTML: &str = include_str!("../docs.html");

/// Both change only with the binary, so clients may keep them a while; five minutes keeps an
/// upgrade from being hidden for long behind a cache.
const CACHE_CONTROL: &str = "public, max-age=300";

/// `GET /openapi.json`.
pub(crate) fn openapi() -> Result<Response<Body>, AppError> {
    static DOCUMENT: OnceLock<Result<Bytes, String>> = OnceLock::new();
    let document = DOCUMENT
        .get_or_init(|| versioned(OPENAPI_JSON, env!("CARGO_PKG_VERSION")))
        .clone()
        .map_err(AppError::internal)?;
    let mut response = with_body(StatusCode::OK, "application/json", full(document));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(response)
}

/// `GET /docs`.
pub(crate) fn docs() -> Result<Response<Body>, AppError> {
    static POLICY: OnceLock<Result<HeaderValue, String>> = OnceLock::new();
    let policy = POLICY
        .get_or_init(|| {
            let policy = content_security_policy(DOCS_HTML)?;
            HeaderValue::from_str(&policy).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(AppError::internal)?;
    let mut response = with_body(
        StatusCode::OK,
        "text/html; charset=utf-8",
        full(Bytes::from_static(DOCS_HTML.as_bytes())),
    );
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(response)
}

/// The document with `info.version` set to `version`. The text is edited rather than
/// re-serialized so that the document keeps the order it was written in (serde_json's maps would
/// sort every object's keys); the result is checked to be the same document but for the version.
fn versioned(document: &str, version: &str) -> Result<Bytes, String> {
    let parse = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| format!("src/http/openapi.json: {e}"))
    };
    let mut expected = parse(document)?;
    let info = expected
        .get_mut("info")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or("src/http/openapi.json has no `info` object")?;
    let written = serde_json::to_string(info.get("version").unwrap_or(&serde_json::Value::Null))
        .map_err(|e| e.to_string())?;
    info.insert("version".to_owned(), version.into());
    // The first `"version": …` after `"info"` is info's own: `info` holds no object before it.
    let start = document
        .find("\"info\"")
        .ok_or("src/http/openapi.json has no `info` object")?;
    let needle = format!("\"version\": {written}");
    let at = document[start..]
        .find(&needle)
        .map(|i| start + i)
        .ok_or("src/http/openapi.json: write `info.version` as `\"version\": \"…\"`")?;
    let replacement = serde_json::to_string(version).map_err(|e| e.to_string())?;
    let text = format!(
        "{}\"version\": {replacement}{}",
        &document[..at],
        &document[at + needle.len()..]
    );
    if parse(&text)? != expected {
        return Err("src/http/openapi.json: `info.version` could not be set".to_owned());
    }
    Ok(Bytes::from(text))
}

/// A policy that allows the page's own inline `<style>` and `<script>` elements (by hash, so an
/// edit of the page cannot forget the policy) and fetching from this origin; nothing else.
fn content_security_policy(page: &str) -> Result<String, String> {
    let scripts = inline_hashes(page, "<script>", "</script>");
    let styles = inline_hashes(page, "<style>", "</style>");
    if scripts.is_empty() || styles.is_empty() {
        return Err("src/http/docs.html needs a plain <script> and a plain <style> element".into());
    }
    Ok(format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        scripts.join(" "),
        styles.join(" ")
    ))
}

/// `'sha256-…'` sources for the text of every `open … close` element in `page`.
fn inline_hashes(page: &str, open: &str, close: &str) -> Vec<String> {
    let mut hashes = Vec::new();
    let mut rest = page;
    while let Some((_, after)) = rest.split_once(open) {
        let Some((text, next)) = after.split_once(close) else {
            break;
        };
        let digest = Sha256::digest(text);
        hashes.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = next;
    }
    hashes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_takes_the_crate_version() {
        let bytes = versioned(OPENAPI_JSON, "9.8.7-rc.1").unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(value["openapi"].as_str().unwrap().starts_with("3.1."));
        assert_eq!(value["info"]["version"], "9.8.7-rc.1");
        // The text keeps its order: `openapi` first, then `info`, as written.
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.find("\"openapi\"") < text.find("\"info\""));
        assert!(text.find("/api/v1/auth/register") < text.find("/api/v1/auth/login"));
        assert!(openapi().is_ok());
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_own_script_and_style() {
        assert_eq!(DOCS_HTML.matches("<script").count(), 1);
        assert_eq!(DOCS_HTML.matches("<style").count(), 1);
        // Inline handlers and style attributes would need 'unsafe-inline'; the page has none.
        assert!(!DOCS_HTML.contains(" style=") && !DOCS_HTML.contains(" onclick="));
        let policy = content_security_policy(DOCS_HTML).unwrap();
        assert!(policy.starts_with("default-src 'none'; "));
        assert!(policy.contains("connect-src 'self'"));
        assert!(!policy.contains("unsafe"));
        let script = DOCS_HTML
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .unwrap()
            .0;
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
        assert!(policy.contains(&format!("script-src 'sha256-{expected}';")));
        let response = docs().unwrap();
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            policy.as_str()
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["http://", "https://", "//cdn", "src=", "@import", "url("] {
            assert!(
                !DOCS_HTML.contains(outside),
                "docs.html contains {outside:?}"
            );
        }
    }
}
