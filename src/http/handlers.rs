//! Request handlers, one file per group of endpoints, and the JSON shapes they answer with.

pub(crate) mod accounts;
pub(crate) mod console;
pub(crate) mod docs;
pub(crate) mod health;
pub(crate) mod imports;
pub(crate) mod listen;
pub(crate) mod mcp;
pub(crate) mod oauth;
pub(crate) mod skills;
pub(crate) mod sse;
pub(crate) mod tokens;
pub(crate) mod versions;

use crate::error::{AppError, FieldError};

/// Collects field errors so that a 422 reports every bad field at once, not just the first.
#[derive(Debug, Default)]
struct Checks(Vec<FieldError>);

impl Checks {
    fn check<T, M: Into<String>>(&mut self, field: &str, result: Result<T, M>) -> Option<T> {
        result
            .map_err(|message| self.0.push(FieldError::new(field, message)))
            .ok()
    }

    /// `Ok` with the values if no check failed, else the 422.
    fn finish<T>(self, values: Option<T>) -> Result<T, AppError> {
        match values {
            Some(values) if self.0.is_empty() => Ok(values),
            _ => Err(AppError::Validation(self.0)),
        }
    }
}
