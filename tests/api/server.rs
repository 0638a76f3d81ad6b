//! The server itself: health, routing, HTTP/2, slow clients, shutdown, the signing secret.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use agentskills_mcp::store;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::backend_tests;
use crate::helpers::{Backend, expect_error, spawn_app, spawn_app_with};

backend_tests!(
    health_reports_the_process_and_the_database,
    public_health_shows_no_paths_or_ids,
    unknown_paths_and_methods_get_json_errors,
    http2_is_served,
    slow_headers_are_cut_off,
    idle_connections_are_closed_after_the_keep_alive_timeout,
    the_http_limits_hold_on_the_mcp_endpoints,
    slow_bodies_get_408,
    a_refusal_before_the_body_is_read_says_the_connection_closes,
    an_unreachable_bucket_makes_the_server_unready,
    shutdown_drains_requests_in_flight_and_flushes_token_use,
    a_drain_before_shutdown_takes_the_server_out_of_rotation,
    the_signing_secret_is_generated_once_and_reused,
);

async fn health_reports_the_process_and_the_database(backend: Backend) {
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    let app = spawn_app(backend).await;
    let res = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"]["status"], "ok");
    assert_eq!(body["storage"]["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    // The details are for the server's own machine (this test's client is on loopback).
    let res = app
        .request(Method::GET, "/health?verbose")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["database"]["backend"], expected);
    assert!(body["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(body["storage"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        body["storage"]["backend"],
        if crate::helpers::test_s3_endpoint().is_some() {
            "s3"
        } else {
            "local"
        }
    );
    assert!(body["uptime_secs"].is_u64(), "{body}");
    assert!(body["sandbox"]["layers"].is_object(), "{body}");
}

/// Anyone may ask `/health`: it says ready or not and why in words, never where the server keeps
/// its data, which programs its sandbox runs, or which user ids. The details go to the server's
/// own machine and its trusted proxies only.
async fn public_health_shows_no_paths_or_ids(backend: Backend) {
    for sandbox_works in [true, false] {
        let app = spawn_app_with(backend.clone(), |s| {
            s.rate_limits.trusted_proxies = vec!["127.0.0.1".into()];
            if !sandbox_works {
                s.sandbox.bwrap = "/nonexistent/bwrap".into();
            }
        })
        .await;
        let verbose: Value = app
            .request(Method::GET, "/health?verbose=1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let uid = verbose["sandbox"]["layers"]["run_as_uid"].to_string();
        for path in ["/health", "/health/ready"] {
            // As a client on the internet reaches it, through the trusted proxy.
            let res = app
                .request(Method::GET, path)
                .header("x-forwarded-for", "203.0.113.9")
                .send()
                .await
                .unwrap();
            let text = res.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap();
            assert!(!text.contains('/'), "a path in {path}: {text}");
            assert!(!text.contains(app.data_dir.to_str().unwrap()), "{text}");
            assert!(uid == "null" || !text.contains(&uid), "the uid in {text}");
            for detail in [
                "layers",
                "backend",
                "latency_ms",
                "uptime_secs",
                "bwrap",
                "helper",
            ] {
                assert!(!text.contains(detail), "{detail} in {path}: {text}");
            }
            assert_eq!(
                body["sandbox"]["ready"], verbose["sandbox"]["ready"],
                "{text}"
            );
            if verbose["sandbox"]["ready"] == false {
                let reason = body["sandbox"]["reason"].as_str().unwrap();
                assert!(reason.contains("commands cannot run"), "{reason}");
            }
            // The details are refused to that client...
            let res = app
                .request(Method::GET, &format!("{path}?verbose"))
                .header("x-forwarded-for", "203.0.113.9")
                .send()
                .await
                .unwrap();
            expect_error(res, StatusCode::FORBIDDEN, "health-details-forbidden").await;
        }
        // ...and shown to the server's own machine (and the proxy asking for itself).
        assert!(verbose["sandbox"]["layers"].is_object(), "{verbose}");
        if !sandbox_works {
            let why = verbose["sandbox"]["reason"].as_str().unwrap();
            assert!(why.contains("/nonexistent/bwrap"), "{why}");
        }
    }
}

async fn unknown_paths_and_methods_get_json_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    expect_error(
        app.request(Method::GET, "/nope").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "no-route",
    )
    .await;
    expect_error(
        app.request(Method::GET, "/api/v1/users/me/")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "no-route",
    )
    .await;
    let res = app
        .request(Method::PATCH, "/api/v1/users/me")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "GET, PUT, DELETE");
    expect_error(res, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
    let res = app
        .request(Method::GET, "/api/v1/auth/login")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "POST");
    expect_error(res, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
}

async fn http2_is_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .post(app.url("/api/v1/auth/register"))
        .json(&serde_json::json!({"email": "h2@example.com", "username": "h2user", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // The protocol is told by the first bytes: an HTTP/1 request that begins like the HTTP/2
    // preface ("P"), and pauses there, is still HTTP/1.
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
        .write_all(b"OST /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
}

async fn slow_headers_are_cut_off(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.server.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server must close the connection (EOF) instead of waiting for the rest forever.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
    // So is one that stops inside the HTTP/2 preface.
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a partial preface held the connection for 10 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    // A normal client is still served.
    assert_eq!(
        app.request(Method::GET, "/health")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// Sends one request on `stream` and reads its whole response (it has a `Content-Length`).
async fn round_trip(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no answer in 10 s")
            .unwrap();
        assert!(n > 0, "closed before the response ended");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("a content-length")
                .parse()
                .unwrap();
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

async fn idle_connections_are_closed_after_the_keep_alive_timeout(backend: Backend) {
    // The idle timeout is longer than the header timeout: they are separate limits.
    let app = spawn_app_with(backend, |s| {
        s.server.header_read_timeout_secs = 1;
        s.server.keep_alive_idle_secs = 3;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    assert!(
        round_trip(&mut stream, "/health/live")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Idle for longer than the header timeout: still open, and the next request is served.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(
        round_trip(&mut stream, "/health/live")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Then idle for longer than the keep-alive timeout: the server closes it (EOF).
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "an idle connection was still open after 15 s");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        idle_from.elapsed() >= Duration::from_millis(2500),
        "closed before the idle timeout"
    );

    // A request in flight longer than both timeouts is not idle: an event stream that the
    // server writes to only every few seconds stays open.
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "laptop").await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));
    let open = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if stream.read(&mut chunk).await.unwrap() == 0 {
                break;
            }
        }
    })
    .await;
    assert!(open.is_err(), "the event stream was closed as idle");
}

async fn the_http_limits_hold_on_the_mcp_endpoints(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.server.body_read_timeout_secs = 1;
        s.server.max_json_body_bytes = 4096;
        // Longer than the body timeout, so a slow body is that one's 408, never a 503.
        s.server.request_timeout_secs = 2;
        s.mcp.sse_keep_alive_secs = 1;
    })
    .await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "laptop").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // A legacy session, whose message endpoint is limited like /mcp.
    let mut sse = TcpStream::connect(&addr).await.unwrap();
    let open = format!(
        "GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    sse.write_all(open.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    let messages = loop {
        let n = sse.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        if let Some(line) = seen.lines().find(|l| l.starts_with("data: /messages")) {
            break line.trim_start_matches("data: ").to_owned();
        }
    };
    let opened = Instant::now();

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(8192)
    );
    for path in ["/mcp", messages.as_str()] {
        // Larger than the JSON limit: 413.
        let res = app
            .request(Method::POST, path)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        // A body that does not arrive in time: 408.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\":"
        );
        let text = first_answer(&addr, head.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
    }

    // The event stream outlives the request timeout (2 s), kept alive by comments: read what it
    // sent meanwhile (however long the steps above took on a busy machine) until two comments
    // have come and the timeout is well past.
    let comments = |seen: &str| seen.lines().filter(|l| l.starts_with(':')).count();
    while comments(&seen) < 2 || opened.elapsed() < Duration::from_millis(3500) {
        assert!(
            opened.elapsed() < Duration::from_secs(30),
            "no keep-alive comments: {seen}"
        );
        let Ok(read) = tokio::time::timeout(Duration::from_millis(500), sse.read(&mut chunk)).await
        else {
            continue;
        };
        let n = read.unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    // A 503 would show as a second status line; the session id (hex) may hold "503" itself.
    assert_eq!(seen.matches("HTTP/1.1 ").count(), 1, "{seen}");
}

/// Sends `request` on a new connection and returns the first bytes the server answers.
async fn first_answer(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("no answer in 10 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn slow_bodies_get_408(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.server.body_read_timeout_secs = 1).await;
    let text = first_answer(
        app.base.trim_start_matches("http://"),
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body-timeout"), "{text}");
}

async fn shutdown_drains_requests_in_flight_and_flushes_token_use(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (id, token) = app.api_token(&ann, "laptop").await;
    app.mcp_status(&token).await;
    // A request in flight: headers sent, body half sent.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let body = format!(
        r#"{{"email":"{}","password":"{}"}}"#,
        ann.email, ann.password
    );
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    // Let the server start on it before the stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = app.begin_stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused once the listener is closed.
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "still accepting after shutdown began"
    );
    // The request in flight completes.
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stopped")
        .unwrap();
    // The last use was flushed at shutdown (the flush interval is 30 s, so only the shutdown did it).
    let user_id = uuid::Uuid::parse_str(&ann.id).unwrap();
    let tokens = app
        .state
        .store
        .list_api_tokens(user_id, store::now())
        .await
        .unwrap();
    let used = tokens.iter().find(|t| t.id.to_string() == id).unwrap();
    assert!(
        used.last_used_at.is_some(),
        "last_used_at was not flushed at shutdown"
    );
}

async fn the_signing_secret_is_generated_once_and_reused(backend: Backend) {
    let mut first = spawn_app(backend.clone()).await;
    let path = first.data_dir.join("secret_key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(&path).unwrap();
    assert!(secret.trim().len() >= 64);
    let ann = first.user("ann").await;
    first.stop().await;
    let data_dir = first.data_dir.clone();
    let url = first.settings.database.url.clone();
    let second = spawn_app_with(backend, |s| {
        s.server.data_dir = data_dir;
        s.database.url = url;
    })
    .await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), secret);
    // Tokens signed before the restart still verify.
    assert_eq!(
        second
            .get_auth("/api/v1/users/me", &ann.access)
            .await
            .status(),
        StatusCode::OK
    );
}

