//! The load harness: real MCP traffic against the release server, beside a minimal hyper server
//! (the ceiling) measured by the same generator in the same run.
//!
//! `cargo bench --bench load` starts the release binary on an embedded database with a generated
//! corpus (a main user with 100 skills and 63 more users with 5 each, all made through the REST
//! API, each skill a `SKILL.md`, a reference and a script), then drives it. Every worker holds its
//! own kept-alive connection and its own session (initialize, `Mcp-Session-Id`,
//! `notifications/initialized` and one warm-up call happen before the timed window), then calls
//! `tools/call` back to back with unique JSON-RPC ids. A reply counts only if it is a 2xx with a
//! `result` and no `isError: true`. The ceiling (`ceiling.rs`) is measured before and after the
//! service, and every throughput is printed as a ratio to it at the same concurrency, as the same
//! generator measured it. "CPU µs" is the measured process's CPU time (utime and stime from
//! `/proc`, over the window) per successful request.
//!
//! The parts (`LOAD_ONLY` picks some; all run by default):
//! - `ceiling`: the ceiling at c=1, 16 and 64, before and after the rest (and by h2load at c=16
//!   and 64).
//! - `http`, `sse`: `load_skill` and `load_skill_metadata` (100 skills) over Streamable HTTP and
//!   legacy SSE at c=1, 16 and 64.
//! - `stateless`: `tools/call load_skill` of protocol 2026-07-28, without initialize or session
//!   (the version and capabilities in `params._meta`, the `MCP-Protocol-Version: 2026-07-28`,
//!   `Mcp-Method` and `Mcp-Name` headers), at c=1, 16 and 64, and by h2load at c=16 and 64.
//! - `users`: 64 sessions of 64 users against 64 sessions of one user, in turns; `oauth`: an
//!   OAuth access token against an API token, in turns; `search`: `search_skills` over 300
//!   skills; `flood`: `load_skill` during a login flood; `sandbox`: `run_shell_command`;
//!   `postgres`: the PostgreSQL back end in turns with SQLite; `replicas` (`replicas.rs`): three
//!   replicas behind HAProxy against one direct; `startup`: start to the first successful call.
//! - `idle` (`idle.rs`): `LOAD_IDLE_SESSIONS` idle event streams held on a fresh server for each
//!   transport: how many held, the open rate, RSS per stream (the server's and the harness's).
//!
//! A second, independent generator (`h2load.rs`): nghttp2's `h2load` (`apt-get install
//! nghttp2-client`), over HTTP/1.1 with keep-alive, one fixed request, for the ceiling and for
//! the stateless call; its figures are printed beside the harness's, each with its ratio to the
//! ceiling as h2load measured it. Without `h2load` on `PATH` the harness notes so and goes on.
//!
//! The harness raises its own limit of open files (soft and hard) before it starts any server, so
//! that the servers inherit it: the idle part needs one descriptor per stream on each side.
//! Raising the hard limit takes `CAP_SYS_RESOURCE` (root in a container may lack it); without it
//! the idle part opens as many streams as the limit allows, and says so.
//!
//! Settings (environment): `LOAD_WINDOW_SECS` (5), `LOAD_IDLE_SESSIONS` (100000), `LOAD_USERS`
//! (64, the main user included), `LOAD_DATABASE_URL` (default `TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`; the PostgreSQL runs are skipped if it is
//! unreachable), `LOAD_ONLY` (a comma-separated subset of `ceiling,http,sse,stateless,users,
//! oauth,search,flood,sandbox,postgres,replicas,startup,idle`), `BENCH_SERVER_LOG` (the server's
//! log level, `info`), `BENCH_SERVER_BIN` (another build of the server to run, such as one with
//! debug info for `perf record --call-graph dwarf`).
//!
//! At the end, the targets of issue 20 (and the earlier ones of issue 7 still measured), each
//! computed from this run's figures. Benchmarks are not tests: nothing here fails a build; the
//! figures are for people.

#![allow(
    clippy::expect_used,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::cast_precision_loss
)]

#[path = "../support.rs"]
mod support;

mod ceiling;
mod client;
mod corpus;
mod h2load;
mod idle;
mod replicas;

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::sync::{Barrier, Semaphore};

use agentskills_mcp::mcp::dispatch::{META_CAPABILITIES, META_VERSION, STATELESS_VERSION};
use client::{Conn, Events, is_success};
use support::{Server, rss_kib};

const PROTOCOL: &str = "2025-06-18";

/// `load_skill` with an API token and with an OAuth access token of the same user, in turns.
const WITH_API_TOKEN: &str = "load_skill, Streamable HTTP, API token (in turns with OAuth)";
const WITH_OAUTH: &str = "load_skill, Streamable HTTP, OAuth access token";

/// `tools/call load_skill` of protocol 2026-07-28, without a session.
const STATELESS: &str = "load_skill, stateless (2026-07-28)";

/// The concurrencies h2load runs at.
const H2LOAD_CONCURRENCY: [usize; 2] = [16, 64];

/// The SQLite figure measured in turns with PostgreSQL's.
const SQLITE_BESIDE_PG: &str = "load_skill, Streamable HTTP, SQLite (in turns with PostgreSQL)";

fn main() {
    if std::env::var_os("LOAD_ROLE").is_some_and(|role| role == "ceiling") {
        ceiling::serve();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wanted(part: &str) -> bool {
    match std::env::var("LOAD_ONLY") {
        Ok(only) if !only.is_empty() => only.split(',').any(|p| p.trim() == part),
        _ => true,
    }
}

/// The tool a worker calls.
#[derive(Clone, Copy, Debug)]
enum Tool {
    LoadSkill,
    Metadata,
    Shell,
    /// `search_skills`, the queries of `corpus::SEARCH_QUERIES` in turns.
    Search,
}

impl Tool {
    /// The tool's name, as `params.name` and the `Mcp-Name` header say it.
    fn name(self) -> &'static str {
        match self {
            Tool::LoadSkill => "load_skill",
            Tool::Metadata => "load_skill_metadata",
            Tool::Shell => "run_shell_command",
            Tool::Search => "search_skills",
        }
    }

    /// The call's `arguments`, as JSON text.
    fn arguments(self, id: u64, worker: usize) -> String {
        match self {
            Tool::LoadSkill => format!(
                r#"{{"skill_name":"{}"}}"#,
                corpus::skill_name((worker + id as usize) % 5)
            ),
            Tool::Metadata => "{}".to_owned(),
            Tool::Shell => r#"{"skill_name":"skill-000","command":"echo hi"}"#.to_owned(),
            Tool::Search => format!(
                r#"{{"query":"{}","limit":10}}"#,
                corpus::SEARCH_QUERIES[(worker + id as usize) % corpus::SEARCH_QUERIES.len()]
            ),
        }
    }

    /// A `tools/call` of this tool in a session.
    fn body(self, id: u64, worker: usize) -> Bytes {
        self.call(id, worker, "")
    }

    /// A `tools/call` of this tool without a session (protocol 2026-07-28): the version and the
    /// client's capabilities in `params._meta`.
    fn stateless_body(self, id: u64, worker: usize) -> Bytes {
        self.call(
            id,
            worker,
            &format!(
                r#","_meta":{{"{META_VERSION}":"{STATELESS_VERSION}","{META_CAPABILITIES}":{{}}}}"#
            ),
        )
    }

    fn call(self, id: u64, worker: usize, meta: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{}","arguments":{}{meta}}}}}"#,
            self.name(),
            self.arguments(id, worker)
        ))
    }
}

