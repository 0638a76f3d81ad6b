//! The legacy HTTP+SSE transport (protocol 2024-11-05): `GET /sse` opens a session and a stream
//! whose first event, `endpoint`, names the URL to POST messages to (`/messages?session_id=…`);
//! each POST there gets 202 and its answers come back on the stream as `message` events (a
//! batch's, as one event holding their array). Batches follow the version the session's
//! `initialize` agreed on, and answers `mcp.max_answer_bytes`, as on `/mcp`.
//!
//! Same authentication, Origin/Host checks and limits as `/mcp`. The stream sends a keep-alive
//! comment every 15 s; it ends when the client goes away (which ends the session), when the session
//! ends (its token revoked, its account deleted, idle), or when the server shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::mcp::{
    authenticate, check_origin, insufficient_scope, messages_of, refusal, rpc_refusal,
};
use super::oauth::Resource;
use crate::actors::session::{Charge, Queued};
use crate::app::AppState;
use crate::error::AppError;
use crate::http::Body;
use crate::http::request::read_json_bytes;
use crate::http::response::no_content;
use crate::mcp::codes;
use crate::mcp::dispatch::{CANCELLED, Message, Reply, classify, error_response, result_response};
use crate::mcp::limits::{BatchAnswer, MAX_QUEUED_BYTES, limit_error};
use crate::mcp::sessions::{PushError, Session, Sessions};

/// `GET /sse`.
pub(crate) async fn open(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    check_origin(state, &req)?;
    let principal = match authenticate(state, &req, Resource::Sse) {
        Ok(principal) => principal,
        Err(refused) => return Ok(*refused),
    };
    let (session, outbound) = match state
        .sessions
        .open_legacy(principal.user_id, principal.token_id, principal.scopes)
        .await
    {
        Ok(opened) => opened,
        Err(e) => return Err(AppError::internal(e)),
    };
    tracing::info!(user_id = %principal.user_id, "legacy SSE session opened");
    let endpoint = format!("/messages?session_id={}", session.id);
    let guard = SessionGuard {
        sessions: Arc::clone(&state.sessions),
        id: session.id.clone(),
        token_id: principal.token_id,
        on_end: OnEnd::CloseSession,
    };
    // The stream must not hold the session itself: dropping the session from the registry must
    // drop its sender and so end the stream.
    drop(session);
    Ok(event_stream(state, Some(endpoint), outbound, guard))
}

/// A `text/event-stream` response carrying `outbound`, after an `endpoint` event if one is given.
pub(crate) fn event_stream(
    state: &AppState,
    endpoint: Option<String>,
    outbound: mpsc::Receiver<Queued>,
    guard: SessionGuard,
) -> Response<Body> {
    guard.sessions.stream_opened();
    let every = Duration::from_secs(state.settings.mcp.sse_keep_alive_secs);
    let stream = EventStream {
        endpoint,
        outbound,
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
        guard,
    };
    let frames = futures_util::stream::unfold(stream, |mut stream| async move {
        let bytes = stream.next_event().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), stream))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What ending a stream (its client went away, or the server stopped) does to its session.
pub(crate) enum OnEnd {
    /// A legacy session lives as long as its stream.
    CloseSession,
    /// A Streamable HTTP session goes on; it may open another stream.
    DetachStream,
}

pub(crate) struct SessionGuard {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) id: String,
    pub(crate) token_id: Uuid,
    pub(crate) on_end: OnEnd,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.stream_closed();
        match self.on_end {
            OnEnd::CloseSession => {
                self.sessions.close(&self.id, self.token_id);
            }
            OnEnd::DetachStream => {
                if let Some(session) = self.sessions.get(&self.id, self.token_id) {
                    session.detach_closed_stream();
                }
            }
        }
    }
}

struct EventStream {
    endpoint: Option<String>,
    /// Messages as serialized JSON.
    outbound: mpsc::Receiver<Queued>,
    keep_alive: tokio::time::Interval,
    guard: SessionGuard,
}

impl EventStream {
    /// The next bytes to send, or `None` when the stream is over.
    async fn next_event(&mut self) -> Option<Bytes> {
        if let Some(endpoint) = self.endpoint.take() {
            return Some(Bytes::from(format!(
                "event: endpoint\ndata: {endpoint}\n\n"
            )));
        }
        tokio::select! {
            queued = self.outbound.recv() => {
                let Queued { message, charge } = queued?;
                let mut event = Vec::with_capacity(message.len() + 24);
                event.extend_from_slice(b"event: message\ndata: ");
                event.extend_from_slice(&message);
                event.extend_from_slice(b"\n\n");
                drop(message);
                Some(match charge {
                    // The answer's bytes stay charged to its user until hyper has written them
                    // out and drops them: a client that does not read keeps them counted.
                    Some(charge) => Bytes::from_owner(Charged { event, _charge: charge }),
                    None => Bytes::from(event),
                })
            }
            _ = self.keep_alive.tick() => {
                // Also keeps the session from being reaped while its stream is open, and notices
                // a session ended elsewhere.
                self.guard.sessions.get(&self.guard.id, self.guard.token_id)?;
                Some(Bytes::from_static(b": keep-alive\n\n"))
            }
        }
    }
}

/// An event whose answer is charged to its user's budget, for as long as its bytes live.
struct Charged {
    event: Vec<u8>,
    _charge: Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.event
    }
}

