//! `/mcp`: MCP over Streamable HTTP.
//!
//! - `POST` carries JSON-RPC messages (one, or a batch). `initialize` opens a session and its
//!   answer carries `Mcp-Session-Id`; every other message needs that header (400 without it, 404
//!   for a session that is unknown, ended, or opened with another token). Notifications and
//!   responses get 202 with no body. Requests are answered as `application/json`, or as one
//!   `text/event-stream` event when the client accepts only that.
//! - `DELETE` ends the session.
//! - `GET` opens the session's stream, on which the server sends notifications (such as
//!   `notifications/resources/list_changed` when the user's skills change); one per session.
//! - A request of protocol 2026-07-28 names its version in `_meta` and needs no session. Its
//!   `subscriptions/listen` is answered with a `text/event-stream` that stays open and carries
//!   the notifications the request's filter asks for ([`crate::mcp::listen`]), the way `GET`
//!   does for a session.
//!
//! Every request needs `Authorization: Bearer <API token>`, checked against the token registry
//! (no database). `Origin` and `Host` are checked against DNS rebinding (403).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::console::site_origin;
use super::oauth::{Resource, challenge};
use super::sse;
use crate::actors::token_registry::Principal;
use crate::app::AppState;
use crate::domain::Scopes;
use crate::error::AppError;
use crate::http::Body;
use crate::http::request::{read_json_bytes, require_bearer};
use crate::http::response::{full, no_content, with_body};
use crate::mcp::SUPPORTED_VERSIONS;
use crate::mcp::codes;
use crate::mcp::dispatch::{
    CANCELLED, Message, Reply, RpcError, STATELESS_VERSION, cancelled_response,
    check_stateless_version, classify, error_response, names_stateless_version, stateless_version,
};
use crate::mcp::limits::BatchAnswer;
use crate::mcp::listen::{Ending, Filter, LISTEN};
use crate::mcp::sessions::Session;
use crate::mcp::tools;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

pub(crate) async fn mcp(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    check_origin(state, &req)?;
    let principal = match authenticate(state, &req, Resource::Mcp) {
        Ok(principal) => principal,
        Err(refused) => return Ok(*refused),
    };
    match *req.method() {
        Method::POST => post(state, principal, req).await,
        // Boxed: off the request path, which keeps its future small (see `router::dispatch`).
        Method::DELETE => Ok(Box::pin(delete(state, principal, req.headers())).await),
        Method::GET => Ok(Box::pin(open_stream(state, principal, req.headers())).await),
        _ => Err(AppError::MethodNotAllowed(vec!["POST", "GET", "DELETE"])),
    }
}

/// The owner of the request's API token or OAuth access token (one issued for `resource`, or
/// for the whole server); otherwise 401 with the challenge that tells a client where to sign
/// in, or 429 past the token's rate.
pub(crate) fn authenticate(
    state: &AppState,
    req: &Request<Incoming>,
    resource: Resource,
) -> Result<Principal, Box<Response<Body>>> {
    let token =
        require_bearer(req.headers()).map_err(|e| Box::new(challenge(state, req, resource, &e)))?;
    let principal = state
        .registry
        .authenticate_for(token, |audience| {
            site_origin(state, req).is_ok_and(|origin| resource.accepts(&origin, audience))
        })
        .ok_or_else(|| {
            let refused = AppError::Unauthorized {
                code: "invalid-token",
                detail: "the token is unknown, revoked, expired or issued for another resource",
            };
            Box::new(challenge(state, req, resource, &refused))
        })?;
    state
        .rate_limits
        .mcp(principal.token_id)
        .map_err(|e| Box::new(crate::http::response::error(&e)))?;
    Ok(principal)
}

