//! What one client may make the server hold: the messages of a batch, the bytes of one answer and
//! of a batch's whole answer. (The bytes queued on event streams are bounded per user by
//! [`crate::actors::session::QueueBudget`].)
//!
//! A batch of requests for one large file used to build every answer in memory before sending
//! any: a 16 KB body could make the server hold a gigabyte. Now every transport checks a batch
//! before running it ([`Limits::check_batch`]: none at all from protocol 2025-06-18 on, which
//! removed them, and at most `mcp.max_batch_messages` before), caps each answer
//! (`McpServer::bounded`) and builds a batch's answer through a [`BatchAnswer`], which stops
//! running the batch once its answer has reached `mcp.max_answer_bytes`. Every refusal says which
//! setting it met and its value, in the error's `data` (`{"limit": "<setting>", "max": N}`).
//!
//! ```
//! use agentskills_mcp::mcp::limits::{BatchAnswer, Limits};
//! use serde_json::{Value, json};
//!
//! let limits = Limits { max_batch_messages: 4, max_answer_bytes: 64, metadata_max_skills: 0 };
//! assert!(limits.check_batch("2025-03-26", 4, "per POST").is_ok());
//! assert!(limits.check_batch("2025-03-26", 5, "per POST").is_err(), "over the cap");
//! assert!(limits.check_batch("2025-06-18", 2, "per POST").is_err(), "no batches any more");
//!
//! let mut answer = BatchAnswer::new(limits.max_answer_bytes);
//! answer.push(Some(&json!(1)), br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec());
//! // The second answer would take the whole past 64 bytes: it is replaced by an error.
//! answer.push(Some(&json!(2)), br#"{"jsonrpc":"2.0","id":2,"result":{}}"#.to_vec());
//! assert!(answer.is_full(), "the rest of the batch is not run");
//! answer.skip(&json!(3));
//! let answers: Value = serde_json::from_slice(&answer.finish().unwrap()).unwrap();
//! assert_eq!(answers[0]["result"], json!({}));
//! assert_eq!(answers[1]["error"]["data"]["limit"], "mcp.max_answer_bytes");
//! assert_eq!(answers[2]["error"]["data"]["max"], 64);
//! ```

use serde_json::{Value, json};

use super::codes;
use super::dispatch::{RpcError, error_response};
use crate::config::McpSettings;

/// The first protocol version without JSON-RPC batches: 2025-06-18 removed them (and 2026-07-28,
/// which needs no session, has none either). Versions are dates, so they compare as strings.
pub const BATCHLESS_VERSION: &str = "2025-06-18";

/// The settings the refusals name.
pub const MAX_BATCH_MESSAGES: &str = "mcp.max_batch_messages";
pub const MAX_ANSWER_BYTES: &str = "mcp.max_answer_bytes";
pub const MAX_QUEUED_BYTES: &str = "mcp.max_queued_bytes";

/// Whether a session of protocol `version` may send batches.
pub fn batches_allowed(version: &str) -> bool {
    version < BATCHLESS_VERSION
}

/// A refusal because a server limit was reached: [`codes::LIMIT_REACHED`], with the setting and
/// its value in `data`.
pub fn limit_error(setting: &str, max: usize, message: impl Into<String>) -> RpcError {
    RpcError::new(codes::LIMIT_REACHED, message).with_data(limit_data(setting, max))
}

fn limit_data(setting: &str, max: usize) -> Value {
    json!({"limit": setting, "max": max})
}

/// The limits of [`crate::mcp::McpServer`], from `[mcp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages one batch may hold.
    pub max_batch_messages: usize,
    /// Bytes of one serialized answer, and of a batch's whole answer.
    pub max_answer_bytes: usize,
    /// Skills `load_skill_metadata` lists at most (`mcp.metadata_max_skills`); 0: all.
    pub metadata_max_skills: usize,
}

impl Limits {
    pub fn from_settings(mcp: &McpSettings) -> Limits {
        Limits {
            max_batch_messages: mcp.max_batch_messages,
            max_answer_bytes: mcp.max_answer_bytes,
            metadata_max_skills: mcp.metadata_max_skills,
        }
    }

