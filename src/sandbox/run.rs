//! One command through the layers: build the command line, set the limits in the child, capture
//! capped output, enforce the timeout, kill everything at the end.

use std::ffi::OsString;
use std::future::Future;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use rustix::process::{Pid, Signal};

use super::init::Limit;
use super::probe::Layers;
use crate::config::{SandboxMode, SandboxSettings};

/// Where the skill's folder is inside bubblewrap, and the working directory of the command.
const SKILL_MOUNT: &str = "/skill";
/// Where the Landlock helper is inside bubblewrap.
const HELPER_MOUNT: &str = "/run/agentskills-sandbox-init";
/// The environment a command sees.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const LANG: &str = "C.UTF-8";

/// What a command did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// stdout or stderr reached its cap (and the command was killed).
    pub truncated: bool,
    /// The server shut down while it ran (and it was killed).
    pub killed_at_shutdown: bool,
    pub duration: Duration,
    /// Set in degraded mode: which isolation was missing.
    pub warning: Option<String>,
}

/// Runs one command; `uid` is the user id it runs as when the server is root.
pub(super) async fn run(
    settings: &SandboxSettings,
    layers: &Layers,
    uid: Option<u32>,
    skill_dir: &Path,
    command: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, String> {
    let confined = settings.mode != SandboxMode::Off;
    let uid = uid.filter(|_| confined);
    if let Some(uid) = uid {
        hand_over(skill_dir, uid).await?;
    }
    // Without bubblewrap there is no private /tmp: the command gets a folder of its own instead
    // (the host's /tmp stays out of its reach), removed when it ends.
    let own_tmp = if confined && layers.bwrap.is_none() {
        Some(PrivateTmp::create(uid).await?)
    } else {
        None
    };
    let tmp = own_tmp.as_ref().map(|t| t.path.as_path());
    let mut child = build(settings, layers, uid, skill_dir, tmp, command, confined)
        .spawn()
        .map_err(|e| format!("could not start the command: {e}"))?;
    let pid = child.id();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("the command's output could not be captured".to_owned());
    };
    let started = Instant::now();
    let cap = settings.max_output_bytes;
    // The child leads its own process group: killing the group takes its children too without
    // bubblewrap; with bubblewrap, the PID namespace ends with its first process anyway. Only
    // called before the child is reaped, so the group id cannot belong to anyone else yet.
    let kill = || {
        if let Some(pid) = pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    };
    let capture = async { tokio::join!(read_capped(stdout, cap), read_capped(stderr, cap)) };
    tokio::pin!(capture);
    tokio::pin!(shutdown);
    let deadline = tokio::time::sleep(Duration::from_secs(settings.timeout_secs));
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut killed_at_shutdown = false;
    // Until the output ends (every process holding the pipes is gone), or a limit is hit.
    let captured = tokio::select! {
        captured = &mut capture => Some(captured),
        () = &mut deadline => { timed_out = true; None }
        () = &mut shutdown => { killed_at_shutdown = true; None }
    };
    let ((stdout, out_full), (stderr, err_full)) = match captured {
        Some(captured) => captured,
        None => {
            kill();
            let _ = child.start_kill();
            // With bubblewrap everything is gone now and the pipes close; without it, a process
            // that left the group may hold them: its output is then given up.
            tokio::time::timeout(Duration::from_secs(1), &mut capture)
                .await
                .unwrap_or_default()
        }
    };
    if out_full || err_full {
        kill();
        let _ = child.start_kill();
    }
    // The output may end before the command does (it closed both): the limits still hold.
    let status = tokio::select! {
        status = child.wait() => status,
        () = &mut deadline, if !timed_out && !killed_at_shutdown => {
            timed_out = true;
            kill();
            let _ = child.start_kill();
            child.wait().await
        }
        () = &mut shutdown, if !timed_out && !killed_at_shutdown => {
            killed_at_shutdown = true;
            kill();
            let _ = child.start_kill();
            child.wait().await
        }
    }
    .map_err(|e| format!("could not wait for the command: {e}"))?;
    let cut_short = timed_out || killed_at_shutdown || out_full || err_full;
    let warning = (settings.mode == SandboxMode::Degraded)
        .then(|| layers.missing())
        .flatten();
    Ok(Outcome {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        exit_code: status.code().filter(|_| !cut_short),
        signal: status.signal(),
        timed_out,
        truncated: out_full || err_full,
        killed_at_shutdown,
        duration: started.elapsed(),
        warning,
    })
}

