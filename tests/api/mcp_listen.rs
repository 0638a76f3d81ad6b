//! MCP 2026-07-28 `subscriptions/listen` at `/mcp`: the POST's answer is an event stream that
//! stays open; the acknowledgement comes first, then the notifications the filter asks for, each
//! tagged with the listen request's id; the stream ends when its token is revoked, its account
//! deleted or the server stops (with the request's result), and a token holds at most
//! `mcp.max_listen_streams_per_token` of them.
//!
//! Whether a stream heard nothing is checked without waiting for silence: a change's notifications
//! are queued on every stream before the request that made the change is answered, so a stream
//! that the server ends afterwards shows all it was sent before its last message.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, spawn_app, spawn_app_with};

backend_tests!(
    a_stream_hears_its_users_changes_through_its_filter,
    the_stream_ends_when_its_token_or_account_goes_or_the_server_stops,
    a_token_holds_a_limited_number_of_streams,
    listen_requests_are_checked,
);

const VERSION: &str = "2026-07-28";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

fn listen_request(id: Value, notifications: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        },
        "notifications": notifications,
    }})
}

/// Posts a `subscriptions/listen` with the headers a 2026-07-28 client sends.
async fn post_listen(app: &TestApp, token: &str, body: &Value, accept: &str) -> reqwest::Response {
    app.request(Method::POST, "/mcp")
        .bearer_auth(token)
        .header("accept", accept)
        .header("content-type", "application/json")
        .header("mcp-protocol-version", VERSION)
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// An open listen stream, read message by message.
struct Listen {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    /// The first message.
    ack: Value,
}

impl Listen {
    /// Opens a stream and reads its acknowledgement, which it checks.
    async fn open(app: &TestApp, token: &str, id: Value, notifications: Value) -> Listen {
        let body = listen_request(id.clone(), notifications);
        let res = post_listen(app, token, &body, "application/json, text/event-stream").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["x-accel-buffering"], "no");
        let mut stream = Listen {
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
            ack: Value::Null,
        };
        let ack = stream.message().await.expect("an acknowledgement");
        assert_eq!(
            ack["method"], "notifications/subscriptions/acknowledged",
            "the first message: {ack}"
        );
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], id, "{ack}");
        stream.ack = ack;
        stream
    }

    /// The next message; `None` when the stream has ended.
    async fn message(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue; // a keep-alive comment
                }
                assert!(block.starts_with("event: message\n"), "{block:?}");
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return Some(serde_json::from_str(&data.join("\n")).unwrap());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("a message or the end within 20 s")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        }
    }

    /// What the stream holds until it ends: the messages after the acknowledgement, the last
    /// being the listen request's result.
    async fn rest(mut self) -> Vec<Value> {
        let mut rest = Vec::new();
        while let Some(message) = self.message().await {
            rest.push(message);
        }
        rest
    }
}

/// The result that ends stream `id` when the server ends it.
fn ended(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id,
        "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID: id}}})
}