    /// Whether a batch of `len` messages may be run in a session of `version`: -32600, before
    /// anything runs, when the version has no batches or the batch is longer than
    /// `mcp.max_batch_messages`. `per` says how the transport takes one message ("per POST").
    pub fn check_batch(&self, version: &str, len: usize, per: &str) -> Result<(), RpcError> {
        if !batches_allowed(version) {
            return Err(RpcError::new(
                codes::INVALID_REQUEST,
                format!(
                    "batches were removed in protocol {BATCHLESS_VERSION}; send one message {per}"
                ),
            ));
        }
        let max = self.max_batch_messages;
        if len > max {
            return Err(RpcError::new(
                codes::INVALID_REQUEST,
                format!(
                    "this batch holds {len} messages, more than the {max} a batch may hold ({MAX_BATCH_MESSAGES} = {max}); send fewer at once"
                ),
            )
            .with_data(limit_data(MAX_BATCH_MESSAGES, max)));
        }
        Ok(())
    }
}

/// The answer to a batch, built as its requests are answered: a JSON array of serialized
/// responses that never grows past `mcp.max_answer_bytes`, so a batch costs at most that (and the
/// answer being made) however many large answers it asks for.
///
/// An answer that would take the array past the cap is replaced by an error naming it (its request
/// ran: the error says so), and from then on the batch is full ([`BatchAnswer::is_full`]): its
/// remaining requests are not run, and each gets an error ([`BatchAnswer::skip`]). Errors are not
/// held to the cap: each is a few hundred bytes beside the id it repeats, which came in the
/// batch's body, and a batch holds at most `mcp.max_batch_messages` messages.
#[derive(Debug)]
pub struct BatchAnswer {
    /// `[` and the answers so far, separated by commas.
    json: Vec<u8>,
    max: usize,
    full: bool,
}

impl BatchAnswer {
    pub fn new(max_answer_bytes: usize) -> BatchAnswer {
        BatchAnswer {
            json: Vec::new(),
            max: max_answer_bytes,
            full: false,
        }
    }

    /// Whether the answer has reached the cap: the batch's remaining requests are not to be run.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Adds the answer (serialized) to the request with `id`.
    pub fn push(&mut self, id: Option<&Value>, answer: Vec<u8>) {
        // One byte for the separator and one for the closing bracket.
        let fits = !self.full && self.json.len() + answer.len() + 2 <= self.max;
        if fits {
            self.append(&answer);
            return;
        }
        let size = answer.len();
        drop(answer);
        self.full = true;
        let max = self.max;
        let error = limit_error(
            MAX_ANSWER_BYTES,
            max,
            format!(
                "this request ran, but its answer ({size} bytes) would take the batch's answer past {max} bytes ({MAX_ANSWER_BYTES} = {max}), so it was left out; send the request again on its own"
            ),
        );
        self.append_error(id, &error);
    }

    /// Adds `error`, the answer to a message that is not a valid request, whether the batch is
    /// full or not.
    pub fn error(&mut self, id: Option<&Value>, error: &RpcError) {
        self.append_error(id, error);
    }

    /// Adds the error of request `id`, left unrun because the batch's answer is full.
    pub fn skip(&mut self, id: &Value) {
        let max = self.max;
        let error = limit_error(
            MAX_ANSWER_BYTES,
            max,
            format!(
                "not run: the batch's answer reached {max} bytes ({MAX_ANSWER_BYTES} = {max}); send this request again"
            ),
        );
        self.append_error(Some(id), &error);
    }

    fn append_error(&mut self, id: Option<&Value>, error: &RpcError) {
        // A response of strings and numbers always serializes.
        let bytes = serde_json::to_vec(&error_response(id, error)).unwrap_or_default();
        self.append(&bytes);
    }

    fn append(&mut self, answer: &[u8]) {
        self.json
            .push(if self.json.is_empty() { b'[' } else { b',' });
        self.json.extend_from_slice(answer);
    }

