//! Several replicas on one PostgreSQL database and one blob store: what one replica changes, the
//! others serve and announce, revoked credentials stop everywhere, and changes made at once on
//! two replicas are all kept.
//!
//! The replicas' periodic checks (`tokens.sync_interval_secs`, the backstop) are set to an hour
//! here, so that what reaches the other replica within the tests' deadlines can only have come
//! by the database's announcements (`NOTIFY`). The deadlines are generous (ten seconds) and no
//! time is asserted: `tests/replicas/run.sh` measures the second the issue asks for.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestUser, spawn_app_with, spawn_replica};
use crate::replica_tests;
use crate::skills::upload;

replica_tests!(
    an_upload_on_one_replica_is_served_and_announced_by_another,
    a_token_revoked_on_one_replica_is_refused_and_its_stream_ended_by_another,
    changes_made_at_once_on_two_replicas_are_all_kept,
    an_account_deleted_on_one_replica_is_forgotten_by_another,
    a_session_opened_on_one_replica_is_used_on_another,
    the_session_cap_holds_across_replicas,
    a_legacy_message_on_the_wrong_replica_says_to_reconnect,
);

const DEADLINE: Duration = Duration::from_secs(10);

/// Two replicas whose only way to hear of each other's changes is the database's announcements.
async fn two_replicas(backend: Backend) -> (TestApp, TestApp) {
    two_replicas_with(backend, |_| {}).await
}

async fn two_replicas_with(
    backend: Backend,
    tweak: impl Fn(&mut agentskills_mcp::config::Settings),
) -> (TestApp, TestApp) {
    let quiet = |settings: &mut agentskills_mcp::config::Settings, replica: &str| {
        settings.tokens.sync_interval_secs = 3600;
        settings.skills.keep_versions = 100;
        // Each replica may be storing blobs the other has no row for yet.
        settings.storage.sweep_grace_secs = 3600;
        settings.server.replica_id = Some(replica.to_owned());
        tweak(settings);
    };
    let one = spawn_app_with(backend, |s| quiet(s, "r1")).await;
    let two = spawn_replica(&one, |s| quiet(s, "r2")).await;
    (one, two)
}

/// Polls `check` until it holds or the deadline passes; returns how long it took.
async fn within<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            let took = started.elapsed();
            eprintln!("{what}: {} ms", took.as_millis());
            return took;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn skill_md(name: &str, body: &str) -> String {
    format!("---\nname: {name}\ndescription: The {name} skill.\n---\n# {name}\n\n{body}\n")
}

/// An MCP session on one replica, spoken as plain HTTP.
struct Session<'a> {
    app: &'a TestApp,
    token: String,
    id: String,
    next: i64,
}

impl<'a> Session<'a> {
    async fn open(app: &'a TestApp, token: &str) -> Session<'a> {
        let res = app
            .request(Method::POST, "/mcp")
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "tests", "version": "1"}}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let id = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let session = Session {
            app,
            token: token.to_owned(),
            id,
            next: 1,
        };
        let res = session
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        session
    }

    async fn post(&self, body: &Value) -> reqwest::Response {
        self.app
            .request(Method::POST, "/mcp")
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-06-18")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A tool's text and whether it is an error.
    async fn tool(&mut self, name: &str, arguments: Value) -> (String, bool) {
        let id = self.next;
        self.next += 1;
        let res = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": name, "arguments": arguments}}))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        let text = body["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text: {body}"))
            .to_owned();
        (text, body["result"]["isError"] == true)
    }

    /// The session's `GET` stream.
    async fn stream(&self) -> reqwest::Response {
        let res = self
            .app
            .request(Method::GET, "/mcp")
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-06-18")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res
    }
}

/// Reads `stream` until its text holds `needle`; fails at the deadline or if the stream ends.
async fn hear(stream: &mut reqwest::Response, needle: &str) {
    let heard = tokio::time::timeout(DEADLINE, async {
        let mut seen = Vec::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            seen.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&seen).contains(needle) {
                return;
            }
        }
        panic!("the stream ended: {}", String::from_utf8_lossy(&seen));
    })
    .await;
    assert!(heard.is_ok(), "the stream did not carry {needle} in time");
}

