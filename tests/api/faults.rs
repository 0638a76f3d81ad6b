//! Faults from outside: PostgreSQL going away and coming back, a full disk during uploads, and
//! SIGTERM while uploads and event streams are open.
//!
//! Bounds on time here only tell an answer from a hang ("within 10 s"); none is about speed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentskills_mcp::config::SandboxMode;
use futures_util::StreamExt as _;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{
    Backend, PgDatabase, TcpProxy, TestApp, TestUser, expect_error, postgres_addr, spawn_app_with,
    with_host,
};

/// Longer than any answer should take, short enough to call a hang a failure.
const WITHIN: Duration = Duration::from_secs(10);

async fn within<F: Future>(what: &str, work: F) -> F::Output {
    tokio::time::timeout(WITHIN, work)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WITHIN:?}"))
}

/// A 503 `database-unavailable` with a `Retry-After` of at least a second.
async fn expect_unavailable(what: &str, res: Response) {
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "database-unavailable", "{what}: {body}");
    assert!(retry.is_some_and(|s| s >= 1), "{what}: no Retry-After");
}

/// An MCP session over Streamable HTTP, as a client in the middle of its work holds one.
struct McpSession {
    client: Client,
    base: String,
    token: String,
    session: String,
    next_id: u64,
}

impl McpSession {
    async fn open(client: &Client, base: &str, token: &str) -> McpSession {
        let res = client
            .post(format!("{base}/mcp"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "faults", "version": "1"}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let session = res.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let mcp = McpSession {
            client: client.clone(),
            base: base.to_owned(),
            token: token.to_owned(),
            session,
            next_id: 1,
        };
        let res = mcp
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        mcp
    }

    async fn post(&self, message: &Value) -> Response {
        self.client
            .post(format!("{}/mcp", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-06-18")
            .body(message.to_string())
            .send()
            .await
            .unwrap()
    }

    /// `tools/call load_skill`: the text of a result that is not an error.
    async fn load_skill(&mut self, name: &str) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let res = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "load_skill", "arguments": {"skill_name": name}}}))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["id"], id, "{body}");
        assert_ne!(body["result"]["isError"], true, "{body}");
        body["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text: {body}"))
            .to_owned()
    }
}

async fn create_skill(app: &TestApp, user: &TestUser, name: &str) -> Response {
    app.request(Method::POST, "/api/v1/skills")
        .bearer_auth(&user.access)
        .json(&json!({"name": name, "description": format!("The {name} skill.")}))
        .send()
        .await
        .unwrap()
}

async fn create_token(app: &TestApp, user: &TestUser, name: &str) -> Response {
    app.request(Method::POST, "/api/v1/tokens")
        .bearer_auth(&user.access)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap()
}

async fn health(app: &TestApp, path: &str) -> StatusCode {
    app.request(Method::GET, path)
        .send()
        .await
        .unwrap()
        .status()
}

