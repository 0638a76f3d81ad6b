//! Skills from Git repositories, synchronous (callers use the blocking pool): a URL checked
//! before anything is fetched ([`GitUrl`]), a shallow clone of one commit into a scratch folder
//! ([`fetch`], with `gix`, never the `git` program), and the skills in that commit's tree under a
//! path ([`Checkout::skills`]), read as a zip archive's are (the same skill folders, litter and
//! limits, by [`super::zip_upload::gather`]).
//!
//! The URL is chosen by a user, so the fetch is an attack surface: `https` only, unless the
//! operator allows private hosts (`import.allow_private_hosts`, for Git servers on their own
//! network), which also allows `http` and `git`; no credentials in URLs and none asked of anyone
//! (only public repositories); every address a name resolves to must be one the [`Reach`] allows
//! (`crate::outbound`), address literals likewise, and redirects are not followed on the public
//! internet (a redirect to an address literal would skip the resolver). Git's own configuration,
//! the environment's included, is never read (`open::Options::isolated`). The clone is bounded in
//! bytes (the scratch folder's size, watched while it grows) and in time, and stops when the
//! request that asked for it goes away.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::bstr::ByteSlice;
use gix::protocol::transport::client::blocking_io::http as git_http;
use reqwest::Url;

use super::Cancel;
use super::files::{Limits, StagingDir, UploadError};
use super::zip_upload::{self, Unpacked};
use crate::domain::SkillPath;
use crate::outbound::{Reach, Resolver};

/// The longest ref name accepted.
const MAX_REF_LEN: usize = 255;

/// A repository URL that may be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl(Url);

