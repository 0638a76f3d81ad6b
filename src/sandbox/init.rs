//! `agentskills-mcp sandbox-init`: a small step that restricts itself, then becomes the next
//! program. The server runs it twice per command:
//! - outside, before bubblewrap: `--die-with-parent` (killed if the server dies) and the resource
//!   limits (`--rlimit cpu=30`, …), which bubblewrap and everything below inherit;
//! - inside, after bubblewrap has built the sandbox (Landlock forbids the mounts bubblewrap makes,
//!   so it cannot come first), holding only the `CAP_SYS_ADMIN` and `CAP_SETPCAP` bubblewrap left
//!   it in the sandbox's own user namespace: it mounts the command's scratch space (`--tmpfs`: a
//!   tmpfs bounded in bytes and in files, on `/skill` and `/tmp`), unpacks the skill's files into
//!   it from the archive the server writes to its standard input (`--unpack`; standard input is
//!   then `/dev/null`), moves into it (`--chdir`), takes its own executable's mount out of sight
//!   (`--detach`: its host path would show in `/proc/self/mountinfo`), sets the limits that must
//!   not bind the unpacking (`--rlimit fsize=…`), drops every capability (`--drop-caps`), then
//!   applies Landlock, with `--ro PATH` (read and execute beneath it) and `--rw PATH` (everything
//!   beneath it), nothing else on the file system, no TCP bind or connect, no signals to and no
//!   abstract Unix sockets of processes outside. Landlock is applied in hard-requirement mode
//!   (ABI 6): a kernel that cannot enforce every rule makes the run fail, never run with fewer
//!   rules.
//!
//! Doing this in a process of its own keeps the server free of `unsafe` (no code between `fork`
//! and `exec`).
//!
//! ```text
//! agentskills-mcp sandbox-init --die-with-parent --rlimit nproc=64 -- bwrap … -- \
//!     /run/agentskills-sandbox-init sandbox-init --tmpfs 67108864:4096:/skill --unpack /skill \
//!     --chdir /skill --detach /run/agentskills-sandbox-init --drop-caps --ro /usr --rw /skill \
//!     -- /bin/sh -c 'echo hi'
//! ```

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use std::os::fd::IntoRawFd as _;

use rustix::fs::{Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use rustix::process::{Resource, Rlimit, Signal, WaitOptions};
use rustix::thread::{CapabilitySet, CapabilitySets};

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
    /// tmpfs file systems to mount, bounded in bytes and in files (inodes).
    pub tmpfs: Vec<Tmpfs>,
    /// The folder to unpack the tar archive on standard input into; standard input is then
    /// `/dev/null`.
    pub unpack: Option<PathBuf>,
    /// The working directory to move to once the mounts are made.
    pub chdir: Option<PathBuf>,
    /// Mounts to detach (lazily), so that their sources do not show.
    pub detach: Vec<PathBuf>,
    /// Drop every capability (effective, permitted, inheritable, ambient, bounding) and set
    /// `no_new_privs` before the command runs.
    pub drop_caps: bool,
    pub rlimits: Vec<(Limit, u64)>,
    /// Landlock applies when either list is non-empty.
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
    pub command: Vec<OsString>,
}

/// A tmpfs that `--tmpfs BYTES:FILES:PATH` mounts on `PATH`: at most `bytes` of content and
/// `files` inodes (files and folders), so that neither data nor millions of empty files (which
/// are kernel memory) can grow without bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub bytes: u64,
    pub files: u64,
    pub path: PathBuf,
}

impl Tmpfs {
    /// The argument of `--tmpfs`.
    pub fn spec(&self) -> OsString {
        let mut spec = OsString::from(format!("{}:{}:", self.bytes, self.files));
        spec.push(&self.path);
        spec
    }

