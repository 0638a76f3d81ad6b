//! The API's description: `GET /openapi.json` and the `GET /docs` page that renders it, served
//! by a real server. That the document matches the router is the router's unit tests' job; that
//! the server's answers match the document is `tests/schemathesis/run.sh`'s.

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::backend_tests;
use crate::helpers::{Backend, expect_error, spawn_app};

backend_tests!(
    the_openapi_document_is_served_as_json,
    the_docs_page_is_self_contained_under_a_strict_policy,
);

async fn the_openapi_document_is_served_as_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let document: Value = res.json().await.unwrap();
    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi: {version}");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    for path in [
        "/api/v1/auth/login",
        "/api/v1/skills/{id}/files/{path}",
        "/openapi.json",
        "/docs",
        "/mcp",
    ] {
        assert!(
            document["paths"][path].is_object(),
            "{path} is not described"
        );
    }
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearerJwt"]["scheme"], "bearer");
    assert_eq!(schemes["apiToken"]["scheme"], "bearer");

    // Like every route, it takes only the methods it documents.
    let res = app
        .request(Method::POST, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "GET");
    expect_error(res, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
}

async fn the_docs_page_is_self_contained_under_a_strict_policy(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.request(Method::GET, "/docs").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let policy = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let page = res.text().await.unwrap();

    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    assert_eq!(directives[0], "default-src 'none'");
    assert!(directives.contains(&"connect-src 'self'"), "{policy}");
    assert!(directives.contains(&"frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-"), "{policy}");
    // The page's inline script and style run because the policy names their hashes.
    for (open, close, directive) in [
        ("<script>", "</script>", "script-src"),
        ("<style>", "</style>", "style-src"),
    ] {
        let text = page
            .split_once(open)
            .and_then(|(_, rest)| rest.split_once(close))
            .map(|(text, _)| text)
            .unwrap_or_else(|| panic!("the page has no {open}"));
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
        let expected = format!("{directive} 'sha256-{hash}'");
        assert!(directives.contains(&expected.as_str()), "{policy}");
    }
    assert!(page.contains("fetch(\"openapi.json\""));
    assert!(!page.contains("http://") && !page.contains("https://"));
}
