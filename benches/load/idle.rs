//! `idle`: event streams held open and idle, `LOAD_IDLE_SESSIONS` (100,000) of them, on a fresh
//! server for each transport. A Streamable HTTP stream is a session (initialize,
//! `notifications/initialized`) and then `GET /mcp` with `Accept: text/event-stream` on the same
//! connection; a legacy SSE stream is `GET /sse`, with the handshake posted on a second
//! connection that is closed once it is done. Reported for each: how many were held (and how many
//! the server counts), the open rate over the whole opening (and in its first and last tenth),
//! the server's RSS before and after and so per stream, its CPU per stream opened, the harness's
//! own RSS, and the listen queue's overflows meanwhile.
//!
//! What 100,000 connections over loopback need, and where each is seen to:
//! - Source addresses: one address has about 28,000 ephemeral ports (`ip_local_port_range`), so
//!   `client::Conn::open` binds every socket to one of 127.0.0.1 to 127.0.0.250 in turn.
//! - Open files: [`raise_open_files`] raises the harness's soft and hard limits (as root, up to
//!   `fs.nr_open`) before any child is spawned, so every server it starts inherits them.
//! - The server's caps: `AGENTSKILLS_MAX_CONNECTIONS`, `AGENTSKILLS_MAX_CONNECTIONS_PER_IP` and
//!   `AGENTSKILLS_MCP_MAX_SESSIONS_PER_TOKEN` above N.
//! - The listen backlog: read with `ss` (a listening socket's Send-Q); at most that many
//!   connections between `connect` and the server's first answer on them (which shows it has
//!   accepted them), so the queue never overflows, while 256 streams are being opened at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::sync::Semaphore;

use crate::client::{Conn, Events};
use crate::support::{self, rss_kib};
use crate::{
    Report, Target, addr_of, admitted, as_refs, corpus, cpu_ticks, first_call, initialize,
    initialized, mcp_headers, open_legacy,
};

/// Streams being opened at once.
const IN_FLIGHT: usize = 256;

/// How long opening one stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// One transport's idle streams.
pub(crate) struct IdleRun {
    /// `http` or `sse`.
    pub(crate) transport: &'static str,
    /// Streams asked for (`LOAD_IDLE_SESSIONS`).
    pub(crate) wanted: usize,
    /// Streams tried: fewer than asked when the limit of open files allows no more.
    pub(crate) tried: usize,
    pub(crate) held: usize,
    /// Streams opened per second, over the whole opening.
    pub(crate) per_second: f64,
    /// Server RSS per stream held, in bytes.
    pub(crate) bytes_per_stream: f64,
}

/// Raises this process's limit of open files (soft and hard) to what `streams` idle streams
/// need on each side, or 400,000, within `fs.nr_open`; the servers and the ceiling it starts
/// inherit it. Never lowers a limit. Raising the hard limit takes `CAP_SYS_RESOURCE`; without it
/// the soft limit is raised to the hard one. Returns what it did, for the report.
pub(crate) fn raise_open_files(streams: usize) -> String {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1_048_576);
    // One socket per stream, a second one for a while per legacy stream, and room for the rest.
    let want = (streams as u64 * 2 + 50_000).max(400_000).min(nr_open);
    let before = getrlimit(Resource::Nofile);
    let show = |l: &Rlimit| {
        let v = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
        format!("soft {}, hard {}", v(l.current), v(l.maximum))
    };
    let raised = Rlimit {
        current: before.current.map(|c| c.max(want)),
        maximum: before.maximum.map(|m| m.max(want)),
    };
    let outcome = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => "raised".to_owned(),
        Err(e) => {
            let soft = Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            };
            let _ = setrlimit(Resource::Nofile, soft);
            format!(
                "the hard limit stays: {e}{}",
                if has_sys_resource() {
                    ""
                } else {
                    ", this process lacks CAP_SYS_RESOURCE"
                }
            )
        }
    };
    format!(
        "open files limit: {} → {} ({outcome}; the servers started inherit it; fs.nr_open {nr_open})",
        show(&before),
        show(&getrlimit(Resource::Nofile))
    )
}

/// Whether this process has `CAP_SYS_RESOURCE` (bit 24 of `CapEff`), which raising a hard limit
/// takes.
fn has_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Descriptors kept apart from the streams', in the server and in the harness: the streams
/// being opened (a legacy one has a second connection meanwhile), the database, logs, listeners.
const RESERVED_FILES: u64 = IN_FLIGHT as u64 + 1_000;

