//! The skill folder on disk: listing it, reading one file without ever following a symlink out of
//! it, writing a new version in a staging folder and swapping it in atomically, removing it, and
//! handing a copy of it to a command (`run_shell_command` runs in a scratch copy: a tar archive
//! for the sandbox to unpack, or a copy in a host folder).
//!
//! Skill folders are written only through [`write_staged`], which creates directories and regular
//! files and nothing else, so a symlink or a special file below a skill folder is never expected.
//! Readers still refuse them (and never follow them) so that one planted by other means cannot
//! expose a file outside the skill.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::manifest::{self, Manifest, ManifestError};
use super::{Cancel, Warning};
use crate::domain::SkillPath;

/// The name of the manifest every skill has at its root.
pub const SKILL_MD: &str = "SKILL.md";

/// The prefix of the hidden name a skill folder gets just before it is removed.
const REMOVING_PREFIX: &str = ".removing-";

/// One regular file of a skill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the skill folder, `/` between components.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
    /// Whether the owner may execute it (its mode has `u+x`).
    pub executable: bool,
}

/// The executable bits an upload states, by a file's path in its skill (a zip made on Unix
/// states one per entry; files sent as form parts state none).
pub type ExecBits = std::collections::HashMap<String, bool>;

/// Size and count caps for one skill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_skill_bytes: u64,
    pub max_skill_files: usize,
}

/// Why [`read_beneath`] gave no content.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no such file in this skill")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
    /// A symlink somewhere on the path (or a path that would leave the skill folder).
    #[error("the path goes through a symbolic link, which is never followed")]
    Symlink,
    #[error("the file is {size} bytes, more than the limit")]
    TooLarge { size: u64 },
    #[error(transparent)]
    Io(io::Error),
}

/// Why an upload (files or a zip archive) was refused. Every variant but [`UploadError::Io`] is
/// the client's fault (a 4xx); `Io` is a server-side failure (disk full, permissions) and
/// should be reported as such.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{path:?} is not an accepted file path: it {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path:?} is larger than the limit of {limit} bytes per file")]
    FileTooLarge { path: String, limit: u64 },
    #[error("the skill is larger than the limit of {limit} bytes")]
    SkillTooLarge { limit: u64 },
    #[error("the skill has more files than the limit of {limit}")]
    TooManyFiles { limit: usize },
    #[error("{path:?} is given more than once")]
    DuplicatePath { path: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "SKILL.md is missing: it must be at the root of the skill (in a zip archive: at its root \
         or inside its one top folder)"
    )]
    MissingSkillMd,
    #[error("{path:?} is not a regular file (symbolic links and special files are not accepted)")]
    NotARegularFile { path: String },
    #[error("the zip archive cannot be read: {0}")]
    Zip(String),
    #[error("the repository cannot be imported: {0}")]
    Repository(String),
    #[error("{path:?} clashes with a folder or file of the same path")]
    Conflict { path: String },
    #[error("the skill could not be written: {0}")]
    Io(#[from] io::Error),
    #[error(
        "{first:?} and {second:?} are the same name written two ways (Unicode NFC and NFD): a file \
         system that normalizes names would keep only one, and they look the same; rename one"
    )]
    NameClash { first: String, second: String },
    #[error("the request was given up before its upload finished")]
    Cancelled,
}

impl UploadError {
    /// A stable kebab-case code for API responses.
    pub fn code(&self) -> &'static str {
        match self {
            UploadError::InvalidPath { .. } => "invalid-path",
            UploadError::FileTooLarge { .. } => "file-too-large",
            UploadError::SkillTooLarge { .. } => "skill-too-large",
            UploadError::TooManyFiles { .. } => "too-many-files",
            UploadError::DuplicatePath { .. } => "duplicate-path",
            UploadError::Manifest(_) => "invalid-skill-md",
            UploadError::MissingSkillMd => "missing-skill-md",
            UploadError::NotARegularFile { .. } => "not-a-regular-file",
            UploadError::Zip(_) => "invalid-zip",
            UploadError::Repository(_) => "invalid-repository",
            UploadError::Conflict { .. } => "path-conflict",
            UploadError::Io(_) => "io-error",
            UploadError::NameClash { .. } => "path-collision",
            UploadError::Cancelled => "cancelled",
        }
    }

    /// False for [`UploadError::Io`], the server's failure, and [`UploadError::Cancelled`], which
    /// nobody is waiting for.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, UploadError::Io(_) | UploadError::Cancelled)
    }
}

