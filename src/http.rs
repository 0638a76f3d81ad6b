//! The HTTP edge: the only module that knows hyper.
//!
//! - [`server`]: the accept loop (HTTP/1.1 and HTTP/2 via hyper-util's auto builder), graceful
//!   shutdown; `activity`: each connection's timers for slow request heads and idle keep-alive.
//! - [`router`]: parses each request into an [`router::Endpoint`] and calls its handler; logs it.
//! - [`request`] / [`response`]: bounded JSON bodies, bearer tokens, JSON and error responses.
//! - `handlers/`: one file per group of operations.

mod activity;
mod cors;
mod handlers;
pub mod rate_limit;
mod request;
mod response;
pub mod router;
mod server;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

pub use server::serve;

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;
