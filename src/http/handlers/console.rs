//! The web console's HTTP glue: routes, cookies, forms, the `Origin` and CSRF checks, and the
//! security headers of every console response. The pages, the CSRF tokens and the Markdown live in
//! `crate::console`; every rule (validation, limits, messages) is the REST API's own function,
//! called from here as the API's handlers call it.
//!
//! How a change is authorized: a browser session's cookie (HttpOnly, SameSite=Lax, `Secure` and
//! `__Host-` over HTTPS) names the user, and a state-changing request must also carry the
//! session's CSRF token (a form field, or `X-CSRF-Token` from the script) and come from this
//! site's own origin (`Origin`, or `Referer` when a browser sends no `Origin`). The cookie alone
//! never authorizes anything but reading the user's own pages. Sign-in and sign-up are protected
//! the same way, with a token bound to a visitor cookie.
//!
//! The console's script uploads through `POST /skills/upload` here, which checks the session,
//! the header token and the origin, then runs the API's upload code (`skills::upload_as`): the
//! REST API itself stays bearer-only, so it needs no CSRF defence at all.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use askama::Template;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{accounts, health, imports, skills, tokens};
use crate::actors::auth::{AuthedUser, DELETE_CONFIRMATION};
use crate::actors::workspace::{IfMatch, SourcedAction, UploadPayload, UploadTarget};
use crate::app::AppState;
use crate::console::csrf::VisitorId;
use crate::console::pages::{
    AccountPage, AppRow, CheckResult, Chrome, CreatedToken, ErrorPage, FileBody, FileView,
    FormState, QuotaRow, SignInPage, SignUpPage, SkillPage, SkillRow, SkillsPage, SourceView,
    StatusPage, TokenRow, TokensPage, WarningView,
};
use crate::console::{self as ui, assets, markdown, pages, snippets};
use crate::domain::{BrowserSessionSecret, Password, Scopes, SkillPath};
use crate::error::AppError;
use crate::http::Body;
use crate::http::request::client_ip;
use crate::http::response::{self, full, with_body};
use crate::http::router::ClientIp;
use crate::skills::Warning;

mod authorize;

/// Every page, form and asset of the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsolePage {
    Home,
    SignInForm,
    SignIn,
    SignUpForm,
    SignUp,
    SignOut,
    Skills,
    CreateSkill,
    Upload,
    /// Skills from a Git repository.
    Import,
    Skill(Uuid),
    SkillSync(Uuid),
    SkillSource(Uuid),
    SkillDescription(Uuid),
    SkillMd(Uuid),
    SkillActive(Uuid),
    SkillDelete(Uuid),
    /// The skill and the file's path as it appears in the URL (still percent-encoded).
    SkillFile(Uuid, String),
    SkillExport(Uuid),
    Tokens,
    CreateToken,
    RevokeToken(Uuid),
    /// `GET /oauth/authorize`: an OAuth client's request, shown as the consent page.
    Authorize,
    /// `POST /oauth/authorize`: the user's decision.
    Consent,
    /// Disconnects an app connected through OAuth.
    RevokeApp(Uuid),
    Account,
    Profile,
    Password,
    DeleteAccount,
    Status,
    Asset(String),
}

impl ConsolePage {
    /// A low-cardinality name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ConsolePage::Home => "console.home",
            ConsolePage::SignInForm | ConsolePage::SignIn => "console.signin",
            ConsolePage::SignUpForm | ConsolePage::SignUp => "console.signup",
            ConsolePage::SignOut => "console.signout",
            ConsolePage::Skills | ConsolePage::CreateSkill => "console.skills",
            ConsolePage::Upload => "console.upload",
            ConsolePage::Import => "console.import",
            ConsolePage::Skill(_)
            | ConsolePage::SkillDescription(_)
            | ConsolePage::SkillMd(_)
            | ConsolePage::SkillActive(_)
            | ConsolePage::SkillDelete(_)
            | ConsolePage::SkillSync(_)
            | ConsolePage::SkillSource(_) => "console.skill",
            ConsolePage::SkillFile(..) => "console.skill.file",
            ConsolePage::SkillExport(_) => "console.skill.export",
            ConsolePage::Tokens
            | ConsolePage::CreateToken
            | ConsolePage::RevokeToken(_)
            | ConsolePage::RevokeApp(_) => "console.tokens",
            ConsolePage::Authorize | ConsolePage::Consent => "console.oauth.authorize",
            ConsolePage::Account
            | ConsolePage::Profile
            | ConsolePage::Password
            | ConsolePage::DeleteAccount => "console.account",
            ConsolePage::Status => "console.status",
            ConsolePage::Asset(_) => "console.asset",
        }
    }
}

/// The console's routes for a path's segments (the router's last resort, after every API and
/// MCP path), each with its method; `None` for a path that is not the console's.
pub(crate) fn route(segments: &[&str]) -> Option<Vec<(&'static str, ConsolePage)>> {
    use ConsolePage as P;
    let routes = match segments {
        [""] => vec![("GET", P::Home)],
        ["signin"] => vec![("GET", P::SignInForm), ("POST", P::SignIn)],
        ["signup"] => vec![("GET", P::SignUpForm), ("POST", P::SignUp)],
        ["signout"] => vec![("POST", P::SignOut)],
        ["skills"] => vec![("GET", P::Skills), ("POST", P::CreateSkill)],
        ["skills", "upload"] => vec![("POST", P::Upload)],
        ["skills", "import"] => vec![("POST", P::Import)],
        ["skills", id, rest @ ..] => {
            let id = Uuid::parse_str(id).ok()?;
            match rest {
                [] => vec![("GET", P::Skill(id))],
                ["description"] => vec![("POST", P::SkillDescription(id))],
                ["skill-md"] => vec![("POST", P::SkillMd(id))],
                ["active"] => vec![("POST", P::SkillActive(id))],
                ["delete"] => vec![("POST", P::SkillDelete(id))],
                ["sync"] => vec![("POST", P::SkillSync(id))],
                ["source"] => vec![("POST", P::SkillSource(id))],
                ["export"] => vec![("GET", P::SkillExport(id))],
                ["files", path @ ..] if !path.is_empty() => {
                    vec![("GET", P::SkillFile(id, path.join("/")))]
                }
                _ => return None,
            }
        }
        ["tokens"] => vec![("GET", P::Tokens), ("POST", P::CreateToken)],
        ["tokens", id, "revoke"] => vec![("POST", P::RevokeToken(Uuid::parse_str(id).ok()?))],
        ["oauth", "authorize"] => vec![("GET", P::Authorize), ("POST", P::Consent)],
        ["apps", id, "revoke"] => vec![("POST", P::RevokeApp(Uuid::parse_str(id).ok()?))],
        ["account"] => vec![("GET", P::Account)],
        ["account", "profile"] => vec![("POST", P::Profile)],
        ["account", "password"] => vec![("POST", P::Password)],
        ["account", "delete"] => vec![("POST", P::DeleteAccount)],
        ["status"] => vec![("GET", P::Status)],
        ["assets", name] => vec![("GET", P::Asset((*name).to_owned()))],
        _ => return None,
    };
    Some(routes)
}