/// PostgreSQL only: the database goes away under a running server (refused connections, open ones
/// reset) and comes back. Meanwhile what needs it answers 503 `database-unavailable` at once, MCP
/// goes on from memory, and afterwards the pool makes new connections by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_gives_503_and_the_pool_recovers_when_it_is_back() {
    let Some(Backend::Postgres(admin)) = Backend::postgres() else {
        eprintln!("TEST_DATABASE_URL is not set: the PostgreSQL outage test is not run");
        return;
    };
    let database = PgDatabase::create(&admin).await;
    let mut proxy = TcpProxy::start_to(postgres_addr(&database.url)).await;
    let through_proxy = with_host(&database.url, proxy.addr());
    // `Backend::Sqlite` only keeps `spawn_app_with` from making a database of its own: the
    // server's database is the one above, reached through the proxy.
    let mut app = spawn_app_with(Backend::Sqlite, |s| {
        s.database.url = Some(through_proxy);
        // A refused or silent database must be reported within a second or two, not hang.
        s.database.connect_timeout_secs = 1;
        s.database.acquire_timeout_secs = 1;
        // No timers that query the database, so the only query the proxy can hold back is the
        // one the test sent.
        s.tokens.sync_interval_secs = 3600;
        s.tokens.last_used_flush_secs = 3600;
        // Readiness here is about the database alone.
        s.sandbox.mode = SandboxMode::Off;
    })
    .await;
    let ann = app.user("ann").await;
    let (_, token) = app.api_token(&ann, "agent").await;
    assert_eq!(
        create_skill(&app, &ann, "pdf").await.status(),
        StatusCode::CREATED
    );
    let mut mcp = McpSession::open(&app.client, &app.base, &token).await;
    let skill_md = mcp.load_skill("pdf").await;
    assert!(skill_md.contains("name: pdf"), "{skill_md}");

    // The database goes away.
    proxy.stop().await;
    expect_unavailable(
        "login",
        within("login", app.login(&ann.email, &ann.password)).await,
    )
    .await;
    expect_unavailable(
        "GET /users/me",
        within(
            "GET /users/me",
            app.get_auth("/api/v1/users/me", &ann.access),
        )
        .await,
    )
    .await;
    expect_unavailable(
        "POST /tokens",
        within("POST /tokens", create_token(&app, &ann, "second")).await,
    )
    .await;
    expect_unavailable(
        "POST /skills",
        within("POST /skills", create_skill(&app, &ann, "docx")).await,
    )
    .await;
    assert_eq!(
        within("ready", health(&app, "/health/ready")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Anyone is told that the database does not answer, and nothing of what the driver said.
    let public: Value = within("health", app.request(Method::GET, "/health").send())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        public["database"],
        json!({"status": "unavailable", "reason": "the database does not answer"})
    );
    assert_eq!(
        within("live", health(&app, "/health/live")).await,
        StatusCode::OK
    );
    // MCP needs no database: an open session and a new one both load the skill.
    assert_eq!(within("MCP", mcp.load_skill("pdf")).await, skill_md);
    let mut fresh = within(
        "MCP initialize",
        McpSession::open(&app.client, &app.base, &token),
    )
    .await;
    assert_eq!(within("MCP", fresh.load_skill("pdf")).await, skill_md);

    // Queries in flight when the connection dies: 503 too, never 500.
    for (what, request) in [
        (
            "GET /users/me",
            app.request(Method::GET, "/api/v1/users/me")
                .bearer_auth(&ann.access),
        ),
        (
            "login",
            app.request(Method::POST, "/api/v1/auth/login")
                .json(&json!({"email": ann.email, "password": ann.password})),
        ),
    ] {
        proxy.start().await;
        // A pooled connection to hold the query back on.
        let warm = within("warm-up", app.get_auth("/api/v1/users/me", &ann.access)).await;
        assert_eq!(warm.status(), StatusCode::OK);
        proxy.freeze();
        let sent = tokio::spawn(request.send());
        within("the query to reach the proxy", proxy.wait_stalled()).await;
        proxy.stop().await;
        let res = within(what, sent).await.unwrap().unwrap();
        expect_unavailable(&format!("{what} in flight"), res).await;
    }

    // The database comes back: everything works again at the first try, with no restart.
    proxy.start().await;
    let res = within("login", app.login(&ann.email, &ann.password)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let ann = TestUser { access, ..ann };
    let me = within(
        "GET /users/me",
        app.get_auth("/api/v1/users/me", &ann.access),
    )
    .await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(
        within("POST /tokens", create_token(&app, &ann, "second"))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        within("POST /skills", create_skill(&app, &ann, "docx"))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        within("ready", health(&app, "/health/ready")).await,
        StatusCode::OK
    );
    // What failed during the outage left nothing behind.
    let tokens = app.get_json("/api/v1/tokens", &ann.access).await;
    assert_eq!(tokens["total"], 2, "{tokens}");
    let skills = app.get_json("/api/v1/skills", &ann.access).await;
    assert_eq!(skills["total"], 2, "{skills}");
    assert!(
        within("MCP", mcp.load_skill("docx"))
            .await
            .contains("name: docx")
    );
    // Stopped while the database is there, so that the shutdown's flush has somewhere to go.
    app.stop().await;
}

// ---- a full disk ----

/// `TEST_REQUIRE_FAULTS=1` makes a fault test that cannot set up its fault fail instead of pass.
fn faults_required() -> bool {
    std::env::var("TEST_REQUIRE_FAULTS").is_ok_and(|v| v == "1")
}

/// A tmpfs mounted for one test; unmounted when dropped, also when the test panics.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0711"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server still shutting down may hold the folder; the mount goes once it lets go.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A multipart upload of `files` (path, bytes), to the skill `skill_id` when given.
async fn upload(
    app: &TestApp,
    user: &TestUser,
    skill_id: Option<&str>,
    files: &[(&str, &[u8])],
) -> Response {
    crate::skills::upload(app, user, &parts(skill_id, files)).await
}

/// The parts of an upload: `skill_id` when given, then each file under its path.
fn parts<'a>(
    skill_id: Option<&'a str>,
    files: &[(&'a str, &'a [u8])],
) -> Vec<(&'static str, Option<&'a str>, &'a [u8])> {
    let id = skill_id.map(|id| ("skill_id", None, id.as_bytes()));
    id.into_iter()
        .chain(
            files
                .iter()
                .map(|(path, data)| ("files", Some(*path), *data)),
        )
        .collect()
}

