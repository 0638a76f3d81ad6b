//! `GET /health`: is the process up, can it reach its database, can its sandbox run commands?
//!
//! Anyone may ask, so the answer says ready or not and why in words, and nothing about the
//! machine: no path, no user id, no database address, no library's error text. The details an
//! operator needs (the database's error and latency, the sandbox's layers and why one is
//! missing) are in the log, in `/metrics`, and in `GET /health?verbose`, which is answered only
//! to the server's own machine (a loopback client) and to its trusted proxies
//! (`server.trusted_proxies`; a client they forward for is not one of them).

use std::net::IpAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::app::AppState;
use crate::config::SandboxMode;
use crate::error::AppError;
use crate::http::Body;
use crate::http::response::json;
use crate::http::router::ClientIp;

/// A database that does not answer `SELECT 1` within this time counts as down.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What anyone is told.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    database: PublicDatabase,
    storage: PublicStorage,
    #[serde(skip_serializing_if = "Option::is_none")]
    listener: Option<PublicStorage>,
    sandbox: PublicSandbox,
}

#[derive(Serialize)]
struct PublicStorage {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Serialize)]
struct PublicDatabase {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Serialize)]
struct PublicSandbox {
    mode: SandboxMode,
    /// Whether `run_shell_command` runs commands.
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// What the server's own machine and its trusted proxies are told (`?verbose`).
#[derive(Serialize)]
struct VerboseHealth {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    database: DatabaseHealth,
    storage: StorageHealth,
    /// With PostgreSQL: the connection that hears other replicas' changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    listener: Option<ListenerHealth>,
    /// What `run_shell_command` runs in: the mode, whether it runs commands, why not, the layers
    /// found at start.
    sandbox: crate::sandbox::Status,
}

#[derive(Serialize)]
struct DatabaseHealth {
    backend: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct StorageHealth {
    backend: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct ListenerHealth {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
}

/// `GET /health/live`: the process answers (nothing else is checked).
pub(crate) fn live(state: &AppState) -> Response<Body> {
    json(
        StatusCode::OK,
        &serde_json::json!({"status": "ok", "uptime_secs": state.started.elapsed().as_secs()}),
    )
}

/// `GET /health`: 200 when the database and the blob store answer, 503 (with the same body) when
/// one does not.
/// `GET /health/ready` (`ready`): also 503 while the sandbox cannot run commands, so a load
/// balancer sends traffic only to servers that can serve every tool. `?verbose` adds the details,
/// for the server's own machine and its trusted proxies only (403 for anyone else).
pub(crate) async fn health(
    state: &AppState,
    req: Request<Incoming>,
    ready: bool,
) -> Result<Response<Body>, AppError> {
    let verbose = wants_verbose(req.uri().query());
    if verbose {
        let client = req.extensions().get::<ClientIp>().map(|c| c.0);
        if !client.is_some_and(|ip| may_see_details(state, ip)) {
            return Err(AppError::Forbidden {
                code: "health-details-forbidden",
                detail: "the detailed health is shown only to the server's own machine and its \
                         trusted proxies (server.trusted_proxies); GET /health says whether it is ready",
            });
        }
    }
    let database = database(state).await;
    if database.status != "ok" {
        tracing::warn!(
            error = database.error.as_deref().unwrap_or_default(),
            "health check: the database does not answer"
        );
    }
    let storage = storage(state).await;
    if storage.status != "ok" {
        tracing::warn!(
            error = storage.error.as_deref().unwrap_or_default(),
            "health check: the blob store does not answer"
        );
    }
    let sandbox = state.sandbox.status().await;
    // Without its listener a replica serves what other replicas changed only at the next
    // periodic check: one of several (`server.replica_id` set) is then not ready for traffic
    // until the listener has made its connection again, which it does by itself.
    let listener = state.listener.as_ref().map(|l| {
        if l.is_connected() {
            "ok"
        } else {
            "unavailable"
        }
    });
    let hears_others =
        state.settings.server.replica_id.is_none() || listener != Some("unavailable");
    let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
    let ok = database.status == "ok"
        && storage.status == "ok"
        && (!ready || (sandbox.ready && hears_others && !draining));
    let status = if ok { "ok" } else { "degraded" };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if verbose {
        let body = VerboseHealth {
            status,
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: state.started.elapsed().as_secs(),
            database,
            storage,
            listener: listener.map(|status| ListenerHealth {
                status,
                replica: state.settings.server.replica_id.clone(),
            }),
            sandbox,
        };
        return Ok(json(code, &body));
    }
    let body = Health {
        status,
        version: env!("CARGO_PKG_VERSION"),
        database: PublicDatabase {
            status: database.status,
            reason: (database.status != "ok").then_some("the database does not answer"),
        },
        storage: PublicStorage {
            status: storage.status,
            reason: (storage.status != "ok")
                .then_some("the blob store (storage.backend) does not answer"),
        },
        listener: listener.map(|status| PublicStorage {
            status,
            reason: (status != "ok")
                .then_some("the connection that hears other replicas' changes is being made again"),
        }),
        sandbox: PublicSandbox {
            mode: sandbox.mode,
            ready: sandbox.ready,
            reason: sandbox_reason(sandbox.mode, sandbox.ready),
        },
    };
    Ok(json(code, &body))
}

/// `?verbose`, `?verbose=1`, `?verbose=true` (any value but `0` and `false`).
fn wants_verbose(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(k, v)| k == "verbose" && v != "0" && v != "false")
}

/// The server's own machine, or one of its trusted proxies asking for itself.
fn may_see_details(state: &AppState, client: IpAddr) -> bool {
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    client.is_loopback() || state.rate_limits.is_trusted_proxy(client)
}

/// Why commands do not run, or run with less isolation, in words that name no path or id.
pub(crate) fn sandbox_reason(mode: SandboxMode, ready: bool) -> Option<&'static str> {
    match (mode, ready) {
        (SandboxMode::Strict, true) => None,
        (SandboxMode::Strict, false) => Some(
            "commands cannot run: this machine lacks the isolation that sandbox.mode = strict \
             requires; the server's log says what is missing",
        ),
        (SandboxMode::Degraded, _) => Some(
            "commands run with only the isolation this machine offers (sandbox.mode = degraded)",
        ),
        (SandboxMode::Off, _) => Some("commands run without a sandbox (sandbox.mode = off)"),
    }
}

async fn database(state: &AppState) -> DatabaseHealth {
    let backend = state.store.backend().as_str();
    match tokio::time::timeout(DB_CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(latency)) => DatabaseHealth {
            backend,
            status: "ok",
            // Microsecond precision is all a health check needs.
            latency_ms: Some((latency.as_secs_f64() * 1_000_000.0).round() / 1000.0),
            error: None,
        },
        Ok(Err(e)) => DatabaseHealth {
            backend,
            status: "unavailable",
            latency_ms: None,
            error: Some(e.to_string()),
        },
        Err(_) => DatabaseHealth {
            backend,
            status: "unavailable",
            latency_ms: None,
            error: Some("no answer within 2 s".to_owned()),
        },
    }
}

