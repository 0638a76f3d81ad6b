//! `run_shell_command` in the sandbox: what a command can do (run its skill's scripts, write in a
//! scratch copy of its skill, use the system's tools) and what it cannot (change the stored skill,
//! reach other skills, the data folder, the server's processes and environment, the network; see
//! host paths; hold capabilities; outlive its timeout; exhaust memory, disk, inodes, processes or
//! output), the refusal in strict mode without isolation, and the queue.
//!
//! These need bubblewrap and user namespaces. Where the sandbox is unavailable they say so and
//! pass, unless `TEST_REQUIRE_SANDBOX` is set, as `.ci/run` sets it: CI always runs them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, spawn_app_with};

const SKILL_MD: &str = "---\nname: tools\ndescription: Scripts.\n---\n# Tools\n";
const HELLO_SH: &[u8] = b"echo \"hello from $(pwd)\"\necho oops >&2\nexit 3\n";

backend_tests!(
    writes_beyond_the_scratch_space_stop_at_enospc_and_change_nothing,
    files_beyond_the_inode_bound_stop_at_enospc,
    a_commands_writes_are_discarded,
    an_upload_during_a_command_is_neither_lost_nor_mixed,
    a_command_sees_no_host_path_and_holds_no_capability,
    scripts_keep_their_executable_bit_and_odd_names_survive,
    degraded_and_off_modes_run_in_a_host_copy,
);

/// A server with the sandbox (`tweak` on top of the defaults), Ann with the skill `tools`, her API
/// token; `None` when the sandbox is unavailable here and not required.
async fn sandboxed(
    tweak: impl FnOnce(&mut agentskills_mcp::config::Settings),
) -> Option<(TestApp, TestUser, String)> {
    sandboxed_on(Backend::Sqlite, tweak).await
}

/// [`sandboxed`] on `backend`.
async fn sandboxed_on(
    backend: Backend,
    tweak: impl FnOnce(&mut agentskills_mcp::config::Settings),
) -> Option<(TestApp, TestUser, String)> {
    let app = spawn_app_with(backend, tweak).await;
    let health = health_json(&app).await;
    if health["sandbox"]["ready"] != true {
        assert!(
            std::env::var_os("TEST_REQUIRE_SANDBOX").is_none(),
            "the sandbox is required (TEST_REQUIRE_SANDBOX) but unavailable: {}",
            health["sandbox"]
        );
        eprintln!(
            "sandbox unavailable here, test not run: {}",
            health["sandbox"]["reason"]
        );
        return None;
    }
    assert_eq!(health["sandbox"]["layers"]["rlimits"], true, "{health}");
    assert_eq!(health["sandbox"]["layers"]["scratch"], true, "{health}");
    let ready = app
        .request(Method::GET, "/health/ready")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "ready with the sandbox");
    if std::env::var_os("TEST_REQUIRE_SANDBOX").is_some() {
        // CI's kernel has Landlock: it must be in force there too.
        assert_eq!(health["sandbox"]["layers"]["landlock"], true, "{health}");
    }
    let ann = app.user("ann").await;
    app.upload_skill(
        &ann,
        &[
            ("SKILL.md", SKILL_MD.as_bytes()),
            ("scripts/hello.sh", HELLO_SH),
        ],
    )
    .await;
    let (_, token) = app.api_token(&ann, "agent").await;
    Some((app, ann, token))
}

/// What one `run_shell_command` call answered.
#[derive(Debug)]
struct Run {
    text: String,
    is_error: bool,
    stdout: String,
    stderr: String,
    exit_code: Value,
    timed_out: bool,
    truncated: bool,
    duration_ms: u64,
}