/// Whether `e` says there is no room left: the file system is full (ENOSPC) or the data
/// directory's owner is over a disk quota (EDQUOT). Callers report these apart from other I/O
/// failures, since they are the server's condition rather than a bug, and pass once space is freed.
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Every regular file below `skill_dir`, sorted by path. Symlinks (to files or folders) and
/// special files are skipped, never followed; so are names that are not UTF-8, which no upload
/// can create.
pub fn scan(skill_dir: &Path) -> io::Result<Vec<FileEntry>> {
    let root = open_dir(skill_dir)?;
    let mut entries = Vec::new();
    for node in list_tree(root.as_fd())? {
        if node.is_dir {
            continue;
        }
        let (mut file, _) =
            match open_beneath(root.as_fd(), &node.path, FILE_FLAGS).and_then(regular_file) {
                Ok(opened) => opened,
                // Changed between listing and opening: list what is there now.
                Err(ReadError::NotFound | ReadError::NotAFile | ReadError::Symlink) => continue,
                Err(ReadError::TooLarge { .. }) => continue,
                Err(ReadError::Io(e)) => return Err(e),
            };
        let (size, sha256) = hash(&mut file)?;
        let executable = rustix::fs::fstat(&file)
            .map(|stat| stat.st_mode & 0o100 != 0)
            .map_err(io::Error::from)?;
        entries.push(FileEntry {
            path: node.path,
            size,
            sha256,
            executable,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// The content of one file of the skill, at most `max_bytes` of it.
///
/// The file is opened relative to the skill folder with `openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS)`, or component by component with `O_NOFOLLOW` where the kernel lacks
/// openat2, so a symlink anywhere on the path is refused, even one that points inside the skill.
pub fn read_beneath(
    skill_dir: &Path,
    path: &SkillPath,
    max_bytes: u64,
) -> Result<Vec<u8>, ReadError> {
    let root = open_dir(skill_dir).map_err(|e| match read_error_from_io(e) {
        // `O_DIRECTORY | O_NOFOLLOW` on a symlink reports ENOTDIR.
        ReadError::NotFound if fs::symlink_metadata(skill_dir).is_ok_and(|m| m.is_symlink()) => {
            ReadError::Symlink
        }
        other => other,
    })?;
    let fd = open_beneath(root.as_fd(), path.as_str(), FILE_FLAGS)?;
    read_capped(fd, max_bytes)
}

/// Writes the folders and regular files of `skill_dir` to `out` as a tar archive, for the sandbox
/// to unpack into a command's scratch space. Each entry keeps its modification time and whether
/// it is executable (mode 0755, else 0644; folders 0755); owners and other mode bits are not
/// carried over. Symlinks and special files are left out and never followed, as everywhere in
/// this module. A file that shrinks while it is being written is padded with zeros (one that
/// grows is cut), so the archive always matches its headers.
pub fn write_archive(skill_dir: &Path, out: impl Write) -> io::Result<()> {
    let root = open_dir(skill_dir)?;
    let mut builder = tar::Builder::new(out);
    for node in list_tree(root.as_fd())? {
        let mut header = tar::Header::new_gnu();
        if node.is_dir {
            let stat = match open_beneath(root.as_fd(), &node.path, DIR_FLAGS) {
                Ok(fd) => rustix::fs::fstat(&fd)?,
                Err(ReadError::Io(e)) => return Err(e),
                // Not a folder any more: it is not part of the skill.
                Err(_) => continue,
            };
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
            builder.append_data(&mut header, &node.path, io::empty())?;
            continue;
        }
        let (file, stat) = match open_regular(root.as_fd(), &node.path) {
            Ok(opened) => opened,
            Err(ReadError::Io(e)) => return Err(e),
            Err(_) => continue,
        };
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(copy_mode(stat.st_mode));
        header.set_size(size);
        header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
        let exact = file.take(size).chain(io::repeat(0)).take(size);
        builder.append_data(&mut header, &node.path, exact)?;
    }
    builder.into_inner()?.flush()
}

/// Copies the folders and regular files of `skill_dir` into the empty folder `dest` (a command's
/// scratch copy on the host), each file with its executable bits as on disk; never follows a
/// symlink. More than `max_bytes` of content or `max_entries` files and folders is refused with
/// `StorageFull`, as the sandbox's own bounded scratch space would refuse it.
pub fn copy_for_command(
    skill_dir: &Path,
    dest: &Path,
    max_bytes: u64,
    max_entries: u64,
) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let root = open_dir(skill_dir)?;
    let (mut bytes, mut entries) = (0u64, 0u64);
    let too_big = || {
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the skill is larger than a command's scratch space ({max_bytes} bytes, \
                 {max_entries} files and folders)"
            ),
        )
    };
    for node in list_tree(root.as_fd())? {
        entries += 1;
        if entries > max_entries {
            return Err(too_big());
        }
        let target = dest.join(&node.path);
        if node.is_dir {
            fs::DirBuilder::new().mode(0o755).create(&target)?;
            continue;
        }
        let (mut source, stat) = match open_regular(root.as_fd(), &node.path) {
            Ok(opened) => opened,
            Err(ReadError::Io(e)) => return Err(e),
            Err(_) => continue,
        };
        let mode = copy_mode(stat.st_mode);
        let mut copy = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)?;
        let room = max_bytes.saturating_sub(bytes);
        let copied = io::copy(&mut (&mut source).take(room.saturating_add(1)), &mut copy)?;
        bytes = bytes.saturating_add(copied);
        if bytes > max_bytes {
            return Err(too_big());
        }
        // The process's umask may have taken bits off the mode it was created with.
        copy.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The mode a copy of a file gets: executable for everyone if any execute bit is set on disk
/// (as `chmod +x` sets them), otherwise readable by everyone; nothing else is carried over.
fn copy_mode(mode: u32) -> u32 {
    if mode & 0o111 == 0 { 0o644 } else { 0o755 }
}

/// Opens `path` below `root` as a regular file, without following a symlink; with its status.
fn open_regular(root: BorrowedFd<'_>, path: &str) -> Result<(File, rustix::fs::Stat), ReadError> {
    let fd = open_beneath(root, path, FILE_FLAGS)?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| ReadError::Io(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(ReadError::NotAFile);
    }
    Ok((File::from(fd), stat))
}

/// A new version of a skill folder, complete and checked, waiting in the staging folder. Dropped
/// without a commit, it removes itself.
#[derive(Debug)]
pub struct Staged {
    dir: StagingDir,
    manifest: Manifest,
    warnings: Vec<Warning>,
}

impl Staged {
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// The checked front matter of the staged `SKILL.md`. Callers check that its `name` is the
    /// skill's name before they commit.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What is accepted but may not work elsewhere (names that differ only in case).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Moves the staged folder to `target`, which must not exist (`renameat2(RENAME_NOREPLACE)`:
    /// an existing target gives `AlreadyExists` and is left alone). `target` must be on the same
    /// file system as the staging folder.
    pub fn commit_new(mut self, target: &Path) -> io::Result<()> {
        let parent = parent_of(target)?;
        fs::create_dir_all(parent)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.dir.path,
            rustix::fs::CWD,
            target,
            RenameFlags::NOREPLACE,
        )?;
        self.dir.armed = false;
        sync_dir(parent)
    }

    /// Swaps the staged folder with the existing `target` in one step
    /// (`renameat2(RENAME_EXCHANGE)`), then removes the old version. A reader opening files by
    /// their path under `target` gets either the old version or the new, never a mix of one
    /// folder's files with the other's. `target` must exist (`NotFound` otherwise: use
    /// [`Staged::commit_new`]) and be on the same file system as the staging folder.
    pub fn commit_replace(self, target: &Path) -> io::Result<()> {
        let parent = parent_of(target)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.dir.path,
            rustix::fs::CWD,
            target,
            RenameFlags::EXCHANGE,
        )?;
        sync_dir(parent)?;
        // The old version is now at the staging path, still armed: dropping removes it. If that
        // fails the new version is in place all the same, and `clean_staging` sweeps the rest at
        // the next start.
        drop(self);
        Ok(())
    }
}

