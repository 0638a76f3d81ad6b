//! MCP over standard input and output: one JSON-RPC message (or batch) per line in, one per line
//! out. Logs go to standard error, so nothing but protocol reaches standard output.

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _};
use uuid::Uuid;

use super::McpServer;
use super::codes;
use super::dispatch::{Message, RpcError, classify, error_response, result_response};

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
    let mut lines = input.lines();
    // The version agreed at `initialize`; none yet.
    let mut version: Option<&'static str> = None;
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        for reply in handle_line(server, user_id, &line, &mut version).await {
            let mut bytes = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            output.write_all(&bytes).await?;
        }
        output.flush().await?;
    }
    Ok(())
}

async fn handle_line(
    server: &McpServer,
    user_id: Uuid,
    line: &str,
    version: &mut Option<&'static str>,
) -> Vec<Value> {
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return vec![error_response(
            None,
            &RpcError::new(codes::PARSE_ERROR, "parse error: the line is not JSON"),
        )];
    };
    let (messages, batch) = match value {
        Value::Array(items) if items.is_empty() => {
            return vec![error_response(
                None,
                &RpcError::new(codes::INVALID_REQUEST, "invalid request: an empty batch"),
            )];
        }
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    let mut replies = Vec::new();
    for message in &messages {
        match classify(message) {
            Ok(Message::Request {
                id,
                method: "initialize",
                params,
            }) if version.is_none() => match server.initialize(params) {
                Ok(negotiated) => {
                    *version = Some(negotiated.version);
                    replies.push(result_response(id, negotiated.result));
                }
                Err(error) => replies.push(error_response(Some(id), &error)),
            },
            Ok(Message::Request { id, method, params }) => {
                replies.push(
                    server
                        .request(
                            user_id,
                            version.unwrap_or(super::LATEST_VERSION),
                            id,
                            method,
                            params,
                        )
                        .await,
                );
            }
            Ok(Message::Notification { .. } | Message::Response) => {}
            Err((id, error)) => replies.push(error_response(id, &error)),
        }
    }
    if batch && !replies.is_empty() {
        vec![Value::Array(replies)]
    } else {
        replies
    }
}