/// DNS-rebinding protection: a present `Origin` must be loopback or listed, and the `Host` a
/// loopback name or listed (checked when the list is set or the server listens on loopback).
pub(crate) fn check_origin(state: &AppState, req: &Request<Incoming>) -> Result<(), AppError> {
    let mcp = &state.settings.mcp;
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| {
            origin_host(o).is_some_and(is_loopback_host)
                || mcp
                    .allowed_origins
                    .iter()
                    .chain(&state.settings.server.cors_allowed_origins)
                    .any(|a| a.eq_ignore_ascii_case(o))
        });
        if !allowed {
            return Err(AppError::Forbidden {
                code: "origin-not-allowed",
                detail: "requests from this Origin are not allowed (see mcp.allowed_origins)",
            });
        }
    }
    if checks_host(state) {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        if !host.as_deref().is_some_and(|h| host_listed(state, h)) {
            return Err(AppError::Forbidden {
                code: "host-not-allowed",
                detail: "this server does not answer to that Host (see mcp.allowed_hosts)",
            });
        }
    }
    Ok(())
}

/// Whether the `Host` is checked at all: when `mcp.allowed_hosts` is set or the server listens on
/// loopback (DNS-rebinding protection).
pub(crate) fn checks_host(state: &AppState) -> bool {
    !state.settings.mcp.allowed_hosts.is_empty() || state.settings.server.bind.ip().is_loopback()
}

/// A loopback name or one of `mcp.allowed_hosts` (with or without its port).
pub(crate) fn host_listed(state: &AppState, host: &str) -> bool {
    is_loopback_host(host)
        || state
            .settings
            .mcp
            .allowed_hosts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(strip_port(host)))
}

/// `host[:port]` of `scheme://host[:port]`.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// `host` of `host[:port]` (IPv6 literals keep their brackets).
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..=h.len()]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn is_loopback_host(authority: &str) -> bool {
    let host = strip_port(authority);
    host.eq_ignore_ascii_case("localhost")
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A transport-level refusal with a JSON-RPC error body (no id).
pub(crate) fn rpc_refusal(status: StatusCode, code: i32, message: &str) -> Response<Body> {
    refusal(status, None, &RpcError::new(code, message))
}

/// A single request that the token's scopes do not allow (`run_shell_command` without
/// `skills:run`): 403 with `WWW-Authenticate: Bearer error="insufficient_scope"` and the scopes it
/// needs (RFC 6750, section 3.1), so that a client that can ask for more knows what; the body is
/// the JSON-RPC error. A request inside a batch gets the same words in band instead.
pub(crate) fn insufficient_scope(scopes: Scopes, message: &Value) -> Option<Response<Body>> {
    // What a token with every scope sends (the hot path) is not looked at.
    if scopes.contains(Scopes::RUN) {
        return None;
    }
    let Ok(Message::Request {
        id,
        method: "tools/call",
        params,
    }) = classify(message)
    else {
        return None;
    };
    let tool = params.and_then(|p| p.get("name")).and_then(Value::as_str);
    if tool != Some(tools::RUN_SHELL_COMMAND) {
        return None;
    }
    let error = RpcError::new(codes::INVALID_REQUEST, tools::NEEDS_RUN_SCOPE);
    let mut response = refusal(StatusCode::FORBIDDEN, Some(id), &error);
    let challenge = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", error_description=\"run_shell_command needs the skills:run scope\"",
        Scopes::ALL
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    Some(response)
}

/// A refusal with `error` (its `data` too) as a JSON-RPC error body.
pub(crate) fn refusal(status: StatusCode, id: Option<&Value>, error: &RpcError) -> Response<Body> {
    json_response(status, &error_response(id, error))
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    with_body(status, "application/json", full(bytes))
}

/// A POST body's JSON-RPC messages, and whether they came as a batch; the refusal (400, -32700
/// or -32600) when the body is not JSON or is an empty batch.
pub(crate) fn messages_of(bytes: &[u8]) -> Result<(Vec<Value>, bool), Box<Response<Body>>> {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Err(Box::new(rpc_refusal(
            StatusCode::BAD_REQUEST,
            codes::PARSE_ERROR,
            "parse error: the body is not JSON",
        )));
    };
    match value {
        Value::Array(items) if items.is_empty() => Err(Box::new(rpc_refusal(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "invalid request: an empty batch",
        ))),
        Value::Array(items) => Ok((items, true)),
        other => Ok((vec![other], false)),
    }
}

/// How the client wants answers framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Json,
    EventStream,
}

