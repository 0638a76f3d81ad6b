//! Listen streams (protocol 2026-07-28): a client without a session learns of changes through
//! `subscriptions/listen`, a request whose answer is a stream of the notifications it opted in to.
//!
//! The stream's first message is `notifications/subscriptions/acknowledged`, naming the part of
//! the client's filter (`params.notifications`, a `SubscriptionFilter`) this server honors; every
//! message on it carries `_meta["io.modelcontextprotocol/subscriptionId"]`, the listen request's
//! id, so that a client (on stdio, where every stream shares one channel) can tell its streams
//! apart. This server honors `resourcesListChanged`: a user's skills are resources, and a change
//! to them (created, updated, deleted, uploaded) changes the resource list. The Skills extension
//! (SEP-2640) defines no notification of its own: its clients learn of skill changes the same way.
//! Tools and prompts never change, and resource subscriptions are not offered, so those parts of
//! a filter are left out of the acknowledgement and never sent.
//!
//! [`ListenStreams`] is the registry: it holds each open stream's sending half, its user and
//! token (so revoking a token or deleting an account ends its streams, as they end sessions),
//! and counts the streams of each token against `mcp.max_listen_streams_per_token`. A transport
//! opens a stream ([`ListenStreams::open`]) and carries the [`ListenStream`] it gets to its
//! client (HTTP: the POST's `text/event-stream` answer; stdio: standard output). Dropping that
//! handle (the client went away, or cancelled) removes the stream; ending it from the server's
//! side ([`ListenStreams::close_where`]) sends its last message (HTTP: the listen request's
//! result; stdio: `notifications/cancelled` naming it, as the schema says) and drops the sending
//! half, so the stream ends once its client has read what was queued. Nothing here knows HTTP.
//!
//! A stream holds at most [`LISTEN_QUEUE`] messages. Notifications are hints: one for a full
//! stream is dropped, never waited for, so a client that does not read cannot hold up the change
//! that caused it (nor anyone else's stream).
//!
//! ```
//! use std::sync::Arc;
//! use agentskills_mcp::mcp::listen::{Change, Ending, Filter, ListenStreams};
//! use serde_json::{Value, json};
//! use uuid::Uuid;
//!
//! let streams = Arc::new(ListenStreams::new(4));
//! let (user, token) = (Uuid::new_v4(), Uuid::new_v4());
//! let params = json!({"notifications": {"resourcesListChanged": true, "toolsListChanged": true}});
//! let filter = Filter::from_params(Some(&params)).unwrap();
//! let mut stream = streams.open(user, token, &json!(7), filter, Ending::Result).unwrap();
//! streams.notify_user(user, Change::ResourcesListChanged);
//!
//! let read = |bytes: bytes::Bytes| serde_json::from_slice::<Value>(&bytes).unwrap();
//! let ack = read(stream.try_recv().unwrap());
//! assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
//! assert_eq!(ack["params"]["notifications"], json!({"resourcesListChanged": true}));
//! let changed = read(stream.try_recv().unwrap());
//! assert_eq!(changed["method"], "notifications/resources/list_changed");
//! assert_eq!(changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 7);
//! drop(stream); // the client went away
//! assert_eq!(streams.len(), 0);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::codes;
use super::dispatch::{CANCELLED, RpcError};
use super::limits::limit_error;

/// The method that opens a listen stream.
pub const LISTEN: &str = "subscriptions/listen";

/// The `_meta` key that names the stream a notification belongs to.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The setting that caps the streams of one token.
pub const MAX_LISTEN_STREAMS: &str = "mcp.max_listen_streams_per_token";

/// Messages a listen stream may have queued before its client reads them: the acknowledgement,
/// notifications, and the last message when the server ends it. Notifications repeat (each says
/// "list again"), so a few queued say all a slow client needs.
pub const LISTEN_QUEUE: usize = 16;

/// A change listen streams may be told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The user's skills, and so the resources, changed.
    ResourcesListChanged,
}

