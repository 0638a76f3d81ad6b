//! MCP sessions: opened by `initialize` (or `GET /sse`), named by a random `Mcp-Session-Id`, bound
//! to the API token that opened them, ended by `DELETE`, by their token's revocation, or by
//! idleness. Each session owns its event stream's sending half ([`crate::actors::session::Outbound`]);
//! this registry finds sessions by id and ends their streams when they end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::SUPPORTED_VERSIONS;
use super::dispatch::Caller;
use super::inflight::InFlight;
use crate::actors::session::{OUTBOUND_QUEUE, Outbound, QueueBudget, Queued};
use crate::domain::Scopes;

/// One session.
#[derive(Debug)]
pub struct Session {
    /// 256 random bits, hex: visible ASCII as the transport requires, and unguessable.
    pub id: String,
    pub user_id: Uuid,
    pub token_id: Uuid,
    /// What its token may do (a session is bound to its token, whose scopes never change).
    pub scopes: Scopes,
    /// The version agreed at `initialize` (for a legacy session, the version it opens with:
    /// see [`Session::version`]).
    pub protocol_version: &'static str,
    /// Its requests in progress, which `notifications/cancelled` may stop.
    pub inflight: InFlight,
    /// Unix milliseconds of the last request.
    last_seen: AtomicI64,
    /// `last_seen` as last written to the database ([`Sessions::seen_since_flush`]).
    flushed: AtomicI64,
    /// Opened by `GET /sse` (HTTP+SSE, 2024-11-05), whose answers all go to its stream.
    legacy: bool,
    /// A legacy session's `initialize` comes after it opens, over `POST /messages`, and may agree
    /// on a later version: its place in [`SUPPORTED_VERSIONS`] plus one, 0 before.
    negotiated: AtomicUsize,
    /// The bytes of answers queued on the user's streams, shared by all the user's sessions.
    budget: Arc<QueueBudget>,
    /// The sending half of the session's stream; ended when the session ends.
    outbound: Outbound,
}

/// Why an answer was not queued on a session's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The session has no open stream.
    Closed,
    /// The user's streams already hold so many bytes that this answer would pass
    /// `mcp.max_queued_bytes`.
    OverBudget { queued: usize, max: usize },
}

impl Session {
    /// Whom its requests are for.
    pub fn caller(&self) -> Caller {
        Caller {
            user_id: self.user_id,
            scopes: self.scopes,
        }
    }

    /// Queues an answer (serialized JSON) on the session's stream, waiting for room, and charges
    /// its bytes to the user's budget until the stream has written it out. An answer that does not
    /// fit in the budget is not queued.
    pub async fn push(&self, message: Bytes) -> Result<(), PushError> {
        let charge =
            self.budget
                .try_charge(message.len())
                .ok_or_else(|| PushError::OverBudget {
                    queued: self.budget.used(),
                    max: self.budget.max(),
                })?;
        let queued = Queued {
            message,
            charge: Some(charge),
        };
        match self.outbound.sender() {
            Some(tx) => tx.send(queued).await.map_err(|_| PushError::Closed),
            None => Err(PushError::Closed),
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
        self.outbound.notify(message.clone());
    }

    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Opens the session's stream (`GET /mcp`); `None` if one is already open.
    pub fn attach_stream(&self) -> Option<mpsc::Receiver<Queued>> {
        self.outbound.attach()
    }

    /// Forgets a stream whose client went away; the session goes on. A stream opened since is
    /// left alone.
    pub fn detach_closed_stream(&self) {
        self.outbound.detach();
    }

    fn touch(&self) {
        self.last_seen.store(unix_millis(), Ordering::Relaxed);
    }

    fn end(&self) {
        self.outbound.end();
    }
}

/// Milliseconds since the Unix epoch: fine enough to tell which of a token's sessions was used
/// last, as eviction at the cap needs.
fn unix_millis() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no random session id: {0}")]
    Random(getrandom::Error),
}

