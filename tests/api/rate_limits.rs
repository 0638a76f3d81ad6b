//! Rate limits: 429 with `Retry-After` in seconds for logins per address and per account,
//! registrations per address, MCP requests per API token and uploads per user; forwarded client
//! addresses honoured only from trusted proxies.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, spawn_app_with};

backend_tests!(
    the_account_limit_counts_the_account_however_it_is_named,
    spellings_of_an_unknown_name_share_one_allowance,
);

/// The status, `Retry-After` and error code of a response.
async fn outcome(res: reqwest::Response) -> (StatusCode, Option<u64>, String) {
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (
        status,
        retry,
        body["code"].as_str().unwrap_or("").to_owned(),
    )
}

fn assert_limited(got: &(StatusCode, Option<u64>, String), max_wait: u64) {
    assert_eq!(got.0, StatusCode::TOO_MANY_REQUESTS, "{got:?}");
    assert_eq!(got.2, "rate-limited", "{got:?}");
    let wait = got.1.unwrap_or(0);
    assert!(
        (1..=max_wait).contains(&wait),
        "Retry-After {wait}: {got:?}"
    );
}

async fn login(
    app: &TestApp,
    email: &str,
    forwarded_for: Option<&str>,
) -> (StatusCode, Option<u64>, String) {
    let mut req = app
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"email": email, "password": "wrong-password-1"}));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    outcome(req.send().await.unwrap()).await
}

#[tokio::test]
async fn logins_are_limited_per_address_and_per_account() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limits.login_per_ip_per_minute = 3;
        s.rate_limits.login_per_account_per_minute = 5;
        // The test client is 127.0.0.1: a trusted proxy here, so X-Forwarded-For counts.
        s.rate_limits.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    // Per address: the fourth from one address is refused, before any password is checked.
    for _ in 0..3 {
        let got = login(&app, "a@example.com", Some("192.0.2.1")).await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{got:?}");
    }
    assert_limited(&login(&app, "b@example.com", Some("192.0.2.1")).await, 20);
    // IPv6: one /64 is one client.
    for _ in 0..3 {
        login(&app, "c@example.com", Some("2001:db8:0:1::1")).await;
    }
    assert_limited(
        &login(&app, "c@example.com", Some("2001:db8:0:1::ffff")).await,
        20,
    );
    // Per account: guesses from many addresses stop at the account's limit.
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(login(&app, "victim@example.com", Some(&format!("198.51.100.{i}"))).await);
    }
    assert!(
        statuses[..5]
            .iter()
            .all(|s| s.0 == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_limited(&statuses[5], 20);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limits.login_per_ip_per_minute = 2;
        s.rate_limits.login_per_account_per_minute = 0;
    })
    .await;
    // No trusted proxy: a client cannot dodge the limit by making up addresses.
    for i in 0..2 {
        login(&app, "a@example.com", Some(&format!("203.0.113.{i}"))).await;
    }
    assert_limited(
        &login(&app, "a@example.com", Some("203.0.113.99")).await,
        60,
    );
}

