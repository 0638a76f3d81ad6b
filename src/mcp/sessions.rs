//! MCP sessions: opened by `initialize` (or `GET /sse`), named by a random `Mcp-Session-Id`, bound
//! to the API token that opened them, ended by `DELETE`, by their token's revocation, or by
//! idleness. Each session has its actor ([`crate::actors::session`]), which owns its event stream;
//! this registry finds sessions by id and stops their actors when they end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::SUPPORTED_VERSIONS;
use super::inflight::InFlight;
use crate::actors::session::{OUTBOUND_QUEUE, SessionActor, SessionMessage};

/// How long a request waits for its session's actor.
const ACTOR_TIMEOUT: Duration = Duration::from_secs(10);

/// One session.
#[derive(Debug)]
pub struct Session {
    /// 256 random bits, hex: visible ASCII as the transport requires, and unguessable.
    pub id: String,
    pub user_id: Uuid,
    pub token_id: Uuid,
    /// The version agreed at `initialize` (for a legacy session, the version it opens with:
    /// see [`Session::version`]).
    pub protocol_version: &'static str,
    /// Its requests in progress, which `notifications/cancelled` may stop.
    pub inflight: InFlight,
    /// Unix seconds of the last request.
    last_seen: AtomicI64,
    /// Opened by `GET /sse` (HTTP+SSE, 2024-11-05), whose answers all go to its stream.
    legacy: bool,
    /// A legacy session's `initialize` comes after it opens, over `POST /messages`, and may agree
    /// on a later version: its place in [`SUPPORTED_VERSIONS`] plus one, 0 before.
    negotiated: AtomicUsize,
    /// Owns the session's stream; stopped when the session ends.
    actor: ActorRef<SessionMessage>,
}

impl Session {
    /// Queues a message (serialized JSON) on the session's stream, waiting for room; `false` if it
    /// has no open stream.
    pub async fn push(&self, message: Bytes) -> bool {
        let sender = self
            .actor
            .call(SessionMessage::Outbound, Some(ACTOR_TIMEOUT))
            .await;
        match sender {
            Ok(CallResult::Success(Some(tx))) => tx.send(message).await.is_ok(),
            _ => false,
        }
    }

    /// The protocol version the session speaks: the one a legacy session's `initialize` agreed
    /// on, once it has, else the one it was opened with.
    pub fn version(&self) -> &'static str {
        match self.negotiated.load(Ordering::Acquire) {
            0 => self.protocol_version,
            n => SUPPORTED_VERSIONS
                .get(n - 1)
                .copied()
                .unwrap_or(self.protocol_version),
        }
    }

    /// Remembers the version a legacy session's `initialize` agreed on.
    pub fn set_negotiated(&self, version: &str) {
        if let Some(at) = SUPPORTED_VERSIONS.iter().position(|v| *v == version) {
            self.negotiated.store(at + 1, Ordering::Release);
        }
    }

    /// Queues a notification on the session's stream if it has one with room.
    fn notify(&self, message: &Bytes) {
        let _ = self.actor.cast(SessionMessage::Notify(message.clone()));
    }

    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Opens the session's stream (`GET /mcp`); `None` if one is already open.
    pub async fn attach_stream(&self) -> Option<mpsc::Receiver<Bytes>> {
        match self
            .actor
            .call(SessionMessage::Attach, Some(ACTOR_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(receiver)) => receiver,
            _ => None,
        }
    }

    /// Forgets a stream whose client went away; the session goes on. A stream opened since is
    /// left alone.
    pub fn detach_closed_stream(&self) {
        let _ = self.actor.cast(SessionMessage::Detach);
    }

    fn touch(&self) {
        self.last_seen.store(unix_now(), Ordering::Relaxed);
    }

    fn end(&self) {
        self.actor.stop(None);
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "this API token already has {0} open MCP sessions; close one (DELETE /mcp) or wait for it to expire"
    )]
    TooMany(usize),
    #[error("no random session id: {0}")]
    Random(getrandom::Error),
    #[error("the session's actor did not start: {0}")]
    Actor(String),
}

/// The sessions by id, and how many each token holds (so the cap is checked without a scan, with
/// the lock that every request's lookup needs held for as short as it takes).
#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, Arc<Session>>,
    per_token: HashMap<Uuid, usize>,
}

impl Registry {
    fn held(&self, token_id: Uuid) -> usize {
        self.per_token.get(&token_id).copied().unwrap_or(0)
    }