/// Answers a console request; every answer, errors included, carries the console's headers.
pub(crate) async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    page: ConsolePage,
) -> Response<Body> {
    let mut response = match Visit::of(state, &req) {
        Err(e) => error_page(&e),
        Ok(visit) => {
            let json_errors = page == ConsolePage::Upload;
            match serve(state, req, page, visit).await {
                Ok(response) => response,
                Err(e) if json_errors => response::error(&e),
                Err(e) => error_page(&e),
            }
        }
    };
    decorate(response.headers_mut());
    response
}

/// The security headers of every console response.
fn decorate(headers: &mut HeaderMap) {
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(ui::CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static(ui::REFERRER_POLICY),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// What a request tells about the browser: the origin it should come from, whether it came over
/// HTTPS, and its cookies.
struct Visit {
    /// `scheme://host[:port]` of this site as the browser reaches it: `server.public_url`, or
    /// the scheme and checked `Host` of the request.
    origin: String,
    secure: bool,
    session: Option<BrowserSessionSecret>,
    visitor: Option<VisitorId>,
    client: std::net::IpAddr,
}

/// `scheme://host[:port]` of this server as the request reached it: `server.public_url`, or the
/// checked `Host` with `https` when a trusted proxy says so. The console, the OAuth metadata and
/// the MCP endpoints' challenges build their URLs from it.
pub(crate) fn site_origin(state: &AppState, req: &Request<Incoming>) -> Result<String, AppError> {
    match state.settings.server.public_url() {
        Some(url) => Ok(url.to_owned()),
        None => {
            let secure = forwarded_https(state, peer_of(req), req.headers());
            let host = checked_host(state, req)?;
            Ok(format!(
                "{}://{host}",
                if secure { "https" } else { "http" }
            ))
        }
    }
}

fn peer_of(req: &Request<Incoming>) -> std::net::IpAddr {
    req.extensions()
        .get::<ClientIp>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.1)
}

impl Visit {
    fn of(state: &AppState, req: &Request<Incoming>) -> Result<Visit, AppError> {
        let secure = forwarded_https(state, peer_of(req), req.headers());
        let origin = site_origin(state, req)?;
        let mut session = None;
        let mut visitor = None;
        for (name, value) in cookies(req.headers()) {
            if name == ui::session_cookie_name(secure) {
                session = BrowserSessionSecret::parse(value);
            } else if name == ui::visitor_cookie_name(secure) {
                visitor = VisitorId::parse(value);
            }
        }
        Ok(Visit {
            origin,
            secure,
            session,
            visitor,
            client: client_ip(req),
        })
    }

    /// `Set-Cookie` for a cookie of this site: HttpOnly, SameSite=Lax, `Secure` over HTTPS.
    fn cookie(&self, name: &str, value: &str, max_age: Option<i64>) -> String {
        let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if self.secure {
            cookie.push_str("; Secure");
        }
        if let Some(age) = max_age {
            let _ = write!(cookie, "; Max-Age={}", age.max(0));
        }
        cookie
    }
}

/// Whether the request came over HTTPS: this server speaks plain HTTP, so only a trusted proxy's
/// `X-Forwarded-Proto` (or `Forwarded: proto=`) can say so; the last value is the one the
/// nearest proxy wrote.
fn forwarded_https(state: &AppState, peer: std::net::IpAddr, headers: &HeaderMap) -> bool {
    let peer = match peer {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, std::net::IpAddr::V4),
        v4 => v4,
    };
    if !state.rate_limits.is_trusted_proxy(peer) {
        return false;
    }
    let last = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if let Some(proto) = last(header::HeaderName::from_static("x-forwarded-proto")) {
        return proto == "https";
    }
    last(header::FORWARDED).is_some_and(|element| {
        element.split(';').any(|pair| {
            pair.trim()
                .strip_prefix("proto=")
                .is_some_and(|p| p.trim_matches('"') == "https")
        })
    })
}

/// The request's `Host` (or HTTP/2 `:authority`), when it is a plain `host[:port]` and this
/// server answers to it (the rule `/mcp` applies against DNS rebinding); it is written into pages
/// and client configuration, so nothing else gets through.
fn checked_host(state: &AppState, req: &Request<Incoming>) -> Result<String, AppError> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let plain = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && host.parse::<http::uri::Authority>().is_ok();
    let answered =
        plain && (!super::mcp::checks_host(state) || super::mcp::host_listed(state, &host));
    if !answered {
        return Err(AppError::Forbidden {
            code: "host-not-allowed",
            detail: "this server does not answer to that Host (see mcp.allowed_hosts and server.public_url)",
        });
    }
    Ok(host.to_ascii_lowercase())
}

/// The `name=value` pairs of every `Cookie` header.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some((name.trim(), value.trim()))
        })
}

fn forbidden_origin() -> AppError {
    AppError::Forbidden {
        code: "cross-origin-request",
        detail: "this request did not come from this site's own pages; reload the page and try again",
    }
}

fn forbidden_csrf() -> AppError {
    AppError::Forbidden {
        code: "csrf-token-invalid",
        detail: "this form has expired or was not made by this site; reload the page and try again",
    }
}

/// A state-changing request must come from this site: its `Origin`, or when a browser sends
/// none, its `Referer`'s origin, must be ours.
fn check_origin(visit: &Visit, headers: &HeaderMap) -> Result<(), AppError> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let referer = headers.get(header::REFERER)?.to_str().ok()?;
            let (scheme, rest) = referer.split_once("://")?;
            let authority = rest.split(['/', '?', '#']).next()?;
            Some(format!("{scheme}://{authority}"))
        });
    match origin {
        Some(o) if o.eq_ignore_ascii_case(&visit.origin) => Ok(()),
        _ => Err(forbidden_origin()),
    }
}

/// The signed-in user, when the session cookie names a live session.
async fn signed_in(state: &AppState, visit: &Visit) -> Option<AuthedUser> {
    let secret = visit.session.as_ref()?;
    state.auth.authenticate_browser(secret).await.ok()
}

/// A signed-in request: the user, and the CSRF token of the session.
struct Session {
    user: AuthedUser,
    csrf: String,
}

/// The session, or a redirect to the sign-in page (clearing a cookie that no longer works).
async fn require_session(state: &AppState, visit: &Visit) -> Result<Session, Response<Body>> {
    match (signed_in(state, visit).await, &visit.session) {
        (Some(user), Some(secret)) => Ok(Session {
            user,
            csrf: state.csrf.session_token(secret),
        }),
        _ => {
            let mut response = redirect("/signin");
            if visit.session.is_some() {
                set_cookie(
                    &mut response,
                    &visit.cookie(ui::session_cookie_name(visit.secure), "", Some(0)),
                );
            }
            Err(response)
        }
    }
}

/// A form's fields, read from an `application/x-www-form-urlencoded` body of at most `max` bytes.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }
}

async fn read_form(state: &AppState, req: Request<Incoming>, max: usize) -> Result<Form, AppError> {
    if !crate::http::request::is_form(req.headers()) {
        return Err(AppError::UnsupportedMediaType);
    }
    let timeout = Duration::from_secs(state.settings.server.body_read_timeout_secs);
    let bytes = tokio::time::timeout(timeout, Limited::new(req.into_body(), max).collect())
        .await
        .map_err(|_| AppError::BodyTimeout)?
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                AppError::PayloadTooLarge(max)
            } else {
                AppError::Unprocessable {
                    code: "form-invalid",
                    detail: format!("the form could not be read: {e}"),
                }
            }
        })?
        .to_bytes();
    Ok(Form(
        form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    ))
}