/// One stateless (2026-07-28) MCP request: its status and whole response. Takes the client and
/// base URL (not the app) so that spawned tasks can call it too.
async fn mcp_request(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    method: &str,
    mut params: Value,
) -> (StatusCode, Value) {
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}});
    let mut req = client
        .post(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        req = req.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let res = req.body(body.to_string()).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `run_shell_command` of `command` in the skill `tools`: the whole response.
async fn shell(client: &reqwest::Client, base: &str, token: &str, command: &str) -> Value {
    let params = json!({"name": "run_shell_command",
        "arguments": {"skill_name": "tools", "command": command}});
    let (status, body) = mcp_request(client, base, token, "tools/call", params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// One stateless MCP request that must answer 200: its whole response.
async fn run_raw(app: &TestApp, token: &str, method: &str, params: Value) -> Value {
    let (status, body) = mcp_request(&app.client, &app.base, token, method, params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn run(app: &TestApp, token: &str, skill: &str, command: &str) -> Run {
    let params = json!({"name": "run_shell_command",
        "arguments": {"skill_name": skill, "command": command}});
    let body = run_raw(app, token, "tools/call", params).await;
    let result = &body["result"];
    let structured = &result["structuredContent"];
    Run {
        text: result["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        is_error: result["isError"] == true,
        stdout: structured["stdout"].as_str().unwrap_or_default().to_owned(),
        stderr: structured["stderr"].as_str().unwrap_or_default().to_owned(),
        exit_code: structured["exit_code"].clone(),
        timed_out: structured["timed_out"] == true,
        truncated: structured["truncated"] == true,
        duration_ms: structured["duration_ms"].as_u64().unwrap_or(u64::MAX),
    }
}

/// The server's detailed `/health` document (this test's client is on the server's machine).
async fn health_json(app: &TestApp) -> Value {
    app.request(Method::GET, "/health?verbose")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The server's `/metrics` text.
async fn metrics_text(app: &TestApp) -> String {
    let res = app.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.unwrap()
}

/// The skill `tools` as the server keeps it: its id, its files as `GET /skills/{id}/files` lists
/// them, the account's usage as the quotas count it, and the bytes of every file under the data
/// folder's `skills`.
async fn stored(app: &TestApp, user: &TestUser) -> (String, Value, u64, u64) {
    let listed = app.get_json("/api/v1/skills", &user.access).await;
    let id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "tools")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let files = app
        .get_json(&format!("/api/v1/skills/{id}/files"), &user.access)
        .await;
    let usage = app
        .state
        .workspaces
        .index(user.id.parse().unwrap())
        .await
        .unwrap()
        .bytes();
    let mut on_disk = 0;
    let mut stack = vec![app.data_dir.join("skills")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                on_disk += meta.len();
            }
        }
    }
    (id, files, usage, on_disk)
}

/// Every file named `name` under `dir`.
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name() == name {
                found.push(path);
            }
        }
    }
    found
}

/// Whether every host process whose command line contains `needle` is gone within 3 s (a killed
/// sandbox takes a moment to be torn down).
async fn gone(needle: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if processes_with(needle).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Host processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[tokio::test]
async fn commands_run_in_their_skill_with_the_systems_tools() {
    let Some((app, _, token)) = sandboxed(|_| {}).await else {
        return;
    };
    let out = run(&app, &token, "tools", "sh scripts/hello.sh").await;
    assert_eq!(out.stdout, "hello from /skill\n", "{out:?}");
    assert_eq!(out.stderr, "oops\n");
    assert_eq!(out.exit_code, 3);
    assert!(!out.is_error && !out.timed_out && !out.truncated, "{out:?}");
    assert!(out.duration_ms < 30_000, "{out:?}");
    assert_eq!(out.text, "hello from /skill\n\noops\n[exit code: 3]");

    // It may write in its copy of the skill, and read it back; the copy is thrown away after it,
    // so the file is neither on the host nor in the skill (its resources).
    let out = run(
        &app,
        &token,
        "tools",
        "echo written > out.txt && cat out.txt",
    )
    .await;
    assert_eq!(out.stdout, "written\n", "{out:?}");
    assert!(find(&app.data_dir, "out.txt").is_empty());
    let listed = run_raw(&app, &token, "resources/list", json!({})).await;
    assert!(
        !listed["result"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["uri"] == "skill://tools/out.txt"),
        "{listed}"
    );

    let out = run(&app, &token, "tools", "python3 -c 'print(6 * 7)'").await;
    assert_eq!(out.stdout, "42\n", "{out:?}");

    // Only PATH, HOME and LANG come in (the shell adds PWD and the like itself).
    let out = run(&app, &token, "tools", "env").await;
    let names: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for name in &names {
        assert!(
            ["PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "OLDPWD"].contains(name),
            "the server's environment leaked: {name} in {names:?}"
        );
    }
    assert!(
        names.contains(&"PATH") && names.contains(&"LANG"),
        "{names:?}"
    );

    // No descriptor of the server's comes in: 0, 1, 2, and ls's own directory.
    let out = run(&app, &token, "tools", "ls /proc/self/fd").await;
    let fds: Vec<&str> = out.stdout.lines().collect();
    assert!(fds.len() <= 4, "inherited descriptors: {fds:?}");

    // An unknown skill is an error, and nothing runs.
    let out = run(&app, &token, "nope", "true").await;
    assert!(out.is_error && out.text.contains("not found"), "{out:?}");

    // The runs are counted by outcome: hello.sh exited 3 (failed), the rest 0.
    let metrics = metrics_text(&app).await;
    assert!(
        metrics.contains("agentskills_sandbox_runs_total{outcome=\"failed\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentskills_sandbox_runs_total{outcome=\"ok\"} 4\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn commands_cannot_reach_beyond_their_skill() {
    let Some((app, _, token)) = sandboxed(|_| {}).await else {
        return;
    };
    // Bob's skill, the data folder, the database and the secret are not there at all.
    let bob = app.user("bob").await;
    app.upload_skill(
        &bob,
        &[(
            "SKILL.md",
            b"---\nname: private\ndescription: Bob's secret plans.\n---\n",
        )],
    )
    .await;
    let bobs = find(&app.data_dir, "SKILL.md")
        .into_iter()
        .find(|p| std::fs::read_to_string(p).unwrap().contains("secret plans"))
        .unwrap();
    let data = app.data_dir.display().to_string();
    for path in [
        bobs.display().to_string(),
        format!("{data}/agentskills.db"),
        format!("{data}/secret_key"),
    ] {
        let out = run(
            &app,
            &token,
            "tools",
            &format!("cat '{path}'; ls -la '{data}'"),
        )
        .await;
        assert!(
            out.stdout.is_empty() && out.stderr.contains("No such file"),
            "{path}: {out:?}"
        );
    }
    let bobs_dir = bobs.parent().unwrap().display().to_string();
    let out = run(
        &app,
        &token,
        "tools",
        &format!("echo mine > '{bobs_dir}/planted.txt'; ls '{bobs_dir}'"),
    )
    .await;
    assert!(out.stderr.contains("No such file"), "{out:?}");
    assert!(
        find(&app.data_dir, "planted.txt").is_empty(),
        "wrote into Bob's skill"
    );
    let out = run(&app, &token, "tools", "ls /; cat /etc/shadow").await;
    assert!(
        !out.stdout.contains("root") && !out.stdout.contains("home"),
        "{out:?}"
    );
    assert!(out.stderr.contains("No such file"), "{out:?}");

    // The server's processes are not visible, nor can they be signalled.
    let pid = std::process::id();
    let out = run(
        &app,
        &token,
        "tools",
        &format!("cat /proc/{pid}/environ; kill -9 {pid}; ls /proc | grep -c '^[0-9]'"),
    )
    .await;
    assert!(out.stderr.contains("No such file"), "{out:?}");
    assert!(
        out.stderr.to_lowercase().contains("no such process"),
        "{out:?}"
    );
    let visible: u32 = out.stdout.trim().parse().unwrap_or(u32::MAX);
    assert!(
        visible < 10,
        "the sandbox sees {visible} processes: {out:?}"
    );
    // (Were the kill not blocked, this test process, the server, would be gone.)
    let health = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // No network: TCP to the server itself, UDP anywhere, Unix sockets (PostgreSQL's).
    let port = app.base.rsplit(':').next().unwrap();
    let probe = format!(
        r#"python3 -c "
import socket
def attempt(what, f):
    try:
        f(); print(what, 'reached')
    except OSError as e:
        print(what, 'blocked', e.errno)
attempt('tcp', lambda: socket.create_connection(('127.0.0.1', {port}), 2))
attempt('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.0.0.1', 53)))
attempt('unix', lambda: socket.socket(socket.AF_UNIX).connect('/var/run/postgresql/.s.PGSQL.5432'))
""#
    );
    let out = run(&app, &token, "tools", &probe).await;
    for what in ["tcp", "udp", "unix"] {
        assert!(
            out.stdout.contains(&format!("{what} blocked")),
            "{what}: {out:?}"
        );
    }
    assert!(!out.stdout.contains("reached"), "{out:?}");
}

#[tokio::test]
async fn commands_cannot_outlive_their_limits_or_exhaust_the_machine() {
    let Some((app, _, token)) = sandboxed(|s| {
        // User ids of its own: its fork bomb must not starve the other tests' sandboxes.
        s.sandbox.run_as_uid = 300_000;
        s.sandbox.timeout_secs = 2;
        s.sandbox.file_size_bytes = 1024 * 1024;
        s.sandbox.memory_bytes = 256 * 1024 * 1024;
        s.sandbox.processes = 32;
        s.sandbox.max_output_bytes = 64 * 1024;
    })
    .await
    else {
        return;
    };
    // A process that left the session does not survive the timeout.
    let out = run(&app, &token, "tools", "setsid sleep 4242 & sleep 60").await;
    assert!(out.timed_out && out.is_error, "{out:?}");
    assert!(out.text.contains("timed out after 2 s"), "{out:?}");
    assert_eq!(out.exit_code, Value::Null);
    assert!(
        gone("sleep 4242").await,
        "{:?}",
        processes_with("sleep 4242")
    );

    // A fork bomb hits the process limit and ends with the timeout; nothing is left.
    let out = run(
        &app,
        &token,
        "tools",
        // `exec`: the shell becomes the sleep without a fork, which the bomb may already have
        // made impossible (the shell would then end at once, with "Cannot fork").
        "bomb() { bomb | bomb & }; bomb; exec sleep 60",
    )
    .await;
    assert!(out.timed_out, "{out:?}");
    assert!(gone("bomb").await, "{:?}", processes_with("bomb"));
    let health = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // The process limit: forks beyond it fail.
    let out = run(
        &app,
        &token,
        "tools",
        "for i in $(seq 1 100); do sleep 1 & done; wait",
    )
    .await;
    assert!(
        out.stderr.contains("Resource temporarily unavailable") || out.stderr.contains("fork"),
        "{out:?}"
    );

    // Memory: 512 MiB cannot be had under a 256 MiB limit.
    let out = run(
        &app,
        &token,
        "tools",
        "python3 -c 'b = bytearray(512 * 1024 * 1024); print(\"allocated\")'",
    )
    .await;
    assert!(
        !out.stdout.contains("allocated") && out.stderr.contains("MemoryError"),
        "{out:?}"
    );

    // Disk: a file stops at the size limit.
    let out = run(
        &app,
        &token,
        "tools",
        "head -c 3000000 /dev/zero > big; wc -c < big; rm big",
    )
    .await;
    assert_eq!(out.stdout.trim(), "1048576", "{out:?}");
    assert!(
        out.stderr.contains("File size limit exceeded") || out.stderr.contains("File too large"),
        "{out:?}"
    );

    // Output: cut at the cap, and the command killed.
    let out = run(&app, &token, "tools", "yes").await;
    assert!(out.truncated && out.is_error && !out.timed_out, "{out:?}");
    assert_eq!(out.stdout.len(), 64 * 1024);
}

#[tokio::test]
async fn strict_mode_refuses_without_isolation_and_health_says_why() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.sandbox.bwrap = String::new();
        s.sandbox.landlock = false;
    })
    .await;
    let health = health_json(&app).await;
    let sandbox = &health["sandbox"];
    assert_eq!(sandbox["mode"], "strict");
    assert_eq!(sandbox["ready"], false);
    assert!(
        sandbox["reason"].as_str().unwrap().contains("bubblewrap"),
        "{sandbox}"
    );
    assert_eq!(sandbox["layers"]["landlock"], false);
    let ann = app.user("ann").await;
    app.upload_skill(&ann, &[("SKILL.md", SKILL_MD.as_bytes())])
        .await;
    let (_, token) = app.api_token(&ann, "agent").await;
    let out = run(&app, &token, "tools", "echo ran > ran.txt").await;
    assert!(out.is_error, "{out:?}");
    assert!(
        out.text.starts_with("Sandbox unavailable: bubblewrap"),
        "{out:?}"
    );
    assert!(find(&app.data_dir, "ran.txt").is_empty(), "the command ran");
    let metrics = metrics_text(&app).await;
    assert!(
        metrics.contains("agentskills_sandbox_runs_total{outcome=\"refused\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_queue_answers_busy_at_once() {
    let Some((app, _, token)) = sandboxed(|s| {
        s.sandbox.per_user = 1;
        s.sandbox.queue = 0;
    })
    .await
    else {
        return;
    };
    let slow = {
        let (client, base, token) = (app.client.clone(), app.base.clone(), token.clone());
        tokio::spawn(async move { shell(&client, &base, &token, "sleep 2; echo done").await })
    };
    // Wait until it runs.
    let waiting = std::time::Instant::now();
    loop {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the first command never ran"
        );
        if slow.is_finished() {
            panic!("the first command ended early: {:?}", slow.await);
        }
        let health = health_json(&app).await;
        if health["sandbox"]["running"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let out = run(&app, &token, "tools", "echo second").await;
    assert!(
        out.is_error && out.text.starts_with("Busy, retry"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "busy must answer at once"
    );
    let first = slow.await.unwrap();
    assert_eq!(
        first["result"]["structuredContent"]["stdout"], "done\n",
        "{first}"
    );
}

#[tokio::test]
async fn landlock_alone_confines_a_degraded_sandbox() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.sandbox.mode = agentskills_mcp::config::SandboxMode::Degraded;
        s.sandbox.bwrap = String::new();
    })
    .await;
    let health = health_json(&app).await;
    let sandbox = &health["sandbox"];
    assert_eq!(sandbox["ready"], true, "degraded runs with what is there");
    if sandbox["layers"]["landlock"] != true {
        assert!(
            std::env::var_os("TEST_REQUIRE_SANDBOX").is_none(),
            "Landlock is required here: {sandbox}"
        );
        eprintln!("Landlock unavailable here, test not run: {sandbox}");
        return;
    }
    let ann = app.user("ann").await;
    app.upload_skill(&ann, &[("SKILL.md", SKILL_MD.as_bytes())])
        .await;
    let (_, token) = app.api_token(&ann, "agent").await;
    // A file anyone may read, outside the paths Landlock allows.
    let outside = app.data_dir.parent().unwrap().join("outside.txt");
    std::fs::write(&outside, "not yours\n").unwrap();
    std::fs::set_permissions(
        &outside,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = run(
        &app,
        &token,
        "tools",
        &format!(
            "cat '{}'; echo mine > mine.txt && cat mine.txt",
            outside.display()
        ),
    )
    .await;
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(!out.stdout.contains("not yours"), "{out:?}");
    assert_eq!(
        out.stdout, "mine\n",
        "its own skill stays writable: {out:?}"
    );
    assert!(out.text.contains("[warning: degraded sandbox"), "{out:?}");
    // TCP is denied by Landlock too (loopback exists here: no network namespace).
    let port = app.base.rsplit(':').next().unwrap();
    let out = run(
        &app,
        &token,
        "tools",
        &format!(
            "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('reached')\""
        ),
    )
    .await;
    assert!(
        !out.stdout.contains("reached") && out.stderr.contains("Permission denied"),
        "{out:?}"
    );
}

#[tokio::test]
async fn shutdown_kills_running_commands() {
    let Some((mut app, _, token)) = sandboxed(|s| s.server.shutdown_grace_secs = 10).await else {
        return;
    };
    // The answer, or the error of a connection cut by the shutdown.
    let call = {
        let (client, base, token) = (app.client.clone(), app.base.clone(), token.clone());
        tokio::spawn(async move {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "run_shell_command",
                "arguments": {"skill_name": "tools", "command": "echo started; sleep 4343"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}}}});
            let res = client
                .post(format!("{base}/mcp"))
                .bearer_auth(token)
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "run_shell_command")
                .body(body.to_string())
                .send()
                .await?;
            res.json::<Value>().await
        })
    };
    let waiting = std::time::Instant::now();
    while processes_with("sleep 4343").is_empty() {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "it never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = std::time::Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown waited for the command instead of killing it"
    );
    // The call ends either way: answered that the server shut down, or its connection closed.
    if let Ok(answer) = call.await.unwrap() {
        let result = &answer["result"];
        assert_eq!(result["isError"], true, "{answer}");
        assert!(
            result["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("the server shut down"),
            "{answer}"
        );
    }
    assert!(
        gone("sleep 4343").await,
        "{:?}",
        processes_with("sleep 4343")
    );
}