/// A listing of the blob store (the local folder, or the bucket), within the same 2 s.
async fn storage(state: &AppState) -> StorageHealth {
    let backend = match state.settings.storage.backend {
        crate::config::StorageBackend::Local => "local",
        crate::config::StorageBackend::S3 => "s3",
    };
    let started = std::time::Instant::now();
    let down = |error: String| StorageHealth {
        backend,
        status: "unavailable",
        latency_ms: None,
        error: Some(error),
    };
    match tokio::time::timeout(DB_CHECK_TIMEOUT, state.workspaces.blob_store().ping()).await {
        Ok(Ok(())) => StorageHealth {
            backend,
            status: "ok",
            latency_ms: Some((started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0),
            error: None,
        },
        Ok(Err(e)) => down(e.to_string()),
        Err(_) => down("no answer within 2 s".to_owned()),
    }
}

/// `GET /metrics`: the Prometheus (OpenMetrics) text exposition.
pub(crate) fn metrics(state: &AppState) -> Response<Body> {
    let sandbox = state.sandbox.status_now();
    let (open, in_use, max) = state.store.pool_use();
    let snapshot = crate::metrics::Snapshot {
        mcp_sessions: state.sessions.len(),
        mcp_streams: state.sessions.streams(),
        mcp_listen_streams: state.listen.len(),
        workspace_actors: state.workspaces.live_count(),
        sandbox_running: sandbox.running,
        sandbox_waiting: sandbox.waiting,
        db_connections_open: open,
        db_connections_in_use: in_use,
        db_connections_max: max,
    };
    let text = state.metrics.render(&snapshot);
    crate::http::response::with_body(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        crate::http::response::full(text.into_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_is_asked_for_by_its_name() {
        for yes in ["verbose", "verbose=1", "verbose=true", "a=b&verbose"] {
            assert!(wants_verbose(Some(yes)), "{yes}");
        }
        for no in ["", "verbose=0", "verbose=false", "verbosity=1"] {
            assert!(!wants_verbose(Some(no)), "{no}");
        }
        assert!(!wants_verbose(None));
    }

    #[test]
    fn public_reasons_name_no_path() {
        for mode in [SandboxMode::Strict, SandboxMode::Degraded, SandboxMode::Off] {
            for ready in [true, false] {
                if let Some(reason) = sandbox_reason(mode, ready) {
                    assert!(!reason.contains('/'), "{reason}");
                }
            }
        }
        assert_eq!(sandbox_reason(SandboxMode::Strict, true), None);
    }
}
