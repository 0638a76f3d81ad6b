//! The second generator: nghttp2's `h2load` (Debian's `nghttp2-client`), an independent program
//! in C, driving the same fixed request over HTTP/1.1 with keep-alive (`--h1`, one request in
//! flight per connection: `-m 1`), one thread (`-t 1`), for the window (`-D`) after a one-second
//! warm-up. It checks statuses only (a non-2xx counts as failed), not bodies, so the harness
//! checks the request once with its own client before handing it over. The latencies come from
//! its `--log-file` (one line per request), the server's CPU from `/proc` over the window, as for
//! the harness's own generator. The harness installs nothing: without `h2load` on `PATH` it notes
//! so and goes on.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::{Figure, Generator, cpu_ticks, percentiles};

/// Measurement starts after this; the connections are made and warm by then.
const WARM_UP: Duration = Duration::from_secs(1);

/// Whether `h2load` can be run.
pub(crate) fn available() -> bool {
    std::process::Command::new("h2load")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One fixed request, sent again and again.
pub(crate) struct FixedRequest<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a [(&'static str, &'a str)],
    pub(crate) body: &'a [u8],
}

/// What h2load said about one run.
#[derive(Debug, Default)]
struct Counts {
    /// Requests done per second in the measured period (2xx or not), as h2load timed it.
    done_per_second: f64,
    done: u64,
    succeeded: u64,
    failed: u64,
    errored: u64,
    timeout: u64,
    /// 2xx, 3xx, 4xx, 5xx.
    statuses: [u64; 4],
}

/// `concurrency` h2load connections sending `request` for `window`, with the CPU of process
/// `pid` over the same window; the figure and a note of what h2load counted.
pub(crate) async fn measure(
    name: &str,
    pid: u32,
    concurrency: usize,
    window: Duration,
    request: &FixedRequest<'_>,
) -> Result<(Figure, String), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?;
    let body = dir.path().join("body.json");
    let log = dir.path().join("requests.log");
    std::fs::write(&body, request.body).map_err(|e| format!("the body file: {e}"))?;
    let mut command = tokio::process::Command::new("h2load");
    command
        .arg("--h1")
        .args(["-t", "1", "-m", "1"])
        .arg(format!("-c{concurrency}"))
        .arg(format!("-D{}", window.as_secs()))
        .arg(format!("--warm-up-time={}", WARM_UP.as_secs()))
        .arg("-d")
        .arg(&body)
        .arg("--log-file")
        .arg(&log);
    for (name, value) in request.headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    command
        .arg(format!("http://{}{}", request.addr, request.path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| format!("h2load: {e}"))?;
    // The window h2load measures starts after its warm-up (and a few milliseconds of starting
    // and connecting, which the server's CPU window does not leave out: well under 1 % of it).
    tokio::time::sleep(WARM_UP).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    let cpu = cpu_ticks(pid).saturating_sub(before);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("h2load: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "h2load failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let counts =
        parse(&stdout).ok_or_else(|| format!("h2load's output not understood: {stdout}"))?;
    let (mut latencies, logged) = read_log(&log);
    let [p50, p90, p99, max] = percentiles(&mut latencies);
    let ok = counts.statuses[0];
    let errors = counts.done.saturating_sub(ok) + counts.errored + counts.timeout;
    // The measured period's length, from what h2load counted in it and its rate.
    let measured = if counts.done_per_second > 0.0 {
        counts.done as f64 / counts.done_per_second
    } else {
        window.as_secs_f64()
    };
    let figure = Figure {
        name: name.to_owned(),
        generator: Generator::H2load,
        concurrency,
        per_second: ok as f64 / measured.max(1e-9),
        errors,
        p50,
        p90,
        p99,
        max,
        cpu_us_per_request: cpu as f64 * 10_000.0 / ok.max(1) as f64,
    };
    let mut note = format!(
        "{name} c={concurrency}: {} requests in {:.2} s, {} succeeded, {} failed, {} errored, {} timeout; status codes 2xx {}, 3xx {}, 4xx {}, 5xx {}",
        counts.done,
        measured,
        counts.succeeded,
        counts.failed,
        counts.errored,
        counts.timeout,
        counts.statuses[0],
        counts.statuses[1],
        counts.statuses[2],
        counts.statuses[3],
    );
    if logged.0 != counts.done {
        let _ = write!(
            note,
            "; its log holds {} requests ({} 2xx), the latencies are theirs",
            logged.0, logged.1
        );
    }
    Ok((figure, note))
}

/// The counts of h2load's summary:
///
/// ```text
/// finished in 6.01s, 77000.00 req/s, 80.00MB/s
/// requests: 385000 total, 385000 started, 385000 done, 385000 succeeded, 0 failed, 0 errored, 0 timeout
/// status codes: 385000 2xx, 0 3xx, 0 4xx, 0 5xx
/// ```
fn parse(stdout: &str) -> Option<Counts> {
    let mut counts = Counts::default();
    let mut seen = 0;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in" counts the warm-up too; the rate is of the measured period alone.
            let rate = rest.split(',').nth(1)?.trim().strip_suffix(" req/s")?;
            counts.done_per_second = rate.parse().ok()?;
            seen += 1;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(',') {
                let (n, what) = part.trim().split_once(' ')?;
                let n: u64 = n.parse().ok()?;
                match what {
                    "done" => counts.done = n,
                    "succeeded" => counts.succeeded = n,
                    "failed" => counts.failed = n,
                    "errored" => counts.errored = n,
                    "timeout" => counts.timeout = n,
                    _ => {}
                }
            }
            seen += 1;
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            for part in rest.split(',') {
                let (n, class) = part.trim().split_once(' ')?;
                let i = match class {
                    "2xx" => 0,
                    "3xx" => 1,
                    "4xx" => 2,
                    "5xx" => 3,
                    _ => continue,
                };
                counts.statuses[i] = n.parse().ok()?;
            }
            seen += 1;
        }
    }
    (seen == 3).then_some(counts)
}

/// Every logged request's time to the end of its response, and how many were logged (all, 2xx).
/// A line: start time (µs since the epoch), status, µs until the end of the response.
fn read_log(path: &std::path::Path) -> (Vec<Duration>, (u64, u64)) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut latencies = Vec::new();
    let mut ok = 0;
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(_), Some(status), Some(took)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(took) = took.trim().parse::<u64>() else {
            continue;
        };
        if status.trim().starts_with('2') {
            ok += 1;
        }
        latencies.push(Duration::from_micros(took));
    }
    let all = latencies.len() as u64;
    (latencies, (all, ok))
}