async fn revoke(app: &TestApp, user: &TestUser, token_id: &str) {
    let res = app
        .delete_auth(&format!("/api/v1/tokens/{token_id}"), &user.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_stream_hears_its_users_changes_through_its_filter(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (ann_token_id, ann_token) = app.api_token(&ann, "agent").await;
    let bob = app.user("bob").await;
    let (bob_token_id, bob_token) = app.api_token(&bob, "agent").await;

    let mut resources = Listen::open(
        &app,
        &ann_token,
        json!("sub-1"),
        json!({"resourcesListChanged": true}),
    )
    .await;
    let prompts_only = Listen::open(
        &app,
        &ann_token,
        json!(2),
        json!({"promptsListChanged": true}),
    )
    .await;
    let bobs = Listen::open(
        &app,
        &bob_token,
        json!("sub-1"),
        json!({"resourcesListChanged": true}),
    )
    .await;
    assert_eq!(app.state.listen.len(), 3);

    app.upload_skill(
        &ann,
        &[("SKILL.md", b"---\nname: pdf\ndescription: PDFs.\n---\n")],
    )
    .await;
    let note = resources.message().await.unwrap();
    assert_eq!(
        note,
        json!({"jsonrpc": "2.0", "method": "notifications/resources/list_changed",
            "params": {"_meta": {SUBSCRIPTION_ID: "sub-1"}}})
    );
    // A change made in another way (a REST update) is heard the same way.
    let res = app
        .request(Method::POST, "/api/v1/skills")
        .bearer_auth(&ann.access)
        .json(&json!({"name": "docx", "description": "Word."}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(resources.message().await.unwrap(), note);

    // Ended by the server, each stream shows everything it was sent: the stream that asked for
    // prompts only, and Bob's, heard nothing of Ann's changes.
    revoke(&app, &bob, &bob_token_id).await;
    assert_eq!(bobs.rest().await, [ended(json!("sub-1"))]);
    revoke(&app, &ann, &ann_token_id).await;
    assert_eq!(prompts_only.rest().await, [ended(json!(2))]);
    assert_eq!(resources.rest().await, [ended(json!("sub-1"))]);
    assert_eq!(app.state.listen.len(), 0);
}

async fn the_stream_ends_when_its_token_or_account_goes_or_the_server_stops(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (first_id, first) = app.api_token(&ann, "first").await;
    let (_, second) = app.api_token(&ann, "second").await;
    let filter = json!({"resourcesListChanged": true});
    let revoked = Listen::open(&app, &first, json!(1), filter.clone()).await;
    let survivor = Listen::open(&app, &second, json!(1), filter.clone()).await;
    revoke(&app, &ann, &first_id).await;
    assert_eq!(revoked.rest().await, [ended(json!(1))]);
    assert_eq!(app.state.listen.len(), 1, "another token's stream goes on");
    let res = post_listen(
        &app,
        &first,
        &listen_request(json!(2), filter.clone()),
        "text/event-stream",
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let res = app
        .request(Method::DELETE, "/api/v1/users/me")
        .bearer_auth(&ann.access)
        .json(&json!({"password": ann.password, "confirm": "DELETE MY ACCOUNT"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(survivor.rest().await, [ended(json!(1))]);

    let bob = app.user("bob").await;
    let (_, token) = app.api_token(&bob, "agent").await;
    let open = Listen::open(&app, &token, json!("s"), filter).await;
    let stopped = app.begin_stop();
    assert_eq!(open.rest().await, [ended(json!("s"))]);
    // Well inside the 30 s grace period an open stream would otherwise have held it.
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stopped")
        .unwrap();
}

async fn a_token_holds_a_limited_number_of_streams(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.mcp.max_listen_streams_per_token = 2;
        // A stream whose client went away is noticed when a keep-alive fails to go out.
        s.mcp.sse_keep_alive_secs = 1;
    })
    .await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "agent").await;
    let (_, other) = app.api_token(&ann, "other").await;
    let filter = json!({"resourcesListChanged": true});
    let first = Listen::open(&app, &token, json!(1), filter.clone()).await;
    let _second = Listen::open(&app, &token, json!(2), filter.clone()).await;
    let res = post_listen(
        &app,
        &token,
        &listen_request(json!(3), filter.clone()),
        "application/json, text/event-stream",
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], 3, "{body}");
    assert_eq!(body["error"]["code"], -32090, "{body}");
    assert_eq!(
        body["error"]["data"],
        json!({"limit": "mcp.max_listen_streams_per_token", "max": 2})
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mcp.max_listen_streams_per_token = 2"),
        "{body}"
    );
    // Another token of the same user has its own count.
    let _elsewhere = Listen::open(&app, &other, json!(1), filter.clone()).await;
    // A client that goes away gives its place back.
    drop(first);
    wait_for("the closed stream kept its place", || {
        app.state.listen.len() == 2
    })
    .await;
    let _third = Listen::open(&app, &token, json!(3), filter).await;
}

async fn listen_requests_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "agent").await;

    // Declared without a session, since a listen stream delivers it; nothing else is.
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .header("mcp-method", "server/discover")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            }}}),
        )
        .send()
        .await
        .unwrap();
    let discovered: Value = res.json().await.unwrap();
    let capabilities = &discovered["result"]["capabilities"];
    assert_eq!(capabilities["resources"], json!({"listChanged": true}));
    assert_eq!(capabilities["tools"], json!({}));
    assert_eq!(capabilities["prompts"], json!({}));

    // What the server honors is acknowledged; the rest is left out.
    let everything = Listen::open(
        &app,
        &token,
        json!(1),
        json!({"resourcesListChanged": true, "toolsListChanged": true,
            "promptsListChanged": true, "resourceSubscriptions": ["skill://pdf/SKILL.md"]}),
    )
    .await;
    assert_eq!(
        everything.ack["params"]["notifications"],
        json!({"resourcesListChanged": true})
    );
    drop(everything);

    // No filter, or a wrong one: -32602.
    for (id, body) in [
        (5, {
            let mut body = listen_request(json!(5), json!({}));
            body["params"]
                .as_object_mut()
                .unwrap()
                .remove("notifications");
            body
        }),
        (
            6,
            listen_request(json!(6), json!({"resourcesListChanged": "yes"})),
        ),
    ] {
        let res = post_listen(&app, &token, &body, "application/json, text/event-stream").await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["id"], id, "{body}");
        assert_eq!(body["error"]["code"], -32602, "{body}");
    }
    // A client that takes only JSON cannot be given a stream.
    let res = post_listen(
        &app,
        &token,
        &listen_request(json!(7), json!({"resourcesListChanged": true})),
        "application/json",
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_ACCEPTABLE);
    // The routing headers must name the method, as for every 2026-07-28 request.
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .header("mcp-method", "tools/list")
        .body(listen_request(json!(8), json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], -32020);

    // A session has its GET stream instead: there the method does not exist.
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    let session = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .json(
            &json!({"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
            "params": {"notifications": {"resourcesListChanged": true}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], -32601);
}
