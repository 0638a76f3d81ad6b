//! Start-up time and login latency of the release binary at the default settings.
//!
//! `cargo bench --bench startup_login` builds the binary with the bench profile, then:
//! 1. starts it five times on a fresh data dir (SQLite, nothing configured) and reports the time
//!    from process start to the first `200` from `GET /health`, and the RSS at that point;
//! 2. on one server at the default scrypt cost (ln=17, r=8, p=1), registers a user and times
//!    sequential logins (right and wrong password) and a burst of concurrent ones.
//!
//! Figures, not assertions: benchmarks are not tests.

#![allow(clippy::expect_used, clippy::print_stdout, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on a fresh data dir; returns it with the time until `/health` said 200.
async fn start(client: &reqwest::Client) -> (Server, Duration) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .env_clear()
        .env("AGENTSKILLS_LOG", "info")
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
    loop {
        if let Ok(res) = client.get(format!("{base}/health")).send().await
            && res.status() == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    (
        Server {
            child,
            base,
            _dir: dir,
        },
        elapsed,
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> String {
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

async fn run() {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut startups = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..5 {
        let (server, took) = start(&client).await;
        startups.push(took);
        rss.push(rss_kib(server.child.id()));
    }
    println!(
        "start to healthy /health (fresh data dir, SQLite): {}",
        summary(startups)
    );
    println!("RSS when first healthy: {:?} KiB", rss);

    let (server, _) = start(&client).await;
    let base = &server.base;
    let register = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "bench@example.com", "username": "bench", "password": "bench-password-1"}))
        .send()
        .await
        .expect("register");
    assert_eq!(register.status(), 201);
    // Let the background dummy hash finish so it does not share the cores with the first logins.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let login = |password: &'static str| {
        client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": "bench@example.com", "password": password}))
            .send()
    };
    for (label, password, status) in [
        ("right password", "bench-password-1", 200),
        ("wrong password", "wrong-password-1", 401),
    ] {
        let mut samples = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let res = login(password).await.expect("login");
            assert_eq!(res.status(), status);
            samples.push(t.elapsed());
        }
        println!(
            "login, {label}, sequential, default scrypt cost: {}",
            summary(samples)
        );
    }
    let unknown = {
        let mut samples = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let res = client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&json!({"email": "nobody@example.com", "password": "bench-password-1"}))
                .send()
                .await
                .expect("login");
            assert_eq!(res.status(), 401);
            samples.push(t.elapsed());
        }
        samples
    };
    println!(
        "login, unknown user, sequential, default scrypt cost: {}",
        summary(unknown)
    );

    let burst = 8;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..burst {
        let req = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": "bench@example.com", "password": "bench-password-1"}));
        set.spawn(async move {
            let t = Instant::now();
            let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, t.elapsed())
        });
    }
    let results = set.join_all().await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let busy = results.iter().filter(|(s, _)| *s == 503).count();
    println!(
        "login burst of {burst} concurrent: {ok} ok, {busy} answered 503 busy, wall {:.0} ms; per request {}",
        ms(t.elapsed()),
        summary(results.iter().map(|(_, d)| *d).collect())
    );
    println!(
        "server RSS after the logins: {} KiB",
        rss_kib(server.child.id())
    );
}
