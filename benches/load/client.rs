//! The load generator's HTTP/1.1 client: one hyper client connection per worker, kept alive, so
//! the generator costs little of the two cores it shares with the server, and costs the same
//! against the service and against the ceiling.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// The read buffer of a connection carrying an idle stream.
const IDLE_READ_BUFFER: usize = 1024;

/// One kept-alive connection.
pub(crate) struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

/// Source addresses 127.0.0.1 to 127.0.0.250 in turn, so tens of thousands of connections (and
/// their TIME_WAIT leftovers) do not run out of one address's ephemeral ports.
fn next_source(server: IpAddr) -> Option<IpAddr> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    match server {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let n = NEXT.fetch_add(1, Ordering::Relaxed) % 250;
            Some(IpAddr::from([127, 0, 0, u8::try_from(n + 1).unwrap_or(1)]))
        }
        _ => None,
    }
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Conn, Error> {
        Conn::open_with(addr, &http1::Builder::new()).await
    }

    /// A connection that will carry an idle event stream: its read buffer is small and fixed
    /// (hyper's grows from 8 KiB), since all it reads is a few short answers and keep-alive
    /// comments, and a hundred thousand of them are held at once.
    pub(crate) async fn open_idle(addr: SocketAddr) -> Result<Conn, Error> {
        let mut builder = http1::Builder::new();
        builder.read_buf_exact_size(Some(IDLE_READ_BUFFER));
        Conn::open_with(addr, &builder).await
    }

    async fn open_with(addr: SocketAddr, builder: &http1::Builder) -> Result<Conn, Error> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = next_source(addr.ip()) {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = builder.handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// Sends a request and returns its response with the body not yet read.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> Result<http::Response<Incoming>, Error> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(body))?;
        let map = req.headers_mut();
        map.insert(http::header::HOST, self.host.clone());
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value)?);
        }
        self.send.ready().await?;
        Ok(self.send.send_request(req).await?)
    }

    /// Sends a request and reads the whole response.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Error> {
        let res = self.send(method, path, headers, body).await?;
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

/// A JSON-RPC reply as far as the harness judges it: a `result` without `isError: true`.
#[derive(serde::Deserialize)]
struct Reply {
    result: Option<ReplyResult>,
}

#[derive(serde::Deserialize)]
struct ReplyResult {
    #[serde(rename = "isError", default)]
    is_error: bool,
}

/// Whether `body` is a successful JSON-RPC result.
pub(crate) fn is_success(body: &[u8]) -> bool {
    serde_json::from_slice::<Reply>(body).is_ok_and(|r| r.result.is_some_and(|r| !r.is_error))
}

/// Reads server-sent events from a response body.
pub(crate) struct Events {
    body: Incoming,
    buffer: BytesMut,
}

/// One event: its `event:` name (default `message`) and its `data:` lines joined.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) name: String,
    pub(crate) data: String,
}

impl Events {
    pub(crate) fn new(body: Incoming) -> Events {
        Events {
            body,
            buffer: BytesMut::new(),
        }
    }

    /// The next event (comments skipped), or `None` when the stream ends.
    pub(crate) async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = find(&self.buffer, b"\n\n") {
                let raw = self.buffer.split_to(end + 2);
                let text = String::from_utf8_lossy(&raw);
                let mut event = Event {
                    name: "message".to_owned(),
                    data: String::new(),
                };
                let mut any = false;
                for line in text.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event.name = name.trim().to_owned();
                        any = true;
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(data.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