impl Change {
    const ALL: [Change; 1] = [Change::ResourcesListChanged];

    fn method(self) -> &'static str {
        match self {
            Change::ResourcesListChanged => "notifications/resources/list_changed",
        }
    }

    /// Its field in a `SubscriptionFilter`.
    fn filter_field(self) -> &'static str {
        match self {
            Change::ResourcesListChanged => "resourcesListChanged",
        }
    }
}

/// The notification types a stream asked for that this server honors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    resources_list_changed: bool,
}

impl Filter {
    /// The filter of a `subscriptions/listen` request, from `params.notifications`: -32602 when
    /// it is missing or a field has the wrong type. Fields this server does not know are left
    /// out, as are those it knows and does not honor (`toolsListChanged`, `promptsListChanged`,
    /// `resourceSubscriptions`): it never sends those.
    pub fn from_params(params: Option<&Value>) -> Result<Filter, RpcError> {
        let invalid =
            |why: &str| RpcError::new(codes::INVALID_PARAMS, format!("invalid params: {why}"));
        let filter = params
            .and_then(|p| p.get("notifications"))
            .and_then(Value::as_object)
            .ok_or_else(|| {
                invalid("subscriptions/listen needs `notifications` (a SubscriptionFilter object)")
            })?;
        for field in [
            "resourcesListChanged",
            "toolsListChanged",
            "promptsListChanged",
        ] {
            if filter.get(field).is_some_and(|v| !v.is_boolean()) {
                return Err(invalid(&format!(
                    "`notifications.{field}` must be a boolean"
                )));
            }
        }
        if let Some(uris) = filter.get("resourceSubscriptions") {
            let strings = uris
                .as_array()
                .is_some_and(|uris| uris.iter().all(Value::is_string));
            if !strings {
                return Err(invalid(
                    "`notifications.resourceSubscriptions` must be an array of URIs",
                ));
            }
        }
        let wants = |field: &str| filter.get(field).and_then(Value::as_bool) == Some(true);
        Ok(Filter {
            resources_list_changed: wants(Change::ResourcesListChanged.filter_field()),
        })
    }

    pub fn accepts(&self, change: Change) -> bool {
        match change {
            Change::ResourcesListChanged => self.resources_list_changed,
        }
    }

    /// What the server agreed to send, as a `SubscriptionFilter`.
    fn acknowledged(&self) -> Value {
        let agreed: Map<String, Value> = Change::ALL
            .into_iter()
            .filter(|c| self.accepts(*c))
            .map(|c| (c.filter_field().to_owned(), Value::Bool(true)))
            .collect();
        Value::Object(agreed)
    }
}

/// How the server ends a stream it tears down (shutdown, token revoked, account deleted), as
/// the transport's rules say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// With the listen request's result (`SubscriptionsListenResult`), then the end of the
    /// response: Streamable HTTP, where each stream is its own response.
    Result,
    /// With `notifications/cancelled` naming the listen request: stdio, where every stream shares
    /// one channel and only this says that one of them is over.
    Cancelled,
}

/// A notification on stream `id`: `params` with the stream's id in `_meta`, serialized.
fn tagged(id: &Value, method: &str, mut params: Map<String, Value>) -> Bytes {
    params.insert("_meta".to_owned(), json!({META_SUBSCRIPTION_ID: id}));
    let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
    Bytes::from(serde_json::to_vec(&message).unwrap_or_default())
}

fn acknowledgement(id: &Value, filter: Filter) -> Bytes {
    let mut params = Map::new();
    params.insert("notifications".to_owned(), filter.acknowledged());
    tagged(id, "notifications/subscriptions/acknowledged", params)
}

