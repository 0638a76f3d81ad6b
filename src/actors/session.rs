//! One actor per MCP session: it owns the session's event stream.
//!
//! A session's stream is `GET /sse` for a legacy session (every answer goes there) or `GET /mcp`
//! for a Streamable HTTP one (notifications). Messages travel serialized (`Bytes` of JSON): an
//! answer is serialized once where it is made (or comes serialized from the skill index's cache),
//! and a notification once for all the sessions it goes to. The actor holds the sending half; the HTTP response
//! holds the receiving half and never the session, so stopping the actor (the session ended:
//! `DELETE`, its token revoked, its account deleted, idleness, shutdown) drops the sender and
//! ends the stream. Everything that reaches the stream goes through the actor's mailbox, so the
//! stream of one session is handled by its own task and nothing one session does (a client that
//! never reads its stream, say) can hold up another.
//!
//! A stream holds at most [`OUTBOUND_QUEUE`] messages, and the answers on all of one user's
//! streams at most `mcp.max_queued_bytes` bytes together ([`QueueBudget`]): each answer carries a
//! [`Charge`] on its user's budget from the moment it is queued until the connection has written
//! it out (the charge rides inside the event's `Bytes`, which hyper drops once they are sent) or
//! the stream ends (its queued messages are dropped with it). Notifications are not charged: they
//! are a few dozen bytes each, and dropped when the stream is full.
//!
//! Requests themselves do not pass through the actor: the session's immutable facts (user,
//! token, protocol version) and its requests in progress ([`crate::mcp::inflight::InFlight`])
//! are read from the shared [`crate::mcp::Session`], so a `tools/call` costs no mailbox hop.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ractor::SpawnErr> {
//! use agentskills_mcp::actors::session::{SessionActor, SessionMessage};
//! use ractor::Actor;
//!
//! let (actor, _) = Actor::spawn(None, SessionActor, None).await?;
//! let stream = ractor::call!(actor, SessionMessage::Attach).ok().flatten();
//! assert!(stream.is_some(), "the first stream is accepted");
//! actor.stop(None); // the stream ends
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use super::reply;

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

#[derive(Debug)]
pub struct SessionActor;

#[derive(Debug)]
pub struct SessionState {
    /// The open stream's sender, if a stream is open.
    outbound: Option<mpsc::Sender<Queued>>,
}

#[derive(Debug)]
pub enum SessionMessage {
    /// Opens the session's stream: its receiver, or `None` while another stream is open.
    Attach(RpcReplyPort<Option<mpsc::Receiver<Queued>>>),
    /// A stream's client went away; forget its sender if it is closed (a newer stream stays).
    Detach,
    /// The open stream's sender, to queue an answer on it (waiting for room happens in the caller,
    /// never in the actor).
    Outbound(RpcReplyPort<Option<mpsc::Sender<Queued>>>),
    /// Queues a notification if there is room: notifications are hints, and a client too slow to
    /// read them must not hold up the change that caused them.
    Notify(Bytes),
}

impl Actor for SessionActor {
    type Msg = SessionMessage;
    type State = SessionState;
    /// The stream a legacy session opens with.
    type Arguments = Option<mpsc::Sender<Queued>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        outbound: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SessionState { outbound })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMessage::Attach(port) => {
                if state.outbound.as_ref().is_some_and(|tx| !tx.is_closed()) {
                    reply(port, None);
                } else {
                    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
                    state.outbound = Some(tx);
                    reply(port, Some(rx));
                }
            }
            SessionMessage::Detach => {
                if state.outbound.as_ref().is_some_and(mpsc::Sender::is_closed) {
                    state.outbound = None;
                }
            }
            SessionMessage::Outbound(port) => {
                let open = state.outbound.clone().filter(|tx| !tx.is_closed());
                reply(port, open);
            }
            SessionMessage::Notify(message) => {
                if let Some(tx) = &state.outbound {
                    let _ = tx.try_send(Queued {
                        message,
                        charge: None,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ractor::call;

    use super::*;

    fn message(queued: Option<Queued>) -> Option<Bytes> {
        queued.map(|q| q.message)
    }

    #[tokio::test]
    async fn one_stream_at_a_time_and_stopping_ends_it() {
        let (actor, handle) = Actor::spawn(None, SessionActor, None).await.unwrap();
        let mut first = call!(actor, SessionMessage::Attach).unwrap().unwrap();
        assert!(
            call!(actor, SessionMessage::Attach).unwrap().is_none(),
            "a second stream is refused while the first is open"
        );
        actor
            .cast(SessionMessage::Notify(Bytes::from_static(b"1")))
            .unwrap();
        assert_eq!(message(first.recv().await), Some(Bytes::from_static(b"1")));

        // The client goes away: a new stream may open.
        drop(first);
        actor.cast(SessionMessage::Detach).unwrap();
        let mut second = call!(actor, SessionMessage::Attach).unwrap().unwrap();
        let tx = call!(actor, SessionMessage::Outbound).unwrap().unwrap();
        tx.send(Queued {
            message: Bytes::from_static(b"2"),
            charge: None,
        })
        .await
        .unwrap();
        drop(tx);
        assert_eq!(message(second.recv().await), Some(Bytes::from_static(b"2")));

        actor.stop(None);
        handle.await.unwrap();
        assert!(
            second.recv().await.is_none(),
            "the stream ends with the actor"
        );
    }

    #[tokio::test]
    async fn a_full_stream_drops_notifications_without_blocking() {
        let (tx, mut rx) = mpsc::channel(OUTBOUND_QUEUE);
        let (actor, _) = Actor::spawn(None, SessionActor, Some(tx)).await.unwrap();
        for n in 0..OUTBOUND_QUEUE + 10 {
            actor
                .cast(SessionMessage::Notify(Bytes::from(n.to_string())))
                .unwrap();
        }
        // The actor still answers: it never waited for room.
        assert!(call!(actor, SessionMessage::Outbound).unwrap().is_some());
        let mut received = 0;
        while rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, OUTBOUND_QUEUE);
        actor.stop(None);
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
