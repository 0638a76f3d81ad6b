//! MCP over Streamable HTTP at `/mcp`: lifecycle and sessions, transport rules, JSON-RPC errors,
//! the tools (the original four and search_skills), resources, and isolation between tokens and users.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, spawn_app, spawn_app_with, tool_names};

backend_tests!(
    initialize_opens_a_session_in_every_supported_version,
    sessions_are_required_and_end_on_delete,
    the_transport_checks_versions_accept_headers_and_origins,
    json_rpc_errors_have_the_right_codes,
    batches_are_answered_together,
    tools_are_listed_with_their_schemas,
    the_tools_answer_like_the_original_server,
    tool_failures_are_results_that_say_what_is_wrong,
    skill_files_are_resources,
    skill_names_and_paths_complete,
    a_token_reaches_only_its_own_users_skills,
    revoking_a_token_or_deleting_the_account_ends_its_sessions,
    at_the_session_cap_the_least_recently_used_session_ends,
    a_read_only_token_lists_and_reads_but_runs_nothing,
);

const ACCEPT: &str = "application/json, text/event-stream";

/// An MCP client speaking raw HTTP, so tests can send what real clients would not.
struct Mcp<'a> {
    app: &'a TestApp,
    token: String,
    session: Option<String>,
    next_id: i64,
}

impl<'a> Mcp<'a> {
    fn new(app: &'a TestApp, token: &str) -> Mcp<'a> {
        Mcp {
            app,
            token: token.to_owned(),
            session: None,
            next_id: 1,
        }
    }

    /// Initializes (with `version`) and sends `notifications/initialized`.
    async fn connect(app: &'a TestApp, token: &str, version: &str) -> Mcp<'a> {
        let mut mcp = Mcp::new(app, token);
        let (status, headers, body) = mcp.raw(&initialize(version), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        mcp.session = Some(headers["mcp-session-id"].to_str().unwrap().to_owned());
        let (status, _, _) = mcp
            .raw(
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        mcp
    }

    async fn raw(&self, body: &Value, extra: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
        self.raw_bytes(body.to_string().into_bytes(), extra).await
    }

    async fn raw_bytes(
        &self,
        body: Vec<u8>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self
            .app
            .request(Method::POST, "/mcp")
            .bearer_auth(&self.token)
            .header("content-type", "application/json");
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            req = req.header("accept", ACCEPT);
        }
        if let Some(session) = &self.session {
            req = req.header("mcp-session-id", session);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let res = req.body(body).send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, value)
    }

    /// Sends a request and returns its whole JSON-RPC response.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let (status, _, body) = self
            .raw(
                &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{method}: {body}");
        assert_eq!(body["id"], id, "{body}");
        // No version this server speaks has `resultType` in its results.
        assert!(body["result"].get("resultType").is_none(), "{body}");
        body
    }

    /// The text of a tool's result, and whether it is an error.
    async fn tool(&mut self, name: &str, arguments: Value) -> (String, bool) {
        let body = self
            .call("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        let result = &body["result"];
        assert!(result.is_object(), "{body}");
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text: {body}"))
            .to_owned();
        assert!(!text.is_empty(), "an empty tool result: {body}");
        (text, result["isError"] == true)
    }
}

fn initialize(version: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "tests", "version": "1.0"}}
    })
}

const PDF_MD: &str =
    "---\nname: pdf\ndescription: Work with PDF files.\n---\n# PDF\n\nRun scripts/convert.py.\n";
const DOCX_MD: &str =
    "---\nname: docx\ndescription: >\n  Word documents:\n  read and write.\n---\n# DOCX\n";

/// Ann with two skills (one with a subfolder) and an API token.
async fn ann_with_skills(app: &TestApp) -> (TestUser, String) {
    let ann = app.user("ann").await;
    app.upload_skill(
        &ann,
        &[
            ("SKILL.md", PDF_MD.as_bytes()),
            ("scripts/convert.py", b"print('pdf')\n"),
            ("reference.md", b"# Ref\n"),
            ("logo.bin", &[0xff, 0x00, 0xfe]),
        ],
    )
    .await;
    app.upload_skill(&ann, &[("SKILL.md", DOCX_MD.as_bytes())])
        .await;
    let (_, token) = app.api_token(&ann, "agent").await;
    (ann, token)
}