fn skill_md(name: &str, description: &str) -> Vec<u8> {
    format!("---\nname: {name}\ndescription: {description}\n---\n# {name}\n").into_bytes()
}

/// `n` bytes that do not compress to nothing (tmpfs does not compress, but be plain about it).
fn blob(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Entries of a folder (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(list) => {
            let mut names: Vec<String> = list
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
        Err(_) => Vec::new(),
    }
}

/// A 507 `storage-full` that says so, and nothing of the upload left behind.
async fn expect_storage_full(app: &TestApp, user: &TestUser, res: Response, before: &Value) {
    let body = expect_error(res, StatusCode::INSUFFICIENT_STORAGE, "storage-full").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("storage is full")),
        "{body}"
    );
    let staging = app.settings.server.data_dir.join("skills").join(".staging");
    assert_eq!(entries(&staging), Vec::<String>::new(), "staging not empty");
    assert_eq!(&app.get_json("/api/v1/skills", &user.access).await, before);
}

/// The data dir on a 4 MiB tmpfs: uploads within every limit but beyond the disk are refused with
/// 507 `storage-full`, leave no row, folder or staged files, and an update that does not fit leaves
/// the old version whole; once there is room again, uploads work. Needs root (to mount). A file
/// takes its size twice on the data dir: in its skill's folder and as a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_uploads_with_507_and_leaves_no_half_skill() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let _disk = match Tmpfs::mount(&data_dir, "4m") {
        Ok(disk) => disk,
        Err(why) if !faults_required() => {
            eprintln!(
                "disk-full test not run: {why} (it needs root; set TEST_REQUIRE_FAULTS=1 to make this a failure)"
            );
            return;
        }
        Err(why) => panic!("TEST_REQUIRE_FAULTS=1 but the disk-full test cannot run: {why}"),
    };
    // The database is beside the small disk, not on it: the fault under test is the skills'.
    let database = dir.path().join("agentskills.db");
    let mut app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.data_dir = data_dir.clone();
        s.database.url = Some(format!("sqlite://{}", database.display()));
        s.sandbox.mode = SandboxMode::Off;
        // The fault under test is this disk's, blobs included.
        crate::helpers::keep_local_blobs(s);
    })
    .await;
    // Each upload's file fits the limits (10 MiB a file by default) but not always the disk.
    assert!(app.settings.skills.max_file_bytes >= 5 << 20);
    let ann = app.user("ann").await;
    let user_dir = data_dir.join("skills").join(&ann.id);
    let empty = app.get_json("/api/v1/skills", &ann.access).await;

    // Larger than the whole disk.
    let big = blob(5 << 20);
    let res = upload(
        &app,
        &ann,
        None,
        &[
            ("SKILL.md", &skill_md("big", "Too big.")),
            ("data.bin", &big),
        ],
    )
    .await;
    expect_storage_full(&app, &ann, res, &empty).await;
    assert!(!user_dir.join("big").exists(), "a half skill folder");

    // One that fits (twice 1 MiB), then one that does not fit beside it (twice 1.5 MiB).
    let a_data = blob(1 << 20);
    let res = upload(
        &app,
        &ann,
        None,
        &[
            ("SKILL.md", &skill_md("alpha", "The first.")),
            ("data.bin", &a_data),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let alpha: Value = res.json().await.unwrap();
    let alpha_id = alpha["id"].as_str().unwrap().to_owned();
    let with_alpha = app.get_json("/api/v1/skills", &ann.access).await;
    let alpha_files = app
        .get_json(&format!("/api/v1/skills/{alpha_id}/files"), &ann.access)
        .await;
    let b_data = blob(3 << 19);
    let beta = [
        ("SKILL.md", &skill_md("beta", "The second.")[..]),
        ("data.bin", &b_data[..]),
    ];
    let res = upload(&app, &ann, None, &beta).await;
    expect_storage_full(&app, &ann, res, &with_alpha).await;
    assert!(!user_dir.join("beta").exists(), "a half skill folder");

    // An update of alpha that does not fit (its staged copy is a second alpha): alpha unchanged.
    let res = upload(
        &app,
        &ann,
        Some(&alpha_id),
        &[
            ("SKILL.md", &skill_md("alpha", "Changed.")),
            ("more.bin", &blob(1 << 20)),
        ],
    )
    .await;
    expect_storage_full(&app, &ann, res, &with_alpha).await;
    assert_eq!(
        app.get_json(&format!("/api/v1/skills/{alpha_id}/files"), &ann.access)
            .await,
        alpha_files
    );
    let on_disk = app
        .get_auth(
            &format!("/api/v1/skills/{alpha_id}/files/data.bin"),
            &ann.access,
        )
        .await;
    assert_eq!(on_disk.bytes().await.unwrap(), a_data);
    assert_eq!(entries(&user_dir.join("alpha")), ["SKILL.md", "data.bin"]);

    // The server still works: a small upload fits, and after a deletion so does beta.
    let res = upload(
        &app,
        &ann,
        None,
        &[("SKILL.md", &skill_md("tiny", "Small enough."))],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .delete_auth(&format!("/api/v1/skills/{alpha_id}"), &ann.access)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = upload(&app, &ann, None, &beta).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let skills = app.get_json("/api/v1/skills", &ann.access).await;
    let names: Vec<&str> = skills["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta", "tiny"]);
    app.stop().await;
}

// ---- SIGTERM ----

/// The real binary serving on a port of its own; killed if the test ends without stopping it.
struct Server {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Server {
    /// `serve` on `data_dir` (SQLite), waiting until it says where it listens.
    async fn start(dir: &Path, data_dir: &Path, log_name: &str) -> Server {
        let log = dir.join(log_name);
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"))
            .env_clear()
            .env("AGENTSKILLS_SCRYPT_LOG_N", "4")
            .env("AGENTSKILLS_SANDBOX", "off")
            .env("AGENTSKILLS_LOG", "info")
            // Nothing is flushed before shutdown: only the shutdown can have written last use.
            .env("AGENTSKILLS_LAST_USED_FLUSH_SECS", "3600")
            .env(
                "AGENTSKILLS_SHUTDOWN_GRACE_SECS",
                SHUTDOWN_GRACE_SECS.to_string(),
            )
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            // No ./config.toml from the source tree.
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            log,
        };
        for _ in 0..400 {
            let logged = server.logged();
            if let Some(line) = logged.lines().find(|l| l.contains("listening on http://")) {
                server.url = line
                    .split("listening on ")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
                return server;
            }
            if server.exited().is_some() {
                panic!("the server exited at start: {logged}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no listen address: {}", server.logged());
    }

    fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().unwrap()
    }

    fn terminate(&self) {
        let pid = self.child.as_ref().unwrap().id();
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits for the process to exit (at most `limit`) and returns its status.
    async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still running {limit:?} after SIGTERM: {}",
                self.logged()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Short, so that a shutdown that waits out the grace period shows; long enough that event
/// streams, which the shutdown ends at once, are over well before it.
const SHUTDOWN_GRACE_SECS: u64 = 10;

/// Registers and logs in `name`; returns the access token.
async fn account(client: &Client, url: &str, name: &str) -> String {
    let email = format!("{name}@example.com");
    let password = format!("{name}-password-123");
    let res = client
        .post(format!("{url}/api/v1/auth/register"))
        .json(&json!({"email": email, "username": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    login(client, url, &email, &password).await
}

async fn login(client: &Client, url: &str, email: &str, password: &str) -> String {
    let res = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A task that reads an event stream to its end; it finishes when the server ends the stream.
fn drain(res: Response) -> tokio::task::JoinHandle<()> {
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.bytes_stream();
    tokio::spawn(async move { while let Some(Ok(_)) = body.next().await {} })
}

/// Reads from `stream` until `buf` holds `needle` or the peer closes.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) {
    let mut chunk = [0u8; 4096];
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The real binary gets SIGTERM with two event streams open and an upload half sent: the streams
/// end at once, the upload is finished (or refused cleanly), the pending token use is written, and
/// the process exits 0; started again, it finds the token's `last_used_at` and no half skill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_finishes_uploads_flushes_token_use_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let client = Client::builder().no_proxy().build().unwrap();
    let mut server = Server::start(dir.path(), &data_dir, "first.log").await;
    let url = server.url.clone();
    let access = account(&client, &url, "ann").await;
    let res = client
        .post(format!("{url}/api/v1/tokens"))
        .bearer_auth(&access)
        .json(&json!({"name": "agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let token_id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();

    // An MCP request, so a use of the token is pending (flushes are an hour apart).
    let mcp = McpSession::open(&client, &url, &token).await;
    // A legacy SSE stream and a Streamable HTTP GET stream, both open.
    let sse = client
        .get(format!("{url}/sse"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let sse = drain(sse);
    let get = client
        .get(format!("{url}/mcp"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &mcp.session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    let get = drain(get);

    // An upload in progress: the server is reading its body (it asked for it with 100 Continue)
    // and has half of it.
    let data = blob(256 * 1024);
    let skill = skill_md("slow", "Sent slowly.");
    let (content_type, body) =
        crate::skills::multipart(&parts(None, &[("SKILL.md", &skill), ("data.bin", &data)]));
    let mut upload = TcpStream::connect(server.addr()).await.unwrap();
    let head = format!(
        "POST /api/v1/skills/upload HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {access}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.addr(),
        body.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within(
        "100 Continue",
        read_until(&mut upload, &mut answer, b"100 Continue\r\n\r\n"),
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    answer.clear();
    let half = body.len() / 2;
    upload.write_all(&body[..half]).await.unwrap();

    server.terminate();
    // Both streams end while the upload still holds the server open: they were ended by the
    // shutdown, not cut at the end of the grace period.
    within("the SSE stream to end", sse).await.unwrap();
    within("the GET /mcp stream to end", get).await.unwrap();
    assert!(server.exited().is_none(), "exited before the upload ended");

    // The rest of the upload arrives after the signal.
    let sent = upload.write_all(&body[half..]).await;
    within(
        "the upload's answer",
        read_until(&mut upload, &mut answer, b"}"),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let stored = if answer.starts_with("HTTP/1.1 201") {
        true
    } else {
        // Failing is allowed, if it is clean: an error status or a closed connection, and then
        // no skill at all (checked below).
        eprintln!("the upload was cut by the shutdown (sent: {sent:?}): {answer}");
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 4")
                || answer.starts_with("HTTP/1.1 5"),
            "{answer}"
        );
        false
    };
    let status = server
        .wait_exit(Duration::from_secs(SHUTDOWN_GRACE_SECS + 10))
        .await;
    let first_log = server.logged();
    assert!(status.success(), "exit status {status}: {first_log}");
    assert!(!first_log.contains("panicked"), "{first_log}");
    // Nothing had to be cut off at the end of the grace period.
    assert!(
        !first_log.contains("still open after the grace period"),
        "{first_log}"
    );
    // Nothing half-written on disk.
    let skills_root = data_dir.join("skills");
    assert_eq!(entries(&skills_root.join(".staging")), Vec::<String>::new());

    // Started again on the same data dir: the token's last use was flushed at shutdown, and the
    // skill is whole or absent, with nothing for start-up to repair.
    let mut again = Server::start(dir.path(), &data_dir, "second.log").await;
    let url = again.url.clone();
    let access = login(&client, &url, "ann@example.com", "ann-password-123").await;
    let tokens: Value = client
        .get(format!("{url}/api/v1/tokens"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ours = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == token_id.as_str())
        .unwrap_or_else(|| panic!("{tokens}"));
    assert!(ours["last_used_at"].is_string(), "not flushed: {tokens}");
    let skills: Value = client
        .get(format!("{url}/api/v1/skills"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if stored {
        assert_eq!(skills["total"], 1, "{skills}");
        let skill = &skills["items"][0];
        assert_eq!(skill["name"], "slow");
        assert_eq!(skill["file_count"], 2, "{skills}");
        let id = skill["id"].as_str().unwrap();
        let read = client
            .get(format!("{url}/api/v1/skills/{id}/files/data.bin"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(read.bytes().await.unwrap(), data);
    } else {
        assert_eq!(skills["total"], 0, "{skills}");
    }
    let user_dirs: Vec<String> = entries(&skills_root)
        .into_iter()
        .filter(|n| n != ".staging")
        .collect();
    for user in user_dirs {
        let expected: &[&str] = if stored { &["slow"] } else { &[] };
        assert_eq!(entries(&skills_root.join(user)), expected);
    }
    let second_log = again.logged();
    assert!(
        !second_log.contains("crash left unfinished") && !second_log.contains("removed a skill"),
        "{second_log}"
    );
    again.terminate();
    let status = again
        .wait_exit(Duration::from_secs(SHUTDOWN_GRACE_SECS + 10))
        .await;
    assert!(status.success(), "exit status {status}");
}