/// PostgreSQL only: the database vanishes under a running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_503_when_the_database_is_gone() {
    let Some(Backend::Postgres(admin)) = Backend::postgres() else {
        eprintln!("TEST_DATABASE_URL is not set: not run");
        return;
    };
    let app = spawn_app(Backend::Postgres(admin.clone())).await;
    assert_eq!(
        app.request(Method::GET, "/health")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let url = app.settings.database.url.clone().unwrap();
    let name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    let res = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["database"]["status"], "unavailable");
    // Requests that need the database fail cleanly, not with a hang.
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        app.login("ann@example.com", "password-123"),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut seen = std::collections::HashSet::new();
    for path in ["/health", "/health", "/nope", "/api/v1/users/me"] {
        let res = app.request(Method::GET, path).send().await.unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(!id.is_empty() && id.len() <= 64, "{id}");
        assert!(seen.insert(id.clone()), "ids repeat: {id}");
    }
    // A caller's own id (a plain token) is kept, so it can follow its request; anything else is
    // replaced.
    let res = app
        .request(Method::GET, "/health")
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-42.a_b");
    for bad in ["has space", "x".repeat(65).as_str(), "semi;colon"] {
        let res = app
            .request(Method::GET, "/health")
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        assert_ne!(res.headers()["x-request-id"], bad);
    }
}