async fn initialize_opens_a_session_in_every_supported_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let mut seen = Vec::new();
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let mcp = Mcp::new(&app, &token);
        let (status, headers, body) = mcp.raw(&initialize(version), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
        assert!(
            session.len() >= 32 && session.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "{session}"
        );
        assert!(!seen.contains(&session));
        seen.push(session);
        assert_eq!(body["id"], 0);
        assert_eq!(body["result"]["protocolVersion"], version);
        assert_eq!(body["result"]["serverInfo"]["name"], "agentskills-mcp");
        assert!(body["result"]["capabilities"]["tools"].is_object());
        assert!(body["result"]["capabilities"]["resources"].is_object());
    }
    // A version this server does not speak: it offers its newest.
    let (status, _, body) = Mcp::new(&app, &token)
        .raw(&initialize("1999-01-01"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
    // initialize without what it needs.
    let bad =
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}});
    let (status, headers, body) = Mcp::new(&app, &token).raw(&bad, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("mcp-session-id").is_none());
    assert_eq!(body["error"]["code"], -32602);
}

async fn sessions_are_required_and_end_on_delete(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let mut mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    let pong = mcp.call("ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));
    // A request with no session.
    let anonymous = Mcp::new(&app, &token);
    let (status, _, body) = anonymous
        .raw(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}), &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["id"], 5);
    // An unknown session.
    let mut stranger = Mcp::new(&app, &token);
    stranger.session = Some("0".repeat(64));
    let (status, _, _) = stranger
        .raw(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A notification or a response gets 202 and no body.
    let (status, _, body) = mcp.raw(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}), &[]).await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, Value::Null));
    let (status, _, body) = mcp
        .raw(&json!({"jsonrpc": "2.0", "id": "s1", "result": {}}), &[])
        .await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, Value::Null));
    // DELETE ends it; afterwards it is unknown.
    let session = mcp.session.clone().unwrap();
    let res = app
        .request(Method::DELETE, "/mcp")
        .bearer_auth(&token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, _, _) = mcp
        .raw(&json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let res = app
        .request(Method::DELETE, "/mcp")
        .bearer_auth(&token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .request(Method::DELETE, "/mcp")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // A stream needs a session (the one just deleted is gone) and an event-stream Accept.
    let res = app
        .request(Method::GET, "/mcp")
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .request(Method::GET, "/mcp")
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .request(Method::PUT, "/mcp")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "POST, GET, DELETE");
}

