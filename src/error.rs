//! The one error type at the HTTP edge.
//!
//! Every handler returns `Result<Response, AppError>`; [`AppError::into_response`] turns an error
//! into its status and a `{"detail": …, "code": …}` body (validation errors add `errors`). The `code`
//! is stable kebab-case for programs; `detail` is for people. A 5xx never shows its cause to the
//! client: the cause is logged where the response is made.

use std::time::Duration;

use serde::Serialize;

use crate::store::{BoxError, StoreError};

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's path in the request body (`email`, `items[2].name`), or `body`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 422: the request is well-formed JSON but its values break the rules.
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    /// 400: the body is not JSON.
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// 400 with a specific code, for requests that conflict with existing state.
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    /// 413 with a specific code: a size or count limit other than the request body's.
    #[error("{detail}")]
    TooLarge { code: &'static str, detail: String },
    /// 422 with a specific code: well-formed input that breaks a rule (a `SKILL.md`, a path).
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    /// 401: no credentials, or credentials that are not (or no longer) valid.
    #[error("{detail}")]
    Unauthorized {
        code: &'static str,
        detail: &'static str,
    },
    /// 403: valid credentials that may not do this.
    #[error("{detail}")]
    Forbidden {
        code: &'static str,
        detail: &'static str,
    },
    /// 412: an `If-Match` precondition does not hold (the skill changed since the client read
    /// it); nothing was changed.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 409 with `Retry-After`: the user's skills kept changing under this change (other
    /// replicas' changes won every attempt); nothing was changed.
    #[error(
        "your skills were changed by other requests at the same moment; nothing was changed by this one: retry"
    )]
    Contended,
    /// 409 with a specific code: the request would undo something (a sync over a skill changed
    /// by hand since); nothing was changed.
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// 404: no such resource, or one that belongs to someone else.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 404 for a path that matches no route.
    #[error("no route for this path")]
    NoRoute,
    /// 405, with the methods the path takes.
    #[error("this path does not take that method")]
    MethodNotAllowed(Vec<&'static str>),
    /// 408: the body did not arrive in time.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// 413, with the limit in bytes.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// 429 with `Retry-After` (whole seconds, at least 1): a rate limit was hit.
    #[error("too many requests ({what}); retry in {secs} s", what = .0, secs = .1.as_secs().max(1))]
    RateLimited(&'static str, Duration),
    /// 503 with `Retry-After`: a bounded resource (password hashing) is saturated.
    #[error("the server is busy; retry in {} s", .0.as_secs().max(1))]
    Busy(Duration),
    /// 503: the database cannot be reached.
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] BoxError),
    /// 503: an internal component did not answer in time.
    #[error("the service did not answer in time")]
    Timeout(&'static str),
    /// 507: the disk (or the data directory's quota) has no room left, so nothing was stored.
    /// Not the client's fault, and not a bug: it is the one storage failure a client can act on
    /// (retry later, upload less), so it gets its own status and code instead of a 500.
    #[error("the server's storage is full, so nothing was stored; try again later")]
    StorageFull(#[source] BoxError),
    /// 501: a route that exists but whose feature is not served by this build yet.
    #[error("{0}")]
    NotImplemented(&'static str),
    /// 500: a bug or an unexpected failure; the cause goes to the log only.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl AppError {
    pub fn internal(e: impl Into<BoxError>) -> AppError {
        AppError::Internal(e.into())
    }

    /// A failed file operation: 507 when the disk or a quota is full (ENOSPC, EDQUOT), 500
    /// otherwise.
    pub fn from_io(e: std::io::Error) -> AppError {
        if crate::skills::files::is_storage_full(&e) {
            AppError::StorageFull(Box::new(e))
        } else {
            AppError::Internal(Box::new(e))
        }
    }

    pub fn validation(field: &str, message: impl Into<String>) -> AppError {
        AppError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> u16 {
        match self {
            AppError::InvalidJson(_) | AppError::BadRequest { .. } => 400,
            AppError::Unauthorized { .. } => 401,
            AppError::Forbidden { .. } => 403,
            AppError::NotFound(_) | AppError::NoRoute => 404,
            AppError::MethodNotAllowed(_) => 405,
            AppError::BodyTimeout => 408,
            AppError::PreconditionFailed(_) => 412,
            AppError::Contended | AppError::Conflict { .. } => 409,
            AppError::PayloadTooLarge(_) | AppError::TooLarge { .. } => 413,
            AppError::UnsupportedMediaType => 415,
            AppError::RateLimited(..) => 429,
            AppError::Validation(_) | AppError::Unprocessable { .. } => 422,
            AppError::Internal(_) => 500,
            AppError::NotImplemented(_) => 501,
            AppError::StorageFull(_) => 507,
            AppError::Busy(_) | AppError::DatabaseUnavailable(_) | AppError::Timeout(_) => 503,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Validation(_) => "validation-error",
            AppError::InvalidJson(_) => "invalid-json",
            AppError::BadRequest { code, .. }
            | AppError::TooLarge { code, .. }
            | AppError::Unprocessable { code, .. }
            | AppError::Conflict { code, .. }
            | AppError::Unauthorized { code, .. }
            | AppError::Forbidden { code, .. } => code,
            AppError::NotFound(_) => "not-found",
            AppError::NoRoute => "no-route",
            AppError::MethodNotAllowed(_) => "method-not-allowed",
            AppError::BodyTimeout => "body-timeout",
            AppError::PreconditionFailed(_) => "precondition-failed",
            AppError::Contended => "changed-meanwhile",
            AppError::PayloadTooLarge(_) => "payload-too-large",
            AppError::UnsupportedMediaType => "unsupported-media-type",
            AppError::RateLimited(..) => "rate-limited",
            AppError::Busy(_) => "busy",
            AppError::DatabaseUnavailable(_) => "database-unavailable",
            AppError::Timeout(_) => "timeout",
            AppError::Internal(_) => "internal-error",
            AppError::NotImplemented(_) => "not-implemented",
            AppError::StorageFull(_) => "storage-full",
        }
    }

    /// The field errors of a 422, empty otherwise.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            AppError::Validation(errors) => errors,
            _ => &[],
        }
    }

    /// Seconds for a `Retry-After` header, where one applies.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::Busy(wait) => Some(wait.as_secs().max(1)),
            // Rounded up: a client that waits exactly this long gets through.
            AppError::RateLimited(_, wait) => {
                Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).map(|s| s.max(1))
            }
            AppError::DatabaseUnavailable(_) | AppError::Timeout(_) | AppError::Contended => {
                Some(1)
            }
            _ => None,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        match e {
            StoreError::Unavailable(source) => AppError::DatabaseUnavailable(source),
            StoreError::StorageFull(source) => AppError::StorageFull(source),
            StoreError::Stale => AppError::Contended,
            StoreError::Duplicate(field) => AppError::BadRequest {
                code: match field {
                    crate::store::UniqueField::Email => "email-taken",
                    crate::store::UniqueField::Username => "username-taken",
                    crate::store::UniqueField::SkillName => "skill-exists",
                },
                detail: match field {
                    crate::store::UniqueField::SkillName => {
                        "you already have a skill of this name".to_owned()
                    }
                    _ => format!("this {} is already registered", field.as_str()),
                },
            },
            other => AppError::Internal(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_that_lost_every_race_is_409_to_retry() {
        let e = AppError::from(StoreError::Stale);
        assert!(matches!(e, AppError::Contended));
        assert_eq!(e.status(), 409);
        assert_eq!(e.code(), "changed-meanwhile");
        assert_eq!(e.retry_after(), Some(1));
        assert!(e.to_string().contains("nothing was changed"), "{e}");
    }
}
