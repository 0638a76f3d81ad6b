//! Registration and `/users/me`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, expect_error, spawn_app};

backend_tests!(
    register_creates_a_user_with_a_lower_case_email,
    register_refuses_duplicate_email_or_username_in_any_case,
    register_reports_every_invalid_field,
    register_refuses_bodies_that_are_not_the_expected_json,
    me_shows_the_account_with_its_counts,
    update_me_changes_email_and_username,
    update_me_refuses_duplicates_and_invalid_values,
    delete_me_needs_the_password_and_the_confirmation,
    delete_me_removes_everything_of_the_user,
    register_refuses_look_alikes_of_an_existing_email,
    update_me_refuses_a_look_alike_of_another_accounts_email,
    login_finds_an_email_however_it_is_typed,
);

async fn register_creates_a_user_with_a_lower_case_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app
        .register("Ann.Lee@Example.COM", "ann.lee", "correct horse battery")
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], "ann.lee@example.com");
    assert_eq!(body["username"], "ann.lee");
    assert_eq!(body["is_active"], true);
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "unexpected fields: {body}");
    // The normalized email logs in whatever its case.
    assert_eq!(
        app.login("ANN.LEE@example.com", "correct horse battery")
            .await
            .status(),
        StatusCode::OK
    );
}

async fn register_refuses_duplicate_email_or_username_in_any_case(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.register("ann@example.com", "ann", "password-1")
            .await
            .status(),
        StatusCode::CREATED
    );
    let res = app.register("ANN@example.com", "other", "password-1").await;
    expect_error(res, StatusCode::BAD_REQUEST, "email-taken").await;
    let res = app.register("other@example.com", "ANN", "password-1").await;
    expect_error(res, StatusCode::BAD_REQUEST, "username-taken").await;
}

async fn register_reports_every_invalid_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.register("not-an-email", "a", "short").await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "username", "password"]);

    for (email, username, password, field) in [
        (
            "a@example.com",
            "x".repeat(101),
            "password-1".to_owned(),
            "username",
        ),
        (
            "a@example.com",
            "bad name".to_owned(),
            "password-1".to_owned(),
            "username",
        ),
        (
            "a@example.com",
            "okname".to_owned(),
            "p".repeat(1025),
            "password",
        ),
        (
            "a@example.com",
            "okname".to_owned(),
            "1234567".to_owned(),
            "password",
        ),
    ] {
        let res = app.register(email, &username, &password).await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let long_email = format!("{}@example.com", "e".repeat(250));
    let res = app.register(&long_email, "okname", "password-1").await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    // Exactly 8 bytes and exactly 1024 bytes are fine.
    assert_eq!(
        app.register("b@example.com", "bee", "12345678")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.register("c@example.com", "cee", &"p".repeat(1024))
            .await
            .status(),
        StatusCode::CREATED
    );
}