fn framing(headers: &HeaderMap) -> Option<Framing> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(Framing::Json);
    };
    // Media ranges, their parameters (`;q=…`) left out; compared without case.
    let types = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim());
    let has = |wanted: &[&str]| {
        types
            .clone()
            .any(|t| wanted.iter().any(|w| t.eq_ignore_ascii_case(w)))
    };
    if has(&["application/json", "*/*", "application/*"]) {
        Some(Framing::Json)
    } else if has(&["text/event-stream", "text/*"]) {
        Some(Framing::EventStream)
    } else {
        None
    }
}

fn answer(framing: Framing, body: &Value) -> Response<Body> {
    answer_serialized(framing, serde_json::to_vec(body).unwrap_or_default())
}

/// The answer to a POST, `json` being its serialized JSON-RPC message(s).
fn answer_serialized(framing: Framing, json: Vec<u8>) -> Response<Body> {
    match framing {
        Framing::Json => with_body(StatusCode::OK, "application/json", full(json)),
        Framing::EventStream => {
            let mut event = Vec::with_capacity(json.len() + 24);
            event.extend_from_slice(b"event: message\ndata: ");
            event.extend_from_slice(&json);
            event.extend_from_slice(b"\n\n");
            let mut response = with_body(StatusCode::OK, "text/event-stream", full(event));
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    }
}

async fn post(
    state: &AppState,
    principal: Principal,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let (parts, bytes) = read_json_bytes(req, &state.settings.server).await?;
    let headers = parts.headers;
    let (messages, batch) = match messages_of(&bytes) {
        Ok(read) => read,
        Err(refusal) => return Ok(*refusal),
    };
    // Refusals of the whole request name the request's id when there is exactly one.
    let refuse = |status: StatusCode, code: i32, message: &str| {
        let id = (!batch).then(|| messages[0].get("id")).flatten();
        let body = error_response(id, &RpcError::new(code, message));
        json_response(status, &body)
    };
    let Some(framing) = framing(&headers) else {
        return Ok(refuse(
            StatusCode::NOT_ACCEPTABLE,
            codes::INVALID_REQUEST,
            "accept application/json or text/event-stream",
        ));
    };
    let session_id = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // A version header of the handshake era, or none, keeps to sessions; any other version, or a
    // request without a session that names its version in `_meta`, is served statelessly (and an
    // unknown version is refused there with the versions this server speaks).
    let handshake_era = match headers.get(VERSION_HEADER) {
        Some(v) => v
            .to_str()
            .is_ok_and(|v| SUPPORTED_VERSIONS.contains(&v.trim())),
        None => {
            session_id.is_some() || batch || !names_stateless_version(messages[0].get("params"))
        }
    };
    if !handshake_era {
        // Boxed: off the session path, which keeps its future small (see `router::dispatch`).
        return Ok(Box::pin(stateless(
            state, principal, &headers, &messages, batch, framing,
        ))
        .await);
    }

    // `initialize` opens a session; sent within one, it is refused like any repeat (-32600).
    let initialize = !batch
        && session_id.is_none()
        && messages[0].get("method").and_then(Value::as_str) == Some("initialize");
    if initialize {
        return Ok(Box::pin(open_session(state, principal, &messages[0], framing)).await);
    }

    let Some(session_id) = session_id else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "the Mcp-Session-Id header is required (initialize first)",
        ));
    };
    let session = match state.sessions.get(&session_id, principal.token_id) {
        Some(session) => session,
        // Opened on another replica, or here before a restart: its facts are in the database.
        None => match Box::pin(adopt(state, &session_id, principal)).await {
            Ok(Some(session)) => session,
            Ok(None) => {
                return Ok(refuse(
                    StatusCode::NOT_FOUND,
                    codes::INVALID_REQUEST,
                    "session not found; initialize a new one",
                ));
            }
            Err(refused) => return Ok(refused),
        },
    };
    let version = session.protocol_version;
    if !batch {
        let message = &messages[0];
        if let Some(refused) = insufficient_scope(session.scopes, message) {
            return Ok(refused);
        }
        return Ok(match classify(message) {
            Ok(Message::Request { id, method, params }) => {
                // The one request: its reply may come serialized already, and then costs one
                // comparison against `mcp.max_answer_bytes`.
                let work = state
                    .mcp
                    .reply(session.caller(), version, id, method, params);
                let reply = session.inflight.run(id, work).await;
                let reply = reply.unwrap_or_else(|| Reply::Value(cancelled_response(id)));
                answer_serialized(framing, state.mcp.bounded(reply, id, version, method))
            }
            Ok(Message::Notification {
                method: CANCELLED,
                params,
            }) => {
                session.inflight.cancel(params);
                accepted()
            }
            Ok(Message::Notification { .. } | Message::Response) => accepted(),
            Err((_, error)) => rpc_refusal(StatusCode::BAD_REQUEST, error.code, &error.message),
        });
    }
    // Boxed: batches are rare, and the session path's future stays small.
    Ok(Box::pin(answer_batch(state, &session, &messages, framing)).await)
}

