//! The MCP dispatcher: one JSON-RPC message in, at most one response out.
//!
//! Messages are taken as `serde_json::Value` first so that each kind of mistake gets its own
//! JSON-RPC code: not JSON at all is -32700 (the transport's job), not a JSON-RPC 2.0 message is
//! -32600, an unknown method -32601, parameters of the wrong shape -32602. Parameters and results
//! use `rmcp::model` types.

use rmcp::model::{
    CallToolRequestParams, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    ReadResourceRequestParams,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::codes;
use super::source::SkillSource;
use super::{LATEST_VERSION, SUPPORTED_VERSIONS, resources, tools};
use crate::error::AppError;

/// The first protocol version without `initialize`, whose results carry `resultType`.
const STATELESS_VERSION: &str = "2026-07-28";

/// The levels of `logging/setLevel` (RFC 5424 severities).
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// What a request is answered with when it fails.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(codes::INVALID_PARAMS, message)
    }
}

impl From<AppError> for RpcError {
    fn from(e: AppError) -> RpcError {
        if e.status() >= 500 {
            tracing::error!(error = %e, cause = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default(), "MCP request failed");
        }
        RpcError::new(codes::INTERNAL_ERROR, e.to_string())
    }
}

/// A JSON-RPC error response (`id` is null when the request's id could not be read).
pub fn error_response(id: Option<&Value>, error: &RpcError) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": error.code, "message": error.message},
    })
}

/// What a cancelled request is answered with where an answer cannot be left out (a plain JSON
/// reply to an HTTP POST); everywhere else a cancelled request gets no response.
pub fn cancelled_response(id: &Value) -> Value {
    error_response(
        Some(id),
        &RpcError::new(codes::REQUEST_CANCELLED, "request cancelled"),
    )
}

/// The notification that cancels a request.
pub const CANCELLED: &str = "notifications/cancelled";

pub fn result_response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// What one message is.
#[derive(Debug)]
pub enum Message<'a> {
    Request {
        id: &'a Value,
        method: &'a str,
        params: Option<&'a Value>,
    },
    Notification {
        method: &'a str,
        params: Option<&'a Value>,
    },
    /// A response to a request of ours (this server sends none yet); accepted and ignored.
    Response,
}

/// Classifies a JSON value as a JSON-RPC 2.0 message, or says why it is not one (-32600).
pub fn classify(value: &Value) -> Result<Message<'_>, (Option<&Value>, RpcError)> {
    let invalid =
        |why: &str| RpcError::new(codes::INVALID_REQUEST, format!("invalid request: {why}"));
    let Some(object) = value.as_object() else {
        return Err((None, invalid("a message is a JSON object")));
    };
    let id = object.get("id");
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((id, invalid("`jsonrpc` must be \"2.0\"")));
    }
    let method = object.get("method");
    match (method, id) {
        (Some(Value::String(method)), Some(id)) => {
            if !(id.is_string() || id.is_i64() || id.is_u64()) {
                return Err((None, invalid("`id` must be a string or an integer")));
            }
            let params = object.get("params");
            if params.is_some_and(|p| !p.is_object() && !p.is_null()) {
                return Err((Some(id), invalid("`params` must be an object")));
            }
            Ok(Message::Request {
                id,
                method,
                params: params.filter(|p| p.is_object()),
            })
        }
        (Some(Value::String(method)), None) => Ok(Message::Notification {
            method,
            params: object.get("params").filter(|p| p.is_object()),
        }),
        (Some(_), _) => Err((id, invalid("`method` must be a string"))),
        (None, Some(_)) if object.contains_key("result") || object.contains_key("error") => {
            Ok(Message::Response)
        }
        (None, _) => Err((
            id,
            invalid("a message needs a `method`, or a `result` or `error`"),
        )),
    }
}

/// The outcome of `initialize`.
#[derive(Debug)]
pub struct Negotiated {
    pub version: &'static str,
    pub result: Value,
}

/// The protocol itself, shared by every transport.
#[derive(Clone, Debug)]
pub struct McpServer {
    skills: SkillSource,
    /// Largest file `read_reference_file` and `resources/read` return.
    max_read_bytes: u64,
}

impl McpServer {
    pub fn new(skills: SkillSource, max_read_bytes: u64) -> McpServer {
        McpServer {
            skills,
            max_read_bytes,
        }
    }

