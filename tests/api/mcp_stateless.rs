//! MCP 2026-07-28 at `/mcp`: stateless requests that carry their version and capabilities in
//! `_meta`, `server/discover`, the routing headers, cache hints, and the Skills extension
//! (`skills/list`, `skills/get`, `resources/directory/read`) in both eras.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, spawn_app};

backend_tests!(
    discover_tells_versions_capabilities_and_the_server,
    stateless_requests_are_checked_in_the_protocols_order,
    stateless_results_carry_result_type_and_cache_hints,
    the_skills_extension_lists_skills_with_digests,
    directories_list_their_direct_children,
    the_skills_extension_works_in_sessions_too,
    a_stateless_token_reaches_only_its_own_users_skills,
);

const VERSION: &str = "2026-07-28";
const PDF_MD: &str =
    "---\nname: pdf\ndescription: >\n  Work with PDF files.\nmetadata:\n  owner: ann\n---\n# PDF\n";

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "1"},
    })
}

fn with_meta(mut params: Value) -> Value {
    params["_meta"] = meta();
    params
}

/// Posts `body` with the routing headers a 2026-07-28 client sends, then `extra` (which may
/// replace them; an empty value leaves the header out).
async fn post(
    app: &TestApp,
    token: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let method = body["method"].as_str().unwrap_or("");
    let name = body["params"]
        .get("name")
        .or_else(|| {
            (method == "resources/read")
                .then(|| body["params"].get("uri"))
                .flatten()
        })
        .and_then(Value::as_str);
    let mut headers: Vec<(String, String)> = vec![
        (
            "accept".into(),
            "application/json, text/event-stream".into(),
        ),
        ("content-type".into(), "application/json".into()),
        ("mcp-protocol-version".into(), VERSION.into()),
        ("mcp-method".into(), method.into()),
    ];
    if let Some(name) = name.filter(|_| matches!(method, "tools/call" | "resources/read")) {
        headers.push(("mcp-name".into(), name.into()));
    }
    for (k, v) in extra {
        headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        if !v.is_empty() {
            headers.push(((*k).into(), (*v).into()));
        }
    }
    let mut req = app.request(Method::POST, "/mcp").bearer_auth(token);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let res = req.body(body.to_string()).send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn request(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": with_meta(params)})
}

/// A stateless request that must succeed: its result.
async fn call(app: &TestApp, token: &str, method: &str, params: Value) -> Value {
    let (status, body) = post(app, token, &request(7, method, params), &[]).await;
    assert_eq!(status, StatusCode::OK, "{method}: {body}");
    assert_eq!(body["id"], 7, "{body}");
    assert_eq!(body["result"]["resultType"], "complete", "{body}");
    body["result"].clone()
}

/// Ann with `pdf` (a subfolder, a nested one, a binary file) and `alpha`, and an API token.
async fn ann_with_skills(app: &TestApp) -> (TestUser, String) {
    let ann = app.user("ann").await;
    app.upload_skill(
        &ann,
        &[
            ("SKILL.md", PDF_MD.as_bytes()),
            ("scripts/convert.py", b"print('pdf')\n"),
            ("scripts/lib/util.py", b"X = 1\n"),
            ("logo.bin", &[0xff, 0x00, 0xfe]),
        ],
    )
    .await;
    app.upload_skill(
        &ann,
        &[("SKILL.md", b"---\nname: alpha\ndescription: First.\n---\n")],
    )
    .await;
    let (_, token) = app.api_token(&ann, "agent").await;
    (ann, token)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

async fn discover_tells_versions_capabilities_and_the_server(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let result = call(&app, &token, "server/discover", json!({})).await;
    assert_eq!(
        result["supportedVersions"],
        json!([
            VERSION,
            "2025-11-25",
            "2025-06-18",
            "2025-03-26",
            "2024-11-05"
        ])
    );
    let capabilities = &result["capabilities"];
    assert!(capabilities["tools"].is_object() && capabilities["resources"].is_object());
    assert_eq!(
        capabilities["extensions"]["io.modelcontextprotocol/skills"],
        json!({"directoryRead": true})
    );
    assert!(
        capabilities["tools"].get("listChanged").is_none(),
        "no list-change notifications without a session: {capabilities}"
    );
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "agentskills-mcp"
    );
    assert!(result["ttlMs"].as_u64().is_some() && result["cacheScope"].is_string());
    // No clientInfo is fine; it is optional.
    let mut bare = request(1, "server/discover", json!({}));
    bare["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientInfo");
    let (status, body) = post(&app, &token, &bare, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn stateless_requests_are_checked_in_the_protocols_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let expect = |status: StatusCode, body: &Value, want: StatusCode, code: i64, id: i64| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["id"], id, "the error names the request: {body}");
    };
    // `_meta` first: missing, or missing a required key, is -32602 even when the headers are off.
    let no_meta = json!({"jsonrpc": "2.0", "id": 101, "method": "server/discover", "params": {}});
    let (status, body) = post(&app, &token, &no_meta, &[]).await;
    expect(status, &body, StatusCode::BAD_REQUEST, -32602, 101);
    let mut no_version = request(102, "server/discover", json!({}));
    no_version["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/protocolVersion");
    let (status, body) = post(&app, &token, &no_version, &[]).await;
    expect(status, &body, StatusCode::BAD_REQUEST, -32602, 102);

    // Then the routing headers against the body: -32020.
    let list = request(103, "tools/list", json!({}));
    for headers in [
        &[("mcp-method", "prompts/list")][..],
        &[("mcp-method", "")],
        &[("mcp-method", "TOOLS/LIST")],
    ] {
        let (status, body) = post(&app, &token, &list, headers).await;
        expect(status, &body, StatusCode::BAD_REQUEST, -32020, 103);
    }
    let (status, body) = post(&app, &token, &list, &[("MCP-METHOD", "tools/list")]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "header names are case-insensitive: {body}"
    );
    let call_tool = request(
        104,
        "tools/call",
        json!({"name": "load_skill_metadata", "arguments": {}}),
    );
    for name in ["wrong_tool_name", ""] {
        let (status, body) = post(&app, &token, &call_tool, &[("mcp-name", name)]).await;
        expect(status, &body, StatusCode::BAD_REQUEST, -32020, 104);
    }
    for name in [
        "  load_skill_metadata\t",
        "=?base64?bG9hZF9za2lsbF9tZXRhZGF0YQ==?=",
    ] {
        let (status, body) = post(&app, &token, &call_tool, &[("mcp-name", name)]).await;
        assert_eq!(status, StatusCode::OK, "{name:?}: {body}");
        assert_eq!(body["result"]["isError"], false, "{body}");
    }
    // The body says one version and the header another: a mismatch, not an unknown version.
    let mut odd = request(105, "server/discover", json!({}));
    odd["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("v999.0.0");
    let (status, body) = post(&app, &token, &odd, &[]).await;
    expect(status, &body, StatusCode::BAD_REQUEST, -32020, 105);
    // Both say a version this server does not speak: -32022 with what it does.
    let (status, body) = post(&app, &token, &odd, &[("mcp-protocol-version", "v999.0.0")]).await;
    expect(status, &body, StatusCode::BAD_REQUEST, -32022, 105);
    assert_eq!(
        body["error"]["data"],
        json!({"supported": [VERSION], "requested": "v999.0.0"})
    );
    // Then the method: the handshake-era methods are gone (404, -32601), as is anything unknown.
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "unknown/method",
    ] {
        let (status, body) = post(&app, &token, &request(106, method, json!({})), &[]).await;
        expect(status, &body, StatusCode::NOT_FOUND, -32601, 106);
    }
    // No batches in this version.
    let batch = json!([request(1, "tools/list", json!({}))]);
    let (status, body) = post(&app, &token, &batch, &[("mcp-method", "tools/list")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A notification needs no session either.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1, "_meta": meta()}});
    let (status, _) = post(
        &app,
        &token,
        &note,
        &[("mcp-method", "notifications/cancelled")],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // A request naming its version in `_meta` but sent without the headers is a mismatch.
    let (status, body) = post(
        &app,
        &token,
        &request(107, "tools/list", json!({})),
        &[("mcp-protocol-version", ""), ("mcp-method", "")],
    )
    .await;
    expect(status, &body, StatusCode::BAD_REQUEST, -32020, 107);
}