/// Answers a batch in a session: refused whole, before anything runs, where the session's
/// version has no batches or it holds more than `mcp.max_batch_messages`; otherwise one JSON
/// array, which stops growing (and the batch stops running) at `mcp.max_answer_bytes`.
async fn answer_batch(
    state: &AppState,
    session: &Session,
    messages: &[Value],
    framing: Framing,
) -> Response<Body> {
    let version = session.protocol_version;
    let limits = state.mcp.limits();
    if let Err(error) = limits.check_batch(version, messages.len(), "per POST") {
        return refusal(StatusCode::BAD_REQUEST, None, &error);
    }
    let mut answer = BatchAnswer::new(limits.max_answer_bytes);
    for message in messages {
        match classify(message) {
            // The batch's answer is full: the rest is not run.
            Ok(Message::Request { id, .. }) if answer.is_full() => answer.skip(id),
            Ok(Message::Request { id, method, params }) => {
                let work = state
                    .mcp
                    .reply(session.caller(), version, id, method, params);
                let reply = session.inflight.run(id, work).await;
                let reply = reply.unwrap_or_else(|| Reply::Value(cancelled_response(id)));
                answer.push(Some(id), state.mcp.bounded(reply, id, version, method));
            }
            Ok(Message::Notification {
                method: CANCELLED,
                params,
            }) => {
                session.inflight.cancel(params);
            }
            Ok(Message::Notification { .. } | Message::Response) => {}
            Err((id, error)) => answer.error(id, &error),
        }
    }
    match answer.finish() {
        Some(json) => answer_serialized(framing, json),
        None => accepted(),
    }
}

/// Serves a request of protocol 2026-07-28, which carries its version and capabilities in
/// `_meta` and needs no session. The checks go in the protocol's order: `_meta` (-32602), the
/// routing headers against the body (-32020), the version (-32022), then the method (-32601 is
/// HTTP 404). Errors are JSON whatever the client accepts, so that every client can read them.
async fn stateless(
    state: &AppState,
    principal: Principal,
    headers: &HeaderMap,
    messages: &[Value],
    batch: bool,
    framing: Framing,
) -> Response<Body> {
    if let [message] = messages
        && let Some(refused) = insufficient_scope(principal.scopes, message)
    {
        return refused;
    }
    let (id, method, params) = match messages {
        [message] if !batch => match classify(message) {
            Ok(Message::Request { id, method, params }) => (id, method, params),
            // Notifications and responses need no session either.
            Ok(Message::Notification { .. } | Message::Response) => return accepted(),
            Err((id, error)) => return refusal_for(id, &error),
        },
        _ => {
            let error = RpcError::new(
                codes::INVALID_REQUEST,
                format!("invalid request: protocol {STATELESS_VERSION} has no batches"),
            );
            return refusal_for(None, &error);
        }
    };
    let checked = stateless_version(params).and_then(|version| {
        check_routing_headers(headers, version, method, params)?;
        check_stateless_version(version)
    });
    if let Err(error) = checked {
        return refusal_for(Some(id), &error);
    }
    if method == LISTEN {
        return listen(state, principal, headers, id, params);
    }
    let response = match state
        .mcp
        .reply(principal.caller(), STATELESS_VERSION, id, method, params)
        .await
    {
        // A result from the skill index's cache (`load_skill`, `load_skill_metadata`).
        Reply::Serialized(json) => {
            return answer_serialized(
                framing,
                state
                    .mcp
                    .bounded(Reply::Serialized(json), id, STATELESS_VERSION, method),
            );
        }
        Reply::Value(response) => response,
    };
    let error_code = |response: &Value| {
        response
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
    };
    if let Some(code) = error_code(&response) {
        return json_response(status_for(code), &response);
    }
    let json = serde_json::to_vec(&response).unwrap_or_default();
    if state.mcp.answer_fits(json.len()) {
        return answer_serialized(framing, json);
    }
    let size = json.len();
    drop((json, response));
    // What replaces an answer too large: a tool result (a result), or a JSON-RPC error.
    let replaced = state.mcp.oversized(id, STATELESS_VERSION, method, size);
    match error_code(&replaced) {
        Some(code) => json_response(status_for(code), &replaced),
        None => answer(framing, &replaced),
    }
}

