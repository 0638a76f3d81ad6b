//! `spawn_app`: a real server on port 0 with its own data dir and its own database, and a client.

use std::path::PathBuf;
use std::sync::{Arc, Once};

use agentskills_mcp::app::{App, AppState};
use agentskills_mcp::config::Settings;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which database a test runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The server URL from `TEST_DATABASE_URL`; each test creates and drops a database of its own.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL when `TEST_DATABASE_URL` is set.
    pub fn postgres() -> Option<Backend> {
        std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(Backend::Postgres)
    }
}

/// Runs each named `async fn(Backend)` once on SQLite and once on PostgreSQL (when
/// `TEST_DATABASE_URL` is set), as tests named `<module>::sqlite::<name>` and `…::postgres::<name>`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match $crate::helpers::Backend::postgres() {
                        Some(backend) => super::$name(backend).await,
                        None => eprintln!("TEST_DATABASE_URL is not set: PostgreSQL variant not run"),
                    }
                }
            )*
        }
    };
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub state: Arc<AppState>,
    pub data_dir: PathBuf,
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
    _database: Option<PgDatabase>,
}

/// Test settings: port 0, a fresh data dir, a tiny scrypt cost.
pub fn test_settings(data_dir: PathBuf) -> Settings {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.data_dir = data_dir;
    settings.auth.scrypt_log_n = 4;
    // A test's server is the only one storing its blobs: leftovers may go at once.
    settings.storage.sweep_grace_secs = 0;
    settings.log.level = std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into());
    // The test binary is not agentskills-mcp: the sandbox's helper is the real one.
    settings.sandbox.helper = env!("CARGO_BIN_EXE_agentskills-mcp").to_owned();
    settings
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    // As a data dir's parents are in a real deployment: searchable by the sandbox's user.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let mut settings = test_settings(data_dir.clone());
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres(url) => {
            let db = PgDatabase::create(&url).await;
            settings.database.url = Some(db.url.clone());
            Some(db)
        }
    };
    tweak(&mut settings);
    on_test_s3(&mut settings).await;
    serve(settings, dir, database).await
}

/// Builds and runs the app of `settings` (its data dir under `dir`), owning `database`.
async fn serve(
    settings: Settings,
    dir: tempfile::TempDir,
    database: Option<PgDatabase>,
) -> TestApp {
    let app = App::build(settings.clone()).await.expect("the app builds");
    let base = format!("http://{}", app.local_addr());
    let state = app.state();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        base,
        client: Client::builder().no_proxy().build().unwrap(),
        state,
        data_dir: settings.server.data_dir.clone(),
        settings,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
        _database: database,
    }
}

/// Runs each named `async fn(String)` (given `TEST_DATABASE_URL`) as a test of several replicas
/// on one PostgreSQL database; without `TEST_DATABASE_URL` it says so and does nothing, as the
/// PostgreSQL variants of [`backend_tests`] do.
#[macro_export]
macro_rules! replica_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match $crate::helpers::Backend::postgres() {
                        Some(backend) => super::$name(backend).await,
                        None => eprintln!("TEST_DATABASE_URL is not set: replica test not run"),
                    }
                }
            )*
        }
    };
}