#[tokio::test]
async fn cors_answers_only_listed_origins() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.cors_allowed_origins = vec!["https://app.example.com".to_owned()];
    })
    .await;
    let vary = |res: &reqwest::Response| {
        res.headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    };
    // A listed origin: its own origin back (never *), no credentials, Vary: Origin.
    let res = app
        .request(Method::GET, "/health")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        res.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    assert!(vary(&res));
    // Another origin: nothing reflected.
    for other in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "null",
    ] {
        let res = app
            .request(Method::GET, "/health")
            .header("origin", other)
            .send()
            .await
            .unwrap();
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{other}"
        );
        assert!(vary(&res), "{other}");
    }
    // Preflight: answered for a listed origin, refused for another.
    let res = app
        .request(Method::OPTIONS, "/api/v1/skills")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(vary(&res));
    let res = app
        .request(Method::OPTIONS, "/api/v1/skills")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // The listed origin may call /mcp too; without the list it would be refused there.
    let res = app
        .request(Method::POST, "/mcp")
        .header("origin", "https://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .request(Method::POST, "/mcp")
        .header("origin", "https://app.example.com")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "past the Origin check, to auth"
    );
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn without_a_cors_list_nothing_is_allowed() {
    let app = spawn_app(Backend::Sqlite).await;
    let res = app
        .request(Method::GET, "/health")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let res = app
        .request(Method::OPTIONS, "/api/v1/skills")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn connections_are_capped_per_address() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.max_connections_per_ip = 2).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Whether the server closed a fresh connection at once (refused) rather than waiting for a
    // request on it (admitted).
    async fn refused(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
    let mut admitted = Vec::new();
    let mut saw_refusal = false;
    for _ in 0..6 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        if refused(&mut stream).await {
            saw_refusal = true;
        } else {
            admitted.push(stream);
        }
    }
    assert!(saw_refusal, "no connection was refused");
    assert!(admitted.len() <= 2, "{} admitted", admitted.len());
    // Places come back when connections close.
    drop(admitted);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Each request in progress may hold an answer as large as `mcp.max_answer_bytes`, so an HTTP/2
