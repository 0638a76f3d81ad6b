//! Validated values: a value of these types cannot hold input that breaks the rules.
//!
//! Each type has a `parse` that rejects (never rewrites, except the documented normalisation of an
//! email: NFKC and lower case) and says which rule was broken, in words meant for the user.

mod account;
mod api_token;
mod browser_session;
mod scopes;
mod skill;

pub use account::{Email, Password, Username, email_skeleton};
pub use api_token::{ApiTokenSecret, TOKEN_PREFIX, TokenName};
pub use browser_session::BrowserSessionSecret;
pub use scopes::Scopes;
pub use skill::{SkillName, SkillPath};