impl GitUrl {
    /// Checks `raw` by rejection: `https` (and `http`/`git` only with [`Reach::Any`]), a host,
    /// no credentials, query or fragment, and a host literal `reach` allows. Names are checked
    /// again when they are resolved, at the fetch.
    pub fn parse(raw: &str, reach: Reach) -> Result<GitUrl, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("give the repository's URL".into());
        }
        let url = Url::parse(raw).map_err(|e| {
            format!("not a URL ({e}); give the repository's https URL, as `git clone` takes it")
        })?;
        match url.scheme() {
            "https" => {}
            "http" | "git" if reach == Reach::Any => {}
            "http" | "git" => {
                return Err(format!(
                    "{}:// is unencrypted; use https (plain http and git:// are for Git servers \
                     on the server's own network, when import.allow_private_hosts is on)",
                    url.scheme()
                ));
            }
            other => {
                return Err(format!(
                    "{other}:// URLs cannot be imported; use the repository's https URL"
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "the URL carries credentials; only public repositories can be imported, and a \
                 credential in a URL would be stored and shown"
                    .into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a repository URL has no query (`?`) or fragment (`#`)".into());
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err("the URL has no host".into()),
        };
        if let Some(ip) = literal
            && !reach.allows(ip)
        {
            return Err(format!(
                "the URL points at {ip}, an address this server does not fetch from (private \
                 addresses need import.allow_private_hosts)"
            ));
        }
        if url.path().trim_matches('/').is_empty() {
            return Err("the URL names no repository (it has no path)".into());
        }
        Ok(GitUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Checks a branch, tag or commit name: Git's own rules for ref names, or 40 hex digits.
pub fn check_ref(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() || name.len() > MAX_REF_LEN {
        return Err(format!(
            "a ref is a branch, a tag or a commit id, of 1 to {MAX_REF_LEN} characters"
        ));
    }
    if is_commit_id(name) {
        return Ok(name.to_ascii_lowercase());
    }
    let valid = gix::validate::reference::name_partial(name.as_bytes().as_bstr()).is_ok()
        && !name.starts_with('-');
    if !valid {
        return Err(format!("{name:?} is not a valid branch or tag name"));
    }
    Ok(name.to_owned())
}

fn is_commit_id(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks the folder to import from: a path inside the repository, `""` for all of it.
pub fn check_path(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return Ok(String::new());
    }
    SkillPath::parse(trimmed)
        .map(|p| p.as_str().to_owned())
        .map_err(|reason| {
            format!("{trimmed:?} is not a folder path in the repository: it {reason}")
        })
}

/// How a fetch may go.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    pub reach: Reach,
    /// The most bytes the clone may take on disk (the packed history of one commit).
    pub max_bytes: u64,
    pub timeout: Duration,
}

/// Why a fetch failed; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the repository could not be fetched: {0}")]
    Failed(String),
    #[error("{0:?} is not a branch, tag or commit of the repository")]
    RefNotFound(String),
    #[error(
        "the repository's content at that commit is larger than the limit of {0} bytes \
         (import.max_bytes)"
    )]
    TooLarge(u64),
    #[error("fetching the repository took longer than the limit of {0} seconds")]
    TimedOut(u64),
    #[error("the request was given up before the fetch finished")]
    Cancelled,
    #[error("the fetch could not be stored: {0}")]
    Io(#[from] std::io::Error),
}

/// A fetched commit, in a scratch folder removed when this is dropped.
pub struct Checkout {
    repo: gix::Repository,
    commit: gix::ObjectId,
    // Last: the folder goes after the repository that reads from it.
    _scratch: StagingDir,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

/// Why the watchdog stopped a fetch.
const STOP_NONE: u8 = 0;
const STOP_SIZE: u8 = 1;
const STOP_TIME: u8 = 2;
const STOP_CANCEL: u8 = 3;

/// Clones the commit `git_ref` names (a branch or tag, a commit id, or the remote's default
/// branch) into a scratch folder under `scratch_root`, history depth 1.
pub fn fetch(
    url: &GitUrl,
    git_ref: Option<&str>,
    scratch_root: &Path,
    options: &FetchOptions,
    cancel: &Cancel,
) -> Result<Checkout, FetchError> {
    let scratch = StagingDir::create(scratch_root)?;
    let dir = scratch.path().join("repo.git");
    let interrupt = Arc::new(AtomicBool::new(false));
    let reason = Arc::new(AtomicU8::new(STOP_NONE));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (interrupt, reason, done) = (interrupt.clone(), reason.clone(), done.clone());
        let (dir, cancel, options) = (dir.clone(), cancel.clone(), *options);
        std::thread::Builder::new()
            .name("git-fetch-watch".into())
            .spawn(move || watch(&dir, &options, &cancel, &interrupt, &reason, &done))?
    };
    let fetched = clone(url, git_ref, &dir, options, &interrupt);
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let stopped = match reason.load(Ordering::Relaxed) {
        STOP_SIZE => Some(FetchError::TooLarge(options.max_bytes)),
        STOP_TIME => Some(FetchError::TimedOut(options.timeout.as_secs())),
        STOP_CANCEL => Some(FetchError::Cancelled),
        _ => None,
    };
    let (repo, commit) = match (fetched, stopped) {
        (_, Some(why)) => return Err(why),
        (Err(e), None) => return Err(e),
        (Ok(found), None) => found,
    };
    // The watchdog looks only every few milliseconds: the final size is checked once more.
    if folder_bytes(&dir) > options.max_bytes {
        return Err(FetchError::TooLarge(options.max_bytes));
    }
    Ok(Checkout {
        repo,
        commit,
        _scratch: scratch,
    })
}

fn clone(
    url: &GitUrl,
    git_ref: Option<&str>,
    dir: &Path,
    options: &FetchOptions,
    interrupt: &AtomicBool,
) -> Result<(gix::Repository, gix::ObjectId), FetchError> {
    let failed = |e: &dyn std::fmt::Display| FetchError::Failed(e.to_string());
    let mut prepare = gix::clone::PrepareFetch::new(
        url.as_str(),
        dir,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )
    .map_err(|e| failed(&e))?
    .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN));
    prepare = match git_ref {
        Some(id) if is_commit_id(id) => prepare.with_revision(Some(id)),
        Some(name) => prepare.with_ref_name(Some(name)),
        None => Ok(prepare),
    }
    .map_err(|e| failed(&e))?;
    let reach = options.reach;
    let timeout = options.timeout;
    let prepare = prepare.configure_connection(move |connection| {
        let mut http = git_http::Options {
            // A redirect to an address literal would not pass through the resolver.
            follow_redirects: if reach == Reach::Any {
                git_http::options::FollowRedirects::Initial
            } else {
                git_http::options::FollowRedirects::None
            },
            user_agent: Some(concat!("agentskills-mcp/", env!("CARGO_PKG_VERSION")).into()),
            connect_timeout: Some(timeout.min(Duration::from_secs(10))),
            ..Default::default()
        };
        let backend = git_http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                Ok(builder
                    .dns_resolver(Arc::new(Resolver::new(reach)))
                    .no_proxy()
                    .timeout(timeout))
            })),
            configure_request: None,
        };
        http.backend = Some(Arc::new(Mutex::new(backend)));
        connection.set_transport_options(Box::new(http));
        // Only public repositories: nothing asks anyone for a password.
        connection.set_credentials(|_| {
            use gix::error::ErrorExt as _;
            Err(gix::error::message(
                "the repository asks for credentials; only public repositories can be imported",
            )
            .raise())
        });
        Ok(())
    });
    let mut prepare = prepare;
    let (repo, _outcome) = prepare
        .fetch_only(gix::progress::Discard, interrupt)
        .map_err(|e| fetch_failure(&e, git_ref))?;
    let commit = repo.head_id().map_err(|e| failed(&e))?.detach();
    Ok((repo, commit))
}

