//! OAuth 2.1 for the MCP endpoints over real HTTP: metadata, registration (dynamic and by
//! client ID metadata document), sign-in and consent as a browser does them, the token
//! endpoint, refresh rotation, revocation, grants; and the negative matrix (code reuse, wrong
//! verifier, `plain`, missing or foreign `resource`, redirect mismatch with no redirect, expired
//! code, refresh reuse ending the grant, revocation ending streams, private metadata URLs,
//! consent without its CSRF token, a registration flood).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Response, StatusCode};
use scraper::{Html, Selector};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::backend_tests;
use crate::console::{Browser, location};
use crate::helpers::{Backend, TestApp, TestUser, spawn_app, spawn_app_with, tool_names};

const REDIRECT: &str = "http://127.0.0.1:4567/callback";
const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-0123456789";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `/oauth/authorize?…` with the usual parameters, each replaceable or removable (`""`).
fn authorize_path(client_id: &str, resource: &str, changes: &[(&str, &str)]) -> String {
    let challenge = challenge(VERIFIER);
    let mut params = vec![
        ("response_type", "code".to_owned()),
        ("client_id", client_id.to_owned()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "xyz-state".to_owned()),
        ("scope", "skills:read skills:run".to_owned()),
        ("resource", resource.to_owned()),
    ];
    for (k, v) in changes {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push((k, (*v).to_owned()));
        }
    }
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    format!("/oauth/authorize?{query}")
}

