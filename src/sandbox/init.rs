//! `agentskills-mcp sandbox-init`: a small step that restricts itself, then becomes the next
//! program. The server runs it twice per command:
//! - outside, before bubblewrap: `--die-with-parent` (killed if the server dies) and the resource
//!   limits (`--rlimit cpu=30`, …), which bubblewrap and everything below inherit;
//! - inside, after bubblewrap has built the sandbox (Landlock forbids the mounts bubblewrap makes,
//!   so it cannot come first): Landlock, with `--ro PATH` (read and execute beneath it) and
//!   `--rw PATH` (everything beneath it), nothing else on the file system, no TCP bind or connect,
//!   no signals to and no abstract Unix sockets of processes outside. Landlock is applied in
//!   hard-requirement mode (ABI 6): a kernel that cannot enforce every rule makes the run fail,
//!   never run with fewer rules.
//!
//! Doing this in a process of its own keeps the server free of `unsafe` (no code between `fork`
//! and `exec`).
//!
//! ```text
//! agentskills-mcp sandbox-init --die-with-parent --rlimit nproc=64 -- bwrap … -- \
//!     /run/agentskills-sandbox-init sandbox-init --ro /usr --rw /skill -- /bin/sh -c 'echo hi'
//! ```

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use std::os::fd::IntoRawFd as _;

use rustix::fs::{Gid, Mode, OFlags, Uid};
use rustix::process::{Resource, Rlimit, Signal, WaitOptions};

/// What `sandbox-init` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InitArgs {
    /// Paths to open (as the caller, before dropping privileges) and hand to the command as
    /// descriptors: `@fd0`, `@fd1`, … in the command become their numbers.
    pub pass: Vec<PathBuf>,
    /// The user and group id to become (from root).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub die_with_parent: bool,
    /// Start a new session (and process group, led by this process): the server kills the whole
    /// group, bubblewrap included, and the command has no controlling terminal.
    pub new_session: bool,
    /// Run the command as a child and wait for it and for everything it leaves behind (as a
    /// subreaper), instead of becoming it.
    pub reap: bool,
    pub rlimits: Vec<(Limit, u64)>,
    /// Landlock applies when either list is non-empty.
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
    pub command: Vec<OsString>,
}

/// A resource limit `--rlimit` sets (soft and hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Cpu,
    Data,
    Fsize,
    Nofile,
    Nproc,
    Core,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Cpu => "cpu",
            Limit::Data => "data",
            Limit::Fsize => "fsize",
            Limit::Nofile => "nofile",
            Limit::Nproc => "nproc",
            Limit::Core => "core",
        }
    }

    fn parse(name: &str) -> Option<Limit> {
        [
            Limit::Cpu,
            Limit::Data,
            Limit::Fsize,
            Limit::Nofile,
            Limit::Nproc,
            Limit::Core,
        ]
        .into_iter()
        .find(|l| l.name() == name)
    }

    fn resource(self) -> Resource {
        match self {
            Limit::Cpu => Resource::Cpu,
            Limit::Data => Resource::Data,
            Limit::Fsize => Resource::Fsize,
            Limit::Nofile => Resource::Nofile,
            Limit::Nproc => Resource::Nproc,
            Limit::Core => Resource::Core,
        }
    }
}

impl InitArgs {
    /// Parses `--die-with-parent`, `--rlimit NAME=VALUE`, `--ro PATH`, `--rw PATH`, then `--`
    /// and the command.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<InitArgs, String> {
        let mut parsed = InitArgs::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--die-with-parent") => parsed.die_with_parent = true,
                Some("--reap") => parsed.reap = true,
                Some("--new-session") => parsed.new_session = true,
                Some("--pass") => parsed
                    .pass
                    .push(args.next().ok_or("--pass needs a path")?.into()),
                Some(flag @ ("--uid" | "--gid")) => {
                    let id = args
                        .next()
                        .and_then(|v| v.to_str().and_then(|v| v.parse().ok()))
                        .ok_or_else(|| format!("{flag} needs a number"))?;
                    if flag == "--uid" {
                        parsed.uid = Some(id);
                    } else {
                        parsed.gid = Some(id);
                    }
                }
                Some("--rlimit") => {
                    let spec = args.next().ok_or("--rlimit needs NAME=VALUE")?;
                    let spec = spec.to_str().ok_or("--rlimit: not UTF-8")?;
                    let (name, value) = spec.split_once('=').ok_or("--rlimit needs NAME=VALUE")?;
                    let limit =
                        Limit::parse(name).ok_or_else(|| format!("unknown limit {name}"))?;
                    let value = value.parse().map_err(|_| format!("bad value for {name}"))?;
                    parsed.rlimits.push((limit, value));
                }
                Some("--ro") => parsed
                    .read_only
                    .push(args.next().ok_or("--ro needs a path")?.into()),
                Some("--rw") => parsed
                    .read_write
                    .push(args.next().ok_or("--rw needs a path")?.into()),
                Some("--") => {
                    parsed.command = args.collect();
                    break;
                }
                _ => return Err(format!("unexpected argument {arg:?}")),
            }
        }
        if parsed.command.is_empty() {
            return Err("no command after --".to_owned());
        }
        Ok(parsed)
    }
}