/// `subscriptions/listen`: answered with a `text/event-stream` that stays open, on which the
/// stream's acknowledgement comes first and the notifications its filter asks for follow. Refused
/// (before anything is sent) with 406 when the client does not accept an event stream, 400 for a
/// bad filter, and 429 when the token holds `mcp.max_listen_streams_per_token` streams already.
fn listen(
    state: &AppState,
    principal: Principal,
    headers: &HeaderMap,
    id: &Value,
    params: Option<&Value>,
) -> Response<Body> {
    if !accepts_event_stream(headers) {
        let error = RpcError::new(
            codes::INVALID_REQUEST,
            "subscriptions/listen is answered with a stream: accept text/event-stream",
        );
        return refusal(StatusCode::NOT_ACCEPTABLE, Some(id), &error);
    }
    let filter = match Filter::from_params(params) {
        Ok(filter) => filter,
        Err(error) => return refusal_for(Some(id), &error),
    };
    let opened = state.listen.open(
        principal.user_id,
        principal.token_id,
        id,
        filter,
        Ending::Result,
    );
    match opened {
        Ok(stream) => {
            tracing::debug!(user_id = %principal.user_id, "MCP listen stream opened");
            let keep_alive = std::time::Duration::from_secs(state.settings.mcp.sse_keep_alive_secs);
            super::listen::event_stream(stream, keep_alive)
        }
        Err(refused) => {
            // Asking again succeeds once one of the token's streams has ended.
            let mut response = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                Some(id),
                &refused.rpc_error(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            response
        }
    }
}

/// Whether the client takes a `text/event-stream` answer (one that sends no `Accept` takes
/// anything).
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return true;
    };
    accept.to_str().is_ok_and(|accept| {
        accept.split(',').any(|t| {
            let media = t.split(';').next().unwrap_or("").trim();
            ["text/event-stream", "text/*", "*/*"]
                .iter()
                .any(|w| media.eq_ignore_ascii_case(w))
        })
    })
}

/// A stateless error, with the HTTP status the protocol gives its code.
fn refusal_for(id: Option<&Value>, error: &RpcError) -> Response<Body> {
    json_response(
        status_for(i64::from(error.code)),
        &error_response(id, error),
    )
}

