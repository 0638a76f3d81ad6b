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
                // The end of the address in a text line, or in a JSON one.
                .split(|c: char| c.is_whitespace() || c == '"')
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
    // A look-alike (Cyrillic о) is refused as a duplicate is.
    let out = user(
        &[
            "create",
            "--email",
            "\u{43e}ps@example.com",
            "--username",
            "ops3",
        ],
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

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_id_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let (child, url) = start(
        binary()
            .env("AGENTSKILLS_LOG_FORMAT", "json")
            .env("AGENTSKILLS_LOG", "debug")
            .env("AGENTSKILLS_SANDBOX", "off")
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data")),
        &log,
    )
    .await;
    let url = url.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let password = "correct horse battery staple";
    let call = |method: reqwest::Method, path: &str, id: &str| {
        client
            .request(method, format!("{url}{path}"))
            .header("x-request-id", id)
    };
    let res = call(
        reqwest::Method::POST,
        "/api/v1/auth/register",
        "req-register",
    )
    .json(&json!({"email": "ann@example.com", "username": "ann", "password": password}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = call(reqwest::Method::POST, "/api/v1/auth/login", "req-bad-login")
        .json(&json!({"email": "ann@example.com", "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let tokens: serde_json::Value = call(reqwest::Method::POST, "/api/v1/auth/login", "req-login")
        .json(&json!({"email": "ann@example.com", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let created: serde_json::Value = call(reqwest::Method::POST, "/api/v1/tokens", "req-token")
        .bearer_auth(&access)
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_token = created["token"].as_str().unwrap().to_owned();
    let res = call(reqwest::Method::POST, "/mcp", "req-mcp")
        .bearer_auth(&api_token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(reqwest::Method::GET, "/api/v1/users/me", "req-me")
        .bearer_auth(&refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    stop(child);

    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let id_of = |line: &serde_json::Value| line["span"]["id"].as_str().map(str::to_owned);
    // The access line of every request, and what its handler logged, carry the request's id.
    for id in [
        "req-register",
        "req-bad-login",
        "req-login",
        "req-token",
        "req-mcp",
        "req-me",
    ] {
        let access = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "request" && id_of(l).as_deref() == Some(id))
            .count();
        assert_eq!(access, 1, "access lines of {id}:\n{logged}");
    }
    let registered = lines
        .iter()
        .find(|l| l["fields"]["message"] == "user registered")
        .unwrap_or_else(|| panic!("no registration line:\n{logged}"));
    assert_eq!(id_of(registered).as_deref(), Some("req-register"));
    for line in &lines {
        if line["fields"]["message"] == "request" || line["fields"].get("route").is_some() {
            assert!(
                id_of(line).is_some(),
                "a request's line without its id: {line}"
            );
        }
    }
    // Neither the password, nor a JWT, nor the API token is ever written.
    for secret in [password, &access, &refresh, &api_token, &api_token[9..]] {
        assert!(!logged.contains(secret), "a secret was logged:\n{logged}");
    }
}
