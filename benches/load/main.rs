//! The load harness: real MCP traffic against the release server, beside a minimal hyper server
//! (the ceiling) measured by the same generator in the same run.
//!
//! `cargo bench --bench load` starts the release binary on an embedded database with a generated
//! corpus (a main user with 100 skills and 63 more users with 5 each, all made through the REST
//! API, each skill a `SKILL.md`, a reference and a script), then drives it. Every worker holds its
//! own kept-alive connection and its own session (initialize, `Mcp-Session-Id`,
//! `notifications/initialized` and one warm-up call happen before the timed window), then calls
//! `tools/call` back to back with unique JSON-RPC ids. A reply counts only if it is a 2xx with a
//! `result` and no `isError: true`. The ceiling (`ceiling.rs`) is measured before and after the service, and
//! every throughput is printed as a ratio to it at the same concurrency.
//!
//! Settings (environment): `LOAD_WINDOW_SECS` (5), `LOAD_IDLE_SESSIONS` (10000), `LOAD_USERS`
//! (64, the main user included),
//! `LOAD_DATABASE_URL` (default `TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`; the PostgreSQL run is skipped if it is unreachable),
//! `LOAD_ONLY` (a comma-separated subset of `ceiling,http,sse,users,oauth,search,idle,startup,
//! flood,sandbox,postgres,replicas`), `BENCH_SERVER_LOG` (the server's log level, `info`), `BENCH_SERVER_BIN` (another
//! build of the server to run, such as one with debug info for `perf record --call-graph dwarf`).
//!
//! Benchmarks are not tests: nothing here fails a build; the figures are for people.

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
mod replicas;

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::sync::Barrier;

use client::{Conn, Events, is_success};
use support::{Server, rss_kib};

const PROTOCOL: &str = "2025-06-18";

/// `load_skill` with an API token and with an OAuth access token of the same user, in turns.
const WITH_API_TOKEN: &str = "load_skill, Streamable HTTP, API token (in turns with OAuth)";
const WITH_OAUTH: &str = "load_skill, Streamable HTTP, OAuth access token";

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
    fn body(self, id: u64, worker: usize) -> Bytes {
        let text = match self {
            Tool::LoadSkill => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"load_skill","arguments":{{"skill_name":"{}"}}}}}}"#,
                corpus::skill_name((worker + id as usize) % 5)
            ),
            Tool::Metadata => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"load_skill_metadata","arguments":{{}}}}}}"#
            ),
            Tool::Shell => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"run_shell_command","arguments":{{"skill_name":"skill-000","command":"echo hi"}}}}}}"#
            ),
            Tool::Search => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"search_skills","arguments":{{"query":"{}","limit":10}}}}}}"#,
                corpus::SEARCH_QUERIES[(worker + id as usize) % corpus::SEARCH_QUERIES.len()]
            ),
        };
        Bytes::from(text)
    }
}

