//! The MCP dispatcher: one JSON-RPC message in, at most one response out.
//!
//! Messages are taken as `serde_json::Value` first so that each kind of mistake gets its own
//! JSON-RPC code: not JSON at all is -32700 (the transport's job), not a JSON-RPC 2.0 message is
//! -32600, an unknown method -32601, parameters of the wrong shape -32602. Parameters and results
//! use `rmcp::model` types.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, ReadResourceRequestParams,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::codes;
use super::limits::{Limits, MAX_ANSWER_BYTES, limit_error};
use super::recent::RecentUse;
use super::source::SkillSource;
use super::{LATEST_VERSION, SUPPORTED_VERSIONS, resources, skills_extension, tools};
use crate::actors::workspace::SkillIndex;
use crate::domain::Scopes;
use crate::error::AppError;
use crate::sandbox::Sandbox;

/// The first protocol version without `initialize`: each request carries its version and the
/// client's capabilities in `_meta`, and results carry `resultType` (and cache hints).
pub const STATELESS_VERSION: &str = "2026-07-28";

/// The `_meta` keys of a stateless request.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Methods of the handshake era that stateless requests no longer have.
const REMOVED_METHODS: [&str; 5] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// Results a client may cache, and for how long (milliseconds) and for whom. What every user
/// gets alike (the tools, the template) is public and stable; anything drawn from a user's skills
/// is private and may change at any upload, so it is not to be reused.
fn cache_hints(method: &str) -> Option<(u64, &'static str)> {
    match method {
        "server/discover" | "tools/list" | "prompts/list" | "resources/templates/list" => {
            Some((3_600_000, "public"))
        }
        "resources/list"
        | "resources/read"
        | "skills/list"
        | "skills/get"
        | "resources/directory/read" => Some((0, "private")),
        _ => None,
    }
}

/// The protocol version a stateless request names in its `_meta`; -32602 when `_meta` or one of
/// its required keys is missing.
pub fn stateless_version(params: Option<&Value>) -> Result<&str, RpcError> {
    let meta = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "invalid params: a request without a session needs `_meta` with `{META_VERSION}` and `{META_CAPABILITIES}`"
            ))
        })?;
    if !meta.get(META_CAPABILITIES).is_some_and(Value::is_object) {
        return Err(RpcError::invalid_params(format!(
            "invalid params: `_meta` needs `{META_CAPABILITIES}` (an object)"
        )));
    }
    meta.get(META_VERSION)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "invalid params: `_meta` needs `{META_VERSION}` (a string)"
            ))
        })
}

/// Whether a request names a protocol version in `_meta` (and so asks to be served statelessly).
pub fn names_stateless_version(params: Option<&Value>) -> bool {
    params
        .and_then(|p| p.get("_meta"))
        .is_some_and(|m| m.get(META_VERSION).is_some())
}

/// -32022 unless `version` is served statelessly.
pub fn check_stateless_version(version: &str) -> Result<(), RpcError> {
    if version == STATELESS_VERSION {
        return Ok(());
    }
    Err(RpcError::new(
        codes::UNSUPPORTED_PROTOCOL_VERSION,
        format!("unsupported protocol version {version:?}; requests without a session speak {STATELESS_VERSION}"),
    )
    .with_data(json!({"supported": [STATELESS_VERSION], "requested": version})))
}

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
    /// The error's `data`, where the protocol defines one.
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
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
    let mut body = json!({"code": error.code, "message": error.message});
    if let Some(data) = &error.data {
        body["data"] = data.clone();
    }
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": body,
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

/// Shapes a result for its protocol era: `resultType` and the cache hints from 2026-07-28 on,
/// none of them before.
fn shape(result: &mut Value, stateless: bool, method: &str) {
    let Value::Object(map) = result else {
        return;
    };
    if stateless {
        map.entry("resultType").or_insert_with(|| json!("complete"));
        if let Some((ttl, scope)) = cache_hints(method) {
            map.entry("ttlMs").or_insert_with(|| json!(ttl));
            map.entry("cacheScope").or_insert_with(|| json!(scope));
        }
    } else {
        // These exist from 2026-07-28 on; older peers must not get fields their schema does not
        // have.
        map.remove("resultType");
        map.remove("ttlMs");
        map.remove("cacheScope");
    }
}