/// connection is told how many it may have at once (`SETTINGS_MAX_CONCURRENT_STREAMS`), as
/// HTTP/1.1 allows one: `server.http2_max_concurrent_streams`, 64 unless set.
#[tokio::test]
async fn http2_connections_have_a_bounded_number_of_streams() {
    for (setting, expected) in [(None, 64u32), (Some(7), 7)] {
        let app = spawn_app_with(Backend::Sqlite, |s| {
            if let Some(streams) = setting {
                s.server.http2_max_concurrent_streams = streams;
            }
        })
        .await;
        let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .unwrap();
        // The client preface, then an empty SETTINGS frame.
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        // The server's first frame is its SETTINGS: 9 bytes of header (length, type, flags,
        // stream), then 6 bytes per setting (identifier, value).
        let announced = loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.unwrap();
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.unwrap();
            let (kind, ack) = (head[3], head[4] & 1 == 1);
            if kind == 4 && !ack {
                break payload.chunks(6).find_map(|entry| {
                    (u16::from_be_bytes([entry[0], entry[1]]) == 3)
                        .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
                });
            }
        };
        assert_eq!(announced, Some(expected), "setting {setting:?}");
    }
}

/// The value of one sample line of a Prometheus text exposition (`name{labels}`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_move_when_the_service_is_used() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limits.login_per_ip_per_minute = 2;
    })
    .await;
    let metrics = || async {
        let res = app.request(Method::GET, "/metrics").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        res.text().await.unwrap()
    };
    app.request(Method::GET, "/health").send().await.unwrap();
    app.request(Method::GET, "/health").send().await.unwrap();
    let text = metrics().await;
    assert!(
        sample(
            &text,
            "agentskills_http_requests_total{route=\"health\",status=\"200\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "agentskills_http_request_duration_seconds_count{route=\"health\"}"
        )
        .is_some_and(|n| n >= 2.0)
    );
    assert!(sample(&text, "agentskills_db_connections_max").is_some_and(|n| n >= 1.0));
    assert_eq!(sample(&text, "agentskills_mcp_sessions"), Some(0.0));

    // A user (one login), a second login, then a third over the limit.
    let ann = app.user("ann").await;
    app.login(&ann.email, &ann.password).await;
    let refused = app.login(&ann.email, &ann.password).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let (_, token) = app.api_token(&ann, "agent").await;
    app.request(Method::GET, "/api/v1/skills")
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    // An MCP session with its stream open (legacy SSE), and one sandboxed command.
    let stream = app
        .request(Method::GET, "/sse")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let text = metrics().await;
    assert_eq!(
        sample(&text, "agentskills_rate_limited_total{limit=\"login_ip\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "agentskills_mcp_sessions"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "agentskills_mcp_streams"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "agentskills_workspace_actors").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    drop(stream);

    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "run_shell_command", "arguments": {"skill_name": "none", "command": "true"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}});
    // An unknown skill is refused before the sandbox: no run counted.
    app.request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "run_shell_command")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let text = metrics().await;
    assert!(!text.contains("agentskills_sandbox_runs_total{"), "{text}");
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let app = spawn_app(Backend::Sqlite).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let send = |request: String| {
        let addr = addr.clone();
        async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = send(format!(
        "GET /health HTTP/1.1\r\nhost: localhost\r\n{many}\r\n"
    ))
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let big = "v".repeat(70 * 1024);
    let answer = send(format!(
        "GET /health HTTP/1.1\r\nhost: localhost\r\nx-big: {big}\r\n\r\n"
    ))
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let answer =
        send("GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n".into()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn live_and_ready_are_told_apart() {
    // No sandbox here: alive, and the API works, but not ready to serve every tool.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.sandbox.bwrap = String::new();
    })
    .await;
    let live = app
        .request(Method::GET, "/health/live")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let health = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app
        .request(Method::GET, "/health/ready")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["sandbox"]["ready"], false, "{body}");
    assert_eq!(body["database"]["status"], "ok", "{body}");
}