/// Where a worker sends its calls.
#[derive(Clone)]
enum Target {
    /// The service, as a user holding this API token, in a session of its own.
    Service { addr: SocketAddr, token: String },
    /// The service, as a user holding this API token, without a session: every request of
    /// protocol 2026-07-28, carrying its version in `_meta` and the routing headers.
    Stateless { addr: SocketAddr, token: String },
    /// The ceiling: the same requests, answered with a fixed result.
    Ceiling { addr: SocketAddr },
}

/// What one worker did in the window.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
}

impl Tally {
    fn record(&mut self, good: bool, took: Duration) {
        self.latencies.push(took);
        if good {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
    }
}

/// Which program generated a figure's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Generator {
    /// The harness's own (`client.rs`).
    Harness,
    /// nghttp2's `h2load` (`h2load.rs`).
    H2load,
}

/// One measured figure.
struct Figure {
    name: String,
    generator: Generator,
    concurrency: usize,
    per_second: f64,
    errors: u64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    cpu_us_per_request: f64,
}

/// p50, p90, p99 and the maximum of `latencies` (sorted here).
fn percentiles(latencies: &mut [Duration]) -> [Duration; 4] {
    latencies.sort_unstable();
    let pick = |q: f64| {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    [pick(0.5), pick(0.9), pick(0.99), pick(1.0)]
}

fn figure(
    name: &str,
    concurrency: usize,
    window: Duration,
    tallies: Vec<Tally>,
    cpu_ticks: u64,
) -> Figure {
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let mut latencies: Vec<Duration> = tallies.into_iter().flat_map(|t| t.latencies).collect();
    let [p50, p90, p99, max] = percentiles(&mut latencies);
    Figure {
        name: name.to_owned(),
        generator: Generator::Harness,
        concurrency,
        per_second: ok as f64 / window.as_secs_f64(),
        errors,
        p50,
        p90,
        p99,
        max,
        // Clock ticks are 10 ms of CPU time.
        cpu_us_per_request: cpu_ticks as f64 * 10_000.0 / ok.max(1) as f64,
    }
}

/// Runs `concurrency` workers made by `make` (each sets itself up, waits at the barrier, then
/// works for `window`) and measures the process `pid` meanwhile.
async fn measure<F, Fut>(
    name: &str,
    pid: u32,
    concurrency: usize,
    window: Duration,
    make: F,
) -> Figure
where
    F: Fn(usize, Arc<Barrier>) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let mut set = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        set.spawn(make(w, Arc::clone(&barrier)));
    }
    barrier.wait().await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    let cpu = cpu_ticks(pid).saturating_sub(before);
    let tallies = set.join_all().await;
    figure(name, concurrency, window, tallies, cpu)
}

/// `concurrency` Streamable HTTP workers calling `tool` on `target`, measured on process `pid`.
async fn http_figure(
    name: &str,
    pid: u32,
    concurrency: usize,
    window: Duration,
    target: &Target,
    tool: Tool,
) -> Figure {
    measure(name, pid, concurrency, window, |w, b| {
        http_worker(target.clone(), tool, w, b, window)
    })
    .await
}

fn mcp_headers(token: &str, session: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("authorization", format!("Bearer {token}")),
        ("accept", "application/json, text/event-stream".to_owned()),
        ("content-type", "application/json".to_owned()),
        ("mcp-protocol-version", PROTOCOL.to_owned()),
    ];
    if let Some(session) = session {
        headers.push(("mcp-session-id", session.to_owned()));
    }
    headers
}

fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

fn initialize_body() -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL}","capabilities":{{}},"clientInfo":{{"name":"load","version":"1"}}}}}}"#
    ))
}

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// Opens a Streamable HTTP session on `conn`; returns its id, or what went wrong.
async fn open_session(conn: &mut Conn, token: &str) -> Result<String, String> {
    let session = initialize(conn, token).await?;
    initialized(conn, token, &session).await?;
    Ok(session)
}

/// `initialize` on `conn`: the new session's id, or what went wrong.
async fn initialize(conn: &mut Conn, token: &str) -> Result<String, String> {
    let headers = mcp_headers(token, None);
    let (status, head, _) = conn
        .call(Method::POST, "/mcp", &as_refs(&headers), initialize_body())
        .await
        .map_err(|e| format!("initialize: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("initialize: {status}"));
    }
    head.get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| "initialize: no Mcp-Session-Id".to_owned())
}

/// `notifications/initialized` in `session`, which completes its opening.
async fn initialized(conn: &mut Conn, token: &str, session: &str) -> Result<(), String> {
    let headers = mcp_headers(token, Some(session));
    let (status, _, _) = conn
        .call(
            Method::POST,
            "/mcp",
            &as_refs(&headers),
            Bytes::from_static(INITIALIZED.as_bytes()),
        )
        .await
        .map_err(|e| format!("notifications/initialized: {e}"))?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("notifications/initialized: {status}"));
    }
    Ok(())
}

/// The headers of a request without a session (protocol 2026-07-28): its version, method and
/// tool name in the routing headers, which must match the body.
fn stateless_headers(token: &str, tool: Tool) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {token}")),
        ("accept", "application/json, text/event-stream".to_owned()),
        ("content-type", "application/json".to_owned()),
        ("mcp-protocol-version", STATELESS_VERSION.to_owned()),
        ("mcp-method", "tools/call".to_owned()),
        ("mcp-name", tool.name().to_owned()),
    ]
}