    /// The batch's answer, a JSON array; `None` when nothing in the batch is answered
    /// (notifications and responses only).
    pub fn finish(mut self) -> Option<Vec<u8>> {
        if self.json.is_empty() {
            return None;
        }
        self.json.push(b']');
        Some(self.json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(id: u64, filler: usize) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": id, "result": {"text": "x".repeat(filler)}}),
        )
        .unwrap()
    }

    #[test]
    fn batches_are_refused_from_2025_06_18_and_capped_before() {
        let limits = Limits {
            max_batch_messages: 3,
            max_answer_bytes: 1 << 20,
            metadata_max_skills: 0,
        };
        for version in ["2024-11-05", "2025-03-26"] {
            assert!(limits.check_batch(version, 1, "per POST").is_ok());
            assert!(limits.check_batch(version, 3, "per POST").is_ok());
            let error = limits.check_batch(version, 4, "per POST").unwrap_err();
            assert_eq!(error.code, codes::INVALID_REQUEST);
            assert!(
                error.message.contains("mcp.max_batch_messages = 3"),
                "{}",
                error.message
            );
            assert_eq!(
                error.data,
                Some(json!({"limit": "mcp.max_batch_messages", "max": 3}))
            );
        }
        for version in ["2025-06-18", "2025-11-25", "2026-07-28"] {
            let error = limits.check_batch(version, 2, "per line").unwrap_err();
            assert_eq!(error.code, codes::INVALID_REQUEST);
            assert_eq!(
                error.message,
                "batches were removed in protocol 2025-06-18; send one message per line"
            );
        }
    }

    #[test]
    fn a_batch_answer_stops_at_the_cap_and_stays_valid_json() {
        let first = ok(1, 400);
        let cap = first.len() * 2 + 10;
        let mut answer = BatchAnswer::new(cap);
        answer.push(Some(&json!(1)), first.clone());
        assert!(!answer.is_full());
        answer.error(None, &RpcError::new(codes::INVALID_REQUEST, "x"));
        assert!(!answer.is_full(), "an error fits beside the first answer");
        // This one would pass the cap: replaced, and the batch is full.
        answer.push(Some(&json!("b")), ok(2, 400));
        assert!(answer.is_full());
        answer.skip(&json!(3));
        answer.skip(&json!(4));
        // A message that is not a request still gets its own error once the batch is full.
        answer.error(Some(&json!(5)), &RpcError::new(codes::INVALID_REQUEST, "y"));
        let bytes = answer.finish().unwrap();
        let answers: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(answers.len(), 6);
        assert_eq!(answers[5]["id"], 5);
        assert_eq!(answers[5]["error"]["message"], "y");
        assert_eq!(serde_json::to_vec(&answers[0]).unwrap(), first);
        assert_eq!(answers[1]["error"]["code"], -32600);
        for (answer, id) in answers[2..5].iter().zip([json!("b"), json!(3), json!(4)]) {
            assert_eq!(answer["id"], id);
            assert_eq!(answer["error"]["code"], codes::LIMIT_REACHED);
            assert_eq!(
                answer["error"]["data"],
                json!({"limit": "mcp.max_answer_bytes", "max": cap})
            );
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("mcp.max_answer_bytes = {cap}")),
                "{answer}"
            );
        }
        assert!(
            answers[2]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ran")
        );
        assert!(
            answers[3]["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("not run")
        );
        // Whatever was asked, the answers themselves stayed within the cap.
        let before_errors = first.len() + 2 + answers[1].to_string().len();
        assert!(before_errors <= cap);
    }

    #[test]
    fn an_answer_larger_than_the_cap_alone_fills_the_batch() {
        let mut answer = BatchAnswer::new(100);
        answer.push(Some(&json!(1)), ok(1, 200));
        assert!(answer.is_full());
        let answers: Vec<Value> = serde_json::from_slice(&answer.finish().unwrap()).unwrap();
        assert_eq!(answers[0]["error"]["code"], codes::LIMIT_REACHED);
    }

    #[test]
    fn a_batch_of_notifications_has_no_answer() {
        assert_eq!(BatchAnswer::new(100).finish(), None);
    }
}