/// Restricts this process and runs the command: in its place, or (`--reap`) as a child whose exit
/// code (128 + signal for a signal) it returns once the child and every process orphaned below it
/// are gone. `Err` says why the command could not run.
pub fn run(args: &InitArgs) -> Result<u8, String> {
    if args.new_session {
        rustix::process::setsid()
            .map_err(|e| format!("sandbox: could not start a new session: {e}"))?;
    }
    // Opened while still privileged (the data folder is the server's alone), kept across exec.
    let mut passed = Vec::new();
    for path in &args.pass {
        match rustix::fs::open(path, OFlags::PATH, Mode::empty()) {
            Ok(fd) => passed.push(fd.into_raw_fd().to_string()),
            Err(e) => return Err(format!("sandbox: could not open {}: {e}", path.display())),
        }
    }
    if let Err(e) = drop_privileges(args.uid, args.gid) {
        return Err(format!(
            "sandbox: could not change to the sandbox's user: {e}"
        ));
    }
    // After the change of user, which clears it.
    if args.die_with_parent
        && let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
    {
        return Err(format!(
            "sandbox: could not tie the command to the server: {e}"
        ));
    }
    for &(limit, value) in &args.rlimits {
        let rlimit = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        if let Err(e) = rustix::process::setrlimit(limit.resource(), rlimit) {
            return Err(format!(
                "sandbox: could not set the {} limit: {e}",
                limit.name()
            ));
        }
    }
    if (!args.read_only.is_empty() || !args.read_write.is_empty())
        && let Err(e) = restrict(args)
    {
        return Err(format!("sandbox: Landlock could not be applied: {e}"));
    }
    close_inherited(&passed);
    let argv: Vec<OsString> = args
        .command
        .iter()
        .map(|arg| {
            arg.to_str()
                .and_then(|a| a.strip_prefix("@fd"))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| passed.get(n))
                .map_or_else(|| arg.clone(), OsString::from)
        })
        .collect();
    let mut command = std::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    if args.reap {
        return reap(command);
    }
    let e = command.exec();
    Err(format!("sandbox: could not run {:?}: {e}", args.command[0]))
}

/// Runs `command` as a child, as the subreaper of everything below it: the processes it orphans
/// come back here and are waited for, so none lingers (as a zombie that still counts against
/// the process limit) however slowly the machine's own init reaps.
fn reap(mut command: std::process::Command) -> Result<u8, String> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| format!("sandbox: could not become a subreaper: {e}"))?;
    let child = command
        .spawn()
        .map_err(|e| format!("sandbox: could not run {:?}: {e}", command.get_program()))?;
    let main = child.id();
    let mut code = 1u8;
    // Until no child is left (ECHILD).
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::empty()) {
        if u32::try_from(pid.as_raw_nonzero().get()).is_ok_and(|p| p == main) {
            code = match (status.exit_status(), status.terminating_signal()) {
                (Some(c), _) => u8::try_from(c).unwrap_or(1),
                (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
                (None, None) => 1,
            };
        }
    }
    Ok(code)
}

/// Marks every descriptor but 0, 1, 2 and the passed ones close-on-exec: whatever the server
/// inherited from its own parent must not reach the command.
fn close_inherited(passed: &[String]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd: &i32| *fd > 2 && !passed.iter().any(|p| *p == fd.to_string()))
        .collect();
    for fd in fds {
        // The directory's own descriptor is among them and already gone: an error is expected.
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}

/// Becomes `uid`/`gid` with no supplementary groups (this process has one thread, so the
/// thread's credentials are the process's).
fn drop_privileges(uid: Option<u32>, gid: Option<u32>) -> rustix::io::Result<()> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    rustix::thread::set_thread_groups(&[])?;
    if let Some(gid) = gid {
        let gid = Gid::from_raw(gid);
        rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    }
    if let Some(uid) = uid {
        let uid = Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    }
    // Changing user made this process undumpable, which makes `/proc/self` root's: bubblewrap
    // could then not read the descriptors passed to it (`/proc/self/fd/N`). Nothing secret is
    // left in this process.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)?;
    Ok(())
}

fn restrict(args: &InitArgs) -> Result<(), landlock::RulesetError> {
    let abi = ABI::V6;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(
            &args.read_only,
            AccessFs::from_read(abi),
        ))?
        .add_rules(path_beneath_rules(
            &args.read_write,
            AccessFs::from_all(abi),
        ))?
        .restrict_self()?;
    // Hard requirement: anything short of full enforcement is an error above, never a status.
    debug_assert_eq!(status.ruleset, landlock::RulesetStatus::FullyEnforced);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let args = InitArgs::parse(
            [
                "--die-with-parent",
                "--rlimit",
                "nproc=64",
                "--ro",
                "/usr",
                "--rw",
                "/skill",
                "--",
                "/bin/sh",
                "-c",
                "echo hi",
            ]
            .map(OsString::from),
        )
        .unwrap();
        assert!(args.die_with_parent);
        assert_eq!(args.rlimits, [(Limit::Nproc, 64)]);
        assert_eq!(args.read_only, [PathBuf::from("/usr")]);
        assert_eq!(args.read_write, [PathBuf::from("/skill")]);
        assert_eq!(args.command.len(), 3);
        assert!(InitArgs::parse(["--ro"].map(OsString::from)).is_err());
        assert!(InitArgs::parse(["--ro", "/usr"].map(OsString::from)).is_err());
        assert!(InitArgs::parse(["--what"].map(OsString::from)).is_err());
        assert!(InitArgs::parse(["--rlimit", "heap=1", "--", "x"].map(OsString::from)).is_err());
        assert!(InitArgs::parse(["--rlimit", "cpu=x", "--", "x"].map(OsString::from)).is_err());
    }
}
