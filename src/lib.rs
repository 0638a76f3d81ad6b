//! AgentSkills MCP: hosts Agent Skills for many users and serves each user's private skills to MCP
//! clients with per-user API tokens.
//!
//! The binary (`src/main.rs`) is a thin command line over this library; tests and benches drive the
//! same [`app::App`] the binary runs. See `ARCHITECTURE.md` for the map.

pub mod actors;
pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod domain;
pub mod error;
pub mod http;
pub mod imports;
pub mod mcp;
pub mod metrics;
pub mod oauth;
pub mod outbound;
pub mod sandbox;
pub mod skills;
pub mod storage;
pub mod store;