/// Where a worker sends its calls.
#[derive(Clone)]
enum Target {
    /// The service, as a user holding this API token.
    Service { addr: SocketAddr, token: String },
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

/// One measured figure.
struct Figure {
    name: String,
    concurrency: usize,
    per_second: f64,
    errors: u64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    cpu_us_per_request: f64,
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
    latencies.sort_unstable();
    let pick = |q: f64| {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    Figure {
        name: name.to_owned(),
        concurrency,
        per_second: ok as f64 / window.as_secs_f64(),
        errors,
        p50: pick(0.5),
        p90: pick(0.9),
        p99: pick(0.99),
        max: pick(1.0),
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

/// Opens a Streamable HTTP session on `conn`; returns its id.
async fn open_session(conn: &mut Conn, token: &str) -> Option<String> {
    let headers = mcp_headers(token, None);
    let (status, head, _) = conn
        .call(Method::POST, "/mcp", &as_refs(&headers), initialize_body())
        .await
        .ok()?;
    if status != StatusCode::OK {
        return None;
    }
    let session = head.get("mcp-session-id")?.to_str().ok()?.to_owned();
    let headers = mcp_headers(token, Some(&session));
    let (status, _, _) = conn
        .call(
            Method::POST,
            "/mcp",
            &as_refs(&headers),
            Bytes::from_static(INITIALIZED.as_bytes()),
        )
        .await
        .ok()?;
    (status == StatusCode::ACCEPTED).then_some(session)
}

/// A Streamable HTTP worker: its own connection and session, then `tool` back to back.
async fn http_worker(
    target: Target,
    tool: Tool,
    worker: usize,
    barrier: Arc<Barrier>,
    window: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let (addr, token) = match &target {
        Target::Service { addr, token } => (*addr, token.clone()),
        Target::Ceiling { addr } => (*addr, "ask_live_ceiling".to_owned()),
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
        session = open_session(c, &token).await;
        if session.is_none() {
            println!("worker {worker}: no session");
            conn = None;
        }
    }
    // One call before the window, so that the user's workspace is loaded (it starts on first
    // use) and every figure measures a warm service.
    if let Some(c) = conn.as_mut() {
        let headers = mcp_headers(&token, session.as_deref());
        let _ = c
            .call(
                Method::POST,
                "/mcp",
                &as_refs(&headers),
                tool.body(0, worker),
            )
            .await;
    }
    barrier.wait().await;
    let Some(mut conn) = conn else {
        tally.errors += 1;
        return tally;
    };
    let headers = mcp_headers(&token, session.as_deref());
    let headers = as_refs(&headers);
    let started = Instant::now();
    let mut id = 1u64;
    while started.elapsed() < window {
        let body = tool.body(id, worker);
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

async fn open_legacy(addr: SocketAddr, token: &str) -> Option<Legacy> {
    let mut stream_conn = Conn::open(addr).await.ok()?;
    let auth = format!("Bearer {token}");
    let res = stream_conn
        .send(
            Method::GET,
            "/sse",
            &[("authorization", &auth), ("accept", "text/event-stream")],
            Bytes::new(),
        )
        .await
        .ok()?;
    if res.status() != StatusCode::OK {
        return None;
    }
    let mut events = Events::new(res.into_body());
    let endpoint = events.next().await?;
    if endpoint.name != "endpoint" {
        return None;
    }
    let path = endpoint.data;
    let mut post = Conn::open(addr).await.ok()?;
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let (status, _, _) = post
        .call(Method::POST, &path, &headers, initialize_body())
        .await
        .ok()?;
    if status != StatusCode::ACCEPTED {
        return None;
    }
    let reply = events.next().await?;
    if !is_success(reply.data.as_bytes()) {
        return None;
    }
    let (status, _, _) = post
        .call(
            Method::POST,
            &path,
            &headers,
            Bytes::from_static(INITIALIZED.as_bytes()),
        )
        .await
        .ok()?;
    (status == StatusCode::ACCEPTED).then_some(Legacy {
        events,
        stream_conn,
        path,
        post,
    })
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
    let opened = open_legacy(addr, &token).await;
    barrier.wait().await;
    let Some(Legacy {
        mut events,
        path,
        mut post,
        ..
    }) = opened
    else {
        println!("worker {worker}: no legacy session");
        tally.errors += 1;
        return tally;
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

/// The report: every figure, with its ratio to the ceiling at the same concurrency.
#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
    ceiling: BTreeMap<usize, Vec<f64>>,
    notes: Vec<String>,
    targets: Vec<(String, String, String, Option<bool>)>,
    startup: Option<Duration>,
    idle_rss_kib: Option<u64>,
    /// Bytes of server RSS per idle session, by transport.
    per_session: Vec<(&'static str, usize, f64)>,
}

impl Report {
    fn ceiling_at(&self, concurrency: usize) -> Option<f64> {
        let runs = self.ceiling.get(&concurrency)?;
        Some(runs.iter().sum::<f64>() / runs.len() as f64)
    }

    fn ratio(&self, f: &Figure) -> Option<f64> {
        self.ceiling_at(f.concurrency).map(|c| f.per_second / c)
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
    for c in [1, 16, 64] {
        let target = Target::Ceiling { addr: ceiling.addr };
        let f = http_figure(
            &format!("ceiling ({when})"),
            ceiling.child.id(),
            c,
            window,
            &target,
            Tool::LoadSkill,
        )
        .await;
        report.ceiling.entry(c).or_default().push(f.per_second);
        report.push(f);
    }
    report.notes.push(format!(
        "ceiling RSS ({when}): {} KiB",
        rss_kib(ceiling.child.id())
    ));
}

/// `search_skills` over a user's 300 skills at c=1 and c=16, and what keeping the search index
/// costs an upload: each upload's time through the REST API (the whole change: staging, blobs,
/// database, index), and the search index's update alone, timed in process on the same corpus
/// (the server logs the same at `debug`, "search index updated").
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

async fn run() {
    let window = Duration::from_secs(setting("LOAD_WINDOW_SECS", 5));
    let idle_sessions = usize::try_from(setting("LOAD_IDLE_SESSIONS", 10_000)).unwrap_or(10_000);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let mut report = Report::default();
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

    // The main server: SQLite, the whole corpus.
    let (_dir, data) = support::data_dir();
    let env = [("AGENTSKILLS_MCP_MAX_SESSIONS_PER_TOKEN", "1000")];
    let (server, _) = support::start_on(&client, &data, &env).await;
    let addr = addr_of(&server);
    let built = Instant::now();
    let users = usize::try_from(setting("LOAD_USERS", 64))
        .unwrap_or(64)
        .max(1);
    let (main_user, others) = corpus::build(&client, &server.base, 100, users - 1, 5).await;
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
        search(&mut report, &client, &server, addr, pid, window).await;
    }
    if wanted("flood") {
        flood(&mut report, &server, &service, window).await;
    }
    if wanted("sandbox") {
        sandbox(&mut report, &client, &server, &service, window).await;
    }
    if wanted("postgres") {
        postgres(&mut report, &client, window, &service, pid).await;
    }
    if wanted("replicas") {
        replicas::replicas(&mut report, &client, window).await;
    }
    report
        .notes
        .push(format!("server RSS after the runs: {} KiB", rss_kib(pid)));
    server.stop();

    if wanted("startup") {
        startup(&mut report, &client, &data, &main_user).await;
    }
    if wanted("idle") {
        idle(&mut report, &client, idle_sessions).await;
    }
    if wanted("ceiling") {
        measure_ceiling(&mut report, window, "after").await;
    }

    report.table();
    println!();
    for note in &report.notes {
        println!("- {note}");
    }
    targets(&mut report);
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
    let Some(session) = open_session(&mut conn, token).await else {
        return false;
    };
    let headers = mcp_headers(token, Some(&session));
    matches!(
        conn.call(Method::POST, "/mcp", &as_refs(&headers), Tool::LoadSkill.body(1, 0)).await,
        Ok((status, _, body)) if status.is_success() && is_success(&body)
    )
}

/// Sessions held open and idle: RSS per session, on a fresh server for each transport.
async fn idle(report: &mut Report, client: &reqwest::Client, n: usize) {
    for transport in ["Streamable HTTP", "legacy SSE"] {
        let (_dir, data) = support::data_dir();
        let env = [
            ("AGENTSKILLS_MAX_CONNECTIONS", "30000"),
            ("AGENTSKILLS_MCP_MAX_SESSIONS_PER_TOKEN", "30000"),
        ];
        let (server, _) = support::start_on(client, &data, &env).await;
        let addr = addr_of(&server);
        let user = corpus::user(client, &server.base, "idle", 1).await;
        // One call first, so the user's workspace is loaded before the baseline.
        let target = Target::Service {
            addr,
            token: user.api_token.clone(),
        };
        first_call(&target).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(server.pid());
        let opened = Instant::now();
        let held = hold(addr, &user.api_token, n, transport == "legacy SSE").await;
        let open_secs = opened.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(server.pid());
        let per = (after.saturating_sub(before) * 1024) as f64 / held.len().max(1) as f64;
        report.notes.push(format!(
            "idle {transport} sessions: {} of {n} held (opened in {open_secs:.1} s), server RSS {before} → {after} KiB: {:.1} KB per session",
            held.len(),
            per / 1000.0
        ));
        report.per_session.push((
            if transport == "legacy SSE" {
                "sse"
            } else {
                "http"
            },
            held.len(),
            per,
        ));
        drop(held);
        server.stop();
    }
}

/// What keeps one idle session open: its stream and the connection carrying it. (An idle client
/// keeps no second connection for posting: it is closed once the handshake is done.)
struct Held {
    _events: Events,
    _conn: Conn,
}

async fn hold(addr: SocketAddr, token: &str, n: usize, legacy: bool) -> Vec<Held> {
    let mut held = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        while set.len() < 64 && next < n {
            next += 1;
            let token = token.to_owned();
            set.spawn(async move {
                if legacy {
                    return open_legacy(addr, &token).await.map(|l| Held {
                        _events: l.events,
                        _conn: l.stream_conn,
                    });
                }
                let mut conn = Conn::open(addr).await.ok()?;
                let session = open_session(&mut conn, &token).await?;
                let headers = mcp_headers(&token, Some(&session));
                let mut headers = as_refs(&headers);
                headers.retain(|(name, _)| *name != "content-type");
                headers.retain(|(name, _)| *name != "accept");
                headers.push(("accept", "text/event-stream"));
                let res = conn
                    .send(Method::GET, "/mcp", &headers, Bytes::new())
                    .await
                    .ok()?;
                (res.status() == StatusCode::OK).then(|| Held {
                    _events: Events::new(res.into_body()),
                    _conn: conn,
                })
            });
        }
        match set.join_next().await {
            Some(Ok(Some(h))) => held.push(h),
            Some(_) => {}
            None => break,
        }
    }
    held
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

/// The issue's targets, each with what was measured.
fn targets(report: &mut Report) {
    // A figure measured more than once counts by its median run.
    let figure = |name: &str, c: usize| {
        let mut runs: Vec<&Figure> = report
            .figures
            .iter()
            .filter(|f| f.name == name && f.concurrency == c)
            .collect();
        runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
        runs.get(runs.len() / 2).copied()
    };
    let mut rows: Vec<(String, String, String, Option<bool>)> = Vec::new();
    if let Some(f) = figure("load_skill, Streamable HTTP", 64) {
        let ratio = report.ratio(f);
        rows.push((
            "load_skill, c=64, Streamable HTTP with auth".into(),
            "≥ 0.5 × ceiling, p99 ≤ 5 ms, 0 errors".into(),
            format!(
                "{} × ceiling, p99 {:.2} ms, {} errors",
                ratio.map_or("-".into(), |r| format!("{r:.2}")),
                ms(f.p99),
                f.errors
            ),
            ratio.map(|r| r >= 0.5 && f.p99 <= Duration::from_millis(5) && f.errors == 0),
        ));
    }
    if let Some(f) = figure("load_skill_metadata (100 skills), Streamable HTTP", 64) {
        let ratio = report.ratio(f);
        rows.push((
            "load_skill_metadata over 100 skills, c=64".into(),
            "≥ 0.4 × ceiling".into(),
            ratio.map_or("-".into(), |r| format!("{r:.2} × ceiling")),
            ratio.map(|r| r >= 0.4),
        ));
    }
    if let (Some(many), Some(one)) = (
        figure("load_skill, 64 sessions of 64 users", 64),
        figure("load_skill, 64 sessions of 1 user", 64),
    ) {
        let gap = (many.per_second - one.per_second).abs() / many.per_second.max(one.per_second);
        rows.push((
            "64 sessions of one user vs 64 users (medians of 3, in turns)".into(),
            "within 10 %".into(),
            format!(
                "{:.0} vs {:.0} req/s: {:.1} % apart",
                one.per_second,
                many.per_second,
                gap * 100.0
            ),
            Some(gap <= 0.10),
        ));
    }
    if let (Some(api), Some(oauth)) = (figure(WITH_API_TOKEN, 64), figure(WITH_OAUTH, 64)) {
        let gap = (api.per_second - oauth.per_second) / api.per_second;
        rows.push((
            "load_skill c=64 with an OAuth access token vs an API token (medians of 3, in turns)"
                .into(),
            "within 5 %".into(),
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
    for (transport, label) in [("http", "Streamable HTTP"), ("sse", "legacy SSE")] {
        if let Some((_, held, per)) = report.per_session.iter().find(|(t, _, _)| *t == transport) {
            rows.push((
                format!("idle {label} sessions"),
                "10,000 held, ≤ 24 KB RSS each".into(),
                format!("{held} held, {:.1} KB each", per / 1000.0),
                Some(*held >= 10_000 && *per <= 24_000.0),
            ));
        }
    }
    if let Some(t) = report.startup {
        rows.push((
            "start to first successful tools/call".into(),
            "≤ 150 ms on SQLite".into(),
            format!("{:.0} ms", ms(t)),
            Some(t <= Duration::from_millis(150)),
        ));
    }
    if let Some(rss) = report.idle_rss_kib {
        rows.push((
            "idle RSS after start".into(),
            "≤ 32 MB".into(),
            format!("{:.1} MB", rss as f64 * 1024.0 / 1e6),
            Some(rss as f64 * 1024.0 <= 32e6),
        ));
    }
    if let Some(f) = figure("load_skill during a 50-connection login flood", 64) {
        rows.push((
            "load_skill p99 during a 50-connection login flood (c=64)".into(),
            "≤ 10 ms".into(),
            format!("{:.2} ms", ms(f.p99)),
            Some(f.p99 <= Duration::from_millis(10)),
        ));
    }
    if let (Some(pg), Some(sqlite)) = (
        figure("load_skill, Streamable HTTP, PostgreSQL", 64),
        figure(SQLITE_BESIDE_PG, 64),
    ) {
        let pg = pg.per_second;
        let gap = (sqlite.per_second - pg).abs() / sqlite.per_second;
        rows.push((
            "PostgreSQL back end, load_skill c=64 (medians of 3, in turns)".into(),
            "within 10 % of SQLite".into(),
            format!(
                "{pg:.0} vs {:.0} req/s: {:.1} % apart",
                sqlite.per_second,
                gap * 100.0
            ),
            Some(gap <= 0.10),
        ));
    }
    if let Some(f) = figure("run_shell_command `echo hi` (sandboxed)", 1) {
        rows.push((
            "sandboxed echo hi".into(),
            "median ≤ 15 ms".into(),
            format!("median {:.1} ms, {:.0} runs/s", ms(f.p50), f.per_second),
            Some(f.p50 <= Duration::from_millis(15)),
        ));
    }
    report.targets = rows;
    println!();
    println!("| target | wanted | measured | met |");
    println!("|---|---|---|---|");
    for (name, wanted, measured, met) in &report.targets {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!("| {name} | {wanted} | {measured} | {met} |");
    }
}
