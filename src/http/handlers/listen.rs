//! The answer to a 2026-07-28 `subscriptions/listen` POST: a `text/event-stream` that stays open
//! and carries the listen stream's messages ([`crate::mcp::listen`]), each as one `message`
//! event, with a keep-alive comment every `mcp.sse_keep_alive_secs` while there is nothing to
//! send.
//!
//! The response holds the stream's receiving half and nothing else: the stream ends when the
//! client goes away (hyper drops the body, and with it the stream, which leaves the registry),
//! or when the server ends it (token revoked, account deleted, shutdown: the registry drops the
//! sending half after queuing the listen request's result, so the body ends once that is sent).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;

use crate::http::Body;
use crate::mcp::listen::ListenStream;

/// The event stream that carries `stream` to its client.
pub(crate) fn event_stream(stream: ListenStream, keep_alive: Duration) -> Response<Body> {
    let state = (
        stream,
        tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive),
    );
    let frames = futures_util::stream::unfold(state, |(mut stream, mut ticks)| async move {
        let bytes = tokio::select! {
            message = stream.recv() => {
                let message = message?;
                let mut event = Vec::with_capacity(message.len() + 24);
                event.extend_from_slice(b"event: message\ndata: ");
                event.extend_from_slice(&message);
                event.extend_from_slice(b"\n\n");
                Bytes::from(event)
            }
            _ = ticks.tick() => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok::<_, Infallible>(Frame::data(bytes)), (stream, ticks)))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The transport asks for it: proxies such as nginx would otherwise hold events back in their
    // buffers, and a notification that waits there is no use.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