/// How many idle streams the limit of open files allows (each takes a descriptor in the server,
/// which inherits the limit, and one in the harness); `None` when it allows any number.
fn streams_allowed() -> Option<(usize, u64)> {
    let limit = getrlimit(Resource::Nofile).current?;
    let allowed = usize::try_from(limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    Some((allowed, limit))
}

/// Idle streams on a fresh server for each transport.
pub(crate) async fn idle(report: &mut Report, client: &reqwest::Client, wanted: usize) {
    let n = match streams_allowed() {
        Some((allowed, limit)) if allowed < wanted => {
            report.notes.push(format!(
                "idle: {wanted} streams asked, {allowed} tried: the limit of open files is {limit} (each stream takes a descriptor in the server and one in the harness, {RESERVED_FILES} are kept for the rest)"
            ));
            allowed
        }
        _ => wanted,
    };
    for (transport, label) in [("http", "Streamable HTTP"), ("sse", "legacy SSE")] {
        let (_dir, data) = support::data_dir();
        let cap = (n + 10_000).to_string();
        let env = [
            ("AGENTSKILLS_MAX_CONNECTIONS", cap.as_str()),
            ("AGENTSKILLS_MAX_CONNECTIONS_PER_IP", cap.as_str()),
            ("AGENTSKILLS_MCP_MAX_SESSIONS_PER_TOKEN", cap.as_str()),
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
        let backlog = listen_backlog(addr);
        let connecting = backlog.map_or(64, |b| b.clamp(1, IN_FLIGHT));
        let pid = server.pid();
        let before = rss_kib(pid);
        let harness_before = rss_kib(std::process::id());
        let queue_before = listen_queue_drops();
        let cpu_before = cpu_ticks(pid);
        let harness_cpu_before = cpu_ticks(std::process::id());
        let opening = hold(addr, &user.api_token, n, transport == "sse", connecting).await;
        let cpu = cpu_ticks(pid).saturating_sub(cpu_before);
        let harness_cpu = cpu_ticks(std::process::id()).saturating_sub(harness_cpu_before);
        let queue_after = listen_queue_drops();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(pid);
        let harness_after = rss_kib(std::process::id());
        let counted = server_counts(client, &server.base).await;
        let held = opening.held.len();
        let open_secs = opening.took.as_secs_f64();
        let per_second = held as f64 / open_secs.max(1e-9);
        let per = (after.saturating_sub(before) * 1024) as f64 / held.max(1) as f64;
        let harness_per =
            (harness_after.saturating_sub(harness_before) * 1024) as f64 / held.max(1) as f64;
        report.notes.push(format!(
            "idle {label} streams: {held} of {n} tried held{counted}, opened in {open_secs:.1} s: {per_second:.0}/s{tenths}; server RSS {before} → {after} KiB: {:.1} KB per stream; server CPU {:.0} µs per stream opened",
            per / 1000.0,
            cpu as f64 * 10_000.0 / held.max(1) as f64,
            counted = counted.map_or(String::new(), |(streams, sessions)| format!(
                " (the server counts {streams} streams, {sessions} sessions)"
            )),
            tenths = opening.tenths(),
        ));
        report.notes.push(format!(
            "idle {label} streams: harness RSS {harness_before} → {harness_after} KiB ({:.1} KB per stream), harness CPU {:.0} µs per stream opened; listen backlog {}, at most {connecting} connections unanswered at once, {IN_FLIGHT} streams opening at once; listen queue overflows {}",
            harness_per / 1000.0,
            harness_cpu as f64 * 10_000.0 / held.max(1) as f64,
            backlog.map_or("unknown (no ss)".to_owned(), |b| b.to_string()),
            match (queue_before, queue_after) {
                (Some(b), Some(a)) => format!(
                    "{}, drops {} (this network namespace, anything else running included)",
                    a.0.saturating_sub(b.0),
                    a.1.saturating_sub(b.1)
                ),
                _ => "unknown (no /proc/net/netstat)".to_owned(),
            }
        ));
        if !opening.failures.is_empty() {
            report.notes.push(format!(
                "idle {label} streams not held, by what went wrong: {:?}",
                opening.failures
            ));
        }
        report.idle.push(IdleRun {
            transport,
            wanted,
            tried: n,
            held,
            per_second,
            bytes_per_stream: per,
        });
        drop(opening);
        server.stop();
    }
}

/// What keeps one idle stream open: its body and the connection carrying it. (An idle legacy
/// client keeps no second connection for posting: it is closed once the handshake is done.)
struct Held {
    _events: Events,
    _conn: Conn,
}

/// Streams opened, what went wrong with the others, and when each tenth was reached.
struct Opening {
    held: Vec<Held>,
    failures: BTreeMap<String, u64>,
    took: Duration,
    tenths: Vec<Duration>,
}

impl Opening {
    /// The open rate in the first and the last tenth, which shows whether opening slows down as
    /// streams pile up.
    fn tenths(&self) -> String {
        let (Some(first), [.., before_last, last]) = (self.tenths.first(), self.tenths.as_slice())
        else {
            return String::new();
        };
        let tenth = self.held.len() as f64 / 10.0;
        let rate = |d: Duration| tenth / d.as_secs_f64().max(1e-9);
        format!(
            " (first tenth {:.0}/s, last tenth {:.0}/s)",
            rate(*first),
            rate(last.saturating_sub(*before_last))
        )
    }
}

/// Opens `n` streams, `IN_FLIGHT` at a time, at most `connecting` of them between connecting and
/// the server's first answer.
async fn hold(addr: SocketAddr, token: &str, n: usize, legacy: bool, connecting: usize) -> Opening {
    let gate = Arc::new(Semaphore::new(connecting));
    let mut opening = Opening {
        held: Vec::with_capacity(n),
        failures: BTreeMap::new(),
        took: Duration::ZERO,
        tenths: Vec::new(),
    };
    let tenth = (n / 10).max(1);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        while set.len() < IN_FLIGHT && next < n {
            next += 1;
            let token = token.to_owned();
            let gate = Arc::clone(&gate);
            set.spawn(async move {
                let open = async {
                    if legacy {
                        open_legacy(addr, &token, Some(&*gate)).await.map(|l| Held {
                            _events: l.events,
                            _conn: l.stream_conn,
                        })
                    } else {
                        open_stream(addr, &token, &gate).await
                    }
                };
                // A connection the server never accepts (out of descriptors, say) would wait
                // for ever, and keep its permit.
                tokio::time::timeout(OPEN_TIMEOUT, open)
                    .await
                    .unwrap_or_else(|_| Err(format!("no stream in {} s", OPEN_TIMEOUT.as_secs())))
            });
        }
        match set.join_next().await {
            Some(Ok(Ok(held))) => {
                opening.held.push(held);
                if opening.held.len().is_multiple_of(tenth) {
                    opening.tenths.push(started.elapsed());
                }
            }
            Some(Ok(Err(reason))) => *opening.failures.entry(reason).or_default() += 1,
            Some(Err(e)) => *opening.failures.entry(format!("task: {e}")).or_default() += 1,
            None => break,
        }
    }
    opening.took = started.elapsed();
    opening
}

/// A Streamable HTTP session and its event stream (`GET /mcp`), on one connection.
async fn open_stream(addr: SocketAddr, token: &str, gate: &Semaphore) -> Result<Held, String> {
    let permit = admitted(Some(gate)).await;
    let mut conn = Conn::open_idle(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let session = initialize(&mut conn, token).await?;
    drop(permit);
    initialized(&mut conn, token, &session).await?;
    let headers = mcp_headers(token, Some(&session));
    let mut headers = as_refs(&headers);
    headers.retain(|(name, _)| *name != "content-type" && *name != "accept");
    headers.push(("accept", "text/event-stream"));
    let res = conn
        .send(Method::GET, "/mcp", &headers, Bytes::new())
        .await
        .map_err(|e| format!("GET /mcp: {e}"))?;
    if res.status() != StatusCode::OK {
        return Err(format!("GET /mcp: {}", res.status()));
    }
    Ok(Held {
        _events: Events::new(res.into_body()),
        _conn: conn,
    })
}

/// The backlog of the socket listening on `addr`, as `ss` shows it (a listening socket's Send-Q).
fn listen_backlog(addr: SocketAddr) -> Option<usize> {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, _, send_q, local, ..] if *local == addr.to_string() => send_q.parse().ok(),
            _ => None,
        }
    })
}

/// `ListenOverflows` and `ListenDrops` of this network namespace (`/proc/net/netstat`).
fn listen_queue_drops() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let pairs: BTreeMap<&str, u64> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter_map(|(name, value)| Some((name, value.parse().ok()?)))
            .collect();
        return Some((*pairs.get("ListenOverflows")?, *pairs.get("ListenDrops")?));
    }
    None
}

/// The event streams and sessions the server counts (`/metrics`).
async fn server_counts(client: &reqwest::Client, base: &str) -> Option<(u64, u64)> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let gauge = |name: &str| {
        text.lines().find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse::<f64>().ok())?
        })
    };
    Some((
        gauge("agentskills_mcp_streams")? as u64,
        gauge("agentskills_mcp_sessions")? as u64,
    ))
}