/// The sessions by id, and how many each token holds (so the cap is checked without a scan, with
/// the lock that every request's lookup needs held for as short as it takes).
#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, Arc<Session>>,
    /// Each token's sessions, oldest first: at most `max_per_token` of them.
    per_token: HashMap<Uuid, Vec<Arc<Session>>>,
}

impl Registry {
    fn held(&self, token_id: Uuid) -> usize {
        self.per_token.get(&token_id).map_or(0, Vec::len)
    }

    fn insert(&mut self, session: Arc<Session>) {
        self.per_token
            .entry(session.token_id)
            .or_default()
            .push(Arc::clone(&session));
        if let Some(old) = self.by_id.insert(session.id.clone(), session) {
            // Two equal 256-bit random ids: never, but the lists stay true.
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
            held.retain(|s| !std::ptr::eq(Arc::as_ptr(s), session));
            if held.is_empty() {
                self.per_token.remove(&session.token_id);
            }
        }
    }

    /// Removes the token's least recently used session (the oldest of those used last at the same
    /// millisecond) and returns it.
    fn evict_least_recent(&mut self, token_id: Uuid) -> Option<Arc<Session>> {
        let held = self.per_token.get(&token_id)?;
        let oldest = held
            .iter()
            .enumerate()
            .min_by_key(|(position, s)| (s.last_seen.load(Ordering::Relaxed), *position))
            .map(|(_, s)| s.id.clone())?;
        self.remove(&oldest)
    }
}

/// Every open session. Lookups are a short lock on a map (sessions change rarely and requests
/// find theirs in one hash lookup).
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<Registry>,
    /// Each user's budget of queued bytes, held by the user's sessions (and by the answers still
    /// charged to it); an entry whose budget nobody holds any more is pruned by
    /// [`Sessions::reap`]. Its own lock, taken only when a session opens or by the reaper.
    budgets: Mutex<HashMap<Uuid, Weak<QueueBudget>>>,
    /// Event streams open now (legacy `/sse` and `GET /mcp`).
    streams: std::sync::atomic::AtomicUsize,
    idle: Duration,
    max_per_token: usize,
    /// `mcp.max_queued_bytes`.
    max_queued_bytes: usize,
    /// `server.replica_id`: the prefix of legacy session ids (`<replica>.<hex>`), by which a load
    /// balancer sends a legacy session's `POST /messages` to the replica that holds its stream.
    replica: Option<Arc<str>>,
}

impl Sessions {
    pub fn new(idle: Duration, max_per_token: usize, max_queued_bytes: usize) -> Sessions {
        Sessions {
            map: Mutex::new(Registry::default()),
            budgets: Mutex::new(HashMap::new()),
            streams: std::sync::atomic::AtomicUsize::new(0),
            idle,
            max_per_token,
            max_queued_bytes,
            replica: None,
        }
    }

    /// The same registry, whose legacy session ids begin with `replica` and a dot.
    pub fn for_replica(mut self, replica: Option<&str>) -> Sessions {
        self.replica = replica.map(Arc::from);
        self
    }

    /// The replica a legacy session id names, when it names one (`<replica>.<hex>`).
    pub fn replica_of(id: &str) -> Option<&str> {
        id.split_once('.').map(|(replica, _)| replica)
    }