/// Reads a signed-in user's form after the origin check, and checks its CSRF token.
async fn session_form(
    state: &AppState,
    visit: &Visit,
    req: Request<Incoming>,
    max: usize,
) -> Result<Form, AppError> {
    check_origin(visit, req.headers())?;
    let form = read_form(state, req, max).await?;
    let given = form.get("csrf").unwrap_or_default();
    match &visit.session {
        Some(secret) if state.csrf.check_session(secret, given) => Ok(form),
        _ => Err(forbidden_csrf()),
    }
}

/// Reads a visitor's sign-in or sign-up form after the origin check, and checks its CSRF token.
async fn visitor_form(
    state: &AppState,
    visit: &Visit,
    req: Request<Incoming>,
) -> Result<Form, AppError> {
    check_origin(visit, req.headers())?;
    let form = read_form(state, req, state.settings.server.max_json_body_bytes).await?;
    let given = form.get("csrf").unwrap_or_default();
    match &visit.visitor {
        Some(visitor) if state.csrf.check_visitor(visitor, given) => Ok(form),
        _ => Err(forbidden_csrf()),
    }
}

fn html(status: StatusCode, page: &impl Template) -> Response<Body> {
    match page.render() {
        Ok(text) => with_body(status, "text/html; charset=utf-8", full(text)),
        Err(e) => response::error(&AppError::internal(e)),
    }
}