/// An OAuth client's first request is a token-less `POST /mcp`, refused before its body is read;
/// hyper cannot use that connection again, so the answer must say so, or the client's next
/// request (discovery, on the same connection) goes into a closed socket.
async fn a_refusal_before_the_body_is_read_says_the_connection_closes(backend: Backend) {
    let app = spawn_app(backend).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    for request in [
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n",
        "POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40\r\n\r\n",
        "POST /api/v1/skills HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let answer = first_answer(&addr, request.as_bytes())
            .await
            .to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 4"), "{answer}");
        assert!(
            answer.contains("\r\nconnection: close\r\n"),
            "{request}: {answer}"
        );
    }
    // A request without a body keeps its connection: two answers on one.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 401"), "{answer}");
        assert!(!answer.contains("connection: close"), "{answer}");
    }
}

/// A bucket that does not answer (here: nothing listens on its port) makes `/health` and
/// `/health/ready` 503, saying which part is down; the details name the error.
async fn an_unreachable_bucket_makes_the_server_unready(backend: Backend) {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let app = spawn_app_with(backend, |s| {
        s.storage.backend = agentskills_mcp::config::StorageBackend::S3;
        s.storage.s3.endpoint = Some(format!("http://127.0.0.1:{closed}"));
        s.storage.s3.bucket = Some("nowhere".into());
    })
    .await;
    for path in ["/health", "/health/ready"] {
        let res = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["database"]["status"], "ok");
        assert_eq!(body["storage"]["status"], "unavailable");
        assert!(body["storage"]["reason"].is_string(), "{body}");
        assert!(
            !body.to_string().contains(&closed.to_string()),
            "no address: {body}"
        );
    }
    let body: Value = app
        .request(Method::GET, "/health?verbose")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["storage"]["error"].is_string(), "{body}");
    assert_eq!(body["storage"]["backend"], "s3");
}

/// With `server.shutdown_drain_secs`, a stop first serves on for that long, unready and closing
/// each HTTP/1 connection after its response, so a load balancer's health checks take the
/// replica out before it stops listening; then it stops as without a drain.
async fn a_drain_before_shutdown_takes_the_server_out_of_rotation(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| {
        s.server.shutdown_drain_secs = 2;
        s.sandbox.mode = agentskills_mcp::config::SandboxMode::Off;
    })
    .await;
    let ready = app
        .request(Method::GET, "/health/ready")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready.headers().get("connection").is_none());
    let stopped = app.begin_stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Still listening and answering, but not ready, and each connection closes after its answer.
    let ready = app
        .request(Method::GET, "/health/ready")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.headers()["connection"], "close");
    let live = app
        .request(Method::GET, "/health/live")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.headers()["connection"], "close");
    // Then it stops.
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stopped after the drain")
        .unwrap();
    assert!(
        app.request(Method::GET, "/health/live")
            .send()
            .await
            .is_err()
    );
}
