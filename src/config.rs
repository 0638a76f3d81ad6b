//! Settings: `config.toml` (optional) overridden by environment variables, validated at start.
//!
//! Every setting has a default, so the server runs with no configuration at all. The file is a TOML
//! document with the sections below (the repository's `config.toml` is the commented reference);
//! each setting can be overridden by the environment variable named in [`ENV_OVERRIDES`]. A bad value
//! fails start-up with a message that names the setting and where it came from.
//!
//! ```
//! use agentskills_mcp::config::Settings;
//! let settings = Settings::from_toml_str("[server]\nbind = \"127.0.0.1:0\"\n", &[]).unwrap();
//! assert_eq!(settings.server.bind.port(), 0);
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where settings come from when no file is named: this file in the working directory, if present.
pub const DEFAULT_CONFIG_FILE: &str = "config.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub tokens: TokenSettings,
    pub oauth: OAuthSettings,
    pub storage: StorageSettings,
    pub skills: SkillSettings,
    pub import: ImportSettings,
    pub mcp: McpSettings,
    pub rate_limits: RateLimitSettings,
    pub sandbox: SandboxSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Holds the SQLite database, the generated signing secret and users' skills.
    pub data_dir: PathBuf,
    /// A client must send its request headers within this time or the connection is closed.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight is closed after this long.
    pub keep_alive_idle_secs: u64,
    /// A client must send a request body within this time or gets 408.
    pub body_read_timeout_secs: u64,
    /// Largest JSON request body accepted (bytes); larger gets 413.
    pub max_json_body_bytes: usize,
    /// On SIGINT/SIGTERM, open connections get this long to finish before they are cut.
    pub shutdown_grace_secs: u64,
    /// On SIGINT/SIGTERM, first this long serving on while `/health/ready` answers 503 and every
    /// HTTP/1 response closes its connection, so that a load balancer's health checks take the
    /// replica out before it stops listening (a rolling restart loses no request). 0: stop
    /// listening at once.
    pub shutdown_drain_secs: u64,
    /// A request must be answered within this time (its response's headers; event streams then
    /// go on) or it gets 503 `timeout`.
    pub request_timeout_secs: u64,
    /// Connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one address (trusted proxies are exempt).
    pub max_connections_per_ip: usize,
    /// Requests one HTTP/2 connection may have in progress at once (its
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`); each may hold an answer of up to
    /// `mcp.max_answer_bytes` while it is made.
    pub http2_max_concurrent_streams: u32,
    /// Origins (`https://app.example.com`) whose browser pages may call this server (CORS), each
    /// exactly as the browser sends it. Responses to them carry `Access-Control-Allow-Origin`
    /// with that origin (never `*`); anything else gets no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// The URL people and MCP clients reach this server by (`https://skills.example.com`): the
    /// web console builds client configuration from it and accepts forms only from its origin.
    /// Empty: the address the browser used (its `Host` header, checked).
    pub public_url: Option<String>,
    /// This replica's name, when several serve one database (`r1`; lower-case letters, digits
    /// and `-`, at most 32): legacy SSE session ids begin with it, so that a load balancer can
    /// send `POST /messages` to the replica holding the session's stream, and metrics carry it
    /// as the `replica` label.
    pub replica_id: Option<String>,
}

impl ServerSettings {
    /// `server.public_url` without a trailing `/`, when set (validated at start: `http` or
    /// `https`, a host, no path).
    pub fn public_url(&self) -> Option<&str> {
        self.public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/'))
            .filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Empty: SQLite at `<data_dir>/agentskills.db`. `sqlite:PATH` names another SQLite file;
    /// `postgres://user:pass@host:port/db` selects PostgreSQL.
    pub url: Option<String>,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a new connection to be made.
    pub connect_timeout_secs: u64,
    /// How long a request waits for a free connection before it gets 503.
    pub acquire_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 signing secret for access and refresh tokens (at least 32 bytes). Empty: generated
    /// into `<data_dir>/secret_key` (mode 0600) on first start and reused after.
    pub secret_key: Option<String>,
    pub access_token_minutes: u64,
    pub refresh_token_days: u64,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// Clock skew tolerated when checking `exp` and `nbf`.
    pub jwt_leeway_secs: u64,
    /// scrypt cost: N = 2^ln. 17 takes 128 MiB and a few hundred milliseconds per hash.
    pub scrypt_log_n: u8,
    pub scrypt_r: u32,
    pub scrypt_p: u32,
    /// Password hashes computed at once; 0 means the number of cores.
    pub hash_concurrency: usize,
    /// How long a login waits for a hashing slot before it gets 503 with `Retry-After`.
    pub hash_wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// API tokens one user may hold; expired ones do not count.
    pub max_per_user: u32,
    /// `last_used_at` is written at most once per token per this interval (and on shutdown).
    pub last_used_flush_secs: u64,
    /// How often the token cache checks the database for changes made by other processes (the admin
    /// commands, other instances); changes made through this server apply at once.
    pub sync_interval_secs: u64,
}

/// Importing skills from Git repositories, and keeping them in sync.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportSettings {
    /// Allows repositories on private, loopback and link-local addresses, and plain `http://`
    /// and `git://` URLs: for Git servers on the operator's own network (and tests). Off: only
    /// `https` to public addresses.
    pub allow_private_hosts: bool,
    /// The most bytes one fetch may take (the packed history of one commit).
    pub max_bytes: u64,
    /// The longest one fetch may take.
    pub timeout_secs: u64,
    /// Fetches running at once on this server (requests wait for a turn).
    pub max_concurrent: u32,
    /// How often the server looks for sources whose periodic sync is due.
    pub sync_check_secs: u64,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            allow_private_hosts: false,
            max_bytes: 100 * 1024 * 1024,
            timeout_secs: 60,
            max_concurrent: 2,
            sync_check_secs: 300,
        }
    }
}

/// Where skill versions' files (blobs) are stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// The local back end's folder (default `<data_dir>/blobs`).
    pub path: Option<PathBuf>,
    /// A stored blob that no row records is removed (when its user's skills are next loaded)
    /// only once it is this old: younger, it may be another replica's change in progress.
    pub sweep_grace_secs: u64,
    /// The most bytes this replica keeps of its copies of users' skills (`<data_dir>/skills`):
    /// past it, the copies of the users whose skills were used least recently are removed (and
    /// made again from the blobs when next read). 0: no limit.
    pub cache_bytes: u64,
    pub s3: S3Settings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            backend: StorageBackend::default(),
            path: None,
            sweep_grace_secs: 3600,
            cache_bytes: 0,
            s3: S3Settings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under `<data_dir>/blobs`.
    #[default]
    Local,
    /// An S3-compatible bucket (`storage.s3`); credentials from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (or the other standard `AWS_*` variables), never from this file.
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// The S3 API's URL, for a store other than AWS (MinIO, Ceph, moto, …); requests are then
    /// path-style. Empty: AWS, virtual-hosted style.
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub region: String,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            bucket: None,
            region: "us-east-1".to_owned(),
        }
    }
}

