//! `/api/v1/tokens` and the token registry behind MCP authentication.

use std::time::Duration;

use agentskills_mcp::store::{self, NewApiToken};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, expect_error, spawn_app, spawn_app_with};

backend_tests!(
    a_created_token_is_shown_once_and_listed_without_its_secret,
    token_requests_are_validated,
    tokens_per_user_are_capped,
    mcp_needs_a_valid_api_token,
    a_revoked_token_fails_on_its_next_request,
    another_users_token_is_not_found,
    use_times_are_batched_and_flushed,
    changes_made_by_other_processes_are_picked_up,
    expired_tokens_stop_working,
);

async fn a_created_token_is_shown_once_and_listed_without_its_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let res = app
        .request(Method::POST, "/api/v1/tokens")
        .bearer_auth(&ann.access)
        .json(&json!({"name": "laptop", "expires_in_days": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("ask_live_"));
    let hex = &token["ask_live_".len()..];
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(created["name"], "laptop");
    let expires = time::OffsetDateTime::parse(
        created["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let created_at = time::OffsetDateTime::parse(
        created["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created_at, time::Duration::days(30));
    app.request(Method::POST, "/api/v1/tokens")
        .bearer_auth(&ann.access)
        .json(&json!({"name": "forever"}))
        .send()
        .await
        .unwrap();

    let res = app.get_auth("/api/v1/tokens", &ann.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(!text.contains(hex), "the list shows the secret");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["total"], 2);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items[0]["name"], "forever", "newest first");
    assert_eq!(items[0]["expires_at"], Value::Null);
    assert_eq!(items[1]["id"], created["id"]);
    for item in items {
        assert_eq!(item["is_active"], true);
        assert_eq!(item["last_used_at"], Value::Null);
        assert!(
            item.get("token").is_none() && item.get("token_hash").is_none(),
            "{item}"
        );
        let prefix = item["prefix"].as_str().unwrap();
        assert!(
            prefix.starts_with("ask_live_") && prefix.len() < 20,
            "{prefix}"
        );
    }
    assert!(token.starts_with(items[1]["prefix"].as_str().unwrap()));
}

async fn token_requests_are_validated(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let create = |body: Value| {
        app.request(Method::POST, "/api/v1/tokens")
            .bearer_auth(&ann.access)
            .json(&body)
            .send()
    };
    for body in [
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({"name": "a\u{7}b"}),
        json!({"name": "ok", "expires_in_days": 0}),
        json!({"name": "ok", "expires_in_days": 3651}),
        json!({"name": "ok", "expires_in_days": -1}),
        json!({"name": "ok", "expires_in_days": "ten"}),
        json!({}),
    ] {
        expect_error(
            create(body).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
    }
    let res = app
        .request(Method::POST, "/api/v1/tokens")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "not-authenticated").await;
    let listed: Value = app.get_json("/api/v1/tokens", &ann.access).await;
    assert_eq!(listed["total"], 0);
}

async fn tokens_per_user_are_capped(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.tokens.max_per_user = 2).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    app.api_token(&ann, "one").await;
    let (second, _) = app.api_token(&ann, "two").await;
    let res = app
        .request(Method::POST, "/api/v1/tokens")
        .bearer_auth(&ann.access)
        .json(&json!({"name": "three"}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "too-many-tokens").await;
    // The cap is per user.
    app.api_token(&bob, "one").await;
    // Deleting one makes room.
    let res = app
        .delete_auth(&format!("/api/v1/tokens/{second}"), &ann.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.api_token(&ann, "three").await;
}

async fn mcp_needs_a_valid_api_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "laptop").await;
    let res = app
        .request(Method::POST, "/mcp")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "not-authenticated").await;
    for bad in [
        format!("ask_live_{}", "0".repeat(64)),
        "garbage".to_owned(),
        ann.access.clone(),
        token.to_uppercase(),
    ] {
        let res = app
            .request(Method::POST, "/mcp")
            .bearer_auth(&bad)
            .body("{}")
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
    }
    assert_eq!(app.mcp_status(&token).await, StatusCode::OK);
}

async fn a_revoked_token_fails_on_its_next_request(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (id, token) = app.api_token(&ann, "laptop").await;
    let (_, kept) = app.api_token(&ann, "desktop").await;
    assert_eq!(app.mcp_status(&token).await, StatusCode::OK);
    let res = app
        .delete_auth(&format!("/api/v1/tokens/{id}"), &ann.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.mcp_status(&token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.mcp_status(&kept).await, StatusCode::OK);
    let res = app
        .delete_auth(&format!("/api/v1/tokens/{id}"), &ann.access)
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    let listed: Value = app.get_json("/api/v1/tokens", &ann.access).await;
    assert_eq!(listed["total"], 1);
}

async fn another_users_token_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let (ann_token_id, ann_token) = app.api_token(&ann, "laptop").await;
    let res = app
        .delete_auth(&format!("/api/v1/tokens/{ann_token_id}"), &bob.access)
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    for path in [
        format!("/api/v1/tokens/{}", uuid::Uuid::new_v4()),
        "/api/v1/tokens/not-a-uuid".to_owned(),
    ] {
        let res = app.delete_auth(&path, &bob.access).await;
        expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    }
    let listed: Value = app.get_json("/api/v1/tokens", &bob.access).await;
    assert_eq!(listed["total"], 0);
    assert_eq!(app.mcp_status(&ann_token).await, StatusCode::OK);
}

async fn use_times_are_batched_and_flushed(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (id, token) = app.api_token(&ann, "laptop").await;
    let user_id = uuid::Uuid::parse_str(&ann.id).unwrap();
    let stored = || async {
        let tokens = app
            .state
            .store
            .list_api_tokens(user_id, store::now())
            .await
            .unwrap();
        tokens
            .into_iter()
            .find(|t| t.id.to_string() == id)
            .unwrap()
            .last_used_at
    };
    for _ in 0..5 {
        app.mcp_status(&token).await;
    }
    // Not written per request (the flush interval is 30 s) ...
    assert_eq!(stored().await, None);
    // ... but shown at once ...
    let listed: Value = app.get_json("/api/v1/tokens", &ann.access).await;
    let shown = listed["items"][0]["last_used_at"]
        .as_str()
        .unwrap()
        .to_owned();
    // ... and written by a flush.
    app.state.registry.flush().await.unwrap();
    let written = stored().await.unwrap();
    let shown = time::OffsetDateTime::parse(&shown, &time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(written, shown);
    assert!((time::OffsetDateTime::now_utc() - written).whole_seconds() < 60);
}

async fn changes_made_by_other_processes_are_picked_up(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.tokens.sync_interval_secs = 1).await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "laptop").await;
    let user_id = uuid::Uuid::parse_str(&ann.id).unwrap();
    // The admin command's path: straight to the database, as another process would.
    assert!(
        app.state
            .store
            .set_active(user_id, false, store::now())
            .await
            .unwrap()
    );
    assert!(
        wait_for(|| async { app.mcp_status(&token).await == StatusCode::UNAUTHORIZED }).await,
        "deactivation not picked up"
    );
    let res = app.login(&ann.email, &ann.password).await;
    expect_error(res, StatusCode::FORBIDDEN, "account-inactive").await;
    expect_error(
        app.get_auth("/api/v1/users/me", &ann.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    assert!(
        app.state
            .store
            .set_active(user_id, true, store::now())
            .await
            .unwrap()
    );
    assert!(
        wait_for(|| async { app.mcp_status(&token).await == StatusCode::OK }).await,
        "reactivation not picked up"
    );
    assert_eq!(
        app.login(&ann.email, &ann.password).await.status(),
        StatusCode::OK
    );

    // A token written by another process becomes usable.
    let (record, secret) = insert_directly(&app, user_id, None).await;
    assert!(
        wait_for(|| async { app.mcp_status(&secret).await == StatusCode::OK }).await,
        "new token not picked up"
    );
    // And one deleted by another process stops.
    assert!(
        app.state
            .store
            .delete_api_token(user_id, record.id)
            .await
            .unwrap()
    );
    assert!(
        wait_for(|| async { app.mcp_status(&secret).await == StatusCode::UNAUTHORIZED }).await,
        "deletion not picked up"
    );
}

async fn expired_tokens_stop_working(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.tokens.sync_interval_secs = 1).await;
    let ann = app.user("ann").await;
    let user_id = uuid::Uuid::parse_str(&ann.id).unwrap();
    let expires_at = store::now() + time::Duration::seconds(4);
    let (_, secret) = insert_directly(&app, user_id, Some(expires_at)).await;
    assert!(
        wait_for(|| async { app.mcp_status(&secret).await == StatusCode::OK }).await,
        "token never worked"
    );
    let left = expires_at - time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(left.whole_milliseconds()).unwrap_or(0) + 1100,
    ))
    .await;
    assert_eq!(app.mcp_status(&secret).await, StatusCode::UNAUTHORIZED);
    let listed: Value = app.get_json("/api/v1/tokens", &ann.access).await;
    assert_eq!(listed["items"][0]["is_active"], false);
    let me: Value = app.get_json("/api/v1/users/me", &ann.access).await;
    assert_eq!(me["token_count"], 0);
}

/// Writes a token straight to the database, as another process would; returns it and its secret.
async fn insert_directly(
    app: &TestApp,
    user_id: uuid::Uuid,
    expires_at: Option<time::OffsetDateTime>,
) -> (NewApiToken, String) {
    let secret = agentskills_mcp::domain::ApiTokenSecret::generate().unwrap();
    let record = NewApiToken {
        id: uuid::Uuid::new_v4(),
        user_id,
        name: "elsewhere".into(),
        prefix: secret.shown_prefix(),
        token_hash: secret.hash(),
        created_at: store::now(),
        expires_at,
        scopes: "skills:read skills:run".into(),
    };
    app.state
        .store
        .insert_api_token(&record, 100)
        .await
        .unwrap();
    (record, secret.expose().to_owned())
}

/// Polls `check` for up to 10 s.
async fn wait_for<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
