//! What isolation this machine offers, found once at start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

use crate::config::SandboxSettings;

/// The layers found, as `/health` shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Layers {
    /// bubblewrap's path when it works here: namespaces for mounts, PIDs, network, IPC, UTS.
    pub bwrap: Option<PathBuf>,
    /// Why bubblewrap is not used, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwrap_error: Option<String>,
    /// The `agentskills-mcp` executable that sets the resource limits and applies Landlock
    /// (`sandbox-init`), when it works.
    pub helper: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helper_error: Option<String>,
    /// Resource limits (CPU, data, file size, open files, processes, core) are set on each command.
    pub rlimits: bool,
    /// Each command gets a scratch space of its own inside bubblewrap: a copy of its skill on a
    /// tmpfs bounded in bytes and files at `/skill`, a bounded `/tmp`, and no capabilities left.
    /// Without it, a command runs in a copy of its skill on the host, bounded only per file.
    pub scratch: bool,
    /// Why there is no such scratch space, when there is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scratch_error: Option<String>,
    /// Landlock (ABI 6) is applied to each command.
    pub landlock: bool,
    /// Why Landlock is not applied, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landlock_error: Option<String>,
    /// The first of the user ids commands run as (one per command running at once), when the
    /// server is root and hands them others.
    pub run_as_uid: Option<u32>,
}

impl Layers {
    /// Whether the file system, the network (TCP, UDP, Unix sockets), processes and signals are
    /// all isolated and bounded: what strict mode needs. bubblewrap's namespaces isolate all four
    /// (Landlock has no rule for UDP nor for Unix sockets by path); the limits bound processes;
    /// the scratch space bounds what a command writes, in bytes and in files.
    pub fn isolated(&self) -> bool {
        self.bwrap.is_some() && self.rlimits && self.scratch
    }

    /// Whether commands get their scratch space inside the sandbox (else a copy on the host).
    pub(super) fn scratch_in_sandbox(&self) -> bool {
        self.bwrap.is_some() && self.helper.is_some() && self.scratch
    }