async fn stateless_results_carry_result_type_and_cache_hints(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    for (method, params, scope) in [
        ("tools/list", json!({}), "public"),
        ("prompts/list", json!({}), "public"),
        ("resources/templates/list", json!({}), "public"),
        ("resources/list", json!({}), "private"),
        (
            "resources/read",
            json!({"uri": "skill://pdf/SKILL.md"}),
            "private",
        ),
        ("skills/list", json!({}), "private"),
    ] {
        let result = call(&app, &token, method, params).await;
        assert!(result["ttlMs"].as_u64().is_some(), "{method}: {result}");
        assert_eq!(result["cacheScope"], scope, "{method}: {result}");
    }
    let result = call(&app, &token, "prompts/list", json!({})).await;
    assert_eq!(result["prompts"], json!([]));
    // The first tool works with no arguments.
    let result = call(&app, &token, "tools/list", json!({})).await;
    assert_eq!(result["tools"][0]["name"], "load_skill_metadata");
    let result = call(
        &app,
        &token,
        "tools/call",
        json!({"name": "load_skill", "arguments": {"skill_name": "pdf"}}),
    )
    .await;
    assert_eq!(result["content"][0]["text"], PDF_MD);
    // An unknown resource is -32602 naming the URI (SEP-2164), never empty contents.
    let missing = "test://nonexistent-resource";
    let (status, body) = post(
        &app,
        &token,
        &request(9, "resources/read", json!({"uri": missing})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], -32602);
    assert_eq!(body["error"]["data"]["uri"], missing);
}

