//! The actors (ractor) and their typed handles.
//!
//! HTTP code holds a handle ([`auth::AuthService`], [`token_registry::TokenRegistry`]) and calls
//! async methods on it; it never sees a ractor type. Every call into an actor has a timeout that
//! becomes 503, never a hang, and domain errors travel back through the reply port rather than
//! out of `handle()` (which would stop the actor).

pub mod auth;
pub mod session;
pub mod token_registry;
pub mod workspace;
pub mod workspaces;

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};

use crate::error::AppError;

/// Sends a request to `actor` and waits for its reply at most `timeout`.
pub(crate) async fn ask<M, T>(
    actor: &ActorRef<M>,
    timeout: Duration,
    what: &'static str,
    build: impl FnOnce(RpcReplyPort<Result<T, AppError>>) -> M,
) -> Result<T, AppError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(result)) => result,
        Ok(CallResult::Timeout) => Err(AppError::Timeout(what)),
        Ok(CallResult::SenderError) | Err(_) => Err(AppError::Timeout(what)),
    }
}

/// Replies, ignoring a caller that has gone away (it timed out or its connection closed).
pub(crate) fn reply<T: Send + 'static>(port: RpcReplyPort<T>, value: T) {
    if port.send(value).is_err() {
        tracing::debug!("a caller left before its reply");
    }
}
