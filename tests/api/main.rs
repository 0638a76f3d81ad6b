//! The integration suite: every test starts the real server on port 0 with its own data dir and
//! database and talks HTTP to it. Each test runs on SQLite and, when `TEST_DATABASE_URL` is set,
//! on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod helpers;

mod accounts;
mod api_tokens;
mod cli;
mod console;
mod crashes;
mod credentials;
mod faults;
mod git_import;
mod git_server;
mod mcp;
mod mcp_limits;
mod mcp_listen;
mod mcp_stateless;
mod migration;
mod oauth;
mod openapi;
mod rate_limits;
mod replicas;
mod sandbox;
mod search;
mod server;
mod sessions;
mod skills;
mod sse;
mod stdio;
mod versions;