/// A Streamable HTTP worker: its own connection and session (none for `Target::Stateless`), then
/// `tool` back to back.
async fn http_worker(
    target: Target,
    tool: Tool,
    worker: usize,
    barrier: Arc<Barrier>,
    window: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let (addr, token, stateless) = match &target {
        Target::Service { addr, token } => (*addr, token.clone(), false),
        Target::Stateless { addr, token } => (*addr, token.clone(), true),
        Target::Ceiling { addr } => (*addr, "ask_live_ceiling".to_owned(), false),
    };
    let request_body = |id: u64| {
        if stateless {
            tool.stateless_body(id, worker)
        } else {
            tool.body(id, worker)
        }
    };
    let mut conn = match Conn::open(addr).await {
        Ok(conn) => Some(conn),
        Err(e) => {
            println!("worker {worker}: no connection: {e}");
            None
        }
    };
    let mut session = None;
    if let (Some(c), Target::Service { .. }) = (conn.as_mut(), &target) {
        match open_session(c, &token).await {
            Ok(id) => session = Some(id),
            Err(e) => {
                println!("worker {worker}: no session: {e}");
                conn = None;
            }
        }
    }
    let headers = if stateless {
        stateless_headers(&token, tool)
    } else {
        mcp_headers(&token, session.as_deref())
    };
    let headers = as_refs(&headers);
    // One call before the window, so that the user's workspace is loaded (it starts on first
    // use) and every figure measures a warm service.
    if let Some(c) = conn.as_mut() {
        let _ = c
            .call(Method::POST, "/mcp", &headers, request_body(0))
            .await;
    }
    barrier.wait().await;
    let Some(mut conn) = conn else {
        tally.errors += 1;
        return tally;
    };
    let started = Instant::now();
    let mut id = 1u64;
    while started.elapsed() < window {
        let body = request_body(id);
        id += 1;
        let t = Instant::now();
        let good = match conn.call(Method::POST, "/mcp", &headers, body).await {
            Ok((status, _, body)) => status.is_success() && is_success(&body),
            Err(_) => false,
        };
        tally.record(good, t.elapsed());
        if !good
            && conn
                .call(Method::GET, "/health/live", &[], Bytes::new())
                .await
                .is_err()
        {
            // The connection is gone: a new one, outside the figure's latency.
            match Conn::open(addr).await {
                Ok(c) => conn = c,
                Err(_) => break,
            }
        }
    }
    if session.is_some() {
        let _ = conn
            .call(Method::DELETE, "/mcp", &headers, Bytes::new())
            .await;
    }
    tally
}

/// A legacy SSE session: its stream (and the connection that carries it), its message endpoint,
/// and a second connection for posting, with the handshake done.
struct Legacy {
    events: Events,
    stream_conn: Conn,
    path: String,
    post: Conn,
}

/// Opens a legacy SSE session; what went wrong if it could not. `idle` is for a session that will
/// be held idle: the gate that bounds the connections waiting in the server's listen backlog
/// (each of the session's two connections holds a permit from connecting until the server has
/// answered on it, and so accepted it); the stream's connection then has a small read buffer.
async fn open_legacy(
    addr: SocketAddr,
    token: &str,
    idle: Option<&Semaphore>,
) -> Result<Legacy, String> {
    let permit = admitted(idle).await;
    let stream_conn = if idle.is_some() {
        Conn::open_idle(addr).await
    } else {
        Conn::open(addr).await
    };
    let mut stream_conn = stream_conn.map_err(|e| format!("connect: {e}"))?;
    let auth = format!("Bearer {token}");
    let res = stream_conn
        .send(
            Method::GET,
            "/sse",
            &[("authorization", &auth), ("accept", "text/event-stream")],
            Bytes::new(),
        )
        .await
        .map_err(|e| format!("GET /sse: {e}"))?;
    drop(permit);
    if res.status() != StatusCode::OK {
        return Err(format!("GET /sse: {}", res.status()));
    }
    let mut events = Events::new(res.into_body());
    let endpoint = events.next().await.ok_or("GET /sse: the stream ended")?;
    if endpoint.name != "endpoint" {
        return Err(format!("GET /sse: a first event {:?}", endpoint.name));
    }
    let path = endpoint.data;
    let permit = admitted(idle).await;
    let mut post = Conn::open(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let (status, _, _) = post
        .call(Method::POST, &path, &headers, initialize_body())
        .await
        .map_err(|e| format!("initialize: {e}"))?;
    drop(permit);
    if status != StatusCode::ACCEPTED {
        return Err(format!("initialize: {status}"));
    }
    let reply = events.next().await.ok_or("initialize: the stream ended")?;
    if !is_success(reply.data.as_bytes()) {
        return Err("initialize: an error on the stream".to_owned());
    }
    let (status, _, _) = post
        .call(
            Method::POST,
            &path,
            &headers,
            Bytes::from_static(INITIALIZED.as_bytes()),
        )
        .await
        .map_err(|e| format!("notifications/initialized: {e}"))?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("notifications/initialized: {status}"));
    }
    Ok(Legacy {
        events,
        stream_conn,
        path,
        post,
    })
}

/// A permit of `gate`, if there is one.
async fn admitted(gate: Option<&Semaphore>) -> Option<tokio::sync::SemaphorePermit<'_>> {
    match gate {
        Some(gate) => gate.acquire().await.ok(),
        None => None,
    }
}

/// A legacy SSE worker: posts each call to the message endpoint and waits for its reply on the
/// stream.
async fn sse_worker(
    addr: SocketAddr,
    token: String,
    tool: Tool,
    worker: usize,
    barrier: Arc<Barrier>,
    window: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let opened = open_legacy(addr, &token, None).await;
    barrier.wait().await;
    let Legacy {
        mut events,
        path,
        mut post,
        ..
    } = match opened {
        Ok(legacy) => legacy,
        Err(e) => {
            println!("worker {worker}: no legacy session: {e}");
            tally.errors += 1;
            return tally;
        }
    };
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let started = Instant::now();
    let mut id = 1u64;
    while started.elapsed() < window {
        let body = tool.body(id, worker);
        let t = Instant::now();
        let posted = matches!(
            post.call(Method::POST, &path, &headers, body).await,
            Ok((StatusCode::ACCEPTED, _, _))
        );
        let mut good = false;
        if posted {
            let want = format!("\"id\":{id}");
            while let Some(event) = events.next().await {
                if event.name == "message" && event.data.contains(&want) {
                    good = is_success(event.data.as_bytes());
                    break;
                }
            }
        }
        id += 1;
        tally.record(good, t.elapsed());
        if !posted {
            break;
        }
    }
    tally
}