async fn the_transport_checks_versions_accept_headers_and_origins(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.mcp.allowed_origins = vec!["https://app.example.com".to_owned()]
    })
    .await;
    let (_, token) = ann_with_skills(&app).await;
    let mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let (status, _, _) = mcp
        .raw(&ping, &[("mcp-protocol-version", "2025-06-18")])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = mcp
        .raw(&ping, &[("mcp-protocol-version", "2099-01-01")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["id"], 1, "the refusal names the request: {body}");
    // Only an event stream accepted: the answer comes as one SSE event.
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("mcp-session-id", mcp.session.as_deref().unwrap())
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(ping.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap()["result"],
        json!({})
    );
    let (status, _, _) = mcp.raw(&ping, &[("accept", "text/html")]).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    // Origins: absent passes, listed passes, anything else is 403.
    let (status, _, _) = mcp
        .raw(&ping, &[("origin", "https://app.example.com")])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = mcp.raw(&ping, &[("origin", "http://localhost:3000")]).await;
    assert_eq!(status, StatusCode::OK, "a loopback origin");
    for origin in [
        "https://evil.example",
        "http://app.example.com",
        "null",
        "http://localhost.evil.example",
    ] {
        let (status, _, _) = mcp.raw(&ping, &[("origin", origin)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
    }
    // A server on loopback answers only loopback host names (the test server listens on 127.0.0.1).
    for host in ["evil.example", "evil.example:80", "localhost.evil.example"] {
        let (status, _, _) = mcp.raw(&ping, &[("host", host)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}");
    }
    let (status, _, _) = mcp.raw(&ping, &[("host", "localhost:1234")]).await;
    assert_eq!(status, StatusCode::OK);
    // No token: 401 with WWW-Authenticate.
    let res = app
        .request(Method::POST, "/mcp")
        .body(ping.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

async fn json_rpc_errors_have_the_right_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let mut mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    let (status, _, body) = mcp
        .raw_bytes(
            b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ".to_vec(),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], -32700);
    assert_eq!(body["id"], Value::Null);
    let (status, _, body) = mcp
        .raw(&json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}), &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], -32600);
    let body = mcp.call("no/such/method", json!({})).await;
    assert_eq!(body["error"]["code"], -32601);
    let body = mcp.call("tools/call", json!({"arguments": {}})).await;
    assert_eq!(body["error"]["code"], -32602);
    let body = mcp
        .call(
            "tools/call",
            json!({"name": "no_such_tool", "arguments": {}}),
        )
        .await;
    assert_eq!(body["error"]["code"], -32602);
    let body = mcp.call("resources/read", json!({})).await;
    assert_eq!(body["error"]["code"], -32602);
    let body = mcp
        .call("resources/list", json!({"cursor": "not-a-cursor"}))
        .await;
    assert_eq!(body["error"]["code"], -32602);
    let body = mcp.call("logging/setLevel", json!({"level": "loud"})).await;
    assert_eq!(body["error"]["code"], -32602);
    let body = mcp
        .call("logging/setLevel", json!({"level": "warning"}))
        .await;
    assert_eq!(body["result"], json!({}));
    let body = mcp
        .call("initialize", initialize("2025-06-18")["params"].clone())
        .await;
    assert_eq!(
        body["error"]["code"], -32600,
        "a second initialize in one session"
    );
    // Every error says something.
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

async fn batches_are_answered_together(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let mcp = Mcp::connect(&app, &token, "2025-03-26").await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
        {"jsonrpc": "1.0", "id": "c", "method": "ping"}
    ]);
    let (status, _, body) = mcp.raw(&batch, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let answers = body.as_array().unwrap();
    assert_eq!(answers.len(), 3, "{body}");
    assert_eq!(answers[0]["id"], "a");
    assert_eq!(answers[1]["error"]["code"], -32601);
    assert_eq!(answers[2]["error"]["code"], -32600);
    let (status, _, body) = mcp
        .raw(
            &json!([{"jsonrpc": "2.0", "method": "notifications/initialized"}]),
            &[],
        )
        .await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, Value::Null));
    let (status, _, _) = mcp.raw(&json!([]), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn tools_are_listed_with_their_schemas(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let mut mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    let body = mcp.call("tools/list", json!({})).await;
    let tools = body["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "load_skill_metadata",
            "load_skill",
            "read_reference_file",
            "run_shell_command",
            "search_skills"
        ]
    );
    for tool in tools {
        assert!(
            tool["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{tool}"
        );
        assert_eq!(tool["inputSchema"]["type"], "object");
    }
    assert_eq!(tools[1]["inputSchema"]["required"], json!(["skill_name"]));
    assert_eq!(
        tools[2]["inputSchema"]["required"],
        json!(["skill_name", "file_name"])
    );
    assert_eq!(
        tools[3]["inputSchema"]["required"],
        json!(["skill_name", "command"])
    );
    let output = &tools[3]["outputSchema"];
    for field in ["exit_code", "stdout", "stderr", "timed_out", "truncated"] {
        assert!(output["properties"][field].is_object(), "{output}");
    }
    // Ours: the search, whose description says how it goes with load_skill_metadata.
    assert_eq!(tools[4]["inputSchema"]["required"], json!(["query"]));
    assert_eq!(
        tools[4]["inputSchema"]["properties"]["limit"]["maximum"],
        50
    );
    let description = tools[4]["description"].as_str().unwrap();
    assert!(description.contains("load_skill_metadata"), "{description}");
}

async fn the_tools_answer_like_the_original_server(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ann, token) = ann_with_skills(&app).await;
    app.upload_skill(
        &ann,
        &[(
            "SKILL.md",
            b"---\nname: archived\ndescription: Hidden when inactive.\n---\n",
        )],
    )
    .await;
    let list = app
        .get_json("/api/v1/skills?search=archived", &ann.access)
        .await;
    let archived = list["items"][0]["id"].as_str().unwrap().to_owned();
    let res = app
        .request(Method::PUT, &format!("/api/v1/skills/{archived}"))
        .bearer_auth(&ann.access)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    let (text, error) = mcp.tool("load_skill_metadata", json!({})).await;
    assert!(!error);
    assert_eq!(
        text,
        "Available skills (each line is \"- <skill_name>: <skill_description>\"):\n- docx: Word documents: read and write.\n- pdf: Work with PDF files."
    );
    let (text, error) = mcp.tool("load_skill", json!({"skill_name": "pdf"})).await;
    assert!(!error);
    assert_eq!(text, PDF_MD);
    let (text, error) = mcp
        .tool(
            "read_reference_file",
            json!({"skill_name": "pdf", "file_name": "scripts/convert.py"}),
        )
        .await;
    assert!(!error);
    assert_eq!(text, "print('pdf')\n");
    let (text, error) = mcp
        .tool("load_skill", json!({"skill_name": "archived"}))
        .await;
    assert!(error, "an inactive skill is hidden: {text}");
}

async fn tool_failures_are_results_that_say_what_is_wrong(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let mut mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    for (tool, arguments, words) in [
        (
            "load_skill",
            json!({"skill_name": "nope"}),
            "❌ Skill 'nope' not found",
        ),
        ("load_skill", json!({}), "skill_name"),
        ("load_skill", json!({"skill_name": 5}), "skill_name"),
        (
            "read_reference_file",
            json!({"skill_name": "pdf", "file_name": "missing.md"}),
            "File 'missing.md' not found in skill 'pdf'",
        ),
        (
            "read_reference_file",
            json!({"skill_name": "pdf", "file_name": "../docx/SKILL.md"}),
            "not allowed",
        ),
        (
            "read_reference_file",
            json!({"skill_name": "pdf", "file_name": "/etc/passwd"}),
            "not allowed",
        ),
        (
            "read_reference_file",
            json!({"skill_name": "pdf", "file_name": "logo.bin"}),
            "not UTF-8",
        ),
        (
            "read_reference_file",
            json!({"skill_name": "pdf", "file_name": "scripts"}),
            "not a regular file",
        ),
        (
            "run_shell_command",
            json!({"skill_name": "nope", "command": "echo hi"}),
            "not found",
        ),
    ] {
        let (text, error) = mcp.tool(tool, arguments.clone()).await;
        assert!(error, "{tool} {arguments}: {text}");
        assert!(text.contains(words), "{tool} {arguments}: {text}");
    }
}

async fn skill_files_are_resources(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let mut mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    let body = mcp.call("resources/list", json!({})).await;
    let resources = body["result"]["resources"].as_array().unwrap();
    let uris: Vec<&str> = resources
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            "skill://docx/SKILL.md",
            "skill://pdf/SKILL.md",
            "skill://pdf/logo.bin",
            "skill://pdf/reference.md",
            "skill://pdf/scripts/convert.py"
        ]
    );
    assert_eq!(resources[1]["mimeType"], "text/markdown");
    assert_eq!(resources[1]["name"], "pdf");
    assert_eq!(resources[1]["description"], "Work with PDF files.");
    assert!(body["result"].get("nextCursor").is_none());
    // Each resource names the version it belongs to and its own bytes' digest.
    let meta = &resources[4]["_meta"];
    assert_eq!(meta["io.github.agentskills-mcp/version"], 1, "{meta}");
    assert_eq!(
        meta["io.github.agentskills-mcp/sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"print('pdf')\n"))
    );
    assert_eq!(
        meta["io.github.agentskills-mcp/digest"],
        resources[1]["_meta"]["io.github.agentskills-mcp/digest"]
    );
    assert_ne!(
        meta["io.github.agentskills-mcp/digest"],
        resources[0]["_meta"]["io.github.agentskills-mcp/digest"]
    );
    let body = mcp
        .call("resources/read", json!({"uri": "skill://pdf/SKILL.md"}))
        .await;
    let contents = &body["result"]["contents"][0];
    assert_eq!(contents["uri"], "skill://pdf/SKILL.md");
    assert_eq!(contents["mimeType"], "text/markdown");
    assert_eq!(contents["text"], PDF_MD);
    let body = mcp
        .call("resources/read", json!({"uri": "skill://pdf/logo.bin"}))
        .await;
    assert_eq!(body["result"]["contents"][0]["blob"], "/wD+");
    for uri in [
        "skill://pdf/missing",
        "skill://nope/SKILL.md",
        "skill://pdf/../docx/SKILL.md",
        "file:///etc/passwd",
        "skill://pdf",
    ] {
        let body = mcp.call("resources/read", json!({"uri": uri})).await;
        assert_eq!(body["error"]["code"], -32002, "{uri}: {body}");
    }
    let body = mcp.call("resources/templates/list", json!({})).await;
    assert_eq!(
        body["result"]["resourceTemplates"][0]["uriTemplate"],
        "skill://{skill_name}/{path}"
    );
}