    /// Answers `initialize`: the version is the client's if this server speaks it, else the newest
    /// this server speaks (the client then decides whether to go on).
    pub fn initialize(&self, params: Option<&Value>) -> Result<Negotiated, RpcError> {
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params("initialize needs `protocolVersion`"))?;
        if params
            .and_then(|p| p.get("capabilities"))
            .is_none_or(|c| !c.is_object())
        {
            return Err(RpcError::invalid_params(
                "initialize needs `capabilities` (an object)",
            ));
        }
        let version = SUPPORTED_VERSIONS
            .iter()
            .copied()
            .find(|v| *v == requested)
            .unwrap_or(LATEST_VERSION);
        // rmcp builds this only with its `server` feature (which brings its whole transport), so
        // it is written out here.
        let result = json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": true},
                "resources": {"listChanged": true},
                "logging": {},
                "completions": {},
            },
            "serverInfo": {"name": "agentskills-mcp", "version": env!("CARGO_PKG_VERSION")},
            "instructions": tools::INSTRUCTIONS,
        });
        Ok(Negotiated { version, result })
    }

    /// Answers one request of `user_id`'s session (anything but `initialize`), in the session's
    /// protocol `version`.
    pub async fn request(
        &self,
        user_id: Uuid,
        version: &str,
        id: &Value,
        method: &str,
        params: Option<&Value>,
    ) -> Value {
        match self.route(user_id, method, params).await {
            Ok(mut result) => {
                // `resultType` (rmcp sets it) exists from 2026-07-28 on; older peers must not get
                // a field their schema does not have.
                if version < STATELESS_VERSION
                    && let Value::Object(map) = &mut result
                {
                    map.remove("resultType");
                }
                result_response(id, result)
            }
            Err(error) => error_response(Some(id), &error),
        }
    }

    async fn route(
        &self,
        user_id: Uuid,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Value, RpcError> {
        match method {
            "ping" => Ok(json!({})),
            "initialize" => Err(RpcError::new(
                codes::INVALID_REQUEST,
                "this session is already initialized; open a new session to initialize again",
            )),
            "tools/list" => to_value(&ListToolsResult::with_all_items(tools::definitions())),
            "tools/call" => {
                let call: CallToolRequestParams = parse_params(params)?;
                let index = self.skills.index(user_id).await?;
                let result = tools::call(&index, self, &call).await?;
                to_value(&result)
            }
            "resources/list" => {
                let cursor = params.and_then(|p| p.get("cursor")).and_then(Value::as_str);
                let index = self.skills.index(user_id).await?;
                let (items, next) = resources::list(&index, cursor)?;
                let mut result = ListResourcesResult::with_all_items(items);
                result.next_cursor = next;
                to_value(&result)
            }
            "resources/templates/list" => to_value(&ListResourceTemplatesResult::with_all_items(
                resources::templates(),
            )),
            "resources/read" => {
                let read: ReadResourceRequestParams = parse_params(params)?;
                let index = self.skills.index(user_id).await?;
                let result = resources::read(&index, self, &read.uri).await?;
                to_value(&result)
            }
            "completion/complete" => {
                let index = self.skills.index(user_id).await?;
                resources::complete(&index, params)
            }
            "logging/setLevel" => {
                // This server sends no log messages; the level is checked and accepted.
                let level = params.and_then(|p| p.get("level")).and_then(Value::as_str);
                match level {
                    Some(l) if LOG_LEVELS.contains(&l) => Ok(json!({})),
                    _ => Err(RpcError::invalid_params(format!(
                        "`level` must be one of {}",
                        LOG_LEVELS.join(", ")
                    ))),
                }
            }
            other => Err(RpcError::new(
                codes::METHOD_NOT_FOUND,
                format!("method not found: {other}"),
            )),
        }
    }

    pub(crate) fn skills(&self) -> &SkillSource {
        &self.skills
    }

    pub(crate) fn max_read_bytes(&self) -> u64 {
        self.max_read_bytes
    }
}

fn parse_params<T: DeserializeOwned>(params: Option<&Value>) -> Result<T, RpcError> {
    let value = params.cloned().unwrap_or_else(|| json!({}));
    serde_json::from_value(value)
        .map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(|e| RpcError::new(codes::INTERNAL_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_classified_with_the_right_codes() {
        let ok = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        assert!(matches!(
            classify(&ok),
            Ok(Message::Request { method: "ping", .. })
        ));
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(matches!(classify(&note), Ok(Message::Notification { .. })));
        let reply = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert!(matches!(classify(&reply), Ok(Message::Response)));
        for bad in [
            json!([]),
            json!("ping"),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
            json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}),
            json!({"jsonrpc": "2.0", "id": 1}),
        ] {
            let Err((_, e)) = classify(&bad) else {
                panic!("{bad} accepted")
            };
            assert_eq!(e.code, codes::INVALID_REQUEST, "{bad}");
        }
    }
}
