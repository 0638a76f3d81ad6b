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

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::McpServer;
use super::codes;
use super::dispatch::{
    CANCELLED, Message, Reply, RpcError, STATELESS_VERSION, check_stateless_version, classify,
    error_response, names_stateless_version, result_response, stateless_version,
};
use super::inflight::InFlight;
use super::limits::BatchAnswer;

/// Answers waiting for the writer.
const OUTPUT_QUEUE: usize = 64;

/// Serves `user_id` until `input` ends.
pub async fn serve<R, W>(
    server: &McpServer,
    user_id: Uuid,
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
        let mut connection = Connection {
            server: server.clone(),
            user_id,
            version: None,
            inflight: Arc::new(InFlight::default()),
            running: JoinSet::new(),
            out: tx,
        };
        let mut lines = input.lines();
        while let Some(line) = lines.next_line().await? {
            if !line.trim().is_empty() {
                connection.line(&line).await;
            }
        }
        while connection.running.join_next().await.is_some() {}
        Ok::<(), std::io::Error>(())
    };
    // The writer ends when the reader has ended and every answer is written.
    let (read, written) = tokio::join!(reader, writer);
    read.and(written)
}

/// One client's state.
struct Connection {
    server: McpServer,
    user_id: Uuid,
    /// The version agreed at `initialize`; none yet.
    version: Option<&'static str>,
    inflight: Arc<InFlight>,
    running: JoinSet<()>,
    /// Answers, serialized.
    out: mpsc::Sender<Vec<u8>>,
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
                let (id, method, params) = (id.clone(), method.to_owned(), params.cloned());
                let server = self.server.clone();
                let inflight = Arc::clone(&self.inflight);
                let user_id = self.user_id;
                let work = async move {
                    let answer = server.request(user_id, version, &id, &method, params.as_ref());
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
                None
            }
            Ok(Message::Notification { .. } | Message::Response) => None,
            Err((id, error)) => Some(Reply::Value(error_response(id, &error)).into_bytes()),
        }
    }
}