async fn a_token_reaches_only_its_own_users_skills(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, ann_token) = ann_with_skills(&app).await;
    let bob = app.user("bob").await;
    app.upload_skill(
        &bob,
        &[(
            "SKILL.md",
            b"---\nname: bobs\ndescription: Bob's own.\n---\n",
        )],
    )
    .await;
    let (_, bob_token) = app.api_token(&bob, "agent").await;
    let ann = Mcp::connect(&app, &ann_token, "2025-06-18").await;
    let mut bob_mcp = Mcp::connect(&app, &bob_token, "2025-06-18").await;
    let (text, _) = bob_mcp.tool("load_skill_metadata", json!({})).await;
    assert!(text.contains("bobs") && !text.contains("pdf"), "{text}");
    let (text, error) = bob_mcp
        .tool("load_skill", json!({"skill_name": "pdf"}))
        .await;
    assert!(error && !text.contains("Run scripts"), "{text}");
    let body = bob_mcp
        .call("resources/read", json!({"uri": "skill://pdf/SKILL.md"}))
        .await;
    assert_eq!(body["error"]["code"], -32002);
    let body = bob_mcp.call("resources/list", json!({})).await;
    assert_eq!(body["result"]["resources"].as_array().unwrap().len(), 1);
    // Bob's token on Ann's session: that session does not exist for him.
    let mut hijack = Mcp::new(&app, &bob_token);
    hijack.session = ann.session.clone();
    let (status, _, _) = hijack.raw(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "load_skill", "arguments": {"skill_name": "pdf"}}}), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let res = app
        .request(Method::DELETE, "/mcp")
        .bearer_auth(&bob_token)
        .header("mcp-session-id", ann.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

async fn revoking_a_token_or_deleting_the_account_ends_its_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ann, token) = ann_with_skills(&app).await;
    let (_, second) = app.api_token(&ann, "second").await;
    let mut mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    let mut other = Mcp::connect(&app, &second, "2025-06-18").await;
    mcp.call("ping", json!({})).await;
    let tokens = app.get_json("/api/v1/tokens", &ann.access).await;
    let id = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "agent")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .delete_auth(&format!("/api/v1/tokens/{id}"), &ann.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, headers, _) = mcp
        .raw(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(
        app.state.sessions.len(),
        1,
        "the revoked token's session is still open"
    );
    other.call("ping", json!({})).await;
    let res = app
        .request(Method::DELETE, "/api/v1/users/me")
        .bearer_auth(&ann.access)
        .json(&json!({"password": ann.password, "confirm": "DELETE MY ACCOUNT"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, _, _) = other
        .raw(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.state.sessions.len(), 0);
}

async fn skill_names_and_paths_complete(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let mut mcp = Mcp::connect(&app, &token, "2025-06-18").await;
    let template = json!({"type": "ref/resource", "uri": "skill://{skill_name}/{path}"});
    let body = mcp
        .call(
            "completion/complete",
            json!({"ref": template, "argument": {"name": "skill_name", "value": "p"}}),
        )
        .await;
    assert_eq!(body["result"]["completion"]["values"], json!(["pdf"]));
    let body = mcp
        .call(
            "completion/complete",
            json!({"ref": template, "argument": {"name": "skill_name", "value": ""}}),
        )
        .await;
    assert_eq!(
        body["result"]["completion"]["values"],
        json!(["docx", "pdf"])
    );
    assert_eq!(body["result"]["completion"]["hasMore"], false);
    let body = mcp
        .call(
            "completion/complete",
            json!({"ref": template, "argument": {"name": "path", "value": "s"}, "context": {"arguments": {"skill_name": "pdf"}}}),
        )
        .await;
    assert_eq!(
        body["result"]["completion"]["values"],
        json!(["scripts/convert.py"])
    );
    let body = mcp
        .call(
            "completion/complete",
            json!({"ref": template, "argument": {"name": "path", "value": ""}}),
        )
        .await;
    assert_eq!(
        body["result"]["completion"]["values"],
        json!([]),
        "no skill named, no paths"
    );
    let body = mcp
        .call(
            "completion/complete",
            json!({"ref": {"type": "ref/nothing"}, "argument": {"name": "x", "value": ""}}),
        )
        .await;
    assert_eq!(body["error"]["code"], -32602);
    let body = mcp.call("completion/complete", json!({})).await;
    assert_eq!(body["error"]["code"], -32602);
}

/// Clients that restart without closing their sessions (editors, agents) never lock their token
/// out: at `mcp.max_sessions_per_token`, a new `initialize` ends the token's least recently used
/// session, whose stream closes; the others, and other tokens' sessions, go on.
async fn at_the_session_cap_the_least_recently_used_session_ends(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.mcp.max_sessions_per_token = 2).await;
    let (ann, token) = ann_with_skills(&app).await;
    let (_, second_token) = app.api_token(&ann, "other client").await;
    let mut first = Mcp::connect(&app, &token, "2025-11-25").await;
    let mut stale = Mcp::connect(&app, &token, "2025-11-25").await;
    let mut elsewhere = Mcp::connect(&app, &second_token, "2025-11-25").await;
    let open_stream = |mcp: &Mcp<'_>| {
        app.request(Method::GET, "/mcp")
            .bearer_auth(&mcp.token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", mcp.session.clone().unwrap())
            .send()
    };
    let mut stale_stream = open_stream(&stale).await.unwrap();
    assert_eq!(stale_stream.status(), StatusCode::OK);
    let mut first_stream = open_stream(&first).await.unwrap();
    assert_eq!(first_stream.status(), StatusCode::OK);
    stale.call("ping", json!({})).await;
    // The first session is used last, after a pause long enough for the clock to move.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    first.call("ping", json!({})).await;

    let mut restarted = Mcp::connect(&app, &token, "2025-11-25").await;
    restarted.call("ping", json!({})).await;
    // The least recently used session is gone, and its stream has ended.
    let (status, _, _) = stale
        .raw(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}), &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(chunk) = stale_stream.chunk().await.unwrap() {
            assert!(chunk.starts_with(b":"), "only keep-alives: {chunk:?}");
        }
    })
    .await;
    assert!(ended.is_ok(), "the evicted session's stream did not end");
    // The others live: their requests are answered, and the first one's stream still carries
    // notifications.
    first.call("ping", json!({})).await;
    elsewhere.call("ping", json!({})).await;
    app.upload_skill(&ann, &[("SKILL.md", skill_md_of("xlsx").as_bytes())])
        .await;
    let notified = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut seen = Vec::new();
        while let Some(chunk) = first_stream.chunk().await.unwrap() {
            seen.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&seen).contains("notifications/resources/list_changed") {
                return;
            }
        }
        panic!("the stream ended: {}", String::from_utf8_lossy(&seen));
    })
    .await;
    assert!(
        notified.is_ok(),
        "the live session's stream got no notification"
    );
    assert_eq!(app.state.sessions.len(), 3);
}

