//! The command line: default subcommand, configuration sources, `migrate` and the `user` commands.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, spawn_app_with};

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentskills-mcp"));
    cmd.env_clear()
        .env("AGENTSKILLS_SCRYPT_LOG_N", "4")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `cmd` (a serving command), waits until it logs where it listens, returns the URL or the
/// log if it exited instead.
async fn start(cmd: &mut Command, log: &Path) -> (std::process::Child, Result<String, String>) {
    let file = std::fs::File::create(log).unwrap();
    let mut child = cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap();
    for _ in 0..200 {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = logged.lines().find(|l| l.contains("listening on http://")) {
            let url = line
                .split("listening on ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            return (child, Ok(url));
        }
        if child.try_wait().unwrap().is_some() {
            return (child, Err(logged));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no listen address: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn with_no_configuration_it_serves_on_port_8000_with_data_under_dot_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (child, outcome) = start(binary().current_dir(dir.path()), &log).await;
    match outcome {
        Ok(url) => {
            assert_eq!(url, "http://127.0.0.1:8000");
            let health = reqwest::get(format!("{url}/health")).await.unwrap();
            assert_eq!(health.status(), StatusCode::OK);
            stop(child);
        }
        // Something else on this machine holds port 8000: the server must still have tried it.
        Err(logged) => assert!(
            logged.contains("cannot listen on 127.0.0.1:8000"),
            "{logged}"
        ),
    }
    let data = dir.path().join("data");
    assert!(data.join("secret_key").is_file(), "no ./data/secret_key");
    assert!(
        data.join("agentskills.db").is_file(),
        "no ./data/agentskills.db"
    );
}

#[tokio::test]
async fn serve_is_the_default_and_takes_bind_and_data_dir_and_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custom.toml");
    std::fs::write(
        &config,
        "[server]\nbind = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n",
    )
    .unwrap();
    let data = dir.path().join("elsewhere");
    // No subcommand: serve, with the file's bind.
    let (child, url) = start(
        binary()
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data),
        &dir.path().join("a.log"),
    )
    .await;
    let url = url.unwrap();
    assert_ne!(url, "http://127.0.0.1:8000");
    assert_eq!(
        reqwest::get(format!("{url}/health"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(data.join("agentskills.db").is_file());
    stop(child);
    // `serve --bind` wins over the file.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (child, url) = start(
        binary()
            .args(["serve", "--bind", &free.to_string(), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data),
        &dir.path().join("b.log"),
    )
    .await;
    assert_eq!(url.unwrap(), format!("http://{free}"));
    stop(child);
}

#[test]
fn bad_configuration_fails_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        binary()
            .current_dir(dir.path())
            .env("AGENTSKILLS_SCRYPT_LOG_N", "lots"),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("AGENTSKILLS_SCRYPT_LOG_N"),
        "{}",
        text(&out.stderr)
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[auth]\naccess_token_minutes = 0\n").unwrap();
    let out = run(binary().arg("--config").arg(&config), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("auth.access_token_minutes"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        binary()
            .current_dir(dir.path())
            .env("DATABASE_URL", "mysql://nope"),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("database.url"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        binary()
            .arg("--config")
            .arg(dir.path().join("missing.toml")),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn migrate_creates_the_schema_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for _ in 0..2 {
        let out = run(binary().arg("migrate").arg("--data-dir").arg(&data), None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("up to date"),
            "{}",
            text(&out.stdout)
        );
    }
    assert!(data.join("agentskills.db").is_file());
}

#[tokio::test]
async fn user_commands_create_list_deactivate_and_activate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let user = |args: &[&str], stdin: Option<&str>| {
        run(
            binary().arg("--data-dir").arg(&data).arg("user").args(args),
            stdin,
        )
    };

    let out = user(
        &["create", "--email", "Ops@Example.com", "--username", "ops"],
        Some("operator-password\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created user ops"));
    let out = user(
        &["create", "--email", "ops@example.com", "--username", "ops2"],
        Some("operator-password\n"),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("email"), "{}", text(&out.stderr));
    let out = user(
        &["create", "--email", "x@example.com", "--username", "x"],
        Some("operator-password\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("username"),
        "{}",
        text(&out.stderr)
    );
    let out = user(
        &["create", "--email", "y@example.com", "--username", "yyy"],
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("password"),
        "{}",
        text(&out.stderr)
    );

    let out = user(&["list"], None);
    let listed = text(&out.stdout);
    assert!(
        listed.contains("ops@example.com") && listed.contains("true"),
        "{listed}"
    );
    assert!(!listed.contains("yyy"));

    // The account works on a server over the same data dir.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.data_dir = data.clone();
        s.tokens.sync_interval_secs = 1;
    })
    .await;
    let res = app.login("ops@example.com", "operator-password").await;
    assert_eq!(res.status(), StatusCode::OK);
    let ops: serde_json::Value = res.json().await.unwrap();
    let created = app
        .request(reqwest::Method::POST, "/api/v1/tokens")
        .bearer_auth(ops["access_token"].as_str().unwrap())
        .json(&json!({"name": "ops"}))
        .send()
        .await
        .unwrap();
    let token: serde_json::Value = created.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    assert_eq!(app.mcp_status(&token).await, StatusCode::OK);

    let out = user(&["deactivate", "OPS@example.com"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        app.login("ops", "operator-password").await.status(),
        StatusCode::FORBIDDEN
    );
    let mut refused = false;
    for _ in 0..50 {
        if app.mcp_status(&token).await == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "the running server kept accepting a deactivated user's token"
    );
    assert!(text(&user(&["list"], None).stdout).contains("false"));

    let out = user(&["activate", "ops"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        app.login("ops", "operator-password").await.status(),
        StatusCode::OK
    );
    let out = user(&["deactivate", "nobody"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no user"),
        "{}",
        text(&out.stderr)
    );
}