/// The ceiling server, as a child process.
struct Ceiling {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ceiling() -> Ceiling {
    let mut child = Command::new(std::env::current_exe().expect("this executable"))
        .env("LOAD_ROLE", "ceiling")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the ceiling starts");
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the ceiling's address");
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .parse()
        .expect("an address");
    Ceiling { child, addr }
}

fn addr_of(server: &Server) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address")
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the ceiling did in one run at one concurrency.
#[derive(Clone, Copy)]
struct CeilingRun {
    per_second: f64,
    p99: Duration,
    cpu_us_per_request: f64,
}

/// The report: every figure, with its ratio to the ceiling at the same concurrency as the same
/// generator measured it.
#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
    ceiling: BTreeMap<(Generator, usize), Vec<CeilingRun>>,
    notes: Vec<String>,
    startup: Option<Duration>,
    idle_rss_kib: Option<u64>,
    idle: Vec<idle::IdleRun>,
    /// Whether `h2load` is on `PATH`.
    h2load: bool,
}

impl Report {
    /// The mean of the ceiling's runs at `concurrency` by `generator`.
    fn ceiling_at(&self, generator: Generator, concurrency: usize) -> Option<CeilingRun> {
        let runs = self.ceiling.get(&(generator, concurrency))?;
        let n = runs.len() as f64;
        Some(CeilingRun {
            per_second: runs.iter().map(|r| r.per_second).sum::<f64>() / n,
            p99: runs.iter().map(|r| r.p99).sum::<Duration>() / u32::try_from(runs.len()).ok()?,
            cpu_us_per_request: runs.iter().map(|r| r.cpu_us_per_request).sum::<f64>() / n,
        })
    }

    fn ratio(&self, f: &Figure) -> Option<f64> {
        self.ceiling_at(f.generator, f.concurrency)
            .map(|c| f.per_second / c.per_second)
    }

    fn show(&self, f: &Figure) {
        let ratio = self.ratio(f).map_or("-".to_owned(), |r| format!("{r:.2}"));
        println!(
            "| {:<50} | {:>3} | {:>9.0} | {:>6} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {:>6} | {:>7.1} |",
            f.name,
            f.concurrency,
            f.per_second,
            ratio,
            ms(f.p50),
            ms(f.p90),
            ms(f.p99),
            ms(f.max),
            f.errors,
            f.cpu_us_per_request
        );
    }

    /// Records a figure; prints it at once (its ratio to the ceiling as far as it is known yet).
    fn push(&mut self, f: Figure) {
        self.show(&f);
        self.figures.push(f);
    }

    /// Records a run of the ceiling, then the figure.
    fn push_ceiling(&mut self, f: Figure) {
        self.ceiling
            .entry((f.generator, f.concurrency))
            .or_default()
            .push(CeilingRun {
                per_second: f.per_second,
                p99: f.p99,
                cpu_us_per_request: f.cpu_us_per_request,
            });
        self.push(f);
    }

    /// Every figure again, with its ratio to the mean of the ceiling's runs at its concurrency.
    fn table(&self) {
        println!();
        header();
        for f in &self.figures {
            self.show(f);
        }
    }
}

fn header() {
    println!(
        "| {:<50} | {:>3} | {:>9} | {:>6} | {:>7} | {:>7} | {:>7} | {:>7} | {:>6} | {:>7} |",
        "figure", "c", "req/s", "×ceil", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "CPU µs"
    );
    println!(
        "|{:-<52}|{:-<5}|{:-<11}|{:-<8}|{:-<9}|{:-<9}|{:-<9}|{:-<9}|{:-<8}|{:-<9}|",
        "", "", "", "", "", "", "", "", "", ""
    );
}

async fn measure_ceiling(report: &mut Report, window: Duration, when: &str) {
    let ceiling = start_ceiling();
    let target = Target::Ceiling { addr: ceiling.addr };
    for c in [1, 16, 64] {
        let f = http_figure(
            &format!("ceiling ({when})"),
            ceiling.child.id(),
            c,
            window,
            &target,
            Tool::LoadSkill,
        )
        .await;
        report.push_ceiling(f);
    }
    if report.h2load {
        // The request h2load sends to the service (`stateless`), answered with the fixed result.
        let headers = stateless_headers("ask_live_ceiling", Tool::LoadSkill);
        let body = Tool::LoadSkill.stateless_body(1, 0);
        let request = h2load::FixedRequest {
            addr: ceiling.addr,
            path: "/mcp",
            headers: &as_refs(&headers),
            body: &body,
        };
        for c in H2LOAD_CONCURRENCY {
            let name = format!("ceiling ({when}), h2load");
            match h2load::measure(&name, ceiling.child.id(), c, window, &request).await {
                Ok((f, note)) => {
                    report.push_ceiling(f);
                    report.notes.push(note);
                }
                Err(e) => report.notes.push(format!("{name} c={c}: {e}")),
            }
        }
    }
    report.notes.push(format!(
        "ceiling RSS ({when}): {} KiB",
        rss_kib(ceiling.child.id())
    ));
}

/// `tools/call load_skill` without a session (protocol 2026-07-28: no initialize, the version
/// in `params._meta`, the routing headers), by the harness's generator at c=1, 16 and 64 and by
/// h2load (one fixed request) at c=16 and 64.
async fn stateless(report: &mut Report, addr: SocketAddr, pid: u32, token: &str, window: Duration) {
    let target = Target::Stateless {
        addr,
        token: token.to_owned(),
    };
    let headers = stateless_headers(token, Tool::LoadSkill);
    let headers = as_refs(&headers);
    let body = Tool::LoadSkill.stateless_body(1, 0);
    // The request h2load repeats, checked once here: h2load reads statuses, not bodies.
    let checked = match Conn::open(addr).await {
        Ok(mut conn) => match conn
            .call(Method::POST, "/mcp", &headers, body.clone())
            .await
        {
            Ok((status, _, reply)) if status.is_success() && is_success(&reply) => Ok(()),
            Ok((status, _, reply)) => Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&reply[..reply.len().min(300)])
            )),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = checked {
        report.notes.push(format!(
            "stateless: the request is not answered with a success ({e}); not measured"
        ));
        return;
    }
    for c in [1, 16, 64] {
        let f = http_figure(STATELESS, pid, c, window, &target, Tool::LoadSkill).await;
        report.push(f);
    }
    if !report.h2load {
        return;
    }
    let request = h2load::FixedRequest {
        addr,
        path: "/mcp",
        headers: &headers,
        body: &body,
    };
    for c in H2LOAD_CONCURRENCY {
        let name = format!("{STATELESS}, h2load");
        match h2load::measure(&name, pid, c, window, &request).await {
            Ok((f, note)) => {
                report.push(f);
                report.notes.push(note);
            }
            Err(e) => report.notes.push(format!("{name} c={c}: {e}")),
        }
    }
}

