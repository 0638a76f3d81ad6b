//! What the benches share: starting the release binary on a fresh data dir, and reporting.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// The data dir's parent, when the server made its own.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Stops the server as an operator would (SIGTERM) and waits for it to exit.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A fresh data dir (searchable by the sandbox's user, as a deployment's data dir parents are).
pub(crate) fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .expect("a searchable temp dir");
    let data = dir.path().join("data");
    (dir, data)
}

/// Starts the binary on a fresh data dir; returns it with the time until `/health` said 200.
pub(crate) async fn start(client: &reqwest::Client) -> (Server, Duration) {
    let (dir, data) = data_dir();
    let (mut server, elapsed) = start_on(client, &data, &[]).await;
    server._dir = Some(dir);
    (server, elapsed)
}

/// Starts the binary on `data` with `env` on top of the benches' defaults (rate limits off);
/// returns it with the time until `/health` said 200.
pub(crate) async fn start_on(
    client: &reqwest::Client,
    data: &std::path::Path,
    env: &[(&str, &str)],
) -> (Server, Duration) {
    let (server, started) = spawn_on(data, env);
    loop {
        if let Ok(res) = client.get(format!("{}/health", server.base)).send().await
            && res.status() == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (server, started.elapsed())
}

/// Starts the binary on `data` with `env` on top of the benches' defaults (rate limits off);
/// returns it as soon as it says where it listens, with the instant it was started.
pub(crate) fn spawn_on(data: &std::path::Path, env: &[(&str, &str)]) -> (Server, Instant) {
    let started = Instant::now();
    // Another build of the server (one with debug info, to profile it) may stand in.
    let binary = std::env::var_os("BENCH_SERVER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_agentskills-mcp").into());
    let mut command = Command::new(binary);
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .current_dir(data.parent().unwrap_or(data))
        .env_clear()
        // The default level, unless the run asks for another (to weigh the log's own cost).
        .env(
            "AGENTSKILLS_LOG",
            std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        // The benches measure throughput and latency, not the rate limits.
        .env("AGENTSKILLS_LOGIN_PER_IP_PER_MINUTE", "0")
        .env("AGENTSKILLS_LOGIN_PER_ACCOUNT_PER_MINUTE", "0")
        .env("AGENTSKILLS_REGISTER_PER_IP_PER_HOUR", "0")
        .env("AGENTSKILLS_MCP_PER_TOKEN_PER_SECOND", "0")
        .env("AGENTSKILLS_UPLOADS_PER_USER_PER_MINUTE", "0");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(url) = line.split("listening on ").nth(1) {
                let _ = tx.send(url.split_whitespace().next().unwrap_or_default().to_owned());
                sent = true;
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server says where it listens");
    (
        Server {
            child,
            base,
            _dir: None,
        },
        started,
    )
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(samples[samples.len() - 1])
    )
}

/// Registers the bench user and logs in; returns the access token.
pub(crate) async fn register_and_login(client: &reqwest::Client, base: &str) -> String {
    register_and_login_as(client, base, "bench").await
}

/// Registers `username` (`<username>@example.com`, password `<username>-password-1`) and logs
/// in; returns the access token.
pub(crate) async fn register_and_login_as(
    client: &reqwest::Client,
    base: &str,
    username: &str,
) -> String {
    let email = format!("{username}@example.com");
    let password = format!("{username}-password-1");
    let res = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": email, "username": username, "password": password}))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), 201, "register {username}");
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("a token pair");
    login["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// Creates an API token for the logged-in user (`access`); returns its secret.
pub(crate) async fn api_token(client: &reqwest::Client, base: &str, access: &str) -> String {
    let token: serde_json::Value = client
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(access)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await
        .expect("create a token")
        .json()
        .await
        .expect("a token");
    token["token"]
        .as_str()
        .expect("the token's secret")
        .to_owned()
}