fn last_message(id: &Value, ending: Ending) -> Bytes {
    match ending {
        Ending::Result => {
            let result = json!({"resultType": "complete", "_meta": {META_SUBSCRIPTION_ID: id}});
            let message = json!({"jsonrpc": "2.0", "id": id, "result": result});
            Bytes::from(serde_json::to_vec(&message).unwrap_or_default())
        }
        Ending::Cancelled => {
            let mut params = Map::new();
            params.insert("requestId".to_owned(), id.clone());
            params.insert(
                "reason".to_owned(),
                json!("the server ended this subscription"),
            );
            tagged(id, CANCELLED, params)
        }
    }
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("this API token already has {max} open listen streams ({MAX_LISTEN_STREAMS} = {max})")]
    TooMany { max: usize },
}

impl ListenError {
    /// The JSON-RPC error a client gets: -32090, naming the setting and its value.
    pub fn rpc_error(&self) -> RpcError {
        let ListenError::TooMany { max } = *self;
        limit_error(
            MAX_LISTEN_STREAMS,
            max,
            format!(
                "this API token already has {max} open listen streams, as many as one token may hold ({MAX_LISTEN_STREAMS} = {max}); close one (end its request) and listen again"
            ),
        )
    }
}

/// One open stream, as the registry holds it.
#[derive(Debug)]
struct Entry {
    user_id: Uuid,
    token_id: Uuid,
    /// The stream's notifications, serialized with its id when it opened: one for each change
    /// its filter accepts, so that telling it of a change copies nothing but a pointer.
    notifications: Vec<(Change, Bytes)>,
    last: Bytes,
    sender: mpsc::Sender<Bytes>,
}

#[derive(Debug, Default)]
struct Registry {
    by_key: HashMap<u64, Entry>,
    per_token: HashMap<Uuid, usize>,
}

impl Registry {
    fn remove(&mut self, key: u64) -> Option<Entry> {
        let entry = self.by_key.remove(&key)?;
        if let Some(held) = self.per_token.get_mut(&entry.token_id) {
            *held -= 1;
            if *held == 0 {
                self.per_token.remove(&entry.token_id);
            }
        }
        Some(entry)
    }
}

/// Every open listen stream of this process.
#[derive(Debug)]
pub struct ListenStreams {
    map: Mutex<Registry>,
    next_key: AtomicU64,
    max_per_token: usize,
}

impl ListenStreams {
    /// `max_per_token` is `mcp.max_listen_streams_per_token`.
    pub fn new(max_per_token: usize) -> ListenStreams {
        ListenStreams {
            map: Mutex::new(Registry::default()),
            next_key: AtomicU64::new(0),
            max_per_token,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the stream of listen request `id` for `user_id`, counted against `token_id`. Its
    /// acknowledgement is queued before the stream can be told of anything, so it comes first.
    pub fn open(
        self: &Arc<Self>,
        user_id: Uuid,
        token_id: Uuid,
        id: &Value,
        filter: Filter,
        ending: Ending,
    ) -> Result<ListenStream, ListenError> {
        let (sender, receiver) = mpsc::channel(LISTEN_QUEUE);
        // A fresh channel has room.
        let _ = sender.try_send(acknowledgement(id, filter));
        let notifications = Change::ALL
            .into_iter()
            .filter(|c| filter.accepts(*c))
            .map(|c| (c, tagged(id, c.method(), Map::new())))
            .collect();
        let entry = Entry {
            user_id,
            token_id,
            notifications,
            last: last_message(id, ending),
            sender,
        };
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        let held = map.per_token.entry(token_id).or_default();
        if *held >= self.max_per_token {
            return Err(ListenError::TooMany {
                max: self.max_per_token,
            });
        }
        *held += 1;
        map.by_key.insert(key, entry);
        drop(map);
        Ok(ListenStream {
            receiver,
            registration: Registration {
                streams: Arc::clone(self),
                key,
            },
        })
    }

    /// Tells every stream of the user whose filter accepts `change`. A stream that is full does
    /// not get it: it has notifications its client has not read yet, which say as much.
    pub fn notify_user(&self, user_id: Uuid, change: Change) {
        let map = self.lock();
        for entry in map.by_key.values().filter(|e| e.user_id == user_id) {
            if let Some((_, message)) = entry.notifications.iter().find(|(c, _)| *c == change) {
                let _ = entry.sender.try_send(message.clone());
            }
        }
    }

    /// Ends every stream whose (user, token) is `doomed`: each gets its last message if it has
    /// room for it, and ends once its client has read what was queued. Returns how many ended.
    pub fn close_where(&self, doomed: impl Fn(Uuid, Uuid) -> bool) -> usize {
        let mut map = self.lock();
        let keys: Vec<u64> = map
            .by_key
            .iter()
            .filter(|(_, e)| doomed(e.user_id, e.token_id))
            .map(|(key, _)| *key)
            .collect();
        for key in &keys {
            if let Some(entry) = map.remove(*key) {
                let _ = entry.sender.try_send(entry.last);
            }
        }
        keys.len()
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().by_key.is_empty()
    }
}

/// The receiving end of one stream, carried by its transport; dropping it ends the stream.
#[derive(Debug)]
pub struct ListenStream {
    receiver: mpsc::Receiver<Bytes>,
    registration: Registration,
}

impl ListenStream {
    /// The next message (serialized JSON), or `None` once the server has ended the stream and
    /// everything queued was read.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.receiver.recv().await
    }

    /// The next message if one is queued now.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.receiver.try_recv().ok()
    }