async fn register_client(app: &TestApp, name: &str, redirects: &[&str]) -> String {
    let res = app
        .client
        .post(format!("{}/oauth/register", app.base))
        .json(&json!({"client_name": name, "redirect_uris": redirects,
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_endpoint_auth_method"], "none");
    body["client_id"].as_str().unwrap().to_owned()
}

async fn form(app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> Response {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    app.client
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn exchange(app: &TestApp, client_id: &str, code: &str, verifier: &str) -> Response {
    form(
        app,
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(app: &TestApp, client_id: &str, token: &str) -> Response {
    form(
        app,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", client_id),
        ],
    )
    .await
}

async fn oauth_error(res: Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    body
}

/// The hidden inputs of the form `selector` in `html`.
fn hidden_inputs(html: &str, selector: &str) -> Vec<(String, String)> {
    let doc = Html::parse_document(html);
    let sel = Selector::parse(&format!("{selector} input[type=hidden]")).unwrap();
    doc.select(&sel)
        .map(|e| {
            (
                e.value().attr("name").unwrap().to_owned(),
                e.value().attr("value").unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn query_of(location: &str) -> Vec<(String, String)> {
    let query = location.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Goes through sign-in (when `browser` is not signed in yet) to the consent page of
/// `path`; returns its HTML.
async fn consent_page(browser: &mut Browser, user: &TestUser, path: &str) -> String {
    let res = browser.get(path).await;
    let to = location(&res);
    if res.status() == StatusCode::SEE_OTHER && to.starts_with("/signin?next=") {
        let (status, html) = browser.page(&to).await;
        assert_eq!(status, StatusCode::OK);
        let mut fields = hidden_inputs(&html, "#signin-form");
        assert!(
            fields.iter().any(|(k, v)| k == "next" && v == path),
            "{fields:?}"
        );
        fields.push(("login".into(), user.email.clone()));
        fields.push(("password".into(), user.password.clone()));
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let res = browser.post("/signin", &pairs).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), path, "signing in goes back to the request");
    } else {
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{}",
            res.text().await.unwrap()
        );
    }
    let (status, html) = browser.page(path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    html
}

/// Allows (or denies) on the consent page; the response (a redirect to the client).
async fn decide(browser: &mut Browser, html: &str, decision: &str) -> Response {
    let mut fields = hidden_inputs(html, "#consent-form");
    fields.push(("decision".into(), decision.into()));
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    browser.post("/oauth/authorize", &pairs).await
}

/// The whole dance: a code for `client_id`.
async fn code_for(
    app: &TestApp,
    browser: &mut Browser,
    user: &TestUser,
    client_id: &str,
    resource: &str,
) -> String {
    let html = consent_page(browser, user, &authorize_path(client_id, resource, &[])).await;
    let res = decide(browser, &html, "allow").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let query = query_of(&to);
    assert_eq!(param(&query, "state"), Some("xyz-state"));
    assert_eq!(param(&query, "iss"), Some(app.base.as_str()));
    param(&query, "code").unwrap().to_owned()
}

/// Tokens for `client_id` (access, refresh).
async fn tokens_for(
    app: &TestApp,
    browser: &mut Browser,
    user: &TestUser,
    client_id: &str,
    resource: &str,
) -> (String, String) {
    let code = code_for(app, browser, user, client_id, resource).await;
    let res = exchange(app, client_id, &code, VERIFIER).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// `tools/list` names over a fresh session at `/mcp` with `token`.
async fn tools_with(app: &TestApp, token: &str) -> Vec<String> {
    let post = |body: Value, session: Option<String>| {
        let mut req = app
            .client
            .post(format!("{}/mcp", app.base))
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };
    let res = post(
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let session = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    post(
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        Some(session.clone()),
    )
    .await
    .unwrap();
    let res = post(
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
        Some(session),
    )
    .await
    .unwrap();
    let body: Value = res.json().await.unwrap();
    tool_names(&body).into_iter().map(str::to_owned).collect()
}

/// Runs `sql` on the app's database (to age a row past its expiry).
async fn execute(app: &TestApp, sqlite: &str, postgres: &str) {
    match app.settings.database.url.as_deref() {
        Some(url) if url.starts_with("postgres") => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.batch_execute(postgres).await.unwrap();
        }
        _ => {
            let path = app.data_dir.join("agentskills.db");
            let sql = sqlite.to_owned();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(&sql).unwrap();
            })
            .await
            .unwrap();
        }
    }
}

backend_tests!(
    metadata_and_challenges_tell_a_client_where_to_sign_in,
    a_registered_client_connects_refreshes_and_is_cut_off_on_reuse,
    the_authorization_request_is_checked_before_anything_is_sent,
    codes_work_once_for_their_client_verifier_and_minute,
    consent_needs_the_session_csrf_and_origin_and_deny_says_so,
    tokens_are_bound_to_their_resource_and_never_pass_as_rest_credentials,
    revoking_a_grant_ends_its_tokens_sessions_and_streams,
    password_change_and_sign_out_everywhere_end_grants,
    a_read_only_grant_does_not_see_or_run_commands,
    a_client_id_metadata_document_identifies_a_client,
    metadata_document_fetches_are_limited_per_address,
    dynamic_registration_is_checked_and_limited,
);

async fn metadata_and_challenges_tell_a_client_where_to_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let base = &app.base;
    for (path, resource) in [
        ("/.well-known/oauth-protected-resource", base.clone()),
        (
            "/.well-known/oauth-protected-resource/mcp",
            format!("{base}/mcp"),
        ),
        (
            "/.well-known/oauth-protected-resource/sse",
            format!("{base}/sse"),
        ),
    ] {
        let body: Value = app
            .client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["resource"], resource.as_str(), "{path}");
        assert_eq!(body["authorization_servers"], json!([base]));
        assert_eq!(
            body["scopes_supported"],
            json!(["skills:read", "skills:run"])
        );
        assert_eq!(body["bearer_methods_supported"], json!(["header"]));
    }
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let body: Value = app
            .client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["issuer"], base.as_str());
        assert_eq!(
            body["authorization_endpoint"],
            format!("{base}/oauth/authorize")
        );
        assert_eq!(body["token_endpoint"], format!("{base}/oauth/token"));
        assert_eq!(
            body["registration_endpoint"],
            format!("{base}/oauth/register")
        );
        assert_eq!(body["revocation_endpoint"], format!("{base}/oauth/revoke"));
        assert_eq!(body["response_types_supported"], json!(["code"]));
        assert_eq!(
            body["grant_types_supported"],
            json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(body["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            body["token_endpoint_auth_methods_supported"],
            json!(["none"])
        );
        assert_eq!(body["client_id_metadata_document_supported"], true);
        assert_eq!(body["authorization_response_iss_parameter_supported"], true);
        assert_eq!(
            body["scopes_supported"],
            json!(["skills:read", "skills:run"])
        );
    }
    // Every 401 of an MCP endpoint names its resource metadata and the scopes.
    for (method, path, meta) in [
        ("POST", "/mcp", "mcp"),
        ("GET", "/mcp", "mcp"),
        ("GET", "/sse", "sse"),
        ("POST", "/messages?session_id=x", "sse"),
    ] {
        for token in [None, Some("ask_live_nonsense"), Some("ask_oat_nonsense")] {
            let mut req = app
                .client
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .header("content-type", "application/json")
                .body("{}");
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            let challenge = res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                challenge.starts_with(&format!(
                    "Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/{meta}\", scope=\"skills:read skills:run\""
                )),
                "{challenge}"
            );
            assert_eq!(
                challenge.contains("error=\"invalid_token\""),
                token.is_some(),
                "{challenge}"
            );
        }
    }
    // Behind a proxy, server.public_url is what every URL is built from.
    let proxied = spawn_app_with(Backend::Sqlite, |s| {
        s.server.public_url = Some("https://skills.example.com".into());
    })
    .await;
    let body: Value = proxied
        .client
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            proxied.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["resource"], "https://skills.example.com/mcp");
    assert_eq!(
        body["authorization_servers"],
        json!(["https://skills.example.com"])
    );
}

async fn a_registered_client_connects_refreshes_and_is_cut_off_on_reuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("ada").await;
    let client_id = register_client(&app, "Test Desktop", &["http://127.0.0.1:1/callback"]).await;
    let mut browser = Browser::new(&app);
    let path = authorize_path(&client_id, &format!("{}/mcp", app.base), &[]);
    let html = consent_page(&mut browser, &user, &path).await;
    // The consent page names the client, warns it is new, and says what it may do as whom.
    assert!(html.contains("Test Desktop"));
    assert!(html.contains("id=\"consent-new-client\""));
    assert!(html.contains("ada@example.com"));
    assert!(html.contains("data-scope=\"skills:run\""));
    assert!(
        html.contains("127.0.0.1:4567"),
        "the redirect host is shown"
    );
    let res = decide(&mut browser, &html, "allow").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // A loopback redirect registered on one port is used on another (RFC 8252).
    let query = query_of(&location(&res));
    let code = param(&query, "code").unwrap().to_owned();
    let res = exchange(&app, &client_id, &code, VERIFIER).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "skills:read skills:run");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh1 = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(
        tools_with(&app, &access)
            .await
            .contains(&"run_shell_command".to_owned())
    );

    // The grant is listed, with its use.
    app.state.registry.flush().await.unwrap();
    let grants = app.get_json("/api/v1/oauth/grants", &user.access).await;
    assert_eq!(grants["total"], 1);
    assert_eq!(grants["items"][0]["client_name"], "Test Desktop");
    assert_eq!(
        grants["items"][0]["scopes"],
        json!(["skills:read", "skills:run"])
    );
    assert!(grants["items"][0]["last_used_at"].is_string());
    // The second time, the consent page no longer warns.
    let html = consent_page(&mut browser, &user, &path).await;
    assert!(!html.contains("id=\"consent-new-client\""));

    // Refresh rotates: the new pair works, the old access token too until it expires.
    let res = refresh(&app, &client_id, &refresh1).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let access2 = body["access_token"].as_str().unwrap().to_owned();
    let refresh2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh1, refresh2);
    assert_eq!(app.mcp_status(&access2).await, StatusCode::OK);
    // Another client cannot use the refresh token.
    let other = register_client(&app, "Other", &[REDIRECT]).await;
    oauth_error(
        refresh(&app, &other, &refresh2).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // Reusing the first refresh token ends the whole grant: every token stops at once.
    let body = oauth_error(
        refresh(&app, &client_id, &refresh1).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    assert_eq!(app.mcp_status(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.mcp_status(&access2).await, StatusCode::UNAUTHORIZED);
    oauth_error(
        refresh(&app, &client_id, &refresh2).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let grants = app.get_json("/api/v1/oauth/grants", &user.access).await;
    assert_eq!(grants["total"], 0);
}

async fn the_authorization_request_is_checked_before_anything_is_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("bob").await;
    let client_id = register_client(&app, "Checked", &[REDIRECT]).await;
    let mcp = format!("{}/mcp", app.base);
    let mut browser = Browser::new(&app);
    // Sign in first, so each request below is judged on its own.
    consent_page(&mut browser, &user, &authorize_path(&client_id, &mcp, &[])).await;

    // A client or redirect URI in doubt: an error page, and no redirect anywhere.
    for changes in [
        vec![("redirect_uri", "http://127.0.0.1:4567/other")],
        vec![("redirect_uri", "https://evil.example/callback")],
        vec![("redirect_uri", "")],
        vec![("client_id", "ask_client_unknown")],
        vec![("client_id", "")],
    ] {
        let res = browser
            .get(&authorize_path(&client_id, &mcp, &changes))
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{changes:?}");
        assert!(res.headers().get("location").is_none(), "{changes:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains("id=\"error-page\""), "{html}");
    }
    let res = browser
        .get(&format!(
            "{}&client_id=again",
            authorize_path(&client_id, &mcp, &[])
        ))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());

    // Everything else goes back to the client, with its state and our issuer.
    for (changes, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge", "too-short")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("resource", "")], "invalid_target"),
        (
            vec![("resource", "https://evil.example/mcp")],
            "invalid_target",
        ),
        (
            vec![("resource", &format!("{}/api/v1", app.base))],
            "invalid_target",
        ),
    ] {
        let res = browser
            .get(&authorize_path(&client_id, &mcp, &changes))
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{changes:?}");
        let to = location(&res);
        assert!(to.starts_with(REDIRECT), "{to}");
        let query = query_of(&to);
        assert_eq!(param(&query, "error"), Some(error), "{changes:?}");
        assert_eq!(param(&query, "state"), Some("xyz-state"));
        assert_eq!(param(&query, "iss"), Some(app.base.as_str()));
        assert!(param(&query, "code").is_none());
    }
    // The sign-in page's `next` only ever leads to an authorization request of this site.
    let mut visitor = Browser::new(&app);
    let (_, html) = visitor.page("/signin?next=https://evil.example/").await;
    assert!(!html.contains("evil.example"));
    let (_, html) = visitor
        .page("/signin?next=//evil.example/oauth/authorize?x")
        .await;
    assert!(!html.contains("evil.example"));
}

async fn codes_work_once_for_their_client_verifier_and_minute(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("cyd").await;
    let client_id = register_client(&app, "Codes", &[REDIRECT]).await;
    let other = register_client(&app, "Other", &[REDIRECT]).await;
    let mcp = format!("{}/mcp", app.base);
    let mut browser = Browser::new(&app);

    // A wrong verifier, another client, another redirect: refused, and the code is spent.
    let code = code_for(&app, &mut browser, &user, &client_id, &mcp).await;
    oauth_error(
        exchange(&app, &client_id, &code, &"x".repeat(43)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    oauth_error(
        exchange(&app, &client_id, &code, VERIFIER).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let code = code_for(&app, &mut browser, &user, &client_id, &mcp).await;
    oauth_error(
        exchange(&app, &other, &code, VERIFIER).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let code = code_for(&app, &mut browser, &user, &client_id, &mcp).await;
    let res = form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:4567/elsewhere"),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // `plain`: the challenge itself as the verifier.
    let code = code_for(&app, &mut browser, &user, &client_id, &mcp).await;
    oauth_error(
        exchange(&app, &client_id, &code, &challenge(VERIFIER)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // A resource other than the code's.
    let code = code_for(&app, &mut browser, &user, &client_id, &mcp).await;
    let res = form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
            ("resource", &format!("{}/sse", app.base)),
        ],
    )
    .await;
    oauth_error(res, StatusCode::BAD_REQUEST, "invalid_target").await;

    // A code used twice: the second use fails and ends what the first gave.
    let code = code_for(&app, &mut browser, &user, &client_id, &mcp).await;
    let res = exchange(&app, &client_id, &code, VERIFIER).await;
    let access = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.mcp_status(&access).await, StatusCode::OK);
    oauth_error(
        exchange(&app, &client_id, &code, VERIFIER).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(app.mcp_status(&access).await, StatusCode::UNAUTHORIZED);

    // An expired code.
    let code = code_for(&app, &mut browser, &user, &client_id, &mcp).await;
    execute(
        &app,
        "UPDATE oauth_codes SET expires_at = created_at - 1",
        "UPDATE oauth_codes SET expires_at = created_at - interval '1 second'",
    )
    .await;
    oauth_error(
        exchange(&app, &client_id, &code, VERIFIER).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // Malformed requests.
    oauth_error(
        form(&app, "/oauth/token", &[("grant_type", "password")]).await,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;
    oauth_error(
        form(
            &app,
            "/oauth/token",
            &[("grant_type", "authorization_code")],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    oauth_error(
        form(
            &app,
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
            ],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let res = app
        .client
        .post(format!("{}/oauth/token", app.base))
        .json(&json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
}

async fn consent_needs_the_session_csrf_and_origin_and_deny_says_so(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("dina").await;
    let client_id = register_client(&app, "Consent", &[REDIRECT]).await;
    let mut browser = Browser::new(&app);
    let html = consent_page(
        &mut browser,
        &user,
        &authorize_path(&client_id, &format!("{}/mcp", app.base), &[]),
    )
    .await;
    let mut fields = hidden_inputs(&html, "#consent-form");
    fields.push(("decision".into(), "allow".into()));
    let without_csrf: Vec<(&str, &str)> = fields
        .iter()
        .filter(|(k, _)| k != "csrf")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let res = browser.post("/oauth/authorize", &without_csrf).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get("location").is_none());
    let wrong_csrf: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), if k == "csrf" { "0000" } else { v.as_str() }))
        .collect();
    assert_eq!(
        browser.post("/oauth/authorize", &wrong_csrf).await.status(),
        StatusCode::FORBIDDEN
    );
    let all: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let res = browser
        .post_from("/oauth/authorize", &all, Some("https://evil.example"))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Another browser (no session) posting the page's form is sent to sign in, not obeyed.
    let mut stranger = Browser::new(&app);
    let res = stranger.post("/oauth/authorize", &all).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(location(&res).starts_with("/signin"));

    // The page lets the redirect happen (form-action) and nothing else.
    let res = browser
        .get(&authorize_path(
            &client_id,
            &format!("{}/mcp", app.base),
            &[],
        ))
        .await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:4567;"),
        "{csp}"
    );

    // Deny goes back with access_denied and no code.
    let res = decide(&mut browser, &html, "deny").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let query = query_of(&location(&res));
    assert_eq!(param(&query, "error"), Some("access_denied"));
    assert_eq!(param(&query, "state"), Some("xyz-state"));
    assert!(param(&query, "code").is_none());
    // Allow, as posted by the page itself, works.
    let res = decide(&mut browser, &html, "allow").await;
    assert!(param(&query_of(&location(&res)), "code").is_some());
}

async fn tokens_are_bound_to_their_resource_and_never_pass_as_rest_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("eve").await;
    let client_id = register_client(&app, "Bound", &[REDIRECT]).await;
    let mut browser = Browser::new(&app);
    let (for_sse, _) = tokens_for(
        &app,
        &mut browser,
        &user,
        &client_id,
        &format!("{}/sse", app.base),
    )
    .await;
    // A token for /sse is refused at /mcp, and works at /sse.
    assert_eq!(app.mcp_status(&for_sse).await, StatusCode::UNAUTHORIZED);
    let res = app
        .client
        .get(format!("{}/sse", app.base))
        .bearer_auth(&for_sse)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    // A token for the whole server works at both.
    let (for_all, _) = tokens_for(&app, &mut browser, &user, &client_id, &app.base).await;
    assert_eq!(app.mcp_status(&for_all).await, StatusCode::OK);
    // The REST API refuses OAuth tokens, and /mcp the REST API's JWTs.
    let res = app.get_auth("/api/v1/users/me", &for_all).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.mcp_status(&user.access).await, StatusCode::UNAUTHORIZED);
    // A token reached through another Host is for another resource.
    let res = app
        .client
        .post(format!("{}/mcp", app.base))
        .header(
            "host",
            format!("localhost:{}", app.base.rsplit(':').next().unwrap()),
        )
        .bearer_auth(&for_all)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // An API token still works as ever.
    let (_, api) = app.api_token(&user, "still").await;
    assert_eq!(app.mcp_status(&api).await, StatusCode::OK);
}

async fn revoking_a_grant_ends_its_tokens_sessions_and_streams(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("fay").await;
    let client_id = register_client(&app, "Streams", &[REDIRECT]).await;
    let mut browser = Browser::new(&app);
    let (access, refresh_token) =
        tokens_for(&app, &mut browser, &user, &client_id, &app.base).await;
    // A legacy SSE stream open with the token.
    let mut stream = app
        .client
        .get(format!("{}/sse", app.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("endpoint"));
    // The grants API revokes it: the token stops and the stream ends.
    let grants = app.get_json("/api/v1/oauth/grants", &user.access).await;
    let id = grants["items"][0]["id"].as_str().unwrap().to_owned();
    let res = app
        .delete_auth(&format!("/api/v1/oauth/grants/{id}"), &user.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.mcp_status(&access).await, StatusCode::UNAUTHORIZED);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a revoked grant ends");
    oauth_error(
        refresh(&app, &client_id, &refresh_token).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let res = app
        .delete_auth(&format!("/api/v1/oauth/grants/{id}"), &user.access)
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // RFC 7009: the client revokes its refresh token; the access token stops too. Unknown
    // tokens are answered the same.
    let (access, refresh_token) =
        tokens_for(&app, &mut browser, &user, &client_id, &app.base).await;
    let res = form(
        &app,
        "/oauth/revoke",
        &[("token", &refresh_token), ("client_id", &client_id)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.mcp_status(&access).await, StatusCode::UNAUTHORIZED);
    let res = form(&app, "/oauth/revoke", &[("token", "ask_ort_unknown")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Revoking an access token ends its grant as well; another client's is left alone.
    let (access, _) = tokens_for(&app, &mut browser, &user, &client_id, &app.base).await;
    let res = form(
        &app,
        "/oauth/revoke",
        &[("token", &access), ("client_id", "someone-else")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.mcp_status(&access).await, StatusCode::OK);
    form(&app, "/oauth/revoke", &[("token", &access)]).await;
    assert_eq!(app.mcp_status(&access).await, StatusCode::UNAUTHORIZED);

    // The console lists connected apps and disconnects one.
    let (access, _) = tokens_for(&app, &mut browser, &user, &client_id, &app.base).await;
    let (_, html) = browser.page("/tokens").await;
    assert!(html.contains("data-testid=\"app-row\""));
    assert!(html.contains("Streams"));
    let doc = Html::parse_document(&html);
    let sel = Selector::parse("[data-testid=app-revoke-form]").unwrap();
    let action = doc
        .select(&sel)
        .next()
        .unwrap()
        .value()
        .attr("action")
        .unwrap()
        .to_owned();
    let csrf = crate::console::csrf_of(&html);
    let res = browser.post(&action, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.mcp_status(&access).await, StatusCode::UNAUTHORIZED);
    let (_, html) = browser.page("/tokens").await;
    assert!(html.contains("id=\"apps-empty\""));
}

async fn password_change_and_sign_out_everywhere_end_grants(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("gil").await;
    let client_id = register_client(&app, "Ends", &[REDIRECT]).await;
    let mut browser = Browser::new(&app);
    let (access, _) = tokens_for(&app, &mut browser, &user, &client_id, &app.base).await;
    let (_, api) = app.api_token(&user, "kept").await;
    let res = app
        .client
        .post(format!("{}/api/v1/auth/logout", app.base))
        .bearer_auth(&user.access)
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.mcp_status(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.mcp_status(&api).await,
        StatusCode::OK,
        "API tokens stay"
    );

    let tokens: Value = app
        .login(&user.email, &user.password)
        .await
        .json()
        .await
        .unwrap();
    let rest = tokens["access_token"].as_str().unwrap().to_owned();
    let mut browser = Browser::new(&app);
    let (access, _) = tokens_for(&app, &mut browser, &user, &client_id, &app.base).await;
    let res = app
        .client
        .put(format!("{}/api/v1/users/me/password", app.base))
        .bearer_auth(&rest)
        .json(
            &json!({"current_password": user.password, "new_password": "a brand new password 42"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.mcp_status(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.mcp_status(&api).await, StatusCode::OK);
}

async fn a_read_only_grant_does_not_see_or_run_commands(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("hal").await;
    let client_id = register_client(&app, "Reader", &[REDIRECT]).await;
    let mut browser = Browser::new(&app);
    let path = authorize_path(&client_id, &app.base, &[("scope", "skills:read")]);
    let html = consent_page(&mut browser, &user, &path).await;
    assert!(!html.contains("data-scope=\"skills:run\""));
    let res = decide(&mut browser, &html, "allow").await;
    let code = param(&query_of(&location(&res)), "code")
        .unwrap()
        .to_owned();
    let body: Value = exchange(&app, &client_id, &code, VERIFIER)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "skills:read");
    let access = body["access_token"].as_str().unwrap();
    let tools = tools_with(&app, access).await;
    assert!(tools.contains(&"load_skill".to_owned()));
    assert!(!tools.contains(&"run_shell_command".to_owned()));
    // A refresh cannot widen it.
    let refresh_token = body["refresh_token"].as_str().unwrap();
    let res = form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &client_id),
            ("scope", "skills:read skills:run"),
        ],
    )
    .await;
    oauth_error(res, StatusCode::BAD_REQUEST, "invalid_scope").await;
    // And the refusal did not use the refresh token up.
    assert_eq!(
        refresh(&app, &client_id, refresh_token).await.status(),
        StatusCode::OK
    );
}

/// Serves `body` as JSON on a loopback port for every request; the URL of `path` on it.
async fn serve_document(
    path: &str,
    body: impl Fn(&str) -> String + Send + Sync + 'static,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}{path}",
        listener.local_addr().unwrap().port()
    );
    let body = body(&url);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

async fn a_client_id_metadata_document_identifies_a_client(backend: Backend) {
    let app = spawn_app_with(backend.clone(), |s| s.oauth.cimd_allow_loopback = true).await;
    let user = app.user("ivy").await;
    let client_id = serve_document("/oauth/client.json", |url| {
        json!({"client_id": url, "client_name": "Metadata App", "redirect_uris": [REDIRECT],
               "token_endpoint_auth_method": "none"})
        .to_string()
    })
    .await;
    let mut browser = Browser::new(&app);
    let html = consent_page(
        &mut browser,
        &user,
        &authorize_path(&client_id, &app.base, &[]),
    )
    .await;
    assert!(html.contains("Metadata App"));
    assert!(
        html.contains(&client_id),
        "the page shows where the client describes itself"
    );
    let res = decide(&mut browser, &html, "allow").await;
    let code = param(&query_of(&location(&res)), "code")
        .unwrap()
        .to_owned();
    let res = exchange(&app, &client_id, &code, VERIFIER).await;
    assert_eq!(res.status(), StatusCode::OK);
    // A document that names another client_id, or a redirect it does not list: refused.
    let liar = serve_document("/client.json", |_| {
        json!({"client_id": "https://claude.ai/client.json", "redirect_uris": [REDIRECT]})
            .to_string()
    })
    .await;
    let res = browser.get(&authorize_path(&liar, &app.base, &[])).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());
    let res = browser
        .get(&authorize_path(
            &client_id,
            &app.base,
            &[("redirect_uri", "https://evil.example/cb")],
        ))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());

    // Without the loopback switch (the default), and for private addresses always: refused
    // before any request is made.
    let strict = spawn_app(backend).await;
    let user = strict.user("jon").await;
    let mut browser = Browser::new(&strict);
    for (id, words) in [
        (client_id.as_str(), "must be https"),
        ("https://10.0.0.1/client.json", "not public"),
        ("https://192.168.1.20/client.json", "not public"),
        ("https://[fd00::1]/client.json", "not public"),
        ("https://localhost/client.json", "no public address"),
        ("https://127.0.0.1/client.json", "not public"),
    ] {
        let path = authorize_path(id, &strict.base, &[]);
        let res = browser.get(&path).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{id}");
        assert!(res.headers().get("location").is_none());
        let html = res.text().await.unwrap();
        assert!(html.contains(words), "{id}: {html}");
    }
    let _ = user;
}

async fn dynamic_registration_is_checked_and_limited(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.rate_limits.oauth_register_per_ip_per_hour = 3
    })
    .await;
    let post = |body: Value| {
        app.client
            .post(format!("{}/oauth/register", app.base))
            .json(&body)
            .send()
    };
    let res = post(json!({"redirect_uris": ["http://evil.example/cb"]}))
        .await
        .unwrap();
    oauth_error(res, StatusCode::BAD_REQUEST, "invalid_redirect_uri").await;
    let res = post(json!({"redirect_uris": ["javascript:alert(1)"]}))
        .await
        .unwrap();
    oauth_error(res, StatusCode::BAD_REQUEST, "invalid_redirect_uri").await;
    let res = post(json!({"client_name": "x", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["token_endpoint_auth_method"], "none",
        "a public client, as RFC 7591 lets us say"
    );
    assert!(body.get("client_secret").is_none());
    // The flood stops at the limit.
    let res = post(json!({"redirect_uris": [REDIRECT]})).await.unwrap();
    assert!(res.headers().get("retry-after").is_some());
    // In the shape OAuth clients parse, like every refusal of the OAuth endpoints.
    oauth_error(
        res,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
    )
    .await;
    // Too large a body, under the limit: an OAuth error too.
    let open = spawn_app(Backend::Sqlite).await;
    let res = open
        .client
        .post(format!("{}/oauth/register", open.base))
        .json(&json!({"client_name": "x".repeat(70_000), "redirect_uris": [REDIRECT]}))
        .send()
        .await
        .unwrap();
    oauth_error(
        res,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_client_metadata",
    )
    .await;
    let res = form(&open, "/oauth/token", &[("code", &"x".repeat(70_000))]).await;
    oauth_error(res, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request").await;
}

/// The authorization page fetches a client's metadata document before anyone signs in: a
/// stranger must not make this server fetch without end. Cached documents cost nothing.
async fn metadata_document_fetches_are_limited_per_address(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.oauth.cimd_allow_loopback = true;
        s.rate_limits.oauth_fetch_per_ip_per_minute = 1;
    })
    .await;
    let document = |url: &str| {
        json!({"client_id": url, "client_name": "Fetched", "redirect_uris": [REDIRECT]}).to_string()
    };
    let first = serve_document("/first.json", document).await;
    let second = serve_document("/second.json", document).await;
    let mut visitor = Browser::new(&app);
    for _ in 0..3 {
        // Fetched once, then cached: a visitor is sent to sign in every time.
        let res = visitor.get(&authorize_path(&first, &app.base, &[])).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert!(location(&res).starts_with("/signin?next="));
    }
    let res = visitor.get(&authorize_path(&second, &app.base, &[])).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_some());
    assert!(res.headers().get("location").is_none());
}
