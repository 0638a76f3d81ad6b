//! The sandbox's overhead: `run_shell_command` of `echo hi` through MCP, one at a time (median
//! and p99 latency, which include the HTTP round trip) and from several clients at once (runs per
//! second within the sandbox's concurrency caps).
//!
//! `cargo bench --bench sandbox`: starts the release binary (SQLite, default sandbox settings:
//! strict), makes a user with one skill and an API token, checks `/health` says the sandbox is
//! ready, then measures.

#![allow(clippy::expect_used, clippy::print_stdout, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{api_token, ms, register_and_login, start};

const SEQUENTIAL: usize = 300;
const WINDOW: Duration = Duration::from_secs(5);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

async fn call(client: &reqwest::Client, base: &str, token: &str, command: &str) -> (bool, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "run_shell_command", "arguments": {"skill_name": "bench", "command": command},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}});
    let res = client
        .post(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "run_shell_command")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let ok = res.status() == 200;
    let body: Value = res.json().await.unwrap();
    let ran = ok
        && body["result"]["isError"] == false
        && body["result"]["structuredContent"]["stdout"] == "hi\n";
    (ran, body)
}

async fn run() {
    let client = reqwest::Client::new();
    let (server, _) = start(&client).await;
    let base = server.base.clone();
    let health: Value = client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!("sandbox: {}", health["sandbox"]);
    assert_eq!(health["sandbox"]["ready"], true, "the sandbox is not ready");
    let access = register_and_login(&client, &base).await;
    let body = "--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"SKILL.md\"\r\n\r\n---\nname: bench\ndescription: Bench.\n---\n\r\n--b--\r\n";
    let res = client
        .post(format!("{base}/api/v1/skills/upload"))
        .bearer_auth(&access)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let token = api_token(&client, &base, &access).await;

    // Warm up, then one at a time.
    for _ in 0..10 {
        assert!(call(&client, &base, &token, "echo hi").await.0);
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        let (ran, body) = call(&client, &base, &token, "echo hi").await;
        assert!(ran, "{body}");
        samples.push(t.elapsed());
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "echo hi, one at a time: n={} min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(pick(0.99)),
        ms(samples[samples.len() - 1])
    );

    // Several clients at once: as many as the sandbox runs at once for one user (per_user, 2).
    for clients in [2usize, 4] {
        let deadline = Instant::now() + WINDOW;
        let mut workers = Vec::new();
        for _ in 0..clients {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            workers.push(tokio::spawn(async move {
                let (mut ran, mut busy) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let (ok, body) = call(&client, &base, &token, "echo hi").await;
                    if ok {
                        ran += 1;
                    } else if body["result"]["content"][0]["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("Busy"))
                    {
                        busy += 1;
                    }
                }
                (ran, busy)
            }));
        }
        let (mut ran, mut busy) = (0, 0);
        for w in workers {
            let (r, b) = w.await.unwrap();
            ran += r;
            busy += b;
        }
        println!(
            "echo hi, {clients} clients: {:.0} runs/s, {busy} busy answers",
            ran as f64 / WINDOW.as_secs_f64()
        );
    }
    drop(server);
}