    /// The stream's key in its registry.
    pub fn key(&self) -> u64 {
        self.registration.key
    }
}

/// Removes its stream from the registry when the stream's transport lets go of it.
#[derive(Debug)]
struct Registration {
    streams: Arc<ListenStreams>,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Already gone if the server ended it.
        self.streams.lock().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: Option<Bytes>) -> Value {
        serde_json::from_slice(&bytes.expect("a message")).unwrap()
    }

    fn filter(notifications: Value) -> Filter {
        Filter::from_params(Some(&json!({"notifications": notifications}))).unwrap()
    }

    #[test]
    fn filters_are_checked_and_only_what_is_honored_is_acknowledged() {
        for bad in [
            json!({}),
            json!({"notifications": true}),
            json!({"notifications": {"resourcesListChanged": "yes"}}),
            json!({"notifications": {"toolsListChanged": 1}}),
            json!({"notifications": {"resourceSubscriptions": "skill://a/SKILL.md"}}),
            json!({"notifications": {"resourceSubscriptions": [1]}}),
        ] {
            let error = Filter::from_params(Some(&bad)).unwrap_err();
            assert_eq!(error.code, codes::INVALID_PARAMS, "{bad}");
        }
        assert!(Filter::from_params(None).is_err());
        let everything = filter(json!({
            "resourcesListChanged": true, "toolsListChanged": true, "promptsListChanged": true,
            "resourceSubscriptions": ["skill://pdf/SKILL.md"], "somethingNew": {"x": 1},
        }));
        assert_eq!(
            everything.acknowledged(),
            json!({"resourcesListChanged": true})
        );
        let prompts = filter(json!({"promptsListChanged": true, "resourcesListChanged": false}));
        assert!(!prompts.accepts(Change::ResourcesListChanged));
        assert_eq!(prompts.acknowledged(), json!({}));
    }

    #[tokio::test]
    async fn streams_hear_their_users_changes_through_their_filter() {
        let streams = Arc::new(ListenStreams::new(8));
        let (ann, bob, token) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let resources = filter(json!({"resourcesListChanged": true}));
        let mut a = streams
            .open(ann, token, &json!("a"), resources, Ending::Result)
            .unwrap();
        let mut prompts_only = streams
            .open(
                ann,
                token,
                &json!(2),
                filter(json!({"promptsListChanged": true})),
                Ending::Result,
            )
            .unwrap();
        let mut bobs = streams
            .open(bob, Uuid::new_v4(), &json!(3), resources, Ending::Result)
            .unwrap();
        streams.notify_user(ann, Change::ResourcesListChanged);

        let ack = read(a.try_recv());
        assert_eq!(ack["params"]["_meta"][META_SUBSCRIPTION_ID], "a");
        let note = read(a.try_recv());
        assert_eq!(
            note,
            json!({"jsonrpc": "2.0", "method": "notifications/resources/list_changed",
                "params": {"_meta": {META_SUBSCRIPTION_ID: "a"}}})
        );
        assert_eq!(
            read(prompts_only.try_recv())["params"]["notifications"],
            json!({})
        );
        assert!(prompts_only.try_recv().is_none(), "not asked for");
        read(bobs.try_recv());
        assert!(bobs.try_recv().is_none(), "another user's change");
    }

    #[tokio::test]
    async fn a_full_stream_drops_notifications_and_the_server_ends_streams_with_their_last_message()
    {
        let streams = Arc::new(ListenStreams::new(8));
        let (user, token) = (Uuid::new_v4(), Uuid::new_v4());
        let resources = filter(json!({"resourcesListChanged": true}));
        let mut http = streams
            .open(user, token, &json!(1), resources, Ending::Result)
            .unwrap();
        let mut stdio = streams
            .open(user, token, &json!(2), resources, Ending::Cancelled)
            .unwrap();
        // Far more than fit: none waits, the extra ones are dropped.
        for _ in 0..LISTEN_QUEUE * 4 {
            streams.notify_user(user, Change::ResourcesListChanged);
        }
        // Ended by the server while full: what was queued is read, then the stream is over; its
        // last message had no room.
        assert_eq!(streams.close_where(|_, t| t == token), 2);
        assert_eq!(streams.len(), 0);
        let mut queued = Vec::new();
        while let Some(message) = http.recv().await {
            queued.push(read(Some(message)));
        }
        assert_eq!(
            queued.len(),
            LISTEN_QUEUE,
            "the acknowledgement and what fit"
        );
        assert!(queued.iter().all(|m| m.get("method").is_some()));
        // A stream with room gets its last message: the listen request's result over HTTP,
        // `notifications/cancelled` naming it on stdio.
        let mut roomy = streams
            .open(user, token, &json!("s"), resources, Ending::Cancelled)
            .unwrap();
        let mut last = streams
            .open(user, token, &json!(9), resources, Ending::Result)
            .unwrap();
        streams.close_where(|u, _| u == user);
        read(roomy.recv().await);
        let cancelled = read(roomy.recv().await);
        assert_eq!(
            cancelled["params"],
            json!({"requestId": "s", "reason": "the server ended this subscription",
                "_meta": {META_SUBSCRIPTION_ID: "s"}})
        );
        assert_eq!(cancelled["method"], CANCELLED);
        assert!(roomy.recv().await.is_none());
        read(last.recv().await);
        assert_eq!(
            read(last.recv().await),
            json!({"jsonrpc": "2.0", "id": 9, "result": {"resultType": "complete",
                "_meta": {META_SUBSCRIPTION_ID: 9}}})
        );
        assert!(last.recv().await.is_none());
        while stdio.try_recv().is_some() {}
        assert!(stdio.recv().await.is_none());
    }

    #[test]
    fn streams_are_counted_per_token_until_they_end() {
        let streams = Arc::new(ListenStreams::new(2));
        let (user, token, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let any = Filter::default();
        let open = |token| streams.open(user, token, &json!(1), any, Ending::Result);
        let first = open(token).unwrap();
        let second = open(token).unwrap();
        let refused = open(token).unwrap_err();
        assert_eq!(refused, ListenError::TooMany { max: 2 });
        assert_eq!(
            refused.rpc_error().data,
            Some(json!({"limit": MAX_LISTEN_STREAMS, "max": 2}))
        );
        let _elsewhere = open(other).unwrap();
        // The client went away: its place is free.
        drop(first);
        let third = open(token).unwrap();
        // Ended by the server: free too, and a handle dropped later changes nothing.
        assert_eq!(streams.close_where(|_, t| t == token), 2);
        drop(second);
        drop(third);
        assert!(open(token).is_ok() && open(token).is_ok());
        assert_eq!(streams.len(), 1, "only the other token's and none of these");
    }
}
