//! Credentials: password hashing and the JWTs of REST sessions.
//!
//! These are plain types with no actor inside; [`crate::actors::auth`] drives them. API tokens are
//! in [`crate::domain::ApiTokenSecret`] and [`crate::actors::token_registry`].

pub mod jwt;
pub mod password;

pub use jwt::{Claims, JwtKeys, TokenKind, TokenRejected};
pub use password::{HashError, PasswordHasher};
