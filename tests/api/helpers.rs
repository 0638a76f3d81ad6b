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
        data_dir,
        settings,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
        _database: database,
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