    /// What is missing for strict mode, in words.
    pub fn missing(&self) -> Option<String> {
        let mut missing = Vec::new();
        if self.bwrap.is_none() {
            missing.push(format!(
                "bubblewrap is not usable ({}), so the network (UDP, Unix sockets), processes and \
                 signals cannot be isolated",
                self.bwrap_error.as_deref().unwrap_or("not found")
            ));
        }
        if !self.rlimits {
            missing.push(format!(
                "the resource limits cannot be set ({})",
                self.helper_error.as_deref().unwrap_or("no helper")
            ));
        }
        if !self.scratch {
            missing.push(format!(
                "commands cannot get a bounded scratch space inside the sandbox ({}): without it, \
                 a command can only run in a copy of its skill on the host, where what it writes \
                 is bounded only per file (sandbox.file_size_bytes), neither in total nor in \
                 number of files",
                self.scratch_error.as_deref().unwrap_or("not probed")
            ));
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }
}

/// Probes each layer the settings allow.
pub(super) async fn probe(settings: &SandboxSettings) -> Layers {
    let run_as_uid = (rustix::process::geteuid().is_root() && settings.run_as_uid != 0)
        .then_some(settings.run_as_uid);
    let (helper, helper_error) = match try_helper(&settings.helper, &[]).await {
        Ok(path) => (Some(path), None),
        Err(e) => (None, Some(e)),
    };
    let (bwrap, bwrap_error) = match find_bwrap(&settings.bwrap) {
        Err(e) => (None, Some(e)),
        Ok(path) => match try_bwrap(&path, run_as_uid, helper.as_deref()).await {
            Ok(()) => (Some(path), None),
            Err(e) => (None, Some(e)),
        },
    };
    let landlock_error = match &helper {
        _ if !settings.landlock => Some("turned off (sandbox.landlock = false)".to_owned()),
        None => Some("no working helper to apply it".to_owned()),
        Some(path) => try_helper(&path.to_string_lossy(), &["--ro", "/"])
            .await
            .err(),
    };
    let mut layers = Layers {
        bwrap,
        bwrap_error,
        rlimits: helper.is_some(),
        scratch: false,
        scratch_error: None,
        landlock: landlock_error.is_none(),
        landlock_error,
        helper,
        helper_error,
        run_as_uid,
    };
    // The scratch space is tried the way a command runs, with every other layer found.
    layers.scratch_error = match (&layers.bwrap, &layers.helper) {
        (None, _) => Some("it needs bubblewrap".to_owned()),
        (_, None) => Some("it needs the helper".to_owned()),
        (Some(_), Some(_)) => super::run::try_scratch(settings, &layers).await.err(),
    };
    layers.scratch = layers.scratch_error.is_none();
    layers
}

fn find_bwrap(setting: &str) -> Result<PathBuf, String> {
    if setting.is_empty() {
        return Err("turned off (sandbox.bwrap is empty)".to_owned());
    }
    if setting.contains('/') {
        let path = PathBuf::from(setting);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!("{setting} is not an executable file"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(setting))
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("{setting} not found in PATH (Debian: apt install bubblewrap)"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `true` in a sandbox like the real ones; any failure (no user namespaces in a container,
/// say) is the reason bubblewrap cannot be used. Through the helper when there is one, which
/// reaps what bubblewrap leaves (a slow init would otherwise keep it counted against the
/// sandbox's user) and changes the user.
async fn try_bwrap(
    path: &Path,
    run_as_uid: Option<u32>,
    helper: Option<&Path>,
) -> Result<(), String> {
    let mut command = match helper {
        Some(helper) => {
            let mut command = tokio::process::Command::new(helper);
            command.args(["sandbox-init", "--reap"]);
            if let Some(uid) = run_as_uid {
                let uid = uid.to_string();
                command.args(["--uid", &uid, "--gid", &uid]);
            }
            command.arg("--").arg(path);
            command
        }
        None => {
            let mut command = tokio::process::Command::new(path);
            if let Some(uid) = run_as_uid {
                command.uid(uid).gid(uid);
            }
            command
        }
    };
    command
        .args([
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
        ])
        .args(["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"])
        .args(["--", "/bin/sh", "-c", "true"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(10), command.output())
        .await
        .map_err(|_| "it did not finish within 10 s".to_owned())?
        .map_err(|e| format!("it could not be started: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&output.stderr);
        Err(format!("it failed here: {}", said.trim()))
    }
}

/// What the helper prints in the probe: proof that it is `agentskills-mcp` and that Landlock
/// applies.
const HELPER_MARK: &str = "agentskills-sandbox-ready";

/// The `agentskills-mcp` executable that runs `sandbox-init` (the setting, else this one),
/// checked by running it with limits and `extra` arguments (`--ro /` tries Landlock).
async fn try_helper(setting: &str, extra: &[&str]) -> Result<PathBuf, String> {
    let path = if setting.is_empty() {
        std::env::current_exe().map_err(|e| format!("this executable's path is unknown: {e}"))?
    } else {
        PathBuf::from(setting)
    };
    if !is_executable(&path) {
        return Err(format!(
            "the helper {} is not an executable file",
            path.display()
        ));
    }
    let output = tokio::process::Command::new(&path)
        .args(["sandbox-init", "--die-with-parent", "--rlimit", "core=0"])
        .args(extra)
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("echo {HELPER_MARK}"))
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(10), output)
        .await
        .map_err(|_| "the helper did not finish within 10 s".to_owned())?
        .map_err(|e| format!("the helper could not be started: {e}"))?;
    if output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == HELPER_MARK {
        Ok(path)
    } else {
        Err(format!(
            "{} sandbox-init {} failed: {}",
            path.display(),
            extra.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
