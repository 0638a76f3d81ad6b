//! Requests in progress, so that `notifications/cancelled` can stop them.
//!
//! Each transport runs a request through [`InFlight::run`] under its JSON-RPC id; a
//! `notifications/cancelled` naming that id ([`InFlight::cancel`]) drops the request's future (a
//! sandboxed command is killed when its future is dropped) and `run` returns `None`: the
//! transport then sends no response, as the protocol asks, where it can (stdio, legacy SSE, an SSE
//! reply); a plain JSON reply has to answer something and says the request was cancelled.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use agentskills_mcp::mcp::inflight::InFlight;
//! use serde_json::json;
//!
//! let inflight = InFlight::default();
//! let answer = inflight.run(&json!(7), async { 42 }).await;
//! assert_eq!(answer, Some(42));
//! assert!(!inflight.cancel(Some(&json!({"requestId": 7}))), "nothing left to cancel");
//! # });
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::oneshot;

/// The requests of one session (or one stdio connection) that have not been answered yet.
#[derive(Debug, Default)]
pub struct InFlight {
    /// By the JSON text of the request id (`1` and `"1"` are different ids), with the generation
    /// that registered it: a repeated id replaces the entry, and only its own run removes it.
    map: Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>,
    generation: std::sync::atomic::AtomicU64,
}

/// Removes a run's entry when the run ends, however it ends.
struct Registered<'a> {
    inflight: &'a InFlight,
    key: String,
    generation: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut map = self.inflight.lock();
        if map
            .get(&self.key)
            .is_some_and(|(g, _)| *g == self.generation)
        {
            map.remove(&self.key);
        }
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, oneshot::Sender<()>)>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` as request `id`: its output, or `None` if the request was cancelled first.
    pub async fn run<F: Future>(&self, id: &Value, work: F) -> Option<F::Output> {
        // A request answered on its first poll (a `load_skill` served from the index's cache,
        // most of the traffic) cannot be cancelled while it runs: it is not registered, which
        // spares the id's text, the channel and both locks.
        let mut work = std::pin::pin!(work);
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(output) = first {
            return Some(output);
        }
        let (tx, rx) = oneshot::channel();
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = id.to_string();
        self.lock().insert(key.clone(), (generation, tx));
        let _registered = Registered {
            inflight: self,
            key,
            generation,
        };
        // A sender dropped without sending (the id was reused by a newer request) is no
        // cancellation of this one.
        let cancelled = async {
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            output = work => Some(output),
            () = cancelled => None,
        }
    }

    /// Handles `notifications/cancelled` (its `params`): cancels the request it names, if that
    /// request is still running. Unknown or finished ids are ignored, as the protocol asks.
    pub fn cancel(&self, params: Option<&Value>) -> bool {
        let Some(id) = params.and_then(|p| p.get("requestId")) else {
            return false;
        };
        match self.lock().remove(&id.to_string()) {
            Some((_, tx)) => tx.send(()).is_ok(),
            None => false,
        }
    }

    /// How many requests are running.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_cancelled_request_stops_and_answers_nothing() {
        let inflight = Arc::new(InFlight::default());
        let running = {
            let inflight = Arc::clone(&inflight);
            tokio::spawn(async move {
                inflight
                    .run(&json!("slow"), std::future::pending::<()>())
                    .await
            })
        };
        while inflight.is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(
            !inflight.cancel(Some(&json!({"requestId": 1}))),
            "another id"
        );
        assert!(inflight.cancel(Some(&json!({"requestId": "slow", "reason": "bored"}))));
        assert_eq!(running.await.ok(), Some(None));
        assert!(inflight.is_empty());
    }

    #[tokio::test]
    async fn ids_keep_their_json_type_and_finished_runs_leave_nothing() {
        let inflight = InFlight::default();
        assert_eq!(
            inflight.run(&json!(1), async { "done" }).await,
            Some("done")
        );
        assert!(inflight.is_empty());
        assert!(!inflight.cancel(Some(&json!({"requestId": 1}))));
        assert!(!inflight.cancel(None));
        assert!(!inflight.cancel(Some(&json!({"reason": "no id"}))));
    }

    #[tokio::test]
    async fn a_reused_id_cancels_only_the_newest_run() {
        let inflight = Arc::new(InFlight::default());
        let spawn = |inflight: Arc<InFlight>| {
            tokio::spawn(async move {
                inflight
                    .run(
                        &json!(5),
                        tokio::time::sleep(std::time::Duration::from_millis(200)),
                    )
                    .await
            })
        };
        let first = spawn(Arc::clone(&inflight));
        while inflight.is_empty() {
            tokio::task::yield_now().await;
        }
        let second = spawn(Arc::clone(&inflight));
        while inflight
            .generation
            .load(std::sync::atomic::Ordering::Relaxed)
            < 2
        {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert!(inflight.cancel(Some(&json!({"requestId": 5}))));
        assert_eq!(second.await.ok(), Some(None), "the newest is cancelled");
        assert_eq!(
            first.await.ok(),
            Some(Some(())),
            "the older one runs to its end"
        );
    }
}
