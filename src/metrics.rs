//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! Counted as they happen: requests by route and status, request latency by route, sandbox runs
//! by outcome, rate-limit refusals by limit. Read when scraped: open MCP sessions and event
//! streams, live workspace actors, sandbox commands running and waiting, database pool use.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// What is read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub mcp_sessions: usize,
    pub mcp_streams: usize,
    pub mcp_listen_streams: usize,
    pub workspace_actors: usize,
    pub sandbox_running: usize,
    pub sandbox_waiting: usize,
    pub db_connections_open: usize,
    pub db_connections_in_use: usize,
    pub db_connections_max: usize,
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Family<Route, Histogram, fn() -> Histogram>,
    sandbox_runs: Family<Outcome, Counter>,
    rate_limited: Family<LimitLabel, Counter>,
    gauges: [Gauge<i64, std::sync::atomic::AtomicI64>; 9],
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 13 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 18,
    ))
}

const GAUGES: [(&str, &str); 9] = [
    ("mcp_sessions", "Open MCP sessions"),
    (
        "mcp_streams",
        "Open MCP event streams (GET /mcp and legacy /sse)",
    ),
    (
        "mcp_listen_streams",
        "Open subscriptions/listen streams (protocol 2026-07-28)",
    ),
    (
        "workspace_actors",
        "Live workspace actors (one per active user)",
    ),
    ("sandbox_running", "Sandboxed commands running"),
    ("sandbox_waiting", "Sandboxed commands waiting for a slot"),
    ("db_connections_open", "Database pool connections open"),
    ("db_connections_in_use", "Database pool connections in use"),
    ("db_connections_max", "Database pool size limit"),
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::for_replica(None)
    }

    /// Metrics whose every sample carries `replica="<replica>"` when one is given
    /// (`server.replica_id`): each replica reports its own, told apart by that label.
    pub fn for_replica(replica: Option<&str>) -> Metrics {
        let mut registry = match replica {
            Some(replica) => Registry::with_prefix_and_labels(
                "agentskills",
                [(
                    std::borrow::Cow::Borrowed("replica"),
                    std::borrow::Cow::Owned(replica.to_owned()),
                )]
                .into_iter(),
            ),
            None => Registry::with_prefix("agentskills"),
        };
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let latency =
            Family::<Route, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer (the response's headers), by route",
            latency.clone(),
        );
        let sandbox_runs = Family::<Outcome, Counter>::default();
        registry.register(
            "sandbox_runs",
            "Sandboxed commands, by outcome",
            sandbox_runs.clone(),
        );
        let rate_limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by limit",
            rate_limited.clone(),
        );
        let gauges: [Gauge<i64, std::sync::atomic::AtomicI64>; 9] = Default::default();
        for ((name, help), gauge) in GAUGES.iter().zip(&gauges) {
            registry.register(*name, *help, gauge.clone());
        }
        Metrics {
            registry,
            requests,
            latency,
            sandbox_runs,
            rate_limited,
            gauges,
        }
    }

    pub fn request(&self, route: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
        self.latency
            .get_or_create(&Route { route })
            .observe(seconds);
    }

    /// `ok`, `failed` (non-zero exit), `timed_out`, `truncated`, `killed`, `refused`, `busy`.
    pub fn sandbox_run(&self, outcome: &'static str) {
        self.sandbox_runs.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// The text exposition, with the gauges read from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let values = [
            snapshot.mcp_sessions,
            snapshot.mcp_streams,
            snapshot.mcp_listen_streams,
            snapshot.workspace_actors,
            snapshot.sandbox_running,
            snapshot.sandbox_waiting,
            snapshot.db_connections_open,
            snapshot.db_connections_in_use,
            snapshot.db_connections_max,
        ];
        for (gauge, value) in self.gauges.iter().zip(values) {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render() {
        let metrics = Metrics::new();
        metrics.request("health", 200, 0.001);
        metrics.request("health", 200, 0.002);
        metrics.sandbox_run("ok");
        metrics.rate_limited("login_ip");
        let text = metrics.render(&Snapshot {
            mcp_sessions: 3,
            ..Snapshot::default()
        });
        assert!(
            text.contains("agentskills_http_requests_total{route=\"health\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("agentskills_http_request_duration_seconds_count{route=\"health\"} 2")
        );
        assert!(text.contains("agentskills_sandbox_runs_total{outcome=\"ok\"} 1"));
        assert!(text.contains("agentskills_rate_limited_total{limit=\"login_ip\"} 1"));
        assert!(text.contains("agentskills_mcp_sessions 3"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_replicas_samples_carry_its_name() {
        let metrics = Metrics::for_replica(Some("r2"));
        metrics.request("health", 200, 0.001);
        let text = metrics.render(&Snapshot {
            mcp_sessions: 3,
            ..Snapshot::default()
        });
        assert!(
            text.contains(
                "agentskills_http_requests_total{replica=\"r2\",route=\"health\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("agentskills_mcp_sessions{replica=\"r2\"} 3"),
            "{text}"
        );
    }
}
