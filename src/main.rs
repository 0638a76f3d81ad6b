//! The `agentskills-mcp` command: serve (the default), migrate, and the operator's user commands.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use agentskills_mcp::actors::workspaces::Workspaces;
use agentskills_mcp::app::{App, password_hasher};
use agentskills_mcp::config::{LogFormat, Settings};
use agentskills_mcp::domain::{ApiTokenSecret, Email, Password, Scopes, Username};
use agentskills_mcp::mcp::dispatch::Caller;
use agentskills_mcp::mcp::{FolderSource, McpServer, SkillSource};
use agentskills_mcp::store::{self, NewUser, Store, UserRecord};

#[derive(Parser)]
#[command(
    name = "agentskills-mcp",
    version,
    about = "Hosts Agent Skills for many users and serves them over MCP"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone)]
struct Common {
    /// Settings file (default: ./config.toml if it exists).
    #[arg(long, global = true, value_name = "FILE", env = "AGENTSKILLS_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: SQLite database, signing secret, users' skills (default ./data).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API and MCP (the default).
    Serve {
        /// Address to listen on (default 127.0.0.1:8000).
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Serve MCP over standard input and output: a user's skills (`--token`, using the configured
    /// database), or a plain folder of skills with no database (`--skills-dir`).
    #[command(group(clap::ArgGroup::new("source").required(true).args(["token", "skills_dir"])))]
    Stdio {
        /// An API token (ask_live_…); also read from AGENTSKILLS_TOKEN, which keeps it out of `ps`.
        #[arg(long, env = "AGENTSKILLS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A folder holding one folder per skill, each with its SKILL.md.
        #[arg(long, value_name = "DIR")]
        skills_dir: Option<PathBuf>,
    },
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: String,
    },
    /// List users.
    List,
    /// Deactivate a user: their logins, sessions and API tokens stop working.
    Deactivate {
        /// Email, username or id.
        user: String,
    },
    /// Reactivate a deactivated user.
    Activate {
        /// Email, username or id.
        user: String,
    },
}

fn main() -> ExitCode {
    // The sandbox's own step (see `sandbox::init`): before anything else, with no configuration,
    // logging or runtime, since it only restricts itself and becomes the command.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "sandbox-init") {
        let ran = agentskills_mcp::sandbox::init::InitArgs::parse(args)
            .map_err(|e| format!("sandbox-init: {e}"))
            .and_then(|init| agentskills_mcp::sandbox::init::run(&init));
        return match ran {
            Ok(code) => ExitCode::from(code),
            Err(why) => {
                eprintln!("{why}");
                ExitCode::from(126)
            }
        };
    }
    let cli = Cli::parse();
    let mut settings = match Settings::load(cli.common.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("agentskills-mcp: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = cli.common.data_dir {
        settings.server.data_dir = dir;
    }
    if let Some(Command::Serve { bind: Some(bind) }) = &cli.command {
        settings.server.bind = *bind;
    }
    // Held to the end of `main`: dropping it writes the lines still queued.
    let _log_writer = init_logging(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("agentskills-mcp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve { bind: None }) {
            Command::Serve { .. } => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::Stdio { token, skills_dir } => stdio(settings, token, skills_dir).await,
            Command::User(command) => user(settings, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentskills-mcp: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Raises the soft limit on open files to the hard limit, as servers that hold many connections
/// do (Go's runtime does it for every program): each connection is a file, and the soft limit is
/// often 1024 while the hard limit allows far more. Warns when even the hard limit is below
/// `server.max_connections` and some headroom for the database, blobs and the sandbox; raising
/// the hard limit is the operator's (`ulimit -Hn`, systemd's `LimitNOFILE=`, Docker's
/// `--ulimit nofile=`).
fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut raised = limit;
    raised.current = limit.maximum;
    let now = if raised.current != limit.current && setrlimit(Resource::Nofile, raised).is_ok() {
        limit.maximum
    } else {
        limit.current
    };
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(1024);
    match now {
        Some(n) if n < wanted => tracing::warn!(
            open_files = n,
            max_connections,
            "the open files limit is below server.max_connections plus 1024 for files and the \
             database; connections past it are refused: raise the hard limit (ulimit -Hn, \
             LimitNOFILE=) or lower server.max_connections"
        ),
        n => tracing::debug!(open_files = ?n, "open files limit"),
    }
}

fn init_logging(settings: &Settings) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_new(&settings.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines go to stderr from a thread of their own, which writes whatever has queued up in one
    // go: a request never waits for stderr, and a busy server makes one write per batch instead of
    // one per line. Not lossy: when the queue is full, loggers wait rather than drop. The queue
    // is allocated and touched whole at start, so it is kept to 8k lines (256 KiB; the default's
    // 128k lines are 4 MiB of resident memory on an idle server).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(8 * 1024)
        .thread_name("agentskills-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

async fn serve(settings: Settings) -> CliResult {
    raise_open_files_limit(settings.server.max_connections);
    let app = App::build(settings).await?;
    let url = format!("http://{}", app.local_addr());
    tracing::info!("listening on {url}");
    // The console is where a person begins: it is at the public URL when one is set.
    let console = app
        .state()
        .settings
        .server
        .public_url()
        .map_or_else(|| url.clone(), str::to_owned);
    tracing::info!("web console: open {console}/ in a browser to sign up and upload skills");
    tracing::info!(
        "begin with: curl -X POST {url}/api/v1/auth/register -H 'Content-Type: application/json' -d '{{\"email\":\"you@example.com\",\"username\":\"you\",\"password\":\"a long password\"}}'"
    );
    app.run_until_stopped(shutdown_signal()).await;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => Some(term),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
            None
        }
    };
    let terminated = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminated => tracing::info!("SIGTERM received"),
    }
}

async fn stdio(
    settings: Settings,
    token: Option<String>,
    skills_dir: Option<PathBuf>,
) -> CliResult {
    let max_read = settings.skills.max_file_bytes;
    let (source, caller) = match (token, skills_dir) {
        (_, Some(dir)) => {
            if !dir.is_dir() {
                return Err(format!("--skills-dir {}: not a folder", dir.display()).into());
            }
            let folder = FolderSource::new(dir, max_read);
            (
                SkillSource::Folder(std::sync::Arc::new(folder)),
                Caller::everything(uuid::Uuid::nil()),
            )
        }
        (Some(token), None) => {
            let secret = ApiTokenSecret::parse(token.trim())
                .ok_or("--token: not an API token (they look like ask_live_ and 64 hex digits)")?;
            let store = open_store(&settings).await?;
            let hash = secret.hash();
            let caller = store
                .live_api_tokens(store::now())
                .await?
                .into_iter()
                .find(|t| t.token_hash == hash)
                .map(|t| Caller {
                    user_id: t.user_id,
                    scopes: Scopes::from_stored(&t.scopes),
                })
                .ok_or("--token: the API token is unknown, revoked or expired")?;
            let skills_root = settings.server.data_dir.join("skills");
            let blobs = agentskills_mcp::storage::BlobStore::from_settings(&settings)?;
            let workspaces =
                Workspaces::start_reader(store, blobs, skills_root, settings.skills.clone())
                    .await?;
            (SkillSource::Accounts(workspaces), caller)
        }
        (None, None) => return Err("give --token or --skills-dir".into()),
    };
    let sandbox =
        agentskills_mcp::sandbox::Sandbox::start(&settings.sandbox, std::sync::Arc::default())
            .await;
    let limits = agentskills_mcp::mcp::limits::Limits::from_settings(&settings.mcp);
    let server = McpServer::new(source, max_read, limits, sandbox);
    let input = tokio::io::BufReader::new(tokio::io::stdin());
    let listen = std::sync::Arc::new(agentskills_mcp::mcp::listen::ListenStreams::new(
        settings.mcp.max_listen_streams_per_token,
    ));
    agentskills_mcp::mcp::stdio::serve(&server, caller, listen, input, tokio::io::stdout()).await?;
    Ok(())
}

async fn open_store(settings: &Settings) -> Result<Store, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&settings.server.data_dir)?;
    Ok(Store::open(&settings.database, &settings.server.data_dir).await?)
}

