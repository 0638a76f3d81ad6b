//! `GET /health`: is the process up, can it reach its database, and what can its sandbox do?

use std::time::Duration;

use http::{Response, StatusCode};
use serde::Serialize;

use crate::app::AppState;
use crate::error::AppError;
use crate::http::Body;
use crate::http::response::json;

/// A database that does not answer `SELECT 1` within this time counts as down.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    database: DatabaseHealth,
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

/// `GET /health/live`: the process answers (nothing else is checked).
pub(crate) fn live(state: &AppState) -> Response<Body> {
    json(
        StatusCode::OK,
        &serde_json::json!({"status": "ok", "uptime_secs": state.started.elapsed().as_secs()}),
    )
}

/// `GET /health`: 200 when the database answers, 503 (with the same body) when it does not.
/// `GET /health/ready` (`ready`): also 503 while the sandbox cannot run commands, so a load
/// balancer sends traffic only to servers that can serve every tool.
pub(crate) async fn health(state: &AppState, ready: bool) -> Result<Response<Body>, AppError> {
    let database = match tokio::time::timeout(DB_CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(latency)) => DatabaseHealth {
            backend: state.store.backend().as_str(),
            status: "ok",
            // Microsecond precision is all a health check needs.
            latency_ms: Some((latency.as_secs_f64() * 1_000_000.0).round() / 1000.0),
            error: None,
        },
        Ok(Err(e)) => DatabaseHealth {
            backend: state.store.backend().as_str(),
            status: "unavailable",
            latency_ms: None,
            error: Some(e.to_string()),
        },
        Err(_) => DatabaseHealth {
            backend: state.store.backend().as_str(),
            status: "unavailable",
            latency_ms: None,
            error: Some("no answer within 2 s".to_owned()),
        },
    };
    let sandbox = state.sandbox.status();
    let ok = database.status == "ok" && (!ready || sandbox.ready);
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        database,
        sandbox,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json(status, &body))
}

/// `GET /metrics`: the Prometheus (OpenMetrics) text exposition.
pub(crate) fn metrics(state: &AppState) -> Response<Body> {
    let sandbox = state.sandbox.status();
    let (open, in_use, max) = state.store.pool_use();
    let snapshot = crate::metrics::Snapshot {
        mcp_sessions: state.sessions.len(),
        mcp_streams: state.sessions.streams(),
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