/// Starts another replica beside `first`: the same PostgreSQL database, signing secret and blob
/// store (the same bucket on S3; on local storage `first`'s blob folder, as a shared volume
/// would be), and a data dir of its own.
pub async fn spawn_replica(first: &TestApp, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    assert!(
        first.settings.database.url.is_some(),
        "replicas share a PostgreSQL database"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let mut settings = first.settings.clone();
    settings.server.data_dir = data_dir.clone();
    let secret = std::fs::read_to_string(first.data_dir.join("secret_key")).ok();
    settings.auth.secret_key = first
        .settings
        .auth
        .secret_key
        .clone()
        .or_else(|| secret.map(|s| s.trim().to_owned()));
    if settings.storage.backend == agentskills_mcp::config::StorageBackend::Local {
        settings.storage.path = Some(
            first
                .settings
                .storage
                .path
                .clone()
                .unwrap_or_else(|| first.data_dir.join("blobs")),
        );
    }
    // Blobs are shared now: what has no row yet may be the other replica's change in progress.
    settings.storage.sweep_grace_secs = 3600;
    tweak(&mut settings);
    serve(settings, dir, None).await
}

/// The S3 API the suite's blobs go to, when `TEST_S3_ENDPOINT` is set (moto's server in CI, with
/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` set to anything): then every app the tests
/// start stores its blobs there, in a bucket of its data dir's own (a test that starts a server
/// again on the same data dir finds its blobs again).
pub fn test_s3_endpoint() -> Option<String> {
    std::env::var("TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
}

/// Keeps a test's blobs on its local disk whatever `TEST_S3_ENDPOINT` says: for a test of that
/// disk (the disk-full fault). A local store ignores `storage.s3`, so the mark costs nothing.
pub fn keep_local_blobs(settings: &mut Settings) {
    settings.storage.s3.endpoint = Some(String::new());
}

async fn on_test_s3(settings: &mut Settings) {
    use agentskills_mcp::config::StorageBackend;
    let Some(endpoint) = test_s3_endpoint() else {
        return;
    };
    if settings.storage.backend == StorageBackend::S3 || settings.storage.s3.endpoint.is_some() {
        return;
    }
    let digest = blake3::hash(settings.server.data_dir.to_string_lossy().as_bytes());
    let bucket = format!("t{}", &digest.to_hex()[..40]);
    // moto creates a bucket on an unsigned PUT; one that exists already answers 409, kept.
    let res = Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("TEST_S3_ENDPOINT answers");
    assert!(
        res.status().is_success() || res.status() == StatusCode::CONFLICT,
        "creating bucket {bucket}: {}",
        res.status()
    );
    settings.storage.backend = StorageBackend::S3;
    settings.storage.s3.endpoint = Some(endpoint);
    settings.storage.s3.bucket = Some(bucket);
}

/// The blobs stored for `user` (the names under their prefix, partial copies included) and
/// their bytes in all, wherever `settings` stores them.
pub async fn stored_blobs(
    settings: &Settings,
    user: &str,
) -> (std::collections::BTreeSet<String>, u64) {
    let mut found = std::collections::BTreeSet::new();
    let mut bytes = 0;
    match (&settings.storage.s3.endpoint, &settings.storage.s3.bucket) {
        (Some(endpoint), Some(bucket))
            if settings.storage.backend == agentskills_mcp::config::StorageBackend::S3 =>
        {
            let listing = Client::new()
                .get(format!("{endpoint}/{bucket}?list-type=2&prefix={user}/"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for entry in listing.split("<Contents>").skip(1) {
                let field = |name: &str| {
                    entry
                        .split(&format!("<{name}>"))
                        .nth(1)
                        .and_then(|rest| rest.split(&format!("</{name}>")).next())
                        .unwrap()
                        .to_owned()
                };
                let key = field("Key");
                found.insert(key.rsplit('/').next().unwrap().to_owned());
                bytes += field("Size").parse::<u64>().unwrap();
            }
        }
        _ => {
            let mut stack = vec![settings.server.data_dir.join("blobs").join(user)];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let meta = entry.metadata().unwrap();
                    if meta.is_dir() {
                        stack.push(entry.path());
                    } else {
                        found.insert(entry.file_name().to_string_lossy().into_owned());
                        bytes += meta.len();
                    }
                }
            }
        }
    }
    (found, bytes)
}

/// Stores `bytes` under `user`'s prefix as `<first two characters>/<name>` behind the server's
/// back (what a crash leaves), wherever `settings` stores blobs.
pub async fn store_behind_the_back(settings: &Settings, user: &str, name: &str, bytes: &[u8]) {
    let key = format!("{user}/{}/{name}", &name[..2]);
    match (&settings.storage.s3.endpoint, &settings.storage.s3.bucket) {
        (Some(endpoint), Some(bucket))
            if settings.storage.backend == agentskills_mcp::config::StorageBackend::S3 =>
        {
            let res = Client::new()
                .put(format!("{endpoint}/{bucket}/{key}"))
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}", res.status());
        }
        _ => {
            let path = settings.server.data_dir.join("blobs").join(&key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
}

fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_auth(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `GET` with a bearer token, expecting a JSON body.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        self.get_auth(path, token).await.json().await.unwrap()
    }

    pub async fn register(&self, email: &str, username: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/auth/register",
            &json!({"email": email, "username": username, "password": password}),
        )
        .await
    }

    pub async fn login(&self, login: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/auth/login",
            &json!({"email": login, "password": password}),
        )
        .await
    }

    /// Registers `name` (email `<name>@example.com`) and logs in.
    /// Uploads `files` (path, bytes) as one skill of `user` (multipart); returns the skill's id.
    pub async fn upload_skill(&self, user: &TestUser, files: &[(&str, &[u8])]) -> String {
        let boundary = "testUploadBoundary";
        let mut body = Vec::new();
        for (path, data) in files {
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path}\"\r\n\r\n").as_bytes());
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let res = self
            .request(Method::POST, "/api/v1/skills/upload")
            .bearer_auth(&user.access)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn user(&self, name: &str) -> TestUser {
        let email = format!("{name}@example.com");
        let password = format!("{name}-password-123");
        let created = self.register(&email, name, &password).await;
        assert_eq!(
            created.status(),
            StatusCode::CREATED,
            "{}",
            created.text().await.unwrap()
        );
        let created: Value = created.json().await.unwrap();
        let tokens = self.login(&email, &password).await;
        assert_eq!(tokens.status(), StatusCode::OK);
        let tokens: Value = tokens.json().await.unwrap();
        TestUser {
            id: created["id"].as_str().unwrap().to_owned(),
            email,
            password,
            access: tokens["access_token"].as_str().unwrap().to_owned(),
            refresh: tokens["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates an API token for `user`; returns (id, token).
    pub async fn api_token(&self, user: &TestUser, name: &str) -> (String, String) {
        let res = self
            .request(Method::POST, "/api/v1/tokens")
            .bearer_auth(&user.access)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates an API token for `user` that may do only what `scopes` name; returns the token.
    pub async fn scoped_token(&self, user: &TestUser, name: &str, scopes: &[&str]) -> String {
        let res = self
            .request(Method::POST, "/api/v1/tokens")
            .bearer_auth(&user.access)
            .json(&json!({"name": name, "scopes": scopes}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["scopes"], json!(scopes));
        body["token"].as_str().unwrap().to_owned()
    }

    /// The status of an MCP `initialize` with `token`: 200 for a good token, 401 for a bad one.
    pub async fn mcp_status(&self, token: &str) -> StatusCode {
        self.request(Method::POST, "/mcp")
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Stops the server the way SIGTERM does and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    /// Sends the stop signal without waiting.
    pub fn begin_stop(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("the server is running")
    }
}

/// Asserts a JSON error body with `code` and returns it.
pub async fn expect_error(res: Response, status: StatusCode, code: &str) -> Value {
    let got = res.status();
    let www = res.headers().get("www-authenticate").cloned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            www.is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
            "401 without WWW-Authenticate: Bearer"
        );
    }
    body
}

/// A PostgreSQL database made for one test and dropped after it.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> PgDatabase {
        let name = format!("agentskills_test_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .expect("TEST_DATABASE_URL is reachable");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        PgDatabase {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime; use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

/// `postgres://u@h:p/db?x` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A TCP proxy between the server and its PostgreSQL, to take the database away and bring it back
/// while the server runs, without touching the real PostgreSQL (other tests share it).
///
/// - [`TcpProxy::stop`] closes the listening socket (new connections are refused) and resets every
///   open connection, as a database that crashed or restarted does.
/// - [`TcpProxy::start`] listens again on the same port.
/// - [`TcpProxy::freeze`] holds every byte the server sends from then on, so a query is left in
///   flight; [`TcpProxy::wait_stalled`] says when one is. `stop` then kills it mid-query.
///
/// The port is taken below the kernel's ephemeral range, so that no outgoing connection of another
/// test can be given it while the proxy is stopped, and `start` always gets it back.
pub struct TcpProxy {
    addr: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

struct ProxyShared {
    connections: std::sync::Mutex<tokio::task::JoinSet<()>>,
    frozen: tokio::sync::watch::Sender<bool>,
    /// Chunks held back since the last freeze.
    stalled: tokio::sync::watch::Sender<usize>,
}

impl TcpProxy {
    /// A proxy to `upstream`, listening on 127.0.0.1 at a port of its own.
    pub async fn start_to(upstream: std::net::SocketAddr) -> TcpProxy {
        let (frozen, _) = tokio::sync::watch::channel(false);
        let (stalled, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(ProxyShared {
            connections: std::sync::Mutex::new(tokio::task::JoinSet::new()),
            frozen,
            stalled,
        });
        let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let low = 10_000u16.min(first_ephemeral / 2);
        for _ in 0..200 {
            let port = low + (rand_u16() % (first_ephemeral - low));
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if let Ok(listener) = proxy_listener(addr) {
                let accept = tokio::spawn(proxy_accept(listener, upstream, Arc::clone(&shared)));
                return TcpProxy {
                    addr,
                    upstream,
                    shared,
                    accept: Some(accept),
                };
            }
        }
        panic!("no free port for the proxy below {first_ephemeral}");
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Closes the listening socket and resets every open connection; returns once they are gone.
    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let mut open = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        open.shutdown().await;
        self.shared.frozen.send_replace(false);
    }

    /// Listens again on the same port (after [`TcpProxy::stop`]).
    pub async fn start(&mut self) {
        assert!(self.accept.is_none(), "the proxy is running");
        let listener = proxy_listener(self.addr)
            .unwrap_or_else(|e| panic!("the proxy cannot listen on {} again: {e}", self.addr));
        self.accept = Some(tokio::spawn(proxy_accept(
            listener,
            self.upstream,
            Arc::clone(&self.shared),
        )));
    }

    /// Holds back everything the server sends from now on (connections stay open).
    pub fn freeze(&self) {
        self.shared.stalled.send_replace(0);
        self.shared.frozen.send_replace(true);
    }

    /// Waits until something the server sent is held back by [`TcpProxy::freeze`]: a query is
    /// then in flight.
    pub async fn wait_stalled(&self) {
        let mut stalled = self.shared.stalled.subscribe();
        stalled.wait_for(|n| *n > 0).await.unwrap();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        // Dropping the set aborts the connection tasks.
        drop(std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ));
    }
}

fn rand_u16() -> u16 {
    let random = uuid::Uuid::new_v4();
    u16::from_le_bytes([random.as_bytes()[0], random.as_bytes()[1]])
}

fn proxy_listener(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    // Connections reset by `stop` may leave the port in TIME_WAIT; listening again must work.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn proxy_accept(
    listener: tokio::net::TcpListener,
    upstream: std::net::SocketAddr,
    shared: Arc<ProxyShared>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors and the like: wait instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let shared2 = Arc::clone(&shared);
        shared
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .spawn(async move {
                // A reset, not a clean close, when the task is aborted: the server sees what a
                // crashed database looks like.
                let _ = client.set_zero_linger();
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = server.set_zero_linger();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = proxy_pipe(client_read, server_write, Some(&shared2));
                let down = proxy_pipe(server_read, client_write, None);
                let _ = tokio::join!(up, down);
            });
    }
}

/// Copies `from` to `to`; with `shared`, holds each chunk while the proxy is frozen.
async fn proxy_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Option<&ProxyShared>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        if let Some(shared) = shared {
            let mut frozen = shared.frozen.subscribe();
            if *frozen.borrow_and_update() {
                shared.stalled.send_modify(|n| *n += 1);
                let _ = frozen.wait_for(|f| !*f).await;
            }
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// The first host and port of a `postgres://` URL.
pub fn postgres_addr(url: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs as _;
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host.as_str(), port)
        .to_socket_addrs()
        .expect("the PostgreSQL host resolves")
        .find(std::net::SocketAddr::is_ipv4)
        .expect("an IPv4 address for the PostgreSQL host")
}

/// `postgres://u@h:p/db?x` with its host and port replaced by `addr`.
pub fn with_host(url: &str, addr: std::net::SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let user = authority.rfind('@').map_or("", |i| &authority[..=i]);
    format!(
        "{}{user}{addr}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}

/// The names of the tools in a `tools/list` answer.
pub fn tool_names(answer: &Value) -> Vec<&str> {
    answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}