/// `search_skills` over a user's 300 skills at c=1 and c=16, and what keeping the search index
/// costs an upload: each upload's time through the REST API (the whole change: staging, blobs,
/// database, index), and the search index's update alone, timed in process on the same corpus
/// (the server logs the same at `debug`, "search index made").
async fn search(
    report: &mut Report,
    client: &reqwest::Client,
    server: &Server,
    addr: SocketAddr,
    pid: u32,
    window: Duration,
) {
    let (user, mut uploads) = corpus::search_user(client, &server.base, "searcher").await;
    uploads.sort_unstable();
    let pick = |times: &[Duration], q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    report.notes.push(format!(
        "search corpus: 300 skills uploaded one by one through the REST API: upload p50 {:.1} ms, p90 {:.1} ms, last 30 (299 skills indexed already) p50 {:.1} ms",
        pick(&uploads, 0.5).as_secs_f64() * 1e3,
        pick(&uploads, 0.9).as_secs_f64() * 1e3,
        {
            let mut last = uploads[270..].to_vec();
            last.sort_unstable();
            pick(&last, 0.5).as_secs_f64() * 1e3
        },
    ));
    let target = Target::Service {
        addr,
        token: user.api_token,
    };
    for c in [1, 16] {
        let f = http_figure(
            "search_skills (300 skills), Streamable HTTP",
            pid,
            c,
            window,
            &target,
            Tool::Search,
        )
        .await;
        report.push(f);
    }
    report.notes.push(search_index_update());
}

/// The search index's build and its update for one changed skill among 300, as an upload
/// publishes it, timed in this process on the search corpus.
fn search_index_update() -> String {
    use agentskills_mcp::skills::search::{SearchIndex, SearchText, body};
    let skills: Vec<(uuid::Uuid, String, String, String)> = (0..300)
        .map(|i| {
            let (name, text) = corpus::search_skill(i);
            let description = text
                .lines()
                .find_map(|l| l.strip_prefix("description: "))
                .unwrap_or_default()
                .to_owned();
            (
                uuid::Uuid::from_u128(i as u128 + 1),
                name,
                description,
                text,
            )
        })
        .collect();
    let text_of = |i: usize, version: &'static str| {
        let (id, name, description, md) = &skills[i];
        SearchText {
            id: *id,
            name,
            description,
            body: body(md),
            version,
        }
    };
    let started = Instant::now();
    let index = SearchIndex::default().updated((0..300).map(|i| text_of(i, "v1")));
    let build = started.elapsed();
    let mut updates = Vec::with_capacity(300);
    let mut current = index;
    for changed in 0..300 {
        let started = Instant::now();
        // One skill has a new version; the other 299 are kept as they were.
        let next =
            current.updated((0..300).map(|i| text_of(i, if i <= changed { "v2" } else { "v1" })));
        updates.push(started.elapsed());
        current = next;
    }
    updates.sort_unstable();
    format!(
        "search index, 300 skills (in process): built in {:.1} ms; updated for one uploaded skill p50 {:.0} µs, p90 {:.0} µs, max {:.0} µs",
        build.as_secs_f64() * 1e3,
        updates[150].as_secs_f64() * 1e6,
        updates[270].as_secs_f64() * 1e6,
        updates[299].as_secs_f64() * 1e6,
    )
}

/// The parts measured on the main server (SQLite, the whole corpus).
const ON_THE_MAIN_SERVER: [&str; 10] = [
    "http",
    "sse",
    "stateless",
    "users",
    "oauth",
    "search",
    "flood",
    "sandbox",
    "postgres",
    "startup",
];

async fn run() {
    let window = Duration::from_secs(setting("LOAD_WINDOW_SECS", 5));
    let idle_streams = usize::try_from(setting("LOAD_IDLE_SESSIONS", 100_000)).unwrap_or(100_000);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let mut report = Report {
        h2load: h2load::available(),
        ..Report::default()
    };
    // Before any child is spawned: they inherit it.
    report.notes.push(idle::raise_open_files(idle_streams));
    if !report.h2load {
        report
            .notes
            .push("h2load not found, second generator not run".to_owned());
    }
    println!(
        "load harness: {} cores, window {} s, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        window.as_secs(),
        date()
    );
    header();

    if wanted("ceiling") {
        measure_ceiling(&mut report, window, "before").await;
    }
    if ON_THE_MAIN_SERVER.iter().any(|part| wanted(part)) {
        main_server(&mut report, &client, window).await;
    }
    if wanted("replicas") {
        replicas::replicas(&mut report, &client, window).await;
    }
    if wanted("idle") {
        idle::idle(&mut report, &client, idle_streams).await;
    }
    if wanted("ceiling") {
        measure_ceiling(&mut report, window, "after").await;
    }

    report.table();
    println!();
    for note in &report.notes {
        println!("- {note}");
    }
    targets(&report);
}

