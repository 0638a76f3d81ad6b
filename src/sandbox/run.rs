//! One command through the layers: give it a scratch copy of its skill, build the command line,
//! set the limits in the child, capture capped output, enforce the timeout, kill everything at the
//! end.
//!
//! A command never runs in the stored skill. With bubblewrap and the helper (strict mode), the
//! helper inside mounts a tmpfs bounded in bytes and files on `/skill` and unpacks the archive of
//! the skill's files the server writes to its standard input; otherwise the command runs in a
//! copy of the skill in a private host folder, removed when it ends.

use std::ffi::OsString;
use std::future::Future;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use rustix::process::{Pid, Signal};

use super::init::{Limit, Tmpfs};
use super::probe::Layers;
use crate::config::{SandboxMode, SandboxSettings};
use crate::skills::files;

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
    let in_sandbox = confined && layers.scratch_in_sandbox();
    // Without the sandbox's own scratch space, a copy on the host (with a folder for /tmp too,
    // since without bubblewrap there is no private /tmp: the host's stays out of reach).
    let host = if in_sandbox {
        None
    } else {
        Some(HostScratch::create(settings, skill_dir, uid).await?)
    };
    let mut builder = build(settings, layers, uid, host.as_ref(), command, confined);
    let archive = if in_sandbox {
        let (reader, writer) =
            std::io::pipe().map_err(|e| format!("could not make the command's input: {e}"))?;
        builder.stdin(reader);
        Some(writer)
    } else {
        None
    };
    let spawned = tokio::process::Command::from(builder)
        .kill_on_drop(true)
        .spawn();
    let mut child = spawned.map_err(|e| format!("could not start the command: {e}"))?;
    // The skill's files go to the helper inside as an archive, written on the blocking pool
    // while the command starts.
    let writing = archive.map(|writer| {
        let dir = skill_dir.to_owned();
        tokio::task::spawn_blocking(move || files::write_archive(&dir, writer))
    });
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
    if let Some(writing) = writing {
        // Every process that could read the archive is gone by now, so the writer has finished
        // or fails at once with a broken pipe (the command stopped reading: its output says
        // why). Any other failure means the command may have run without all of its files.
        match tokio::time::timeout(Duration::from_secs(5), writing).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Ok(Ok(Err(e))) => return Err(format!("could not read the skill's files: {e}")),
            Ok(Err(e)) => return Err(format!("could not read the skill's files: {e}")),
            Err(_) => return Err("the skill's files were still being copied".to_owned()),
        }
    }
    if let Some(host) = host {
        host.remove().await;
    }
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

/// What the trial command of [`try_scratch`] prints when every check passed.
const SCRATCH_MARK: &str = "agentskills-scratch-ready";