/// The response to request `id`: its result shaped for the era, or its error.
fn respond(id: &Value, stateless: bool, method: &str, outcome: Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(mut result) => {
            shape(&mut result, stateless, method);
            result_response(id, result)
        }
        Err(mut error) => {
            // An unknown resource is -32602 from 2026-07-28 on (SEP-2164), -32002 before.
            if stateless && error.code == codes::RESOURCE_NOT_FOUND {
                error.code = codes::INVALID_PARAMS;
            }
            error_response(Some(id), &error)
        }
    }
}

/// A `tools/call` result as a session of any handshake-era version gets it (they are all
/// shaped alike), serialized; empty if it does not serialize.
pub(super) fn session_result_json(result: &rmcp::model::CallToolResult) -> String {
    let Ok(mut value) = serde_json::to_value(result) else {
        return String::new();
    };
    shape(&mut value, false, "tools/call");
    serde_json::to_string(&value).unwrap_or_default()
}

/// What [`session_result_json`] makes of a successful result of one text block, the text given
/// in pieces already escaped as inside a JSON string ([`json_escaped`]): written without building
/// the result or a JSON tree (a test holds the two to the same bytes).
pub(super) fn session_text_result_json<'a>(escaped: impl IntoIterator<Item = &'a str>) -> String {
    const START: &str = r#"{"content":[{"text":""#;
    const END: &str = r#"","type":"text"}],"isError":false}"#;
    let mut out = String::with_capacity(1024);
    out.push_str(START);
    for piece in escaped {
        out.push_str(piece);
    }
    out.push_str(END);
    out
}

/// `text` as it is written inside a JSON string, without the quotes (empty if it does not
/// serialize, which a string always does).
pub(super) fn json_escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .unwrap_or_default()
}

/// A response to one request, as [`McpServer::reply`] gives it.
#[derive(Debug)]
pub enum Reply {
    Value(Value),
    /// The response already serialized: a result the skill index held ready.
    Serialized(Vec<u8>),
}

impl Reply {
    /// The response as JSON text.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Reply::Value(value) => serde_json::to_vec(&value).unwrap_or_default(),
            Reply::Serialized(bytes) => bytes,
        }
    }
}