/// `POST /messages?session_id=…`.
pub(crate) async fn message(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    check_origin(state, &req)?;
    let principal = match authenticate(state, &req, Resource::Sse) {
        Ok(principal) => principal,
        Err(refused) => return Ok(*refused),
    };
    let session_id = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "session_id")
            .map(|(_, v)| v.into_owned())
    });
    let Some(session_id) = session_id else {
        return Ok(rpc_refusal(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "the session_id query parameter is required",
        ));
    };
    let Some(session) = state
        .sessions
        .get(&session_id, principal.token_id)
        .filter(|s| s.is_legacy())
    else {
        // Its stream is held by another replica (the load balancer should have sent this there,
        // by the id's prefix): its answers could not reach the client from here.
        if state.sessions.held_elsewhere(&session_id) {
            return Ok(rpc_refusal(
                StatusCode::NOT_FOUND,
                codes::INVALID_REQUEST,
                "this session's stream is held by another server replica, which this request did \
                 not reach; open a new session with GET /sse (and check the load balancer's \
                 routing of /messages by session_id)",
            ));
        }
        return Ok(rpc_refusal(
            StatusCode::NOT_FOUND,
            codes::INVALID_REQUEST,
            "session not found; open a new one with GET /sse",
        ));
    };
    let (_, bytes) = read_json_bytes(req, &state.settings.server).await?;
    let (messages, batch) = match messages_of(&bytes) {
        Ok(read) => read,
        Err(refusal) => return Ok(*refusal),
    };
    if batch {
        // The version `initialize` agreed on decides, as on `/mcp`: clients initialize over
        // `/messages` with their own newest version, whatever the transport.
        let checked = state
            .mcp
            .limits()
            .check_batch(session.version(), messages.len(), "per POST");
        if let Err(error) = checked {
            return Ok(refusal(StatusCode::BAD_REQUEST, None, &error));
        }
    }
    if !batch && let Some(refused) = insufficient_scope(session.scopes, &messages[0]) {
        return Ok(refused);
    }
    let answer = if batch {
        Box::pin(answer_batch(state, &session, &messages)).await
    } else {
        answer_one(state, &session, &messages[0]).await
    };
    let Some(answer) = answer else {
        let mut accepted = no_content();
        *accepted.status_mut() = StatusCode::ACCEPTED;
        return Ok(accepted);
    };
    match session.push(Bytes::from(answer)).await {
        Ok(()) => {
            let mut accepted = no_content();
            *accepted.status_mut() = StatusCode::ACCEPTED;
            Ok(accepted)
        }
        Err(PushError::Closed) => Ok(rpc_refusal(
            StatusCode::NOT_FOUND,
            codes::INVALID_REQUEST,
            "the session's stream is closed",
        )),
        Err(PushError::OverBudget { queued, max }) => {
            let id = (!batch).then(|| messages[0].get("id")).flatten();
            let error = limit_error(
                MAX_QUEUED_BYTES,
                max,
                format!(
                    "the answer was not queued: this user's event streams hold {queued} bytes their clients have not read, and may hold {max} ({MAX_QUEUED_BYTES} = {max}); read the stream, then send the request again (it ran)"
                ),
            );
            let mut response = refusal(StatusCode::TOO_MANY_REQUESTS, id, &error);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(response)
        }
    }
}

/// The answer to one message, serialized; `None` for a notification, a response, or a request
/// that was cancelled (which gets no response, as the protocol asks).
async fn answer_one(state: &AppState, session: &Session, message: &Value) -> Option<Vec<u8>> {
    let reply = match classify(message) {
        Ok(Message::Request {
            id,
            method: "initialize",
            params,
        }) => Reply::Value(initialize(state, session, id, params)),
        Ok(Message::Request { id, method, params }) => {
            let version = session.version();
            let work = state
                .mcp
                .reply(session.caller(), version, id, method, params);
            let reply = session.inflight.run(id, work).await?;
            return Some(state.mcp.bounded(reply, id, version, method));
        }
        Ok(Message::Notification {
            method: CANCELLED,
            params,
        }) => {
            session.inflight.cancel(params);
            return None;
        }
        Ok(Message::Notification { .. } | Message::Response) => return None,
        Err((id, error)) => Reply::Value(error_response(id, &error)),
    };
    Some(reply.into_bytes())
}

/// The answer to a batch (already checked against the session's version and
/// `mcp.max_batch_messages`): one JSON array, which stops growing at `mcp.max_answer_bytes`.
async fn answer_batch(state: &AppState, session: &Session, messages: &[Value]) -> Option<Vec<u8>> {
    let mut answer = BatchAnswer::new(state.mcp.limits().max_answer_bytes);
    for message in messages {
        match classify(message) {
            Ok(Message::Request { id, .. }) if answer.is_full() => answer.skip(id),
            Ok(Message::Request {
                id,
                method: "initialize",
                params,
            }) => {
                let response = initialize(state, session, id, params);
                answer.push(Some(id), Reply::Value(response).into_bytes());
            }
            Ok(Message::Request { id, method, params }) => {
                let version = session.version();
                let work = state
                    .mcp
                    .reply(session.caller(), version, id, method, params);
                // Cancelled: no response, as the protocol asks.
                if let Some(reply) = session.inflight.run(id, work).await {
                    answer.push(Some(id), state.mcp.bounded(reply, id, version, method));
                }
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
    answer.finish()
}

/// Answers `initialize` on a legacy session and remembers the version it agreed on.
fn initialize(state: &AppState, session: &Session, id: &Value, params: Option<&Value>) -> Value {
    match state.mcp.initialize(params) {
        Ok(negotiated) => {
            session.set_negotiated(negotiated.version);
            result_response(id, negotiated.result)
        }
        Err(error) => error_response(Some(id), &error),
    }
}