async fn the_skills_extension_lists_skills_with_digests(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ann, token) = ann_with_skills(&app).await;
    let result = call(&app, &token, "skills/list", json!({})).await;
    let skills = result["skills"].as_array().unwrap();
    let uris: Vec<&str> = skills.iter().map(|s| s["uri"].as_str().unwrap()).collect();
    assert_eq!(uris, ["skill://alpha/SKILL.md", "skill://pdf/SKILL.md"]);
    let pdf = &skills[1];
    // The front matter as written: the folded description keeps its line break.
    assert_eq!(
        pdf["frontmatter"],
        json!({"name": "pdf", "description": "Work with PDF files.\n", "metadata": {"owner": "ann"}})
    );
    assert_eq!(
        pdf["resources"],
        json!([
            {"uri": "skill://pdf/SKILL.md", "digest": sha256(PDF_MD.as_bytes()), "size": PDF_MD.len()},
            {"uri": "skill://pdf/logo.bin", "digest": sha256(&[0xff, 0x00, 0xfe]), "size": 3},
            {"uri": "skill://pdf/scripts/convert.py", "digest": sha256(b"print('pdf')\n"), "size": 13},
            {"uri": "skill://pdf/scripts/lib/util.py", "digest": sha256(b"X = 1\n"), "size": 6},
        ])
    );
    assert!(result.get("nextCursor").is_none());
    // The version served and its digest, as the REST API lists them.
    let listed = app.get_json("/api/v1/skills?search=pdf", &ann.access).await;
    let id = listed["items"][0]["id"].as_str().unwrap();
    let versions = app
        .get_json(&format!("/api/v1/skills/{id}/versions"), &ann.access)
        .await;
    assert_eq!(
        pdf["_meta"],
        json!({
            "io.github.agentskills-mcp/version": versions["items"][0]["version"],
            "io.github.agentskills-mcp/digest": format!("sha256:{}", versions["items"][0]["digest"].as_str().unwrap()),
        })
    );
    let got = call(
        &app,
        &token,
        "skills/get",
        json!({"uri": "skill://pdf/SKILL.md"}),
    )
    .await;
    assert_eq!(&got["skill"], pdf);
    assert!(got.get("nextCursor").is_none());
    for uri in [
        "skill://nope/SKILL.md",
        "skill://pdf/scripts/convert.py",
        "skill://pdf",
        "https://example.com/SKILL.md",
    ] {
        let (status, body) = post(
            &app,
            &token,
            &request(3, "skills/get", json!({"uri": uri})),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["code"], -32602, "{uri}: {body}");
    }
    let (_, body) = post(
        &app,
        &token,
        &request(4, "skills/list", json!({"cursor": "bogus"})),
        &[],
    )
    .await;
    assert_eq!(body["error"]["code"], -32602, "a bad cursor: {body}");
}

