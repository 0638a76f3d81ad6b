//! The legacy HTTP+SSE transport: `GET /sse` and `POST /messages?session_id=…`.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, spawn_app, tool_names};

backend_tests!(
    the_stream_names_its_endpoint_and_carries_every_answer,
    messages_need_their_session_and_token,
    revoking_the_token_closes_the_stream,
    a_client_that_goes_away_ends_its_session,
    shutdown_ends_open_streams_at_once,
    skill_changes_reach_open_streams,
    a_read_only_token_runs_nothing_over_sse,
);

/// An open `/sse` stream, read event by event.
struct Stream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Stream {
    async fn open(app: &TestApp, token: &str) -> Stream {
        let res = app
            .request(Method::GET, "/sse")
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        Stream::from_response(res)
    }

    fn from_response(res: reqwest::Response) -> Stream {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Stream {
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event as (event name, data); `None` when the stream ends.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue; // a keep-alive comment
                }
                let event = block
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("message")
                    .to_owned();
                let data = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Some((event, data));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("an event within 20 s")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        }
    }

    async fn message(&mut self) -> Value {
        let (event, data) = self.next().await.expect("the stream is open");
        assert_eq!(event, "message");
        serde_json::from_str(&data).unwrap()
    }
}

async fn post(app: &TestApp, token: &str, endpoint: &str, body: &Value) -> StatusCode {
    app.request(Method::POST, endpoint)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

async fn user_with_token(app: &TestApp, name: &str) -> (crate::helpers::TestUser, String) {
    let user = app.user(name).await;
    let res = app
        .request(Method::POST, "/api/v1/skills")
        .bearer_auth(&user.access)
        .json(&json!({"name": "pdf", "description": format!("{name}'s PDFs.")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let (_, token) = app.api_token(&user, "sse").await;
    (user, token)
}

async fn the_stream_names_its_endpoint_and_carries_every_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = user_with_token(&app, "ann").await;
    let mut stream = Stream::open(&app, &token).await;
    let (event, endpoint) = stream.next().await.unwrap();
    assert_eq!(event, "endpoint");
    assert!(endpoint.starts_with("/messages?session_id="), "{endpoint}");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    assert_eq!(
        post(&app, &token, &endpoint, &init).await,
        StatusCode::ACCEPTED
    );
    let answer = stream.message().await;
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(
        post(
            &app,
            &token,
            &endpoint,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )
        .await,
        StatusCode::ACCEPTED
    );
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "load_skill_metadata", "arguments": {}}});
    assert_eq!(
        post(&app, &token, &endpoint, &call).await,
        StatusCode::ACCEPTED
    );
    let answer = stream.message().await;
    assert_eq!(answer["id"], 2);
    assert!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("- pdf: ann's PDFs."),
        "{answer}"
    );
    assert!(answer["result"].get("resultType").is_none());
    assert_eq!(
        post(
            &app,
            &token,
            &endpoint,
            &json!({"jsonrpc": "2.0", "id": 3, "method": "nope"})
        )
        .await,
        StatusCode::ACCEPTED
    );
    assert_eq!(stream.message().await["error"]["code"], -32601);
    let res = app
        .request(Method::POST, &endpoint)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], -32700);
}

async fn messages_need_their_session_and_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = user_with_token(&app, "ann").await;
    let (_, bob_token) = user_with_token(&app, "bob").await;
    let res = app.request(Method::GET, "/sse").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let mut stream = Stream::open(&app, &token).await;
    let (_, endpoint) = stream.next().await.unwrap();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(
        post(&app, &bob_token, &endpoint, &ping).await,
        StatusCode::NOT_FOUND,
        "another token"
    );
    assert_eq!(
        post(&app, &token, "/messages", &ping).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(
            &app,
            &token,
            &format!("/messages?session_id={}", "0".repeat(64)),
            &ping
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&app, "ask_live_nope", &endpoint, &ping).await,
        StatusCode::UNAUTHORIZED
    );
    // A Streamable HTTP session is not a legacy one.
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("accept", "application/json")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    let modern = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    assert_eq!(
        post(
            &app,
            &token,
            &format!("/messages?session_id={modern}"),
            &ping
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&app, &token, &endpoint, &ping).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(stream.message().await["result"], json!({}));
}