/// Words for a failed fetch, with every cause (gix errors nest the one that matters).
fn fetch_failure(e: &gix::Error, git_ref: Option<&str>) -> FetchError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    let plain = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(name) = git_ref {
        let lower = plain.to_ascii_lowercase();
        if lower.contains("could not be found")
            || lower.contains("not found on remote")
            || lower.contains("did not match")
            || lower.contains("no ref")
            || lower.contains("have any ref that matched")
            || lower.contains("not our ref")
            || lower.contains("unknown ref")
        {
            return FetchError::RefNotFound(name.to_owned());
        }
    }
    FetchError::Failed(plain)
}

/// Stops the fetch (through gix's interrupt flag) once the clone is larger than allowed, the time
/// is up, or the request is gone; `reason` says which.
fn watch(
    dir: &Path,
    options: &FetchOptions,
    cancel: &Cancel,
    interrupt: &AtomicBool,
    reason: &AtomicU8,
    done: &AtomicBool,
) {
    let deadline = Instant::now() + options.timeout;
    while !done.load(Ordering::Relaxed) {
        let why = if cancel.is_cancelled() {
            STOP_CANCEL
        } else if Instant::now() >= deadline {
            STOP_TIME
        } else if folder_bytes(dir) > options.max_bytes {
            STOP_SIZE
        } else {
            STOP_NONE
        };
        if why != STOP_NONE {
            reason.store(why, Ordering::Relaxed);
            interrupt.store(true, Ordering::Relaxed);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bytes of every file under `dir` (a clone in progress: a handful of files).
fn folder_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total = total.saturating_add(meta.len()),
                Err(_) => {}
            }
        }
    }
    total
}

impl Checkout {
    /// The fetched commit's id, in hex.
    pub fn commit(&self) -> String {
        self.commit.to_string()
    }

