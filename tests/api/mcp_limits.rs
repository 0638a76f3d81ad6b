//! What one MCP client may make the server hold: batches (none from protocol 2025-06-18 on, at
//! most `mcp.max_batch_messages` before), the bytes of one answer and of a batch's answer
//! (`mcp.max_answer_bytes`), and the bytes of answers waiting on a user's legacy event streams
//! (`mcp.max_queued_bytes`). Every refusal names the setting and its value.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, spawn_app, spawn_app_with};

backend_tests!(
    batches_follow_the_sessions_protocol_version,
    legacy_sessions_follow_the_version_their_initialize_agreed_on,
    answers_over_the_cap_are_replaced_by_errors_naming_it,
    a_batch_stops_running_once_its_answer_is_full,
);

/// The code of every refusal because a limit of this server was reached.
const LIMIT_REACHED: i64 = -32090;
const ACCEPT: &str = "application/json, text/event-stream";

fn initialize(version: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "tests", "version": "1.0"}}
    })
}

fn ping(id: usize) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
}

fn read_file(id: usize, file: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "read_reference_file", "arguments": {"skill_name": "big", "file_name": file}}})
}

/// Ann with a skill `big` holding `files`, and an API token.
async fn ann_with_files(app: &TestApp, files: &[(&str, &[u8])]) -> (TestUser, String) {
    let ann = app.user("ann").await;
    let mut all: Vec<(&str, &[u8])> = vec![(
        "SKILL.md",
        b"---\nname: big\ndescription: Large files.\n---\n# Big\n",
    )];
    all.extend_from_slice(files);
    app.upload_skill(&ann, &all).await;
    let (_, token) = app.api_token(&ann, "agent").await;
    (ann, token)
}

/// `n` bytes of plain text (nothing JSON must escape).
fn text(n: usize) -> Vec<u8> {
    b"0123456789abcdef"
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// A Streamable HTTP session.
struct Session<'a> {
    app: &'a TestApp,
    token: String,
    id: String,
}