async fn revoking_the_token_closes_the_stream(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ann, token) = user_with_token(&app, "ann").await;
    let mut stream = Stream::open(&app, &token).await;
    let (_, endpoint) = stream.next().await.unwrap();
    assert_eq!(app.state.sessions.len(), 1);
    let tokens = app.get_json("/api/v1/tokens", &ann.access).await;
    let id = tokens["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.delete_auth(&format!("/api/v1/tokens/{id}"), &ann.access)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(
        stream.next().await.is_none(),
        "the stream stayed open after its token was revoked"
    );
    assert_eq!(
        post(
            &app,
            &token,
            &endpoint,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.state.sessions.len(), 0);
}

async fn a_client_that_goes_away_ends_its_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = user_with_token(&app, "ann").await;
    let mut stream = Stream::open(&app, &token).await;
    stream.next().await.unwrap();
    assert_eq!(app.state.sessions.len(), 1);
    drop(stream);
    let started = std::time::Instant::now();
    while !app.state.sessions.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the session outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shutdown_ends_open_streams_at_once(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let (_, token) = user_with_token(&app, "ann").await;
    let mut stream = Stream::open(&app, &token).await;
    stream.next().await.unwrap();
    let started = std::time::Instant::now();
    let stopped = app.begin_stop();
    assert!(
        stream.next().await.is_none(),
        "the stream outlived the shutdown"
    );
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stopped")
        .unwrap();
    // Well inside the 30 s grace period a stream would otherwise have held it.
    assert!(started.elapsed() < Duration::from_secs(10));
}

async fn skill_changes_reach_open_streams(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ann, token) = user_with_token(&app, "ann").await;
    let (_, bob_token) = user_with_token(&app, "bob").await;
    // A Streamable HTTP session and its GET stream.
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    let session = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let get = || {
        app.request(Method::GET, "/mcp")
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .send()
    };
    let mut modern = Stream::from_response(get().await.unwrap());
    assert_eq!(
        get().await.unwrap().status(),
        StatusCode::CONFLICT,
        "one stream per session"
    );
    // A legacy session of the same user, and one of another user.
    let mut legacy = Stream::open(&app, &token).await;
    legacy.next().await.unwrap();
    let mut bobs = Stream::open(&app, &bob_token).await;
    let (_, bob_endpoint) = bobs.next().await.unwrap();

    let res = app
        .request(Method::POST, "/api/v1/skills")
        .bearer_auth(&ann.access)
        .json(&json!({"name": "docx", "description": "Word."}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    for stream in [&mut modern, &mut legacy] {
        let note = stream.message().await;
        assert_eq!(
            note["method"], "notifications/resources/list_changed",
            "{note}"
        );
        assert!(note.get("id").is_none());
    }
    // Bob hears nothing of Ann's change: the next thing on his stream is his own answer.
    let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "ping"});
    assert_eq!(
        post(&app, &bob_token, &bob_endpoint, &ping).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(bobs.message().await["id"], 7);

    // Ending the session ends its stream; a new session may open one again.
    let res = app
        .request(Method::DELETE, "/mcp")
        .bearer_auth(&token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(modern.next().await.is_none());
}

/// A `skills:read` token over the legacy transport: the tool is not listed, and a call of it
/// is refused at the POST with 403 `insufficient_scope` (nothing reaches the stream).
async fn a_read_only_token_runs_nothing_over_sse(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ann, _) = user_with_token(&app, "ann").await;
    let reader = app.scoped_token(&ann, "reader", &["skills:read"]).await;
    let mut stream = Stream::open(&app, &reader).await;
    let (_, endpoint) = stream.next().await.unwrap();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    assert_eq!(
        post(&app, &reader, &endpoint, &list).await,
        StatusCode::ACCEPTED
    );
    let answer = stream.message().await;
    let names = tool_names(&answer);
    assert!(!names.contains(&"run_shell_command"), "{names:?}");
    let run = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "run_shell_command", "arguments": {"skill_name": "pdf", "command": "echo hi"}}});
    let res = app
        .request(Method::POST, &endpoint)
        .bearer_auth(&reader)
        .header("content-type", "application/json")
        .body(run.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], 2);
    // The stream goes on: the next answer on it is the next request's.
    let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
    assert_eq!(
        post(&app, &reader, &endpoint, &ping).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(stream.message().await["id"], 3);
}