/// The response carrying `result`, which is serialized JSON already.
fn serialized_response(id: &Value, result: &str, stateless: bool) -> Vec<u8> {
    const RESULT_TYPE: &[u8] = br#","resultType":"complete"}"#;
    let mut out = Vec::with_capacity(result.len() + 48 + RESULT_TYPE.len());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    // An id is a string or an integer (`classify`): it always serializes.
    let _ = serde_json::to_writer(&mut out, id);
    out.extend_from_slice(br#","result":"#);
    match result.strip_suffix('}') {
        // A `tools/call` result of 2026-07-28 is the sessions' one with its `resultType` (a tool
        // result has no cache hints, see `cache_hints`): spliced in before the object closes
        // (the cached result is an object with `content`, never empty).
        Some(open) if stateless => {
            out.extend_from_slice(open.as_bytes());
            out.extend_from_slice(RESULT_TYPE);
        }
        _ => out.extend_from_slice(result.as_bytes()),
    }
    out.push(b'}');
    out
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

/// Who a request is for: the user whose skills it sees, and what their credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub scopes: Scopes,
}

impl Caller {
    /// A caller that may do everything (a plain folder served over stdio, tests).
    pub fn everything(user_id: Uuid) -> Caller {
        Caller {
            user_id,
            scopes: Scopes::ALL,
        }
    }
}

/// The protocol itself, shared by every transport.
#[derive(Clone, Debug)]
pub struct McpServer {
    skills: SkillSource,
    /// Largest file `read_reference_file` and `resources/read` return.
    max_read_bytes: u64,
    /// Batches and the bytes of an answer.
    limits: Limits,
    /// Where `run_shell_command` runs commands.
    sandbox: Sandbox,
    /// Each user's skill uses, for the budgeted listing; `None` when the listing is unlimited
    /// (`mcp.metadata_max_skills` = 0), which so records nothing.
    recent: Option<Arc<RecentUse>>,
}

impl McpServer {
    pub fn new(
        skills: SkillSource,
        max_read_bytes: u64,
        limits: Limits,
        sandbox: Sandbox,
    ) -> McpServer {
        let recent = (limits.metadata_max_skills > 0).then(Arc::default);
        McpServer {
            skills,
            max_read_bytes,
            limits,
            sandbox,
            recent,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The response to request `id` serialized, or, when it is larger than `mcp.max_answer_bytes`,
    /// what replaces it ([`McpServer::oversized`]). A reply from the skill index's cache costs one
    /// comparison here: this is on the hot path.
    pub fn bounded(&self, reply: Reply, id: &Value, version: &str, method: &str) -> Vec<u8> {
        let bytes = reply.into_bytes();
        if self.answer_fits(bytes.len()) {
            return bytes;
        }
        let size = bytes.len();
        drop(bytes);
        serde_json::to_vec(&self.oversized(id, version, method, size)).unwrap_or_default()
    }

    /// Whether an answer of `len` bytes may be sent.
    pub fn answer_fits(&self, len: usize) -> bool {
        len <= self.limits.max_answer_bytes
    }

    /// What answers request `id` when its answer (`size` bytes) is over `mcp.max_answer_bytes`:
    /// for `tools/call` a tool result with `isError: true` (this server's tools report failures
    /// as results, which the model reads), for anything else a JSON-RPC error; both name the
    /// limit and its value.
    #[cold]
    pub fn oversized(&self, id: &Value, version: &str, method: &str, size: usize) -> Value {
        let max = self.limits.max_answer_bytes;
        if method == "tools/call" {
            let result = CallToolResult::error(vec![ContentBlock::text(format!(
                "The answer to this call would be {size} bytes, more than the {max} bytes one answer may hold ({MAX_ANSWER_BYTES} = {max}), so it was not sent. Read a smaller file, or ask the server's operator to raise {MAX_ANSWER_BYTES}."
            ))]);
            let stateless = version >= STATELESS_VERSION;
            return respond(id, stateless, method, to_value(&result));
        }
        let error = limit_error(
            MAX_ANSWER_BYTES,
            max,
            format!(
                "the answer would be {size} bytes, more than the {max} bytes one answer may hold ({MAX_ANSWER_BYTES} = {max})"
            ),
        );
        error_response(Some(id), &error)
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
            "capabilities": capabilities(true),
            "serverInfo": server_info(),
            "instructions": tools::INSTRUCTIONS,
        });
        Ok(Negotiated { version, result })
    }

    /// Answers `server/discover`: every version this endpoint speaks and what it offers to
    /// requests without a session.
    fn discover() -> Value {
        let mut versions = vec![STATELESS_VERSION];
        versions.extend(SUPPORTED_VERSIONS);
        json!({
            "supportedVersions": versions,
            "capabilities": capabilities(false),
            "instructions": tools::INSTRUCTIONS,
            "_meta": {META_SERVER_INFO: server_info()},
        })
    }

    /// Answers one request of `caller`'s session (anything but `initialize`), in the session's
    /// protocol `version`.
    pub async fn request(
        &self,
        caller: Caller,
        version: &str,
        id: &Value,
        method: &str,
        params: Option<&Value>,
    ) -> Value {
        let stateless = version >= STATELESS_VERSION;
        let outcome = self.route(caller, stateless, method, params).await;
        respond(id, stateless, method, outcome)
    }

    /// [`McpServer::request`], except that a `tools/call` whose result the skill index holds
    /// ready (`tools::cached_result`) is answered with it as it is, serialized: no result is built
    /// or escaped again; and a `search_skills` result is written straight to JSON from lines
    /// escaped once per index entry (`tools::written_result`). The hot path of a session's POST.
    pub async fn reply(
        &self,
        caller: Caller,
        version: &str,
        id: &Value,
        method: &str,
        params: Option<&Value>,
    ) -> Reply {
        if method == "tools/call"
            && let Ok(call) = parse_params::<CallToolRequestParams>(params)
        {
            let stateless = version >= STATELESS_VERSION;
            // What `route` does for `tools/call`, with the cache in front of `tools::call`.
            let outcome = match self.index_for(caller.user_id, &call.name).await {
                Ok(index) => {
                    if let Some(result) = tools::cached_result(&index, self, &call) {
                        if self.recent.is_some() && call.name == "load_skill" {
                            tools::record_use(&index, self, caller, &call);
                        }
                        return Reply::Serialized(serialized_response(id, &result, stateless));
                    }
                    if let Some(result) = tools::written_result(&index, &call) {
                        return Reply::Serialized(serialized_response(id, &result, stateless));
                    }
                    // Boxed: the misses read files or run commands (see `http::router`).
                    match Box::pin(tools::call(&index, self, caller, &call)).await {
                        Ok(result) => to_value(&result),
                        Err(error) => Err(error),
                    }
                }
                Err(e) => Err(RpcError::from(e)),
            };
            return Reply::Value(respond(id, stateless, method, outcome));
        }
        Reply::Value(self.request(caller, version, id, method, params).await)
    }

    /// The user's index for a tool call, its search made first for `search_skills` (boxed: that
    /// waits only on a search's first use after a load, and would grow every call's future; see
    /// `http::router`).
    async fn index_for(&self, user_id: Uuid, tool: &str) -> Result<Arc<SkillIndex>, AppError> {
        self.index_searched(user_id, tool == tools::SEARCH_SKILLS)
            .await
    }

    /// The user's index, with its search made first if `search`.
    async fn index_searched(
        &self,
        user_id: Uuid,
        search: bool,
    ) -> Result<Arc<SkillIndex>, AppError> {
        let index = self.skills.index(user_id).await?;
        if search {
            Box::pin(index.prepare_search()).await;
        }
        Ok(index)
    }

    async fn route(
        &self,
        caller: Caller,
        stateless: bool,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Value, RpcError> {
        if stateless && REMOVED_METHODS.contains(&method) {
            return Err(RpcError::new(
                codes::METHOD_NOT_FOUND,
                format!("method not found: {method} (not part of protocol {STATELESS_VERSION})"),
            ));
        }
        match method {
            "ping" => Ok(json!({})),
            "initialize" => Err(RpcError::new(
                codes::INVALID_REQUEST,
                "this session is already initialized; open a new session to initialize again",
            )),
            "server/discover" if stateless => Ok(Self::discover()),
            "prompts/list" => Ok(json!({"prompts": []})),
            "prompts/get" => Err(RpcError::invalid_params("this server has no prompts")),
            "skills/list" => {
                let cursor = params.and_then(|p| p.get("cursor")).and_then(Value::as_str);
                let query = skills_extension::query(params)?;
                let index = self.index_searched(caller.user_id, query.is_some()).await?;
                skills_extension::list(&index, cursor, query)
            }
            "skills/get" => {
                let uri = string_param(params, "uri")?;
                let index = self.skills.index(caller.user_id).await?;
                let (id, found) = skills_extension::get(&index, uri)?;
                if let Some(recent) = &self.recent {
                    recent.record(caller.user_id, id);
                }
                Ok(found)
            }
            "resources/directory/read" => {
                let uri = string_param(params, "uri")?;
                let cursor = params.and_then(|p| p.get("cursor")).and_then(Value::as_str);
                let index = self.skills.index(caller.user_id).await?;
                skills_extension::directory(&index, uri, cursor)
            }
            "tools/list" => to_value(&ListToolsResult::with_all_items(tools::definitions_for(
                caller.scopes,
            ))),
            "tools/call" => {
                let call: CallToolRequestParams = parse_params(params)?;
                let index = self.index_for(caller.user_id, &call.name).await?;
                let result = tools::call(&index, self, caller, &call).await?;
                to_value(&result)
            }
            "resources/list" => {
                let cursor = params.and_then(|p| p.get("cursor")).and_then(Value::as_str);
                let index = self.skills.index(caller.user_id).await?;
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
                let index = self.skills.index(caller.user_id).await?;
                let result = resources::read(&index, self, &read.uri).await?;
                to_value(&result)
            }
            "completion/complete" => {
                let index = self.skills.index(caller.user_id).await?;
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

    pub(crate) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Skills `load_skill_metadata` lists at most, if it is bounded.
    pub(crate) fn listing_budget(&self) -> Option<usize> {
        Some(self.limits.metadata_max_skills).filter(|n| *n > 0)
    }

    /// The users' skill uses, kept only when the listing is bounded.
    pub(crate) fn recent_use(&self) -> Option<&RecentUse> {
        self.recent.as_deref()
    }
}

/// What the server offers: the same in both eras, except for notifications and log levels.
/// Resource list changes reach a session's stream, and without a session a `subscriptions/listen`
/// stream ([`super::listen`]), which delivers nothing else: tools and prompts never change and
/// resource subscriptions are not offered, so a stateless client is told of neither. Sessions
/// also declare tool list changes and log levels.
fn capabilities(session: bool) -> Value {
    let mut capabilities = json!({
        "tools": {},
        "resources": {"listChanged": true},
        "prompts": {},
        "completions": {},
        "extensions": {skills_extension::ID: skills_extension::capability()},
    });
    if session {
        capabilities["tools"] = json!({"listChanged": true});
        capabilities["logging"] = json!({});
    }
    capabilities
}

fn server_info() -> Value {
    json!({"name": "agentskills-mcp", "version": env!("CARGO_PKG_VERSION")})
}

/// A required string parameter (-32602 without it).
fn string_param<'a>(params: Option<&'a Value>, name: &str) -> Result<&'a str, RpcError> {
    params
        .and_then(|p| p.get(name))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            RpcError::invalid_params(format!("invalid params: `{name}` (a string) is required"))
        })
}

/// The parameters as `T`, read from the message in place (no copy of the tree).
fn parse_params<T: DeserializeOwned>(params: Option<&Value>) -> Result<T, RpcError> {
    let empty = Value::Object(serde_json::Map::new());
    T::deserialize(params.unwrap_or(&empty))
        .map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(|e| RpcError::new(codes::INTERNAL_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mcp::source::FolderSource;
    use crate::mcp::{SUPPORTED_VERSIONS, source::SkillSource};

    #[test]
    fn a_text_result_written_in_pieces_is_the_serialized_result() {
        let texts = [
            "",
            "Plain.",
            "Say \"hi\"\tthen\n\\ go: é ✓ 🎉 \u{1}\u{7f}\u{2028}",
        ];
        for text in texts {
            let result =
                rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(
                    text.to_owned(),
                )]);
            let escaped = json_escaped(text);
            assert_eq!(
                session_text_result_json([escaped.as_str()]),
                session_result_json(&result)
            );
            // In pieces: the same.
            let half = text.char_indices().nth(text.chars().count() / 2);
            let (a, b) = text.split_at(half.map_or(0, |(at, _)| at));
            let (a, b) = (json_escaped(a), json_escaped(b));
            assert_eq!(
                session_text_result_json([a.as_str(), b.as_str()]),
                session_result_json(&result)
            );
        }
    }

    #[tokio::test]
    async fn results_served_from_the_cache_are_the_general_paths_results() {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("alpha", "Say \"hi\"\tthen\n\\ go: é ✓ 🎉 \u{1}"),
            ("beta", "Plain."),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(
                dir.path().join(name).join("SKILL.md"),
                format!("---\nname: {name}\ndescription: The \"{name}\" skill.\n---\n{body}\n"),
            )
            .unwrap();
        }
        // A description over several lines, with what JSON escapes.
        std::fs::create_dir(dir.path().join("gamma")).unwrap();
        std::fs::write(
            dir.path().join("gamma").join("SKILL.md"),
            "---\nname: gamma\ndescription: |\n  The \"gamma\" skill \\ é ✓\n  \ton two lines.\n---\nGo.\n",
        )
        .unwrap();
        let source = SkillSource::Folder(Arc::new(FolderSource::new(dir.path().into(), 1 << 20)));
        let settings = crate::config::SandboxSettings::default();
        let sandbox = Sandbox::start(&settings, Arc::default()).await;
        let limits = Limits::from_settings(&crate::config::McpSettings::default());
        let server = McpServer::new(source, 1 << 20, limits, sandbox);
        let user = Caller::everything(Uuid::nil());
        let load = |name: &str| json!({"name": "load_skill", "arguments": {"skill_name": name}});
        let search = |arguments: Value| json!({"name": "search_skills", "arguments": arguments});
        let cached = [
            (json!(1), load("alpha")),
            (json!("a\"b"), load("beta")),
            (json!(u64::MAX), json!({"name": "load_skill_metadata"})),
            (
                json!(2),
                json!({"name": "load_skill_metadata", "arguments": {}}),
            ),
            (json!(3), search(json!({"query": "skill"}))),
            (
                json!(4),
                search(json!({"query": " \"Gamma\"\n  skill ", "limit": 1})),
            ),
            (
                json!(5),
                search(json!({"query": "kubernetes \u{1}", "limit": null})),
            ),
        ];
        for version in SUPPORTED_VERSIONS.iter().chain([&STATELESS_VERSION]) {
            // Twice: once made, once from the cache.
            for (id, params) in cached.iter().chain(cached.iter()) {
                let general = server
                    .request(user, version, id, "tools/call", Some(params))
                    .await;
                let reply = server
                    .reply(user, version, id, "tools/call", Some(params))
                    .await;
                assert!(matches!(reply, Reply::Serialized(_)), "{params} not cached");
                let fast: Value = serde_json::from_slice(&reply.into_bytes()).unwrap();
                assert_eq!(fast, general, "{version} {params}");
            }
            // Everything else goes the general way, with the same answer.
            for params in [
                load("missing"),
                json!({"name": "load_skill", "arguments": {}}),
                json!({"name": "load_skill", "arguments": {"skill_name": 5}}),
                json!({"name": "no_such_tool"}),
                json!({"arguments": {}}),
                search(json!({})),
                search(json!({"query": "  "})),
                search(json!({"query": "skill", "limit": 0})),
            ] {
                let id = json!(7);
                let general = server
                    .request(user, version, &id, "tools/call", Some(&params))
                    .await;
                let reply = server
                    .reply(user, version, &id, "tools/call", Some(&params))
                    .await;
                assert!(matches!(reply, Reply::Value(_)), "{params} cached");
                let reply: Value = serde_json::from_slice(&reply.into_bytes()).unwrap();
                assert_eq!(reply, general, "{version} {params}");
            }
        }
        // The search found the skill whose description is on two lines, on one.
        let reply = server
            .reply(
                user,
                "2025-06-18",
                &json!(1),
                "tools/call",
                Some(&cached[4].1),
            )
            .await;
        let reply: Value = serde_json::from_slice(&reply.into_bytes()).unwrap();
        let text = reply["result"]["content"][0]["text"].as_str().unwrap();
        assert!(
            text.ends_with("\n- gamma: The \"gamma\" skill \\ é ✓ on two lines."),
            "{text}"
        );
        // Requests of 2026-07-28 are served from the cache too, with their `resultType`.
        let reply = server
            .reply(
                user,
                STATELESS_VERSION,
                &json!(1),
                "tools/call",
                Some(&load("alpha")),
            )
            .await;
        let Reply::Serialized(bytes) = reply else {
            panic!("a stateless load_skill did not come from the cache")
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["result"]["resultType"], "complete");
        assert_eq!(value["result"]["isError"], false);
    }

    /// Under `mcp.metadata_max_skills`, a user over the budget gets the budgeted listing the
    /// general way (it follows use), and one within it the cached, unlimited listing.
    #[tokio::test]
    async fn a_budgeted_listing_is_not_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..6 {
            let name = format!("s{n}");
            std::fs::create_dir(dir.path().join(&name)).unwrap();
            std::fs::write(
                dir.path().join(&name).join("SKILL.md"),
                format!("---\nname: {name}\ndescription: Skill {n}.\n---\n# {name}\n"),
            )
            .unwrap();
        }
        let settings = crate::config::SandboxSettings::default();
        let sandbox = Sandbox::start(&settings, Arc::default()).await;
        let user = Caller::everything(Uuid::nil());
        let metadata = json!({"name": "load_skill_metadata"});
        for (budget, cached) in [(5, false), (6, true), (0, true)] {
            let source =
                SkillSource::Folder(Arc::new(FolderSource::new(dir.path().into(), 1 << 20)));
            let mut limits = Limits::from_settings(&crate::config::McpSettings::default());
            limits.metadata_max_skills = budget;
            let server = McpServer::new(source, 1 << 20, limits, sandbox.clone());
            let id = json!(1);
            let general = server
                .request(user, "2025-06-18", &id, "tools/call", Some(&metadata))
                .await;
            let reply = server
                .reply(user, "2025-06-18", &id, "tools/call", Some(&metadata))
                .await;
            assert_eq!(matches!(reply, Reply::Serialized(_)), cached, "{budget}");
            let reply: Value = serde_json::from_slice(&reply.into_bytes()).unwrap();
            assert_eq!(reply, general, "{budget}");
            let text = general["result"]["content"][0]["text"].as_str().unwrap();
            assert_eq!(text.contains("search_skills"), !cached, "{budget}: {text}");
        }
    }

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
