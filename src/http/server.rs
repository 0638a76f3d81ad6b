//! The accept loop.
//!
//! One task per connection, served by hyper-util's auto builder (HTTP/1.1, or HTTP/2 with prior
//! knowledge). Each connection has its own timer (`activity`): a request head must arrive within
//! `server.header_read_timeout_secs`, and a connection with nothing in flight is closed after
//! `server.keep_alive_idle_secs`. On shutdown the listener closes at once and open connections
//! get `server.shutdown_grace_secs` to finish their requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slow heads and idle connections are timed by `activity`; hyper's own timer (which counts
        // the idle wait too) is only a backstop behind both.
        .header_read_timeout(header_read + keep_alive_idle)
        .max_headers(100)
        // Request line and headers together: more is 431.
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024);
    let grace = Duration::from_secs(limits.shutdown_grace_secs);

    let graceful = GracefulShutdown::new();
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
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
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
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
        let requests = Arc::clone(&activity);
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let state = Arc::clone(&state);
            let in_flight = requests.begin(req.version() == http::Version::HTTP_2);
            async move {
                let response = router::handle(&state, peer, req).await;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
            }
        });
        let conn = builder.serve_connection_with_upgrades(io, service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            tokio::select! {
                ended = conn => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                }
                // Nothing is in flight, so closing loses nothing.
                why = activity.expired(header_read, keep_alive_idle) => {
                    tracing::debug!(peer = %peer, reason = ?why, "connection closed by its timer");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    // Long-lived event streams would hold their connections open for the whole grace period:
    // ending every session ends them, and clients reconnect to whichever server comes next.
    let ended = state.sessions.close_where(|_| true);
    // Commands still running in the sandbox are killed; their calls answer at once.
    state.sandbox.shutdown();
    if ended > 0 {
        tracing::info!(sessions = ended, "ended MCP sessions for shutdown");
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