    /// Whether a legacy session id names a replica other than this one: its stream is there,
    /// so its messages cannot be answered here.
    pub fn held_elsewhere(&self, id: &str) -> bool {
        Self::replica_of(id).is_some_and(|named| self.replica.as_deref() != Some(named))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_budgets(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Weak<QueueBudget>>> {
        self.budgets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user's budget: the one their sessions share, or a new one.
    fn budget(&self, user_id: Uuid) -> Arc<QueueBudget> {
        let mut budgets = self.lock_budgets();
        if let Some(budget) = budgets.get(&user_id).and_then(Weak::upgrade) {
            return budget;
        }
        let budget = Arc::new(QueueBudget::new(self.max_queued_bytes));
        budgets.insert(user_id, Arc::downgrade(&budget));
        budget
    }

    /// Bytes of answers queued on the user's streams and not yet written out.
    pub fn queued_bytes(&self, user_id: Uuid) -> usize {
        self.lock_budgets()
            .get(&user_id)
            .and_then(Weak::upgrade)
            .map_or(0, |budget| budget.used())
    }

    pub async fn open(
        &self,
        user_id: Uuid,
        token_id: Uuid,
        scopes: Scopes,
        protocol_version: &'static str,
    ) -> Result<Arc<Session>, OpenError> {
        self.insert(None, user_id, token_id, scopes, protocol_version, None)
            .await
    }

    /// Takes up here a Streamable HTTP session another replica opened (its facts read from the
    /// database): the same id, user, credential, scopes and version. Not counted against the
    /// local cap: the cap is the database's, kept when the session was opened.
    pub async fn adopt(
        &self,
        id: &str,
        user_id: Uuid,
        token_id: Uuid,
        scopes: Scopes,
        protocol_version: &'static str,
    ) -> Result<Arc<Session>, OpenError> {
        if let Some(session) = self.get(id, token_id) {
            return Ok(session);
        }
        self.insert(
            Some(id.to_owned()),
            user_id,
            token_id,
            scopes,
            protocol_version,
            None,
        )
        .await
    }

    /// Opens a session of the legacy HTTP+SSE transport: its answers go to the returned receiver.
    pub async fn open_legacy(
        &self,
        user_id: Uuid,
        token_id: Uuid,
        scopes: Scopes,
    ) -> Result<(Arc<Session>, mpsc::Receiver<Queued>), OpenError> {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let session = self
            .insert(None, user_id, token_id, scopes, "2024-11-05", Some(tx))
            .await?;
        Ok((session, rx))
    }

    async fn insert(
        &self,
        adopted: Option<String>,
        user_id: Uuid,
        token_id: Uuid,
        scopes: Scopes,
        protocol_version: &'static str,
        outbound: Option<mpsc::Sender<Queued>>,
    ) -> Result<Arc<Session>, OpenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(OpenError::Random)?;
        let legacy = outbound.is_some();
        let id = match (adopted.clone(), legacy, &self.replica) {
            (Some(id), _, _) => id,
            (None, true, Some(replica)) => format!("{replica}.{}", hex::encode(bytes)),
            (None, _, _) => hex::encode(bytes),
        };
        let now = unix_millis();
        let session = Arc::new(Session {
            id,
            user_id,
            token_id,
            scopes,
            protocol_version,
            inflight: InFlight::default(),
            last_seen: AtomicI64::new(now),
            flushed: AtomicI64::new(now),
            legacy,
            negotiated: AtomicUsize::new(0),
            budget: self.budget(user_id),
            outbound: Outbound::new(outbound),
        });
        // At the cap, the token's least recently used session makes room: clients that restart
        // without closing their sessions (editors, agents) must not lock themselves out.
        let evicted = {
            let mut map = self.lock();
            let evicted = if adopted.is_none() && map.held(token_id) >= self.max_per_token.max(1) {
                map.evict_least_recent(token_id)
            } else {
                None
            };
            map.insert(Arc::clone(&session));
            evicted
        };
        if let Some(evicted) = evicted {
            tracing::info!(%token_id, "the API token is at its session cap: its least recently used session ended");
            evicted.end();
        }
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

    /// Ends the session `id`, whoever holds it (its end was announced); `false` if there is none.
    pub fn close_id(&self, id: &str) -> bool {
        let removed = self.lock().remove(id);
        removed.map(|s| s.end()).is_some()
    }

    /// The Streamable HTTP sessions (of `token_id`, or all) used since their use was last
    /// written to the database, with when they were last used; marks those times written.
    pub fn seen_since_flush(&self, token_id: Option<Uuid>) -> Vec<(String, time::OffsetDateTime)> {
        self.lock()
            .by_id
            .values()
            .filter(|s| !s.legacy && token_id.is_none_or(|t| t == s.token_id))
            .filter_map(|s| {
                let seen = s.last_seen.load(Ordering::Relaxed);
                let flushed = s.flushed.swap(seen, Ordering::Relaxed);
                let at =
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(seen) * 1_000_000)
                        .ok()?;
                (seen > flushed).then(|| (s.id.clone(), at))
            })
            .collect()
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

    /// Ends sessions idle for longer than the idle time; returns how many. Also forgets the
    /// budgets of users who have no session (nor answer) left.
    pub fn reap(&self) -> usize {
        let idle = i64::try_from(self.idle.as_millis()).unwrap_or(i64::MAX);
        let cutoff = unix_millis().saturating_sub(idle);
        let ended = self.close_where(|s| s.last_seen.load(Ordering::Relaxed) < cutoff);
        self.lock_budgets()
            .retain(|_, budget| budget.strong_count() > 0);
        ended
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
        let sessions = Sessions::new(Duration::from_secs(60), 2, 1 << 20);
        let (user, token, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a = sessions
            .open(user, token, Scopes::ALL, "2025-06-18")
            .await
            .unwrap();
        assert_eq!(a.id.len(), 64);
        assert!(sessions.get(&a.id, token).is_some());
        assert!(
            sessions.get(&a.id, other).is_none(),
            "another token must not reach it"
        );
        let b = sessions
            .open(user, token, Scopes::ALL, "2025-06-18")
            .await
            .unwrap();
        sessions
            .open(user, other, Scopes::ALL, "2025-06-18")
            .await
            .unwrap();
        assert!(!sessions.close(&a.id, other));
        assert!(sessions.close(&a.id, token));
        assert!(sessions.get(&a.id, token).is_none());
        assert_eq!(sessions.close_where(|s| s.token_id == token), 1);
        assert!(sessions.get(&b.id, token).is_none());
        assert_eq!(sessions.len(), 1);
        // Closed sessions no longer count toward the cap, however they ended.
        for _ in 0..2 {
            sessions
                .open(user, token, Scopes::ALL, "2025-06-18")
                .await
                .unwrap();
        }
        assert_eq!(sessions.lock().held(token), 2);
        assert_eq!(sessions.close_where(|s| s.token_id == token), 2);
        let again = sessions
            .open(user, token, Scopes::ALL, "2025-06-18")
            .await
            .unwrap();
        assert!(sessions.close(&again.id, token));
        assert!(!sessions.lock().per_token.contains_key(&token));
        assert_eq!(sessions.lock().held(other), 1);
    }

    /// At the cap, a new session ends the token's least recently used one (its stream ends);
    /// the others, and other tokens' sessions, live on.
    #[tokio::test]
    async fn at_the_cap_the_least_recently_used_session_makes_room() {
        let sessions = Sessions::new(Duration::from_secs(60), 2, 1 << 20);
        let (user, token, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let first = sessions
            .open(user, token, Scopes::ALL, "2025-11-25")
            .await
            .unwrap();
        let second = sessions
            .open(user, token, Scopes::ALL, "2025-11-25")
            .await
            .unwrap();
        let theirs = sessions
            .open(user, other, Scopes::ALL, "2025-11-25")
            .await
            .unwrap();
        let mut second_stream = second.attach_stream().unwrap();
        // The first is used after the second was opened: the second is now the least recent.
        first.last_seen.store(unix_millis() + 10, Ordering::Relaxed);
        let third = sessions
            .open(user, token, Scopes::ALL, "2025-11-25")
            .await
            .unwrap();
        assert!(
            sessions.get(&second.id, token).is_none(),
            "the LRU session ended"
        );
        assert!(second_stream.recv().await.is_none(), "its stream ended");
        for live in [&first, &third] {
            assert!(sessions.get(&live.id, token).is_some());
        }
        assert!(sessions.get(&theirs.id, other).is_some());
        assert_eq!(sessions.lock().held(token), 2);
        // Used at the same millisecond: the oldest goes.
        let at = unix_millis();
        first.last_seen.store(at, Ordering::Relaxed);
        third.last_seen.store(at, Ordering::Relaxed);
        sessions
            .open(user, token, Scopes::ALL, "2025-11-25")
            .await
            .unwrap();
        assert!(sessions.get(&first.id, token).is_none());
        assert!(sessions.get(&third.id, token).is_some());
    }

    #[tokio::test]
    async fn ending_a_session_ends_its_stream() {
        let sessions = Sessions::new(Duration::from_secs(60), 5, 1 << 20);
        let (user, token) = (Uuid::new_v4(), Uuid::new_v4());
        let (legacy, mut legacy_stream) = sessions
            .open_legacy(user, token, Scopes::ALL)
            .await
            .unwrap();
        let modern = sessions
            .open(user, token, Scopes::ALL, "2025-11-25")
            .await
            .unwrap();
        let mut modern_stream = modern.attach_stream().unwrap();
        assert!(modern.attach_stream().is_none(), "one stream per session");

        let answer = Bytes::from_static(br#""answer""#);
        assert_eq!(legacy.push(answer.clone()).await, Ok(()));
        assert_eq!(legacy_stream.recv().await.map(|q| q.message), Some(answer));
        let changed = Bytes::from_static(br#""changed""#);
        sessions.notify_user(user, &changed);
        assert_eq!(
            modern_stream.recv().await.map(|q| q.message),
            Some(changed.clone())
        );
        assert_eq!(legacy_stream.recv().await.map(|q| q.message), Some(changed));

        assert_eq!(sessions.close_where(|s| s.user_id == user), 2);
        assert!(legacy_stream.recv().await.is_none());
        assert!(modern_stream.recv().await.is_none());
        assert_eq!(
            legacy.push(Bytes::from_static(b"0")).await,
            Err(PushError::Closed)
        );
        assert_eq!(sessions.queued_bytes(user), 0, "nothing stays charged");
    }

    #[tokio::test]
    async fn a_users_sessions_share_one_budget_of_queued_bytes() {
        let sessions = Sessions::new(Duration::from_secs(60), 5, 100);
        let (user, other, token) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (a, mut a_stream) = sessions
            .open_legacy(user, token, Scopes::ALL)
            .await
            .unwrap();
        let (b, b_stream) = sessions
            .open_legacy(user, token, Scopes::ALL)
            .await
            .unwrap();
        let (c, _c_stream) = sessions
            .open_legacy(other, token, Scopes::ALL)
            .await
            .unwrap();
        assert_eq!(a.push(Bytes::from(vec![b'x'; 60])).await, Ok(()));
        assert_eq!(
            b.push(Bytes::from(vec![b'x'; 41])).await,
            Err(PushError::OverBudget {
                queued: 60,
                max: 100
            }),
            "the user's other session shares the budget"
        );
        assert_eq!(c.push(Bytes::from(vec![b'x'; 100])).await, Ok(()));
        assert_eq!(b.push(Bytes::from(vec![b'x'; 40])).await, Ok(()));
        assert_eq!(sessions.queued_bytes(user), 100);
        // Read by its client: given back.
        let read = a_stream.recv().await.unwrap();
        drop(read);
        assert_eq!(sessions.queued_bytes(user), 40);
        // The stream ends with its message unread: given back too.
        drop(b_stream);
        assert_eq!(sessions.queued_bytes(user), 0);
        assert_eq!(sessions.queued_bytes(other), 100);
        // A user with no session left is forgotten by the reaper.
        sessions.close_where(|s| s.user_id == user);
        drop((a, b));
        sessions.reap();
        assert!(!sessions.lock_budgets().contains_key(&user));
        assert!(sessions.lock_budgets().contains_key(&other));
    }

    #[tokio::test]
    async fn a_legacy_session_remembers_the_version_initialize_agreed_on() {
        let sessions = Sessions::new(Duration::from_secs(60), 5, 100);
        let (legacy, _stream) = sessions
            .open_legacy(Uuid::new_v4(), Uuid::new_v4(), Scopes::ALL)
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
        let sessions = Sessions::new(Duration::from_secs(0), 10, 1 << 20);
        let s = sessions
            .open(Uuid::new_v4(), Uuid::new_v4(), Scopes::ALL, "2025-06-18")
            .await
            .unwrap();
        s.last_seen.store(unix_millis() - 5000, Ordering::Relaxed);
        assert_eq!(sessions.reap(), 1);
        assert!(sessions.is_empty());
    }
}
