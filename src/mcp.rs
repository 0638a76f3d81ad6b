//! MCP: the protocol, apart from any transport.
//!
//! - [`dispatch`]: JSON-RPC messages in, responses out: lifecycle, `ping`, tools, resources,
//!   logging, with the JSON-RPC error codes (-32700, -32600, -32601, -32602, -32002, and -32090
//!   when a limit is reached).
//! - [`tools`]: the four tools of the original server, with its names, arguments and text, and
//!   `search_skills`, ours.
//! - [`recent`]: which skills each user used last, for the bounded `load_skill_metadata`.
//! - [`resources`]: each file of each active skill as `skill://<skill_name>/<path>`.
//! - [`limits`]: what one client may make the server hold: batches, the bytes of an answer.
//! - [`listen`]: the streams `subscriptions/listen` opens (2026-07-28), and what they are told.
//! - [`sessions`]: the sessions `initialize` opens, bound to the API token that opened them.
//! - [`source`]: where skills come from: the accounts' workspaces, or one plain folder.
//! - [`stdio`]: MCP over standard input and output, one JSON-RPC message per line.
//!
//! Transports (Streamable HTTP in `http/handlers/mcp.rs`, stdio here) parse bytes into messages and
//! frame the answers; everything they share is here, so every transport behaves the same.

pub mod dispatch;
pub mod inflight;
pub mod limits;
pub mod listen;
pub mod recent;
pub mod resources;
pub mod sessions;
pub mod skills_extension;
pub mod source;
pub mod stdio;
pub mod tools;

pub use dispatch::{McpServer, Negotiated};
pub use sessions::{Session, Sessions};
pub use source::{FolderSource, SkillSource};

/// Protocol versions this server speaks through `initialize`, newest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The version offered to a client that asks for one this server does not speak.
pub const LATEST_VERSION: &str = SUPPORTED_VERSIONS[0];

/// JSON-RPC and MCP error codes.
pub mod codes {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    /// The request was cancelled by its client (the code JSON-RPC peers such as LSP use).
    pub const REQUEST_CANCELLED: i32 = -32800;
    /// MCP: the resource does not exist (before 2026-07-28; -32602 since).
    pub const RESOURCE_NOT_FOUND: i32 = -32002;
    /// MCP 2026-07-28: a routing header disagrees with the body.
    pub const HEADER_MISMATCH: i32 = -32020;
    /// MCP 2026-07-28: the request's protocol version is not served.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;
    /// This server: a limit was reached (an answer too large, a batch's answer full, the bytes
    /// queued on a user's event streams). `data` names the setting and its value:
    /// `{"limit": "mcp.max_answer_bytes", "max": 16777216}`. JSON-RPC leaves -32000 to -32099 to
    /// servers; this one is far from those MCP and its SDKs use (-32000, -32001, -32002, -32020
    /// to -32022, -32042).
    pub const LIMIT_REACHED: i32 = -32090;
}