fn status_for(code: i64) -> StatusCode {
    match i32::try_from(code) {
        Ok(codes::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        Ok(
            codes::PARSE_ERROR
            | codes::INVALID_REQUEST
            | codes::INVALID_PARAMS
            | codes::HEADER_MISMATCH
            | codes::UNSUPPORTED_PROTOCOL_VERSION,
        ) => StatusCode::BAD_REQUEST,
        // A limit of this server, met by this request as it was sent: asking again the same way
        // meets it again, so a client error, not a server failure.
        Ok(codes::LIMIT_REACHED) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn accepted() -> Response<Body> {
    let mut accepted = no_content();
    *accepted.status_mut() = StatusCode::ACCEPTED;
    accepted
}

/// The routing headers of 2026-07-28 must repeat the body: `MCP-Protocol-Version` its `_meta`
/// version, `Mcp-Method` its method, and `Mcp-Name` the tool, prompt or resource it names. Each
/// may appear once; values are compared exactly, after trimming spaces and tabs, and `Mcp-Name`
/// may be sent as `=?base64?…?=`.
fn check_routing_headers(
    headers: &HeaderMap,
    version: &str,
    method: &str,
    params: Option<&Value>,
) -> Result<(), RpcError> {
    let mismatch = |what: &str| {
        RpcError::new(
            codes::HEADER_MISMATCH,
            format!("header mismatch: {what} must be present once and match the request body"),
        )
    };
    let single = |name: &str| -> Option<String> {
        let mut values = headers.get_all(name).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        first
            .to_str()
            .ok()
            .map(|v| v.trim_matches([' ', '\t']).to_owned())
    };
    if single(VERSION_HEADER).as_deref() != Some(version) {
        return Err(mismatch("MCP-Protocol-Version"));
    }
    if single(METHOD_HEADER).as_deref() != Some(method) {
        return Err(mismatch("Mcp-Method"));
    }
    let named = match method {
        "tools/call" | "prompts/get" => params.and_then(|p| p.get("name")),
        "resources/read" => params.and_then(|p| p.get("uri")),
        _ => None,
    };
    if let Some(Value::String(expected)) = named {
        let given = single(NAME_HEADER).map(|v| decode_header_value(&v));
        if given.as_deref() != Some(expected.as_str()) {
            return Err(mismatch("Mcp-Name"));
        }
    }
    Ok(())
}

/// A header value as sent: plain, or `=?base64?<base64 of UTF-8>?=` for text a header cannot
/// carry as it is.
fn decode_header_value(value: &str) -> String {
    use base64::Engine as _;
    value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| value.to_owned())
}

/// Answers `initialize` and, when it succeeds, opens a session.
async fn open_session(
    state: &AppState,
    principal: Principal,
    message: &Value,
    framing: Framing,
) -> Response<Body> {
    let (id, params) = match classify(message) {
        Ok(Message::Request { id, params, .. }) => (id, params),
        Ok(_) => {
            return rpc_refusal(
                StatusCode::BAD_REQUEST,
                codes::INVALID_REQUEST,
                "initialize must be a request (with an id)",
            );
        }
        Err((_, error)) => return rpc_refusal(StatusCode::BAD_REQUEST, error.code, &error.message),
    };
    let negotiated = match state.mcp.initialize(params) {
        Ok(negotiated) => negotiated,
        Err(error) => return answer(framing, &error_response(Some(id), &error)),
    };
    // The times this credential's sessions were last used here, so that the cap's choice of the
    // least recently used one, made in the database, sees them.
    let seen = state.sessions.seen_since_flush(Some(principal.token_id));
    if let Err(e) = state.store.touch_mcp_sessions(&seen).await {
        tracing::warn!(error = %e, "could not record MCP session use");
    }
    let session = match state
        .sessions
        .open(
            principal.user_id,
            principal.token_id,
            principal.scopes,
            negotiated.version,
        )
        .await
    {
        Ok(session) => session,
        Err(e) => {
            tracing::error!(error = %e, "could not open an MCP session");
            return rpc_refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL_ERROR,
                "internal error",
            );
        }
    };
    // Recorded for the other replicas; at the credential's cap its least recently used sessions
    // go (here at once, elsewhere when that is announced). A database that does not answer
    // leaves the session to this replica alone: MCP goes on without the database.
    let now = crate::store::now();
    let record = crate::store::McpSessionRecord {
        id: session.id.clone(),
        user_id: principal.user_id,
        token_id: principal.token_id,
        scopes: principal.scopes.to_string(),
        protocol_version: negotiated.version.to_owned(),
        client_capabilities: params
            .and_then(|p| p.get("capabilities"))
            .map_or_else(|| "{}".to_owned(), Value::to_string),
        created_at: now,
        last_seen_at: now,
    };
    let max = u32::try_from(state.settings.mcp.max_sessions_per_token).unwrap_or(u32::MAX);
    match state.store.insert_mcp_session(&record, max).await {
        Ok(evicted) => {
            for id in evicted {
                state.sessions.close_id(&id);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not record an MCP session: it is served by this replica only");
        }
    }
    tracing::info!(user_id = %principal.user_id, version = negotiated.version, "MCP session opened");
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": negotiated.result});
    let mut response = answer(framing, &body);
    if let Ok(value) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

/// `GET /mcp`: the session's stream of notifications (one at a time per session).
async fn open_stream(
    state: &AppState,
    principal: Principal,
    headers: &HeaderMap,
) -> Response<Body> {
    let accepts_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("text/event-stream")
            })
        });
    if !accepts_events {
        return rpc_refusal(
            StatusCode::NOT_ACCEPTABLE,
            codes::INVALID_REQUEST,
            "a stream needs Accept: text/event-stream",
        );
    }
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return rpc_refusal(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "the Mcp-Session-Id header is required",
        );
    };
    let found = match state.sessions.get(id, principal.token_id) {
        Some(session) => Some(session),
        None => match adopt(state, id, principal).await {
            Ok(session) => session,
            Err(refused) => return refused,
        },
    };
    let Some(session) = found.filter(|s| !s.is_legacy()) else {
        return rpc_refusal(
            StatusCode::NOT_FOUND,
            codes::INVALID_REQUEST,
            "session not found; initialize a new one",
        );
    };
    let Some(outbound) = session.attach_stream() else {
        return rpc_refusal(
            StatusCode::CONFLICT,
            codes::INVALID_REQUEST,
            "this session already has an open stream",
        );
    };
    let guard = sse::SessionGuard {
        sessions: std::sync::Arc::clone(&state.sessions),
        id: session.id.clone(),
        token_id: principal.token_id,
        on_end: sse::OnEnd::DetachStream,
    };
    drop(session);
    sse::event_stream(state, None, outbound, guard)
}

