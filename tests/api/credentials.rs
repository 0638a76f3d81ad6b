//! Login, access-token checks and password change; no secret in the clear anywhere.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentskills_mcp::auth::{JwtKeys, TokenKind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::backend_tests;
use crate::helpers::{Backend, PgDatabase, expect_error, spawn_app, spawn_app_with};

backend_tests!(
    login_accepts_email_or_username,
    login_failures_look_the_same_for_unknown_users_and_wrong_passwords,
    login_validates_its_body,
    missing_malformed_tampered_and_unsigned_access_tokens_are_refused,
    expired_and_foreign_access_tokens_are_refused,
    refresh_and_access_tokens_are_never_accepted_for_each_other,
    password_change_needs_the_current_password_and_ends_every_session,
    old_password_hashes_are_upgraded_at_login,
    saturated_password_hashing_answers_503_with_retry_after,
    no_password_or_token_is_logged_or_stored_in_clear,
);

async fn login_accepts_email_or_username(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("ann@example.com", "Ann", "password-123").await;
    for body in [
        json!({"email": "ann@example.com", "password": "password-123"}),
        json!({"email": "ANN@EXAMPLE.COM", "password": "password-123"}),
        json!({"username": "ann", "password": "password-123"}),
        json!({"email": "Ann", "password": "password-123"}),
    ] {
        let res = app.post_json("/api/v1/auth/login", &body).await;
        assert_eq!(res.status(), StatusCode::OK, "{body}");
        let pair: Value = res.json().await.unwrap();
        assert_eq!(pair["token_type"], "bearer");
        assert_eq!(pair["expires_in"], 1800);
        let access = pair["access_token"].as_str().unwrap();
        let refresh = pair["refresh_token"].as_str().unwrap();
        assert_ne!(access, refresh);
        assert_eq!(
            app.get_auth("/api/v1/users/me", access).await.status(),
            StatusCode::OK
        );
    }
}

async fn login_failures_look_the_same_for_unknown_users_and_wrong_passwords(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("ann@example.com", "ann", "password-123").await;
    let wrong_password = expect_error(
        app.login("ann@example.com", "password-124").await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
    let unknown_email = expect_error(
        app.login("nobody@example.com", "password-123").await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
    let unknown_name = expect_error(
        app.login("nobody", "password-123").await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
    assert_eq!(wrong_password, unknown_email);
    assert_eq!(wrong_password, unknown_name);
}

async fn login_validates_its_body(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app
        .post_json("/api/v1/auth/login", &json!({"password": "password-123"}))
        .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "a@b.co", "username": "ab", "password": "x"}),
        )
        .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "a@b.co", "password": "x".repeat(1025)}),
        )
        .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "a@b.co", "password": 12345678}),
        )
        .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

