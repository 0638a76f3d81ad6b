//! `replicas`: three replicas of the release binary on one PostgreSQL database behind HAProxy
//! (`deploy/haproxy.cfg`), beside one replica reached directly, on the same database and corpus.
//!
//! The replicas share the signing secret, the database and one blob folder (`storage.path`: the
//! local back end on one host stands in for the bucket, which the hot path never reads). Each
//! figure's CPU is the replicas' own (all three, or the one), not HAProxy's nor the generator's.
//! The database's transactions during each window (`pg_stat_database`, read two seconds after it
//! so the counters have caught up) are reported per request: the hot path makes none; what is
//! counted is the replicas' periodic work (token and skill checks, session use written in
//! batches) and each session's first request on a replica that did not open it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use crate::{Figure, Report, Tally, Target, Tool, corpus, cpu_ticks, figure, http_worker, support};

/// The figures' names, which the targets look up.
pub(crate) const THROUGH_HAPROXY: &str = "load_skill, 3 replicas behind HAProxy (their CPU)";
pub(crate) const DIRECT: &str = "load_skill, 1 replica direct (same database)";

const SECRET: &str = "bench-replicas-secret-0123456789abcdef0123456789abcdef";

pub(crate) async fn replicas(report: &mut Report, client: &reqwest::Client, window: Duration) {
    let which_haproxy = Command::new("haproxy").arg("-v").output();
    if !which_haproxy.is_ok_and(|o| o.status.success()) {
        report.notes.push(
            "replicas: haproxy is not installed (apt-get install haproxy); not measured".into(),
        );
        return;
    }
    let Some((admin_client, name, url)) =
        crate::fresh_database(report, "agentskills_replicas").await
    else {
        return;
    };
    let shared = tempfile::tempdir().expect("a temp dir");
    let blobs = shared.path().join("blobs");
    let blobs = blobs.to_string_lossy().into_owned();
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for replica in ["r1", "r2", "r3"] {
        let (dir, data) = support::data_dir();
        let env = [
            ("DATABASE_URL", url.as_str()),
            ("SECRET_KEY", SECRET),
            ("AGENTSKILLS_REPLICA_ID", replica),
            ("AGENTSKILLS_STORAGE_PATH", blobs.as_str()),
            ("AGENTSKILLS_TRUSTED_PROXIES", "127.0.0.1"),
            // The bench's requests and corpus come from one address.
            ("AGENTSKILLS_MAX_CONNECTIONS_PER_IP", "100000"),
        ];
        let (server, _) = support::start_on(client, &data, &env).await;
        servers.push(server);
        dirs.push(dir);
    }
    let user = corpus::user(client, &servers[0].base, "bench", 5).await;
    let addrs: Vec<SocketAddr> = servers.iter().map(crate::addr_of).collect();
    let pids: Vec<u32> = servers.iter().map(support::Server::pid).collect();
    let Some(mut proxy) = start_haproxy(&addrs).await else {
        report
            .notes
            .push("replicas: HAProxy did not start with deploy/haproxy.cfg; not measured".into());
        return;
    };
    let through = Target::Service {
        addr: proxy.addr,
        token: user.api_token.clone(),
    };
    let direct = Target::Service {
        addr: addrs[0],
        token: user.api_token.clone(),
    };
    // In turns, three times each, so that the machine's drift falls on both alike.
    for _ in 0..3 {
        let transactions = Transactions::read(&admin_client, &name).await;
        let f = measure_pids(THROUGH_HAPROXY, &pids, 64, window, &through).await;
        note_transactions(report, &f, window, transactions, &admin_client, &name).await;
        report.push(f);
        let transactions = Transactions::read(&admin_client, &name).await;
        let f = measure_pids(DIRECT, &pids[..1], 64, window, &direct).await;
        note_transactions(report, &f, window, transactions, &admin_client, &name).await;
        report.push(f);
    }
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    for server in servers {
        server.stop();
    }
    let _ = admin_client
        .batch_execute(&format!("drop database if exists {name} with (force)"))
        .await;
}

/// `load_skill` by 64 Streamable HTTP workers on `target`, with the CPU of every process in
/// `pids`.
async fn measure_pids(
    name: &str,
    pids: &[u32],
    concurrency: usize,
    window: Duration,
    target: &Target,
) -> Figure {
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let mut set = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        set.spawn(http_worker(
            target.clone(),
            Tool::LoadSkill,
            w,
            Arc::clone(&barrier),
            window,
        ));
    }
    barrier.wait().await;
    let ticks = || pids.iter().map(|pid| cpu_ticks(*pid)).sum::<u64>();
    let before = ticks();
    tokio::time::sleep(window).await;
    let cpu = ticks().saturating_sub(before);
    let tallies: Vec<Tally> = set.join_all().await;
    figure(name, concurrency, window, tallies, cpu)
}

/// Transactions committed and rolled back in the database so far.
struct Transactions(i64);

impl Transactions {
    async fn read(client: &tokio_postgres::Client, database: &str) -> Option<Transactions> {
        // The counters are flushed by each backend at most every second or so.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let row = client
            .query_one(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
                &[&database],
            )
            .await
            .ok()?;
        Some(Transactions(row.get(0)))
    }
}

async fn note_transactions(
    report: &mut Report,
    f: &Figure,
    window: Duration,
    before: Option<Transactions>,
    client: &tokio_postgres::Client,
    database: &str,
) {
    let after = Transactions::read(client, database).await;
    if let (Some(before), Some(after)) = (before, after) {
        let requests = f.per_second * window.as_secs_f64();
        let made = after.0 - before.0;
        report.notes.push(format!(
            "{}: {made} database transactions in the window (and the 4 s around it) for {requests:.0} requests: {:.5} per request",
            f.name,
            made as f64 / requests.max(1.0)
        ));
    }
}

struct Proxy {
    child: Child,
    addr: SocketAddr,
}

/// HAProxy with `deploy/haproxy.cfg` in front of `replicas`, once it counts all three up.
async fn start_haproxy(replicas: &[SocketAddr]) -> Option<Proxy> {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()
    };
    let (bind, stats) = (free()?, free()?);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg");
    let child = Command::new("haproxy")
        .args(["-db", "-f", config])
        .env("AGENTSKILLS_R1", replicas[0].to_string())
        .env("AGENTSKILLS_R2", replicas[1].to_string())
        .env("AGENTSKILLS_R3", replicas[2].to_string())
        .env("HAPROXY_BIND", bind.to_string())
        .env("HAPROXY_STATS_BIND", stats.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut proxy = Proxy { child, addr: bind };
    let client = reqwest::Client::builder().no_proxy().build().ok()?;
    // Up when every replica has answered through it (round robin: a few requests in a row).
    for _ in 0..200 {
        let mut answered = 0;
        for _ in 0..6 {
            if let Ok(res) = client
                .get(format!("http://{bind}/health/ready"))
                .send()
                .await
                && res.status() == 200
            {
                answered += 1;
            }
        }
        if answered == 6 {
            // And the health checks have marked every replica up (2 passes, 1 s apart).
            tokio::time::sleep(Duration::from_secs(3)).await;
            return Some(proxy);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    None
}
