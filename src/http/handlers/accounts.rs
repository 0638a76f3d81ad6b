//! `/api/v1/auth/*` and `/api/v1/users/me*`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Checks;
use crate::actors::auth::{
    AuthedUser, DELETE_CONFIRMATION, LoginName, LoginTarget, Registration, TokenPair,
};
use crate::app::AppState;
use crate::domain::{Email, Password, Username};
use crate::error::AppError;
use crate::http::Body;
use crate::http::request::{client_ip, json_body, optional_json_body, require_bearer};
use crate::http::response::{json, no_content};
use crate::store::{self, UserRecord};

#[derive(Serialize)]
struct UserView<'a> {
    id: Uuid,
    email: &'a str,
    username: &'a str,
    is_active: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl<'a> From<&'a UserRecord> for UserView<'a> {
    fn from(u: &'a UserRecord) -> Self {
        UserView {
            id: u.id,
            email: &u.email,
            username: &u.username,
            is_active: u.is_active,
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize)]
struct MeView<'a> {
    #[serde(flatten)]
    user: UserView<'a>,
    skill_count: i64,
    token_count: i64,
}

#[derive(Serialize)]
struct TokenPairView<'a> {
    access_token: &'a str,
    refresh_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
}

fn token_pair(pair: &TokenPair) -> Response<Body> {
    json(
        StatusCode::OK,
        &TokenPairView {
            access_token: &pair.access_token,
            refresh_token: &pair.refresh_token,
            token_type: "bearer",
            expires_in: pair.expires_in,
        },
    )
}

/// The user behind the request's access token.
pub(crate) async fn authenticated(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<AuthedUser, AppError> {
    let token = require_bearer(req.headers())?;
    state.auth.authenticate(token).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    email: String,
    username: String,
    password: String,
}

pub(crate) async fn register(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    state.rate_limits.register(client_ip(&req))?;
    let body: RegisterBody = json_body(req, &state.settings.server).await?;
    let user = create_account(state, &body.email, &body.username, body.password).await?;
    Ok(json(StatusCode::CREATED, &UserView::from(&user)))
}

/// Registration's checks and the account it makes, for the API and the console alike (each
/// applies `RateLimits::register` first).
pub(crate) async fn create_account(
    state: &AppState,
    email: &str,
    username: &str,
    password: String,
) -> Result<UserRecord, AppError> {
    let mut checks = Checks::default();
    let email = checks.check("email", Email::parse(email));
    let username = checks.check("username", Username::parse(username));
    let password = checks.check("password", Password::parse(password));
    let (email, username, password) = checks.finish(
        email
            .zip(username)
            .zip(password)
            .map(|((e, u), p)| (e, u, p)),
    )?;
    let user = state
        .auth
        .register(Registration {
            email,
            username,
            password,
        })
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(user)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: Option<String>,
    username: Option<String>,
    password: String,
}

pub(crate) async fn login(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    state.rate_limits.login_from(client_ip(&req))?;
    let body: LoginBody = json_body(req, &state.settings.server).await?;
    let mut checks = Checks::default();
    // `email` may hold a username too (clients with a single "login" field send it there).
    let name = match (body.email, body.username) {
        (Some(login), None) | (None, Some(login)) => checks.check("email", login_name(&login)),
        (None, None) => checks.check("email", Err("give `email` or `username`")),
        (Some(_), Some(_)) => checks.check("username", Err("give `email` or `username`, not both")),
    };
    let password = checks.check("password", Password::candidate(body.password));
    let (name, password) = checks.finish(name.zip(password))?;
    let target = login_target(state, name).await?;
    let pair = state.auth.login(target, password).await?;
    Ok(token_pair(&pair))
}

/// What a login's name field names: an email or a user name, within an email's length.
pub(crate) fn login_name(login: &str) -> Result<LoginName, &'static str> {
    if login.len() <= Email::MAX_LEN {
        Ok(LoginName::parse(login))
    } else {
        Err("must be at most 254 characters")
    }
}

/// The account a login names, once the per-account limit allows another try: the step of every
/// sign-in (API or console) between `RateLimits::login_from` and the password check.
pub(crate) async fn login_target(
    state: &AppState,
    name: LoginName,
) -> Result<LoginTarget, AppError> {
    // Before any hashing: guessing one account's password from many addresses, under every
    // spelling of its name, stops here. The account is looked up first, since the limit is keyed by
    // it; the lookup is one indexed query whether or not the account exists, and what follows is
    // the same either way (a refusal here, or a real or dummy hash), so no answer comes back sooner
    // for one than for the other.
    let target = state.auth.find_login(name).await?;
    state.rate_limits.login_to(&target)?;
    Ok(target)
}