#[tokio::test]
async fn a_request_past_its_timeout_gets_503_and_its_command_is_killed() {
    let Some((app, _, token)) = sandboxed(|s| {
        s.server.request_timeout_secs = 1;
        s.sandbox.timeout_secs = 30;
    })
    .await
    else {
        return;
    };
    let started = std::time::Instant::now();
    let params = json!({"name": "run_shell_command",
        "arguments": {"skill_name": "tools", "command": "sleep 4545"}});
    let (status, body) = mcp_request(&app.client, &app.base, &token, "tools/call", params).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "timeout", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(gone("sleep 4545").await, "the command outlived its request");
}

/// A command that writes far more than its scratch space holds (100 MB, in `/skill` and in `/tmp`)
/// gets "No space left on device" from the kernel, and the stored skill, the account's usage and
/// the data folder are as before.
async fn writes_beyond_the_scratch_space_stop_at_enospc_and_change_nothing(backend: Backend) {
    let Some((app, ann, token)) = sandboxed_on(backend, |s| {
        s.sandbox.scratch_bytes = 8 * 1024 * 1024;
        s.sandbox.tmp_bytes = 8 * 1024 * 1024;
    })
    .await
    else {
        return;
    };
    let before = stored(&app, &ann).await;
    let out = run(
        &app,
        &token,
        "tools",
        "head -c 100000000 /dev/zero > big; echo skill $?; \
         head -c 100000000 /dev/zero > /tmp/big; echo tmp $?; du -sk . /tmp | cut -f1",
    )
    .await;
    assert!(!out.is_error, "{out:?}");
    assert_eq!(
        out.stderr.matches("No space left on device").count(),
        2,
        "{out:?}"
    );
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("skill 1"), "{out:?}");
    assert_eq!(lines.next(), Some("tmp 1"), "{out:?}");
    for used in lines {
        let kib: u64 = used.parse().unwrap();
        assert!(kib <= 8 * 1024, "{kib} KiB used: {out:?}");
    }
    assert_eq!(stored(&app, &ann).await, before);
    assert!(find(&app.data_dir, "big").is_empty());
}