async fn missing_malformed_tampered_and_unsigned_access_tokens_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let me = |token: Option<String>| {
        let req = app.request(Method::GET, "/api/v1/users/me");
        match token {
            Some(t) => req.header("authorization", t).send(),
            None => req.send(),
        }
    };
    expect_error(
        me(None).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "not-authenticated",
    )
    .await;
    expect_error(
        me(Some(format!("Basic {}", ann.access))).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "not-authenticated",
    )
    .await;
    expect_error(
        me(Some("Bearer not.a.jwt".into())).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;

    let parts: Vec<&str> = ann.access.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64_decode(parts[1])).unwrap();
    // Another user's id in an otherwise intact token: the signature no longer matches.
    claims["sub"] = json!(uuid::Uuid::new_v4());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    expect_error(
        me(Some(format!("Bearer {tampered}"))).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    // `alg: none` with no signature.
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    expect_error(
        me(Some(format!("Bearer {unsigned}"))).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    // HS512 signed with nothing we know.
    let hs512 = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"HS512","typ":"JWT"}"#),
        parts[1],
        parts[2]
    );
    expect_error(
        me(Some(format!("Bearer {hs512}"))).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    // The untouched token still works.
    assert_eq!(
        me(Some(format!("Bearer {}", ann.access)))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

async fn expired_and_foreign_access_tokens_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let secret = std::fs::read_to_string(app.data_dir.join("secret_key")).unwrap();
    let keys = JwtKeys::new(secret.trim().as_bytes(), &app.settings.auth);
    let parts: Vec<&str> = ann.access.split('.').collect();
    let claims: Value = serde_json::from_slice(&b64_decode(parts[1])).unwrap();
    let user = uuid::Uuid::parse_str(&ann.id).unwrap();
    let sid = uuid::Uuid::parse_str(claims["sid"].as_str().unwrap()).unwrap();
    let version = claims["ver"].as_i64().unwrap();

    // Signed with the real key for the real session, but expired an hour ago.
    let (expired, _) = keys
        .issue(
            TokenKind::Access,
            user,
            version,
            sid,
            OffsetDateTime::now_utc() - time::Duration::hours(2),
        )
        .unwrap();
    expect_error(
        app.get_auth("/api/v1/users/me", &expired).await,
        StatusCode::UNAUTHORIZED,
        "token-expired",
    )
    .await;
    // Fresh with the real key: accepted (the check above failed on time alone).
    let (fresh, _) = keys
        .issue(
            TokenKind::Access,
            user,
            version,
            sid,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    assert_eq!(
        app.get_auth("/api/v1/users/me", &fresh).await.status(),
        StatusCode::OK
    );
    // Another server's key.
    let foreign = JwtKeys::new(&[1u8; 64], &app.settings.auth);
    let (forged, _) = foreign
        .issue(
            TokenKind::Access,
            user,
            version,
            sid,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    expect_error(
        app.get_auth("/api/v1/users/me", &forged).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    // A session id that was never issued.
    let (stray, _) = keys
        .issue(
            TokenKind::Access,
            user,
            version,
            uuid::Uuid::new_v4(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    expect_error(
        app.get_auth("/api/v1/users/me", &stray).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
}

async fn refresh_and_access_tokens_are_never_accepted_for_each_other(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    expect_error(
        app.get_auth("/api/v1/users/me", &ann.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    let res = app
        .request(Method::POST, "/api/v1/auth/refresh")
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
    let res = app
        .request(Method::POST, "/api/v1/auth/refresh")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "not-authenticated").await;
    // Neither is an API token.
    expect_error(
        app.get_auth("/api/v1/users/me", &format!("ask_live_{}", "0".repeat(64)))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
    // Both still work for what they are.
    let res = app
        .request(Method::POST, "/api/v1/auth/refresh")
        .bearer_auth(&ann.refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

async fn password_change_needs_the_current_password_and_ends_every_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let other_session: Value = app
        .login(&ann.email, &ann.password)
        .await
        .json()
        .await
        .unwrap();
    let (_, api_token) = app.api_token(&ann, "laptop").await;
    let change = |current: &str, new: &str| {
        app.request(Method::PUT, "/api/v1/users/me/password")
            .bearer_auth(&ann.access)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    expect_error(
        change("wrong-password", "new-password-1").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "wrong-password",
    )
    .await;
    let body = expect_error(
        change(&ann.password, "short").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "new_password");
    assert_eq!(
        change(&ann.password, "new-password-1")
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );

    for access in [&ann.access, other_session["access_token"].as_str().unwrap()] {
        expect_error(
            app.get_auth("/api/v1/users/me", access).await,
            StatusCode::UNAUTHORIZED,
            "invalid-token",
        )
        .await;
    }
    for refresh in [
        &ann.refresh,
        other_session["refresh_token"].as_str().unwrap(),
    ] {
        let res = app
            .request(Method::POST, "/api/v1/auth/refresh")
            .bearer_auth(refresh)
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid-token").await;
    }
    expect_error(
        app.login(&ann.email, &ann.password).await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
    let res = app.login(&ann.email, "new-password-1").await;
    assert_eq!(res.status(), StatusCode::OK);
    // API tokens are separate credentials and keep working.
    assert_ne!(app.mcp_status(&api_token).await, StatusCode::UNAUTHORIZED);
}

async fn old_password_hashes_are_upgraded_at_login(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    app.register("ann@example.com", "ann", "password-123").await;
    let before = app
        .state
        .store
        .user_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        before.password_hash.starts_with("$scrypt$ln=4,"),
        "{}",
        before.password_hash
    );
    // The same database, served with a higher cost.
    let url = app.settings.database.url.clone();
    let data_dir = app.data_dir.clone();
    let upgraded = crate::helpers::spawn_app_with(backend, |s| {
        s.server.data_dir = data_dir;
        s.database.url = url;
        s.auth.scrypt_log_n = 5;
    })
    .await;
    assert_eq!(
        upgraded
            .login("ann@example.com", "password-123")
            .await
            .status(),
        StatusCode::OK
    );
    let after = upgraded
        .state
        .store
        .user_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.password_hash.starts_with("$scrypt$ln=5,"),
        "{}",
        after.password_hash
    );
    assert_eq!(after.token_version, before.token_version);
    assert_eq!(
        upgraded
            .login("ann@example.com", "password-123")
            .await
            .status(),
        StatusCode::OK
    );
}

async fn saturated_password_hashing_answers_503_with_retry_after(backend: Backend) {
    // One hashing slot, a cost that takes some milliseconds, and almost no patience.
    let app = crate::helpers::spawn_app_with(backend, |s| {
        // This is about hashing capacity, not the login rate limits.
        s.rate_limits.login_per_ip_per_minute = 0;
        s.rate_limits.login_per_account_per_minute = 0;
        s.auth.scrypt_log_n = 12;
        s.auth.hash_concurrency = 1;
        s.auth.hash_wait_ms = 1;
    })
    .await;
    // Nothing is hashed at start-up (the dummy hash of unknown accounts needs no hashing to
    // make): the one slot is free at once.
    assert_eq!(
        app.register("ann@example.com", "ann", "password-123")
            .await
            .status(),
        StatusCode::CREATED
    );
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let request = app
            .request(Method::POST, "/api/v1/auth/login")
            .json(&json!({"email": "ann@example.com", "password": "password-123"}));
        logins.spawn(async move {
            let res = request.send().await.unwrap();
            let retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            (
                status,
                retry_after,
                body["code"].as_str().unwrap_or("").to_owned(),
            )
        });
    }
    let results = logins.join_all().await;
    let busy: Vec<_> = results
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(!busy.is_empty(), "no login was turned away: {results:?}");
    assert!(
        results.iter().any(|(s, _, _)| *s == StatusCode::OK),
        "{results:?}"
    );
    for (status, retry_after, code) in &results {
        assert!(
            *status == StatusCode::OK || *status == StatusCode::SERVICE_UNAVAILABLE,
            "{results:?}"
        );
        if *status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(code, "busy");
            assert!(
                retry_after
                    .as_deref()
                    .is_some_and(|v| v.parse::<u64>().unwrap() >= 1),
                "{results:?}"
            );
        }
    }
    // Once the burst is over, logins go through again (a hash the burst started may still hold
    // the one slot for a moment on a busy machine; the wait here is 1 ms).
    let mut again = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        again = app.login("ann@example.com", "password-123").await.status();
        if again != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(again, StatusCode::OK);
}

/// Runs the real binary with debug logging, walks through every credential, then looks for each
/// secret in its log and in the database.
async fn no_password_or_token_is_logged_or_stored_in_clear(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let database = match &backend {
        Backend::Sqlite => None,
        Backend::Postgres(url) => Some(PgDatabase::create(url).await),
    };
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"));
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env_clear()
        .env("AGENTSKILLS_LOG", "debug")
        .env("AGENTSKILLS_SCRYPT_LOG_N", "4")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().unwrap());
    if let Some(db) = &database {
        cmd.env("DATABASE_URL", &db.url);
    }
    let mut child = cmd.spawn().unwrap();
    let base = wait_for_listen_address(&log_path).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let password = "Sup3r-Secret-Passw0rd!";
    let new_password = "An0ther-Secret-Passw0rd!";
    let res = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "ann@example.com", "username": "ann", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let wrong = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "ann@example.com", "password": "Wr0ng-Secret-Passw0rd!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let pair: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "ann@example.com", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let created: Value = client
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(&access)
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_token = created["token"].as_str().unwrap().to_owned();
    let status = client
        .post(format!("{base}/mcp"))
        .bearer_auth(&api_token)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_ne!(status, StatusCode::UNAUTHORIZED);
    let res = client
        .put(format!("{base}/api/v1/users/me/password"))
        .bearer_auth(&access)
        .json(&json!({"current_password": password, "new_password": new_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = client
        .post(format!("{base}/api/v1/auth/refresh"))
        .bearer_auth(&refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // SIGTERM: the server flushes and exits 0.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "server exited with {exit}");

    let mut logged = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut logged)
        .unwrap();
    assert!(logged.contains("request"), "the log is empty: {logged}");
    let secrets = [
        password,
        new_password,
        "Wr0ng-Secret-Passw0rd!",
        &access,
        &refresh,
        &api_token,
        &api_token["ask_live_".len()..],
    ];
    for secret in secrets {
        assert!(!logged.contains(secret), "the log holds a secret: {secret}");
    }
    let hash = blake3::hash(api_token.as_bytes());
    let stored = match &database {
        None => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(&data_dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file()
                    && path
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("agentskills.db")
                {
                    bytes.extend(std::fs::read(path).unwrap());
                }
            }
            // What is stored for the API token is its BLAKE3 hash, as 32 raw bytes.
            assert!(
                bytes.windows(32).any(|w| w == hash.as_bytes()),
                "the token's hash is not stored as bytes"
            );
            assert!(
                !String::from_utf8_lossy(&bytes).contains(hash.to_hex().as_str()),
                "the hash is stored as hex text"
            );
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Some(db) => {
            let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut dump = String::new();
            for table in ["users", "api_tokens", "auth_sessions", "refresh_tokens"] {
                for row in client
                    .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
                    .await
                    .unwrap()
                {
                    dump.push_str(row.get::<_, &str>(0));
                }
            }
            assert!(dump.contains("$scrypt$"), "no password hash found: {dump}");
            let stored: Vec<u8> = client
                .query_one("SELECT token_hash FROM api_tokens", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                stored,
                hash.as_bytes(),
                "the token's hash is not what is stored"
            );
            dump
        }
    };
    for secret in secrets {
        assert!(
            !stored.contains(secret),
            "the database holds a secret in clear: {secret}"
        );
    }
    drop(database);
}

/// Reads the server's log until it says where it listens.
async fn wait_for_listen_address(log: &std::path::Path) -> String {
    for _ in 0..200 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("listening on http://")) {
            let url = line.split("listening on ").nth(1).unwrap().trim();
            return url.split_whitespace().next().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the server never said where it listens: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A flood of wrong-password logins (50 at once, again and again) must not starve the rest of the
/// service: hashing is capped, the extra attempts are turned away quickly (429 from the rate
/// limit, 503 from the full hashing queue), and `/health` and MCP `tools/call` keep answering.
#[tokio::test]
async fn a_login_flood_does_not_starve_the_service() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        // A real cost (about 45 ms a hash here), and every login reaches the hashing queue.
        s.auth.scrypt_log_n = 14;
        s.rate_limits.login_per_ip_per_minute = 0;
        s.rate_limits.login_per_account_per_minute = 0;
    })
    .await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "agent").await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (client, base, flooding) = (app.client.clone(), app.base.clone(), flooding.clone());
        flood.spawn(async move {
            let mut answered = 0u32;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let res = client
                    .post(format!("{base}/api/v1/auth/login"))
                    .json(&json!({"email": "ann@example.com", "password": "wrong-password-9"}))
                    .send()
                    .await
                    .unwrap();
                assert!(
                    [401, 429, 503].contains(&res.status().as_u16()),
                    "{}",
                    res.status()
                );
                answered += 1;
            }
            answered
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "load_skill_metadata", "arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}});
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let health = app.request(Method::GET, "/health").send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let res = app
            .request(Method::POST, "/mcp")
            .bearer_auth(&token)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "load_skill_metadata")
            .body(call.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["result"]["isError"], false, "{body}");
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let attempts: u32 = flood.join_all().await.into_iter().sum();
    assert!(attempts >= 50, "the flood ran: {attempts} attempts");
    // Not a timing benchmark: only that nothing waited behind the hashing (a starved request
    // would wait seconds).
    assert!(
        slowest < Duration::from_secs(2),
        "health and tools/call waited {slowest:?} during the flood"
    );
}
