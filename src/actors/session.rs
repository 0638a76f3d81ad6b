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

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use super::reply;

/// Messages a stream may have queued before its client reads them.
pub const OUTBOUND_QUEUE: usize = 64;

#[derive(Debug)]
pub struct SessionActor;

#[derive(Debug)]
pub struct SessionState {
    /// The open stream's sender, if a stream is open.
    outbound: Option<mpsc::Sender<Bytes>>,
}

#[derive(Debug)]
pub enum SessionMessage {
    /// Opens the session's stream: its receiver, or `None` while another stream is open.
    Attach(RpcReplyPort<Option<mpsc::Receiver<Bytes>>>),
    /// A stream's client went away; forget its sender if it is closed (a newer stream stays).
    Detach,
    /// The open stream's sender, to queue an answer on it (waiting for room happens in the caller,
    /// never in the actor).
    Outbound(RpcReplyPort<Option<mpsc::Sender<Bytes>>>),
    /// Queues a notification if there is room: notifications are hints, and a client too slow to
    /// read them must not hold up the change that caused them.
    Notify(Bytes),
}

impl Actor for SessionActor {
    type Msg = SessionMessage;
    type State = SessionState;
    /// The stream a legacy session opens with.
    type Arguments = Option<mpsc::Sender<Bytes>>;

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
                    let _ = tx.try_send(message);
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
        assert_eq!(first.recv().await, Some(Bytes::from_static(b"1")));

        // The client goes away: a new stream may open.
        drop(first);
        actor.cast(SessionMessage::Detach).unwrap();
        let mut second = call!(actor, SessionMessage::Attach).unwrap().unwrap();
        let tx = call!(actor, SessionMessage::Outbound).unwrap().unwrap();
        tx.send(Bytes::from_static(b"2")).await.unwrap();
        drop(tx);
        assert_eq!(second.recv().await, Some(Bytes::from_static(b"2")));

        actor.stop(None);
        handle.await.unwrap();
        assert_eq!(second.recv().await, None, "the stream ends with the actor");
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