async fn register_refuses_bodies_that_are_not_the_expected_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let send = |body: &'static str, content_type: &'static str| {
        app.request(Method::POST, "/api/v1/auth/register")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    expect_error(
        send("{\"email\": ", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid-json",
    )
    .await;
    expect_error(
        send("not json", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid-json",
    )
    .await;
    let body = expect_error(
        send(
            r#"{"email": 5, "username": "abc", "password": "password-1"}"#,
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "email");
    let body = expect_error(
        send(
            r#"{"username": "abc", "password": "password-1"}"#,
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "email");
    let body = expect_error(
        send(r#"{"email": "a@b.co", "username": "abc", "password": "password-1", "is_superuser": true}"#, "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "is_superuser");
    expect_error(
        send(
            r#"{"email": "a@b.co", "username": "abc", "password": "password-1"}"#,
            "text/plain",
        )
        .await
        .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let huge = json!({"email": "a@b.co", "username": "abc", "password": "x".repeat(100_000)});
    let res = app.post_json("/api/v1/auth/register", &huge).await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
}

async fn me_shows_the_account_with_its_counts(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    app.api_token(&ann, "laptop").await;
    app.api_token(&ann, "ci").await;
    let res = app.get_auth("/api/v1/users/me", &ann.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["id"], ann.id.as_str());
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["username"], "ann");
    assert_eq!(me["is_active"], true);
    assert_eq!(me["skill_count"], 0);
    assert_eq!(me["token_count"], 2);
    assert!(
        me.get("password_hash").is_none() && me.get("token_version").is_none(),
        "{me}"
    );
    expect_error(
        app.request(Method::GET, "/api/v1/users/me")
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "not-authenticated",
    )
    .await;
}

async fn update_me_changes_email_and_username(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let res = app
        .request(Method::PUT, "/api/v1/users/me")
        .bearer_auth(&ann.access)
        .json(&json!({"email": "Ann.New@Example.com", "username": "annie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], "ann.new@example.com");
    assert_eq!(body["username"], "annie");
    assert_eq!(
        app.login("annie", &ann.password).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("ann.new@example.com", &ann.password)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("ann@example.com", &ann.password).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Changing only one field keeps the other.
    let res = app
        .request(Method::PUT, "/api/v1/users/me")
        .bearer_auth(&ann.access)
        .json(&json!({"username": "ann2"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["email"].as_str(), body["username"].as_str()),
        (Some("ann.new@example.com"), Some("ann2"))
    );
}

async fn update_me_refuses_duplicates_and_invalid_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    app.user("bob").await;
    let put = |body: Value| {
        app.request(Method::PUT, "/api/v1/users/me")
            .bearer_auth(&ann.access)
            .json(&body)
            .send()
    };
    expect_error(
        put(json!({"email": "BOB@example.com"})).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "email-taken",
    )
    .await;
    expect_error(
        put(json!({"username": "Bob"})).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "username-taken",
    )
    .await;
    let body = expect_error(
        put(json!({"email": "nope", "username": "x"}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    expect_error(
        put(json!({"is_active": false})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    let me: Value = app.get_json("/api/v1/users/me", &ann.access).await;
    assert_eq!(
        (me["email"].as_str(), me["username"].as_str()),
        (Some("ann@example.com"), Some("ann"))
    );
}

async fn delete_me_needs_the_password_and_the_confirmation(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let delete = |body: Value| {
        app.request(Method::DELETE, "/api/v1/users/me")
            .bearer_auth(&ann.access)
            .json(&body)
            .send()
    };
    let body = expect_error(
        delete(json!({"password": ann.password, "confirm": "delete my account"}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "confirm");
    expect_error(
        delete(json!({"password": "not the password", "confirm": "DELETE MY ACCOUNT"}))
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "wrong-password",
    )
    .await;
    expect_error(
        delete(json!({"confirm": "DELETE MY ACCOUNT"}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    // Still there.
    assert_eq!(
        app.get_auth("/api/v1/users/me", &ann.access).await.status(),
        StatusCode::OK
    );
}

async fn delete_me_removes_everything_of_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let (_, ann_token) = app.api_token(&ann, "laptop").await;
    let (_, bob_token) = app.api_token(&bob, "laptop").await;
    let folder = app.data_dir.join("skills").join(&ann.id).join("pdf");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("SKILL.md"), "---\nname: pdf\n---\n").unwrap();

    let res = app
        .request(Method::DELETE, "/api/v1/users/me")
        .bearer_auth(&ann.access)
        .json(&json!({"password": ann.password, "confirm": "DELETE MY ACCOUNT"}))
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
        app.login(&ann.email, &ann.password).await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
    let res = app
        .request(Method::POST, "/api/v1/auth/refresh")
        .bearer_auth(&ann.refresh)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
    assert_eq!(app.mcp_status(&ann_token).await, StatusCode::UNAUTHORIZED);
    assert!(!app.data_dir.join("skills").join(&ann.id).exists());
    let id = uuid::Uuid::parse_str(&ann.id).unwrap();
    assert!(app.state.store.user_by_id(id).await.unwrap().is_none());
    assert!(
        app.state
            .store
            .list_api_tokens(id, agentskills_mcp::store::now())
            .await
            .unwrap()
            .is_empty()
    );
    // The same email can register again, as a new account.
    assert_eq!(
        app.register(&ann.email, "ann", "another-password")
            .await
            .status(),
        StatusCode::CREATED
    );
    // Nobody else was touched.
    assert_eq!(
        app.get_auth("/api/v1/users/me", &bob.access).await.status(),
        StatusCode::OK
    );
    assert_ne!(app.mcp_status(&bob_token).await, StatusCode::UNAUTHORIZED);
}

async fn register_refuses_look_alikes_of_an_existing_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.register("ann@example.com", "ann", "password-1").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let duplicate = expect_error(
        app.register("ann@example.com", "other", "password-1").await,
        StatusCode::BAD_REQUEST,
        "email-taken",
    )
    .await;
    for (n, look_alike) in [
        // Cyrillic а.
        "\u{430}nn@example.com",
        // Full-width letters, upper case: NFKC and lower case make it ann@example.com itself.
        "\u{ff21}\u{ff2e}\u{ff2e}@example.com",
        // Latin alpha: a single script, but not ASCII.
        "\u{251}nn@example.com",
        // A zero-width space.
        "a\u{200b}nn@example.com",
    ]
    .into_iter()
    .enumerate()
    {
        let refused = expect_error(
            app.register(look_alike, &format!("mallory{n}"), "password-1")
                .await,
            StatusCode::BAD_REQUEST,
            "email-taken",
        )
        .await;
        // The same answer as for the address itself: nothing tells which account it resembles.
        assert_eq!(refused, duplicate, "{look_alike:?}");
    }
    // An address in another script that resembles no one's is welcome, and then taken in any
    // case or normalization form.
    let ivan =
        "\u{438}\u{432}\u{430}\u{43d}@\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}";
    let res = app.register(ivan, "ivan", "password-1").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], ivan);
    expect_error(
        app.register(&ivan.to_uppercase(), "ivan2", "password-1")
            .await,
        StatusCode::BAD_REQUEST,
        "email-taken",
    )
    .await;
    // ASCII addresses that only look alike in some fonts are different mailboxes.
    assert_eq!(
        app.register("bill@example.com", "bill", "password-1")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.register("bi1l@example.com", "bi1l", "password-1")
            .await
            .status(),
        StatusCode::CREATED
    );
}

async fn update_me_refuses_a_look_alike_of_another_accounts_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let put = |user: &crate::helpers::TestUser, email: &str| {
        app.request(Method::PUT, "/api/v1/users/me")
            .bearer_auth(&user.access)
            .json(&json!({ "email": email }))
            .send()
    };
    for look_alike in [
        "\u{430}nn@example.com",
        "\u{ff41}nn@example.com",
        "ANN@EXAMPLE.COM",
    ] {
        expect_error(
            put(&bob, look_alike).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "email-taken",
        )
        .await;
    }
    let me: Value = app.get_json("/api/v1/users/me", &bob.access).await;
    assert_eq!(me["email"], "bob@example.com");
    // A look-alike of one's own address resembles no one else's.
    let res = put(&ann, "\u{430}nn@example.com").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], "\u{430}nn@example.com");
    // And the Latin spelling is now a look-alike of Ann's address.
    expect_error(
        app.register("ann@example.com", "ann2", "password-1").await,
        StatusCode::BAD_REQUEST,
        "email-taken",
    )
    .await;
}

async fn login_finds_an_email_however_it_is_typed(backend: Backend) {
    let app = spawn_app(backend).await;
    // Registered in NFD; stored, and shown, in NFC.
    let res = app
        .register("Rene\u{301}e@Example.com", "renee", "password-1")
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], "ren\u{e9}e@example.com");
    for spelling in [
        "ren\u{e9}e@example.com",
        "rene\u{301}e@example.com",
        "REN\u{c9}E@EXAMPLE.COM",
        "RENE\u{301}E@example.com",
        "\u{ff52}\u{ff45}\u{ff4e}\u{e9}\u{ff45}\u{ff20}example.com",
    ] {
        assert_eq!(
            app.login(spelling, "password-1").await.status(),
            StatusCode::OK,
            "{spelling:?}"
        );
    }
    // A look-alike is another address, not this account.
    expect_error(
        app.login("r\u{435}n\u{e9}e@example.com", "password-1")
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
}
