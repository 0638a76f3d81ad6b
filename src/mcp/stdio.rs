//! MCP over standard input and output: one JSON-RPC message (or batch) per line in, one per line
//! out. Logs go to standard error, so nothing but protocol reaches standard output.
//!
//! `initialize` and batches are answered in order as they arrive; every other request runs on its
//! own task, so a slow request does not hold up the next one and `notifications/cancelled` can
//! stop it (a cancelled request gets no response). When the input ends, the requests still
//! running are finished and answered before `serve` returns.
//!
//! Batches and answers have the limits of every transport ([`super::limits`]): no batches once
//! `initialize` has agreed on 2025-06-18 or later (nor before it, when requests are served in the
//! newest version), at most `mcp.max_batch_messages` messages in one, and answers of at most
//! `mcp.max_answer_bytes`, a batch's together.
//!
//! A 2026-07-28 `subscriptions/listen` opens a listen stream ([`super::listen`]): it gets no
//! answer, and its acknowledgement and notifications go to standard output tagged with its id,
//! beside every other message. The client ends it with `notifications/cancelled` naming it; when
//! the input ends, the server ends every stream still open with `notifications/cancelled` naming
//! it, the way the schema has servers end a stream on stdio. No other process tells this one of
//! changes, so while a stream is open the skills are looked at every [`CHANGE_POLL`]
//! ([`SkillSource::stamp`]): a folder as it is read again, a user's skills in the database and on
//! the disk the server beside this process writes (whose index is then loaded afresh).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use uuid::Uuid;

use super::McpServer;
use super::codes;
use super::dispatch::Caller;
use super::dispatch::{
    CANCELLED, Message, Reply, RpcError, STATELESS_VERSION, check_stateless_version, classify,
    error_response, names_stateless_version, result_response, stateless_version,
};
use super::inflight::InFlight;
use super::limits::BatchAnswer;
use super::listen::{Change, Ending, Filter, LISTEN, ListenStreams};
use super::source::{FOLDER_RESCAN, SkillSource, Stamp};

/// Answers waiting for the writer.
const OUTPUT_QUEUE: usize = 64;

/// How often the skills are looked at while a listen stream is open: as often as a folder is read
/// again, so a change shows up on a stream no later than in an answer.
pub const CHANGE_POLL: Duration = FOLDER_RESCAN;

/// Serves `caller` until `input` ends. `listen` holds the client's listen streams, at most
/// `mcp.max_listen_streams_per_token` at once (the one client's, since stdio has one).
pub async fn serve<R, W>(
    server: &McpServer,
    caller: Caller,
    listen: Arc<ListenStreams>,
    input: R,
    mut output: W,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTPUT_QUEUE);
    let writer = async move {
        while let Some(mut line) = rx.recv().await {
            line.push(b'\n');
            output.write_all(&line).await?;
            output.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let reader = async move {
        let user_id = caller.user_id;
        let mut connection = Connection {
            server: server.clone(),
            caller,
            version: None,
            inflight: Arc::new(InFlight::default()),
            running: JoinSet::new(),
            out: tx,
            watch: Arc::new(ChangeWatch {
                source: server.skills().clone(),
                user_id,
                listen: Arc::clone(&listen),
                last: tokio::sync::Mutex::new(None),
            }),
            listening: HashMap::new(),
            watcher: JoinSet::new(),
        };
        let mut lines = input.lines();
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if !line.trim().is_empty() {
                    connection.line(&line).await;
                }
            }
            Ok::<(), std::io::Error>(())
        }
        .await;
        // The input is over (or broken): the streams still open end with their
        // `notifications/cancelled`, which their tasks write before they finish.
        connection.watcher.abort_all();
        listen.close_where(|_, _| true);
        while connection.running.join_next().await.is_some() {}
        read
    };
    // The writer ends when the reader has ended and every answer is written.
    let (read, written) = tokio::join!(reader, writer);
    read.and(written)
}