/// Reads `stream` until it ends (only keep-alives before that); fails at the deadline.
async fn ends(stream: &mut reqwest::Response) {
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            assert!(chunk.starts_with(b":"), "only keep-alives: {chunk:?}");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end in time");
}

/// A user made on `one` whose API token `two` accepts (after the announcement of its creation).
async fn user_on_both(one: &TestApp, two: &TestApp, name: &str) -> (TestUser, String, String) {
    let user = one.user(name).await;
    let (id, token) = one.api_token(&user, "agent").await;
    within("the new token accepted by the other replica", || async {
        two.mcp_status(&token).await == StatusCode::OK
    })
    .await;
    (user, id, token)
}

async fn an_upload_on_one_replica_is_served_and_announced_by_another(backend: Backend) {
    let (one, two) = two_replicas(backend).await;
    let (ann, _, token) = user_on_both(&one, &two, "ann").await;
    // A login on one replica works on the other: one secret, one database.
    let me = two.get_auth("/api/v1/users/me", &ann.access).await;
    assert_eq!(me.status(), StatusCode::OK);
    // Each is ready, hearing the other; its details name it.
    let health: Value = two
        .request(Method::GET, "/health/ready?verbose")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["listener"], json!({"status": "ok", "replica": "r2"}));

    let mut session = Session::open(&two, &token).await;
    let (text, error) = session.tool("load_skill_metadata", json!({})).await;
    assert!(!error, "{text}");
    assert!(!text.contains("pdf"), "{text}");
    let mut stream = session.stream().await;

    one.upload_skill(
        &ann,
        &[
            (
                "SKILL.md",
                skill_md("pdf", "Use scripts/run.py.").as_bytes(),
            ),
            ("scripts/run.py", b"print('one')\n"),
        ],
    )
    .await;
    hear(&mut stream, "notifications/resources/list_changed").await;
    // What the notification announced is what the next read serves.
    let (text, error) = session
        .tool("load_skill", json!({"skill_name": "pdf"}))
        .await;
    assert!(!error && text.contains("Use scripts/run.py."), "{text}");
    let (text, error) = session
        .tool(
            "read_reference_file",
            json!({"skill_name": "pdf", "file_name": "scripts/run.py"}),
        )
        .await;
    assert!(!error && text.contains("print('one')"), "{text}");

    // A change of content: the other replica's folder becomes the new version.
    let id = one.get_json("/api/v1/skills", &ann.access).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = upload(
        &one,
        &ann,
        &[
            ("skill_id", None, id.as_bytes()),
            ("files", Some("scripts/run.py"), b"print('two')\n"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    hear(&mut stream, "notifications/resources/list_changed").await;
    let (text, _) = session
        .tool(
            "read_reference_file",
            json!({"skill_name": "pdf", "file_name": "scripts/run.py"}),
        )
        .await;
    assert!(text.contains("print('two')"), "{text}");
    let files = two
        .get_auth(
            &format!("/api/v1/skills/{id}/files/scripts/run.py"),
            &ann.access,
        )
        .await;
    assert_eq!(files.text().await.unwrap(), "print('two')\n");
}

async fn a_token_revoked_on_one_replica_is_refused_and_its_stream_ended_by_another(
    backend: Backend,
) {
    let (one, two) = two_replicas(backend).await;
    let (ann, token_id, token) = user_on_both(&one, &two, "ann").await;
    let (_, kept) = one.api_token(&ann, "kept").await;
    within("the second token accepted by the other replica", || async {
        two.mcp_status(&kept).await == StatusCode::OK
    })
    .await;
    let session = Session::open(&two, &token).await;
    let mut stream = session.stream().await;
    let kept_session = Session::open(&two, &kept).await;

    let res = one
        .delete_auth(&format!("/api/v1/tokens/{token_id}"), &ann.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    within("the revoked token refused by the other replica", || async {
        two.mcp_status(&token).await == StatusCode::UNAUTHORIZED
    })
    .await;
    ends(&mut stream).await;
    // The other token and its session live on.
    let res = kept_session
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn changes_made_at_once_on_two_replicas_are_all_kept(backend: Backend) {
    let (one, two) = two_replicas(backend).await;
    let (ann, _, _) = user_on_both(&one, &two, "ann").await;
    let id = one
        .upload_skill(
            &ann,
            &[("SKILL.md", skill_md("notes", "Notes.").as_bytes())],
        )
        .await;
    // Both replicas have the skill loaded before the race.
    within("the skill listed by the other replica", || async {
        two.get_json("/api/v1/skills", &ann.access).await["total"] == 1
    })
    .await;
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        // Each replica adds a file of its own to the same skill at the same moment; a change
        // made from a stale copy of the skill would drop the other's file.
        let (a, b) = (format!("a{round}.txt"), format!("b{round}.txt"));
        let to_one = [
            ("skill_id", None, id.as_bytes()),
            ("files", Some(a.as_str()), a.as_bytes()),
        ];
        let to_two = [
            ("skill_id", None, id.as_bytes()),
            ("files", Some(b.as_str()), b.as_bytes()),
        ];
        let (first, second) =
            tokio::join!(upload(&one, &ann, &to_one), upload(&two, &ann, &to_two));
        assert_eq!(first.status(), StatusCode::CREATED, "round {round}");
        assert_eq!(second.status(), StatusCode::CREATED, "round {round}");
    }
    // Every change is a version, and the last holds every file, on both replicas.
    let mut want: Vec<String> = (0..ROUNDS)
        .flat_map(|r| [format!("a{r}.txt"), format!("b{r}.txt")])
        .collect();
    want.push("SKILL.md".to_owned());
    want.sort();
    for app in [&one, &two] {
        let versions = app
            .get_json(&format!("/api/v1/skills/{id}/versions"), &ann.access)
            .await;
        assert_eq!(versions["total"], 1 + 2 * ROUNDS, "{versions}");
        within("the last version's files served", || async {
            let list = app
                .get_json(&format!("/api/v1/skills/{id}/files"), &ann.access)
                .await;
            let mut paths: Vec<String> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap().to_owned())
                .collect();
            paths.sort();
            paths == want
        })
        .await;
    }
}

async fn an_account_deleted_on_one_replica_is_forgotten_by_another(backend: Backend) {
    let (one, two) = two_replicas(backend).await;
    let (ann, _, token) = user_on_both(&one, &two, "ann").await;
    one.upload_skill(&ann, &[("SKILL.md", skill_md("pdf", "PDFs.").as_bytes())])
        .await;
    let mut session = Session::open(&two, &token).await;
    let started = Instant::now();
    loop {
        let (text, error) = session
            .tool("load_skill", json!({"skill_name": "pdf"}))
            .await;
        if !error && text.contains("PDFs.") {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the skill was not served by the other replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = session.stream().await;
    let folder = two.data_dir.join("skills").join(&ann.id);
    assert!(folder.join("pdf").join("SKILL.md").exists());

    let res = one
        .request(Method::DELETE, "/api/v1/users/me")
        .bearer_auth(&ann.access)
        .json(&json!({"password": ann.password, "confirm": "DELETE MY ACCOUNT"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    ends(&mut stream).await;
    within(
        "the account's folder removed by the other replica",
        || async { !folder.exists() },
    )
    .await;
    within(
        "the deleted account's token refused by the other replica",
        || async { two.mcp_status(&token).await == StatusCode::UNAUTHORIZED },
    )
    .await;
}

async fn a_session_opened_on_one_replica_is_used_on_another(backend: Backend) {
    let (one, two) = two_replicas(backend).await;
    let (ann, _, token) = user_on_both(&one, &two, "ann").await;
    one.upload_skill(&ann, &[("SKILL.md", skill_md("pdf", "PDFs.").as_bytes())])
        .await;
    let mut on_one = Session::open(&one, &token).await;
    let (text, _) = on_one
        .tool("load_skill", json!({"skill_name": "pdf"}))
        .await;
    assert!(text.contains("PDFs."), "{text}");
    // The same session, its requests sent to the other replica.
    let mut on_two = Session {
        app: &two,
        token: token.clone(),
        id: on_one.id.clone(),
        next: 10,
    };
    let (text, error) = on_two
        .tool("load_skill", json!({"skill_name": "pdf"}))
        .await;
    assert!(!error && text.contains("PDFs."), "{text}");
    // Its stream may live on either; notifications any replica makes reach it.
    let mut stream = on_two.stream().await;
    one.upload_skill(&ann, &[("SKILL.md", skill_md("docx", "Word.").as_bytes())])
        .await;
    hear(&mut stream, "notifications/resources/list_changed").await;
    // Another credential of the same user cannot use it, on either replica.
    let (_, other) = one.api_token(&ann, "other").await;
    within("the second token accepted by the other replica", || async {
        two.mcp_status(&other).await == StatusCode::OK
    })
    .await;
    let intruder = Session {
        app: &two,
        token: other.clone(),
        id: on_one.id.clone(),
        next: 1,
    };
    let res = intruder
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // Ended on one replica, it ends on the other: its stream there closes, and it is gone.
    let res = one
        .request(Method::DELETE, "/mcp")
        .bearer_auth(&token)
        .header("mcp-session-id", &on_one.id)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    ends(&mut stream).await;
    for session in [&on_one, &on_two] {
        let res = session
            .post(&json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}))
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}

async fn the_session_cap_holds_across_replicas(backend: Backend) {
    let (one, two) = two_replicas_with(backend, |s| s.mcp.max_sessions_per_token = 2).await;
    let (_, _, token) = user_on_both(&one, &two, "ann").await;
    let oldest = Session::open(&one, &token).await;
    let mut stream = oldest.stream().await;
    let newer = Session::open(&two, &token).await;
    // A third, anywhere: the credential's least recently used session ends everywhere.
    let newest = Session::open(&two, &token).await;
    ends(&mut stream).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(oldest.post(&ping).await.status(), StatusCode::NOT_FOUND);
    let elsewhere = Session {
        app: &two,
        token: token.clone(),
        id: oldest.id.clone(),
        next: 1,
    };
    assert_eq!(elsewhere.post(&ping).await.status(), StatusCode::NOT_FOUND);
    for kept in [&newer, &newest] {
        assert_eq!(kept.post(&ping).await.status(), StatusCode::OK);
    }
}

async fn a_legacy_message_on_the_wrong_replica_says_to_reconnect(backend: Backend) {
    let (one, two) = two_replicas(backend).await;
    let (_, _, token) = user_on_both(&one, &two, "ann").await;
    let res = one
        .request(Method::GET, "/sse")
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res;
    let mut seen = String::new();
    let endpoint = tokio::time::timeout(DEADLINE, async {
        loop {
            let chunk = body.chunk().await.unwrap().expect("the endpoint event");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = seen.lines().find_map(|l| l.strip_prefix("data: ")) {
                return line.to_owned();
            }
        }
    })
    .await
    .expect("the endpoint event in time");
    // The id names the replica that holds the stream, for the load balancer to route by.
    let id = endpoint.split("session_id=").nth(1).unwrap().to_owned();
    assert!(id.starts_with("r1."), "{endpoint}");
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let here = one
        .request(Method::POST, &endpoint)
        .bearer_auth(&token)
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(here.status(), StatusCode::ACCEPTED);
    let there = two
        .request(Method::POST, &endpoint)
        .bearer_auth(&token)
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(there.status(), StatusCode::NOT_FOUND);
    let text = there.text().await.unwrap();
    assert!(
        text.contains("another server replica") && text.contains("GET /sse"),
        "{text}"
    );
}