/// Builds a new version of a skill in a fresh folder under `staging_root`: a copy of `base` (the
/// current skill folder, when there is one: files not uploaded again are kept), then `files`
/// written over it. The result is checked against `limits` and must have a valid `SKILL.md` at its
/// root. `base`, when given, must exist. `staging_root` must be on the same file system as the
/// skill folders.
pub fn write_staged(
    staging_root: &Path,
    base: Option<&Path>,
    files: &[(SkillPath, Vec<u8>)],
    executable: &ExecBits,
    limits: &Limits,
    cancel: &Cancel,
) -> Result<Staged, UploadError> {
    // Refuse what can be refused before anything touches the disk.
    let mut seen = HashSet::with_capacity(files.len());
    for (path, bytes) in files {
        if !seen.insert(path.as_str()) {
            return Err(UploadError::DuplicatePath {
                path: path.to_string(),
            });
        }
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(UploadError::FileTooLarge {
                path: path.to_string(),
                limit: limits.max_file_bytes,
            });
        }
    }
    if files.len() > limits.max_skill_files {
        return Err(UploadError::TooManyFiles {
            limit: limits.max_skill_files,
        });
    }

    fs::create_dir_all(staging_root)?;
    let dir = StagingDir::create(staging_root)?;
    if let Some(base) = base {
        copy_tree(base, &dir.path, cancel)?;
    }
    for (path, bytes) in files {
        cancel.check()?;
        let mode = executable.get(path.as_str()).copied();
        write_file(&dir.path, path, bytes, mode)?;
    }
    cancel.check()?;
    let (manifest, warnings) = check_tree(&dir.path, limits)?;
    sync_dir(staging_root)?;
    Ok(Staged {
        dir,
        manifest,
        warnings,
    })
}

/// Removes everything left in `staging_root` (folders of uploads cut short by a crash, old
/// versions not yet removed). Call it at start-up, before any upload runs. Returns how many
/// entries were removed.
pub fn clean_staging(staging_root: &Path) -> io::Result<usize> {
    remove_entries_where(staging_root, |_| true)
}

/// Removes the entries of `dir` whose names `doomed` picks; a missing `dir` has none.
fn remove_entries_where(dir: &Path, doomed: impl Fn(&str) -> bool) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if doomed(&entry.file_name().to_string_lossy()) {
            remove_any(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes a skill folder. It is first renamed to a hidden sibling (`.removing-…`, never a valid
/// skill name), so a crash midway leaves no half folder under the real name; [`clean_removed`]
/// sweeps such leftovers. A folder that does not exist is already removed.
pub fn remove_skill_dir(dir: &Path) -> io::Result<()> {
    let parent = parent_of(dir)?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a skill folder path"))?;
    let hidden = parent.join(format!("{REMOVING_PREFIX}{name}-{}", random_hex()?));
    match fs::rename(dir, &hidden) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(parent)?;
    fs::remove_dir_all(&hidden)
}

/// The bytes of the files under `dir` (not following symlinks; what cannot be read counts 0)
/// and the latest modification time among `dir` and its entries: how large a user's copies are,
/// and when they were last written.
pub fn folder_usage(dir: &Path) -> (u64, Option<std::time::SystemTime>) {
    let mut bytes = 0u64;
    let mut latest = fs::symlink_metadata(dir).and_then(|m| m.modified()).ok();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if let Ok(modified) = meta.modified() {
                latest = latest.max(Some(modified));
            }
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                bytes = bytes.saturating_add(meta.len());
            }
        }
    }
    (bytes, latest)
}

/// The modification times of `root` and of each of its entries `names` (`None` for one that is
/// missing or cannot be read), not following symlinks. A skill is written by swapping a new folder
/// in and removed by renaming it away, and both change its parent's time, so a process that only
/// reads (`stdio --token`) compares these to notice that the server changed a user's skills.
pub fn modification_times(root: &Path, names: &[String]) -> Vec<Option<std::time::SystemTime>> {
    let time = |path: &Path| fs::symlink_metadata(path).and_then(|m| m.modified()).ok();
    std::iter::once(time(root))
        .chain(names.iter().map(|name| time(&root.join(name))))
        .collect()
}

/// Removes the leftovers of [`remove_skill_dir`] interrupted by a crash from `parent` (a folder
/// holding skill folders). Returns how many were removed.
pub fn clean_removed(parent: &Path) -> io::Result<usize> {
    remove_entries_where(parent, |name| name.starts_with(REMOVING_PREFIX))
}

/// A folder under the staging root, removed on drop while armed.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    armed: bool,
}