    fn parse(spec: &std::ffi::OsStr) -> Option<Tmpfs> {
        let spec = spec.to_str()?;
        let (bytes, rest) = spec.split_once(':')?;
        let (files, path) = rest.split_once(':')?;
        let (bytes, files) = (bytes.parse().ok()?, files.parse().ok()?);
        // tmpfs reads 0 as "no limit": never what is meant here.
        (bytes > 0 && files > 0 && path.starts_with('/')).then(|| Tmpfs {
            bytes,
            files,
            path: path.into(),
        })
    }
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
    /// Parses the flags described in the module's documentation, then `--` and the command.
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
                Some("--tmpfs") => {
                    let spec = args.next().ok_or("--tmpfs needs BYTES:FILES:PATH")?;
                    let tmpfs = Tmpfs::parse(&spec).ok_or_else(|| {
                        format!("--tmpfs needs BYTES:FILES:/PATH, both at least 1, not {spec:?}")
                    })?;
                    parsed.tmpfs.push(tmpfs);
                }
                Some("--unpack") => {
                    parsed.unpack = Some(args.next().ok_or("--unpack needs a path")?.into());
                }
                Some("--chdir") => {
                    parsed.chdir = Some(args.next().ok_or("--chdir needs a path")?.into());
                }
                Some("--detach") => parsed
                    .detach
                    .push(args.next().ok_or("--detach needs a path")?.into()),
                Some("--drop-caps") => parsed.drop_caps = true,
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
    for tmpfs in &args.tmpfs {
        mount_tmpfs(tmpfs).map_err(|e| {
            format!(
                "sandbox: could not mount the scratch space on {}: {e}",
                tmpfs.path.display()
            )
        })?;
    }
    if let Some(dir) = &args.unpack {
        unpack_stdin(dir).map_err(|e| {
            let full = e.kind() == std::io::ErrorKind::StorageFull;
            format!(
                "sandbox: could not copy the skill's files into {}{}: {e}",
                dir.display(),
                if full {
                    " (they do not fit in its scratch space: sandbox.scratch_bytes, \
                     sandbox.scratch_files)"
                } else {
                    ""
                }
            )
        })?;
    }
    if let Some(dir) = &args.chdir {
        std::env::set_current_dir(dir)
            .map_err(|e| format!("sandbox: could not move to {}: {e}", dir.display()))?;
    }
    for path in &args.detach {
        rustix::mount::unmount(path, UnmountFlags::DETACH)
            .map_err(|e| format!("sandbox: could not detach {}: {e}", path.display()))?;
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
    if args.drop_caps
        && let Err(e) = drop_capabilities()
    {
        return Err(format!("sandbox: could not drop the capabilities: {e}"));
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

/// Mounts a fresh tmpfs on `tmpfs.path`, bounded in bytes and in inodes. `nosuid` and `nodev`, as
/// bubblewrap's own mounts are; not `noexec`, since the skill's scripts run from it. The root
/// folder belongs to this process's user (the sandbox's).
fn mount_tmpfs(tmpfs: &Tmpfs) -> rustix::io::Result<()> {
    let options = std::ffi::CString::new(format!(
        "size={},nr_inodes={},mode=0755",
        tmpfs.bytes, tmpfs.files
    ))
    .map_err(|_| Errno::INVAL)?;
    rustix::mount::mount(
        "tmpfs",
        &tmpfs.path,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        options.as_c_str(),
    )
}

/// Unpacks the tar archive on standard input into `dir`: the skill's folders and regular files,
/// with their executable bits (the archive holds nothing else: the server wrote it). Then reads
/// standard input to its end, so the server's writer is never left blocked, and replaces it with
/// `/dev/null`, which the command gets as today.
fn unpack_stdin(dir: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(std::io::stdin().lock());
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(false);
    archive.unpack(dir)?;
    let mut stdin = archive.into_inner();
    std::io::copy(&mut stdin, &mut std::io::sink())?;
    drop(stdin);
    let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(())
}

/// Drops every capability this process holds in the sandbox's user namespace: the bounding set
/// first (which needs `CAP_SETPCAP`, so while it is still effective), then the ambient set, then
/// the effective, permitted and inheritable sets; and sets `no_new_privs`, so that nothing the
/// command executes (a set-user-id file, a file with capabilities) can bring any back.
fn drop_capabilities() -> rustix::io::Result<()> {
    for bit in 0..u64::BITS {
        let capability = CapabilitySet::from_bits_retain(1 << bit);
        match rustix::thread::capability_is_in_bounding_set(capability) {
            Ok(true) => rustix::thread::remove_capability_from_bounding_set(capability)?,
            Ok(false) => {}
            // Past the last capability this kernel knows.
            Err(Errno::INVAL) => break,
            Err(e) => return Err(e),
        }
    }
    rustix::thread::clear_ambient_capability_set()?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )?;
    rustix::thread::set_no_new_privs(true)
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

    #[test]
    fn scratch_arguments_parse() {
        let args = InitArgs::parse(
            [
                "--tmpfs",
                "1024:16:/skill",
                "--tmpfs",
                "2048:8:/tmp",
                "--unpack",
                "/skill",
                "--chdir",
                "/skill",
                "--detach",
                "/run/helper",
                "--drop-caps",
                "--",
                "/bin/true",
            ]
            .map(OsString::from),
        )
        .unwrap();
        let skill = Tmpfs {
            bytes: 1024,
            files: 16,
            path: "/skill".into(),
        };
        assert_eq!(skill.spec(), "1024:16:/skill");
        assert_eq!(
            args.tmpfs,
            [
                skill,
                Tmpfs {
                    bytes: 2048,
                    files: 8,
                    path: "/tmp".into()
                }
            ]
        );
        assert_eq!(args.unpack, Some(PathBuf::from("/skill")));
        assert_eq!(args.chdir, Some(PathBuf::from("/skill")));
        assert_eq!(args.detach, [PathBuf::from("/run/helper")]);
        assert!(args.drop_caps);
        // Zero is "no limit" to tmpfs, and a relative path is a mistake: both refused.
        for bad in [
            "0:16:/skill",
            "1024:0:/skill",
            "1024:16:skill",
            "x:16:/skill",
            "1024",
        ] {
            assert!(
                InitArgs::parse(["--tmpfs", bad, "--", "x"].map(OsString::from)).is_err(),
                "{bad}"
            );
        }
    }
}