/// The OAuth authorization server that MCP clients sign in through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthSettings {
    /// How long an OAuth access token works; clients refresh it before then.
    pub access_token_minutes: u64,
    /// How long a grant lasts without a refresh (each refresh starts this again).
    pub refresh_token_days: u64,
    /// Lets a client ID metadata document be fetched over plain `http` from a loopback address
    /// (tests and local development). Off: only `https` from public addresses.
    pub cimd_allow_loopback: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkillSettings {
    /// Largest single file in a skill (bytes).
    pub max_file_bytes: u64,
    /// Largest skill, all its files together (bytes).
    pub max_skill_bytes: u64,
    /// Most files in one skill.
    pub max_skill_files: usize,
    /// Most bytes of skills one user may keep.
    pub max_user_bytes: u64,
    /// Largest upload request body (bytes); larger gets 413.
    pub max_upload_bytes: u64,
    /// Most bytes one uploaded archive may unpack to, all its skills together (each skill is
    /// bounded by `max_skill_bytes` besides).
    pub max_unpacked_bytes: u64,
    /// Versions kept per skill (the current one always among them); older ones are pruned and
    /// the blobs no version refers to are collected.
    pub keep_versions: u32,
    /// A user's workspace actor stops after this many seconds without use (it is started again on
    /// demand).
    pub workspace_idle_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSettings {
    /// Origins (`https://app.example.com`) whose browser pages may call `/mcp`, besides loopback
    /// ones (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`). A request with any
    /// other `Origin` header gets 403; requests without one (MCP clients outside browsers) pass.
    pub allowed_origins: Vec<String>,
    /// Host names (`mcp.example.com`, port optional) `/mcp` answers to, besides loopback ones. With
    /// the list empty, a server bound to a loopback address answers only loopback names (DNS-rebinding
    /// protection) and one bound elsewhere answers any.
    pub allowed_hosts: Vec<String>,
    /// A session unused for this long is ended.
    pub session_idle_secs: u64,
    /// An event stream with nothing to send gets a keep-alive comment this often, so proxies and
    /// clients do not take it for dead.
    pub sse_keep_alive_secs: u64,
    /// Sessions one API token may hold open; a new one at the cap ends the token's least
    /// recently used session.
    pub max_sessions_per_token: usize,
    /// `subscriptions/listen` streams (protocol 2026-07-28) one API token may hold open at once.
    /// One more is refused (HTTP 429, -32090) until one of them ends. Counted apart from
    /// sessions, so that neither can crowd out the other.
    pub max_listen_streams_per_token: usize,
    /// Messages one JSON-RPC batch may hold (protocols before 2025-06-18; later ones have no
    /// batches). A longer batch is refused whole (-32600) before anything in it runs.
    pub max_batch_messages: usize,
    /// Bytes of one answer, serialized. A larger one is replaced: for `tools/call` by a tool
    /// result with `isError: true` that names this limit, for other methods by a JSON-RPC error
    /// (-32090). It also bounds a batch's whole answer: once it is reached, the batch's remaining
    /// requests are not run. Keep it above `skills.max_file_bytes` with room for JSON escaping,
    /// or the largest files cannot be read over MCP.
    pub max_answer_bytes: usize,
    /// Bytes of answers one user's legacy event streams (`GET /sse`, all of them together) may
    /// hold before their clients read them. An answer that does not fit is not queued and its
    /// `POST /messages` gets 429 with `Retry-After`. At least `mcp.max_answer_bytes`.
    pub max_queued_bytes: usize,
    /// Skills `load_skill_metadata` lists at most; 0 lists them all (the original server's
    /// behaviour). A user with more active skills gets this many, the ones they used most
    /// recently first (then the most recently updated), and a last line telling the agent to
    /// call `search_skills` for the rest. Use is remembered in memory, so a restart forgets it.
    pub metadata_max_skills: usize,
}

/// Requests allowed per key; 0 turns a limit off. Each limit lets a burst of its size through at
/// once, then one request per (period / size).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Logins per minute from one client address (IPv6: one /64).
    pub login_per_ip_per_minute: u32,
    /// Logins per minute to one account (whatever the address), so a password cannot be guessed
    /// from many addresses.
    pub login_per_account_per_minute: u32,
    /// Registrations per hour from one client address.
    pub register_per_ip_per_hour: u32,
    /// OAuth client registrations (`POST /oauth/register`) per hour from one client address.
    pub oauth_register_per_ip_per_hour: u32,
    /// Client ID metadata documents fetched per minute for one client address (a document
    /// already cached costs nothing).
    pub oauth_fetch_per_ip_per_minute: u32,
    /// MCP requests per second of one API token.
    pub mcp_per_token_per_second: u32,
    /// Uploads per minute of one user.
    pub uploads_per_user_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` header names the client (IP addresses);
    /// from anyone else those headers are ignored and the peer address is the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            login_per_ip_per_minute: 20,
            login_per_account_per_minute: 10,
            register_per_ip_per_hour: 20,
            oauth_register_per_ip_per_hour: 20,
            oauth_fetch_per_ip_per_minute: 20,
            mcp_per_token_per_second: 2000,
            uploads_per_user_per_minute: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// `strict` runs commands only when the file system, the network, processes and signals are
    /// isolated (bubblewrap works); `degraded` runs with whatever layers are there, warning on every
    /// run; `off` runs commands unconfined, for single-user development only.
    pub mode: SandboxMode,
    /// bubblewrap: a path, or a name looked up in `PATH`; empty: do not use it.
    pub bwrap: String,
    /// Whether to apply Landlock inside the sandbox when the kernel has it (ABI 6 or later).
    pub landlock: bool,
    /// The `agentskills-mcp` executable that applies Landlock inside the sandbox; empty: this one.
    pub helper: String,
    /// When the server runs as root, commands run as user ids from this one on, one per command
    /// running at once (the process limit does not bind root, and counts per user id). 0: run as
    /// root.
    pub run_as_uid: u32,
    /// Wall-clock limit of one command; it is killed, with everything it started, after it.
    pub timeout_secs: u64,
    /// stdout and stderr are each cut at this many bytes, and the command killed.
    pub max_output_bytes: usize,
    /// CPU seconds (RLIMIT_CPU).
    pub cpu_secs: u64,
    /// Heap and data of each process (RLIMIT_DATA; not RLIMIT_AS, which breaks node and java).
    pub memory_bytes: u64,
    /// Largest file a command may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Processes and threads of one command (RLIMIT_NPROC, counted in the sandbox's own user
    /// namespace).
    pub processes: u64,
    /// Size of the private `/tmp` (a tmpfs of its own per command).
    pub tmp_bytes: u64,
    /// Size of a command's scratch copy of its skill at `/skill` (a tmpfs of its own per command,
    /// the skill's own files included): a command runs in a copy and what it writes is thrown
    /// away, so this bounds what one command can write there in all.
    pub scratch_bytes: u64,
    /// Files and folders (inodes) each of `/skill` and `/tmp` may hold, the skill's own included:
    /// empty files take no bytes but take kernel memory.
    pub scratch_files: u64,
    /// Commands of one user running at once.
    pub per_user: usize,
    /// Commands running at once in all; 0: the number of cores.
    pub global: usize,
    /// Commands waiting for a slot; more get "busy, retry".
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    Strict,
    Degraded,
    Off,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            mode: SandboxMode::Strict,
            bwrap: "bwrap".to_owned(),
            landlock: true,
            helper: String::new(),
            run_as_uid: 200_000,
            timeout_secs: 30,
            max_output_bytes: 1024 * 1024,
            cpu_secs: 30,
            memory_bytes: 1024 * 1024 * 1024,
            file_size_bytes: 64 * 1024 * 1024,
            open_files: 256,
            processes: 64,
            tmp_bytes: 64 * 1024 * 1024,
            scratch_bytes: 64 * 1024 * 1024,
            scratch_files: 4096,
            per_user: 2,
            global: 0,
            queue: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter: `info`, `debug`, `agentskills_mcp=debug,info`, …
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("./data"),
            header_read_timeout_secs: 10,
            keep_alive_idle_secs: 60,
            body_read_timeout_secs: 30,
            max_json_body_bytes: 64 * 1024,
            shutdown_grace_secs: 30,
            shutdown_drain_secs: 0,
            request_timeout_secs: 120,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            // HTTP/1.1 has one request in progress per connection; an MCP client needs a few
            // (its requests and one event stream per session), not the hundreds hyper allows.
            http2_max_concurrent_streams: 64,
            cors_allowed_origins: Vec::new(),
            public_url: None,
            replica_id: None,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            max_connections: 16,
            connect_timeout_secs: 5,
            acquire_timeout_secs: 5,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            secret_key: None,
            access_token_minutes: 30,
            refresh_token_days: 7,
            jwt_issuer: "agentskills-mcp".to_owned(),
            jwt_audience: "agentskills-mcp".to_owned(),
            jwt_leeway_secs: 5,
            scrypt_log_n: 17,
            scrypt_r: 8,
            scrypt_p: 1,
            hash_concurrency: 0,
            hash_wait_ms: 2000,
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            max_per_user: 100,
            last_used_flush_secs: 30,
            sync_interval_secs: 5,
        }
    }
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings {
            access_token_minutes: 60,
            refresh_token_days: 30,
            cimd_allow_loopback: false,
        }
    }
}

impl Default for SkillSettings {
    fn default() -> Self {
        SkillSettings {
            max_file_bytes: 10 * 1024 * 1024,
            max_skill_bytes: 16 * 1024 * 1024,
            max_skill_files: 512,
            max_user_bytes: 100 * 1024 * 1024,
            max_upload_bytes: 20 * 1024 * 1024,
            max_unpacked_bytes: 64 * 1024 * 1024,
            keep_versions: 20,
            workspace_idle_secs: 300,
        }
    }
}

impl Default for McpSettings {
    fn default() -> Self {
        McpSettings {
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            session_idle_secs: 1800,
            sse_keep_alive_secs: 15,
            max_sessions_per_token: 64,
            // A client listens on one stream, or on a few with different filters; each holds a
            // connection open.
            max_listen_streams_per_token: 16,
            // The batches clients send bundle a few calls (listing tools, resources and
            // prompts at once); 32 leaves room for those, where the 64 KiB body cap alone let a
            // batch ask for about 400 answers.
            max_batch_messages: 32,
            // The largest file (`skills.max_file_bytes`, 10 MiB) as JSON text, which escaping
            // makes longer.
            max_answer_bytes: 16 * 1024 * 1024,
            // Two of the largest answers.
            max_queued_bytes: 32 * 1024 * 1024,
            // Unlimited, as the original server lists.
            metadata_max_skills: 0,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// What kind of value an environment variable holds, so that `"8000"` becomes a number and
/// `"abc"` for a number is refused with the variable's name.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Int,
    /// Comma-separated strings.
    List,
    /// `true` or `false`.
    Bool,
}

/// Every environment variable that overrides a setting: (variable, `section.key`).
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("AGENTSKILLS_BIND", "server.bind"),
    ("AGENTSKILLS_PUBLIC_URL", "server.public_url"),
    ("AGENTSKILLS_REPLICA_ID", "server.replica_id"),
    ("AGENTSKILLS_DATA_DIR", "server.data_dir"),
    (
        "AGENTSKILLS_HEADER_READ_TIMEOUT_SECS",
        "server.header_read_timeout_secs",
    ),
    (
        "AGENTSKILLS_KEEP_ALIVE_IDLE_SECS",
        "server.keep_alive_idle_secs",
    ),
    (
        "AGENTSKILLS_BODY_READ_TIMEOUT_SECS",
        "server.body_read_timeout_secs",
    ),
    (
        "AGENTSKILLS_MAX_JSON_BODY_BYTES",
        "server.max_json_body_bytes",
    ),
    (
        "AGENTSKILLS_SHUTDOWN_GRACE_SECS",
        "server.shutdown_grace_secs",
    ),
    (
        "AGENTSKILLS_SHUTDOWN_DRAIN_SECS",
        "server.shutdown_drain_secs",
    ),
    (
        "AGENTSKILLS_REQUEST_TIMEOUT_SECS",
        "server.request_timeout_secs",
    ),
    ("AGENTSKILLS_MAX_CONNECTIONS", "server.max_connections"),
    (
        "AGENTSKILLS_MAX_CONNECTIONS_PER_IP",
        "server.max_connections_per_ip",
    ),
    (
        "AGENTSKILLS_HTTP2_MAX_CONCURRENT_STREAMS",
        "server.http2_max_concurrent_streams",
    ),
    (
        "AGENTSKILLS_CORS_ALLOWED_ORIGINS",
        "server.cors_allowed_origins",
    ),
    ("DATABASE_URL", "database.url"),
    ("AGENTSKILLS_DB_MAX_CONNECTIONS", "database.max_connections"),
    (
        "AGENTSKILLS_DB_CONNECT_TIMEOUT_SECS",
        "database.connect_timeout_secs",
    ),
    (
        "AGENTSKILLS_DB_ACQUIRE_TIMEOUT_SECS",
        "database.acquire_timeout_secs",
    ),
    ("SECRET_KEY", "auth.secret_key"),
    (
        "AGENTSKILLS_ACCESS_TOKEN_MINUTES",
        "auth.access_token_minutes",
    ),
    ("AGENTSKILLS_REFRESH_TOKEN_DAYS", "auth.refresh_token_days"),
    ("AGENTSKILLS_JWT_ISSUER", "auth.jwt_issuer"),
    ("AGENTSKILLS_JWT_AUDIENCE", "auth.jwt_audience"),
    ("AGENTSKILLS_JWT_LEEWAY_SECS", "auth.jwt_leeway_secs"),
    ("AGENTSKILLS_SCRYPT_LOG_N", "auth.scrypt_log_n"),
    ("AGENTSKILLS_SCRYPT_R", "auth.scrypt_r"),
    ("AGENTSKILLS_SCRYPT_P", "auth.scrypt_p"),
    ("AGENTSKILLS_HASH_CONCURRENCY", "auth.hash_concurrency"),
    ("AGENTSKILLS_HASH_WAIT_MS", "auth.hash_wait_ms"),
    ("AGENTSKILLS_MAX_TOKENS_PER_USER", "tokens.max_per_user"),
    (
        "AGENTSKILLS_LAST_USED_FLUSH_SECS",
        "tokens.last_used_flush_secs",
    ),
    (
        "AGENTSKILLS_TOKEN_SYNC_INTERVAL_SECS",
        "tokens.sync_interval_secs",
    ),
    ("AGENTSKILLS_MAX_FILE_BYTES", "skills.max_file_bytes"),
    ("AGENTSKILLS_MAX_SKILL_BYTES", "skills.max_skill_bytes"),
    ("AGENTSKILLS_MAX_SKILL_FILES", "skills.max_skill_files"),
    ("AGENTSKILLS_MAX_USER_BYTES", "skills.max_user_bytes"),
    ("AGENTSKILLS_MAX_UPLOAD_BYTES", "skills.max_upload_bytes"),
    (
        "AGENTSKILLS_MAX_UNPACKED_BYTES",
        "skills.max_unpacked_bytes",
    ),
    ("AGENTSKILLS_KEEP_VERSIONS", "skills.keep_versions"),
    (
        "AGENTSKILLS_WORKSPACE_IDLE_SECS",
        "skills.workspace_idle_secs",
    ),
    ("AGENTSKILLS_MCP_ALLOWED_ORIGINS", "mcp.allowed_origins"),
    ("AGENTSKILLS_MCP_ALLOWED_HOSTS", "mcp.allowed_hosts"),
    ("AGENTSKILLS_MCP_SESSION_IDLE_SECS", "mcp.session_idle_secs"),
    (
        "AGENTSKILLS_MCP_SSE_KEEP_ALIVE_SECS",
        "mcp.sse_keep_alive_secs",
    ),
    (
        "AGENTSKILLS_MCP_MAX_SESSIONS_PER_TOKEN",
        "mcp.max_sessions_per_token",
    ),
    (
        "AGENTSKILLS_MCP_MAX_LISTEN_STREAMS_PER_TOKEN",
        "mcp.max_listen_streams_per_token",
    ),
    (
        "AGENTSKILLS_MCP_MAX_BATCH_MESSAGES",
        "mcp.max_batch_messages",
    ),
    ("AGENTSKILLS_MCP_MAX_ANSWER_BYTES", "mcp.max_answer_bytes"),
    ("AGENTSKILLS_MCP_MAX_QUEUED_BYTES", "mcp.max_queued_bytes"),
    ("AGENTSKILLS_METADATA_MAX_SKILLS", "mcp.metadata_max_skills"),
    (
        "AGENTSKILLS_LOGIN_PER_IP_PER_MINUTE",
        "rate_limits.login_per_ip_per_minute",
    ),
    (
        "AGENTSKILLS_LOGIN_PER_ACCOUNT_PER_MINUTE",
        "rate_limits.login_per_account_per_minute",
    ),
    (
        "AGENTSKILLS_REGISTER_PER_IP_PER_HOUR",
        "rate_limits.register_per_ip_per_hour",
    ),
    (
        "AGENTSKILLS_OAUTH_REGISTER_PER_IP_PER_HOUR",
        "rate_limits.oauth_register_per_ip_per_hour",
    ),
    (
        "AGENTSKILLS_OAUTH_FETCH_PER_IP_PER_MINUTE",
        "rate_limits.oauth_fetch_per_ip_per_minute",
    ),
    (
        "AGENTSKILLS_OAUTH_ACCESS_TOKEN_MINUTES",
        "oauth.access_token_minutes",
    ),
    (
        "AGENTSKILLS_OAUTH_REFRESH_TOKEN_DAYS",
        "oauth.refresh_token_days",
    ),
    (
        "AGENTSKILLS_OAUTH_CIMD_ALLOW_LOOPBACK",
        "oauth.cimd_allow_loopback",
    ),
    ("AGENTSKILLS_STORAGE", "storage.backend"),
    ("AGENTSKILLS_STORAGE_PATH", "storage.path"),
    ("AGENTSKILLS_CACHE_BYTES", "storage.cache_bytes"),
    (
        "AGENTSKILLS_STORAGE_SWEEP_GRACE_SECS",
        "storage.sweep_grace_secs",
    ),
    (
        "AGENTSKILLS_IMPORT_ALLOW_PRIVATE_HOSTS",
        "import.allow_private_hosts",
    ),
    ("AGENTSKILLS_IMPORT_MAX_BYTES", "import.max_bytes"),
    ("AGENTSKILLS_IMPORT_TIMEOUT_SECS", "import.timeout_secs"),
    ("AGENTSKILLS_IMPORT_MAX_CONCURRENT", "import.max_concurrent"),
    (
        "AGENTSKILLS_IMPORT_SYNC_CHECK_SECS",
        "import.sync_check_secs",
    ),
    ("AGENTSKILLS_S3_ENDPOINT", "storage.s3.endpoint"),
    ("AGENTSKILLS_S3_BUCKET", "storage.s3.bucket"),
    ("AGENTSKILLS_S3_REGION", "storage.s3.region"),
    (
        "AGENTSKILLS_MCP_PER_TOKEN_PER_SECOND",
        "rate_limits.mcp_per_token_per_second",
    ),
    (
        "AGENTSKILLS_UPLOADS_PER_USER_PER_MINUTE",
        "rate_limits.uploads_per_user_per_minute",
    ),
    ("AGENTSKILLS_TRUSTED_PROXIES", "rate_limits.trusted_proxies"),
    ("AGENTSKILLS_SANDBOX", "sandbox.mode"),
    ("AGENTSKILLS_SANDBOX_BWRAP", "sandbox.bwrap"),
    ("AGENTSKILLS_SANDBOX_LANDLOCK", "sandbox.landlock"),
    ("AGENTSKILLS_SANDBOX_HELPER", "sandbox.helper"),
    ("AGENTSKILLS_SANDBOX_RUN_AS_UID", "sandbox.run_as_uid"),
    ("AGENTSKILLS_SANDBOX_TIMEOUT_SECS", "sandbox.timeout_secs"),
    (
        "AGENTSKILLS_SANDBOX_MAX_OUTPUT_BYTES",
        "sandbox.max_output_bytes",
    ),
    ("AGENTSKILLS_SANDBOX_CPU_SECS", "sandbox.cpu_secs"),
    ("AGENTSKILLS_SANDBOX_MEMORY_BYTES", "sandbox.memory_bytes"),
    (
        "AGENTSKILLS_SANDBOX_FILE_SIZE_BYTES",
        "sandbox.file_size_bytes",
    ),
    ("AGENTSKILLS_SANDBOX_OPEN_FILES", "sandbox.open_files"),
    ("AGENTSKILLS_SANDBOX_PROCESSES", "sandbox.processes"),
    ("AGENTSKILLS_SANDBOX_TMP_BYTES", "sandbox.tmp_bytes"),
    ("AGENTSKILLS_SANDBOX_SCRATCH_BYTES", "sandbox.scratch_bytes"),
    ("AGENTSKILLS_SANDBOX_SCRATCH_FILES", "sandbox.scratch_files"),
    ("AGENTSKILLS_SANDBOX_PER_USER", "sandbox.per_user"),
    ("AGENTSKILLS_SANDBOX_GLOBAL", "sandbox.global"),
    ("AGENTSKILLS_SANDBOX_QUEUE", "sandbox.queue"),
    ("AGENTSKILLS_LOG", "log.level"),
    ("AGENTSKILLS_LOG_FORMAT", "log.format"),
];

fn kind_of(path: &str) -> Kind {
    match path {
        "server.bind"
        | "server.data_dir"
        | "server.public_url"
        | "server.replica_id"
        | "database.url"
        | "auth.secret_key"
        | "auth.jwt_issuer"
        | "auth.jwt_audience"
        | "log.level"
        | "log.format"
        | "sandbox.mode"
        | "sandbox.bwrap"
        | "sandbox.helper"
        | "storage.backend"
        | "storage.path"
        | "storage.s3.endpoint"
        | "storage.s3.bucket"
        | "storage.s3.region" => Kind::Str,
        "sandbox.landlock" | "oauth.cimd_allow_loopback" | "import.allow_private_hosts" => {
            Kind::Bool
        }
        "mcp.allowed_origins"
        | "mcp.allowed_hosts"
        | "server.cors_allowed_origins"
        | "rate_limits.trusted_proxies" => Kind::List,
        _ => Kind::Int,
    }
}

/// The memory page tmpfs counts in.
const PAGE: u64 = 4096;

/// A configuration problem, worded for the operator: it names the setting and its source.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Loads `file` (or [`DEFAULT_CONFIG_FILE`] if it exists when `file` is `None`), then applies
    /// the process environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let (text, source) = match file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", path.display()))
                })?,
                path.display().to_string(),
            ),
            None => match std::fs::read_to_string(DEFAULT_CONFIG_FILE) {
                Ok(text) => (text, DEFAULT_CONFIG_FILE.to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (String::new(), "defaults".to_owned())
                }
                Err(e) => {
                    return Err(ConfigError(format!(
                        "cannot read config file {DEFAULT_CONFIG_FILE}: {e}"
                    )));
                }
            },
        };
        let env: Vec<(String, String)> = ENV_OVERRIDES
            .iter()
            .filter_map(|(var, _)| std::env::var(var).ok().map(|v| ((*var).to_owned(), v)))
            .collect();
        Self::from_toml_str_named(&text, &source, &env)
    }

    /// Parses TOML text and applies `env` (pairs of variable name and value), then validates.
    pub fn from_toml_str(text: &str, env: &[(String, String)]) -> Result<Settings, ConfigError> {
        Self::from_toml_str_named(text, "config", env)
    }

    fn from_toml_str_named(
        text: &str,
        source: &str,
        env: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(format!("{source}: {}", e.message())))?;
        for (var, value) in env {
            let Some((_, path)) = ENV_OVERRIDES.iter().find(|(v, _)| v == var) else {
                continue;
            };
            let value = env_value(var, path, value)?;
            set_path(&mut table, path, value);
        }
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                let from = ENV_OVERRIDES
                    .iter()
                    .find(|(var, p)| *p == path && env.iter().any(|(v, _)| v == var))
                    .map(|(var, _)| format!("environment variable {var}"))
                    .unwrap_or_else(|| source.to_owned());
                ConfigError(format!("setting `{path}` (from {from}): {}", e.inner()))
            })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail =
            |setting: &str, why: &str| Err(ConfigError(format!("setting `{setting}`: {why}")));
        if self.server.data_dir.as_os_str().is_empty() {
            return fail("server.data_dir", "must not be empty");
        }
        if let Some(replica) = &self.server.replica_id
            && (replica.is_empty()
                || replica.len() > 32
                || !replica
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return fail(
                "server.replica_id",
                "must be 1 to 32 lower-case letters, digits and `-` (such as `r1`)",
            );
        }
        for (name, value) in [
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            (
                "server.keep_alive_idle_secs",
                self.server.keep_alive_idle_secs,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
            ),
            (
                "database.connect_timeout_secs",
                self.database.connect_timeout_secs,
            ),
            (
                "database.acquire_timeout_secs",
                self.database.acquire_timeout_secs,
            ),
            ("auth.access_token_minutes", self.auth.access_token_minutes),
            ("auth.refresh_token_days", self.auth.refresh_token_days),
            (
                "tokens.last_used_flush_secs",
                self.tokens.last_used_flush_secs,
            ),
            ("tokens.sync_interval_secs", self.tokens.sync_interval_secs),
            (
                "oauth.access_token_minutes",
                self.oauth.access_token_minutes,
            ),
            ("oauth.refresh_token_days", self.oauth.refresh_token_days),
            ("sandbox.timeout_secs", self.sandbox.timeout_secs),
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
            ),
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.max_connections_per_ip",
                self.server.max_connections_per_ip as u64,
            ),
            (
                "server.http2_max_concurrent_streams",
                u64::from(self.server.http2_max_concurrent_streams),
            ),
            ("sandbox.cpu_secs", self.sandbox.cpu_secs),
            ("sandbox.open_files", self.sandbox.open_files),
            ("sandbox.processes", self.sandbox.processes),
            ("sandbox.per_user", self.sandbox.per_user as u64),
            ("import.max_bytes", self.import.max_bytes),
            ("import.timeout_secs", self.import.timeout_secs),
            (
                "import.max_concurrent",
                u64::from(self.import.max_concurrent),
            ),
            ("import.sync_check_secs", self.import.sync_check_secs),
        ] {
            if value == 0 {
                return fail(name, "must be at least 1");
            }
        }
        for proxy in &self.rate_limits.trusted_proxies {
            if proxy.parse::<std::net::IpAddr>().is_err() {
                return fail(
                    "rate_limits.trusted_proxies",
                    "each entry must be an IP address, like 10.0.0.5 or fd00::1",
                );
            }
        }
        for origin in &self.server.cors_allowed_origins {
            let well_formed = origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
            });
            if !well_formed {
                return fail(
                    "server.cors_allowed_origins",
                    "each origin must be scheme://host[:port], like https://app.example.com (no path, no *)",
                );
            }
        }
        if let Some(url) = self.server.public_url() {
            let well_formed = url.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https")
                    && rest.parse::<http::uri::Authority>().is_ok()
                    && !rest.contains(['/', '?', '#', '@'])
            });
            if !well_formed {
                return fail(
                    "server.public_url",
                    "must be scheme://host[:port], like https://skills.example.com (http or https, no path)",
                );
            }
        }
        if self.server.max_json_body_bytes < 1024 {
            return fail("server.max_json_body_bytes", "must be at least 1024");
        }
        if self.storage.backend == StorageBackend::S3 {
            if self.storage.s3.bucket.as_deref().is_none_or(str::is_empty) {
                return fail(
                    "storage.s3.bucket",
                    "must name the bucket when storage.backend is s3",
                );
            }
            if let Some(endpoint) = self
                .storage
                .s3
                .endpoint
                .as_deref()
                .filter(|e| !e.is_empty())
                && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            {
                return fail(
                    "storage.s3.endpoint",
                    "must be an http:// or https:// URL, like http://127.0.0.1:9000",
                );
            }
        }
        if self.database.max_connections == 0 {
            return fail("database.max_connections", "must be at least 1");
        }
        if let Some(url) = self.database.url.as_deref() {
            let known = url.is_empty()
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:");
            if !known {
                return fail(
                    "database.url",
                    "must be empty (SQLite in the data dir), sqlite:PATH or postgres://…",
                );
            }
        }
        if let Some(secret) = self.auth.secret_key.as_deref()
            && !secret.is_empty()
            && secret.len() < 32
        {
            return fail("auth.secret_key", "must be at least 32 bytes long");
        }
        if self.auth.jwt_issuer.is_empty() {
            return fail("auth.jwt_issuer", "must not be empty");
        }
        if self.auth.jwt_audience.is_empty() {
            return fail("auth.jwt_audience", "must not be empty");
        }
        if self.auth.access_token_minutes > 24 * 60 {
            return fail(
                "auth.access_token_minutes",
                "must be at most 1440 (one day)",
            );
        }
        if self.auth.refresh_token_days > 365 {
            return fail("auth.refresh_token_days", "must be at most 365");
        }
        if self.auth.jwt_leeway_secs > 300 {
            return fail("auth.jwt_leeway_secs", "must be at most 300");
        }
        if !(1..=24).contains(&self.auth.scrypt_log_n) {
            return fail("auth.scrypt_log_n", "must be between 1 and 24");
        }
        if self.auth.scrypt_r == 0 || self.auth.scrypt_p == 0 {
            return fail("auth.scrypt_r / auth.scrypt_p", "must be at least 1");
        }
        if scrypt::Params::new(
            self.auth.scrypt_log_n,
            self.auth.scrypt_r,
            self.auth.scrypt_p,
            32,
        )
        .is_err()
        {
            return fail("auth.scrypt_*", "these scrypt parameters are out of range");
        }
        let sk = &self.skills;
        for (name, value) in [
            ("skills.max_file_bytes", sk.max_file_bytes),
            ("skills.max_skill_bytes", sk.max_skill_bytes),
            ("skills.max_user_bytes", sk.max_user_bytes),
            ("skills.max_upload_bytes", sk.max_upload_bytes),
            ("skills.max_unpacked_bytes", sk.max_unpacked_bytes),
            ("skills.workspace_idle_secs", sk.workspace_idle_secs),
        ] {
            if value == 0 {
                return fail(name, "must be at least 1");
            }
        }
        if sk.max_skill_files == 0 {
            return fail("skills.max_skill_files", "must be at least 1");
        }
        if sk.keep_versions == 0 {
            return fail(
                "skills.keep_versions",
                "must be at least 1 (the current version is always kept)",
            );
        }
        if sk.max_file_bytes > sk.max_skill_bytes {
            return fail(
                "skills.max_file_bytes",
                "must not exceed skills.max_skill_bytes",
            );
        }
        if sk.max_skill_bytes > sk.max_user_bytes {
            return fail(
                "skills.max_skill_bytes",
                "must not exceed skills.max_user_bytes",
            );
        }
        // tmpfs reads a size or an inode count of 0 as "no limit": never what is meant.
        let sb = &self.sandbox;
        if sb.tmp_bytes < PAGE {
            return fail("sandbox.tmp_bytes", "must be at least 4096 (one page)");
        }
        // Every skill an upload can make must fit in a command's scratch space: its bytes, plus
        // up to a page per file, since tmpfs stores each file in whole pages.
        let skill_room = sk
            .max_skill_bytes
            .saturating_add((sk.max_skill_files as u64).saturating_mul(PAGE));
        if sb.scratch_bytes < skill_room {
            return fail(
                "sandbox.scratch_bytes",
                &format!(
                    "must be at least skills.max_skill_bytes plus 4096 bytes per file of \
                     skills.max_skill_files ({skill_room}), so that every skill fits in a \
                     command's scratch space"
                ),
            );
        }
        // Each file of a skill takes an inode, and so does each folder.
        let skill_inodes = (sk.max_skill_files as u64).saturating_mul(2);
        if sb.scratch_files < skill_inodes {
            return fail(
                "sandbox.scratch_files",
                &format!(
                    "must be at least twice skills.max_skill_files ({skill_inodes}), so that \
                     every skill's files and folders fit in a command's scratch space"
                ),
            );
        }
        if self.mcp.sse_keep_alive_secs == 0 {
            return fail("mcp.sse_keep_alive_secs", "must be at least 1");
        }
        if self.mcp.session_idle_secs == 0 {
            return fail("mcp.session_idle_secs", "must be at least 1");
        }
        if self.mcp.max_sessions_per_token == 0 {
            return fail("mcp.max_sessions_per_token", "must be at least 1");
        }
        if self.mcp.max_listen_streams_per_token == 0 {
            return fail("mcp.max_listen_streams_per_token", "must be at least 1");
        }
        if self.mcp.max_batch_messages == 0 {
            return fail("mcp.max_batch_messages", "must be at least 1");
        }
        // Room for the errors that replace an answer too large, and for small answers beside them.
        if self.mcp.max_answer_bytes < 4096 {
            return fail("mcp.max_answer_bytes", "must be at least 4096");
        }
        // A listing of a handful of skills would hide most of them behind a search the agent may
        // not think of; past the skills an account may hold it would never apply.
        if self.mcp.metadata_max_skills != 0
            && !(5..=100_000).contains(&self.mcp.metadata_max_skills)
        {
            return fail(
                "mcp.metadata_max_skills",
                "must be 0 (list every skill) or from 5 to 100000",
            );
        }
        // So that any one answer fits when the user's streams are empty.
        if self.mcp.max_queued_bytes < self.mcp.max_answer_bytes {
            return fail(
                "mcp.max_queued_bytes",
                "must be at least mcp.max_answer_bytes",
            );
        }
        for origin in &self.mcp.allowed_origins {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && !origin.contains(char::is_whitespace);
            if !ok {
                return fail(
                    "mcp.allowed_origins",
                    "each origin is a scheme and host (and port), like https://app.example.com, without a path",
                );
            }
        }
        if self.tokens.max_per_user == 0 {
            return fail("tokens.max_per_user", "must be at least 1");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return fail("log.level", &format!("not a valid filter: {e}"));
        }
        Ok(())
    }

    /// Password hashes computed at once: the setting, or the number of cores when it is 0.
    pub fn hash_concurrency(&self) -> usize {
        match self.auth.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The signing secret from the settings, if one is set (an empty string counts as unset).
    pub fn configured_secret(&self) -> Option<&str> {
        self.auth.secret_key.as_deref().filter(|s| !s.is_empty())
    }
}

fn env_value(var: &str, path: &str, raw: &str) -> Result<toml::Value, ConfigError> {
    match kind_of(path) {
        Kind::Str => Ok(toml::Value::String(raw.to_owned())),
        Kind::List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        )),
        Kind::Int => raw.trim().parse::<i64>().map(toml::Value::Integer).map_err(|_| {
            ConfigError(format!(
                "environment variable {var} (setting `{path}`): expected a whole number, got {raw:?}"
            ))
        }),
        Kind::Bool => match raw.trim() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(ConfigError(format!(
                "environment variable {var} (setting `{path}`): expected true or false, got {raw:?}"
            ))),
        },
    }
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let Some((section, rest)) = path.split_once('.') else {
        table.insert(path.to_owned(), value);
        return;
    };
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    // A `section = <not a table>` in the file is left for deserialization to report with the
    // setting's name.
    if let toml::Value::Table(inner) = entry {
        set_path(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn no_configuration_means_the_documented_defaults() {
        let s = Settings::from_toml_str("", &[]).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(s.server.data_dir, PathBuf::from("./data"));
        assert_eq!(s.database.url, None);
        assert_eq!(s.auth.scrypt_log_n, 17);
        assert_eq!((s.auth.scrypt_r, s.auth.scrypt_p), (8, 1));
        assert_eq!(s.auth.access_token_minutes, 30);
        assert_eq!(s.auth.refresh_token_days, 7);
    }

    #[test]
    fn the_reference_config_file_parses_to_the_defaults() {
        let text = include_str!("../config.toml");
        let s = Settings::from_toml_str(text, &[]).unwrap();
        let d = Settings::default();
        assert_eq!(format!("{s:?}"), format!("{d:?}"));
    }

    #[test]
    fn every_override_is_documented_in_the_reference_file() {
        let text = include_str!("../config.toml");
        for (var, path) in ENV_OVERRIDES {
            assert!(text.contains(var), "config.toml does not mention {var}");
            let key = path.rsplit_once('.').unwrap().1;
            assert!(text.contains(key), "config.toml does not mention {path}");
        }
    }

    #[test]
    fn the_listing_budget_is_unlimited_by_default_and_checked() {
        assert_eq!(Settings::default().mcp.metadata_max_skills, 0);
        let s = Settings::from_toml_str("", &env(&[("AGENTSKILLS_METADATA_MAX_SKILLS", "40")]))
            .unwrap();
        assert_eq!(s.mcp.metadata_max_skills, 40);
        for bad in ["3", "100001", "-1", "many"] {
            let err =
                Settings::from_toml_str("", &env(&[("AGENTSKILLS_METADATA_MAX_SKILLS", bad)]))
                    .unwrap_err();
            assert!(
                err.to_string().contains("metadata_max_skills"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_replica_is_named_by_a_short_plain_word() {
        let s = Settings::from_toml_str(
            "",
            &env(&[
                ("AGENTSKILLS_REPLICA_ID", "r-2"),
                ("AGENTSKILLS_STORAGE_PATH", "/srv/blobs"),
                ("AGENTSKILLS_STORAGE_SWEEP_GRACE_SECS", "60"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.replica_id.as_deref(), Some("r-2"));
        assert_eq!(s.storage.path, Some(PathBuf::from("/srv/blobs")));
        assert_eq!(s.storage.sweep_grace_secs, 60);
        for bad in ["", "R1", "r.1", "r 1", &"r".repeat(33)] {
            let err =
                Settings::from_toml_str("", &env(&[("AGENTSKILLS_REPLICA_ID", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("server.replica_id"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn s3_storage_is_set_by_environment_and_needs_a_bucket() {
        let s = Settings::from_toml_str(
            "[storage.s3]\nregion = \"eu-west-1\"\n",
            &env(&[
                ("AGENTSKILLS_STORAGE", "s3"),
                ("AGENTSKILLS_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("AGENTSKILLS_S3_BUCKET", "skills"),
            ]),
        )
        .unwrap();
        assert_eq!(s.storage.backend, StorageBackend::S3);
        assert_eq!(
            s.storage.s3.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(s.storage.s3.bucket.as_deref(), Some("skills"));
        assert_eq!(s.storage.s3.region, "eu-west-1");
        let err = Settings::from_toml_str("", &env(&[("AGENTSKILLS_STORAGE", "s3")])).unwrap_err();
        assert!(err.to_string().contains("storage.s3.bucket"), "{err}");
        let err = Settings::from_toml_str(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\nendpoint = \"ftp://x\"\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("storage.s3.endpoint"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = Settings::from_toml_str(
            "[server]\nbind = \"127.0.0.1:9000\"\n",
            &env(&[
                ("AGENTSKILLS_BIND", "0.0.0.0:7000"),
                ("AGENTSKILLS_SCRYPT_LOG_N", "10"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.bind, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(s.auth.scrypt_log_n, 10);
    }

    #[test]
    fn database_url_and_secret_key_keep_their_names() {
        let secret = "x".repeat(40);
        let s = Settings::from_toml_str(
            "",
            &env(&[
                ("DATABASE_URL", "postgres://u@h/db"),
                ("SECRET_KEY", &secret),
            ]),
        )
        .unwrap();
        assert_eq!(s.database.url.as_deref(), Some("postgres://u@h/db"));
        assert_eq!(s.configured_secret(), Some(secret.as_str()));
    }

    #[test]
    fn lists_come_from_the_environment_comma_separated() {
        let s = Settings::from_toml_str(
            "",
            &env(&[(
                "AGENTSKILLS_MCP_ALLOWED_ORIGINS",
                "https://a.example, http://localhost:3000",
            )]),
        )
        .unwrap();
        assert_eq!(
            s.mcp.allowed_origins,
            ["https://a.example", "http://localhost:3000"]
        );
        let err =
            Settings::from_toml_str("[mcp]\nallowed_origins = [\"a.example\"]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("mcp.allowed_origins"), "{err}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = Settings::from_toml_str("[server]\nbind = \"nowhere\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("server.bind"), "{err}");

        let err =
            Settings::from_toml_str("", &env(&[("AGENTSKILLS_SCRYPT_LOG_N", "lots")])).unwrap_err();
        assert!(
            err.to_string().contains("AGENTSKILLS_SCRYPT_LOG_N"),
            "{err}"
        );

        let err =
            Settings::from_toml_str("", &env(&[("AGENTSKILLS_BIND", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("AGENTSKILLS_BIND"), "{err}");

        let err = Settings::from_toml_str("[auth]\nsecret_key = \"short\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("auth.secret_key"), "{err}");

        let err = Settings::from_toml_str("[database]\nurl = \"mysql://x\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("database.url"), "{err}");

        let err = Settings::from_toml_str("[server]\nbindd = \"x\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("bindd"), "{err}");

        let err = Settings::from_toml_str("[auth]\nscrypt_log_n = 0\n", &[]).unwrap_err();
        assert!(err.to_string().contains("auth.scrypt_log_n"), "{err}");

        let err = Settings::from_toml_str("[log]\nformat = \"xml\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("log.format"), "{err}");
    }

    #[test]
    fn a_commands_scratch_space_must_hold_every_skill() {
        let s = Settings::from_toml_str(
            "",
            &env(&[
                ("AGENTSKILLS_SANDBOX_SCRATCH_BYTES", "33554432"),
                ("AGENTSKILLS_SANDBOX_SCRATCH_FILES", "2048"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (s.sandbox.scratch_bytes, s.sandbox.scratch_files),
            (32 * 1024 * 1024, 2048)
        );
        // 16 MiB of skill and 512 files of a page each do not fit in 17 MiB.
        let err =
            Settings::from_toml_str("[sandbox]\nscratch_bytes = 17825792\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sandbox.scratch_bytes"), "{err}");
        let err = Settings::from_toml_str("[sandbox]\nscratch_files = 1000\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sandbox.scratch_files"), "{err}");
        let err = Settings::from_toml_str("[sandbox]\ntmp_bytes = 0\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sandbox.tmp_bytes"), "{err}");
        // Smaller skills make room for a smaller scratch space.
        Settings::from_toml_str(
            "[skills]\nmax_skill_bytes = 1048576\nmax_file_bytes = 1048576\nmax_skill_files = 16\n\
             [sandbox]\nscratch_bytes = 2097152\nscratch_files = 32\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn the_limits_of_what_a_client_makes_the_server_hold_are_checked() {
        let s = Settings::from_toml_str("", &[]).unwrap();
        assert_eq!(s.mcp.max_batch_messages, 32);
        assert_eq!(s.mcp.max_answer_bytes, 16 * 1024 * 1024);
        assert_eq!(s.mcp.max_queued_bytes, 32 * 1024 * 1024);
        assert_eq!(s.server.http2_max_concurrent_streams, 64);
        for (text, setting) in [
            ("[mcp]\nmax_batch_messages = 0\n", "mcp.max_batch_messages"),
            ("[mcp]\nmax_answer_bytes = 100\n", "mcp.max_answer_bytes"),
            (
                "[mcp]\nmax_answer_bytes = 65536\nmax_queued_bytes = 65535\n",
                "mcp.max_queued_bytes",
            ),
            (
                "[server]\nhttp2_max_concurrent_streams = 0\n",
                "server.http2_max_concurrent_streams",
            ),
        ] {
            let err = Settings::from_toml_str(text, &[]).unwrap_err();
            assert!(err.to_string().contains(setting), "{text}: {err}");
        }
        let s = Settings::from_toml_str(
            "",
            &env(&[
                ("AGENTSKILLS_MCP_MAX_ANSWER_BYTES", "65536"),
                ("AGENTSKILLS_MCP_MAX_QUEUED_BYTES", "65536"),
                ("AGENTSKILLS_MCP_MAX_BATCH_MESSAGES", "4"),
                ("AGENTSKILLS_HTTP2_MAX_CONCURRENT_STREAMS", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (
                s.mcp.max_answer_bytes,
                s.mcp.max_queued_bytes,
                s.mcp.max_batch_messages,
                s.server.http2_max_concurrent_streams
            ),
            (65536, 65536, 4, 8)
        );
    }
}