impl StagingDir {
    /// A new, empty folder under `staging_root` (created if need be).
    pub fn create(staging_root: &Path) -> io::Result<StagingDir> {
        fs::create_dir_all(staging_root)?;
        let path = staging_root.join(random_hex()?);
        fs::create_dir(&path)?;
        Ok(StagingDir { path, armed: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a file of the skill at `path` goes in this folder, its parent folders made.
    pub fn place(&self, path: &SkillPath) -> io::Result<PathBuf> {
        let target = self.path.join(path.as_str());
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        Ok(target)
    }

    /// The folder, once every file is in it, checked as an upload is (limits, names, `SKILL.md`)
    /// and ready to be committed.
    pub fn finish(self, staging_root: &Path, limits: &Limits) -> Result<Staged, UploadError> {
        let (manifest, warnings) = check_tree(&self.path, limits)?;
        sync_dir(staging_root)?;
        Ok(Staged {
            dir: self,
            manifest,
            warnings,
        })
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if self.armed {
            // Nothing to report to: a leftover is swept by `clean_staging` at the next start.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// 128 random bits as hex: a name no other upload will pick.
fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no parent folder"))
}

fn remove_any(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Flushes a folder's entries (new names, renames) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flags for opening a file to read. `O_NONBLOCK` so that opening a FIFO that slipped in does not
/// hang (it is refused right after by the regular-file check); it changes nothing for regular
/// files. `O_NOCTTY` so that a terminal device never becomes our controlling terminal.
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens a folder given by the caller (a skill folder); its last component must not be a symlink.
fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(dir, DIR_FLAGS, Mode::empty())?)
}

fn read_error_from_io(e: io::Error) -> ReadError {
    match Errno::from_io_error(&e) {
        Some(errno) => read_error(errno),
        None => ReadError::Io(e),
    }
}

fn read_error(errno: Errno) -> ReadError {
    match errno {
        // ENOTDIR: a component on the way is a file, so the path names nothing.
        Errno::NOENT | Errno::NOTDIR => ReadError::NotFound,
        // ELOOP: a symlink met under RESOLVE_NO_SYMLINKS or O_NOFOLLOW. EXDEV: the path would
        // leave the folder (RESOLVE_BENEATH).
        Errno::LOOP | Errno::XDEV => ReadError::Symlink,
        // ENXIO: a socket, or a device with nothing behind it.
        Errno::NXIO => ReadError::NotAFile,
        other => ReadError::Io(other.into()),
    }
}

/// Opens `path` (relative, `/`-separated, no `.`/`..`) below the folder `root` without following
/// any symlink.
fn open_beneath(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> Result<OwnedFd, ReadError> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        // ENOSYS: a kernel before 5.6. EPERM: some container seccomp profiles answer that for
        // system calls they do not know. The walk below is just as strict, only slower.
        Err(Errno::NOSYS | Errno::PERM) => open_by_walking(root, path, flags),
        Err(e) => Err(read_error(e)),
    }
}

/// [`open_beneath`] without openat2: one `openat(O_NOFOLLOW)` per component.
fn open_by_walking(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> Result<OwnedFd, ReadError> {
    let components: Vec<&str> = path.split('/').collect();
    let Some((last, folders)) = components.split_last() else {
        return Err(ReadError::NotFound);
    };
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(ReadError::Symlink);
    }
    let mut current: Option<OwnedFd> = None;
    for folder in folders {
        let at = current.as_ref().map_or(root, |fd| fd.as_fd());
        let next = rustix::fs::openat(at, *folder, DIR_FLAGS, Mode::empty())
            .map_err(|e| walk_error(at, folder, e))?;
        current = Some(next);
    }
    let at = current.as_ref().map_or(root, |fd| fd.as_fd());
    rustix::fs::openat(at, *last, flags, Mode::empty()).map_err(|e| walk_error(at, last, e))
}

/// With `O_DIRECTORY | O_NOFOLLOW`, Linux reports a symlink as ENOTDIR or ELOOP depending on the
/// version; look at the entry itself to tell a symlink from a file in the way.
fn walk_error(at: BorrowedFd<'_>, name: &str, errno: Errno) -> ReadError {
    if errno == Errno::NOTDIR
        && let Ok(stat) = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)
        && FileType::from_raw_mode(stat.st_mode) == FileType::Symlink
    {
        return ReadError::Symlink;
    }
    read_error(errno)
}

/// The opened file if it is a regular file, with its size.
fn regular_file(fd: OwnedFd) -> Result<(File, u64), ReadError> {
    let stat = rustix::fs::fstat(&fd).map_err(|e| ReadError::Io(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(ReadError::NotAFile);
    }
    Ok((File::from(fd), u64::try_from(stat.st_size).unwrap_or(0)))
}

/// Reads a whole regular file, refusing it if it is (or grows while being read to) more than
/// `max_bytes`.
fn read_capped(fd: OwnedFd, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let (file, size) = regular_file(fd)?;
    if size > max_bytes {
        return Err(ReadError::TooLarge { size });
    }
    let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut content)
        .map_err(ReadError::Io)?;
    let read = content.len() as u64;
    if read > max_bytes {
        return Err(ReadError::TooLarge { size: read });
    }
    Ok(content)
}

fn hash(file: &mut File) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// A folder or regular file found below a folder.
struct Node {
    path: String,
    is_dir: bool,
}

/// Every folder and regular file below `root`, parents before their children, never following a
/// symlink. Symlinks, special files and names that are not UTF-8 are left out.
fn list_tree(root: BorrowedFd<'_>) -> io::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    // Folders still to read, by path; reopened from `root` when their turn comes so that a wide
    // tree does not hold one descriptor per pending folder.
    let mut pending: Vec<Option<String>> = vec![None];
    while let Some(folder) = pending.pop() {
        let fd = match &folder {
            None => None,
            Some(path) => match open_beneath(root, path, DIR_FLAGS) {
                Ok(fd) => Some(fd),
                // Replaced by a symlink or removed since it was listed: skip it.
                Err(ReadError::NotFound | ReadError::Symlink | ReadError::NotAFile) => continue,
                Err(ReadError::TooLarge { .. }) => continue,
                Err(ReadError::Io(e)) => return Err(e),
            },
        };
        let at = fd.as_ref().map_or(root, |fd| fd.as_fd());
        let mut dir = Dir::read_from(at)?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let mut file_type = entry.file_type();
            if file_type == FileType::Unknown {
                // Some file systems do not fill d_type.
                file_type = match rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
            }
            let path = match &folder {
                None => name.to_owned(),
                Some(parent) => format!("{parent}/{name}"),
            };
            match file_type {
                FileType::Directory => {
                    nodes.push(Node {
                        path: path.clone(),
                        is_dir: true,
                    });
                    pending.push(Some(path));
                }
                FileType::RegularFile => nodes.push(Node {
                    path,
                    is_dir: false,
                }),
                _ => {}
            }
        }
    }
    Ok(nodes)
}

/// Copies the folders and regular files of `base` into the empty folder `dest`.
fn copy_tree(base: &Path, dest: &Path, cancel: &Cancel) -> Result<(), UploadError> {
    let root = open_dir(base)?;
    for node in list_tree(root.as_fd())? {
        cancel.check()?;
        let target = dest.join(&node.path);
        if node.is_dir {
            fs::create_dir(&target)?;
            continue;
        }
        let mut source =
            match open_beneath(root.as_fd(), &node.path, FILE_FLAGS).and_then(regular_file) {
                Ok((file, _)) => file,
                Err(ReadError::Io(e)) => return Err(e.into()),
                // Not a regular file any more: it is not part of the skill.
                Err(_) => continue,
            };
        let mut copy = File::create_new(&target)?;
        io::copy(&mut source, &mut copy)?;
        // A script stays executable in the new version.
        let mode = rustix::fs::fstat(&source).map_err(io::Error::from)?.st_mode;
        if mode & 0o111 != 0 {
            use std::os::unix::fs::PermissionsExt as _;
            copy.set_permissions(fs::Permissions::from_mode(0o755))?;
        }
        copy.sync_all()?;
    }
    Ok(())
}

/// Writes one file into the staging folder `root`, creating its parent folders. It is executable
/// if `executable` says so; when it says nothing (an upload that carries no modes), a file it
/// replaces keeps its bit and a new one is not executable.
fn write_file(
    root: &Path,
    path: &SkillPath,
    bytes: &[u8],
    executable: Option<bool>,
) -> Result<(), UploadError> {
    let conflict = || UploadError::Conflict {
        path: path.to_string(),
    };
    let mut current = root.to_path_buf();
    let components: Vec<&str> = path.components().collect();
    let Some((name, folders)) = components.split_last() else {
        return Err(UploadError::InvalidPath {
            path: path.to_string(),
            reason: "must not be empty",
        });
    };
    for folder in folders {
        current.push(folder);
        // The staging folder holds only what this module wrote (folders and regular files), so
        // plain path operations cannot be led astray by a symlink here.
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(conflict()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&current)?,
            Err(e) => return Err(e.into()),
        }
    }
    current.push(name);
    let replaced_executable = match fs::symlink_metadata(&current) {
        Ok(meta) if meta.is_dir() => return Err(conflict()),
        Ok(meta) => {
            use std::os::unix::fs::PermissionsExt as _;
            fs::remove_file(&current)?;
            meta.permissions().mode() & 0o111 != 0
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e.into()),
    };
    let mut file = File::create_new(&current)?;
    file.write_all(bytes)?;
    if executable.unwrap_or(replaced_executable) {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o755))?;
    }
    file.sync_all()?;
    Ok(())
}

