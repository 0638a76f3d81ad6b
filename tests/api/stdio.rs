//! `agentskills-mcp stdio`: MCP over standard input and output, for a plain folder and for a user.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::{Backend, spawn_app_with, tool_names};

/// The binary in stdio mode, talking lines.
struct StdioServer {
    child: Child,
    reader: BufReader<std::process::ChildStdout>,
}

impl StdioServer {
    fn start(args: &[&str], data_dir: Option<&std::path::Path>) -> StdioServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"));
        cmd.env_clear().arg("stdio").args(args);
        if let Some(dir) = data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        StdioServer { child, reader }
    }

    fn send(&mut self, message: &Value) -> Value {
        self.send_raw(&message.to_string())
    }

    fn send_raw(&mut self, line: &str) -> Value {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut reply = String::new();
        self.reader.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {reply:?}"))
    }

    fn notify(&mut self, message: &Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin and waits: the server ends when its input does.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

fn call(id: i64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

#[test]
fn a_plain_folder_is_served_with_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let skills = dir.path();
    std::fs::create_dir_all(skills.join("pdf/docs")).unwrap();
    std::fs::write(
        skills.join("pdf/SKILL.md"),
        "---\nname: pdf\ndescription: PDFs.\n---\n# PDF\n",
    )
    .unwrap();
    std::fs::write(skills.join("pdf/docs/guide.md"), "guide\n").unwrap();
    std::fs::create_dir_all(skills.join("alpha")).unwrap();
    std::fs::write(
        skills.join("alpha/SKILL.md"),
        "---\nname: alpha\ndescription: First.\n---\n",
    )
    .unwrap();
    let mut server = StdioServer::start(&["--skills-dir", skills.to_str().unwrap()], None);
    let init = server.send(&initialize());
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    server.notify(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let reply = server.send(&call(1, "load_skill_metadata", json!({})));
    assert_eq!(
        reply["result"]["content"][0]["text"],
        "Available skills (each line is \"- <skill_name>: <skill_description>\"):\n- alpha: First.\n- pdf: PDFs."
    );
    let reply = server.send(&call(
        2,
        "read_reference_file",
        json!({"skill_name": "pdf", "file_name": "docs/guide.md"}),
    ));
    assert_eq!(reply["result"]["content"][0]["text"], "guide\n");
    let reply = server.send(&call(
        3,
        "read_reference_file",
        json!({"skill_name": "pdf", "file_name": "../alpha/SKILL.md"}),
    ));
    assert_eq!(reply["result"]["isError"], true);
    let reply = server.send_raw("{not json");
    assert_eq!(reply["error"]["code"], -32700);
    let reply = server.send(&json!({"jsonrpc": "2.0", "id": 4, "method": "nope"}));
    assert_eq!(reply["error"]["code"], -32601);
    // Cancelling a request that is not running is ignored: nothing is written for it.
    server.notify(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 99, "reason": "changed my mind"}}),
    );
    let reply = server.send(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}));
    assert_eq!(reply, json!({"jsonrpc": "2.0", "id": 5, "result": {}}));
    // A skill added while it runs shows up.
    std::fs::create_dir_all(skills.join("zeta")).unwrap();
    std::fs::write(
        skills.join("zeta/SKILL.md"),
        "---\nname: zeta\ndescription: Late.\n---\n",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let reply = server.send(&call(6, "load_skill_metadata", json!({})));
    assert!(
        reply["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("- zeta: Late."),
        "{reply}"
    );
    server.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_serves_its_users_skills() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.data_dir = data.clone()).await;
    let ann = app.user("ann").await;
    let res = app
        .request(reqwest::Method::POST, "/api/v1/skills")
        .bearer_auth(&ann.access)
        .json(&json!({"name": "pdf", "description": "Ann's PDFs."}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let (_, token) = app.api_token(&ann, "stdio").await;
    let bob = app.user("bob").await;
    let (_, bob_token) = app.api_token(&bob, "stdio").await;
    // A blob the server is storing for a change it has not recorded yet, and a partial copy: a
    // reader beside the server must leave both alone (only the server collects).
    let pending = "ab".repeat(32);
    let folder = data.join("blobs").join(&ann.id).join("ab");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(&pending), b"pending").unwrap();
    std::fs::write(folder.join(format!("{pending}.partial-1")), b"pend").unwrap();

    let data_dir = data.clone();
    let (ann_text, bob_text) = tokio::task::spawn_blocking(move || {
        let mut ann = StdioServer::start(&["--token", &token], Some(&data_dir));
        ann.send(&initialize());
        let ann_text = ann.send(&call(1, "load_skill_metadata", json!({})))["result"]["content"][0]
            ["text"]
            .clone();
        // Time for the workspace to finish starting (a server's would collect now).
        std::thread::sleep(std::time::Duration::from_millis(300));
        ann.finish();
        let mut bob = StdioServer::start(&["--token", &bob_token], Some(&data_dir));
        bob.send(&initialize());
        let bob_text =
            bob.send(&call(1, "load_skill", json!({"skill_name": "pdf"})))["result"]["content"][0]
                ["text"]
                .clone();
        bob.finish();
        (ann_text, bob_text)
    })
    .await
    .unwrap();
    assert!(
        ann_text.as_str().unwrap().ends_with("- pdf: Ann's PDFs."),
        "{ann_text}"
    );
    assert_eq!(bob_text, "❌ Skill 'pdf' not found");
    assert_eq!(std::fs::read(folder.join(&pending)).unwrap(), b"pending");
    assert!(folder.join(format!("{pending}.partial-1")).exists());

    // A token that may read only: no run_shell_command listed, and a call of it says why.
    let reader = app.scoped_token(&ann, "reader", &["skills:read"]).await;
    let data_dir = data.clone();
    let (tools, refused) = tokio::task::spawn_blocking(move || {
        let mut ann = StdioServer::start(&["--token", &reader], Some(&data_dir));
        ann.send(&initialize());
        let tools = ann.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
        let refused = ann.send(&call(
            2,
            "run_shell_command",
            json!({"skill_name": "pdf", "command": "echo hi"}),
        ));
        ann.finish();
        (tools, refused)
    })
    .await
    .unwrap();
    let names = tool_names(&tools);
    assert_eq!(
        names,
        [
            "load_skill_metadata",
            "load_skill",
            "read_reference_file",
            "search_skills"
        ]
    );
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(
        refused["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("skills:run"),
        "{refused}"
    );

    // A token that is not one, or not any more.
    for bad in [
        format!("ask_live_{}", "0".repeat(64)),
        "nonsense".to_owned(),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"))
            .env_clear()
            .args(["stdio", "--token", &bad, "--data-dir"])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "nothing but protocol on stdout");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--token"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"))
        .env_clear()
        .arg("stdio")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "stdio needs --token or --skills-dir");
}