pub(crate) async fn refresh(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let token = require_bearer(req.headers())?.to_owned();
    let pair = state.auth.refresh(token).await?;
    Ok(token_pair(&pair))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[serde(default)]
    all: bool,
}

pub(crate) async fn logout(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let user = authenticated(state, &req).await?;
    let body: LogoutBody = optional_json_body(req, &state.settings.server).await?;
    sign_out(state, user, body.all).await?;
    Ok(no_content())
}

/// Ends this login, or with `everywhere` every login of the user and every app they connected
/// through OAuth (its tokens stop and its MCP sessions end): "sign out everywhere" means it.
pub(crate) async fn sign_out(
    state: &AppState,
    user: AuthedUser,
    everywhere: bool,
) -> Result<(), AppError> {
    let user_id = user.user.id;
    state.auth.logout(user, everywhere).await?;
    if everywhere {
        state.oauth.end_user_grants(user_id).await?;
    }
    Ok(())
}

pub(crate) async fn get_me(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let counts = state.store.account_counts(me.user.id, store::now()).await?;
    Ok(json(
        StatusCode::OK,
        &MeView {
            user: UserView::from(&me.user),
            skill_count: counts.skills,
            token_count: counts.tokens,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateMeBody {
    email: Option<String>,
    username: Option<String>,
}

pub(crate) async fn update_me(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let body: UpdateMeBody = json_body(req, &state.settings.server).await?;
    let user = update_profile(state, &me, body.email.as_deref(), body.username.as_deref()).await?;
    Ok(json(StatusCode::OK, &UserView::from(&user)))
}

/// A change of email or user name (either may be left as it is), for the API and the console.
pub(crate) async fn update_profile(
    state: &AppState,
    me: &AuthedUser,
    email: Option<&str>,
    username: Option<&str>,
) -> Result<UserRecord, AppError> {
    let mut checks = Checks::default();
    let email = email.map(|e| checks.check("email", Email::parse(e)));
    let username = username.map(|u| checks.check("username", Username::parse(u)));
    let (email, username) = checks.finish(Some((email.flatten(), username.flatten())))?;
    state
        .store
        .update_profile(
            me.user.id,
            email.as_ref().map(Email::as_str),
            username.as_ref().map(Username::as_str),
            store::now(),
        )
        .await?
        .ok_or(AppError::NotFound("user"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteMeBody {
    password: String,
    confirm: String,
}

pub(crate) async fn delete_me(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let body: DeleteMeBody = json_body(req, &state.settings.server).await?;
    delete_account(state, me, body.password, &body.confirm).await?;
    Ok(no_content())
}

/// Deleting the account (password and the typed confirmation checked), for the API and the
/// console; the user's MCP sessions end with it.
pub(crate) async fn delete_account(
    state: &AppState,
    me: AuthedUser,
    password: String,
    confirm: &str,
) -> Result<(), AppError> {
    let mut checks = Checks::default();
    let password = checks.check("password", Password::candidate(password));
    let confirmed = checks.check(
        "confirm",
        if confirm == DELETE_CONFIRMATION {
            Ok(())
        } else {
            Err("must be exactly \"DELETE MY ACCOUNT\"")
        },
    );
    let (password, ()) = checks.finish(password.zip(confirmed))?;
    let user_id = me.user.id;
    state.auth.delete_account(me, password).await?;
    state.sessions.close_where(|s| s.user_id == user_id);
    state.listen.close_where(|user, _| user == user_id);
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

pub(crate) async fn change_password(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let me = authenticated(state, &req).await?;
    let body: ChangePasswordBody = json_body(req, &state.settings.server).await?;
    set_password(state, me, body.current_password, body.new_password).await?;
    Ok(no_content())
}

/// A password change, for the API and the console: it bumps the token version, which ends
/// every JWT and every browser session of the user.
pub(crate) async fn set_password(
    state: &AppState,
    me: AuthedUser,
    current: String,
    new: String,
) -> Result<(), AppError> {
    let mut checks = Checks::default();
    let current = checks.check("current_password", Password::candidate(current));
    let new = checks.check("new_password", Password::parse(new));
    let (current, new) = checks.finish(current.zip(new))?;
    let user_id = me.user.id;
    state.auth.change_password(me, current, new).await?;
    // A new password means someone may have known the old one: the apps connected with it go
    // too (API tokens stay: they were made on purpose, and are revoked one by one).
    state.oauth.end_user_grants(user_id).await?;
    Ok(())
}