async fn delete(state: &AppState, principal: Principal, headers: &HeaderMap) -> Response<Body> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return rpc_refusal(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "the Mcp-Session-Id header is required",
        );
    };
    let here = state.sessions.close(id, principal.token_id);
    // The shared row, if the session is this credential's: its deletion is announced, and every
    // replica that took the session up ends its copy.
    let shared = match state.store.mcp_session(id).await {
        Ok(Some(row)) if row.token_id == principal.token_id => {
            state.store.delete_mcp_session(id).await
        }
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    };
    match shared {
        Ok(shared) if here || shared => no_content(),
        Ok(_) => rpc_refusal(
            StatusCode::NOT_FOUND,
            codes::INVALID_REQUEST,
            "session not found",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not end a shared MCP session");
            database_unavailable()
        }
    }
}

/// A JSON-RPC refusal for a database that did not answer (503, `Retry-After: 1`).
fn database_unavailable() -> Response<Body> {
    let mut response = rpc_refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        codes::INTERNAL_ERROR,
        "the database is unavailable; try again",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Takes up a Streamable HTTP session this replica does not hold: its facts from the database,
/// if it exists and belongs to the credential that sent the request. `Ok(None)`: no such session
/// (for this credential); `Err`: the refusal to send (the database did not answer). One database
/// read, on the first request this replica sees of the session only.
async fn adopt(
    state: &AppState,
    id: &str,
    principal: Principal,
) -> Result<Option<std::sync::Arc<Session>>, Response<Body>> {
    // Session ids are 64 hex digits; anything else was never issued, and is not looked up.
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let row = match state.store.mcp_session(id).await {
        Ok(Some(row)) if row.token_id == principal.token_id && row.user_id == principal.user_id => {
            row
        }
        Ok(_) => return Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "could not read a shared MCP session");
            return Err(database_unavailable());
        }
    };
    let Some(version) = SUPPORTED_VERSIONS
        .iter()
        .copied()
        .find(|v| *v == row.protocol_version)
    else {
        return Ok(None);
    };
    match state
        .sessions
        .adopt(
            id,
            row.user_id,
            row.token_id,
            Scopes::from_stored(&row.scopes),
            version,
        )
        .await
    {
        Ok(session) => Ok(Some(session)),
        Err(e) => {
            tracing::error!(error = %e, "could not take up an MCP session");
            Err(rpc_refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL_ERROR,
                "internal error",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_are_recognised() {
        for host in [
            "localhost",
            "localhost:8000",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:8765",
            "127.1.2.3:9",
            "[::1]",
            "[::1]:8000",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.com",
            "evil.com:80",
            "localhost.evil.com",
            "10.0.0.1:80",
            "[::2]:1",
            "127.0.0.1.evil.com",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert_eq!(origin_host("http://localhost:3000"), Some("localhost:3000"));
        assert_eq!(origin_host("null"), None);
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.example:80"), "a.example");
    }
}
