//! A session's event stream: [`Outbound`], the sending half of the one stream an MCP session may
//! have open.
//!
//! A session's stream is `GET /sse` for a legacy session (every answer goes there) or `GET /mcp`
//! for a Streamable HTTP one (notifications). Messages travel serialized (`Bytes` of JSON): an
//! answer is serialized once where it is made (or comes serialized from the skill index's cache),
//! and a notification once for all the sessions it goes to. The session holds the sending half;
//! the HTTP response holds the receiving half and never the session, so ending the session
//! (`DELETE`, its token revoked, its account deleted, idleness, shutdown) drops the sender and
//! ends the stream. Nothing here waits: attaching, detaching and queueing a notification hold a
//! mutex for a field's change, and an answer waits for room in its stream's channel outside it,
//! so nothing one session does (a client that never reads its stream, say) can hold up another.
//! (This was an actor with a task and mailboxes of its own, about 6 KiB per session; a mutex
//! around one `Option` does the same for a few dozen bytes, which is what lets one node hold
//! 100,000 idle streams.)
//!
//! A stream holds at most [`OUTBOUND_QUEUE`] messages, and the answers on all of one user's
//! streams at most `mcp.max_queued_bytes` bytes together ([`QueueBudget`]): each answer carries a
//! [`Charge`] on its user's budget from the moment it is queued until the connection has written
//! it out (the charge rides inside the event's `Bytes`, which hyper drops once they are sent) or
//! the stream ends (its queued messages are dropped with it). Notifications are not charged: they
//! are a few dozen bytes each, and dropped when the stream is full.
//!
//! Requests themselves do not pass through here: the session's immutable facts (user, token,
//! protocol version) and its requests in progress ([`crate::mcp::inflight::InFlight`]) are read
//! from the shared [`crate::mcp::Session`].
//!
//! ```
//! use agentskills_mcp::actors::session::Outbound;
//!
//! let outbound = Outbound::new(None);
//! let stream = outbound.attach();
//! assert!(stream.is_some(), "the first stream is accepted");
//! assert!(outbound.attach().is_none(), "one stream at a time");
//! outbound.end(); // the stream ends
//! assert!(outbound.attach().is_none(), "and no other opens");
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Messages a stream may have queued before its client reads them.
pub const OUTBOUND_QUEUE: usize = 64;

/// The bytes of answers one user's event streams hold, queued or being written, and how many
/// they may hold (`mcp.max_queued_bytes`). Shared by all the user's sessions.
#[derive(Debug)]
pub struct QueueBudget {
    used: AtomicUsize,
    max: usize,
}