/// The main server: SQLite, the whole corpus, and the parts measured on it.
async fn main_server(report: &mut Report, client: &reqwest::Client, window: Duration) {
    let (_dir, data) = support::data_dir();
    let env = [("AGENTSKILLS_MCP_MAX_SESSIONS_PER_TOKEN", "1000")];
    let (server, _) = support::start_on(client, &data, &env).await;
    let addr = addr_of(&server);
    let built = Instant::now();
    let users = usize::try_from(setting("LOAD_USERS", 64))
        .unwrap_or(64)
        .max(1);
    let (main_user, others) = corpus::build(client, &server.base, 100, users - 1, 5).await;
    report.notes.push(format!(
        "corpus: 1 user × 100 skills + {} users × 5 skills, made in {:.1} s",
        users - 1,
        built.elapsed().as_secs_f64()
    ));
    let pid = server.pid();
    println!("(service pid {pid}, corpus ready)");
    let service = Target::Service {
        addr,
        token: main_user.api_token.clone(),
    };

    if wanted("http") {
        for (tool, label) in [
            (Tool::LoadSkill, "load_skill"),
            (Tool::Metadata, "load_skill_metadata (100 skills)"),
        ] {
            for c in [1, 16, 64] {
                let name = format!("{label}, Streamable HTTP");
                let f = http_figure(&name, pid, c, window, &service, tool).await;
                report.push(f);
            }
        }
    }
    if wanted("sse") {
        for (tool, label) in [
            (Tool::LoadSkill, "load_skill"),
            (Tool::Metadata, "load_skill_metadata (100 skills)"),
        ] {
            for c in [1, 16, 64] {
                let token = main_user.api_token.clone();
                let f = measure(&format!("{label}, legacy SSE"), pid, c, window, |w, b| {
                    sse_worker(addr, token.clone(), tool, w, b, window)
                })
                .await;
                report.push(f);
            }
        }
    }
    if wanted("stateless") {
        stateless(report, addr, pid, &main_user.api_token, window).await;
    }
    if wanted("users") {
        let tokens: Vec<String> = std::iter::once(main_user.api_token.clone())
            .chain(others.iter().map(|u| u.api_token.clone()))
            .collect();
        // Taken in turns, three times each, so that the machine's drift falls on both alike;
        // the targets compare the medians.
        for _ in 0..3 {
            let f = measure(
                "load_skill, 64 sessions of 64 users",
                pid,
                64,
                window,
                |w, b| {
                    let target = Target::Service {
                        addr,
                        token: tokens[w % tokens.len()].clone(),
                    };
                    http_worker(target, Tool::LoadSkill, w, b, window)
                },
            )
            .await;
            report.push(f);
            let name = "load_skill, 64 sessions of 1 user";
            let f = http_figure(name, pid, 64, window, &service, Tool::LoadSkill).await;
            report.push(f);
        }
    }
    if wanted("oauth") {
        // The same user's skills, one credential or the other, in turns three times each so
        // that the machine's drift falls on both alike; the targets compare the medians.
        let oauth = Target::Service {
            addr,
            token: corpus::oauth_token(&server.base, "bench").await,
        };
        for _ in 0..3 {
            let f = http_figure(WITH_API_TOKEN, pid, 64, window, &service, Tool::LoadSkill).await;
            report.push(f);
            let f = http_figure(WITH_OAUTH, pid, 64, window, &oauth, Tool::LoadSkill).await;
            report.push(f);
        }
    }
    if wanted("search") {
        search(report, client, &server, addr, pid, window).await;
    }
    if wanted("flood") {
        flood(report, &server, &service, window).await;
    }
    if wanted("sandbox") {
        sandbox(report, client, &server, &service, window).await;
    }
    if wanted("postgres") {
        postgres(report, client, window, &service, pid).await;
    }
    report
        .notes
        .push(format!("server RSS after the runs: {} KiB", rss_kib(pid)));
    server.stop();

    if wanted("startup") {
        startup(report, client, &data, &main_user).await;
    }
}

/// 50 connections posting wrong-password logins (default scrypt cost) while `load_skill` runs.
async fn flood(report: &mut Report, server: &Server, service: &Target, window: Duration) {
    let addr = addr_of(server);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = tokio::task::JoinSet::new();
    for n in 0..50 {
        let stop = Arc::clone(&stop);
        attackers.spawn(async move {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let Ok(mut conn) = Conn::open(addr).await else {
                return statuses;
            };
            let body = Bytes::from(format!(
                r#"{{"email":"user{:03}@example.com","password":"not the password"}}"#,
                n % 63
            ));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = conn
                    .call(
                        Method::POST,
                        "/api/v1/auth/login",
                        &[("content-type", "application/json")],
                        body.clone(),
                    )
                    .await;
                match sent {
                    Ok((status, _, _)) => *statuses.entry(status.as_u16()).or_default() += 1,
                    Err(_) => match Conn::open(addr).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    },
                }
            }
            statuses
        });
    }
    // Let the flood reach its steady state first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    for c in [16, 64] {
        let f = http_figure(
            "load_skill during a 50-connection login flood",
            server.pid(),
            c,
            window,
            service,
            Tool::LoadSkill,
        )
        .await;
        report.push(f);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64() + 1.0;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for part in attackers.join_all().await {
        for (status, n) in part {
            *statuses.entry(status).or_default() += n;
        }
    }
    let total: u64 = statuses.values().sum();
    report.notes.push(format!(
        "login flood: {:.0} attempts/s answered, by status {:?}",
        total as f64 / elapsed,
        statuses
    ));
}