/// A command that makes more files than its scratch space's inode bound fails at the bound, in
/// `/skill` and in `/tmp`: empty files take no bytes, but each is kernel memory.
async fn files_beyond_the_inode_bound_stop_at_enospc(backend: Backend) {
    let Some((app, ann, token)) = sandboxed_on(backend, |s| s.sandbox.scratch_files = 1000).await
    else {
        return;
    };
    let before = stored(&app, &ann).await;
    // `printf`, not `:`: a failed redirection of a special built-in would end the shell.
    let many = "i=0; while [ $i -lt 3000 ] && printf '' > f$i; do i=$((i+1)); done; echo $i";
    let out = run(&app, &token, "tools", &format!("{many}; cd /tmp && {many}")).await;
    assert_eq!(
        out.stderr.matches("No space left on device").count(),
        2,
        "{out:?}"
    );
    let made: Vec<u32> = out.stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(made.len(), 2, "{out:?}");
    // The skill's own files and folders take a few of the 1000 in `/skill`.
    assert!((990..1000).contains(&made[0]), "{out:?}");
    assert!((990..1000).contains(&made[1]), "{out:?}");
    assert_eq!(stored(&app, &ann).await, before);
}

/// What a command writes or deletes in its skill is gone when it ends: the next `load_skill`,
/// `read_reference_file` and REST read give the original, and the next command starts afresh.
async fn a_commands_writes_are_discarded(backend: Backend) {
    let Some((app, ann, token)) = sandboxed_on(backend, |_| {}).await else {
        return;
    };
    let before = stored(&app, &ann).await;
    let versions_before = app
        .get_json(
            &format!("/api/v1/skills/{}/versions", before.0),
            &ann.access,
        )
        .await;
    let out = run(
        &app,
        &token,
        "tools",
        "echo changed > SKILL.md && rm scripts/hello.sh && mkdir new && echo new > new/file.txt \
         && cat SKILL.md && ls",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(out.stdout, "changed\nSKILL.md\nnew\nscripts\n", "{out:?}");

    let loaded = run_raw(
        &app,
        &token,
        "tools/call",
        json!({"name": "load_skill", "arguments": {"skill_name": "tools"}}),
    )
    .await;
    assert_eq!(loaded["result"]["content"][0]["text"], SKILL_MD, "{loaded}");
    let read = run_raw(
        &app,
        &token,
        "tools/call",
        json!({"name": "read_reference_file",
            "arguments": {"skill_name": "tools", "file_name": "scripts/hello.sh"}}),
    )
    .await;
    assert_eq!(
        read["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .as_bytes(),
        HELLO_SH,
        "{read}"
    );
    let id = &before.0;
    let rest = app
        .get_auth(&format!("/api/v1/skills/{id}/files/SKILL.md"), &ann.access)
        .await;
    assert_eq!(rest.status(), StatusCode::OK);
    assert_eq!(rest.text().await.unwrap(), SKILL_MD);
    assert_eq!(stored(&app, &ann).await, before);
    // No version was made: only the API changes a skill.
    let versions_after = app
        .get_json(&format!("/api/v1/skills/{id}/versions"), &ann.access)
        .await;
    assert_eq!(versions_after, versions_before);

    let out = run(
        &app,
        &token,
        "tools",
        "cat SKILL.md && ls scripts && if [ -e new ]; then echo leaked; else echo fresh; fi",
    )
    .await;
    assert_eq!(
        out.stdout,
        format!("{SKILL_MD}hello.sh\nfresh\n"),
        "{out:?}"
    );
}

/// An upload while a command runs in the same skill: the command works on the version it started
/// with, whole (it sees either the old `SKILL.md` or the new one, never a mix or none), its writes
/// never reach the stored skill, and the upload's version is what stays.
async fn an_upload_during_a_command_is_neither_lost_nor_mixed(backend: Backend) {
    let Some((app, ann, token)) = sandboxed_on(backend, |_| {}).await else {
        return;
    };
    let (id, ..) = stored(&app, &ann).await;
    let version = |v: Value| v["version"].as_i64().unwrap();
    let before = version(
        app.get_json(&format!("/api/v1/skills/{id}"), &ann.access)
            .await,
    );
    let new_md =
        "---\nname: tools\ndescription: Scripts, uploaded during a command.\n---\n# Tools\n";
    let (client, base, command_token) = (app.client.clone(), app.base.clone(), token.clone());
    let command = tokio::spawn(async move {
        shell(
            &client,
            &base,
            &command_token,
            "sleep 0.5; cat SKILL.md; echo written-by-the-command > SKILL.md; \
             echo x > scripts/made.sh",
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app.upload_skill(&ann, &[("SKILL.md", new_md.as_bytes())])
        .await;
    let body = command.await.unwrap();
    let stdout = body["result"]["structuredContent"]["stdout"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stdout == SKILL_MD || stdout == new_md, "{body}");
    let after = app
        .get_json(&format!("/api/v1/skills/{id}"), &ann.access)
        .await;
    assert_eq!(version(after.clone()), before + 1, "{after}");
    let paths: Vec<&str> = after["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["SKILL.md", "scripts/hello.sh"]);
    let rest = app
        .get_auth(&format!("/api/v1/skills/{id}/files/SKILL.md"), &ann.access)
        .await;
    assert_eq!(rest.text().await.unwrap(), new_md);
    let loaded = run_raw(
        &app,
        &token,
        "tools/call",
        json!({"name": "load_skill", "arguments": {"skill_name": "tools"}}),
    )
    .await;
    assert_eq!(loaded["result"]["content"][0]["text"], new_md, "{loaded}");
}

/// `/proc/self/mountinfo` inside names neither the data folder, nor the user, nor the helper's
/// host path (the skill is a copy on a tmpfs, and the helper's mount is detached before the
/// command runs); and the command holds no capability at all.
async fn a_command_sees_no_host_path_and_holds_no_capability(backend: Backend) {
    let Some((app, ann, token)) = sandboxed_on(backend, |_| {}).await else {
        return;
    };
    let out = run(
        &app,
        &token,
        "tools",
        "cat /proc/self/mountinfo; grep ^Cap /proc/self/status",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let helper = env!("CARGO_BIN_EXE_agentskills-mcp");
    let helper_dir = Path::new(helper).parent().unwrap().display().to_string();
    let data = app.data_dir.display().to_string();
    let data_parent = app.data_dir.parent().unwrap().display().to_string();
    for leak in [
        data.as_str(),
        data_parent.as_str(),
        ann.id.as_str(),
        helper,
        helper_dir.as_str(),
        "agentskills-sandbox-init",
        "skills/",
    ] {
        assert!(!out.stdout.contains(leak), "{leak} shows: {}", out.stdout);
    }
    // `/skill` and `/tmp` are tmpfs of the command's own, bounded in files.
    for mount in [" /skill ", " /tmp "] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.contains(mount) && l.contains("tmpfs") && l.contains("nr_inodes=4096")),
            "{mount}: {}",
            out.stdout
        );
    }
    let caps: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .collect();
    assert_eq!(caps.len(), 5, "{out:?}");
    for line in caps {
        assert!(line.ends_with(":\t0000000000000000"), "{line}");
    }
}

/// The scratch copy keeps each file's executable bit as it is on disk (a script runs as
/// `./scripts/x.sh`), and paths with spaces and non-ASCII letters as they are.
async fn scripts_keep_their_executable_bit_and_odd_names_survive(backend: Backend) {
    let Some((app, ann, token)) = sandboxed_on(backend, |_| {}).await else {
        return;
    };
    app.upload_skill(
        &ann,
        &[
            ("SKILL.md", SKILL_MD.as_bytes()),
            ("scripts/x.sh", b"#!/bin/sh\necho \"x ran in $(pwd)\"\n"),
            (
                "dir with space/\u{fc}n\u{ef} c\u{f6}d\u{e9}.txt",
                b"unicode ok\n",
            ),
        ],
    )
    .await;
    // Uploads store files without the bit; a skill folder may have it on disk all the same.
    let script = find(&app.data_dir, "x.sh");
    assert_eq!(script.len(), 1, "{script:?}");
    std::fs::set_permissions(
        &script[0],
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = run(
        &app,
        &token,
        "tools",
        "./scripts/x.sh && cat 'dir with space/\u{fc}n\u{ef} c\u{f6}d\u{e9}.txt' \
         && test ! -x SKILL.md && test ! -x scripts/hello.sh && echo plain",
    )
    .await;
    assert_eq!(
        out.stdout, "x ran in /skill\nunicode ok\nplain\n",
        "{out:?}"
    );
}

/// Without bubblewrap (degraded) or without the sandbox (off), a command runs in a copy of its
/// skill in a private host folder, removed when it ends: the stored skill never changes either.
async fn degraded_and_off_modes_run_in_a_host_copy(backend: Backend) {
    use agentskills_mcp::config::SandboxMode;
    for mode in [SandboxMode::Degraded, SandboxMode::Off] {
        let app = spawn_app_with(backend.clone(), |s| {
            s.sandbox.mode = mode;
            s.sandbox.bwrap = String::new();
        })
        .await;
        let ann = app.user("ann").await;
        app.upload_skill(
            &ann,
            &[
                ("SKILL.md", SKILL_MD.as_bytes()),
                ("scripts/hello.sh", HELLO_SH),
            ],
        )
        .await;
        let (_, token) = app.api_token(&ann, "agent").await;
        let before = stored(&app, &ann).await;
        let out = run(
            &app,
            &token,
            "tools",
            "pwd && echo changed > SKILL.md && rm scripts/hello.sh && echo new > new.txt \
             && cat SKILL.md",
        )
        .await;
        let mut lines = out.stdout.lines();
        let copy = PathBuf::from(lines.next().unwrap_or_default());
        assert_eq!(lines.next(), Some("changed"), "{mode:?}: {out:?}");
        assert!(
            !copy.starts_with(&app.data_dir) && copy.is_absolute(),
            "{mode:?}: {out:?}"
        );
        assert!(
            !copy.exists(),
            "{mode:?}: the copy {copy:?} was left behind"
        );
        assert_eq!(stored(&app, &ann).await, before, "{mode:?}");
        assert!(find(&app.data_dir, "new.txt").is_empty());
        if mode == SandboxMode::Degraded {
            assert!(
                out.text.contains("[warning: degraded sandbox")
                    && out.text.contains("bounded only per file"),
                "{out:?}"
            );
        }
    }
}
