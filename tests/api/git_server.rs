//! Real Git servers on loopback for the import tests: repositories made with the `git` program,
//! served by `git daemon` (one `git daemon --inetd` per connection, so no port is guessed) and by
//! `git http-backend` (run as a CGI program behind a small hyper server of the test's own).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;

/// Runs `git` with a fixed identity and no user or system configuration.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .env("GIT_AUTHOR_DATE", "2026-12-01T12:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-12-01T12:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository being written (a work tree), published as a bare repository that the servers
/// serve: `publish` pushes every branch and tag to it.
pub struct Repo {
    pub work: PathBuf,
    /// The folder the servers serve; the bare repository is `<root>/<name>.git`.
    pub root: PathBuf,
    pub name: String,
    _dir: tempfile::TempDir,
}

impl Repo {
    pub fn new(name: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let root = dir.path().join("served");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &root,
            &["init", "-q", "--bare", "-b", "main", &format!("{name}.git")],
        );
        Repo {
            work,
            root,
            name: name.to_owned(),
            _dir: dir,
        }
    }

    pub fn write(&self, path: &str, content: &[u8]) -> &Repo {
        let target = self.work.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, content).unwrap();
        self
    }

    pub fn remove(&self, path: &str) -> &Repo {
        git(&self.work, &["rm", "-q", "-r", path]);
        self
    }

    /// Commits everything; returns the commit's id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub fn run(&self, args: &[&str]) -> String {
        git(&self.work, args)
    }

    /// Pushes every branch and tag to the served repository.
    pub fn publish(&self) {
        let bare = self.root.join(format!("{}.git", self.name));
        let bare = bare.to_str().unwrap();
        git(&self.work, &["push", "-q", "--force", bare, "--all"]);
        git(&self.work, &["push", "-q", "--force", bare, "--tags"]);
    }
}

/// `git daemon` serving a folder: each connection is handed to a `git daemon --inetd`.
pub struct GitDaemon {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl GitDaemon {
    pub async fn start(root: &Path) -> GitDaemon {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let root = root.to_owned();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let Ok(second) = stream.try_clone() else {
                    continue;
                };
                let (input, output) = (OwnedFd::from(stream), OwnedFd::from(second));
                let child = Command::new("git")
                    .arg("daemon")
                    .arg("--inetd")
                    .arg("--export-all")
                    .arg("--informative-errors")
                    .arg(format!("--base-path={}", root.display()))
                    .arg(&root)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .env("GIT_CONFIG_GLOBAL", "/dev/null")
                    .stdin(Stdio::from(input))
                    .stdout(Stdio::from(output))
                    .stderr(Stdio::null())
                    .spawn();
                if let Ok(mut child) = child {
                    tokio::task::spawn_blocking(move || child.wait());
                }
            }
        });
        GitDaemon {
            addr,
            connections,
            task,
        }
    }

    pub fn url(&self, repo: &Repo) -> String {
        format!("git://{}/{}.git", self.addr, repo.name)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `git http-backend` behind a hyper server: Git's smart HTTP protocol, as a web server runs it.
pub struct GitHttp {
    pub addr: SocketAddr,
    /// Requests received, to show that a refused import never reached the server.
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl GitHttp {
    pub async fn start(root: &Path) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let root = Arc::new(root.to_owned());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (root, counted) = (Arc::clone(&root), Arc::clone(&counted));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        cgi(Arc::clone(&root), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GitHttp {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self, repo: &Repo) -> String {
        format!("http://{}/git/{}.git", self.addr, repo.name)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request through `git http-backend` (CGI/1.1: the request in the environment and on
/// standard input, the response's headers then body on standard output).
async fn cgi(
    root: Arc<PathBuf>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path_info = parts
        .uri
        .path()
        .strip_prefix("/git")
        .unwrap_or("/")
        .to_owned();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root.as_os_str())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, &body)?;
        }
        child.wait_with_output()
    })
    .await
    .unwrap();
    let Ok(output) = output else {
        return Ok(Response::builder()
            .status(500)
            .body(Full::new(Bytes::new()))
            .unwrap());
    };
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, gap)) = split else {
        return Ok(Response::builder()
            .status(502)
            .body(Full::new(Bytes::new()))
            .unwrap());
    };
    let mut response = Response::builder().status(200);
    for line in String::from_utf8_lossy(&out[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value
                .trim()
                .split(' ')
                .next()
                .unwrap_or("500")
                .parse()
                .unwrap_or(500);
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value.trim());
        }
    }
    Ok(response
        .body(Full::new(Bytes::copy_from_slice(&out[end + gap..])))
        .unwrap())
}
