//! A data dir and database written by the release before skill versions
//! (`tests/fixtures/before-versions/`, made by `tests/fixtures/make-before-versions.sh` with that
//! release's binary) start under this one with nothing lost: each skill becomes its version 1,
//! byte for byte and with its executable bits, at the first start or by `migrate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, PgDatabase, TestApp, spawn_app_with};

backend_tests!(a_data_dir_from_before_versions_becomes_version_1);

const PASSWORD: &str = "ann-password-123";

fn fixture(backend: &Backend) -> PathBuf {
    let variant = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/before-versions")
        .join(variant)
}

/// A copy of `from` at `to` (files and folders; modes as git checked them out, the secret key
/// made private as the server wrote it).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Every file below `dir` with its bytes and whether it is executable, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, (Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let mode = entry.metadata().unwrap().permissions().mode();
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, (std::fs::read(&path).unwrap(), mode & 0o111 != 0));
            }
        }
    }
    out
}

/// The one user's folder of skills in a fixture (named by the user's id; `.staging` is not one).
fn user_skills(data: &Path) -> PathBuf {
    std::fs::read_dir(data.join("skills"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| uuid::Uuid::parse_str(n).is_ok())
        })
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap()
}

/// A data dir (and for PostgreSQL, a database) holding the fixture.
async fn prepared(backend: &Backend, at: &Path) -> Option<PgDatabase> {
    let source = fixture(backend);
    copy_dir(&source, at);
    private(&at.join("secret_key"));
    match backend {
        Backend::Sqlite => {
            private(&at.join("agentskills.db"));
            None
        }
        Backend::Postgres(admin) => {
            let _ = std::fs::remove_file(at.join("dump.sql"));
            let db = PgDatabase::create(admin).await;
            let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let dump = std::fs::read_to_string(source.join("dump.sql")).unwrap();
            client.batch_execute(&dump).await.unwrap();
            Some(db)
        }
    }
}

async fn start(data: &Path, db: Option<&PgDatabase>) -> TestApp {
    let (data, url) = (data.to_owned(), db.map(|d| d.url.clone()));
    spawn_app_with(Backend::Sqlite, move |s| {
        s.server.data_dir = data;
        s.database.url = url;
    })
    .await
}

async fn login(app: &TestApp) -> String {
    let res = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn a_data_dir_from_before_versions_becomes_version_1(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = prepared(&backend, &data).await;
    let before: BTreeMap<String, BTreeMap<String, (Vec<u8>, bool)>> =
        std::fs::read_dir(user_skills(&data))
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    tree(&e.path()),
                )
            })
            .collect();
    assert_eq!(before.len(), 3);
    assert!(
        before["pdf"]["scripts/fill.py"].1,
        "the fixture's script is executable"
    );

    let mut app = start(&data, db.as_ref()).await;
    let access = login(&app).await;
    let list = app.get_json("/api/v1/skills", &access).await;
    let skills: Vec<(String, String, i64, bool)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
                s["version"].as_i64().unwrap(),
                s["is_active"].as_bool().unwrap(),
            )
        })
        .collect();
    let summary: Vec<(&str, i64, bool)> = skills
        .iter()
        .map(|(n, _, v, a)| (n.as_str(), *v, *a))
        .collect();
    assert_eq!(
        summary,
        [("docx", 1, false), ("notes", 1, true), ("pdf", 1, true)]
    );
    for (name, id, ..) in &skills {
        let versions = app
            .get_json(&format!("/api/v1/skills/{id}/versions"), &access)
            .await;
        assert_eq!(versions["total"], 1, "{name}: {versions}");
        let one = app
            .get_json(&format!("/api/v1/skills/{id}/versions/1"), &access)
            .await;
        let want = &before[name];
        let listed: Vec<&str> = one["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(listed, want.keys().map(String::as_str).collect::<Vec<_>>());
        for file in one["files"].as_array().unwrap() {
            let path = file["path"].as_str().unwrap();
            assert_eq!(file["executable"], want[path].1, "{name}/{path}");
            let res = app
                .get_auth(
                    &format!("/api/v1/skills/{id}/versions/1/files/{path}"),
                    &access,
                )
                .await;
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(
                res.bytes().await.unwrap().to_vec(),
                want[path].0,
                "{name}/{path}"
            );
        }
    }
    // The folders are as they were; the skills are served as they were.
    let after: BTreeMap<String, BTreeMap<String, (Vec<u8>, bool)>> =
        std::fs::read_dir(user_skills(&data))
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    tree(&e.path()),
                )
            })
            .collect();
    assert_eq!(after, before);
    let token = api_token(&app, &access).await;
    let loaded = mcp_tool(&app, &token, "load_skill", json!({"skill_name": "pdf"})).await;
    assert!(loaded.contains("Fill and merge PDF forms."), "{loaded}");

    // A change makes version 2; version 1 stays whole. A second start adds no version.
    let pdf = &skills.iter().find(|s| s.0 == "pdf").unwrap().1;
    let res = app
        .request(Method::PUT, &format!("/api/v1/skills/{pdf}"))
        .bearer_auth(&access)
        .json(&json!({"description": "Fill PDF forms."}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 2);
    app.stop().await;
    let again = start(&data, db.as_ref()).await;
    let access = login(&again).await;
    let versions = again
        .get_json(&format!("/api/v1/skills/{pdf}/versions"), &access)
        .await;
    let numbers: Vec<i64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    let res = again
        .get_auth(
            &format!("/api/v1/skills/{pdf}/versions/1/files/assets/logo.png"),
            &access,
        )
        .await;
    assert_eq!(
        res.bytes().await.unwrap().to_vec(),
        before["pdf"]["assets/logo.png"].0
    );

    // `migrate` does the same, with the server stopped, on a fresh copy.
    if matches!(backend, Backend::Sqlite) {
        let copy = dir.path().join("migrated");
        prepared(&backend, &copy).await;
        let migrate = |data: &Path| {
            Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"))
                .env_clear()
                .args(["--data-dir", data.to_str().unwrap(), "migrate"])
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let first = migrate(&copy);
        let out = String::from_utf8_lossy(&first.stdout).into_owned();
        assert!(
            first.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert!(
            out.contains(
                "recorded the skills of 1 user(s) from before versions as their version 1"
            ),
            "{out}"
        );
        let second = migrate(&copy);
        let out = String::from_utf8_lossy(&second.stdout).into_owned();
        assert!(second.status.success());
        assert!(!out.contains("recorded"), "{out}");
        let conn = rusqlite::Connection::open(copy.join("agentskills.db")).unwrap();
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM skills ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(versions, [1, 1, 1]);
    }
}

async fn api_token(app: &TestApp, access: &str) -> String {
    let res = app
        .request(Method::POST, "/api/v1/tokens")
        .bearer_auth(access)
        .json(&json!({"name": "agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One stateless (2026-07-28) `tools/call`: the text of its first content.
async fn mcp_tool(app: &TestApp, token: &str, tool: &str, arguments: Value) -> String {
    let params = json!({"name": tool, "arguments": arguments, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}});
    let res = app
        .request(Method::POST, "/mcp")
        .bearer_auth(token)
        .header("accept", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