/// One client's state.
struct Connection {
    server: McpServer,
    caller: Caller,
    /// The version agreed at `initialize`; none yet.
    version: Option<&'static str>,
    inflight: Arc<InFlight>,
    running: JoinSet<()>,
    /// Answers, serialized.
    out: mpsc::Sender<Vec<u8>>,
    /// Looks for changes to the skills for the listen streams.
    watch: Arc<ChangeWatch>,
    /// The open listen streams by their request's id (serialized): each one's task, which
    /// writes the stream's messages, and which `notifications/cancelled` stops.
    listening: HashMap<String, AbortHandle>,
    /// The task that runs `watch` every [`CHANGE_POLL`], once a stream has opened.
    watcher: JoinSet<()>,
}

impl Connection {
    async fn send(&self, reply: Value) {
        self.send_bytes(Reply::Value(reply).into_bytes()).await;
    }

    async fn send_bytes(&self, reply: Vec<u8>) {
        // The writer only stops on an output error, which `serve` reports.
        let _ = self.out.send(reply).await;
    }

    async fn line(&mut self, line: &str) {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            let error = RpcError::new(codes::PARSE_ERROR, "parse error: the line is not JSON");
            return self.send(error_response(None, &error)).await;
        };
        match value {
            Value::Array(items) if items.is_empty() => {
                let error =
                    RpcError::new(codes::INVALID_REQUEST, "invalid request: an empty batch");
                self.send(error_response(None, &error)).await;
            }
            Value::Array(items) => {
                // Before `initialize`, requests are served in the newest version, which has no
                // batches.
                let version = self.version.unwrap_or(super::LATEST_VERSION);
                let limits = self.server.limits();
                if let Err(error) = limits.check_batch(version, items.len(), "per line") {
                    return self.send(error_response(None, &error)).await;
                }
                let mut answer = BatchAnswer::new(limits.max_answer_bytes);
                for item in &items {
                    match classify(item) {
                        // The batch's answer is full: the rest is not run.
                        Ok(Message::Request { id, .. }) if answer.is_full() => answer.skip(id),
                        Err((id, error)) => answer.error(id, &error),
                        _ => {
                            if let Some(reply) = self.message(item, false).await {
                                answer.push(item.get("id"), reply);
                            }
                        }
                    }
                }
                if let Some(answer) = answer.finish() {
                    self.send_bytes(answer).await;
                }
            }
            single => {
                if let Some(reply) = self.message(&single, true).await {
                    self.send_bytes(reply).await;
                }
            }
        }
    }

    /// Handles one message: its reply now (serialized, within `mcp.max_answer_bytes`), or `None`
    /// (a notification, or a request that answers later on its own task when `spawn` is set).
    async fn message(&mut self, message: &Value, spawn: bool) -> Option<Vec<u8>> {
        match classify(message) {
            Ok(Message::Request {
                id,
                method: "initialize",
                params,
            }) if self.version.is_none() => {
                let reply = match self.server.initialize(params) {
                    Ok(negotiated) => {
                        self.version = Some(negotiated.version);
                        result_response(id, negotiated.result)
                    }
                    Err(error) => error_response(Some(id), &error),
                };
                Some(Reply::Value(reply).into_bytes())
            }
            Ok(Message::Request { id, method, params }) => {
                // A request naming its version in `_meta` is served statelessly (2026-07-28).
                let version = if names_stateless_version(params) {
                    let checked = stateless_version(params).and_then(check_stateless_version);
                    if let Err(error) = checked {
                        return Some(Reply::Value(error_response(Some(id), &error)).into_bytes());
                    }
                    STATELESS_VERSION
                } else {
                    self.version.unwrap_or(super::LATEST_VERSION)
                };
                if method == LISTEN && version == STATELESS_VERSION {
                    let opened = if spawn {
                        self.listen(id, params).await
                    } else {
                        Err(RpcError::new(
                            codes::INVALID_REQUEST,
                            "subscriptions/listen opens a stream: send it on a line of its own",
                        ))
                    };
                    return opened
                        .err()
                        .map(|error| Reply::Value(error_response(Some(id), &error)).into_bytes());
                }
                let (id, method, params) = (id.clone(), method.to_owned(), params.cloned());
                let server = self.server.clone();
                let inflight = Arc::clone(&self.inflight);
                let caller = self.caller;
                let work = async move {
                    let answer = server.request(caller, version, &id, &method, params.as_ref());
                    let answer = inflight.run(&id, answer).await?;
                    Some(server.bounded(Reply::Value(answer), &id, version, &method))
                };
                if !spawn {
                    return work.await;
                }
                let out = self.out.clone();
                self.running.spawn(async move {
                    if let Some(reply) = work.await {
                        let _ = out.send(reply).await;
                    }
                });
                // Reap finished tasks so a long session does not accumulate them.
                while self.running.try_join_next().is_some() {}
                None
            }
            Ok(Message::Notification {
                method: CANCELLED,
                params,
            }) => {
                self.inflight.cancel(params);
                // Or a listen stream: it ends at once, and the server sends nothing more for it.
                let stream = params
                    .and_then(|p| p.get("requestId"))
                    .and_then(|id| self.listening.remove(&id.to_string()));
                if let Some(task) = stream {
                    task.abort();
                }
                None
            }
            Ok(Message::Notification { .. } | Message::Response) => None,
            Err((id, error)) => Some(Reply::Value(error_response(id, &error)).into_bytes()),
        }
    }

    /// Opens the listen stream of request `id`, whose messages a task of its own writes.
    async fn listen(&mut self, id: &Value, params: Option<&Value>) -> Result<(), RpcError> {
        let key = id.to_string();
        if self.listening.get(&key).is_some_and(|t| !t.is_finished()) {
            // Its id is what tells its notifications from another stream's.
            return Err(RpcError::new(
                codes::INVALID_REQUEST,
                "a listen stream with this id is open; listen with another id",
            ));
        }
        let filter = Filter::from_params(params)?;
        // What changed before the stream opens is not its news, and what changes after must
        // be: the watch looks now (telling the streams already open of a change it finds), and
        // the new stream joins after.
        self.watch.look().await;
        if self.watcher.is_empty() {
            let watch = Arc::clone(&self.watch);
            self.watcher.spawn(async move {
                let mut ticks = tokio::time::interval(CHANGE_POLL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if !watch.listen.is_empty() {
                        watch.look().await;
                    }
                }
            });
        }
        let mut stream = self
            .watch
            .listen
            .open(
                self.caller.user_id,
                Uuid::nil(),
                id,
                filter,
                Ending::Cancelled,
            )
            .map_err(|refused| refused.rpc_error())?;
        let out = self.out.clone();
        let task = self.running.spawn(async move {
            while let Some(message) = stream.recv().await {
                if out.send(message.to_vec()).await.is_err() {
                    break;
                }
            }
        });
        self.listening.insert(key, task);
        // Forget the streams that have ended, so a long session does not accumulate them.
        self.listening.retain(|_, task| !task.is_finished());
        Ok(())
    }
}

/// Looks for changes someone else made to the skills this server serves (by hand in a folder, or
/// through the HTTP server beside it), and tells the listen streams of them.
struct ChangeWatch {
    source: SkillSource,
    user_id: Uuid,
    listen: Arc<ListenStreams>,
    /// The stamp of the last look; none before the first.
    last: tokio::sync::Mutex<Option<Stamp>>,
}

impl ChangeWatch {
    async fn look(&self) {
        let mut last = self.last.lock().await;
        let now = match self.source.stamp(self.user_id).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for changes to the skills");
                return;
            }
        };
        if last.as_ref() == Some(&now) {
            return;
        }
        let first = last.replace(now).is_none();
        // What is served must be at least as new as the stamp: on the first look, an index
        // loaded earlier may be older than it.
        self.source.reload(self.user_id).await;
        if !first {
            self.listen
                .notify_user(self.user_id, Change::ResourcesListChanged);
        }
    }
}