#[tokio::test]
async fn registrations_uploads_and_mcp_are_limited() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limits.register_per_ip_per_hour = 2;
        s.rate_limits.uploads_per_user_per_minute = 2;
        s.rate_limits.mcp_per_token_per_second = 3;
    })
    .await;
    let ann = app.user("ann").await;
    app.user("bob").await;
    let third = app
        .register("cy@example.com", "cy", "cy-password-123")
        .await;
    assert_limited(&outcome(third).await, 3600);

    let upload = |n: usize| {
        let body = format!(
            "--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"SKILL.md\"\r\n\r\n---\nname: s{n}\ndescription: D.\n---\n\r\n--b--\r\n"
        );
        app.request(Method::POST, "/api/v1/skills/upload")
            .bearer_auth(&ann.access)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(body)
            .send()
    };
    assert_eq!(upload(1).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(upload(2).await.unwrap().status(), StatusCode::CREATED);
    assert_limited(&outcome(upload(3).await.unwrap()).await, 60);

    let (_, token) = app.api_token(&ann, "agent").await;
    let discover = || {
        app.request(Method::POST, "/mcp")
            .bearer_auth(&token)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "server/discover")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}}}})
                .to_string(),
            )
            .send()
    };
    for _ in 0..3 {
        assert_eq!(discover().await.unwrap().status(), StatusCode::OK);
    }
    assert_limited(&outcome(discover().await.unwrap()).await, 1);
    // Another token of the same user has its own allowance.
    let (_, other) = app.api_token(&ann, "other").await;
    let res = app
        .request(Method::GET, "/sse")
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// A login with this name and password, from the test client's address.
async fn login_as(app: &TestApp, login: &str, password: &str) -> (StatusCode, Option<u64>, String) {
    outcome(app.login(login, password).await).await
}

async fn the_account_limit_counts_the_account_however_it_is_named(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        // One more every 3 seconds after a burst of 20: short enough to wait for.
        s.rate_limits.login_per_account_per_minute = 20;
        // Every attempt comes from one address: its limit must not be what trips.
        s.rate_limits.login_per_ip_per_minute = 10_000;
    })
    .await;
    let created = app
        .register("ren\u{e9}e@example.com", "Renee", "the-password-1")
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    app.user("bob").await;
    // Every way of naming the account: user name in two cases, email as stored, in upper case,
    // in NFD, in full-width letters.
    let spellings = [
        "Renee",
        "ren\u{e9}e@example.com",
        "renee",
        "REN\u{c9}E@EXAMPLE.COM",
        "rene\u{301}e@example.com",
        "\u{ff52}\u{ff45}\u{ff4e}\u{e9}\u{ff45}@example.com",
    ];
    for i in 0..20 {
        let name = spellings[i % spellings.len()];
        let got = login_as(&app, name, "wrong-password").await;
        assert_eq!(
            got.0,
            StatusCode::UNAUTHORIZED,
            "attempt {i} as {name:?}: {got:?}"
        );
    }
    // The 21st, under any name, and even with the right password, is refused before hashing.
    for name in spellings {
        assert_limited(&login_as(&app, name, "wrong-password").await, 3);
        assert_limited(&login_as(&app, name, "the-password-1").await, 3);
    }
    // Another account, from the same address, is not affected.
    assert_eq!(
        login_as(&app, "bob@example.com", "bob-password-123")
            .await
            .0,
        StatusCode::OK
    );
    // Once the allowance refills, the right password works again.
    let wait = login_as(&app, "renee", "the-password-1").await.1.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    assert_eq!(
        login_as(&app, "rene\u{301}e@example.com", "the-password-1")
            .await
            .0,
        StatusCode::OK
    );
}

async fn spellings_of_an_unknown_name_share_one_allowance(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.rate_limits.login_per_account_per_minute = 3;
        s.rate_limits.login_per_ip_per_minute = 10_000;
    })
    .await;
    for name in [
        "Nobody.Here@Example.com",
        "nobody.here@example.com",
        "NOBODY.HERE@EXAMPLE.COM",
    ] {
        let got = login_as(&app, name, "wrong-password").await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{name:?}: {got:?}");
    }
    // Full-width letters and a full-width `@`: the same name once normalized.
    assert_limited(
        &login_as(
            &app,
            "\u{ff4e}obody.here\u{ff20}example.com",
            "wrong-password",
        )
        .await,
        20,
    );
    // Unknown names in NFD and NFC share one too, and a different unknown name has its own.
    for _ in 0..3 {
        login_as(&app, "zo\u{eb}@example.com", "wrong-password").await;
    }
    assert_limited(
        &login_as(&app, "ZOE\u{308}@example.com", "wrong-password").await,
        20,
    );
    assert_eq!(
        login_as(&app, "somebody.else@example.com", "wrong-password")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}