/// `run_shell_command` of `echo hi` in the sandbox.
async fn sandbox(
    report: &mut Report,
    client: &reqwest::Client,
    server: &Server,
    service: &Target,
    window: Duration,
) {
    let health: serde_json::Value = match client.get(format!("{}/health", server.base)).send().await
    {
        Ok(res) => res.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    if health["sandbox"]["ready"] != true {
        report.notes.push(format!(
            "sandbox not ready here, not measured: {}",
            health["sandbox"]["reason"]
        ));
        return;
    }
    for c in [1, 4] {
        let f = http_figure(
            "run_shell_command `echo hi` (sandboxed)",
            server.pid(),
            c,
            window,
            service,
            Tool::Shell,
        )
        .await;
        report.push(f);
    }
}

/// Time from process start to the first successful `tools/call`, and the RSS of an idle server.
async fn startup(
    report: &mut Report,
    client: &reqwest::Client,
    data: &std::path::Path,
    user: &corpus::User,
) {
    let mut times = Vec::new();
    for _ in 0..5 {
        let (server, started) = support::spawn_on(data, &[]);
        let addr = addr_of(&server);
        let target = Target::Service {
            addr,
            token: user.api_token.clone(),
        };
        loop {
            if first_call(&target).await {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                report
                    .notes
                    .push("startup: no successful call in 30 s".to_owned());
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(started.elapsed());
        server.stop();
    }
    times.sort_unstable();
    report.notes.push(format!(
        "start to first successful tools/call (SQLite, 5 starts): median {:.0} ms, min {:.0} ms, max {:.0} ms",
        ms(times[2]),
        ms(times[0]),
        ms(times[4])
    ));
    report.startup = Some(times[2]);
    let (server, _) = support::start_on(client, data, &[]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.idle_rss_kib = Some(rss_kib(server.pid()));
    report.notes.push(format!(
        "RSS of an idle server 1 s after start: {} KiB",
        rss_kib(server.pid())
    ));
    server.stop();
}

async fn first_call(target: &Target) -> bool {
    let Target::Service { addr, token } = target else {
        return false;
    };
    let Ok(mut conn) = Conn::open(*addr).await else {
        return false;
    };
    let Ok(session) = open_session(&mut conn, token).await else {
        return false;
    };
    let headers = mcp_headers(token, Some(&session));
    matches!(
        conn.call(Method::POST, "/mcp", &as_refs(&headers), Tool::LoadSkill.body(1, 0)).await,
        Ok((status, _, body)) if status.is_success() && is_success(&body)
    )
}

/// `load_skill` at c=64 with PostgreSQL as the back end, in turns with the SQLite server
/// (`sqlite`, process `sqlite_pid`), three times each.
async fn postgres(
    report: &mut Report,
    client: &reqwest::Client,
    window: Duration,
    sqlite: &Target,
    sqlite_pid: u32,
) {
    let Some((admin_client, name, url)) = fresh_database(report, "agentskills_load").await else {
        return;
    };
    let (_dir, data) = support::data_dir();
    let env = [("DATABASE_URL", url.as_str())];
    let (server, _) = support::start_on(client, &data, &env).await;
    let user = corpus::user(client, &server.base, "bench", 5).await;
    let target = Target::Service {
        addr: addr_of(&server),
        token: user.api_token,
    };
    for _ in 0..3 {
        let name = "load_skill, Streamable HTTP, PostgreSQL";
        let f = http_figure(name, server.pid(), 64, window, &target, Tool::LoadSkill).await;
        report.push(f);
        let f = http_figure(
            SQLITE_BESIDE_PG,
            sqlite_pid,
            64,
            window,
            sqlite,
            Tool::LoadSkill,
        )
        .await;
        report.push(f);
    }
    server.stop();
    let _ = admin_client
        .batch_execute(&format!("drop database if exists {name} with (force)"))
        .await;
}

/// A new database on `LOAD_DATABASE_URL`'s server (else `TEST_DATABASE_URL`'s, else the local
/// one): a client of the server, the database's name and its URL; `None` (with a note) if the
/// server cannot be reached or will not make one.
async fn fresh_database(
    report: &mut Report,
    prefix: &str,
) -> Option<(tokio_postgres::Client, String, String)> {
    let admin = std::env::var("LOAD_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("{prefix}_{}", std::process::id());
    let client = match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
        Ok((c, connection)) => {
            tokio::spawn(connection);
            c
        }
        Err(e) => {
            report.notes.push(format!(
                "PostgreSQL unreachable at {admin}, {prefix} not measured: {e}"
            ));
            return None;
        }
    };
    if let Err(e) = client
        .batch_execute(&format!("create database {name}"))
        .await
    {
        report.notes.push(format!(
            "PostgreSQL: could not create a database for {prefix}: {e}"
        ));
        return None;
    }
    let url = match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => admin.clone(),
    };
    Some((client, name, url))
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A row of a targets table: the target, what it wants, what was measured, whether it is met
/// (`None` when it cannot be judged, such as a ratio without the ceiling measured).
struct Row {
    target: String,
    wanted: String,
    measured: String,
    met: Option<bool>,
}

impl Row {
    fn new(
        target: impl Into<String>,
        wanted: impl Into<String>,
        measured: impl Into<String>,
        met: Option<bool>,
    ) -> Row {
        Row {
            target: target.into(),
            wanted: wanted.into(),
            measured: measured.into(),
            met,
        }
    }
}

/// `x` as `0.618 ×` (three decimals, so that a ratio just under a bound does not print as it), or
/// `-` when it is not known.
fn times(x: Option<f64>) -> String {
    x.map_or("-".to_owned(), |x| format!("{x:.3} ×"))
}

/// The targets of issue 20, then those of issue 7 that are still measured, each computed from
/// this run's figures (ratios to the ceiling as the same generator measured it in this run).
fn targets(report: &Report) {
    use Generator::{H2load, Harness};
    // A figure measured more than once counts by its median run.
    let figure = |name: &str, generator: Generator, c: usize| {
        let mut runs: Vec<&Figure> = report
            .figures
            .iter()
            .filter(|f| f.name == name && f.generator == generator && f.concurrency == c)
            .collect();
        runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
        runs.get(runs.len() / 2).copied()
    };
    let median_cpu = |name: &str, c: usize| {
        let mut cpu: Vec<f64> = report
            .figures
            .iter()
            .filter(|f| f.name == name && f.concurrency == c)
            .map(|f| f.cpu_us_per_request)
            .collect();
        cpu.sort_by(f64::total_cmp);
        cpu.get(cpu.len() / 2).copied()
    };
    let ceiling64 = report.ceiling_at(Harness, 64);
    let mut rows = Vec::new();

    if let Some(f) = figure("load_skill, Streamable HTTP", Harness, 64) {
        let cpu = ceiling64.map(|c| f.cpu_us_per_request / c.cpu_us_per_request);
        rows.push(Row::new(
            "server CPU per load_skill tools/call, c=64, Streamable HTTP, API token",
            "≤ 1.6 × the ceiling's CPU per request at c=64",
            format!(
                "{:.1} µs vs {}: {}",
                f.cpu_us_per_request,
                ceiling64.map_or("-".to_owned(), |c| format!(
                    "{:.1} µs",
                    c.cpu_us_per_request
                )),
                times(cpu)
            ),
            cpu.map(|r| r <= 1.6),
        ));
        let ratio = report.ratio(f);
        rows.push(Row::new(
            "load_skill throughput, c=64, Streamable HTTP",
            "≥ 0.65 × ceiling",
            format!(
                "{:.0} req/s: {} ceiling, {} errors",
                f.per_second,
                times(ratio),
                f.errors
            ),
            ratio.map(|r| r >= 0.65),
        ));
        let p99 = ceiling64.map(|c| f.p99.as_secs_f64() / c.p99.as_secs_f64());
        rows.push(Row::new(
            "load_skill p99, c=64, Streamable HTTP",
            "≤ 1.5 × the ceiling's p99 at c=64",
            format!(
                "{:.2} ms vs {}: {}",
                ms(f.p99),
                ceiling64.map_or("-".to_owned(), |c| format!("{:.2} ms", ms(c.p99))),
                times(p99)
            ),
            p99.map(|r| r <= 1.5),
        ));
    }
    for (name, transport, wanted) in [
        (
            "load_skill_metadata (100 skills), Streamable HTTP",
            "Streamable HTTP",
            0.55,
        ),
        (
            "load_skill_metadata (100 skills), legacy SSE",
            "legacy SSE",
            0.45,
        ),
    ] {
        if let Some(f) = figure(name, Harness, 64) {
            let ratio = report.ratio(f);
            rows.push(Row::new(
                format!("load_skill_metadata over 100 skills, c=64, {transport}"),
                format!("≥ {wanted} × ceiling"),
                format!("{:.0} req/s: {} ceiling", f.per_second, times(ratio)),
                ratio.map(|r| r >= wanted),
            ));
        }
    }
    for (generator, name, by) in [
        (Harness, STATELESS.to_owned(), "the harness's generator"),
        (H2load, format!("{STATELESS}, h2load"), "h2load"),
    ] {
        if let Some(f) = figure(&name, generator, 64) {
            let ratio = report.ratio(f);
            rows.push(Row::new(
                format!("stateless tools/call load_skill (2026-07-28), c=64, {by}"),
                "≥ 0.6 × ceiling (by the same generator)",
                format!(
                    "{:.0} req/s: {} ceiling, {:.1} µs CPU, {} errors",
                    f.per_second,
                    times(ratio),
                    f.cpu_us_per_request,
                    f.errors
                ),
                ratio.map(|r| r >= 0.6),
            ));
        }
    }
    for run in &report.idle {
        let label = if run.transport == "sse" {
            "legacy SSE"
        } else {
            "Streamable HTTP"
        };
        rows.push(Row::new(
            format!("idle {label} streams"),
            "100,000 held, ≤ 16 KB RSS each, opened at ≥ 5,000/s",
            format!(
                "{} of {} held{}, {:.1} KB each, {:.0}/s",
                run.held,
                run.wanted,
                if run.tried < run.wanted {
                    format!(" ({} tried: the limit of open files)", run.tried)
                } else {
                    String::new()
                },
                run.bytes_per_stream / 1000.0,
                run.per_second
            ),
            Some(
                run.held >= 100_000
                    && run.bytes_per_stream <= 16_000.0
                    && run.per_second >= 5_000.0,
            ),
        ));
    }
    if let Some(t) = report.startup {
        rows.push(Row::new(
            "start to first successful tools/call (SQLite, median of 5)",
            "≤ 30 ms",
            format!("{:.0} ms", ms(t)),
            Some(t <= Duration::from_millis(30)),
        ));
    }
    if let (Some(api), Some(oauth)) = (
        figure(WITH_API_TOKEN, Harness, 64),
        figure(WITH_OAUTH, Harness, 64),
    ) {
        let gap = (api.per_second - oauth.per_second) / api.per_second;
        rows.push(Row::new(
            "load_skill c=64 with an OAuth access token vs an API token (medians of 3, in turns)",
            "within 5 %",
            format!(
                "{:.0} vs {:.0} req/s: {:.1} % {}",
                oauth.per_second,
                api.per_second,
                gap.abs() * 100.0,
                if gap > 0.0 { "slower" } else { "faster" }
            ),
            Some(gap <= 0.05),
        ));
    }
    if let (Some(three), Some(one)) = (
        median_cpu(replicas::THROUGH_HAPROXY, 64),
        median_cpu(replicas::DIRECT, 64),
    ) {
        let ratio = three / one;
        rows.push(Row::new(
            "3 replicas behind HAProxy vs 1 replica direct, load_skill c=64 (medians of 3, in turns)",
            "server CPU per request ≤ 1.2 ×",
            format!("{three:.1} vs {one:.1} µs: {ratio:.2} ×"),
            Some(ratio <= 1.2),
        ));
    }
    if let Some(f) = figure("search_skills (300 skills), Streamable HTTP", Harness, 16) {
        let ratio = report.ratio(f);
        rows.push(Row::new(
            "search_skills over 300 skills, c=16",
            "≥ 0.3 × ceiling",
            format!("{:.0} req/s: {} ceiling", f.per_second, times(ratio)),
            ratio.map(|r| r >= 0.3),
        ));
    }
    println!();
    println!(
        "Against the targets of issue 20 (a figure measured more than once counts by its median):"
    );
    print_rows(&rows);

    let mut earlier = Vec::new();
    if let (Some(many), Some(one)) = (
        figure("load_skill, 64 sessions of 64 users", Harness, 64),
        figure("load_skill, 64 sessions of 1 user", Harness, 64),
    ) {
        let gap = (many.per_second - one.per_second).abs() / many.per_second.max(one.per_second);
        earlier.push(Row::new(
            "64 sessions of one user vs 64 users (medians of 3, in turns)",
            "within 10 %",
            format!(
                "{:.0} vs {:.0} req/s: {:.1} % apart",
                one.per_second,
                many.per_second,
                gap * 100.0
            ),
            Some(gap <= 0.10),
        ));
    }
    if let Some(rss) = report.idle_rss_kib {
        earlier.push(Row::new(
            "idle RSS after start",
            "≤ 32 MB",
            format!("{:.1} MB", rss as f64 * 1024.0 / 1e6),
            Some(rss as f64 * 1024.0 <= 32e6),
        ));
    }
    if let Some(f) = figure("load_skill during a 50-connection login flood", Harness, 64) {
        earlier.push(Row::new(
            "load_skill p99 during a 50-connection login flood (c=64)",
            "≤ 10 ms",
            format!("{:.2} ms", ms(f.p99)),
            Some(f.p99 <= Duration::from_millis(10)),
        ));
    }
    if let (Some(pg), Some(sqlite)) = (
        figure("load_skill, Streamable HTTP, PostgreSQL", Harness, 64),
        figure(SQLITE_BESIDE_PG, Harness, 64),
    ) {
        let pg = pg.per_second;
        let gap = (sqlite.per_second - pg).abs() / sqlite.per_second;
        earlier.push(Row::new(
            "PostgreSQL back end, load_skill c=64 (medians of 3, in turns)",
            "within 10 % of SQLite",
            format!(
                "{pg:.0} vs {:.0} req/s: {:.1} % apart",
                sqlite.per_second,
                gap * 100.0
            ),
            Some(gap <= 0.10),
        ));
    }
    if let Some(f) = figure("run_shell_command `echo hi` (sandboxed)", Harness, 1) {
        earlier.push(Row::new(
            "sandboxed echo hi",
            "median ≤ 15 ms",
            format!("median {:.1} ms, {:.0} runs/s", ms(f.p50), f.per_second),
            Some(f.p50 <= Duration::from_millis(15)),
        ));
    }
    if !earlier.is_empty() {
        println!();
        println!("Earlier targets (issue 7), still measured:");
        print_rows(&earlier);
    }
}

fn print_rows(rows: &[Row]) {
    println!();
    if rows.is_empty() {
        println!("(none measured in this run)");
        return;
    }
    println!("| target | wanted | measured | met |");
    println!("|---|---|---|---|");
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!(
            "| {} | {} | {} | {met} |",
            row.target, row.wanted, row.measured
        );
    }
}
