//! The accept loop.
//!
//! One task per connection, served by hyper's HTTP/1.1 or HTTP/2 connection (HTTP/2 with prior
//! knowledge, told apart by a peek at the first bytes). Each connection has its own timer
//! (`activity`): a request head must arrive within `server.header_read_timeout_secs`, and a
//! connection with nothing in flight is closed after `server.keep_alive_idle_secs`. On shutdown
//! the listener closes at once and open connections get `server.shutdown_grace_secs` to finish
//! their requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use super::activity::{Activity, Tracked, Watched};
use super::router;
use crate::app::AppState;

/// Serves `listener` until `shutdown` completes, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = &state.settings.server;
    let header_read = Duration::from_secs(limits.header_read_timeout_secs);
    let keep_alive_idle = Duration::from_secs(limits.keep_alive_idle_secs);
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // Slow heads and idle connections are timed by `activity`; hyper's own timer (which counts
        // the idle wait too) is only a backstop behind both.
        .header_read_timeout(header_read + keep_alive_idle)
        .max_headers(100)
        // Request line and headers together: more is 431. (The buffer's own limit is checked
        // only while a head is incomplete, so a head read in one go could pass it.)
        .max_header_size(64 * 1024)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        // Each request in progress may hold an answer as large as `mcp.max_answer_bytes`; the
        // streams of one connection are bounded like HTTP/1.1's one request per connection is
        // (hyper's default allows hundreds).
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(64 * 1024);
    let builders = Arc::new((http1, http2));
    let grace = Duration::from_secs(limits.shutdown_grace_secs);

    let graceful = GracefulShutdown::new();
    // Set at shutdown: a connection with nothing in flight then closes at once. hyper's graceful
    // shutdown alone leaves a kept-alive connection that has started (or seems to have started)
    // its next request head to the header timeout, which held shutdown up for seconds.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let connections = Arc::new(Connections::new(
        limits.max_connections,
        limits.max_connections_per_ip,
        state
            .settings
            .rate_limits
            .trusted_proxies
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
    ));
    let mut shutdown = std::pin::pin!(shutdown);
    // The end of the drain that shutdown begins with (`server.shutdown_drain_secs`): never
    // before shutdown.
    let drain = Duration::from_secs(limits.shutdown_drain_secs);
    let mut drained: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
        Box::pin(std::future::pending());
    let mut draining = false;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut drained => break,
            () = &mut shutdown, if !draining => {
                if drain.is_zero() {
                    break;
                }
                tracing::info!(drain_secs = drain.as_secs(), "shutting down: draining (not ready, connections closed after each response)");
                state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                draining = true;
                drained = Box::pin(tokio::time::sleep(drain));
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over a cap: closed at once, before any byte is read.
        let Some(slot) = connections.admit(peer.ip()) else {
            tracing::debug!(peer = %peer, "connection refused: too many open");
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let state = Arc::clone(&state);
        let activity = Activity::new();
        let requests = Arc::clone(&activity);
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let state = Arc::clone(&state);
            let in_flight = requests.begin(req.version() == http::Version::HTTP_2);
            // Boxed: hyper keeps an allocation the size of the service's future for as long as
            // the connection is open (idle event streams included), so it is a pointer, and each
            // request's future is allocated while it runs.
            Box::pin(async move {
                let response = router::handle(&state, peer, req).await;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
            })
        });
        let builders = Arc::clone(&builders);
        let watcher = graceful.watcher();
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let serve = async {
                let protocol = sniff(&stream).await;
                let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
                match protocol {
                    Protocol::Http1 => {
                        watcher
                            .watch(builders.0.serve_connection(io, service))
                            .await
                    }
                    // Boxed: HTTP/2's connection state is kilobytes larger than HTTP/1's, and every
                    // connection's task would otherwise carry it.
                    Protocol::Http2 => {
                        Box::pin(watcher.watch(builders.1.serve_connection(io, service))).await
                    }
                }
            };
            tokio::select! {
                ended = serve => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                }
                // Nothing is in flight, so closing loses nothing.
                why = activity.expired(header_read, keep_alive_idle) => {
                    tracing::debug!(peer = %peer, reason = ?why, "connection closed by its timer");
                }
                () = async {
                    // An error means the server is gone: close as at shutdown.
                    let _ = closed.wait_for(|closing| *closing).await;
                    activity.until_idle().await;
                } => {
                    tracing::debug!(peer = %peer, "connection closed at shutdown: nothing in flight");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    // Long-lived event streams would hold their connections open for the whole grace period:
    // ending every session ends them, and clients reconnect to whichever server comes next.
    let ended = state.sessions.close_where(|_| true);
    closing.send_replace(true);
    // Listen streams end with their request's result, which tells their clients the end is meant.
    let listening = state.listen.close_where(|_, _| true);
    // Commands still running in the sandbox are killed; their calls answer at once.
    state.sandbox.shutdown();
    if ended > 0 || listening > 0 {
        tracing::info!(
            sessions = ended,
            listen_streams = listening,
            "ended MCP sessions and listen streams for shutdown"
        );
    }
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining connections"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period; closing them"
        );
    }
}

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge: the connection opens with the client preface.
    Http2,
}

/// What every HTTP/2 connection opens with (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells HTTP/2 from HTTP/1 by peeking at the first bytes, which stay in the socket for hyper to
/// read. (hyper-util's auto builder reads them instead and hands them back through a buffer,
/// which made hyper's first read 24 bytes long and doubled its read buffer to 16 KiB on every
/// connection.) A client that stops inside the preface is polled with a growing pause; the
/// connection's header timer ends the wait.
async fn sniff(stream: &TcpStream) -> Protocol {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(n) => n,
            // hyper meets the same error at its first read and ends the connection.
            Err(_) => return Protocol::Http1,
        };
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Protocol::Http1;
        }
        if n == H2_PREFACE.len() {
            return Protocol::Http2;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Open connections, in all and per address.
#[derive(Debug)]
struct Connections {
    max: usize,
    max_per_ip: usize,
    exempt: Vec<std::net::IpAddr>,
    open: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    connections: Arc<Connections>,
    ip: std::net::IpAddr,
}

impl Connections {
    fn new(max: usize, max_per_ip: usize, exempt: Vec<std::net::IpAddr>) -> Connections {
        Connections {
            max,
            max_per_ip,
            exempt,
            open: std::sync::Mutex::new((0, std::collections::HashMap::new())),
        }
    }

    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Slot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (total, per_ip) = &mut *open;
        if *total >= self.max {
            return None;
        }
        let mine = per_ip.entry(ip).or_insert(0);
        if *mine >= self.max_per_ip && !self.exempt.contains(&ip) {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Slot {
            connections: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_ip.get_mut(&self.ip) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}