/// Checks the staged tree against the limits and reads its `SKILL.md`; flushes its folders.
fn check_tree(dir: &Path, limits: &Limits) -> Result<(Manifest, Vec<Warning>), UploadError> {
    let root = open_dir(dir)?;
    let nodes = list_tree(root.as_fd())?;
    let files = nodes.iter().filter(|n| !n.is_dir).map(|n| n.path.as_str());
    let warnings = check_names(files)?;
    let mut count = 0usize;
    let mut total = 0u64;
    let mut has_skill_md = false;
    for node in &nodes {
        if node.is_dir {
            rustix::fs::fsync(open_beneath(root.as_fd(), &node.path, DIR_FLAGS).map_err(io_of)?)
                .map_err(io::Error::from)?;
            continue;
        }
        count += 1;
        if count > limits.max_skill_files {
            return Err(UploadError::TooManyFiles {
                limit: limits.max_skill_files,
            });
        }
        let size = rustix::fs::statat(root.as_fd(), node.path.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)?
            .st_size;
        let size = u64::try_from(size).unwrap_or(0);
        if size > limits.max_file_bytes {
            return Err(UploadError::FileTooLarge {
                path: node.path.clone(),
                limit: limits.max_file_bytes,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_skill_bytes {
            return Err(UploadError::SkillTooLarge {
                limit: limits.max_skill_bytes,
            });
        }
        has_skill_md |= node.path == SKILL_MD;
    }
    rustix::fs::fsync(&root).map_err(io::Error::from)?;
    if !has_skill_md {
        return Err(UploadError::MissingSkillMd);
    }
    let fd = open_beneath(root.as_fd(), SKILL_MD, FILE_FLAGS).map_err(io_of)?;
    let text = read_capped(fd, limits.max_file_bytes).map_err(io_of)?;
    Ok((manifest::parse_bytes(&text)?, warnings))
}

/// Refuses two file paths that are one name once Unicode-normalized (`é` as one code point and
/// as `e` plus an accent: macOS keeps one of them, and nobody can tell them apart on screen);
/// warns about paths that differ only in letter case (an export unpacked on macOS or Windows,
/// which ignore case, keeps only one). Folders are left out: two folders whose names collide
/// are merged there, and their files, if they differ, all survive.
fn check_names<'a>(paths: impl Iterator<Item = &'a str>) -> Result<Vec<Warning>, UploadError> {
    let (clash, warnings) = name_collisions(paths);
    match clash {
        Some(clash) => Err(clash),
        None => Ok(warnings),
    }
}

/// The warnings [`check_names`] gives for a skill already stored, a clash among them (which an
/// earlier release accepted) included, as a warning.
pub fn name_warnings(files: &[FileEntry]) -> Vec<Warning> {
    let (clash, mut warnings) = name_collisions(files.iter().map(|f| f.path.as_str()));
    if let Some(clash) = clash {
        warnings.insert(
            0,
            Warning {
                code: clash.code(),
                field: "files".to_owned(),
                message: clash.to_string(),
            },
        );
    }
    warnings
}

/// The first pair of paths equal once NFC-normalized, and a warning per pair equal once
/// case-folded as well.
fn name_collisions<'a>(
    paths: impl Iterator<Item = &'a str>,
) -> (Option<UploadError>, Vec<Warning>) {
    use unicode_normalization::UnicodeNormalization as _;
    let mut by_nfc: HashMap<String, &str> = HashMap::new();
    let mut by_folded: HashMap<String, &str> = HashMap::new();
    let mut warnings = Vec::new();
    for path in paths {
        let nfc: String = path.nfc().collect();
        let folded = nfc.to_lowercase();
        if let Some(first) = by_nfc.insert(nfc, path) {
            let clash = UploadError::NameClash {
                first: first.to_owned(),
                second: path.to_owned(),
            };
            return (Some(clash), warnings);
        }
        if let Some(first) = by_folded.insert(folded, path) {
            warnings.push(Warning {
                code: "path-case-collision",
                field: "files".to_owned(),
                message: format!(
                    "{first:?} and {path:?} differ only in letter case: unpacked on macOS or \
                     Windows, which ignore case, one would replace the other; rename one of them"
                ),
            });
        }
    }
    (None, warnings)
}

/// A read failure inside the staging folder, which this module wrote itself: whatever it is, it
/// is the server's problem.
fn io_of(e: ReadError) -> UploadError {
    match e {
        ReadError::Io(e) => UploadError::Io(e),
        other => UploadError::Io(io::Error::other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const SKILL: &[u8] = b"---\nname: demo\ndescription: A demo skill.\n---\n# Demo\n";

    fn limits() -> Limits {
        Limits {
            max_file_bytes: 1024 * 1024,
            max_skill_bytes: 4 * 1024 * 1024,
            max_skill_files: 100,
        }
    }

    fn p(s: &str) -> SkillPath {
        SkillPath::parse(s).unwrap()
    }

    fn put(root: &Path, path: &str, content: &[u8]) {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
    }

    /// A skill folder with a file, a nested file, and traps: symlinks and a FIFO.
    fn skill_with_traps() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let skill = tmp.path().join("skill");
        put(&skill, "SKILL.md", SKILL);
        put(&skill, "scripts/run.py", b"print('hi')\n");
        put(&skill, "docs/a/b.md", b"deep");
        symlink("/etc/passwd", skill.join("passwd")).unwrap();
        symlink("SKILL.md", skill.join("inner-link")).unwrap();
        symlink("/etc", skill.join("etc")).unwrap();
        symlink("scripts", skill.join("scripts-link")).unwrap();
        mkfifo(&skill.join("fifo"));
        tmp
    }

    #[test]
    fn scan_lists_regular_files_only_sorted_with_hashes() {
        let tmp = skill_with_traps();
        let entries = scan(&tmp.path().join("skill")).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["SKILL.md", "docs/a/b.md", "scripts/run.py"]);
        let run = &entries[2];
        assert_eq!(run.size, 12);
        assert_eq!(run.sha256, hex::encode(Sha256::digest(b"print('hi')\n")));
        assert!(scan(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn read_beneath_reads_plain_files() {
        let tmp = skill_with_traps();
        let skill = tmp.path().join("skill");
        assert_eq!(
            read_beneath(&skill, &p("SKILL.md"), 1 << 20).unwrap(),
            SKILL
        );
        assert_eq!(read_beneath(&skill, &p("docs/a/b.md"), 4).unwrap(), b"deep");
        assert!(matches!(
            read_beneath(&skill, &p("nope.md"), 1 << 20),
            Err(ReadError::NotFound)
        ));
        assert!(matches!(
            read_beneath(&skill, &p("SKILL.md/x"), 1 << 20),
            Err(ReadError::NotFound)
        ));
        assert!(matches!(
            read_beneath(&tmp.path().join("gone"), &p("SKILL.md"), 1 << 20),
            Err(ReadError::NotFound)
        ));
    }

    #[test]
    fn a_command_gets_the_skills_files_with_their_executable_bits_and_no_traps() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = skill_with_traps();
        let skill = tmp.path().join("skill");
        put(&skill, "dir with space/ünï cödé.txt", b"unicode");
        fs::set_permissions(
            skill.join("scripts/run.py"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;

        // The archive: folders and regular files only, executable or not as on disk.
        let mut archive = Vec::new();
        write_archive(&skill, &mut archive).unwrap();
        let mut entries: Vec<(String, u32, Vec<u8>)> = tar::Archive::new(archive.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mode = e.header().mode().unwrap();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (path, mode, content)
            })
            .collect();
        entries.sort();
        let summary: Vec<(&str, u32)> = entries.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
        assert_eq!(
            summary,
            [
                ("SKILL.md", 0o644),
                ("dir with space", 0o755),
                ("dir with space/ünï cödé.txt", 0o644),
                ("docs", 0o755),
                ("docs/a", 0o755),
                ("docs/a/b.md", 0o644),
                ("scripts", 0o755),
                ("scripts/run.py", 0o755),
            ]
        );
        assert_eq!(entries[7].2, b"print('hi')\n");

        // The host copy: the same tree, the same bits, within the bounds.
        let copy = tmp.path().join("copy");
        fs::create_dir(&copy).unwrap();
        copy_for_command(&skill, &copy, 1 << 20, 100).unwrap();
        assert_eq!(
            scan(&copy).unwrap(),
            scan(&skill).unwrap(),
            "the same files and contents"
        );
        assert_eq!(mode(&copy.join("scripts/run.py")), 0o755);
        assert_eq!(mode(&copy.join("SKILL.md")), 0o644);
        assert!(fs::symlink_metadata(copy.join("passwd")).is_err());
        assert!(fs::symlink_metadata(copy.join("fifo")).is_err());

        // Over either bound: refused as a full disk would be.
        for (bytes, entries) in [(10, 100), (1 << 20, 3)] {
            let over = tempfile::tempdir().unwrap();
            let e = copy_for_command(&skill, over.path(), bytes, entries).unwrap_err();
            assert!(is_storage_full(&e), "{e}");
        }
    }

    /// The same refusals whether openat2 or the component walk does the opening.
    type Content = Result<Vec<u8>, ReadError>;

    fn check_refusals(open: &dyn Fn(&Path, &str) -> Content, skill: &Path) {
        for (path, what) in [
            ("passwd", "symlink out of the skill"),
            ("inner-link", "symlink inside the skill"),
            ("etc/passwd", "symlinked folder out of the skill"),
            ("scripts-link/run.py", "symlinked folder inside the skill"),
        ] {
            assert!(
                matches!(open(skill, path), Err(ReadError::Symlink)),
                "{what}: {:?}",
                open(skill, path)
            );
        }
        assert!(matches!(open(skill, "scripts"), Err(ReadError::NotAFile)));
        assert!(matches!(open(skill, "fifo"), Err(ReadError::NotAFile)));
        assert!(matches!(open(skill, "missing"), Err(ReadError::NotFound)));
        assert_eq!(open(skill, "scripts/run.py").unwrap(), b"print('hi')\n");
    }

    #[test]
    fn read_beneath_never_follows_symlinks_nor_opens_special_files() {
        let tmp = skill_with_traps();
        let skill = tmp.path().join("skill");
        check_refusals(&|dir, path| read_beneath(dir, &p(path), 1 << 20), &skill);
    }

    #[test]
    fn the_fallback_walk_refuses_the_same() {
        let tmp = skill_with_traps();
        let skill = tmp.path().join("skill");
        check_refusals(
            &|dir, path| {
                let root = open_dir(dir).map_err(ReadError::Io)?;
                read_capped(open_by_walking(root.as_fd(), path, FILE_FLAGS)?, 1 << 20)
            },
            &skill,
        );
    }

    #[test]
    fn the_skill_folder_itself_must_not_be_a_symlink() {
        let tmp = skill_with_traps();
        symlink(tmp.path().join("skill"), tmp.path().join("alias")).unwrap();
        assert!(matches!(
            read_beneath(&tmp.path().join("alias"), &p("SKILL.md"), 1 << 20),
            Err(ReadError::Symlink)
        ));
    }

    #[test]
    fn large_files_are_refused_at_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "big.bin", &vec![7u8; 10_000]);
        assert_eq!(
            read_beneath(tmp.path(), &p("big.bin"), 10_000)
                .unwrap()
                .len(),
            10_000
        );
        assert!(matches!(
            read_beneath(tmp.path(), &p("big.bin"), 9_999),
            Err(ReadError::TooLarge { size: 10_000 })
        ));
    }

    fn staging(tmp: &tempfile::TempDir) -> PathBuf {
        tmp.path().join(".staging")
    }

    fn leftovers(dir: &Path) -> usize {
        fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[test]
    fn a_new_skill_is_staged_then_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let files = vec![
            (p("SKILL.md"), SKILL.to_vec()),
            (p("scripts/a/b.sh"), b"echo hi\n".to_vec()),
        ];
        let staged = write_staged(
            &staging(&tmp),
            None,
            &files,
            &ExecBits::new(),
            &limits(),
            &Cancel::default(),
        )
        .unwrap();
        assert_eq!(staged.manifest().name, "demo");
        assert!(staged.dir().join("scripts/a/b.sh").is_file());
        let target = tmp.path().join("skills/user/demo");
        staged.commit_new(&target).unwrap();
        assert_eq!(
            fs::read(target.join("scripts/a/b.sh")).unwrap(),
            b"echo hi\n"
        );
        assert_eq!(leftovers(&staging(&tmp)), 0);

        // A second new skill under the same name is refused and cleaned up.
        let staged = write_staged(
            &staging(&tmp),
            None,
            &files[..1],
            &ExecBits::new(),
            &limits(),
            &Cancel::default(),
        )
        .unwrap();
        let err = staged.commit_new(&target).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(leftovers(&staging(&tmp)), 0);
        assert!(target.join("scripts/a/b.sh").is_file());
    }

    #[test]
    fn an_upload_over_a_skill_replaces_given_files_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("skills/demo");
        put(&target, "SKILL.md", SKILL);
        put(&target, "keep.txt", b"old");
        put(&target, "docs/replace.md", b"old");
        symlink("/etc/passwd", target.join("planted")).unwrap();

        let files = vec![
            (p("docs/replace.md"), b"new".to_vec()),
            (p("docs/added.md"), b"added".to_vec()),
        ];
        let staged = write_staged(
            &staging(&tmp),
            Some(&target),
            &files,
            &ExecBits::new(),
            &limits(),
            &Cancel::default(),
        )
        .unwrap();
        // Hold a file of the old version open across the swap: it keeps the old content.
        let mut old = File::open(target.join("docs/replace.md")).unwrap();
        staged.commit_replace(&target).unwrap();

        let mut was = String::new();
        old.read_to_string(&mut was).unwrap();
        assert_eq!(was, "old");
        assert_eq!(fs::read(target.join("docs/replace.md")).unwrap(), b"new");
        assert_eq!(fs::read(target.join("docs/added.md")).unwrap(), b"added");
        assert_eq!(fs::read(target.join("keep.txt")).unwrap(), b"old");
        assert!(
            fs::symlink_metadata(target.join("planted")).is_err(),
            "symlink copied"
        );
        assert_eq!(leftovers(&staging(&tmp)), 0);
    }

    #[test]
    fn names_that_collide_elsewhere_are_found() {
        let entry = |path: &str| FileEntry {
            path: path.to_owned(),
            size: 0,
            sha256: String::new(),
            executable: false,
        };
        let fine = [entry("SKILL.md"), entry("a/b.md"), entry("a/c.md")];
        assert!(name_warnings(&fine).is_empty());
        let cased = [entry("README.md"), entry("docs/x"), entry("readme.md")];
        let warnings = name_warnings(&cased);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].code, "path-case-collision");
        // A stored skill an earlier release accepted is read with a warning, not refused.
        let normalized = [entry("caf\u{e9}"), entry("cafe\u{301}")];
        let warnings = name_warnings(&normalized);
        assert_eq!(warnings[0].code, "path-collision");
        assert!(matches!(
            check_names(normalized.iter().map(|e| e.path.as_str())),
            Err(UploadError::NameClash { .. })
        ));
    }

    #[test]
    fn a_cancelled_upload_stops_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cancel = Cancel::default();
        let guard = cancel.on_drop();
        drop(guard);
        assert!(cancel.is_cancelled());
        let files = [(p("SKILL.md"), SKILL.to_vec())];
        let err = write_staged(
            &staging(&tmp),
            None,
            &files,
            &ExecBits::new(),
            &limits(),
            &cancel,
        )
        .unwrap_err();
        assert!(matches!(err, UploadError::Cancelled), "{err}");
        assert!(!err.is_client_error());
        assert_eq!(leftovers(&staging(&tmp)), 0);
        // A disarmed guard cancels nothing.
        let kept = Cancel::default();
        kept.on_drop().disarm();
        assert!(
            write_staged(
                &staging(&tmp),
                None,
                &files,
                &ExecBits::new(),
                &limits(),
                &kept
            )
            .is_ok()
        );
    }

    #[test]
    fn staged_folders_are_removed_when_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let staged = write_staged(
            &staging(&tmp),
            None,
            &[(p("SKILL.md"), SKILL.to_vec())],
            &ExecBits::new(),
            &limits(),
            &Cancel::default(),
        )
        .unwrap();
        let dir = staged.dir().to_path_buf();
        assert!(dir.is_dir());
        drop(staged);
        assert!(!dir.exists());
    }

    fn upload_err(files: &[(SkillPath, Vec<u8>)], limits: &Limits) -> UploadError {
        let tmp = tempfile::tempdir().unwrap();
        let err = write_staged(
            &staging(&tmp),
            None,
            files,
            &ExecBits::new(),
            limits,
            &Cancel::default(),
        )
        .unwrap_err();
        assert_eq!(
            leftovers(&staging(&tmp)),
            0,
            "staging not cleaned after {err}"
        );
        err
    }

    #[test]
    fn staging_enforces_the_rules() {
        let md = || (p("SKILL.md"), SKILL.to_vec());

        let err = upload_err(&[(p("README.md"), b"x".to_vec())], &limits());
        assert!(matches!(err, UploadError::MissingSkillMd), "{err}");
        let err = upload_err(&[(p("sub/SKILL.md"), SKILL.to_vec())], &limits());
        assert!(matches!(err, UploadError::MissingSkillMd), "{err}");

        let err = upload_err(&[(p("SKILL.md"), b"# no front matter".to_vec())], &limits());
        assert!(matches!(&err, UploadError::Manifest(m) if m.rule == "front-matter-missing"));
        assert_eq!(err.code(), "invalid-skill-md");

        let err = upload_err(&[md(), md()], &limits());
        assert!(matches!(err, UploadError::DuplicatePath { .. }), "{err}");

        let err = upload_err(
            &[md(), (p("a"), b"x".to_vec()), (p("a/b"), b"y".to_vec())],
            &limits(),
        );
        assert!(
            matches!(&err, UploadError::Conflict { path } if path == "a/b"),
            "{err}"
        );
        let err = upload_err(
            &[md(), (p("a/b"), b"y".to_vec()), (p("a"), b"x".to_vec())],
            &limits(),
        );
        assert!(
            matches!(&err, UploadError::Conflict { path } if path == "a"),
            "{err}"
        );

        let small = Limits {
            max_file_bytes: 100,
            max_skill_bytes: 150,
            max_skill_files: 3,
        };
        let err = upload_err(&[md(), (p("big"), vec![0; 101])], &small);
        assert!(
            matches!(err, UploadError::FileTooLarge { limit: 100, .. }),
            "{err}"
        );
        let err = upload_err(
            &[md(), (p("a"), vec![0; 60]), (p("b"), vec![0; 60])],
            &small,
        );
        assert!(
            matches!(err, UploadError::SkillTooLarge { limit: 150 }),
            "{err}"
        );
        let err = upload_err(
            &[md(), (p("a"), vec![]), (p("b"), vec![]), (p("c"), vec![])],
            &small,
        );
        assert!(
            matches!(err, UploadError::TooManyFiles { limit: 3 }),
            "{err}"
        );
        assert!(err.is_client_error());
    }

    #[test]
    fn limits_count_the_files_kept_from_the_base() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("demo");
        put(&base, "SKILL.md", SKILL);
        put(&base, "a", b"");
        put(&base, "b", b"");
        let small = Limits {
            max_skill_files: 3,
            ..limits()
        };
        let err = write_staged(
            &staging(&tmp),
            Some(&base),
            &[(p("c"), vec![])],
            &ExecBits::new(),
            &small,
            &Cancel::default(),
        )
        .unwrap_err();
        assert!(matches!(err, UploadError::TooManyFiles { .. }), "{err}");
        // An upload that replaces files keeps the count.
        assert!(
            write_staged(
                &staging(&tmp),
                Some(&base),
                &[(p("b"), vec![1])],
                &ExecBits::new(),
                &small,
                &Cancel::default()
            )
            .is_ok()
        );
        // A folder in the base where a file is uploaded is a clash.
        put(&base, "dir/x", b"");
        let err = write_staged(
            &staging(&tmp),
            Some(&base),
            &[(p("dir"), vec![])],
            &ExecBits::new(),
            &limits(),
            &Cancel::default(),
        )
        .unwrap_err();
        assert!(matches!(err, UploadError::Conflict { .. }), "{err}");
        assert_eq!(leftovers(&staging(&tmp)), 0);
    }

    #[test]
    fn clean_staging_removes_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(clean_staging(&staging(&tmp)).unwrap(), 0);
        put(&staging(&tmp), "abc/SKILL.md", SKILL);
        put(&staging(&tmp), "def/x/y", b"");
        put(&staging(&tmp), "stray-file", b"");
        assert_eq!(clean_staging(&staging(&tmp)).unwrap(), 3);
        assert_eq!(leftovers(&staging(&tmp)), 0);
    }

    #[test]
    fn remove_skill_dir_removes_and_tolerates_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let skill = tmp.path().join("demo");
        put(&skill, "SKILL.md", SKILL);
        put(&skill, "x/y", b"");
        remove_skill_dir(&skill).unwrap();
        assert!(!skill.exists());
        assert_eq!(leftovers(tmp.path()), 0);
        remove_skill_dir(&skill).unwrap();

        put(tmp.path(), ".removing-demo-0123/x", b"");
        put(tmp.path(), "other/SKILL.md", SKILL);
        assert_eq!(clean_removed(tmp.path()).unwrap(), 1);
        assert_eq!(leftovers(tmp.path()), 1);
    }

    #[test]
    fn a_full_disk_or_quota_is_told_apart_from_other_io_errors() {
        for errno in [Errno::NOSPC, Errno::DQUOT] {
            assert!(is_storage_full(&io::Error::from_raw_os_error(
                errno.raw_os_error()
            )));
        }
        for errno in [Errno::IO, Errno::ACCESS, Errno::ROFS] {
            assert!(!is_storage_full(&io::Error::from_raw_os_error(
                errno.raw_os_error()
            )));
        }
    }

    #[test]
    fn error_codes_are_stable() {
        let cases: [(UploadError, &str); 4] = [
            (
                UploadError::InvalidPath {
                    path: "../x".into(),
                    reason: "must not contain '.' or '..' components",
                },
                "invalid-path",
            ),
            (UploadError::MissingSkillMd, "missing-skill-md"),
            (UploadError::Zip("bad".into()), "invalid-zip"),
            (UploadError::Io(io::Error::other("disk")), "io-error"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.is_client_error(), code != "io-error");
        }
        let err = UploadError::InvalidPath {
            path: "../x".into(),
            reason: "must not contain '.' or '..' components",
        };
        assert_eq!(
            err.to_string(),
            "\"../x\" is not an accepted file path: it must not contain '.' or '..' components"
        );
    }
}