/// The batch rules of every transport: none once `initialize` agreed on 2025-06-18 or later, at
/// most `mcp.max_batch_messages` before; answers within `mcp.max_answer_bytes`.
#[test]
fn batches_and_answers_have_the_transports_limits() {
    let dir = tempfile::tempdir().unwrap();
    let skills = dir.path();
    std::fs::create_dir_all(skills.join("big")).unwrap();
    std::fs::write(
        skills.join("big/SKILL.md"),
        "---\nname: big\ndescription: Large files.\n---\n",
    )
    .unwrap();
    std::fs::write(skills.join("big/large.md"), "x".repeat(8000)).unwrap();
    let ping = |id: usize| json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
    let skills_dir = skills.to_str().unwrap();

    let mut modern = StdioServer::start(&["--skills-dir", skills_dir], None);
    modern.send(&initialize());
    let reply = modern.send(&json!([ping(1), ping(2)]));
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert_eq!(
        reply["error"]["message"],
        "batches were removed in protocol 2025-06-18; send one message per line"
    );
    modern.finish();

    let mut old = StdioServer::start(&["--skills-dir", skills_dir], None);
    let mut init = initialize();
    init["params"]["protocolVersion"] = json!("2025-03-26");
    old.send(&init);
    let reply = old.send(&Value::Array((0..32).map(ping).collect()));
    assert_eq!(reply.as_array().map(Vec::len), Some(32), "{reply}");
    let reply = old.send(&Value::Array((0..33).map(ping).collect()));
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert_eq!(
        reply["error"]["data"],
        json!({"limit": "mcp.max_batch_messages", "max": 32})
    );
    old.finish();

    // An answer over the cap is replaced by a result that names it.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"));
    cmd.env_clear()
        .env("AGENTSKILLS_MCP_MAX_ANSWER_BYTES", "4096")
        .args(["stdio", "--skills-dir", skills_dir]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut capped = StdioServer { child, reader };
    capped.send(&initialize());
    let reply = capped.send(&call(
        1,
        "read_reference_file",
        json!({"skill_name": "big", "file_name": "large.md"}),
    ));
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    assert!(
        reply["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("mcp.max_answer_bytes = 4096"),
        "{reply}"
    );
    capped.finish();
}

/// The binary in stdio mode, its output read on a thread of its own, so that a test can wait for
/// a message with a limit, and see the output end. Answers and notifications share the output:
/// [`StdioLines::call`] keeps the notifications that come before its answer for
/// [`StdioLines::notification`].
struct StdioLines {
    child: Child,
    messages: std::sync::mpsc::Receiver<Value>,
    notifications: std::collections::VecDeque<Value>,
}

impl StdioLines {
    fn start(args: &[&str], data_dir: Option<&std::path::Path>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"));
        cmd.env_clear()
            .envs(env.iter().copied())
            .arg("stdio")
            .args(args);
        if let Some(dir) = data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let line = line.unwrap();
                let message = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line:?}"));
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        StdioLines {
            child,
            messages,
            notifications: std::collections::VecDeque::new(),
        }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line, waited for at most 30 s (a change is looked for every 2 s).
    fn next(&self) -> Value {
        self.messages
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a message within 30 s")
    }

    /// Sends a request and waits for its answer.
    fn call(&mut self, request: &Value) -> Value {
        self.send(request);
        loop {
            let message = self.next();
            if message.get("method").is_none() {
                assert_eq!(message["id"], request["id"], "{message}");
                return message;
            }
            self.notifications.push_back(message);
        }
    }

    /// The next notification.
    fn notification(&mut self) -> Value {
        let message = self
            .notifications
            .pop_front()
            .unwrap_or_else(|| self.next());
        assert!(message.get("id").is_none(), "{message}");
        message
    }

    /// Closes the input; the notifications not yet taken and everything written after, until the
    /// server exits (successfully).
    fn finish(mut self) -> Vec<Value> {
        drop(self.child.stdin.take());
        let rest = self
            .notifications
            .drain(..)
            .chain(self.messages.iter())
            .collect();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        rest
    }
}

const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// A 2026-07-28 request: its version and capabilities in `_meta`, no `initialize` needed.
fn stateless(id: Value, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn listen(id: Value, notifications: Value) -> Value {
    stateless(
        id,
        "subscriptions/listen",
        json!({"notifications": notifications}),
    )
}

fn subscription(message: &Value) -> &Value {
    &message["params"]["_meta"][SUBSCRIPTION_ID]
}

/// Writes a skill into `skills` at once (made beside it, then renamed into place), as an editor
/// saving a folder would, so that the server never reads it half written.
fn add_skill(skills: &std::path::Path, name: &str) {
    let staging = skills.parent().unwrap().join(format!(".{name}.new"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(
        staging.join("SKILL.md"),
        format!("---\nname: {name}\ndescription: Late.\n---\n"),
    )
    .unwrap();
    std::fs::rename(&staging, skills.join(name)).unwrap();
}

/// `subscriptions/listen` on stdio: acknowledgements and notifications on standard output tagged
/// with their stream's id, the filter honored, at most `mcp.max_listen_streams_per_token` streams,
/// one ended by the client's `notifications/cancelled`, and the rest by the server's when the
/// input ends.
#[test]
fn listen_streams_on_stdio_hear_of_changes_through_their_filter() {
    let dir = tempfile::tempdir().unwrap();
    let skills = dir.path().join("skills");
    std::fs::create_dir_all(skills.join("pdf")).unwrap();
    std::fs::write(
        skills.join("pdf/SKILL.md"),
        "---\nname: pdf\ndescription: PDFs.\n---\n",
    )
    .unwrap();
    let mut server = StdioLines::start(
        &["--skills-dir", skills.to_str().unwrap()],
        None,
        &[("AGENTSKILLS_MCP_MAX_LISTEN_STREAMS_PER_TOKEN", "3")],
    );
    let resources = json!({"resourcesListChanged": true});
    server.send(&listen(json!("a"), resources.clone()));
    server.send(&listen(json!(2), json!({"promptsListChanged": true})));
    server.send(&listen(json!("c"), resources.clone()));
    // Each stream's first message is its acknowledgement (the streams' order is their own).
    let mut acks: Vec<Value> = (0..3).map(|_| server.notification()).collect();
    acks.sort_by_key(|ack| subscription(ack).to_string());
    for ack in &acks {
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        assert!(ack.get("id").is_none(), "a notification: {ack}");
    }
    assert_eq!(
        acks.iter().map(subscription).collect::<Vec<_>>(),
        [&json!("a"), &json!("c"), &json!(2)]
    );
    assert_eq!(acks[0]["params"]["notifications"], resources);
    assert_eq!(acks[2]["params"]["notifications"], json!({}));

    // A fourth is over the cap; an id already listening is refused too.
    let refused = server.call(&listen(json!("d"), resources.clone()));
    assert_eq!(refused["error"]["code"], -32090, "{refused}");
    assert_eq!(
        refused["error"]["data"],
        json!({"limit": "mcp.max_listen_streams_per_token", "max": 3})
    );
    let again = server.call(&listen(json!("a"), resources.clone()));
    assert_eq!(again["error"]["code"], -32600, "{again}");

    // The client ends "c". Lines are read in order: once the request after it is answered, the
    // cancellation has been handled.
    server.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": "c", "reason": "done"}}),
    );
    server.call(&stateless(json!(10), "tools/list", json!({})));

    add_skill(&skills, "zeta");
    let changed = server.notification();
    assert_eq!(
        changed,
        json!({"jsonrpc": "2.0", "method": "notifications/resources/list_changed",
            "params": {"_meta": {SUBSCRIPTION_ID: "a"}}})
    );
    let listed = server.call(&stateless(json!(11), "resources/list", json!({})));
    assert!(
        listed["result"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["uri"] == "skill://zeta/SKILL.md"),
        "{listed}"
    );

    // The input ends: the server ends the streams still open, each with `notifications/cancelled`
    // naming it; the one filtered to prompts heard nothing before, nor did the cancelled one.
    let mut rest = server.finish();
    rest.sort_by_key(|m| subscription(m).to_string());
    assert_eq!(rest.len(), 2, "{rest:?}");
    for (message, id) in rest.iter().zip([json!("a"), json!(2)]) {
        assert_eq!(
            *message,
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
                "requestId": id, "reason": "the server ended this subscription",
                "_meta": {SUBSCRIPTION_ID: id}}})
        );
    }
}

/// A stdio server for a user hears of changes made through the HTTP server beside it (same data
/// dir and database), tells its listen streams, and serves the skills as they now are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_on_stdio_hears_of_changes_made_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.data_dir = data.clone()).await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "stdio").await;
    let data_dir = data.clone();
    let mut server = tokio::task::spawn_blocking(move || {
        let mut server = StdioLines::start(&["--token", &token], Some(&data_dir), &[]);
        server.send(&listen(json!(1), json!({"resourcesListChanged": true})));
        let ack = server.notification();
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        // The skills as they were when it started listening.
        let listed = server.call(&stateless(json!(2), "resources/list", json!({})));
        assert_eq!(listed["result"]["resources"], json!([]));
        server
    })
    .await
    .unwrap();

    app.upload_skill(
        &ann,
        &[("SKILL.md", b"---\nname: pdf\ndescription: PDFs.\n---\n")],
    )
    .await;
    tokio::task::spawn_blocking(move || {
        let changed = |note: &Value| {
            note["method"] == "notifications/resources/list_changed" && *subscription(note) == 1
        };
        // A look may fall between the server's writing the skill's row and swapping its folder
        // in; the swap is then the next change heard. Either way the skill is served once heard.
        for _ in 0..5 {
            let note = server.notification();
            assert!(changed(&note), "{note}");
            let listed = server.call(&stateless(json!(3), "resources/list", json!({})));
            let uris = listed["result"]["resources"].as_array().unwrap().clone();
            if uris.iter().any(|r| r["uri"] == "skill://pdf/SKILL.md") {
                let rest = server.finish();
                let (last, before) = rest.split_last().unwrap();
                assert!(before.iter().all(changed), "{rest:?}");
                assert_eq!(last["method"], "notifications/cancelled");
                assert_eq!(last["params"]["requestId"], 1);
                return;
            }
        }
        panic!("the new skill was never served");
    })
    .await
    .unwrap();
}
