//! What one connection is doing, for its two timers: slow request heads and idle keep-alive.
//!
//! hyper's own `header_read_timeout` starts when it begins waiting for a request head, so on a
//! kept-alive HTTP/1 connection it also bounds the idle wait before the next request: the two
//! limits would be one. They are told apart here instead. [`Watched`] wraps the socket and notes
//! when bytes arrive while no request is in flight (a head has started); [`Tracked`] wraps each
//! response body and counts the request as in flight until that body has been sent or dropped.
//! [`Activity::expired`] then resolves when the connection has been idle (nothing in flight)
//! for `keep_alive_idle`, or a started head has not become a request within `header_read`.
//!
//! On HTTP/2 the idle timer counts streams the same way; bytes arriving between requests (pings,
//! settings) are not a head, so only the first request is held to the header timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
// tokio's clock, so tests can run it paused.
use tokio::time::Instant;

use super::Body;

/// No head has started.
const NONE: u64 = u64::MAX;

/// One connection's state, shared by its socket, its requests and its timer.
#[derive(Debug)]
pub(crate) struct Activity {
    started: Instant,
    /// Requests whose response has not yet been sent in full.
    in_flight: AtomicUsize,
    /// Milliseconds since `started` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds since `started` when the first byte of a request head arrived, or [`NONE`].
    head_started: AtomicU64,
    /// Set at the first HTTP/2 request: from then on bytes between requests are not heads.
    http2: AtomicBool,
    /// Wakes every waiter (the timer, and at shutdown the wait for the connection to be idle):
    /// each registers before it reads the state, so no change is missed.
    changed: Notify,
}

/// Why a connection's timer closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head took longer than the header timeout.
    SlowHead,
    /// Nothing was in flight for the keep-alive idle timeout.
    Idle,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first request head at once.
            head_started: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived on the socket.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_waiters();
        }
    }

    /// A request's head has been read; it is in flight until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>, http2: bool) -> InFlight {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Resolves once no request is in flight (at once if none is).
    pub(crate) async fn until_idle(&self) {
        loop {
            // Registered before the count is read, so an end in between is not missed.
            let changed = self.changed.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Resolves when the connection should be closed: a head that is too slow, or too long idle.
    /// Never resolves while a request is in flight.
    pub(crate) async fn expired(&self, header_read: Duration, keep_alive_idle: Duration) -> Expiry {
        let header_read = u64::try_from(header_read.as_millis()).unwrap_or(NONE - 1);
        let idle = u64::try_from(keep_alive_idle.as_millis()).unwrap_or(NONE - 1);
        // One timer for the connection's life, moved to each new deadline: a kept-alive
        // connection changes state twice per request, and a fresh timer each time would cost a
        // timer-wheel insertion and removal on the hot path.
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = self.changed.notified();
            let now = self.now_ms();
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else {
                match self.head_started.load(Ordering::Relaxed) {
                    NONE => Some((
                        self.idle_since.load(Ordering::Relaxed).saturating_add(idle),
                        Expiry::Idle,
                    )),
                    head => Some((head.saturating_add(header_read), Expiry::SlowHead)),
                }
            };
            match deadline {
                Some((at, why)) if at <= now => {
                    // The state may have moved on since it was read: look once more.
                    if self.in_flight.load(Ordering::Acquire) == 0 {
                        return why;
                    }
                }
                Some((at, _)) => {
                    timer
                        .as_mut()
                        .reset(Instant::now() + Duration::from_millis(at - now));
                    tokio::select! {
                        () = timer.as_mut() => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .idle_since
                .store(activity.now_ms(), Ordering::Relaxed);
            activity.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request in flight until it has been sent or dropped.
#[derive(Debug)]
pub(crate) struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub(crate) fn new(body: Body, in_flight: InFlight) -> Tracked {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, noting when bytes arrive.
#[derive(Debug)]
pub(crate) struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub(crate) fn new(stream: TcpStream, activity: Arc<Activity>) -> Watched {
        Watched { stream, activity }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_and_slow_heads_expire_and_requests_in_flight_never_do() {
        let header = Duration::from_secs(1);
        let idle = Duration::from_secs(5);
        let activity = Activity::new();
        // A new connection owes its head within the header timeout.
        assert_eq!(activity.expired(header, idle).await, Expiry::SlowHead);

        // A request in flight holds the connection open however long it takes.
        let request = activity.begin(false);
        let waited = tokio::time::timeout(Duration::from_secs(60), activity.expired(header, idle));
        assert!(waited.await.is_err());
        drop(request);
        // Then it is idle: closed after the idle timeout, not the header timeout.
        let before = tokio::time::Instant::now();
        assert_eq!(activity.expired(header, idle).await, Expiry::Idle);
        assert!(before.elapsed() >= Duration::from_secs(4));

        // On HTTP/2, bytes between requests (pings) do not start a head.
        let request = activity.begin(true);
        drop(request);
        activity.on_read();
        assert_eq!(activity.expired(header, idle).await, Expiry::Idle);
    }
}