impl<'a> Session<'a> {
    async fn open(app: &'a TestApp, token: &str, version: &str) -> Session<'a> {
        let res = app
            .request(Method::POST, "/mcp")
            .bearer_auth(token)
            .header("accept", ACCEPT)
            .json(&initialize(version))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let id = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        Session {
            app,
            token: token.to_owned(),
            id,
        }
    }

    async fn post(&self, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let res = self
            .app
            .request(Method::POST, "/mcp")
            .bearer_auth(&self.token)
            .header("accept", ACCEPT)
            .header("mcp-session-id", &self.id)
            .json(body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let text = res.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}

/// Asserts `error` is the refusal of a limit: the code, the setting and its value, in `data` and
/// in the message.
fn assert_limit(error: &Value, setting: &str, max: usize) {
    assert_eq!(error["code"], LIMIT_REACHED, "{error}");
    assert_eq!(
        error["data"],
        json!({"limit": setting, "max": max}),
        "{error}"
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{setting} = {max}")),
        "the message does not name the limit: {message}"
    );
}

async fn batches_follow_the_sessions_protocol_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_files(&app, &[]).await;
    for version in ["2025-06-18", "2025-11-25"] {
        let session = Session::open(&app, &token, version).await;
        let (status, _, body) = session.post(&json!([ping(1), ping(2)])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{version}: {body}");
        assert_eq!(body["error"]["code"], -32600);
        assert_eq!(
            body["error"]["message"],
            "batches were removed in protocol 2025-06-18; send one message per POST"
        );
        // A batch of one is a batch too; one message on its own is answered.
        let (status, _, _) = session.post(&json!([ping(3)])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, body) = session.post(&ping(4)).await;
        assert_eq!((status, &body["result"]), (StatusCode::OK, &json!({})));
    }
    for version in ["2024-11-05", "2025-03-26"] {
        let session = Session::open(&app, &token, version).await;
        let full: Vec<Value> = (0..32).map(ping).collect();
        let (status, _, body) = session.post(&Value::Array(full.clone())).await;
        assert_eq!(status, StatusCode::OK, "{version}: {body}");
        let answers = body.as_array().unwrap();
        assert_eq!(answers.len(), 32);
        assert!(answers.iter().all(|a| a["result"] == json!({})), "{body}");
        let mut over = full;
        over.push(ping(32));
        let (status, _, body) = session.post(&Value::Array(over)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{version}: {body}");
        assert_eq!(body["error"]["code"], -32600);
        assert_eq!(
            body["error"]["data"],
            json!({"limit": "mcp.max_batch_messages", "max": 32})
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("mcp.max_batch_messages = 32"),
            "{body}"
        );
    }
    // The cap is the setting's.
    let app = spawn_app_with(Backend::Sqlite, |s| s.mcp.max_batch_messages = 2).await;
    let (_, token) = ann_with_files(&app, &[]).await;
    let session = Session::open(&app, &token, "2025-03-26").await;
    let (status, _, _) = session.post(&json!([ping(1), ping(2)])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = session.post(&json!([ping(1), ping(2), ping(3)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["data"]["max"], 2);
}

/// A legacy `/sse` stream, read event by event.
struct Legacy {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    endpoint: String,
}

impl Legacy {
    async fn open(app: &TestApp, token: &str) -> Legacy {
        let res = app
            .request(Method::GET, "/sse")
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut legacy = Legacy {
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
            endpoint: String::new(),
        };
        let (event, endpoint) = legacy.next().await;
        assert_eq!(event, "endpoint");
        legacy.endpoint = endpoint;
        legacy
    }

    /// The next event as (event name, data).
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue;
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
                return (event, data);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("an event within 20 s")
                .expect("the stream is open")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn message(&mut self) -> Value {
        let (event, data) = self.next().await;
        assert_eq!(event, "message");
        serde_json::from_str(&data).unwrap()
    }
}

/// Posts to a legacy session's endpoint.
async fn post_legacy(
    app: &TestApp,
    token: &str,
    endpoint: &str,
    body: &Value,
) -> (StatusCode, HeaderMap, Value) {
    let res = app
        .request(Method::POST, endpoint)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let text = res.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn legacy_sessions_follow_the_version_their_initialize_agreed_on(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_files(&app, &[]).await;
    // The Python SDK's SSE client initializes with its newest version: no batches then.
    let mut modern = Legacy::open(&app, &token).await;
    let endpoint = modern.endpoint.clone();
    let (status, _, _) = post_legacy(&app, &token, &endpoint, &initialize("2025-06-18")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        modern.message().await["result"]["protocolVersion"],
        "2025-06-18"
    );
    let (status, _, body) = post_legacy(&app, &token, &endpoint, &json!([ping(1), ping(2)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], -32600);
    assert_eq!(
        body["error"]["message"],
        "batches were removed in protocol 2025-06-18; send one message per POST"
    );
    let (status, _, _) = post_legacy(&app, &token, &endpoint, &ping(3)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(modern.message().await["id"], 3, "nothing of the batch ran");

    // A session that agreed on 2024-11-05 takes batches up to the cap, answered as one array.
    let mut old = Legacy::open(&app, &token).await;
    let endpoint = old.endpoint.clone();
    post_legacy(&app, &token, &endpoint, &initialize("2024-11-05")).await;
    assert_eq!(
        old.message().await["result"]["protocolVersion"],
        "2024-11-05"
    );
    let batch: Vec<Value> = (0..32).map(ping).collect();
    let (status, _, _) = post_legacy(&app, &token, &endpoint, &Value::Array(batch.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let answers = old.message().await;
    assert_eq!(answers.as_array().map(Vec::len), Some(32), "{answers}");
    let mut over = batch;
    over.push(ping(32));
    let (status, _, body) = post_legacy(&app, &token, &endpoint, &Value::Array(over)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"]["data"],
        json!({"limit": "mcp.max_batch_messages", "max": 32})
    );
    let (status, _, _) = post_legacy(&app, &token, &endpoint, &json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty batch");
}

const SMALL_CAP: usize = 64 * 1024;

async fn answers_over_the_cap_are_replaced_by_errors_naming_it(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.mcp.max_answer_bytes = SMALL_CAP).await;
    let big = text(100 * 1024);
    let small = text(1000);
    let (_, token) = ann_with_files(&app, &[("big.md", &big), ("small.md", &small)]).await;
    let session = Session::open(&app, &token, "2025-06-18").await;
    // A tool reports the failure as its result, which the model reads.
    let (status, _, body) = session.post(&read_file(1, "big.md")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], 1);
    assert_eq!(body["result"]["isError"], true, "{body}");
    let said = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(said.contains("mcp.max_answer_bytes = 65536"), "{said}");
    let (_, _, body) = session.post(&read_file(2, "small.md")).await;
    assert_eq!(
        body["result"]["content"][0]["text"]
            .as_str()
            .map(str::as_bytes),
        Some(&small[..])
    );
    // Other methods get a JSON-RPC error.
    let read = json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read",
        "params": {"uri": "skill://big/big.md"}});
    let (status, _, body) = session.post(&read).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], 3);
    assert_limit(&body["error"], "mcp.max_answer_bytes", SMALL_CAP);

    // So do requests without a session (2026-07-28), with their protocol's HTTP status.
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let stateless = |method: &str, name: &str, params: Value| {
        let mut params = params;
        params["_meta"] = meta.clone();
        app.request(Method::POST, "/mcp")
            .bearer_auth(&token)
            .header("accept", ACCEPT)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .header("mcp-name", name)
            .json(&json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}))
            .send()
    };
    let res = stateless(
        "resources/read",
        "skill://big/big.md",
        json!({"uri": "skill://big/big.md"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert_limit(&body["error"], "mcp.max_answer_bytes", SMALL_CAP);
    let res = stateless(
        "tools/call",
        "read_reference_file",
        json!({"name": "read_reference_file", "arguments": {"skill_name": "big", "file_name": "big.md"}}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["result"]["isError"], true, "{body}");
    assert_eq!(body["result"]["resultType"], "complete");
}

async fn a_batch_stops_running_once_its_answer_is_full(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.mcp.max_answer_bytes = SMALL_CAP).await;
    let part = text(20 * 1024);
    let (_, token) = ann_with_files(&app, &[("part.md", &part)]).await;
    let session = Session::open(&app, &token, "2025-03-26").await;
    // Three answers of 20 KiB fit in 64 KiB, a fourth does not; what comes after it is not run,
    // which an unknown method shows: run, it would be -32601.
    let batch = json!([
        read_file(1, "part.md"),
        read_file(2, "part.md"),
        read_file(3, "part.md"),
        read_file(4, "part.md"),
        {"jsonrpc": "2.0", "id": 5, "method": "no/such/method"},
        ping(6),
        // Not a request at all: its own error, full or not.
        {"jsonrpc": "1.0", "id": 7, "method": "ping"},
    ]);
    let (status, _, body) = session.post(&batch).await;
    assert_eq!(status, StatusCode::OK);
    let answers = body.as_array().unwrap();
    assert_eq!(answers.len(), 7, "{body}");
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer["id"], n + 1);
    }
    for answer in &answers[..3] {
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    let said = |answer: &Value| answer["error"]["message"].as_str().unwrap().to_owned();
    assert_limit(&answers[3]["error"], "mcp.max_answer_bytes", SMALL_CAP);
    assert!(
        said(&answers[3]).starts_with("this request ran"),
        "{}",
        said(&answers[3])
    );
    for answer in &answers[4..6] {
        assert_limit(&answer["error"], "mcp.max_answer_bytes", SMALL_CAP);
        assert!(said(answer).starts_with("not run"), "{answer}");
    }
    assert_eq!(answers[6]["error"]["code"], -32600);
    let answered: usize = answers[..3].iter().map(|a| a.to_string().len()).sum();
    assert!(answered <= SMALL_CAP);
}

// ---- Memory: the real server process ----

/// The real binary on a data dir of its own (SQLite), killed when dropped.
struct Process {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    async fn start() -> Process {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"))
            .env_clear()
            .env("AGENTSKILLS_SCRYPT_LOG_N", "4")
            .env("AGENTSKILLS_SANDBOX", "off")
            .env("AGENTSKILLS_LOG", "info")
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            // No ./config.toml from the source tree: the defaults are what is measured.
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Killed by `Drop` however the start goes.
        let mut process = Process {
            child,
            base: String::new(),
            _dir: dir,
        };
        for _ in 0..400 {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(at) = logged.find("listening on http://") {
                process.base = logged[at + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// A field of `/proc/<pid>/status`, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }
}

/// The attack of the finding: one small POST, a batch of reads of one large file. On the code
/// before the limits, each answer was built in memory before any was sent (32 reads of an 8 MiB
/// file: hundreds of MiB, and the 64 KiB body cap allowed about 400 reads). Now the batch's answer
/// stops at `mcp.max_answer_bytes` (16 MiB by default) and the rest of the batch does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_large_reads_keeps_the_servers_memory_bounded() {
    let server = Process::start().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |path: &str| format!("{}{path}", server.base);
    let res = client
        .post(url("/api/v1/auth/register"))
        .json(&json!({"email": "ann@example.com", "username": "ann", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let tokens: Value = client
        .post(url("/api/v1/auth/login"))
        .json(&json!({"email": "ann@example.com", "password": "password-123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let file = text(8 * 1024 * 1024);
    let boundary = "limitsBoundary";
    let mut body = Vec::new();
    for (path, data) in [
        (
            "SKILL.md",
            &b"---\nname: big\ndescription: Large files.\n---\n"[..],
        ),
        ("big.md", &file[..]),
    ] {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path}\"\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let res = client
        .post(url("/api/v1/skills/upload"))
        .bearer_auth(access)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    let created: Value = client
        .post(url("/api/v1/tokens"))
        .bearer_auth(access)
        .json(&json!({"name": "agent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap();
    let res = client
        .post(url("/mcp"))
        .bearer_auth(token)
        .header("accept", ACCEPT)
        .json(&initialize("2025-03-26"))
        .send()
        .await
        .unwrap();
    let session = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    // One read first, so that what a single answer costs is in the baseline.
    let res = client
        .post(url("/mcp"))
        .bearer_auth(token)
        .header("accept", ACCEPT)
        .header("mcp-session-id", &session)
        .json(&read_file(0, "big.md"))
        .send()
        .await
        .unwrap();
    let one: Value = res.json().await.unwrap();
    assert_eq!(
        one["result"]["content"][0]["text"].as_str().map(str::len),
        Some(file.len())
    );
    drop(one);

    let rss_before = server.status_kib("VmRSS");
    let peak_before = server.status_kib("VmHWM");
    let batch = Value::Array((1..=32).map(|id| read_file(id, "big.md")).collect());
    let res = client
        .post(url("/mcp"))
        .bearer_auth(token)
        .header("accept", ACCEPT)
        .header("mcp-session-id", &session)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let answer = res.bytes().await.unwrap();
    let rss_after = server.status_kib("VmRSS");
    let peak_after = server.status_kib("VmHWM");
    let growth = peak_after.saturating_sub(rss_before);
    eprintln!(
        "a batch of 32 reads of an 8 MiB file: VmRSS {rss_before} KiB before, {rss_after} KiB after; \
         VmHWM {peak_before} KiB before, {peak_after} KiB after; peak growth {growth} KiB; answer {} bytes",
        answer.len()
    );
    let answers: Vec<Value> = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answers.len(), 32);
    assert_eq!(
        answers[0]["result"]["content"][0]["text"]
            .as_str()
            .map(str::len),
        Some(file.len())
    );
    let max = 16 * 1024 * 1024;
    assert_limit(&answers[1]["error"], "mcp.max_answer_bytes", max);
    for answer in &answers[2..] {
        assert_limit(&answer["error"], "mcp.max_answer_bytes", max);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("not run")
        );
    }
    assert!(
        answer.len() < max,
        "the batch's answer is {} bytes",
        answer.len()
    );
    // The answer (8 MiB), the file being read and the reply being built: tens of MiB at most,
    // where the 32 answers of the whole batch took hundreds.
    assert!(
        growth < 128 * 1024,
        "the server's resident memory grew by {growth} KiB for one batch"
    );
}

// ---- The bytes queued on legacy event streams ----

/// Asks a legacy session for `part.md` under the ids `*next`, `*next + 1`, … until the user's
/// queued bytes are spent: every ask before is accepted; returns the refusal (429), with `*next`
/// the refused id.
async fn fill_until_refused(
    app: &TestApp,
    token: &str,
    endpoint: &str,
    next: &mut usize,
) -> (HeaderMap, Value) {
    for _ in 0..200 {
        let (status, headers, body) =
            post_legacy(app, token, endpoint, &read_file(*next, "part.md")).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (headers, body);
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        *next += 1;
    }
    panic!("200 answers of 100 KiB were queued and none refused");
}

/// The bytes a `mcp.max_queued_bytes` refusal says the user's streams held when it was made.
fn queued_at_refusal(error: &Value) -> usize {
    let message = error["message"].as_str().unwrap_or_default();
    let held = message
        .split_once("event streams hold ")
        .and_then(|(_, rest)| rest.split_once(' '))
        .and_then(|(bytes, _)| bytes.parse().ok());
    held.unwrap_or_else(|| panic!("the refusal does not say what is held: {message}"))
}

/// A legacy `/sse` client over a raw socket with a small receive buffer, so that it can stop
/// reading (and the server's writes then stop soon after).
struct RawStream {
    socket: tokio::net::TcpStream,
    endpoint: String,
    /// Everything read so far.
    read: Vec<u8>,
}

impl RawStream {
    async fn open(app: &TestApp, token: &str) -> RawStream {
        let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut socket = socket.connect(addr).await.unwrap();
        socket
            .write_all(
                format!(
                    "GET /sse HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut stream = RawStream {
            socket,
            endpoint: String::new(),
            read: Vec::new(),
        };
        while !String::from_utf8_lossy(&stream.read).contains("\n\n") {
            stream.read_some().await;
        }
        let text = String::from_utf8_lossy(&stream.read).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let at = text.find("/messages?session_id=").unwrap();
        stream.endpoint = text[at..at + "/messages?session_id=".len() + 64].to_owned();
        stream
    }

    async fn read_some(&mut self) -> usize {
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(20), self.socket.read(&mut buf))
            .await
            .expect("bytes within 20 s")
            .unwrap();
        self.read.extend_from_slice(&buf[..n]);
        n
    }

    fn messages(&self) -> usize {
        String::from_utf8_lossy(&self.read)
            .matches("event: message\n")
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_client_that_does_not_read_is_refused_until_it_does() {
    const ANSWER_CAP: usize = 256 * 1024;
    const QUEUE_CAP: usize = 512 * 1024;
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.mcp.max_answer_bytes = ANSWER_CAP;
        s.mcp.max_queued_bytes = QUEUE_CAP;
    })
    .await;
    let (ann, token) = ann_with_files(&app, &[("part.md", &text(100 * 1024))]).await;
    let user: uuid::Uuid = ann.id.parse().unwrap();

    // A client that never reads its stream: its answers pile up until the user's budget is
    // spent, and then its POSTs are refused with the limit named.
    let mut stalled = RawStream::open(&app, &token).await;
    let mut accepted = 0;
    let (headers, refusal) =
        fill_until_refused(&app, &token, &stalled.endpoint, &mut accepted).await;
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(refusal["id"], accepted, "{refusal}");
    assert_limit(&refusal["error"], "mcp.max_queued_bytes", QUEUE_CAP);
    // At the refusal the budget was all but spent: another answer of 100 KiB would not fit.
    let queued = queued_at_refusal(&refusal["error"]);
    assert!(
        queued <= QUEUE_CAP && queued > QUEUE_CAP - 110 * 1024,
        "{refusal}"
    );
    // (Read now, the count may be lower: the connection may since have handed more of the
    // stalled stream's answers to the kernel, whose send buffer on loopback can grow to MiBs.)
    assert!(app.state.sessions.queued_bytes(user) <= QUEUE_CAP);

    // The budget is the user's: another of their sessions, read at once, is refused as well.
    // (The kernel may take a little more of the stalled stream's answers into its socket
    // buffers meanwhile, which gives some budget back: then the stalled stream is filled again
    // and the reader tries once more. The reader alone, which reads each answer at once, could
    // never be refused: a refusal shows the budget is shared.)
    let mut reader = Legacy::open(&app, &token).await;
    let mut tries = 0;
    let body = loop {
        let (status, _, body) = post_legacy(
            &app,
            &token,
            &reader.endpoint,
            &read_file(900 + tries, "part.md"),
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break body;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(reader.message().await["id"], 900 + tries);
        tries += 1;
        assert!(tries < 10, "the reader's session was never refused");
        fill_until_refused(&app, &token, &stalled.endpoint, &mut accepted).await;
    };
    assert_limit(&body["error"], "mcp.max_queued_bytes", QUEUE_CAP);
    // Another user's is not.
    let bob = app.user("bob").await;
    app.upload_skill(
        &bob,
        &[("SKILL.md", b"---\nname: big\ndescription: Bob's.\n---\n")],
    )
    .await;
    let (_, bob_token) = app.api_token(&bob, "agent").await;
    let mut bobs = Legacy::open(&app, &bob_token).await;
    let (status, _, _) = post_legacy(&app, &bob_token, &bobs.endpoint, &ping(1)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(bobs.message().await["id"], 1);

    // Once the stalled client reads everything, the budget is back.
    while stalled.messages() < accepted {
        stalled.read_some().await;
    }
    assert_eq!(app.state.sessions.queued_bytes(user), 0);
    let (status, _, body) =
        post_legacy(&app, &token, &reader.endpoint, &read_file(1001, "part.md")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(reader.message().await["id"], 1001);

    // A client that stops reading and goes away: its stream ends, and what it held is given back.
    let gone = RawStream::open(&app, &token).await;
    let mut id = 2000;
    fill_until_refused(&app, &token, &gone.endpoint, &mut id).await;
    assert!(id < 2200);
    // Closed with answers unread, which the kernel tells the server with a reset.
    drop(gone);
    let started = std::time::Instant::now();
    while app.state.sessions.queued_bytes(user) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} bytes stayed charged after the stream ended",
            app.state.sessions.queued_bytes(user)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, body) =
        post_legacy(&app, &token, &reader.endpoint, &read_file(3000, "part.md")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(reader.message().await["id"], 3000);
}
