//! Refresh-token rotation and reuse detection; logout and logout everywhere.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, expect_error, spawn_app};

backend_tests!(
    refresh_rotates_the_pair,
    a_reused_refresh_token_ends_its_whole_session_only,
    concurrent_use_of_one_refresh_token_rotates_it_once,
    logout_ends_this_session_only,
    logout_everywhere_ends_every_session,
);

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/auth/refresh")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn refresh_rotates_the_pair(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let res = refresh(&app, &ann.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pair: Value = res.json().await.unwrap();
    assert_eq!(pair["token_type"], "bearer");
    let access = pair["access_token"].as_str().unwrap();
    let next = pair["refresh_token"].as_str().unwrap();
    assert_ne!(next, ann.refresh);
    assert_eq!(
        app.get_auth("/api/v1/users/me", access).await.status(),
        StatusCode::OK
    );
    // The rotated token keeps rotating.
    let res = refresh(&app, next).await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn a_reused_refresh_token_ends_its_whole_session_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let other: Value = app
        .login(&ann.email, &ann.password)
        .await
        .json()
        .await
        .unwrap();
    let pair: Value = refresh(&app, &ann.refresh).await.json().await.unwrap();
    let stolen_reuse = refresh(&app, &ann.refresh).await;
    expect_error(
        stolen_reuse,
        StatusCode::UNAUTHORIZED,
        "refresh-token-reused",
    )
    .await;
    // Every token of that session is now dead: the legitimate rotation and its access token too.
    expect_error(
        refresh(&app, pair["refresh_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    expect_error(
        app.get_auth("/api/v1/users/me", pair["access_token"].as_str().unwrap())
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    expect_error(
        app.get_auth("/api/v1/users/me", &ann.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    // The user's other session is untouched.
    assert_eq!(
        app.get_auth("/api/v1/users/me", other["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        refresh(&app, other["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

async fn concurrent_use_of_one_refresh_token_rotates_it_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .request(Method::POST, "/api/v1/auth/refresh")
            .bearer_auth(&ann.refresh);
        attempts.spawn(async move { request.send().await.unwrap().status() });
    }
    let statuses = attempts.join_all().await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
}

async fn logout_ends_this_session_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let other: Value = app
        .login(&ann.email, &ann.password)
        .await
        .json()
        .await
        .unwrap();
    let res = app
        .request(Method::POST, "/api/v1/auth/logout")
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expect_error(
        app.get_auth("/api/v1/users/me", &ann.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    expect_error(
        refresh(&app, &ann.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    assert_eq!(
        app.get_auth("/api/v1/users/me", other["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    // Logging out needs an access token; a refresh token is not one.
    let res = app
        .request(Method::POST, "/api/v1/auth/logout")
        .bearer_auth(other["refresh_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
}

async fn logout_everywhere_ends_every_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let other: Value = app
        .login(&ann.email, &ann.password)
        .await
        .json()
        .await
        .unwrap();
    let res = app
        .request(Method::POST, "/api/v1/auth/logout")
        .bearer_auth(&ann.access)
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for access in [ann.access.as_str(), other["access_token"].as_str().unwrap()] {
        expect_error(
            app.get_auth("/api/v1/users/me", access).await,
            StatusCode::UNAUTHORIZED,
            "invalid-token",
        )
        .await;
    }
    for token in [
        ann.refresh.as_str(),
        other["refresh_token"].as_str().unwrap(),
    ] {
        expect_error(
            refresh(&app, token).await,
            StatusCode::UNAUTHORIZED,
            "invalid-token",
        )
        .await;
    }
    // A new login works.
    assert_eq!(
        app.login(&ann.email, &ann.password).await.status(),
        StatusCode::OK
    );
    let res = app
        .request(Method::POST, "/api/v1/auth/logout")
        .bearer_auth(&ann.access)
        .json(&json!({"all": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