    /// The skills in the commit under the folder `path` (`""`: all of it), as
    /// [`zip_upload::unpack`] finds them in an archive: every folder with a `SKILL.md` not
    /// inside another. Symbolic links and submodules are left out (listed with the ignored).
    pub fn skills(
        &self,
        path: &str,
        limits: &Limits,
        max_unpacked_bytes: u64,
        cancel: &Cancel,
    ) -> Result<Unpacked, UploadError> {
        let broken = |e: &dyn std::fmt::Display| UploadError::Repository(e.to_string());
        let commit = self.repo.find_commit(self.commit).map_err(|e| broken(&e))?;
        let root = commit.tree().map_err(|e| broken(&e))?;
        let tree = if path.is_empty() {
            root
        } else {
            let entry = root
                .lookup_entry_by_path(path)
                .map_err(|e| broken(&e))?
                .ok_or_else(|| {
                    UploadError::Repository(format!("the commit has no folder {path:?}"))
                })?;
            if !entry.mode().is_tree() {
                return Err(UploadError::Repository(format!(
                    "{path:?} is a file in the commit, not a folder"
                )));
            }
            entry
                .object()
                .map_err(|e| broken(&e))?
                .try_into_tree()
                .map_err(|e| broken(&e))?
        };
        let mut recorder = gix::traverse::tree::Recorder::default();
        tree.traverse()
            .breadthfirst(&mut recorder)
            .map_err(|e| broken(&e))?;
        let mut entries: Vec<((gix::ObjectId, bool, String), SkillPath)> = Vec::new();
        let mut ignored: Vec<String> = Vec::new();
        for record in recorder.records {
            cancel.check()?;
            let name = record.filepath.to_str_lossy().into_owned();
            let kind = record.mode.kind();
            let executable = match kind {
                gix::object::tree::EntryKind::Tree => continue,
                gix::object::tree::EntryKind::Blob => false,
                gix::object::tree::EntryKind::BlobExecutable => true,
                gix::object::tree::EntryKind::Link | gix::object::tree::EntryKind::Commit => {
                    ignored.push(name);
                    continue;
                }
            };
            let skill_path =
                SkillPath::parse(&name).map_err(|reason| UploadError::InvalidPath {
                    path: name.clone(),
                    reason,
                })?;
            if zip_upload::is_litter(skill_path.as_str()) {
                ignored.push(name);
                continue;
            }
            entries.push(((record.oid, executable, name), skill_path));
        }
        let repo = &self.repo;
        zip_upload::gather(
            entries,
            ignored,
            limits,
            max_unpacked_bytes,
            cancel,
            UploadError::Repository,
            "repository",
            |(oid, executable, name), cap| {
                let header = repo.find_header(oid).map_err(|e| broken(&e))?;
                if header.size() >= cap {
                    return Err(UploadError::FileTooLarge {
                        path: name,
                        limit: cap.saturating_sub(1),
                    });
                }
                let object = repo.find_object(oid).map_err(|e| broken(&e))?;
                Ok((object.data.clone(), Some(executable)))
            },
        )
        .map_err(|e| match e {
            UploadError::MissingSkillMd => UploadError::Repository(if path.is_empty() {
                "no folder of the repository holds a SKILL.md".to_owned()
            } else {
                format!("no folder under {path:?} holds a SKILL.md")
            }),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_checked_before_anything_is_fetched() {
        let ok = |u: &str, reach| GitUrl::parse(u, reach).map(|u| u.as_str().to_owned());
        assert!(ok("https://github.com/acme/skills.git", Reach::Public).is_ok());
        assert!(ok("  https://github.com/acme/skills  ", Reach::Public).is_ok());
        for refused in [
            "",
            "github.com/acme/skills",
            "git@github.com:acme/skills.git",
            "ssh://git@github.com/acme/skills.git",
            "file:///etc",
            "ext::sh -c touch% /tmp/x",
            "http://github.com/acme/skills.git",
            "git://github.com/acme/skills.git",
            "https://user:token@github.com/acme/skills.git",
            "https://github.com/acme/skills.git?x=1",
            "https://github.com/acme/skills.git#main",
            "https://127.0.0.1/repo.git",
            "https://10.1.2.3/repo.git",
            "https://[::1]/repo.git",
            "https://169.254.169.254/latest",
            "https://github.com/",
        ] {
            assert!(ok(refused, Reach::Public).is_err(), "{refused}");
        }
        assert!(ok("http://127.0.0.1:8080/repo.git", Reach::Any).is_ok());
        assert!(ok("git://10.0.0.5/repo.git", Reach::Any).is_ok());
        assert!(ok("ssh://git@10.0.0.5/repo.git", Reach::Any).is_err());
        assert!(ok("file:///srv/repo.git", Reach::Any).is_err());
    }

    #[test]
    fn refs_and_paths_are_checked() {
        assert_eq!(check_ref(" main ").unwrap(), "main");
        assert_eq!(check_ref("v1.2.0").unwrap(), "v1.2.0");
        assert_eq!(check_ref("feature/one").unwrap(), "feature/one");
        assert_eq!(check_ref(&"A".repeat(40)).unwrap(), "a".repeat(40));
        for refused in [
            "", "a..b", "-x", "a b", "x~1", "x^", "x:y", "x.lock", "@{1}",
        ] {
            assert!(check_ref(refused).is_err(), "{refused}");
        }
        assert_eq!(check_path("").unwrap(), "");
        assert_eq!(check_path("/").unwrap(), "");
        assert_eq!(check_path("skills/").unwrap(), "skills");
        assert_eq!(check_path("/skills/pdf").unwrap(), "skills/pdf");
        assert!(check_path("../etc").is_err());
        assert!(check_path("a/./b").is_err());
    }
}