async fn migrate(settings: Settings) -> CliResult {
    // Opening the store applies pending migrations; a second call reports that none are left.
    let store = open_store(&settings).await?;
    // Skills a release before versions wrote become version 1, as the server's start does it
    // (run with the server stopped, like any migration).
    let blobs = agentskills_mcp::storage::BlobStore::from_settings(&settings)?;
    let workspaces = Workspaces::start(
        store.clone(),
        blobs,
        settings.server.data_dir.join("skills"),
        settings.skills.clone(),
    )
    .await?;
    let users = agentskills_mcp::app::versions_for_old_skills(&store, &workspaces).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "database ({}) is up to date", store.backend().as_str())?;
    if users > 0 {
        writeln!(
            out,
            "recorded the skills of {users} user(s) from before versions as their version 1"
        )?;
    }
    Ok(())
}

async fn user(settings: Settings, command: UserCommand) -> CliResult {
    let store = open_store(&settings).await?;
    let mut out = std::io::stdout().lock();
    match command {
        UserCommand::Create { email, username } => {
            let email = Email::parse(&email).map_err(|e| format!("email {e}"))?;
            let username = Username::parse(&username).map_err(|e| format!("username {e}"))?;
            let password =
                Password::parse(read_password()?).map_err(|e| format!("password {e}"))?;
            let password_hash = password_hasher(&settings).hash(&password).await?;
            let user = store
                .insert_user(&NewUser {
                    id: uuid::Uuid::new_v4(),
                    email: email.as_str().to_owned(),
                    username: username.as_str().to_owned(),
                    password_hash,
                    created_at: store::now(),
                })
                .await?;
            writeln!(out, "created user {} ({})", user.username, user.id)?;
        }
        UserCommand::List => {
            writeln!(
                out,
                "{:<36}  {:<6}  {:<24}  email",
                "id", "active", "username"
            )?;
            for u in store.list_users().await? {
                writeln!(
                    out,
                    "{:<36}  {:<6}  {:<24}  {}",
                    u.id, u.is_active, u.username, u.email
                )?;
            }
        }
        UserCommand::Deactivate { user } => {
            let found = find_user(&store, &user).await?;
            store.set_active(found.id, false, store::now()).await?;
            writeln!(
                out,
                "deactivated {} ({}); a running server stops their tokens within tokens.sync_interval_secs",
                found.username, found.id
            )?;
        }
        UserCommand::Activate { user } => {
            let found = find_user(&store, &user).await?;
            store.set_active(found.id, true, store::now()).await?;
            writeln!(out, "activated {} ({})", found.username, found.id)?;
        }
    }
    Ok(())
}

async fn find_user(store: &Store, key: &str) -> Result<UserRecord, Box<dyn std::error::Error>> {
    let found = if let Ok(id) = uuid::Uuid::parse_str(key) {
        store.user_by_id(id).await?
    } else if key.contains('@') {
        store.user_by_email(&Email::normalize(key)).await?
    } else {
        store.user_by_username(key).await?
    };
    found.ok_or_else(|| format!("no user {key:?}").into())
}

/// The password from the terminal (not echoed) or the first line of piped standard input.
fn read_password() -> Result<String, Box<dyn std::error::Error>> {
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("password: ")?);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