fn skill_md_of(name: &str) -> String {
    format!("---\nname: {name}\ndescription: The {name} skill.\n---\n# {name}\n")
}

/// A token made with `skills:read` alone: it lists and loads skills, does not see
/// `run_shell_command`, and calling it is refused over every transport: 403 with
/// `insufficient_scope` for a request of its own, the same words in band inside a batch.
async fn a_read_only_token_lists_and_reads_but_runs_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ann, full) = ann_with_skills(&app).await;
    let reader = app.scoped_token(&ann, "reader", &["skills:read"]).await;
    let listed = app.get_json("/api/v1/tokens", &ann.access).await;
    let scopes: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["scopes"])
        .collect();
    assert_eq!(
        scopes,
        [
            &json!(["skills:read"]),
            &json!(["skills:read", "skills:run"])
        ]
    );

    let run = json!({"name": "run_shell_command", "arguments": {"skill_name": "pdf", "command": "echo hi"}});
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let mut mcp = Mcp::connect(&app, &reader, version).await;
        let body = mcp.call("tools/list", json!({})).await;
        let names = tool_names(&body);
        assert_eq!(
            names,
            [
                "load_skill_metadata",
                "load_skill",
                "read_reference_file",
                "search_skills"
            ],
            "{version}"
        );
        let (text, error) = mcp.tool("load_skill", json!({"skill_name": "pdf"})).await;
        assert!(!error && text.contains("# PDF"), "{text}");
        let (status, headers, body) = mcp
            .raw(
                &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": run}),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{version}: {body}");
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer error=\"insufficient_scope\"")
                && challenge.contains("scope=\"skills:read skills:run\""),
            "{challenge}"
        );
        assert_eq!(body["id"], 7);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("skills:run"), "{message}");
    }
    // Inside a batch (2025-03-26 has them): the tool's own refusal, in band.
    let mcp = Mcp::connect(&app, &reader, "2025-03-26").await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": run},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    ]);
    let (status, _, body) = mcp.raw(&batch, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["result"]["isError"], true, "{body}");
    assert!(
        body[0]["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("skills:run"),
        "{body}"
    );
    // Without a session (2026-07-28): the same 403.
    let stateless = json!({
        "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "run_shell_command", "arguments": {"skill_name": "pdf", "command": "echo hi"},
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}
    });
    let (status, headers, body) = Mcp::new(&app, &reader)
        .raw(
            &stateless,
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "run_shell_command"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(headers.contains_key("www-authenticate"));
    // The token with both scopes still sees and runs the tool's way (refused by nothing but
    // the sandbox, whose answer is a result either way).
    let mut mcp = Mcp::connect(&app, &full, "2025-06-18").await;
    let body = mcp.call("tools/list", json!({})).await;
    // The four of the original server and search_skills.
    assert_eq!(body["result"]["tools"].as_array().unwrap().len(), 5);
    let body = mcp.call("tools/call", run.clone()).await;
    assert!(body["result"].is_object(), "{body}");

    // Scopes are checked when the token is made.
    for (scopes, says) in [
        (json!(["skills:write"]), "unknown scope"),
        (json!([]), "at least one"),
        (json!(["skills:run"]), "skills:read"),
    ] {
        let res = app
            .request(Method::POST, "/api/v1/tokens")
            .bearer_auth(&ann.access)
            .json(&json!({"name": "bad", "scopes": scopes}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "scopes", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{body}"
        );
    }
}
