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

mod support;

use std::time::{Duration, Instant};

use support::{ms, rss_kib, start, summary};

use serde_json::json;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
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