impl QueueBudget {
    pub fn new(max: usize) -> QueueBudget {
        QueueBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes `bytes` from the budget, or `None` (and takes nothing) if they do not fit.
    pub fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .ok()?;
        Some(Charge {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// Bytes taken from a [`QueueBudget`], given back when dropped: however the message leaves
/// (written out, dropped with its stream, or never sent), the count cannot leak.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<QueueBudget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A message on a session's stream: serialized JSON, and for an answer its charge on the user's
/// budget, which the stream hands on with the bytes it writes.
#[derive(Debug)]
pub struct Queued {
    pub message: Bytes,
    pub charge: Option<Charge>,
}

/// The sending half of a session's stream, when one is open.
#[derive(Debug)]
pub struct Outbound {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    sender: Option<mpsc::Sender<Queued>>,
    /// The session has ended: no stream opens again.
    ended: bool,
}

impl Outbound {
    /// `stream`: the stream a legacy session opens with.
    pub fn new(stream: Option<mpsc::Sender<Queued>>) -> Outbound {
        Outbound {
            state: Mutex::new(State {
                sender: stream,
                ended: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the session's stream: its receiver, or `None` while another stream is open or once
    /// the session has ended.
    pub fn attach(&self) -> Option<mpsc::Receiver<Queued>> {
        let mut state = self.lock();
        if state.ended || state.sender.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        state.sender = Some(tx);
        Some(rx)
    }

    /// A stream's client went away: forgets its sender if it is closed (a newer stream stays).
    pub fn detach(&self) {
        let mut state = self.lock();
        if state.sender.as_ref().is_some_and(mpsc::Sender::is_closed) {
            state.sender = None;
        }
    }

    /// The open stream's sender, to queue an answer on it (waiting for room happens in the
    /// caller, with no lock held).
    pub fn sender(&self) -> Option<mpsc::Sender<Queued>> {
        self.lock().sender.clone().filter(|tx| !tx.is_closed())
    }

    /// Queues a notification if there is room: notifications are hints, and a client too slow to
    /// read them must not hold up the change that caused them.
    pub fn notify(&self, message: Bytes) {
        if let Some(tx) = &self.lock().sender {
            let _ = tx.try_send(Queued {
                message,
                charge: None,
            });
        }
    }

    /// The session has ended: its stream ends (once answers being queued now are in), and no
    /// other opens.
    pub fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        state.sender = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(queued: Option<Queued>) -> Option<Bytes> {
        queued.map(|q| q.message)
    }

    #[tokio::test]
    async fn one_stream_at_a_time_and_ending_ends_it() {
        let outbound = Outbound::new(None);
        let mut first = outbound.attach().unwrap();
        assert!(
            outbound.attach().is_none(),
            "a second stream is refused while the first is open"
        );
        outbound.notify(Bytes::from_static(b"1"));
        assert_eq!(message(first.recv().await), Some(Bytes::from_static(b"1")));

        // The client goes away: a new stream may open.
        drop(first);
        outbound.detach();
        let mut second = outbound.attach().unwrap();
        let tx = outbound.sender().unwrap();
        tx.send(Queued {
            message: Bytes::from_static(b"2"),
            charge: None,
        })
        .await
        .unwrap();
        drop(tx);
        assert_eq!(message(second.recv().await), Some(Bytes::from_static(b"2")));

        outbound.end();
        assert!(
            second.recv().await.is_none(),
            "the stream ends with the session"
        );
        assert!(outbound.attach().is_none(), "no stream opens after the end");
        assert!(outbound.sender().is_none());
    }

    #[tokio::test]
    async fn a_detach_leaves_a_newer_open_stream_alone() {
        let outbound = Outbound::new(None);
        let _open = outbound.attach().unwrap();
        outbound.detach();
        assert!(outbound.sender().is_some(), "the open stream stays");
    }

    #[tokio::test]
    async fn a_full_stream_drops_notifications_without_blocking() {
        let (tx, mut rx) = mpsc::channel(OUTBOUND_QUEUE);
        let outbound = Outbound::new(Some(tx));
        for n in 0..OUTBOUND_QUEUE + 10 {
            outbound.notify(Bytes::from(n.to_string()));
        }
        // Nothing waited for room.
        assert!(outbound.sender().is_some());
        let mut received = 0;
        while rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, OUTBOUND_QUEUE);
        outbound.end();
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_budget_and_given_back_when_dropped() {
        let budget = Arc::new(QueueBudget::new(100));
        let a = budget.try_charge(60).unwrap();
        assert_eq!(budget.used(), 60);
        assert!(budget.try_charge(41).is_none(), "over the budget");
        assert_eq!(budget.used(), 60, "a refused charge takes nothing");
        let b = budget.try_charge(40).unwrap();
        assert_eq!(budget.used(), 100);
        assert!(budget.try_charge(1).is_none());
        assert!(budget.try_charge(usize::MAX).is_none(), "no overflow");
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_charge_inside_bytes_is_given_back_when_the_bytes_are_dropped() {
        struct Event {
            bytes: Vec<u8>,
            _charge: Charge,
        }
        impl AsRef<[u8]> for Event {
            fn as_ref(&self) -> &[u8] {
                &self.bytes
            }
        }
        let budget = Arc::new(QueueBudget::new(10));
        let charge = budget.try_charge(10).unwrap();
        let bytes = Bytes::from_owner(Event {
            bytes: b"0123456789".to_vec(),
            _charge: charge,
        });
        let clone = bytes.slice(2..4);
        drop(bytes);
        assert_eq!(budget.used(), 10, "a piece of the bytes is still held");
        drop(clone);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn queued_answers_are_given_back_when_their_stream_ends() {
        let budget = Arc::new(QueueBudget::new(1000));
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        for _ in 0..3 {
            let charge = budget.try_charge(100);
            tx.send(Queued {
                message: Bytes::from_static(b"x"),
                charge,
            })
            .await
            .unwrap();
        }
        assert_eq!(budget.used(), 300);
        drop(rx);
        assert_eq!(
            budget.used(),
            0,
            "the dropped stream's messages gave their bytes back"
        );
        drop(tx);
    }
}
