//! A first figure for MCP `tools/call` throughput over Streamable HTTP (the full load harness with
//! the hyper ceiling is issue 7's).
//!
//! `cargo bench --bench mcp`: starts the release binary (SQLite), makes a user with 100 skills and
//! an API token, then for concurrency 1, 16 and 64 runs workers that each hold their own
//! keep-alive connection and session (initialize and `notifications/initialized` outside the timed
//! window) and call `load_skill` back to back for 5 s with unique ids. A reply counts only if it is
//! a 200 with a `result` and no `isError`.

#![allow(clippy::expect_used, clippy::print_stdout, clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{api_token, register_and_login, rss_kib, start, summary};

const WINDOW: Duration = Duration::from_secs(5);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

async fn setup(client: &reqwest::Client, base: &str) -> String {
    let access = register_and_login(client, base).await;
    for i in 0..100 {
        let name = format!("skill-{i:03}");
        let skill_md = format!(
            "---\nname: {name}\ndescription: Benchmark skill {name} for documents of several kinds.\n---\n# {name}\n\n{}",
            "Step by step instructions for the agent.\n".repeat(20)
        );
        let mut body = Vec::new();
        write!(body, "--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"SKILL.md\"\r\n\r\n{skill_md}\r\n--b--\r\n").unwrap();
        let res = client
            .post(format!("{base}/api/v1/skills/upload"))
            .bearer_auth(&access)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    api_token(client, base, &access).await
}

/// One worker: its own connection and session; calls until the window closes.
async fn worker(base: String, token: String, worker: usize) -> (usize, usize, Vec<Duration>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = format!("{base}/mcp");
    let init = client
        .post(&url)
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    init.bytes().await.unwrap();
    client
        .post(&url)
        .bearer_auth(&token)
        .header("mcp-session-id", &session)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    let (mut ok, mut errors, mut latencies) = (0, 0, Vec::new());
    let started = Instant::now();
    let mut id = 1u64;
    while started.elapsed() < WINDOW {
        let skill = format!("skill-{:03}", (worker + id as usize) % 100);
        let t = Instant::now();
        let res = client
            .post(&url)
            .bearer_auth(&token)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "load_skill", "arguments": {"skill_name": skill}}}))
            .send()
            .await;
        id += 1;
        let good = match res {
            Ok(res) if res.status() == 200 => res
                .json::<Value>()
                .await
                .is_ok_and(|v| v["result"].is_object() && v["result"]["isError"] != true),
            _ => false,
        };
        latencies.push(t.elapsed());
        if good {
            ok += 1;
        } else {
            errors += 1;
        }
    }
    // End the session: a token may hold only so many.
    client
        .delete(&url)
        .bearer_auth(&token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    (ok, errors, latencies)
}

async fn run() {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let (server, _) = start(&client).await;
    let token = setup(&client, &server.base).await;
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for concurrency in [1, 16, 64] {
        let cpu_before = cpu_ticks(server.child.id());
        let mut set = tokio::task::JoinSet::new();
        for w in 0..concurrency {
            set.spawn(worker(server.base.clone(), token.clone(), w));
        }
        let results = set.join_all().await;
        let ok: usize = results.iter().map(|r| r.0).sum();
        let errors: usize = results.iter().map(|r| r.1).sum();
        let latencies: Vec<Duration> = results.into_iter().flat_map(|r| r.2).collect();
        let cpu = cpu_ticks(server.child.id()).saturating_sub(cpu_before);
        println!(
            "load_skill c={concurrency}: {:.0} ok/s, {errors} errors, {}; server CPU {:.1} µs per request",
            ok as f64 / WINDOW.as_secs_f64(),
            summary(latencies),
            cpu as f64 * 10_000.0 / ok.max(1) as f64,
        );
    }
    println!(
        "server RSS after the runs: {} KiB",
        rss_kib(server.child.id())
    );
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}
