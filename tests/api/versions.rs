//! Skill versions: every change of a skill's content makes an immutable version; old versions
//! read back byte for byte, export, restore and compare; `If-Match` prevents lost updates; old
//! versions are pruned and their blobs collected; a file kept by many versions counts once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, expect_error, spawn_app, spawn_app_with};
use crate::skills::{multipart, upload};

backend_tests!(
    every_change_of_content_makes_a_version,
    old_versions_read_back_byte_for_byte,
    an_old_versions_export_uploads_again_as_the_same_content,
    a_restore_makes_a_new_version_equal_to_the_old_one,
    a_diff_lists_added_removed_and_changed_files,
    a_stale_if_match_changes_nothing,
    old_versions_are_pruned_and_their_blobs_collected,
    a_file_kept_by_many_versions_counts_once_in_the_quota,
    a_crash_during_collection_is_finished_at_the_next_start,
    executable_bits_come_from_zips_and_survive_replacement_and_export,
    the_local_copies_are_a_cache_that_may_be_wiped_while_serving,
    past_the_cache_limit_the_least_recently_used_copies_go,
);

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn skill_md(name: &str, description: &str) -> String {
    format!("---\nname: {name}\ndescription: {description}\n---\n# {name}\n")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn create(app: &TestApp, user: &TestUser, name: &str, description: &str) -> Value {
    let res = app
        .request(Method::POST, "/api/v1/skills")
        .bearer_auth(&user.access)
        .json(&json!({"name": name, "description": description}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(etag(&res), "\"v1\"");
    res.json().await.unwrap()
}

fn etag(res: &reqwest::Response) -> String {
    res.headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Uploads `files` into the skill `id`; returns the answer.
async fn upload_into(app: &TestApp, user: &TestUser, id: &str, files: &[(&str, &[u8])]) -> Value {
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("skill_id", None, id.as_bytes())];
    parts.extend(files.iter().map(|(p, b)| ("files", Some(*p), *b)));
    let res = upload(app, user, &parts).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn versions(app: &TestApp, user: &TestUser, id: &str) -> Vec<Value> {
    let list = app
        .get_json(&format!("/api/v1/skills/{id}/versions"), &user.access)
        .await;
    let items = list["items"].as_array().unwrap().clone();
    assert_eq!(list["total"], items.len());
    items
}

async fn version(app: &TestApp, user: &TestUser, id: &str, n: i64) -> Value {
    let res = app
        .get_auth(&format!("/api/v1/skills/{id}/versions/{n}"), &user.access)
        .await;
    assert_eq!(res.status(), StatusCode::OK, "version {n}");
    res.json().await.unwrap()
}

/// Every file of version `n`, read back through the API, by path.
async fn version_files(
    app: &TestApp,
    user: &TestUser,
    id: &str,
    n: i64,
) -> BTreeMap<String, Vec<u8>> {
    let detail = version(app, user, id, n).await;
    let mut files = BTreeMap::new();
    for file in detail["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        let res = app
            .get_auth(
                &format!("/api/v1/skills/{id}/versions/{n}/files/{path}"),
                &user.access,
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{path} of version {n}");
        let bytes = res.bytes().await.unwrap().to_vec();
        assert_eq!(sha256_hex(&bytes), file["sha256"], "{path} of version {n}");
        assert_eq!(bytes.len() as u64, file["size"].as_u64().unwrap());
        files.insert(path.to_owned(), bytes);
    }
    files
}

/// The skill's current files, read through the plain files API.
async fn current_files(app: &TestApp, user: &TestUser, id: &str) -> BTreeMap<String, Vec<u8>> {
    let list = app
        .get_json(&format!("/api/v1/skills/{id}/files"), &user.access)
        .await;
    let mut files = BTreeMap::new();
    for file in list["items"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        let res = app
            .get_auth(&format!("/api/v1/skills/{id}/files/{path}"), &user.access)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        files.insert(path.to_owned(), res.bytes().await.unwrap().to_vec());
    }
    files
}

async fn put(
    app: &TestApp,
    user: &TestUser,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .request(Method::PUT, &format!("/api/v1/skills/{id}"))
        .bearer_auth(&user.access)
        .json(body);
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    req.send().await.unwrap()
}

async fn restore(
    app: &TestApp,
    user: &TestUser,
    id: &str,
    n: i64,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .request(
            Method::POST,
            &format!("/api/v1/skills/{id}/versions/{n}/restore"),
        )
        .bearer_auth(&user.access);
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    req.send().await.unwrap()
}

/// The digests of the blobs stored for `user`, and their bytes in all.
async fn blobs_on_disk(
    settings: &agentskills_mcp::config::Settings,
    user: &TestUser,
) -> (BTreeSet<String>, u64) {
    crate::helpers::stored_blobs(settings, &user.id).await
}

/// Stops `app` and starts the server again on its data dir and database (`app` must stay alive:
/// it owns them).
async fn restart(app: &mut TestApp, backend: Backend) -> TestApp {
    let (data_dir, url) = (app.data_dir.clone(), app.settings.database.url.clone());
    app.stop().await;
    spawn_app_with(backend, |s| {
        s.server.data_dir = data_dir;
        s.database.url = url;
    })
    .await
}

/// Create, upload, a description change and a restore each make the next version; `is_active`
/// alone does not, but changes the ETag.
async fn every_change_of_content_makes_a_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let created = create(&app, &ann, "pdf", "Work with PDF files.").await;
    assert_eq!(created["version"], 1);
    let id = created["id"].as_str().unwrap().to_owned();

    let uploaded = upload_into(&app, &ann, &id, &[("scripts/fill.py", b"print(1)\n")]).await;
    assert_eq!(uploaded["version"], 2);
    assert_eq!(uploaded["skills"][0]["version"], 2);

    let res = put(&app, &ann, &id, &json!({"description": "PDFs."}), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), "\"v3\"");
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 3);

    // The flag is not content: no version, but another state.
    let res = put(&app, &ann, &id, &json!({"is_active": false}), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), "\"v3-inactive\"");
    let res = put(&app, &ann, &id, &json!({"is_active": true}), None).await;
    assert_eq!(etag(&res), "\"v3\"");

    let res = restore(&app, &ann, &id, 1, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), "\"v4\"");
    let restored: Value = res.json().await.unwrap();
    assert_eq!(restored["version"], 4);
    assert_eq!(restored["description"], "Work with PDF files.");

    let res = app
        .get_auth(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    assert_eq!(etag(&res), "\"v4\"");
    let list = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(list["items"][0]["version"], 4);

    let items = versions(&app, &ann, &id).await;
    let numbers: Vec<i64> = items
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [4, 3, 2, 1], "newest first");
    let current: Vec<bool> = items.iter().map(|v| v["current"] == true).collect();
    assert_eq!(current, [true, false, false, false]);
    let counts: Vec<i64> = items
        .iter()
        .map(|v| v["file_count"].as_i64().unwrap())
        .collect();
    // Version 4 is version 1's files again; 2 and 3 have the script.
    assert_eq!(counts, [1, 2, 2, 1]);
    assert_eq!(items[0]["digest"], items[3]["digest"]);
    assert_ne!(items[1]["digest"], items[2]["digest"]);
    for item in &items {
        assert_eq!(item["digest"].as_str().unwrap().len(), 64);
        assert!(item["size"].as_i64().unwrap() > 0);
        assert!(item["created_at"].as_str().unwrap().ends_with('Z'));
    }
    // A version's detail: its front matter and files.
    let three = version(&app, &ann, &id, 3).await;
    assert_eq!(three["front_matter"]["description"], "PDFs.");
    assert_eq!(three["front_matter"]["name"], "pdf");
    let paths: Vec<&str> = three["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["SKILL.md", "scripts/fill.py"]);
    assert_eq!(three["files"][1]["executable"], false);

    // Versions that do not exist, or are not numbers: 404.
    for bad in ["5", "0", "-1", "01", "x", "99999999999999999999"] {
        let res = app
            .get_auth(&format!("/api/v1/skills/{id}/versions/{bad}"), &ann.access)
            .await;
        expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    }
    let res = restore(&app, &ann, &id, 9, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    // Someone else's skill has no versions for you.
    let bob = app.user("bob").await;
    let res = app
        .get_auth(&format!("/api/v1/skills/{id}/versions"), &bob.access)
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    let res = app
        .get_auth(
            &format!("/api/v1/skills/{id}/versions/1/files/SKILL.md"),
            &bob.access,
        )
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    let res = restore(&app, &bob, &id, 1, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
}

/// Each version's files come back exactly as they were, binary and text, after later versions
/// changed or replaced them.
async fn old_versions_read_back_byte_for_byte(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    let ann = app.user("ann").await;
    let id = create(&app, &ann, "icons", "Icons.").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let crlf = b"line one\r\nline two\r\n".as_slice();
    let latin1 = b"caf\xe9\n".as_slice();
    upload_into(
        &app,
        &ann,
        &id,
        &[
            ("logo.png", PNG),
            ("notes/crlf.txt", crlf),
            ("notes/latin1.txt", latin1),
        ],
    )
    .await;
    let v2 = version_files(&app, &ann, &id, 2).await;
    upload_into(
        &app,
        &ann,
        &id,
        &[
            ("logo.png", b"not a png any more"),
            ("notes/crlf.txt", b"x"),
        ],
    )
    .await;
    // Version 2 is unchanged by version 3.
    assert_eq!(version_files(&app, &ann, &id, 2).await, v2);
    assert_eq!(v2["logo.png"], PNG);
    assert_eq!(v2["notes/crlf.txt"], crlf);
    assert_eq!(v2["notes/latin1.txt"], latin1);
    let v3 = version_files(&app, &ann, &id, 3).await;
    assert_eq!(v3["logo.png"], b"not a png any more");
    assert_eq!(v3, current_files(&app, &ann, &id).await);
    // A path that the version does not hold, or that is not a path.
    let res = app
        .get_auth(
            &format!("/api/v1/skills/{id}/versions/1/files/logo.png"),
            &ann.access,
        )
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    let res = app
        .get_auth(
            &format!("/api/v1/skills/{id}/versions/2/files/notes%5Ccrlf.txt"),
            &ann.access,
        )
        .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    // The version's files survive a restart (they are blobs, not the folder).
    let mut app = app;
    let again = restart(&mut app, backend).await;
    assert_eq!(version_files(&again, &ann, &id, 2).await, v2);
}

/// A version's export is a zip of its files under the skill's folder; uploaded again (here, into
/// a new account) it is the same content: the same digest.
async fn an_old_versions_export_uploads_again_as_the_same_content(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let id = create(&app, &ann, "pdf", "PDFs.").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    upload_into(
        &app,
        &ann,
        &id,
        &[("scripts/fill.py", b"print(1)\n"), ("logo.png", PNG)],
    )
    .await;
    upload_into(&app, &ann, &id, &[("scripts/fill.py", b"print(2)\n")]).await;
    let res = app
        .get_auth(
            &format!("/api/v1/skills/{id}/versions/2/export"),
            &ann.access,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/zip");
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"pdf-v2.zip\""
    );
    let archive = res.bytes().await.unwrap().to_vec();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive.clone())).unwrap();
    let mut names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(
        names,
        ["pdf/SKILL.md", "pdf/logo.png", "pdf/scripts/fill.py"]
    );
    let mut script = String::new();
    zip.by_name("pdf/scripts/fill.py")
        .unwrap()
        .read_to_string(&mut script)
        .unwrap();
    assert_eq!(script, "print(1)\n");

    let bob = app.user("bob").await;
    let res = upload(&app, &bob, &[("files", Some("pdf-v2.zip"), &archive)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let bobs: Value = res.json().await.unwrap();
    let bobs_id = bobs["id"].as_str().unwrap();
    let anns = versions(&app, &ann, &id).await;
    let two = anns.iter().find(|v| v["version"] == 2).unwrap();
    let bobs_versions = versions(&app, &bob, bobs_id).await;
    assert_eq!(bobs_versions[0]["digest"], two["digest"]);
    assert_eq!(
        current_files(&app, &bob, bobs_id).await,
        version_files(&app, &ann, &id, 2).await
    );
}

/// A restore makes version N+1 with version n's files; the versions in between stay.
async fn a_restore_makes_a_new_version_equal_to_the_old_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "mcp").await;
    let id = create(&app, &ann, "pdf", "PDFs.").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    upload_into(&app, &ann, &id, &[("a.txt", b"first\n")]).await;
    let v2 = version_files(&app, &ann, &id, 2).await;
    // A bad upload: a new SKILL.md and a changed file.
    upload_into(
        &app,
        &ann,
        &id,
        &[
            ("SKILL.md", skill_md("pdf", "Broken on purpose.").as_bytes()),
            ("a.txt", b"second\n"),
            ("b.txt", b"new\n"),
        ],
    )
    .await;
    let res = restore(&app, &ann, &id, 2, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let skill: Value = res.json().await.unwrap();
    assert_eq!(skill["version"], 4);
    assert_eq!(skill["description"], "PDFs.");
    let files: Vec<&str> = skill["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["SKILL.md", "a.txt"]);
    assert_eq!(current_files(&app, &ann, &id).await, v2);
    assert_eq!(version_files(&app, &ann, &id, 4).await, v2);
    let items = versions(&app, &ann, &id).await;
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["digest"], items[2]["digest"]);
    // MCP serves the restored version.
    let body = mcp_call(
        &app,
        &token,
        "read_reference_file",
        json!({"skill_name": "pdf", "file_name": "a.txt"}),
    )
    .await;
    assert_eq!(body["result"]["content"][0]["text"], "first\n", "{body}");
    let body = mcp_call(
        &app,
        &token,
        "read_reference_file",
        json!({"skill_name": "pdf", "file_name": "b.txt"}),
    )
    .await;
    assert_eq!(body["result"]["isError"], true, "{body}");
}

/// A stateless MCP `tools/call` with `token` (a session of its own).
async fn mcp_call(app: &TestApp, token: &str, tool: &str, arguments: Value) -> Value {
    let send = |body: Value, session: Option<String>| {
        let mut req = app
            .request(Method::POST, "/mcp")
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(session) = session {
            req = req.header("mcp-session-id", session);
        }
        req.send()
    };
    let init = send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "versions-test", "version": "1"}}}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(init.status(), StatusCode::OK);
    let session = init
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let _ = init.bytes().await;
    let res = send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}),
        session,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let is_sse = res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = res.text().await.unwrap();
    if is_sse {
        let data = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .find(|d| d.contains("\"id\":2"))
            .unwrap();
        serde_json::from_str(data).unwrap()
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// Added, removed and changed files, each text file with its unified diff; binary files without.
async fn a_diff_lists_added_removed_and_changed_files(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let id = create(&app, &ann, "pdf", "PDFs.").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    upload_into(
        &app,
        &ann,
        &id,
        &[
            ("a.txt", b"one\ntwo\nthree\n"),
            ("logo.png", PNG),
            ("old.txt", b"kept\n"),
        ],
    )
    .await;
    upload_into(
        &app,
        &ann,
        &id,
        &[
            ("a.txt", b"one\n2\nthree\n"),
            ("logo.png", b"\x89PNG\r\n\x1a\n\0changed"),
            ("new.txt", b"hello\n"),
        ],
    )
    .await;
    // Version 2 to 3 (the default: the current one and the one before).
    let diff = app
        .get_json(&format!("/api/v1/skills/{id}/diff"), &ann.access)
        .await;
    assert_eq!(
        (diff["from"].as_i64(), diff["to"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(diff["unchanged"], 2, "SKILL.md and old.txt: {diff}");
    assert_eq!(diff["removed"], json!([]));
    let added = diff["added"].as_array().unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["path"], "new.txt");
    assert_eq!(added[0]["from"], Value::Null);
    assert_eq!(added[0]["to"]["sha256"], sha256_hex(b"hello\n"));
    assert_eq!(
        added[0]["diff"],
        "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n"
    );
    let changed = diff["changed"].as_array().unwrap();
    let paths: Vec<&str> = changed
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["a.txt", "logo.png"]);
    assert_eq!(
        changed[0]["diff"],
        "--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+2\n three\n"
    );
    assert_eq!(changed[0]["from"]["size"], 14);
    assert_eq!(changed[1]["diff"], Value::Null);
    assert_eq!(changed[1]["diff_omitted"], "binary");

    // Backwards, from 3 to 1: everything uploaded since is removed.
    let diff = app
        .get_json(
            &format!("/api/v1/skills/{id}/diff?from=3&to=1"),
            &ann.access,
        )
        .await;
    let removed: Vec<&str> = diff["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["a.txt", "logo.png", "new.txt", "old.txt"]);
    assert_eq!(diff["removed"][0]["to"], Value::Null);
    assert!(
        diff["removed"][0]["diff"]
            .as_str()
            .unwrap()
            .starts_with("--- a/a.txt\n+++ /dev/null\n")
    );
    assert_eq!(diff["unchanged"], 1);
    // A version against itself: nothing changed.
    let same = app
        .get_json(
            &format!("/api/v1/skills/{id}/diff?from=2&to=2"),
            &ann.access,
        )
        .await;
    assert_eq!(same["unchanged"], 4);
    assert_eq!(same["changed"], json!([]));
    for bad in ["from=0", "to=x", "from=-2"] {
        let res = app
            .get_auth(&format!("/api/v1/skills/{id}/diff?{bad}"), &ann.access)
            .await;
        expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    }
    let res = app
        .get_auth(&format!("/api/v1/skills/{id}/diff?from=7"), &ann.access)
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
}

/// With `If-Match`, a change goes ahead only from the state the client read: a stale ETag gets
/// 412 and changes nothing, on `PUT`, upload and restore.
async fn a_stale_if_match_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let id = create(&app, &ann, "pdf", "PDFs.").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Two editors read version 1.
    let read = app
        .get_auth(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    let seen = etag(&read);
    assert_eq!(seen, "\"v1\"");
    // The first saves.
    let res = put(
        &app,
        &ann,
        &id,
        &json!({"description": "First."}),
        Some(&seen),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), "\"v2\"");
    // The second's save is refused: it would overwrite the first's without having seen it.
    let res = put(
        &app,
        &ann,
        &id,
        &json!({"description": "Second."}),
        Some(&seen),
    )
    .await;
    let body = expect_error(res, StatusCode::PRECONDITION_FAILED, "precondition-failed").await;
    assert!(
        body["detail"].as_str().unwrap().contains("\"v2\""),
        "{body}"
    );
    let (content_type, multipart_body) = multipart(&[
        ("skill_id", None, id.as_bytes()),
        ("files", Some("a.txt"), b"x"),
    ]);
    let res = app
        .request(Method::POST, "/api/v1/skills/upload")
        .bearer_auth(&ann.access)
        .header("content-type", &content_type)
        .header("if-match", &seen)
        .body(multipart_body.clone())
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::PRECONDITION_FAILED, "precondition-failed").await;
    let res = restore(&app, &ann, &id, 1, Some(&seen)).await;
    expect_error(res, StatusCode::PRECONDITION_FAILED, "precondition-failed").await;
    // Nothing changed.
    let skill = app
        .get_json(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    assert_eq!(skill["version"], 2);
    assert_eq!(skill["description"], "First.");
    assert_eq!(versions(&app, &ann, &id).await.len(), 2);

    // The current ETag (among others), or `*`, lets the change through.
    let res = app
        .request(Method::POST, "/api/v1/skills/upload")
        .bearer_auth(&ann.access)
        .header("content-type", &content_type)
        .header("if-match", format!("\"v9\", {}", "\"v2\""))
        .body(multipart_body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(etag(&res), "\"v3\"");
    let res = put(&app, &ann, &id, &json!({"is_active": false}), Some("*")).await;
    assert_eq!(res.status(), StatusCode::OK);
    // A weak tag never matches (If-Match compares strongly).
    let res = put(
        &app,
        &ann,
        &id,
        &json!({"is_active": true}),
        Some("W/\"v3-inactive\""),
    )
    .await;
    expect_error(res, StatusCode::PRECONDITION_FAILED, "precondition-failed").await;
    let res = restore(&app, &ann, &id, 1, Some("\"v3-inactive\"")).await;
    assert_eq!(res.status(), StatusCode::OK);

    // An upload that would make a new skill has no state to match.
    let (content_type, body) = multipart(&[(
        "files",
        Some("SKILL.md"),
        skill_md("fresh", "New.").as_bytes(),
    )]);
    for tag in ["*", "\"v1\""] {
        let res = app
            .request(Method::POST, "/api/v1/skills/upload")
            .bearer_auth(&ann.access)
            .header("content-type", &content_type)
            .header("if-match", tag)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::PRECONDITION_FAILED, "precondition-failed").await;
    }
    let list = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(list["total"], 1);
    // A malformed If-Match is refused, not treated as a condition that never holds.
    let res = put(&app, &ann, &id, &json!({"is_active": true}), Some("v4")).await;
    expect_error(res, StatusCode::BAD_REQUEST, "if-match-invalid").await;
}

/// Past `skills.keep_versions`, the oldest versions go, the current one always stays, and the
/// blobs only they held are removed from the disk.
async fn old_versions_are_pruned_and_their_blobs_collected(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.skills.keep_versions = 3).await;
    let ann = app.user("ann").await;
    let id = create(&app, &ann, "pdf", "PDFs.").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shared = vec![b's'; 10_000];
    for n in 2..=7 {
        let unique = format!("version {n}\n").repeat(100);
        upload_into(
            &app,
            &ann,
            &id,
            &[("unique.txt", unique.as_bytes()), ("shared.bin", &shared)],
        )
        .await;
    }
    let items = versions(&app, &ann, &id).await;
    let numbers: Vec<i64> = items
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [7, 6, 5]);
    for gone in [1, 4] {
        let res = app
            .get_auth(&format!("/api/v1/skills/{id}/versions/{gone}"), &ann.access)
            .await;
        expect_error(res, StatusCode::NOT_FOUND, "not-found").await;
    }
    // On disk: exactly the blobs of versions 5 to 7 (one SKILL.md, one shared file, three
    // unique files).
    let mut wanted = BTreeSet::new();
    for n in [5, 6, 7] {
        for file in version(&app, &ann, &id, n).await["files"]
            .as_array()
            .unwrap()
        {
            wanted.insert(file["sha256"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(wanted.len(), 5);
    let (on_disk, _) = blobs_on_disk(&app.settings, &ann).await;
    assert_eq!(on_disk, wanted);
    for n in [5, 6, 7] {
        version_files(&app, &ann, &id, n).await;
    }
    // Deleting the skill removes its versions and their blobs.
    let res = app
        .delete_auth(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(blobs_on_disk(&app.settings, &ann).await.0, BTreeSet::new());
}

/// The quota counts each distinct file once, whatever number of versions and skills hold it.
async fn a_file_kept_by_many_versions_counts_once_in_the_quota(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.skills.max_user_bytes = 300 * 1024).await;
    let ann = app.user("ann").await;
    let id = create(&app, &ann, "data", "Data.").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = vec![7u8; 200 * 1024];
    upload_into(&app, &ann, &id, &[("table.bin", &big)]).await;
    // Ten more versions that keep the 200 KiB file: 2 MiB if each counted it.
    for n in 0..10 {
        let res = put(
            &app,
            &ann,
            &id,
            &json!({"description": format!("Data, take {n}.")}),
            None,
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // The same bytes in a second skill cost nothing more either.
    let copy = upload(
        &app,
        &ann,
        &[
            (
                "files",
                Some("SKILL.md"),
                skill_md("copy", "Copy.").as_bytes(),
            ),
            ("files", Some("table.bin"), &big),
        ],
    )
    .await;
    assert_eq!(copy.status(), StatusCode::CREATED);
    assert_eq!(versions(&app, &ann, &id).await.len(), 12);
    // A second distinct 200 KiB file is over the quota.
    let other = vec![8u8; 200 * 1024];
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("skill_id", None, id.as_bytes())];
    parts.push(("files", Some("other.bin"), &other));
    let res = upload(&app, &ann, &parts).await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "quota-exceeded").await;
    let (on_disk, bytes) = blobs_on_disk(&app.settings, &ann).await;
    assert!(
        bytes < 300 * 1024,
        "{bytes} bytes in {} blobs",
        on_disk.len()
    );
}

/// A collection cut short leaves rows whose bytes are gone and bytes without a row; the next
/// start of the user's workspace finishes it, and every version still reads back whole.
async fn a_crash_during_collection_is_finished_at_the_next_start(backend: Backend) {
    let mut app = spawn_app(backend.clone()).await;
    let ann = app.user("ann").await;
    let id = create(&app, &ann, "pdf", "PDFs.").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    upload_into(&app, &ann, &id, &[("a.txt", b"kept\n")]).await;
    let before = version_files(&app, &ann, &id, 2).await;
    let (data_dir, url) = (app.data_dir.clone(), app.settings.database.url.clone());
    let settings = app.settings.clone();
    app.stop().await;
    let db = Db {
        sqlite: data_dir.join("agentskills.db"),
        postgres: url.clone(),
    };
    // What a crash in the middle of a collection leaves: a blob row no version refers to whose
    // bytes were removed already, and stored bytes whose row is gone (or that were stored for
    // a change that was never recorded).
    let stray = sha256_hex(b"stray");
    crate::helpers::store_behind_the_back(&settings, &ann.id, &stray, b"stray").await;
    let forgotten = sha256_hex(b"forgotten");
    db.insert_blob_row(&ann.id, &forgotten, 9).await;
    assert_eq!(db.count_blob_rows(&ann.id).await, 3);

    let again = spawn_app_with(backend, |s| {
        s.server.data_dir = data_dir.clone();
        s.database.url = url.clone();
    })
    .await;
    // The first request starts the workspace, which collects as it starts; a change (one that
    // makes no version) waits in its mailbox until that is done.
    assert_eq!(version_files(&again, &ann, &id, 2).await, before);
    let res = put(&again, &ann, &id, &json!({"is_active": false}), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(version_files(&again, &ann, &id, 2).await, before);
    let (on_disk, _) = blobs_on_disk(&again.settings, &ann).await;
    assert!(!on_disk.contains(&stray), "{on_disk:?}");
    assert_eq!(on_disk.len(), 2, "SKILL.md and a.txt: {on_disk:?}");
    assert_eq!(db.count_blob_rows(&ann.id).await, 2);
}

/// A test's database, reached beside the server.
struct Db {
    sqlite: std::path::PathBuf,
    postgres: Option<String>,
}

impl Db {
    async fn insert_blob_row(&self, user: &str, sha256: &str, size: i64) {
        let user = uuid::Uuid::parse_str(user).unwrap();
        match &self.postgres {
            None => {
                let conn = rusqlite::Connection::open(&self.sqlite).unwrap();
                conn.execute(
                    "INSERT INTO blobs (user_id, sha256, size, created_at) VALUES (?1, ?2, ?3, 0)",
                    rusqlite::params![user, sha256, size],
                )
                .unwrap();
            }
            Some(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .execute(
                        "INSERT INTO blobs (user_id, sha256, size, created_at) \
                         VALUES ($1, $2, $3, now())",
                        &[&user, &sha256, &size],
                    )
                    .await
                    .unwrap();
            }
        }
    }

    async fn count_blob_rows(&self, user: &str) -> i64 {
        let user = uuid::Uuid::parse_str(user).unwrap();
        match &self.postgres {
            None => {
                let conn = rusqlite::Connection::open(&self.sqlite).unwrap();
                conn.query_row(
                    "SELECT COUNT(*) FROM blobs WHERE user_id = ?1",
                    rusqlite::params![user],
                    |r| r.get(0),
                )
                .unwrap()
            }
            Some(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .query_one("SELECT COUNT(*) FROM blobs WHERE user_id = $1", &[&user])
                    .await
                    .unwrap()
                    .get(0)
            }
        }
    }
}

/// A zip made on Unix, each entry with its mode.
fn unix_zip(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, mode) in entries {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Each file of a version, by path: whether it is executable.
async fn executable_bits(
    app: &TestApp,
    user: &TestUser,
    id: &str,
    n: i64,
) -> BTreeMap<String, bool> {
    version(app, user, id, n).await["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["executable"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A script zipped on Unix with mode 0755 is executable in the skill (as `git archive`, `zip`
/// and Finder keep it); replacing its bytes by a plain file upload keeps the bit; an archive
/// that says 0644 takes it away; an export (scripts 0755) uploads again with the same bits.
async fn executable_bits_come_from_zips_and_survive_replacement_and_export(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let zip = unix_zip(&[
        (
            "tool/SKILL.md",
            skill_md("tool", "Runs a tool.").as_bytes(),
            0o644,
        ),
        ("tool/scripts/run.sh", b"#!/bin/sh\necho one\n", 0o755),
        ("tool/notes.txt", b"notes\n", 0o600),
    ]);
    let res = upload(&app, &ann, &[("files", Some("tool.zip"), &zip)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let want = |run: bool| {
        BTreeMap::from([
            ("SKILL.md".to_owned(), false),
            ("notes.txt".to_owned(), false),
            ("scripts/run.sh".to_owned(), run),
        ])
    };
    assert_eq!(executable_bits(&app, &ann, &id, 1).await, want(true));

    // New bytes, sent as a form part (which carries no mode): the script stays a script.
    upload_into(
        &app,
        &ann,
        &id,
        &[("scripts/run.sh", b"#!/bin/sh\necho two\n")],
    )
    .await;
    assert_eq!(executable_bits(&app, &ann, &id, 2).await, want(true));

    // An archive made on Unix that says 0644: no longer executable.
    let plain = unix_zip(&[
        (
            "SKILL.md",
            skill_md("tool", "Runs a tool.").as_bytes(),
            0o644,
        ),
        ("scripts/run.sh", b"#!/bin/sh\necho three\n", 0o644),
    ]);
    let res = upload(
        &app,
        &ann,
        &[
            ("skill_id", None, id.as_bytes()),
            ("files", Some("plain.zip"), &plain),
        ],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    assert_eq!(executable_bits(&app, &ann, &id, 3).await, want(false));

    // Version 1's export uploads again as the same files with the same bits (the same digest).
    let res = app
        .get_auth(
            &format!("/api/v1/skills/{id}/versions/1/export"),
            &ann.access,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let archive = res.bytes().await.unwrap().to_vec();
    let bob = app.user("bob").await;
    let res = upload(&app, &bob, &[("files", Some("tool-v1.zip"), &archive)]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let bobs = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(executable_bits(&app, &bob, &bobs, 1).await, want(true));
    assert_eq!(
        versions(&app, &bob, &bobs).await[0]["digest"],
        version(&app, &ann, &id, 1).await["digest"]
    );
}

/// The skills' folders on this server's disk are copies of the current versions, made from the
/// blobs: wiped while the server runs (by an operator, or a cache that evicts them), every read,
/// command and change still works, each making what it needs again.
async fn the_local_copies_are_a_cache_that_may_be_wiped_while_serving(backend: Backend) {
    let app = spawn_app(backend).await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "agent").await;
    let id = app
        .upload_skill(
            &ann,
            &[
                ("SKILL.md", skill_md("pdf", "PDFs.").as_bytes()),
                ("scripts/run.sh", b"echo from-the-script\n"),
                ("reference.md", b"# Reference\n"),
            ],
        )
        .await;
    let skills = app.data_dir.join("skills");
    let wipe = || {
        for entry in std::fs::read_dir(&skills).unwrap().flatten() {
            std::fs::remove_dir_all(entry.path()).unwrap();
        }
        assert_eq!(std::fs::read_dir(&skills).unwrap().count(), 0);
    };
    // A file over MCP, as a resource, through the REST API, and a command.
    wipe();
    let read = mcp_call(
        &app,
        &token,
        "read_reference_file",
        json!({"skill_name": "pdf", "file_name": "reference.md"}),
    )
    .await;
    assert_eq!(
        read["result"]["content"][0]["text"], "# Reference\n",
        "{read}"
    );
    wipe();
    let file = app
        .get_auth(
            &format!("/api/v1/skills/{id}/files/scripts/run.sh"),
            &ann.access,
        )
        .await;
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.text().await.unwrap(), "echo from-the-script\n");
    wipe();
    let ran = mcp_call(
        &app,
        &token,
        "run_shell_command",
        json!({"skill_name": "pdf", "command": "sh scripts/run.sh"}),
    )
    .await;
    let text = ran["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("from-the-script"), "{ran}");
    // A change made on a wiped disk starts from the current version, not from nothing.
    wipe();
    let changed = upload_into(&app, &ann, &id, &[("notes.md", b"more\n")]).await;
    assert_eq!(changed["version"], 2, "{changed}");
    let files = current_files(&app, &ann, &id).await;
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["SKILL.md", "notes.md", "reference.md", "scripts/run.sh"]
    );
    assert_eq!(versions(&app, &ann, &id).await.len(), 2);
}

/// `storage.cache_bytes`: past it, the copies of the users whose skills were used least recently
/// are removed (their workspaces stopped first), and come back from the blobs when next read.
async fn past_the_cache_limit_the_least_recently_used_copies_go(backend: Backend) {
    let app = spawn_app(backend).await;
    let big = vec![b'x'; 64 * 1024];
    let mut users = Vec::new();
    for name in ["ann", "bob", "cat"] {
        let user = app.user(name).await;
        let (_, token) = app.api_token(&user, "agent").await;
        app.upload_skill(
            &user,
            &[
                (
                    "SKILL.md",
                    skill_md(&format!("{name}-skill"), "Big.").as_bytes(),
                ),
                ("data.bin", &big),
            ],
        )
        .await;
        users.push((user, token));
    }
    let skills = app.data_dir.join("skills");
    let present = |user: &TestUser| skills.join(&user.id).exists();
    // Used in the order bob, cat, ann (whole seconds apart: uses are counted in seconds).
    for i in [1, 2, 0] {
        let (user, token) = &users[i];
        let read = mcp_call(
            &app,
            token,
            "read_reference_file",
            json!({"skill_name": format!("{}-skill", ["ann", "bob", "cat"][i]), "file_name": "SKILL.md"}),
        )
        .await;
        assert!(read["result"]["isError"] != true, "{read}");
        assert!(present(user));
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    // Room for two users' copies: bob's, the least recently used, goes.
    let limit = 2 * 64 * 1024 + 4096;
    assert_eq!(app.state.workspaces.evict(limit).await.unwrap(), 1);
    assert!(!present(&users[1].0) && present(&users[0].0) && present(&users[2].0));
    // Under the limit: nothing more goes.
    assert_eq!(app.state.workspaces.evict(limit).await.unwrap(), 0);
    // Bob's skill is served again, its copy made from the blobs.
    let read = mcp_call(
        &app,
        &users[1].1,
        "read_reference_file",
        json!({"skill_name": "bob-skill", "file_name": "data.bin"}),
    )
    .await;
    assert_eq!(
        read["result"]["content"][0]["text"].as_str().map(str::len),
        Some(big.len()),
        "{read}"
    );
    assert!(present(&users[1].0));
}