    fn insert(&mut self, session: Arc<Session>) {
        *self.per_token.entry(session.token_id).or_default() += 1;
        if let Some(old) = self.by_id.insert(session.id.clone(), session) {
            // Two equal 256-bit random ids: never, but the counts stay true.
            self.forget(&old);
        }
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let session = self.by_id.remove(id)?;
        self.forget(&session);
        Some(session)
    }

    fn forget(&mut self, session: &Session) {
        if let Some(held) = self.per_token.get_mut(&session.token_id) {
            *held -= 1;
            if *held == 0 {
                self.per_token.remove(&session.token_id);
            }
        }
    }
}

/// Every open session. Lookups are a short lock on a map (sessions change rarely and requests
/// find theirs in one hash lookup).
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<Registry>,
    /// Event streams open now (legacy `/sse` and `GET /mcp`).
    streams: std::sync::atomic::AtomicUsize,
    idle: Duration,
    max_per_token: usize,
}

impl Sessions {
    pub fn new(idle: Duration, max_per_token: usize) -> Sessions {
        Sessions {
            map: Mutex::new(Registry::default()),
            streams: std::sync::atomic::AtomicUsize::new(0),
            idle,
            max_per_token,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub async fn open(
        &self,
        user_id: Uuid,
        token_id: Uuid,
        protocol_version: &'static str,
    ) -> Result<Arc<Session>, OpenError> {
        self.insert(user_id, token_id, protocol_version, None).await
    }

    /// Opens a session of the legacy HTTP+SSE transport: its answers go to the returned receiver.
    pub async fn open_legacy(
        &self,
        user_id: Uuid,
        token_id: Uuid,
    ) -> Result<(Arc<Session>, mpsc::Receiver<Bytes>), OpenError> {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let session = self
            .insert(user_id, token_id, "2024-11-05", Some(tx))
            .await?;
        Ok((session, rx))
    }

    async fn insert(
        &self,
        user_id: Uuid,
        token_id: Uuid,
        protocol_version: &'static str,
        outbound: Option<mpsc::Sender<Bytes>>,
    ) -> Result<Arc<Session>, OpenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(OpenError::Random)?;
        let legacy = outbound.is_some();
        let (actor, _) = Actor::spawn(None, SessionActor, outbound)
            .await
            .map_err(|e| OpenError::Actor(e.to_string()))?;
        let session = Arc::new(Session {
            id: hex::encode(bytes),
            user_id,
            token_id,
            protocol_version,
            inflight: InFlight::default(),
            last_seen: AtomicI64::new(unix_now()),
            legacy,
            negotiated: AtomicUsize::new(0),
            actor,
        });
        let mut map = self.lock();
        if map.held(token_id) >= self.max_per_token {
            drop(map);
            session.end();
            return Err(OpenError::TooMany(self.max_per_token));
        }
        map.insert(Arc::clone(&session));
        Ok(session)
    }

    /// The session `id` if it exists and was opened with `token_id`.
    pub fn get(&self, id: &str, token_id: Uuid) -> Option<Arc<Session>> {
        let session = self.lock().by_id.get(id).cloned()?;
        if session.token_id != token_id {
            return None;
        }
        session.touch();
        Some(session)
    }

    /// Ends the session `id` of `token_id`; `false` if there is none.
    pub fn close(&self, id: &str, token_id: Uuid) -> bool {
        let removed = {
            let mut map = self.lock();
            match map.by_id.get(id) {
                Some(s) if s.token_id == token_id => map.remove(id),
                _ => None,
            }
        };
        removed.map(|s| s.end()).is_some()
    }

    /// Ends every session of a token (revoked) or of a user (deactivated, deleted).
    pub fn close_where(&self, doomed: impl Fn(&Session) -> bool) -> usize {
        let mut ended = Vec::new();
        {
            let mut map = self.lock();
            map.by_id.retain(|_, s| {
                let keep = !doomed(s);
                if !keep {
                    ended.push(Arc::clone(s));
                }
                keep
            });
            for session in &ended {
                map.forget(session);
            }
        }
        for session in &ended {
            session.end();
        }
        ended.len()
    }

    /// Sends a notification (serialized JSON) to every open stream of the user's sessions.
    pub fn notify_user(&self, user_id: Uuid, message: &Bytes) {
        let sessions: Vec<Arc<Session>> = self
            .lock()
            .by_id
            .values()
            .filter(|s| s.user_id == user_id)
            .cloned()
            .collect();
        for session in sessions {
            session.notify(message);
        }
    }

    /// Ends sessions idle for longer than the idle time; returns how many.
    pub fn reap(&self) -> usize {
        let cutoff = unix_now() - i64::try_from(self.idle.as_secs()).unwrap_or(i64::MAX);
        self.close_where(|s| s.last_seen.load(Ordering::Relaxed) < cutoff)
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Event streams open now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    pub(crate) fn stream_opened(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_closed(&self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.lock().by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_belong_to_their_token_and_are_capped() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let (user, token, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a = sessions.open(user, token, "2025-06-18").await.unwrap();
        assert_eq!(a.id.len(), 64);
        assert!(sessions.get(&a.id, token).is_some());
        assert!(
            sessions.get(&a.id, other).is_none(),
            "another token must not reach it"
        );
        sessions.open(user, token, "2025-06-18").await.unwrap();
        assert!(matches!(
            sessions.open(user, token, "2025-06-18").await,
            Err(OpenError::TooMany(2))
        ));
        sessions.open(user, other, "2025-06-18").await.unwrap();
        assert!(!sessions.close(&a.id, other));
        assert!(sessions.close(&a.id, token));
        assert!(sessions.get(&a.id, token).is_none());
        assert_eq!(sessions.close_where(|s| s.token_id == token), 1);
        assert_eq!(sessions.len(), 1);
        // Closed sessions no longer count toward the cap, however they ended.
        for _ in 0..2 {
            sessions.open(user, token, "2025-06-18").await.unwrap();
        }
        assert!(sessions.open(user, token, "2025-06-18").await.is_err());
        assert_eq!(sessions.close_where(|s| s.token_id == token), 2);
        let again = sessions.open(user, token, "2025-06-18").await.unwrap();
        assert!(sessions.close(&again.id, token));
        assert!(!sessions.lock().per_token.contains_key(&token));
        assert_eq!(sessions.lock().held(other), 1);
    }

    #[tokio::test]
    async fn ending_a_session_ends_its_stream() {
        let sessions = Sessions::new(Duration::from_secs(60), 5);
        let (user, token) = (Uuid::new_v4(), Uuid::new_v4());
        let (legacy, mut legacy_stream) = sessions.open_legacy(user, token).await.unwrap();
        let modern = sessions.open(user, token, "2025-11-25").await.unwrap();
        let mut modern_stream = modern.attach_stream().await.unwrap();
        assert!(
            modern.attach_stream().await.is_none(),
            "one stream per session"
        );

        let answer = Bytes::from_static(br#""answer""#);
        assert!(legacy.push(answer.clone()).await);
        assert_eq!(legacy_stream.recv().await, Some(answer));
        let changed = Bytes::from_static(br#""changed""#);
        sessions.notify_user(user, &changed);
        assert_eq!(modern_stream.recv().await, Some(changed.clone()));
        assert_eq!(legacy_stream.recv().await, Some(changed));

        assert_eq!(sessions.close_where(|s| s.user_id == user), 2);
        assert_eq!(legacy_stream.recv().await, None);
        assert_eq!(modern_stream.recv().await, None);
        assert!(!legacy.push(Bytes::from_static(b"0")).await);
    }

    #[tokio::test]
    async fn a_legacy_session_remembers_the_version_initialize_agreed_on() {
        let sessions = Sessions::new(Duration::from_secs(60), 5);
        let (legacy, _stream) = sessions
            .open_legacy(Uuid::new_v4(), Uuid::new_v4())
            .await
            .unwrap();
        assert_eq!(legacy.version(), "2024-11-05");
        legacy.set_negotiated("2025-06-18");
        assert_eq!(legacy.version(), "2025-06-18");
        legacy.set_negotiated("1999-01-01");
        assert_eq!(
            legacy.version(),
            "2025-06-18",
            "only versions this server speaks"
        );
    }

    #[tokio::test]
    async fn idle_sessions_are_reaped() {
        let sessions = Sessions::new(Duration::from_secs(0), 10);
        let s = sessions
            .open(Uuid::new_v4(), Uuid::new_v4(), "2025-06-18")
            .await
            .unwrap();
        s.last_seen.store(unix_now() - 5, Ordering::Relaxed);
        assert_eq!(sessions.reap(), 1);
        assert!(sessions.is_empty());
    }
}
