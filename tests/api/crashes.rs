//! The real binary killed with `SIGKILL` in the middle of uploads and in the middle of a blob
//! collection, then started again on the same data dir and database: every version reads back
//! whole (no version points at a missing blob), every upload that was answered is there, each
//! skill's current files are its latest version, and what the crash left unreferenced (blobs,
//! partial copies, rows) is gone once the user's workspace has started again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::backend_tests;
use crate::helpers::{Backend, PgDatabase};
use crate::skills::multipart;

backend_tests!(
    a_kill_during_uploads_loses_no_version,
    a_kill_during_a_collection_loses_no_version
);

const PASSWORD: &str = "ann-password-123";

/// The server as a process of its own, on a data dir and database that outlive it.
struct Server {
    child: Child,
    url: String,
    http: Client,
}

impl Server {
    async fn start(data: &Path, database: Option<&str>, keep_versions: u32) -> Server {
        let log = data.with_extension(format!("log-{}", uuid::Uuid::new_v4()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"));
        cmd.env_clear()
            .env("AGENTSKILLS_SCRYPT_LOG_N", "4")
            .env("AGENTSKILLS_BIND", "127.0.0.1:0")
            .env("AGENTSKILLS_DATA_DIR", data)
            .env("AGENTSKILLS_KEEP_VERSIONS", keep_versions.to_string())
            .env("AGENTSKILLS_MAX_SKILL_FILES", "2000")
            // The only server of these blobs: what a crash left may go at the next load.
            .env("AGENTSKILLS_STORAGE_SWEEP_GRACE_SECS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = database {
            cmd.env("DATABASE_URL", url);
        }
        let mut child = cmd.spawn().unwrap();
        for _ in 0..400 {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = logged.split("listening on ").nth(1) {
                let url = rest
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap()
                    .to_owned();
                return Server {
                    child,
                    url,
                    http: Client::new(),
                };
            }
            assert!(child.try_wait().unwrap().is_none(), "exited: {logged}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no listen address: {}",
            std::fs::read_to_string(&log).unwrap()
        );
    }

    /// `SIGKILL`: nothing of the server's own shutdown runs.
    fn kill(self) {
        drop(self);
    }

    async fn access(&self, register: bool) -> String {
        if register {
            let res = self
                .http
                .post(format!("{}/api/v1/auth/register", self.url))
                .json(&json!({"email": "ann@example.com", "username": "ann", "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
        }
        let res = self
            .http
            .post(format!("{}/api/v1/auth/login", self.url))
            .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of the server that may die under it.
#[derive(Clone)]
struct Ann {
    url: String,
    access: String,
    http: Client,
}

impl Ann {
    fn of(server: &Server, access: &str) -> Ann {
        Ann {
            url: server.url.clone(),
            access: access.to_owned(),
            http: Client::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.access)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let res = self.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        res.json().await.unwrap()
    }

    /// An upload of `files` (into `skill` when given); the answer, or `None` when the server
    /// died before it answered.
    async fn upload(&self, skill: Option<&str>, files: &[(String, Vec<u8>)]) -> Option<Value> {
        let mut parts: Vec<(&str, Option<&str>, &[u8])> = Vec::new();
        if let Some(id) = skill {
            parts.push(("skill_id", None, id.as_bytes()));
        }
        parts.extend(
            files
                .iter()
                .map(|(p, b)| ("files", Some(p.as_str()), b.as_slice())),
        );
        let (content_type, body) = multipart(&parts);
        let res = self
            .http
            .post(format!("{}/api/v1/skills/upload", self.url))
            .bearer_auth(&self.access)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .ok()?;
        let status = res.status();
        let body: Value = res.json().await.ok()?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Some(body)
    }

    /// Every skill's versions, each read back whole: by skill name, version → path → bytes.
    /// Checks each file's bytes against its digest and size, and that the skill's current
    /// files are its latest version.
    async fn everything(&self) -> BTreeMap<String, BTreeMap<i64, BTreeMap<String, Vec<u8>>>> {
        let list = self.json("/api/v1/skills?per_page=100").await;
        let mut out = BTreeMap::new();
        for skill in list["items"].as_array().unwrap() {
            let (id, name) = (
                skill["id"].as_str().unwrap(),
                skill["name"].as_str().unwrap(),
            );
            let listed = self.json(&format!("/api/v1/skills/{id}/versions")).await;
            let mut versions = BTreeMap::new();
            for item in listed["items"].as_array().unwrap() {
                let n = item["version"].as_i64().unwrap();
                let detail = self
                    .json(&format!("/api/v1/skills/{id}/versions/{n}"))
                    .await;
                let mut files = BTreeMap::new();
                for file in detail["files"].as_array().unwrap() {
                    let path = file["path"].as_str().unwrap();
                    let res = self
                        .get(&format!("/api/v1/skills/{id}/versions/{n}/files/{path}"))
                        .await;
                    assert_eq!(res.status(), StatusCode::OK, "{name} v{n} {path}");
                    let bytes = res.bytes().await.unwrap().to_vec();
                    assert_eq!(sha256_hex(&bytes), file["sha256"], "{name} v{n} {path}");
                    assert_eq!(bytes.len() as u64, file["size"].as_u64().unwrap());
                    files.insert(path.to_owned(), bytes);
                }
                versions.insert(n, files);
            }
            let (&latest, newest) = versions.iter().next_back().unwrap();
            assert_eq!(skill["version"], latest, "{name}: the current version");
            assert_eq!(
                &self.current_files(id).await,
                newest,
                "{name}: current files"
            );
            out.insert(name.to_owned(), versions);
        }
        out
    }

    /// The skill's current files, through the plain files API (its materialized folder).
    async fn current_files(&self, id: &str) -> BTreeMap<String, Vec<u8>> {
        let list = self.json(&format!("/api/v1/skills/{id}/files")).await;
        let mut files = BTreeMap::new();
        for file in list["items"].as_array().unwrap() {
            let path = file["path"].as_str().unwrap();
            let res = self.get(&format!("/api/v1/skills/{id}/files/{path}")).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            files.insert(path.to_owned(), res.bytes().await.unwrap().to_vec());
        }
        files
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `len` bytes that no other `(seed, len)` gives: a new blob each time.
fn unique_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = sha2::Sha256::digest(block);
    }
    out.truncate(len);
    out
}

fn skill_md(name: &str) -> Vec<u8> {
    format!("---\nname: {name}\ndescription: Survives crashes.\n---\n# {name}\n").into_bytes()
}

/// The names of the files under the user's blob prefix (blobs, and any partial copy).
fn blob_files(data: &Path, user: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![data.join("blobs").join(user)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(_) => {
                    found.insert(entry.file_name().to_string_lossy().into_owned());
                }
                // Removed while listed.
                Err(_) => {}
            }
        }
    }
    found
}

fn user_id(data: &Path) -> String {
    std::fs::read_dir(data.join("skills"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| uuid::Uuid::parse_str(n).is_ok())
        .unwrap()
}

/// The digests the database records as the user's blobs.
async fn blob_rows(data: &Path, database: Option<&str>, user: &str) -> BTreeSet<String> {
    let user = uuid::Uuid::parse_str(user).unwrap();
    match database {
        None => {
            let conn = rusqlite::Connection::open(data.join("agentskills.db")).unwrap();
            let mut stmt = conn
                .prepare("SELECT sha256 FROM blobs WHERE user_id = ?1")
                .unwrap();
            stmt.query_map(rusqlite::params![user], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        Some(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query("SELECT sha256 FROM blobs WHERE user_id = $1", &[&user])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        }
    }
}

/// After a restart: everything reads back whole; then, once a change has gone through the user's
/// workspace (which repairs and collects when it starts), the blobs on disk and their rows are
/// exactly those the kept versions refer to. Returns the skills as read back.
async fn check_after_restart(
    server: &Server,
    data: &Path,
    database: Option<&str>,
    round: &str,
) -> BTreeMap<String, BTreeMap<i64, BTreeMap<String, Vec<u8>>>> {
    let ann = Ann::of(server, &server.access(false).await);
    let before = ann.everything().await;
    // A change: it waits in the workspace's mailbox until the start's repairs are done.
    let probe = format!("probe-{round}");
    let files = vec![("SKILL.md".to_owned(), skill_md(&probe))];
    assert!(ann.upload(None, &files).await.is_some());
    let after = ann.everything().await;
    let mut without_probe = after.clone();
    without_probe.remove(&probe);
    assert_eq!(
        without_probe, before,
        "{round}: the repair changed a version"
    );
    let referenced: BTreeSet<String> = after
        .values()
        .flat_map(|versions| versions.values())
        .flat_map(|files| files.values())
        .map(|bytes| sha256_hex(bytes))
        .collect();
    let user = user_id(data);
    assert_eq!(
        blob_files(data, &user),
        referenced,
        "{round}: blobs on disk"
    );
    assert_eq!(
        blob_rows(data, database, &user).await,
        referenced,
        "{round}: blob rows"
    );
    after
}

/// A data dir and, for PostgreSQL, a database of the test's own.
async fn prepared(backend: &Backend) -> (tempfile::TempDir, PathBuf, Option<PgDatabase>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres(admin) => Some(PgDatabase::create(admin).await),
    };
    (dir, data, db)
}

/// Uploads run four at a time (new skills and new versions of one skill, each with new files, so
/// blobs are being stored and old versions pruned and collected); the server is killed at a
/// different moment each round: before anything is stored, while blobs are being written, and
/// once some of the uploads have been answered (the others in flight).
async fn a_kill_during_uploads_loses_no_version(backend: Backend) {
    let (_dir, data, db) = prepared(&backend).await;
    let database = db.as_ref().map(|d| d.url.as_str());
    let mut server = Server::start(&data, database, 3).await;
    let access = server.access(true).await;
    let ann = Ann::of(&server, &access);
    let first = ann
        .upload(None, &[("SKILL.md".to_owned(), skill_md("pdf"))])
        .await
        .unwrap();
    let pdf = first["id"].as_str().unwrap().to_owned();
    let user = user_id(&data);

    // When to kill: once this many new blob files have appeared (0: at once), or once this many
    // of the four uploads have been answered.
    enum When {
        Blobs(usize),
        Answered(usize),
    }
    let rounds = [
        When::Blobs(0),
        When::Blobs(1),
        When::Blobs(12),
        When::Blobs(40),
        When::Answered(1),
        When::Answered(3),
    ];
    for (round, when) in rounds.iter().enumerate() {
        let ann = Ann::of(&server, &server.access(false).await);
        let stored_before = blob_files(&data, &user).len();
        let mut uploads = Vec::new();
        for k in 0..4 {
            let ann = ann.clone();
            let pdf = pdf.clone();
            uploads.push(tokio::spawn(async move {
                let into_pdf = k % 2 == 0;
                let name = if into_pdf {
                    "pdf".to_owned()
                } else {
                    format!("s-{round}-{k}")
                };
                let mut files = vec![("SKILL.md".to_owned(), skill_md(&name))];
                for f in 0..24 {
                    let path = format!("ref/r{round}-u{k}-f{f}.bin");
                    files.push((path.clone(), unique_bytes(&path, 48 * 1024)));
                }
                let answer = ann.upload(into_pdf.then_some(pdf.as_str()), &files).await;
                (files, answer)
            }));
        }
        match when {
            When::Blobs(n) => {
                for _ in 0..2000 {
                    if blob_files(&data, &user).len() >= stored_before + n {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            When::Answered(n) => {
                while uploads.iter().filter(|u| u.is_finished()).count() < *n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        server.kill();
        let mut answered = Vec::new();
        for upload in uploads {
            let (files, answer) = upload.await.unwrap();
            if let Some(answer) = answer {
                answered.push((files, answer));
            }
        }

        server = Server::start(&data, database, 3).await;
        let skills = check_after_restart(&server, &data, database, &format!("r{round}")).await;
        // What was answered was recorded: its version has the files it sent (unless newer
        // versions have since pushed it past the three kept).
        for (files, answer) in &answered {
            let name = answer["name"].as_str().unwrap();
            let n = answer["version"].as_i64().unwrap();
            let versions = &skills[name];
            let latest = *versions.keys().next_back().unwrap();
            assert!(n <= latest, "{name}: answered v{n}, found up to v{latest}");
            if n + 3 <= latest {
                continue;
            }
            let kept = &versions[&n];
            for (path, bytes) in files {
                assert_eq!(kept.get(path), Some(bytes), "{name} v{n} {path}");
            }
        }
    }
    server.kill();
}

/// A skill of many files, every one of them its own blob, is deleted (some files it shares with
/// another skill, which must keep them); the server is killed while the collection is removing
/// its blobs, seen from outside as the blob folder shrinking.
async fn a_kill_during_a_collection_loses_no_version(backend: Backend) {
    let (_dir, data, db) = prepared(&backend).await;
    let database = db.as_ref().map(|d| d.url.as_str());
    let mut server = Server::start(&data, database, 20).await;
    let access = server.access(true).await;
    let ann = Ann::of(&server, &access);
    let shared: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let path = format!("shared/s{i}.txt");
            let bytes = unique_bytes(&path, 300);
            (path, bytes)
        })
        .collect();
    let mut kept = vec![("SKILL.md".to_owned(), skill_md("kept"))];
    kept.extend(shared.iter().cloned());
    ann.upload(None, &kept).await.unwrap();
    let user = user_id(&data);

    let mut cut_short = 0;
    for round in 0..4 {
        let ann = Ann::of(&server, &server.access(false).await);
        let name = format!("big-{round}");
        let mut files = vec![("SKILL.md".to_owned(), skill_md(&name))];
        files.extend(shared.iter().cloned());
        for f in 0..1500 {
            let path = format!("many/{f:04}.txt");
            let bytes = unique_bytes(&format!("{round}/{path}"), 200);
            files.push((path, bytes));
        }
        let big = ann.upload(None, &files).await.unwrap();
        let id = big["id"].as_str().unwrap().to_owned();
        let stored = blob_files(&data, &user).len();
        let deleting = {
            let ann = ann.clone();
            tokio::spawn(async move {
                ann.http
                    .delete(format!("{}/api/v1/skills/{id}", ann.url))
                    .bearer_auth(&ann.access)
                    .send()
                    .await
                    .map(|r| r.status())
            })
        };
        // Killed once a tenth of the big skill's own blobs are gone, before all of them are.
        loop {
            let now = blob_files(&data, &user).len();
            if now + 150 <= stored || deleting.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let remaining = blob_files(&data, &user).len();
        server.kill();
        let answered = deleting.await.unwrap();
        if answered.is_err() && remaining + 1500 > stored {
            cut_short += 1;
        }

        server = Server::start(&data, database, 20).await;
        let skills = check_after_restart(&server, &data, database, &format!("r{round}")).await;
        // The deletion was recorded before the collection began.
        assert!(!skills.contains_key(&name), "{name} is back: {skills:?}");
        let kept = &skills["kept"][&1];
        for (path, bytes) in &shared {
            assert_eq!(kept.get(path), Some(bytes), "kept/{path}");
        }
    }
    // Seen from outside, at least one kill fell inside a collection (1500 blobs take far longer
    // to remove than the 1 ms this test polls at).
    assert!(cut_short > 0, "no kill fell inside a collection");
    server.kill();
}