/// Reads at most `cap` bytes; `true` if there was more (the reader is then dropped, and the
/// writer gets EPIPE or is killed).
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return (out, false),
            Ok(n) => {
                let room = cap - out.len();
                if n > room {
                    out.extend_from_slice(&buf[..room]);
                    return (out, true);
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// A temporary folder for one command without bubblewrap, removed when dropped.
struct PrivateTmp {
    path: std::path::PathBuf,
}

impl PrivateTmp {
    async fn create(owner: Option<u32>) -> Result<PrivateTmp, String> {
        let path =
            std::env::temp_dir().join(format!("agentskills-sandbox-{}", uuid::Uuid::new_v4()));
        let made = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new().mode(0o700).create(&made)?;
            if let Some(uid) = owner {
                chown_tree(&made, uid)?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not make the command's temporary folder: {e}"))?;
        Ok(PrivateTmp { path })
    }
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Gives the skill's folder to the user id commands run as (a root server's files are not
/// writable by it otherwise). Symlinks are not followed.
async fn hand_over(dir: &Path, uid: u32) -> Result<(), String> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || chown_tree(&dir, uid))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not hand the skill's folder to the sandbox's user: {e}"))
}

fn chown_tree(dir: &Path, uid: u32) -> std::io::Result<()> {
    let owner = Some(rustix::fs::Uid::from_raw(uid));
    let group = Some(rustix::fs::Gid::from_raw(uid));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        rustix::fs::chownat(
            rustix::fs::CWD,
            &path,
            owner,
            group,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// The process to start. Confined: the helper (limits, death with the server), then bubblewrap
/// (if it works), then the helper again inside (Landlock, if it works), then `sh -c`; the layers
/// that are missing are left out. Off: `sh -c` alone.
#[allow(clippy::too_many_arguments)]
fn build(
    settings: &SandboxSettings,
    layers: &Layers,
    uid: Option<u32>,
    skill_dir: &Path,
    tmp: Option<&Path>,
    command: &str,
    confined: bool,
) -> tokio::process::Command {
    let shell: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), command.into()];
    let bwrap = layers.bwrap.as_ref().filter(|_| confined);
    let helper = layers.helper.as_ref().filter(|_| confined);
    let landlock = confined && layers.landlock;
    // Landlock's rules, for paths as the command sees them.
    let landlock_args = |skill: &Path, tmp: &Path| -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        for ro in READ_ONLY.iter().chain(&["/proc", "/dev"]) {
            if Path::new(ro).exists() {
                argv.extend(["--ro".into(), (*ro).into()]);
            }
        }
        for rw in [skill, tmp, Path::new("/dev/null")] {
            argv.extend(["--rw".into(), rw.into()]);
        }
        argv
    };
    let host_tmp = tmp.unwrap_or(Path::new("/nonexistent"));
    let mut argv: Vec<OsString> = Vec::new();
    // With the helper, bubblewrap gets the skill's folder (and the helper itself) as descriptors
    // the helper opened before leaving root: the sandbox's user cannot reach the data folder.
    let mut skill_source: (&str, OsString) = ("--bind", skill_dir.into());
    let mut helper_source: Option<(&str, OsString)> = None;
    if let Some(helper) = helper {
        argv.extend([helper.into(), "sandbox-init".into()]);
        if bwrap.is_some() {
            argv.extend(["--pass".into(), skill_dir.into()]);
            skill_source = ("--bind-fd", "@fd0".into());
            if landlock {
                argv.extend(["--pass".into(), helper.into()]);
                helper_source = Some(("--ro-bind-fd", "@fd1".into()));
            }
        }
        if let Some(uid) = uid {
            argv.extend([
                "--uid".into(),
                uid.to_string().into(),
                "--gid".into(),
                uid.to_string().into(),
            ]);
        }
        argv.extend([
            "--die-with-parent".into(),
            "--reap".into(),
            "--new-session".into(),
        ]);
        for (name, value) in Limits::from(settings).list() {
            argv.extend(["--rlimit".into(), format!("{name}={value}").into()]);
        }
        if landlock && bwrap.is_none() {
            argv.extend(landlock_args(skill_dir, host_tmp));
        }
        argv.push("--".into());
    }
    if let Some(bwrap) = bwrap {
        argv.push(bwrap.into());
        argv.extend(bwrap_args(settings, skill_source, helper_source));
        argv.push("--".into());
        if landlock && helper.is_some() {
            argv.extend([HELPER_MOUNT.into(), "sandbox-init".into()]);
            argv.extend(landlock_args(Path::new(SKILL_MOUNT), Path::new("/tmp")));
            argv.push("--".into());
        }
    }
    argv.extend(shell);
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(skill_dir)
        .env_clear()
        .env("PATH", PATH)
        .env(
            "HOME",
            if bwrap.is_some() {
                "/tmp"
            } else {
                "/nonexistent"
            },
        )
        .env("LANG", LANG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if helper.is_none() {
        // Its own group, so that killing the group takes what it started; with the helper, the
        // helper starts a new session (and group) itself, which bubblewrap stays in.
        cmd.process_group(0);
    }
    cmd
}

/// System paths a shell and common interpreters need, read-only.
const READ_ONLY: [&str; 8] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// Files of `/etc` a shell and interpreters read (the rest of `/etc` stays out of the sandbox).
const ETC: [&str; 10] = [
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/mime.types",
];

/// bubblewrap's arguments; the skill's folder and the helper come as `(flag, source)`.
fn bwrap_args(
    settings: &SandboxSettings,
    skill: (&str, OsString),
    helper: Option<(&str, OsString)>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    // No `--new-session`: the helper made a new session already, which bubblewrap must stay in
    // for the server to kill it with its group.
    push(&[
        "--unshare-all",
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        "--clearenv",
        "--setenv",
        "PATH",
        PATH,
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "LANG",
        LANG,
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(dir) {
                    args.extend(["--symlink".into(), target.into(), dir.into()]);
                }
            }
            Ok(m) if m.is_dir() => args.extend(["--ro-bind".into(), dir.into(), dir.into()]),
            _ => {}
        }
    }
    for file in ETC {
        args.extend(["--ro-bind-try".into(), file.into(), file.into()]);
    }
    args.extend(
        [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            &settings.tmp_bytes.to_string(),
            "--tmpfs",
            "/tmp",
        ]
        .map(OsString::from),
    );
    args.extend([skill.0.into(), skill.1, SKILL_MOUNT.into()]);
    if let Some((flag, source)) = helper {
        args.extend([flag.into(), source, HELPER_MOUNT.into()]);
    }
    args.extend(["--chdir".into(), SKILL_MOUNT.into()]);
    args
}

/// The resource limits the helper sets.
#[derive(Debug, Clone, Copy)]
struct Limits {
    cpu: u64,
    data: u64,
    fsize: u64,
    nofile: u64,
    nproc: u64,
}

impl From<&SandboxSettings> for Limits {
    fn from(s: &SandboxSettings) -> Limits {
        Limits {
            cpu: s.cpu_secs,
            data: s.memory_bytes,
            fsize: s.file_size_bytes,
            nofile: s.open_files,
            nproc: s.processes,
        }
    }
}

impl Limits {
    fn list(self) -> [(&'static str, u64); 6] {
        [
            (Limit::Cpu.name(), self.cpu),
            (Limit::Data.name(), self.data),
            (Limit::Fsize.name(), self.fsize),
            (Limit::Nofile.name(), self.nofile),
            (Limit::Nproc.name(), self.nproc),
            (Limit::Core.name(), 0),
        ]
    }
}