/// `303 See Other` to a path of this site (always one the console builds, never one it was given).
fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(response::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn set_cookie(response: &mut Response<Body>, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// An error as a page, with the error's status and `Retry-After`.
fn error_page(err: &AppError) -> Response<Body> {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = if status.is_server_error() {
        // Logged with its cause, which the page never shows.
        let _ = response::error(err);
        "Something went wrong on the server; try again in a moment.".to_owned()
    } else {
        err.to_string()
    };
    let heading = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        s if s.is_server_error() => "Server error",
        _ => "That did not work",
    };
    let page = ErrorPage {
        chrome: Chrome::new(heading, String::new(), None, ""),
        status: status.as_u16(),
        heading: heading.to_owned(),
        message,
    };
    let mut response = html(status, &page);
    if let Some(secs) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Puts an error's messages next to the form's fields: field errors by field, and the codes in
/// `fields` (such as `email-taken`) on the field they concern; anything else above the form.
/// Returns the status the page is answered with.
fn form_error(form: &mut FormState, err: &AppError, fields: &[(&str, &str)]) -> StatusCode {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !err.field_errors().is_empty() {
        for e in err.field_errors() {
            form.field_error(&e.field, e.message.clone());
        }
    } else if let Some((_, field)) = fields.iter().find(|(code, _)| *code == err.code()) {
        form.field_error(field, err.to_string());
    } else if status.is_server_error() {
        let _ = response::error(err);
        form.error = Some("Something went wrong on the server; try again in a moment.".to_owned());
    } else {
        form.error = Some(err.to_string());
    }
    status
}

/// The condition an editor's save carries: the skill is still the version the page showed
/// (active or not: switching that is no edit of the text). A form without it (none of ours)
/// saves unconditionally.
fn editing(form: &Form) -> Option<IfMatch> {
    let version: i64 = form.get("version")?.trim().parse().ok()?;
    Some(IfMatch::Tags(vec![
        format!("\"v{version}\""),
        format!("\"v{version}-inactive\""),
    ]))
}

/// [`form_error`] for the editors, where a skill changed since the page was shown (another tab,
/// another device, a client of the API) is said plainly: the text typed is kept, not saved.
fn edit_error(form: &mut FormState, err: &AppError) -> StatusCode {
    if let AppError::PreconditionFailed(_) = err {
        form.error = Some(
            "This skill changed since this page was opened, so nothing was saved. Your text is \
             kept here and the page now shows the newest version: save again to replace it with \
             your text, or reload to start from it."
                .to_owned(),
        );
        return StatusCode::PRECONDITION_FAILED;
    }
    form_error(form, err, &[])
}

/// A fixed message for `?notice=<key>` (the key only picks one; nothing of the URL is shown).
fn notice(query: Option<&str>) -> Option<String> {
    let key = query_value(query, "notice")?;
    let text = match key.as_str() {
        "signed-out" => "You are signed out.",
        "signed-out-everywhere" => "You are signed out of every browser.",
        "password-changed" => "Your password is changed: sign in with the new one.",
        "account-deleted" => "Your account and everything in it are deleted.",
        "skill-created" => "The skill is created.",
        "skill-deleted" => "The skill is deleted.",
        "description-saved" => "The description is saved.",
        "skill-md-saved" => "SKILL.md is saved.",
        "activated" => "The skill is active: MCP clients see it.",
        "deactivated" => "The skill is inactive: MCP clients no longer see it.",
        "token-revoked" => "The token is revoked: clients using it are refused from now on.",
        "app-revoked" => "The app is disconnected: its tokens are refused from now on.",
        "profile-saved" => "Your email and user name are saved.",
        "signed-up" => "Welcome! Create or upload a skill to begin.",
        "imported" => {
            let count = query_value(query, "count").and_then(|n| n.parse::<usize>().ok());
            return Some(match count {
                Some(1) => "1 skill is imported from the repository.".to_owned(),
                Some(n) => format!("{n} skills are imported from the repository."),
                None => "The repository is imported.".to_owned(),
            });
        }
        "synced" => "The skill is synced: a new version holds the repository's files.",
        "sync-unchanged" => "The skill is synced: nothing changed in the repository.",
        "sync-interval-saved" => "The periodic sync is saved.",
        _ => return None,
    };
    Some(text.to_owned())
}

/// Where sign-in may go next: only an OAuth authorization request of this site (the only page
/// that sends people to sign in and back), so the parameter cannot redirect anywhere else.
fn next_of(next: Option<String>) -> String {
    next.filter(|n| {
        n.starts_with("/oauth/authorize?")
            && n.len() <= 8192
            && !n.contains(['\\', '\r', '\n', '#'])
    })
    .unwrap_or_default()
}

/// The page after signing in: the checked `next`, or the skills.
fn after_sign_in(next: &str) -> &str {
    if next.is_empty() { "/skills" } else { next }
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn date(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.format(&format).unwrap_or_default()
}

fn warning_views(warnings: &[Warning]) -> Vec<WarningView> {
    warnings
        .iter()
        .map(|w| WarningView {
            code: w.code.to_owned(),
            field: w.field.clone(),
            message: w.message.clone(),
        })
        .collect()
}

/// A query value, form-encoded (a space is `+`): for a path, see [`ui::file_url_path`].
fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The skill's page showing one of its files.
fn file_page_url(id: Uuid, path: &str) -> String {
    format!("/skills/{id}?file={}", encode(path))
}

async fn serve(
    state: &AppState,
    req: Request<Incoming>,
    page: ConsolePage,
    visit: Visit,
) -> Result<Response<Body>, AppError> {
    use ConsolePage as P;
    if let P::Asset(name) = &page {
        return Ok(asset(name, req.headers()));
    }
    match page {
        P::Home => Ok(match signed_in(state, &visit).await {
            Some(_) => redirect("/skills"),
            None => redirect("/signin"),
        }),
        P::SignInForm => {
            let query = req.uri().query();
            let form = FormState::default().keep("next", next_of(query_value(query, "next")));
            sign_in_form(state, &visit, query, form, StatusCode::OK).await
        }
        P::SignIn => sign_in(state, &visit, req).await,
        P::SignUpForm => {
            let next = next_of(query_value(req.uri().query(), "next"));
            let form = FormState::default().keep("next", next);
            sign_up_form(state, &visit, form, StatusCode::OK).await
        }
        P::SignUp => sign_up(state, &visit, req).await,
        P::SignOut => sign_out(state, &visit, req).await,
        P::Upload => upload(state, &visit, req).await,
        P::Authorize => authorize::request(state, &visit, req).await,
        P::Consent => authorize::decision(state, &visit, req).await,
        page => {
            let session = match require_session(state, &visit).await {
                Ok(session) => session,
                Err(to_sign_in) => return Ok(to_sign_in),
            };
            signed_in_page(state, &visit, session, req, page).await
        }
    }
}

async fn signed_in_page(
    state: &AppState,
    visit: &Visit,
    session: Session,
    req: Request<Incoming>,
    page: ConsolePage,
) -> Result<Response<Body>, AppError> {
    use ConsolePage as P;
    let small = state.settings.server.max_json_body_bytes;
    let query = req.uri().query().map(str::to_owned);
    let notice = notice(query.as_deref());
    match page {
        P::Skills => {
            skills_page(
                state,
                &session,
                query.as_deref(),
                SkillsForms::default(),
                StatusCode::OK,
                notice,
            )
            .await
        }
        P::Import => {
            let form = session_form(state, visit, req, small).await?;
            let (url, git_ref, path, hours) = (
                form.text("url"),
                form.text("ref"),
                form.text("path"),
                form.text("sync_interval_hours"),
            );
            let mut kept = FormState::default()
                .keep("url", url.clone())
                .keep("ref", git_ref.clone())
                .keep("path", path.clone())
                .keep("sync_interval_hours", hours.clone());
            let interval = match hours.trim() {
                "" => None,
                n => match n.parse::<i64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        kept.field_error(
                            "sync_interval_hours",
                            "a whole number of hours, or empty for none",
                        );
                        let forms = SkillsForms {
                            import: kept,
                            ..SkillsForms::default()
                        };
                        return skills_page(
                            state,
                            &session,
                            None,
                            forms,
                            StatusCode::UNPROCESSABLE_ENTITY,
                            None,
                        )
                        .await;
                    }
                },
            };
            let body = imports::ImportBody {
                url,
                git_ref: Some(git_ref).filter(|r| !r.trim().is_empty()),
                path: Some(path).filter(|p| !p.trim().is_empty()),
                sync_interval_hours: interval,
            };
            match imports::import_as(state, session.user.user.id, body).await {
                Ok(report) => Ok(redirect(&format!(
                    "/skills?notice=imported&count={}",
                    report.skills.len()
                ))),
                Err(e) => {
                    let status = form_error(&mut kept, &e, &[]);
                    let forms = SkillsForms {
                        import: kept,
                        ..SkillsForms::default()
                    };
                    skills_page(state, &session, None, forms, status, None).await
                }
            }
        }
        P::SkillSync(id) => {
            let form = session_form(state, visit, req, small).await?;
            let force = form.get("force") == Some("true");
            match imports::sync_one_as(state, session.user.user.id, id, force).await {
                Ok(report) => {
                    let done = match report.outcome {
                        Ok(outcome) if outcome.action == SourcedAction::Unchanged => {
                            "sync-unchanged"
                        }
                        Ok(_) => "synced",
                        Err(e) => return sync_failed(state, &session, id, &e).await,
                    };
                    Ok(redirect(&format!("/skills/{id}?notice={done}")))
                }
                Err(e) if e.status() == 404 => Err(e),
                Err(e) => sync_failed(state, &session, id, &e).await,
            }
        }
        P::SkillSource(id) => {
            let form = session_form(state, visit, req, small).await?;
            let hours = form.text("sync_interval_hours");
            let interval = match hours.trim() {
                "" => Ok(None),
                n => n.parse::<i64>().map(Some).map_err(|_| {
                    AppError::validation(
                        "sync_interval_hours",
                        "a whole number of hours, or empty for none",
                    )
                }),
            };
            let set = match interval {
                Ok(hours) => state
                    .imports
                    .set_interval(session.user.user.id, id, hours)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match set {
                Ok(()) => Ok(redirect(&format!(
                    "/skills/{id}?notice=sync-interval-saved"
                ))),
                Err(e) if e.status() == 404 => Err(e),
                Err(e) => {
                    let mut forms = SkillForms {
                        source: FormState::default().keep("sync_interval_hours", hours),
                        ..SkillForms::default()
                    };
                    let status = form_error(&mut forms.source, &e, &[]);
                    skill_page(state, &session, id, None, forms, status, None).await
                }
            }
        }
        P::CreateSkill => {
            let form = session_form(state, visit, req, small).await?;
            let (name, description) = (form.text("name"), form.text("description"));
            match skills::create_skill(state, session.user.user.id, &name, &description).await {
                Ok(skill) => Ok(redirect(&format!(
                    "/skills/{}?notice=skill-created",
                    skill.record.id
                ))),
                Err(e) => {
                    let mut kept = FormState::default()
                        .keep("name", name)
                        .keep("description", description);
                    let status = form_error(&mut kept, &e, &[("skill-exists", "name")]);
                    let forms = SkillsForms {
                        create: kept,
                        ..SkillsForms::default()
                    };
                    skills_page(state, &session, None, forms, status, None).await
                }
            }
        }
        P::Skill(id) => {
            let file = query_value(query.as_deref(), "file");
            skill_page(
                state,
                &session,
                id,
                file,
                SkillForms::default(),
                StatusCode::OK,
                notice,
            )
            .await
        }
        P::SkillDescription(id) => {
            let form = session_form(state, visit, req, small).await?;
            let description = form.text("description");
            match skills::update_skill(
                state,
                session.user.user.id,
                id,
                Some(&description),
                None,
                editing(&form),
            )
            .await
            {
                Ok(_) => Ok(redirect(&format!("/skills/{id}?notice=description-saved"))),
                Err(e) => {
                    let mut forms = SkillForms {
                        description: FormState::default().keep("description", description),
                        ..SkillForms::default()
                    };
                    let status = edit_error(&mut forms.description, &e);
                    if status == StatusCode::NOT_FOUND {
                        return Err(e);
                    }
                    skill_page(state, &session, id, None, forms, status, None).await
                }
            }
        }
        P::SkillMd(id) => {
            let max = usize::try_from(state.settings.skills.max_file_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(4096);
            let form = session_form(state, visit, req, max).await?;
            save_skill_md(state, &session, id, &form).await
        }
        P::SkillActive(id) => {
            let form = session_form(state, visit, req, small).await?;
            let active = form.get("is_active") == Some("true");
            skills::update_skill(state, session.user.user.id, id, None, Some(active), None).await?;
            let done = if active { "activated" } else { "deactivated" };
            Ok(redirect(&format!("/skills/{id}?notice={done}")))
        }
        P::SkillDelete(id) => {
            let form = session_form(state, visit, req, small).await?;
            let skill = skills::owned(state, session.user.user.id, id).await?;
            if form.get("confirm").map(str::trim) != Some(skill.record.name.as_str()) {
                let mut forms = SkillForms::default();
                forms.delete.field_error(
                    "confirm",
                    format!("type the skill's name, {}, to delete it", skill.record.name),
                );
                return skill_page(
                    state,
                    &session,
                    id,
                    None,
                    forms,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    None,
                )
                .await;
            }
            skills::delete_skill(state, session.user.user.id, id).await?;
            Ok(redirect("/skills?notice=skill-deleted"))
        }
        P::SkillFile(id, raw_path) => {
            let (path, bytes) =
                skills::read_file(state, session.user.user.id, id, &raw_path).await?;
            Ok(skill_file(
                bytes,
                &path,
                query_value(query.as_deref(), "download").is_some(),
            ))
        }
        P::SkillExport(id) => skills::export_skill(state, session.user.user.id, id).await,
        P::Tokens => {
            tokens_page(
                state,
                visit,
                &session,
                FormState::default(),
                None,
                StatusCode::OK,
                notice,
            )
            .await
        }
        P::CreateToken => {
            let form = session_form(state, visit, req, small).await?;
            let name = form.text("name");
            let days = form.text("expires_in_days");
            // An unticked box sends nothing.
            let allow_run = form.get("allow_run").is_some();
            let scopes: Vec<String> = if allow_run { Scopes::ALL } else { Scopes::READ }
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect();
            let mut kept = FormState::default()
                .keep("name", name.clone())
                .keep("allow_run", if allow_run { "on" } else { "off" }.to_owned());
            let days = match days.trim() {
                "" => None,
                d => match d.parse::<u32>() {
                    Ok(d) => Some(d),
                    Err(_) => {
                        kept.field_error("expires_in_days", "must be a whole number of days");
                        return tokens_page(
                            state,
                            visit,
                            &session,
                            kept,
                            None,
                            StatusCode::UNPROCESSABLE_ENTITY,
                            None,
                        )
                        .await;
                    }
                },
            };
            match tokens::create_token(state, session.user.user.id, &name, days, Some(&scopes))
                .await
            {
                Ok(created) => {
                    let shown = CreatedToken {
                        name: created.name.clone(),
                        token: created.secret.expose().to_owned(),
                        expires: created.expires_at.map_or_else(|| "never".to_owned(), date),
                    };
                    tokens_page(
                        state,
                        visit,
                        &session,
                        FormState::default(),
                        Some(shown),
                        StatusCode::CREATED,
                        None,
                    )
                    .await
                }
                Err(e) => {
                    let status = form_error(&mut kept, &e, &[("too-many-tokens", "name")]);
                    tokens_page(state, visit, &session, kept, None, status, None).await
                }
            }
        }
        P::RevokeToken(id) => {
            session_form(state, visit, req, small).await?;
            tokens::revoke_token(state, session.user.user.id, id).await?;
            Ok(redirect("/tokens?notice=token-revoked"))
        }
        P::RevokeApp(id) => {
            session_form(state, visit, req, small).await?;
            if !state
                .oauth
                .end_grant(Some(session.user.user.id), id)
                .await?
            {
                return Err(AppError::NotFound("grant"));
            }
            tracing::info!(user_id = %session.user.user.id, grant_id = %id, "OAuth grant revoked");
            Ok(redirect("/tokens?notice=app-revoked#apps-heading"))
        }
        P::Account => account_page(&session, AccountForms::default(), StatusCode::OK, notice),
        P::Profile => {
            let form = session_form(state, visit, req, small).await?;
            let (email, username) = (form.text("email"), form.text("username"));
            // A field left as it is is not sent to the store: only a change is checked.
            let changed = |new: &str, old: &str| (new.trim() != old).then_some(new.to_owned());
            let email_change = changed(&email, &session.user.user.email);
            let username_change = changed(&username, &session.user.user.username);
            match accounts::update_profile(
                state,
                &session.user,
                email_change.as_deref(),
                username_change.as_deref(),
            )
            .await
            {
                Ok(_) => Ok(redirect("/account?notice=profile-saved")),
                Err(e) => {
                    let mut forms = AccountForms {
                        profile: FormState::default()
                            .keep("email", email)
                            .keep("username", username),
                        ..AccountForms::default()
                    };
                    let status = form_error(
                        &mut forms.profile,
                        &e,
                        &[("email-taken", "email"), ("username-taken", "username")],
                    );
                    account_page(&session, forms, status, None)
                }
            }
        }
        P::Password => {
            let form = session_form(state, visit, req, small).await?;
            let result = accounts::set_password(
                state,
                session.user.clone(),
                form.text("current_password"),
                form.text("new_password"),
            )
            .await;
            match result {
                // The change ended every session of the user, this browser's too.
                Ok(()) => Ok(signed_out(visit, "/signin?notice=password-changed")),
                Err(e) => {
                    let mut forms = AccountForms::default();
                    let status = form_error(
                        &mut forms.password,
                        &e,
                        &[("wrong-password", "current_password")],
                    );
                    account_page(&session, forms, status, None)
                }
            }
        }
        P::DeleteAccount => {
            let form = session_form(state, visit, req, small).await?;
            let confirm = form.text("confirm");
            match accounts::delete_account(
                state,
                session.user.clone(),
                form.text("password"),
                &confirm,
            )
            .await
            {
                Ok(()) => Ok(signed_out(visit, "/signin?notice=account-deleted")),
                Err(e) => {
                    let mut forms = AccountForms {
                        delete: FormState::default().keep("confirm", confirm),
                        ..AccountForms::default()
                    };
                    let status =
                        form_error(&mut forms.delete, &e, &[("wrong-password", "password")]);
                    account_page(&session, forms, status, None)
                }
            }
        }
        P::Status => status_page(state, &session).await,
        // Served before the session is looked at.
        P::Home
        | P::SignInForm
        | P::SignIn
        | P::SignUpForm
        | P::SignUp
        | P::SignOut
        | P::Upload
        | P::Asset(_)
        | P::Authorize
        | P::Consent => Err(AppError::NoRoute),
    }
}

/// An embedded asset, cached for a year under its hashed name.
fn asset(name: &str, headers: &HeaderMap) -> Response<Body> {
    let Some(asset) = assets::find(name) else {
        return response::error(&AppError::NotFound("asset"));
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == asset.etag));
    let mut response = if fresh {
        let mut r = Response::new(response::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        with_body(
            StatusCode::OK,
            asset.content_type,
            full(Bytes::from_static(asset.bytes)),
        )
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// A skill's file for the browser: text as `text/plain` in a sandbox of its own, anything else
/// (or on request) as a download. Never as HTML of this origin, whatever it holds.
fn skill_file(bytes: Vec<u8>, path: &str, download: bool) -> Response<Body> {
    if download || std::str::from_utf8(&bytes).is_err() {
        return skills::download(bytes, path);
    }
    let mut response = with_body(StatusCode::OK, "text/plain; charset=utf-8", full(bytes));
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ui::FILE_CONTENT_SECURITY_POLICY),
    );
    response
}

async fn sign_in_form(
    state: &AppState,
    visit: &Visit,
    query: Option<&str>,
    form: FormState,
    status: StatusCode,
) -> Result<Response<Body>, AppError> {
    if status == StatusCode::OK && signed_in(state, visit).await.is_some() {
        return Ok(redirect(after_sign_in(form.value("next"))));
    }
    let (visitor, fresh) = visitor_of(visit)?;
    let chrome = Chrome::new("Sign in", state.csrf.visitor_token(&visitor), None, "")
        .with_notice(notice(query));
    let signup = match form.value("next") {
        "" => "/signup".to_owned(),
        next => format!("/signup?next={}", encode(next)),
    };
    let mut response = html(
        status,
        &SignInPage {
            chrome,
            form,
            signup,
        },
    );
    if fresh {
        set_cookie(
            &mut response,
            &visit.cookie(
                ui::visitor_cookie_name(visit.secure),
                visitor.expose(),
                None,
            ),
        );
    }
    Ok(response)
}

/// The visitor cookie's id, or a new one (and `true`: it must be set).
fn visitor_of(visit: &Visit) -> Result<(VisitorId, bool), AppError> {
    match &visit.visitor {
        Some(v) => Ok((v.clone(), false)),
        None => Ok((VisitorId::generate().map_err(AppError::internal)?, true)),
    }
}

/// Signing in: the same limits, lookup and password check as `POST /api/v1/auth/login`, then a
/// browser session instead of a pair of JWTs.
async fn sign_in(
    state: &AppState,
    visit: &Visit,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let form = visitor_form(state, visit, req).await?;
    let login = form.text("login");
    let next = next_of(form.get("next").map(str::to_owned));
    let kept = FormState::default()
        .keep("login", login.clone())
        .keep("next", next.clone());
    match browser_login(
        state,
        visit,
        &login,
        form.text("password"),
        after_sign_in(&next),
    )
    .await
    {
        Ok(response) => Ok(response),
        Err(e) => {
            let mut kept = kept;
            let status = form_error(&mut kept, &e, &[]);
            let mut response = sign_in_form(state, visit, None, kept, status).await?;
            if let Some(secs) = e.retry_after() {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Ok(response)
        }
    }
}

/// The login steps of `POST /api/v1/auth/login` (address limit, name check, account lookup and
/// per-account limit, password check), ending in a session cookie and a redirect to `to`.
async fn browser_login(
    state: &AppState,
    visit: &Visit,
    login: &str,
    password: String,
    to: &str,
) -> Result<Response<Body>, AppError> {
    state.rate_limits.login_from(visit.client)?;
    let mut errors = Vec::new();
    let name = accounts::login_name(login)
        .map_err(|m| errors.push(crate::error::FieldError::new("login", m)))
        .ok();
    let password = Password::candidate(password)
        .map_err(|m| errors.push(crate::error::FieldError::new("password", m)))
        .ok();
    let (Some(name), Some(password)) = (name, password) else {
        return Err(AppError::Validation(errors));
    };
    let target = accounts::login_target(state, name).await?;
    let login = state.auth.login_browser(target, password).await?;
    let max_age = (login.expires_at - OffsetDateTime::now_utc()).whole_seconds();
    let mut response = redirect(to);
    set_cookie(
        &mut response,
        &visit.cookie(
            ui::session_cookie_name(visit.secure),
            login.secret.expose(),
            Some(max_age),
        ),
    );
    Ok(response)
}

async fn sign_up_form(
    state: &AppState,
    visit: &Visit,
    form: FormState,
    status: StatusCode,
) -> Result<Response<Body>, AppError> {
    if status == StatusCode::OK && signed_in(state, visit).await.is_some() {
        return Ok(redirect(after_sign_in(form.value("next"))));
    }
    let (visitor, fresh) = visitor_of(visit)?;
    let chrome = Chrome::new("Sign up", state.csrf.visitor_token(&visitor), None, "");
    let mut response = html(status, &SignUpPage { chrome, form });
    if fresh {
        set_cookie(
            &mut response,
            &visit.cookie(
                ui::visitor_cookie_name(visit.secure),
                visitor.expose(),
                None,
            ),
        );
    }
    Ok(response)
}

/// Signing up: the registration of `POST /api/v1/auth/register` (its limit and rules), then a
/// sign-in as above.
async fn sign_up(
    state: &AppState,
    visit: &Visit,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let form = visitor_form(state, visit, req).await?;
    let (email, username, password) = (
        form.text("email"),
        form.text("username"),
        form.text("password"),
    );
    let next = next_of(form.get("next").map(str::to_owned));
    let created = match state.rate_limits.register(visit.client) {
        Ok(()) => accounts::create_account(state, &email, &username, password.clone()).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(_) => match browser_login(state, visit, &username, password, after_sign_in(&next)).await
        {
            Ok(mut response) => {
                if next.is_empty()
                    && let Ok(value) = HeaderValue::from_str("/skills?notice=signed-up")
                {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                Ok(response)
            }
            // The account exists; signing in can wait for the limit to pass.
            Err(_) => Ok(redirect("/signin")),
        },
        Err(e) => {
            let mut kept = FormState::default()
                .keep("email", email)
                .keep("username", username)
                .keep("next", next);
            let status = form_error(
                &mut kept,
                &e,
                &[("email-taken", "email"), ("username-taken", "username")],
            );
            sign_up_form(state, visit, kept, status).await
        }
    }
}

/// Signing out of this browser (its login session revoked), or, with `everywhere`, out of every
/// browser and login of the user (`POST /api/v1/auth/logout {"all": true}`: the token version).
async fn sign_out(
    state: &AppState,
    visit: &Visit,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let Some(user) = signed_in(state, visit).await else {
        return Ok(signed_out(visit, "/signin"));
    };
    let session = Session {
        csrf: String::from("set"),
        user,
    };
    let form = session_form(state, visit, req, state.settings.server.max_json_body_bytes).await?;
    if form
        .get("everywhere")
        .is_some_and(|v| !v.is_empty() && v != "0")
    {
        accounts::sign_out(state, session.user, true).await?;
        return Ok(signed_out(visit, "/signin?notice=signed-out-everywhere"));
    }
    if let Some(secret) = &visit.session {
        state.auth.end_browser_session(session.user, secret).await?;
    }
    Ok(signed_out(visit, "/signin?notice=signed-out"))
}

/// A redirect that clears the session cookie.
fn signed_out(visit: &Visit, to: &str) -> Response<Body> {
    let mut response = redirect(to);
    set_cookie(
        &mut response,
        &visit.cookie(ui::session_cookie_name(visit.secure), "", Some(0)),
    );
    response
}

/// The console's upload: the session, the `X-CSRF-Token` header and the origin, then the API's
/// own upload code and answer.
async fn upload(
    state: &AppState,
    visit: &Visit,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    check_origin(visit, req.headers())?;
    let (Some(user), Some(secret)) = (signed_in(state, visit).await, &visit.session) else {
        return Err(AppError::Unauthorized {
            code: "not-authenticated",
            detail: "your browser session has ended; sign in again",
        });
    };
    let given = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !state.csrf.check_session(secret, given) {
        return Err(forbidden_csrf());
    }
    skills::upload_as(state, user.user.id, req).await
}

/// The forms of the skills page, with what was typed and the messages about it.
#[derive(Default)]
struct SkillsForms {
    create: FormState,
    import: FormState,
}

/// The skill's page again, its sync form saying why the sync did not go through.
async fn sync_failed(
    state: &AppState,
    session: &Session,
    id: Uuid,
    e: &AppError,
) -> Result<Response<Body>, AppError> {
    let mut forms = SkillForms::default();
    let status = form_error(&mut forms.sync, e, &[]);
    skill_page(state, session, id, None, forms, status, None).await
}

async fn skills_page(
    state: &AppState,
    session: &Session,
    query: Option<&str>,
    forms: SkillsForms,
    status: StatusCode,
    notice: Option<String>,
) -> Result<Response<Body>, AppError> {
    let user = &session.user.user;
    let search: String = query_value(query, "search")
        .unwrap_or_default()
        .trim()
        .chars()
        .take(200)
        .collect();
    let page = query_value(query, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let index = state.workspaces.index(user.id).await?;
    if !search.trim().is_empty() {
        index.prepare_search().await;
    }
    let skip = (page - 1).saturating_mul(ui::PAGE_SIZE);
    let (items, total) = index.page(Some(search.as_str()), skip, ui::PAGE_SIZE);
    let pages = total.div_ceil(ui::PAGE_SIZE).max(1);
    let link = |n: usize| {
        let mut url = format!("/skills?page={n}");
        if !search.is_empty() {
            let _ = write!(url, "&search={}", encode(&search));
        }
        url
    };
    let limits = &state.settings.skills;
    let body = SkillsPage {
        chrome: Chrome::new(
            "Skills",
            session.csrf.clone(),
            Some(user.username.clone()),
            "skills",
        )
        .with_notice(notice),
        items: items
            .iter()
            .map(|s| SkillRow {
                id: s.record.id.to_string(),
                name: s.record.name.clone(),
                description: s.record.description.clone(),
                is_active: s.record.is_active,
                file_count: s.files.len(),
                size: ui::human_bytes(s.bytes),
                updated: date(s.record.updated_at),
            })
            .collect(),
        total,
        owned: index.len(),
        page,
        pages,
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
        search,
        create: forms.create,
        import: forms.import,
        limits: format!(
            "A zip, a folder or files of up to {} in all; each file up to {}, each skill up to {} and {} files.",
            ui::human_bytes(limits.max_upload_bytes),
            ui::human_bytes(limits.max_file_bytes),
            ui::human_bytes(limits.max_skill_bytes),
            limits.max_skill_files,
        ),
    };
    Ok(html(status, &body))
}

/// The forms of a skill's page, with what was typed and the messages about it.
#[derive(Default)]
struct SkillForms {
    description: FormState,
    skill_md: FormState,
    /// The `SKILL.md` text typed into the editor, when the page answers its form.
    skill_md_text: Option<String>,
    check: Option<CheckResult>,
    delete: FormState,
    /// The sync button's message.
    sync: FormState,
    /// The periodic sync's interval.
    source: FormState,
}

/// The largest file shown on the page itself; larger ones are downloaded.
const MAX_SHOWN_BYTES: usize = 512 * 1024;
const MAX_SHOWN_LINES: usize = 10_000;

async fn skill_page(
    state: &AppState,
    session: &Session,
    id: Uuid,
    file: Option<String>,
    forms: SkillForms,
    status: StatusCode,
    notice: Option<String>,
) -> Result<Response<Body>, AppError> {
    let user = &session.user.user;
    let skill = skills::owned(state, user.id, id).await?;
    let paths: Vec<(String, u64)> = skill
        .files
        .iter()
        .map(|f| (f.path.clone(), f.size))
        .collect();
    let chosen = file
        .filter(|f| paths.iter().any(|(p, _)| p == f))
        .or_else(|| {
            paths
                .iter()
                .any(|(p, _)| p == "SKILL.md")
                .then(|| "SKILL.md".to_owned())
        });
    let tree = pages::tree(&paths, |p| file_page_url(id, p), chosen.as_deref());
    let file = match chosen {
        Some(path) => Some(file_view(state, user.id, id, &path, &paths).await?),
        None => None,
    };
    let source = match state.imports.source(user.id, id).await {
        Ok(source) => Some(SourceView {
            url: source.url.clone(),
            git_ref: source
                .git_ref
                .clone()
                .unwrap_or_else(|| "default branch".to_owned()),
            path: if source.path.is_empty() {
                "/".to_owned()
            } else {
                source.path.clone()
            },
            commit: source.commit_id.chars().take(12).collect(),
            synced: date(source.synced_at),
            checked: date(source.checked_at),
            changed_by_hand: skill.record.version != source.synced_version,
            interval: source
                .sync_interval_hours
                .map(|h| h.to_string())
                .unwrap_or_default(),
            next: source.next_sync_at.map(date),
            last_error: source.last_error.clone(),
        }),
        Err(AppError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let skill_md = forms
        .skill_md_text
        .clone()
        .or_else(|| skill.skill_md.as_deref().map(str::to_owned))
        .unwrap_or_default();
    let body = SkillPage {
        chrome: Chrome::new(
            skill.record.name.clone(),
            session.csrf.clone(),
            Some(user.username.clone()),
            "skills",
        )
        .with_notice(notice),
        id: id.to_string(),
        name: skill.record.name.clone(),
        description: skill.record.description.clone(),
        is_active: skill.record.is_active,
        version: skill.record.version,
        file_count: skill.files.len(),
        size: ui::human_bytes(skill.bytes),
        updated: date(skill.record.updated_at),
        warnings: warning_views(&skill.warnings),
        tree,
        file,
        description_form: forms.description,
        skill_md,
        skill_md_form: forms.skill_md,
        check: forms.check,
        delete_form: forms.delete,
        source,
        sync_form: forms.sync,
        source_form: forms.source,
    };
    Ok(html(status, &body))
}

async fn file_view(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
    path: &str,
    paths: &[(String, u64)],
) -> Result<FileView, AppError> {
    let encoded = ui::file_url_path(path);
    let size = paths.iter().find(|(p, _)| p == path).map_or(0, |(_, s)| *s);
    let raw = format!("/skills/{id}/files/{encoded}");
    let view = |body| FileView {
        path: path.to_owned(),
        size: ui::human_bytes(size),
        download: format!("{raw}?download=1"),
        raw: raw.clone(),
        body,
    };
    if size > MAX_SHOWN_BYTES as u64 {
        return Ok(view(FileBody::Unshown(format!(
            "This file is {}: too large to show here. Download it instead.",
            ui::human_bytes(size)
        ))));
    }
    let (_, bytes) = skills::read_file(state, user_id, id, &encoded).await?;
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(view(FileBody::Unshown(
            "This file is not text (not UTF-8). Download it to open it.".to_owned(),
        )));
    };
    if path == "SKILL.md" {
        // Markdown is parsed and sanitized on the blocking pool, like every parse of a user's file.
        // A relative link opens that file of the skill here; one to a file it lacks goes nowhere.
        let files: HashSet<String> = paths.iter().map(|(p, _)| p.clone()).collect();
        let rendered = tokio::task::spawn_blocking(move || {
            markdown::render_skill_md(&text, |p| files.contains(p).then(|| file_page_url(id, p)))
        })
        .await
        .map_err(AppError::internal)?;
        return Ok(view(FileBody::SkillMd {
            front_matter: rendered.front_matter,
            html: rendered.html,
        }));
    }
    let lines: Vec<String> = text
        .lines()
        .take(MAX_SHOWN_LINES)
        .map(str::to_owned)
        .collect();
    Ok(view(FileBody::Text(lines)))
}

/// The `SKILL.md` editor: `check` reads the text as an upload would and shows what the server
/// says (refusal or warnings) without saving; `save` uploads it into the skill, through the same
/// workspace code as `POST /api/v1/skills/upload`.
async fn save_skill_md(
    state: &AppState,
    session: &Session,
    id: Uuid,
    form: &Form,
) -> Result<Response<Body>, AppError> {
    let user_id = session.user.user.id;
    let text = form.text("content");
    let saving = form.get("action") == Some("save");
    let checked = {
        let text = text.clone();
        tokio::task::spawn_blocking(move || crate::skills::manifest::parse(&text))
            .await
            .map_err(AppError::internal)?
    };
    let mut forms = SkillForms {
        skill_md_text: Some(text.clone()),
        ..SkillForms::default()
    };
    let manifest = match checked {
        Ok(manifest) => manifest,
        Err(refused) => {
            forms.skill_md.field_error("content", refused.message);
            return skill_page(
                state,
                session,
                id,
                None,
                forms,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
            )
            .await;
        }
    };
    if !saving {
        forms.check = Some(CheckResult {
            ok: true,
            message: if manifest.warnings.is_empty() {
                "SKILL.md reads well: no warnings.".to_owned()
            } else {
                format!(
                    "SKILL.md can be saved, with {} warning{}:",
                    manifest.warnings.len(),
                    if manifest.warnings.len() == 1 {
                        ""
                    } else {
                        "s"
                    }
                )
            },
            warnings: warning_views(&manifest.warnings),
        });
        return skill_page(state, session, id, None, forms, StatusCode::OK, None).await;
    }
    state.rate_limits.upload(user_id)?;
    let target = UploadTarget {
        skill_id: Some(id),
        if_match: editing(form),
        ..UploadTarget::default()
    };
    let path = SkillPath::parse("SKILL.md").map_err(AppError::internal)?;
    let payload = UploadPayload::Files(vec![(path, Bytes::from(text.into_bytes()))]);
    match state.workspaces.upload(user_id, target, payload).await {
        Ok(_) => Ok(redirect(&format!("/skills/{id}?notice=skill-md-saved"))),
        Err(e) => {
            let status = edit_error(&mut forms.skill_md, &e);
            if status == StatusCode::NOT_FOUND {
                return Err(e);
            }
            // The upload's field errors name `files`; here there is one field.
            let message = forms.skill_md.error_for("files");
            if let Some(message) = message {
                forms.skill_md.field_error("content", message);
            }
            skill_page(state, session, id, None, forms, status, None).await
        }
    }
}

async fn tokens_page(
    state: &AppState,
    visit: &Visit,
    session: &Session,
    form: FormState,
    created: Option<CreatedToken>,
    status: StatusCode,
    notice: Option<String>,
) -> Result<Response<Body>, AppError> {
    let user = &session.user.user;
    let now = OffsetDateTime::now_utc();
    let tokens = state.registry.list(user.id).await?;
    let rows = tokens
        .iter()
        .map(|t| TokenRow {
            id: t.id.to_string(),
            name: t.name.clone(),
            prefix: t.prefix.clone(),
            created: date(t.created_at),
            expires: t.expires_at.map_or_else(|| "never".to_owned(), date),
            last_used: t.last_used_at.map_or_else(|| "never".to_owned(), date),
            scopes: t.scopes.clone(),
            state: if !t.is_active {
                "revoked"
            } else if t.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            },
        })
        .collect();
    let apps = state
        .oauth
        .grants(user.id)
        .await?
        .iter()
        .map(|g| AppRow {
            id: g.id.to_string(),
            name: g.client_name.clone(),
            client_id: g.client_id.clone(),
            scopes: g.scopes.clone(),
            created: date(g.created_at),
            last_used: g.last_used_at.map_or_else(|| "never".to_owned(), date),
        })
        .collect();
    let token = created
        .as_ref()
        .map_or("YOUR_API_TOKEN", |c| c.token.as_str());
    let body = TokensPage {
        chrome: Chrome::new(
            "Connect a client",
            session.csrf.clone(),
            Some(user.username.clone()),
            "tokens",
        )
        .with_notice(notice),
        tokens: rows,
        apps,
        form,
        snippets: snippets::for_token(&visit.origin, token),
        base_url: visit.origin.clone(),
        created,
    };
    Ok(html(status, &body))
}

#[derive(Default)]
struct AccountForms {
    profile: FormState,
    password: FormState,
    delete: FormState,
}

fn account_page(
    session: &Session,
    forms: AccountForms,
    status: StatusCode,
    notice: Option<String>,
) -> Result<Response<Body>, AppError> {
    let user = &session.user.user;
    let body = AccountPage {
        chrome: Chrome::new(
            "Account",
            session.csrf.clone(),
            Some(user.username.clone()),
            "account",
        )
        .with_notice(notice),
        email: user.email.clone(),
        username: user.username.clone(),
        created: date(user.created_at),
        profile: forms.profile,
        password: forms.password,
        delete: forms.delete,
        confirmation: DELETE_CONFIRMATION,
    };
    Ok(html(status, &body))
}

async fn status_page(state: &AppState, session: &Session) -> Result<Response<Body>, AppError> {
    let user = &session.user.user;
    let index = state.workspaces.index(user.id).await?;
    let sandbox = state.sandbox.status().await;
    let sandbox_words = match (sandbox.ready, health::sandbox_reason(sandbox.mode, sandbox.ready)) {
        (true, None) => "Commands run here: run_shell_command runs each one in a sandbox (no network, a scratch copy of its skill, time and memory limits).".to_owned(),
        (true, Some(why)) => format!("Commands run here, but {why}."),
        (false, Some(why)) => format!("Commands do not run here: {why}. The other tools work."),
        (false, None) => "Commands do not run here. The other tools work.".to_owned(),
    };
    let limits = &state.settings.skills;
    let most_files = index.skills().map(|s| s.files.len()).max().unwrap_or(0);
    let largest = index.skills().map(|s| s.bytes).max().unwrap_or(0);
    let quotas = vec![
        QuotaRow {
            id: "bytes",
            what: "Storage, all skills",
            used: ui::human_bytes(index.bytes()),
            limit: ui::human_bytes(limits.max_user_bytes),
            meter: Some((index.bytes(), limits.max_user_bytes)),
        },
        QuotaRow {
            id: "skills",
            what: "Skills",
            used: index.len().to_string(),
            limit: "no limit".to_owned(),
            meter: None,
        },
        QuotaRow {
            id: "files",
            what: "Files in your largest skill",
            used: most_files.to_string(),
            limit: limits.max_skill_files.to_string(),
            meter: Some((most_files as u64, limits.max_skill_files as u64)),
        },
        QuotaRow {
            id: "skill-bytes",
            what: "Size of your largest skill",
            used: ui::human_bytes(largest),
            limit: ui::human_bytes(limits.max_skill_bytes),
            meter: Some((largest, limits.max_skill_bytes)),
        },
        QuotaRow {
            id: "file-bytes",
            what: "One file",
            used: "–".to_owned(),
            limit: ui::human_bytes(limits.max_file_bytes),
            meter: None,
        },
        QuotaRow {
            id: "upload-bytes",
            what: "One upload",
            used: "–".to_owned(),
            limit: ui::human_bytes(limits.max_upload_bytes),
            meter: None,
        },
    ];
    let body = StatusPage {
        chrome: Chrome::new(
            "Status",
            session.csrf.clone(),
            Some(user.username.clone()),
            "status",
        ),
        sandbox_ready: sandbox.ready,
        sandbox_words,
        quotas,
    };
    Ok(html(StatusCode::OK, &body))
}