async fn directories_list_their_direct_children(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let entries = |result: &Value| -> Vec<(String, String)> {
        result["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["uri"].as_str().unwrap().to_owned(),
                    r["mimeType"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let root = call(
        &app,
        &token,
        "resources/directory/read",
        json!({"uri": "skill://pdf"}),
    )
    .await;
    assert_eq!(
        entries(&root),
        [
            ("skill://pdf/SKILL.md".into(), "text/markdown".into()),
            (
                "skill://pdf/logo.bin".into(),
                "application/octet-stream".into()
            ),
            ("skill://pdf/scripts".into(), "inode/directory".into()),
        ]
    );
    assert_eq!(root["resources"][2]["name"], "scripts");
    let scripts = call(
        &app,
        &token,
        "resources/directory/read",
        json!({"uri": "skill://pdf/scripts"}),
    )
    .await;
    assert_eq!(
        entries(&scripts),
        [
            (
                "skill://pdf/scripts/convert.py".into(),
                "text/x-python".into()
            ),
            ("skill://pdf/scripts/lib".into(), "inode/directory".into()),
        ]
    );
    for uri in [
        "skill://pdf/SKILL.md",
        "skill://pdf/scripts/convert.py",
        "skill://pdf/nothing",
        "skill://nope",
        "file:///etc",
    ] {
        let (_, body) = post(
            &app,
            &token,
            &request(5, "resources/directory/read", json!({"uri": uri})),
            &[],
        )
        .await;
        assert_eq!(body["error"]["code"], -32602, "{uri}: {body}");
    }
}

async fn the_skills_extension_works_in_sessions_too(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = ann_with_skills(&app).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    let session = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/skills"]["directoryRead"],
        true
    );
    assert_eq!(body["result"]["capabilities"]["tools"]["listChanged"], true);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "skills/list", "params": {}});
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(&token)
        .header("accept", "application/json")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .body(list.to_string())
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["result"]["skills"].as_array().unwrap().len(), 2);
    assert!(
        body["result"].get("resultType").is_none() && body["result"].get("ttlMs").is_none(),
        "no 2026-07-28 fields in a 2025-11-25 session: {body}"
    );
}

async fn a_stateless_token_reaches_only_its_own_users_skills(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _ann_token) = ann_with_skills(&app).await;
    let bob = app.user("bob").await;
    app.upload_skill(
        &bob,
        &[("SKILL.md", b"---\nname: bobs\ndescription: Bob's.\n---\n")],
    )
    .await;
    let (_, bob_token) = app.api_token(&bob, "agent").await;
    let result = call(&app, &bob_token, "skills/list", json!({})).await;
    assert_eq!(result["skills"].as_array().unwrap().len(), 1);
    let result = call(&app, &bob_token, "resources/list", json!({})).await;
    assert_eq!(result["resources"].as_array().unwrap().len(), 1);
    for (method, params) in [
        ("skills/get", json!({"uri": "skill://pdf/SKILL.md"})),
        ("resources/directory/read", json!({"uri": "skill://pdf"})),
        ("resources/read", json!({"uri": "skill://pdf/SKILL.md"})),
    ] {
        let (_, body) = post(&app, &bob_token, &request(8, method, params), &[]).await;
        assert_eq!(body["error"]["code"], -32602, "{method}: {body}");
    }
    let result = call(
        &app,
        &bob_token,
        "tools/call",
        json!({"name": "load_skill", "arguments": {"skill_name": "pdf"}}),
    )
    .await;
    assert_eq!(result["isError"], true);
    // No token, no answer.
    let res = app
        .request(Method::POST, "/mcp")
        .header("mcp-protocol-version", VERSION)
        .header("mcp-method", "server/discover")
        .body(request(1, "server/discover", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