/// Runs a trial command the way `run_shell_command` runs one in the sandbox's own scratch space
/// (with the other layers in `layers`), on a small skill made for it, and checks what strict mode
/// promises: the skill's files arrive with their executable bit, `/skill` and `/tmp` are tmpfs
/// bounded in files (and so mounted by the helper, with its bounds), the command holds no
/// capability, and the helper's own mount is gone. `Err` says what did not work.
pub(super) async fn try_scratch(settings: &SandboxSettings, layers: &Layers) -> Result<(), String> {
    let mut layers = layers.clone();
    layers.scratch = true;
    let mut settings = settings.clone();
    settings.mode = SandboxMode::Strict;
    settings.timeout_secs = 10;
    let files = settings.scratch_files;
    let command = format!(
        "set -e\n\
         test \"$(./probe.sh)\" = data\n\
         test \"$(grep -cE '^Cap(Inh|Prm|Eff|Bnd|Amb):[[:space:]]*0+$' /proc/self/status)\" = 5\n\
         test \"$(stat -f -c %c /skill)\" = {files}\n\
         test \"$(stat -f -c %c /tmp)\" = {files}\n\
         ! grep -q ' {HELPER_MOUNT} ' /proc/self/mountinfo\n\
         echo {SCRATCH_MARK}"
    );
    let dir = std::env::temp_dir().join(format!("agentskills-probe-{}", uuid::Uuid::new_v4()));
    let made = dir.clone();
    let create = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new().mode(0o700).create(&made)?;
        std::fs::write(made.join("data.txt"), "data\n")?;
        let script = made.join("probe.sh");
        std::fs::write(&script, "#!/bin/sh\nexec cat data.txt\n")?;
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|made| made.map_err(|e| format!("could not make the trial skill: {e}")));
    let outcome = match create {
        Ok(()) => {
            run(
                &settings,
                &layers,
                layers.run_as_uid,
                &dir,
                &command,
                std::future::pending(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    let outcome = outcome?;
    if outcome.exit_code == Some(0) && outcome.stdout.trim_end() == SCRATCH_MARK {
        return Ok(());
    }
    let said = format!("{} {}", outcome.stdout.trim(), outcome.stderr.trim());
    Err(format!(
        "a trial command failed ({}): {}",
        outcome
            .exit_code
            .map_or_else(|| "killed".to_owned(), |c| format!("exit code {c}")),
        said.trim()
    ))
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

/// A command's scratch copy on the host, for when the sandbox cannot make its own: a private
/// folder (`0700`, under the temporary folder) holding `skill/`, a copy of the skill's files, and
/// `tmp/`; given to the sandbox's user, removed when the command ends (or when dropped).
#[derive(Debug)]
struct HostScratch {
    root: PathBuf,
    /// Whether dropping it removes the folder (`remove` has not taken that over).
    armed: bool,
}

impl HostScratch {
    async fn create(
        settings: &SandboxSettings,
        skill_dir: &Path,
        owner: Option<u32>,
    ) -> Result<HostScratch, String> {
        let scratch = HostScratch {
            root: std::env::temp_dir().join(format!("agentskills-run-{}", uuid::Uuid::new_v4())),
            armed: true,
        };
        let (bytes, entries) = (settings.scratch_bytes, settings.scratch_files);
        let skill_dir = skill_dir.to_owned();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&scratch.root)?;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(scratch.tmp())?;
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(scratch.skill())?;
            files::copy_for_command(&skill_dir, &scratch.skill(), bytes, entries)?;
            if let Some(uid) = owner {
                chown_tree(&scratch.root, uid)?;
            }
            Ok::<HostScratch, std::io::Error>(scratch)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not make the command's copy of the skill: {e}"))
    }

    fn skill(&self) -> PathBuf {
        self.root.join("skill")
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes the folder on the blocking pool (it may hold as much as the command wrote).
    async fn remove(mut self) {
        self.armed = false;
        let root = std::mem::take(&mut self.root);
        let _ = tokio::task::spawn_blocking(move || remove_scratch(&root)).await;
    }
}

impl Drop for HostScratch {
    fn drop(&mut self) {
        if self.armed {
            remove_scratch(&self.root);
        }
    }
}

/// Removes a scratch folder. A command may have taken the permissions off its folders (as the
/// same user, when the server is not root): they are given back, then the removal is tried again.
/// A leftover is logged; it holds nothing but that command's copy.
fn remove_scratch(root: &Path) {
    if std::fs::remove_dir_all(root).is_ok() || !root.exists() {
        return;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(root) {
        tracing::warn!(folder = %root.display(), error = %e, "could not remove a command's scratch folder");
    }
}

/// Gives a scratch folder (made by the server, so holding no symlink) to the user id the command
/// runs as.
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
/// (if it works), then the helper again inside (the scratch space, Landlock, if they work), then
/// `sh -c`; the layers that are missing are left out. Off: `sh -c` alone. `host` is the command's
/// scratch copy on the host, when the sandbox does not make one itself.
fn build(
    settings: &SandboxSettings,
    layers: &Layers,
    uid: Option<u32>,
    host: Option<&HostScratch>,
    command: &str,
    confined: bool,
) -> std::process::Command {
    let shell: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), command.into()];
    let bwrap = layers.bwrap.as_ref().filter(|_| confined);
    let helper = layers.helper.as_ref().filter(|_| confined);
    let landlock = confined && layers.landlock;
    let in_sandbox = host.is_none();
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
    let (host_skill, host_tmp) = match host {
        Some(host) => (host.skill(), host.tmp()),
        None => (PathBuf::from("/"), PathBuf::from("/nonexistent")),
    };
    let limits = Limits::from(settings).list();
    // In the sandbox's scratch space, the file size limit is set inside, after the skill's own
    // files are unpacked: it bounds what the command writes, not the skill it was given.
    let (outer_limits, inner_limits): (Vec<_>, Vec<_>) = limits
        .into_iter()
        .partition(|(name, _)| !in_sandbox || *name != Limit::Fsize.name());
    let mut argv: Vec<OsString> = Vec::new();
    // The helper comes into bubblewrap as a descriptor it opened before leaving root, so the
    // sandbox's user need not reach its folder.
    let helper_inside = helper.is_some() && bwrap.is_some() && (landlock || in_sandbox);
    if let Some(helper) = helper {
        argv.extend([helper.into(), "sandbox-init".into()]);
        if helper_inside {
            argv.extend(["--pass".into(), helper.into()]);
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
        for (name, value) in &outer_limits {
            argv.extend(["--rlimit".into(), format!("{name}={value}").into()]);
        }
        if landlock && bwrap.is_none() {
            argv.extend(landlock_args(&host_skill, &host_tmp));
        }
        argv.push("--".into());
    }
    if let Some(bwrap) = bwrap {
        argv.push(bwrap.into());
        argv.extend(bwrap_args(
            settings,
            host.map(HostScratch::skill).as_deref(),
            helper_inside,
        ));
        argv.push("--".into());
        if helper_inside {
            argv.extend([HELPER_MOUNT.into(), "sandbox-init".into()]);
            if in_sandbox {
                let skill = Tmpfs {
                    bytes: settings.scratch_bytes,
                    files: settings.scratch_files,
                    path: SKILL_MOUNT.into(),
                };
                let tmp = Tmpfs {
                    bytes: settings.tmp_bytes,
                    files: settings.scratch_files,
                    path: "/tmp".into(),
                };
                argv.extend([
                    "--tmpfs".into(),
                    skill.spec(),
                    "--tmpfs".into(),
                    tmp.spec(),
                    "--unpack".into(),
                    SKILL_MOUNT.into(),
                    "--chdir".into(),
                    SKILL_MOUNT.into(),
                    "--detach".into(),
                    HELPER_MOUNT.into(),
                ]);
                for (name, value) in &inner_limits {
                    argv.extend(["--rlimit".into(), format!("{name}={value}").into()]);
                }
                argv.push("--drop-caps".into());
            }
            if landlock {
                argv.extend(landlock_args(Path::new(SKILL_MOUNT), Path::new("/tmp")));
            }
            argv.push("--".into());
        }
    }
    argv.extend(shell);
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        // Not the stored skill's folder: the command never starts there.
        .current_dir(&host_skill)
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
        .stderr(Stdio::piped());
    if helper.is_none() {
        // Its own group, so that killing the group takes what it started; with the helper, the
        // helper starts a new session (and group) itself, which bubblewrap stays in.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
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

/// The devices a command gets (bubblewrap's `--dev` would add a devpts, which it can mount only
/// by nesting a second user namespace; the helper could then not mount the scratch space).
const DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// bubblewrap's arguments. `host_skill` is the command's scratch copy on the host, bound on
/// `/skill`; without it, `/skill` and `/tmp` are left for the helper inside to mount, which
/// keeps `CAP_SYS_ADMIN` (and `CAP_SETPCAP`, to drop its bounding set) for that, in the
/// sandbox's own user namespace, and drops them before the command runs. `helper` binds the
/// helper (descriptor 0 of the outer helper's `--pass`) inside.
fn bwrap_args(
    settings: &SandboxSettings,
    host_skill: Option<&Path>,
    helper: bool,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    // No `--new-session`: the helper made a new session already, which bubblewrap must stay in
    // for the server to kill it with its group.
    push(&["--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]);
    if host_skill.is_none() {
        push(&["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP"]);
    }
    push(&[
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
    args.extend(["--proc", "/proc", "--dir", "/dev"].map(OsString::from));
    for device in DEVICES {
        args.extend(["--dev-bind-try".into(), device.into(), device.into()]);
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        args.extend(["--symlink".into(), target.into(), link.into()]);
    }
    match host_skill {
        Some(skill) => {
            args.extend(
                ["--size", &settings.tmp_bytes.to_string(), "--tmpfs", "/tmp"].map(OsString::from),
            );
            args.extend(["--bind".into(), skill.into(), SKILL_MOUNT.into()]);
        }
        None => args.extend(["--dir", "/tmp", "--dir", SKILL_MOUNT].map(OsString::from)),
    }
    if helper {
        args.extend(["--ro-bind-fd".into(), "@fd0".into(), HELPER_MOUNT.into()]);
    }
    // The root itself is a tmpfs bubblewrap made, writable by the sandbox's user and bounded by
    // nothing: read-only, nothing can be written beside `/skill` and `/tmp`.
    args.extend(["--remount-ro", "/", "--chdir", SKILL_MOUNT].map(OsString::from));
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
