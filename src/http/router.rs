//! Routing: a request's method and path become an [`Endpoint`], or 404/405.
//!
//! Every route of the service is in [`Endpoint::parse`]; adding one is a variant there and an arm
//! in [`dispatch`]. Path parameters are parsed here (a token id that is not a UUID cannot name any
//! token, so it is 404 like an unknown one).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument as _;
use uuid::Uuid;

use super::handlers::{accounts, health, mcp, skills, sse, tokens};
use super::{Body, cors, response};
use crate::app::AppState;
use crate::error::AppError;

/// Every operation the service answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Live,
    Ready,
    Metrics,
    Register,
    Login,
    Refresh,
    Logout,
    GetMe,
    UpdateMe,
    DeleteMe,
    ChangePassword,
    ListTokens,
    CreateToken,
    DeleteToken(Uuid),
    ListSkills,
    CreateSkill,
    UploadSkill,
    GetSkill(Uuid),
    UpdateSkill(Uuid),
    DeleteSkill(Uuid),
    ListSkillFiles(Uuid),
    /// The skill and the file's path as it appears in the URL (still percent-encoded).
    GetSkillFile(Uuid, String),
    ExportSkill(Uuid),
    Mcp,
    /// The legacy HTTP+SSE transport's stream.
    Sse,
    /// The legacy HTTP+SSE transport's message endpoint.
    SseMessage,
}

impl Endpoint {
    /// Maps a method and path to an endpoint: unknown paths are 404, known paths with another
    /// method are 405 with the methods they take.
    pub fn parse(method: &Method, path: &str) -> Result<Endpoint, AppError> {
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let choices: Vec<(&'static str, Endpoint)> = match segments.as_slice() {
            ["health"] => vec![("GET", Endpoint::Health)],
            ["health", "live"] => vec![("GET", Endpoint::Live)],
            ["health", "ready"] => vec![("GET", Endpoint::Ready)],
            ["metrics"] => vec![("GET", Endpoint::Metrics)],
            ["mcp"] => vec![
                ("POST", Endpoint::Mcp),
                ("GET", Endpoint::Mcp),
                ("DELETE", Endpoint::Mcp),
            ],
            ["sse"] => vec![("GET", Endpoint::Sse)],
            ["messages"] => vec![("POST", Endpoint::SseMessage)],
            ["api", "v1", rest @ ..] => match rest {
                ["auth", "register"] => vec![("POST", Endpoint::Register)],
                ["auth", "login"] => vec![("POST", Endpoint::Login)],
                ["auth", "refresh"] => vec![("POST", Endpoint::Refresh)],
                ["auth", "logout"] => vec![("POST", Endpoint::Logout)],
                ["users", "me"] => vec![
                    ("GET", Endpoint::GetMe),
                    ("PUT", Endpoint::UpdateMe),
                    ("DELETE", Endpoint::DeleteMe),
                ],
                ["users", "me", "password"] => vec![("PUT", Endpoint::ChangePassword)],
                ["tokens"] => vec![
                    ("GET", Endpoint::ListTokens),
                    ("POST", Endpoint::CreateToken),
                ],
                ["skills"] => vec![
                    ("GET", Endpoint::ListSkills),
                    ("POST", Endpoint::CreateSkill),
                ],
                ["skills", "upload"] => vec![("POST", Endpoint::UploadSkill)],
                ["skills", id, rest @ ..] => {
                    // A skill id that is not a UUID names no skill of anyone's.
                    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound("skill"))?;
                    match rest {
                        [] => vec![
                            ("GET", Endpoint::GetSkill(id)),
                            ("PUT", Endpoint::UpdateSkill(id)),
                            ("DELETE", Endpoint::DeleteSkill(id)),
                        ],
                        ["files"] => vec![("GET", Endpoint::ListSkillFiles(id))],
                        ["files", path @ ..] => {
                            vec![("GET", Endpoint::GetSkillFile(id, path.join("/")))]
                        }
                        ["export"] => vec![("GET", Endpoint::ExportSkill(id))],
                        _ => return Err(AppError::NoRoute),
                    }
                }
                ["tokens", id] => {
                    if method != Method::DELETE {
                        return Err(AppError::MethodNotAllowed(vec!["DELETE"]));
                    }
                    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound("token"))?;
                    return Ok(Endpoint::DeleteToken(id));
                }
                _ => return Err(AppError::NoRoute),
            },
            _ => return Err(AppError::NoRoute),
        };
        choices
            .iter()
            .find(|(m, _)| *m == method.as_str())
            .map(|(_, endpoint)| endpoint.clone())
            .ok_or_else(|| AppError::MethodNotAllowed(choices.iter().map(|(m, _)| *m).collect()))
    }

    /// A low-cardinality name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Health => "health",
            Endpoint::Live => "health.live",
            Endpoint::Ready => "health.ready",
            Endpoint::Metrics => "metrics",
            Endpoint::Register => "auth.register",
            Endpoint::Login => "auth.login",
            Endpoint::Refresh => "auth.refresh",
            Endpoint::Logout => "auth.logout",
            Endpoint::GetMe => "users.me.get",
            Endpoint::UpdateMe => "users.me.update",
            Endpoint::DeleteMe => "users.me.delete",
            Endpoint::ChangePassword => "users.me.password",
            Endpoint::ListTokens => "tokens.list",
            Endpoint::CreateToken => "tokens.create",
            Endpoint::DeleteToken(_) => "tokens.delete",
            Endpoint::ListSkills => "skills.list",
            Endpoint::CreateSkill => "skills.create",
            Endpoint::UploadSkill => "skills.upload",
            Endpoint::GetSkill(_) => "skills.get",
            Endpoint::UpdateSkill(_) => "skills.update",
            Endpoint::DeleteSkill(_) => "skills.delete",
            Endpoint::ListSkillFiles(_) => "skills.files.list",
            Endpoint::GetSkillFile(..) => "skills.files.get",
            Endpoint::ExportSkill(_) => "skills.export",
            Endpoint::Mcp => "mcp",
            Endpoint::Sse => "sse",
            Endpoint::SseMessage => "sse.message",
        }
    }
}

/// Answers one request and logs it, under a request id that every log line of the request
/// carries and the response returns in `X-Request-Id`.
pub(crate) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let client = state.rate_limits.client(peer.ip(), req.headers());
    req.extensions_mut().insert(ClientIp(client));
    let request_id = request_id(req.headers());
    let span = tracing::info_span!("request", id = %request_id);
    async move {
        let method = req.method().clone();
        let origin = req.headers().get(header::ORIGIN).cloned();
        let cors = &state.settings.server.cors_allowed_origins;
        let (route, mut response) = if cors::is_preflight(&method, req.headers()) {
            ("preflight", cors::preflight(req.headers(), cors))
        } else {
            let endpoint = Endpoint::parse(&method, req.uri().path());
            let route = endpoint.as_ref().map_or("unmatched", Endpoint::name);
            let limit = Duration::from_secs(state.settings.server.request_timeout_secs);
            let response = match endpoint {
                Ok(endpoint) => {
                    match tokio::time::timeout(limit, dispatch(state, endpoint, req)).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(e)) => response::error(&e),
                        Err(_) => response::error(&AppError::Timeout("the request")),
                    }
                }
                Err(e) => response::error(&e),
            };
            (route, response)
        };
        cors::decorate(origin.as_ref(), &mut response, cors);
        let headers = response.headers_mut();
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID, value);
        }
        state.metrics.request(
            route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        tracing::info!(
            method = %method,
            route,
            status = response.status().as_u16(),
            latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            client = %client,
            "request"
        );
        response
    }
    .instrument(span)
    .await
}

const REQUEST_ID: &str = "x-request-id";

/// The client's address (the peer's, or what a trusted proxy says), for handlers that limit by it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) std::net::IpAddr);

/// The request's id: the client's `X-Request-Id` when it is a plain token (1 to 64 letters,
/// digits, `-`, `_`, `.`), so a caller can follow its request through the logs; otherwise a new
/// one, unique in this process and across restarts.
fn request_id(headers: &http::HeaderMap) -> String {
    let given = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    match given {
        Some(id) => id.to_owned(),
        None => {
            static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let prefix = PREFIX.get_or_init(|| {
                let mut bytes = [0u8; 4];
                // A fixed prefix only weakens uniqueness across restarts, never within one.
                let _ = getrandom::fill(&mut bytes);
                u32::from_le_bytes(bytes)
            });
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{prefix:08x}-{n:x}")
        }
    }
}

async fn dispatch(
    state: &AppState,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    match endpoint {
        Endpoint::Health => health::health(state, false).await,
        Endpoint::Live => Ok(health::live(state)),
        Endpoint::Ready => health::health(state, true).await,
        Endpoint::Metrics => Ok(health::metrics(state)),
        Endpoint::Register => accounts::register(state, req).await,
        Endpoint::Login => accounts::login(state, req).await,
        Endpoint::Refresh => accounts::refresh(state, req).await,
        Endpoint::Logout => accounts::logout(state, req).await,
        Endpoint::GetMe => accounts::get_me(state, req).await,
        Endpoint::UpdateMe => accounts::update_me(state, req).await,
        Endpoint::DeleteMe => accounts::delete_me(state, req).await,
        Endpoint::ChangePassword => accounts::change_password(state, req).await,
        Endpoint::ListTokens => tokens::list(state, req).await,
        Endpoint::CreateToken => tokens::create(state, req).await,
        Endpoint::DeleteToken(id) => tokens::delete(state, req, id).await,
        Endpoint::ListSkills => skills::list(state, req).await,
        Endpoint::CreateSkill => skills::create(state, req).await,
        Endpoint::UploadSkill => skills::upload(state, req).await,
        Endpoint::GetSkill(id) => skills::get(state, req, id).await,
        Endpoint::UpdateSkill(id) => skills::update(state, req, id).await,
        Endpoint::DeleteSkill(id) => skills::delete(state, req, id).await,
        Endpoint::ListSkillFiles(id) => skills::list_files(state, req, id).await,
        Endpoint::GetSkillFile(id, path) => skills::get_file(state, req, id, &path).await,
        Endpoint::ExportSkill(id) => skills::export(state, req, id).await,
        Endpoint::Mcp => mcp::mcp(state, req).await,
        Endpoint::Sse => sse::open(state, req).await,
        Endpoint::SseMessage => sse::message(state, req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(
            Endpoint::parse(&Method::GET, "/health").unwrap(),
            Endpoint::Health
        );
        assert_eq!(
            Endpoint::parse(&Method::PUT, "/api/v1/users/me").unwrap(),
            Endpoint::UpdateMe
        );
        let id = Uuid::new_v4();
        assert_eq!(
            Endpoint::parse(&Method::DELETE, &format!("/api/v1/tokens/{id}")).unwrap(),
            Endpoint::DeleteToken(id)
        );
        assert!(matches!(
            Endpoint::parse(&Method::DELETE, "/api/v1/tokens/nope"),
            Err(AppError::NotFound(_))
        ));
        assert!(matches!(
            Endpoint::parse(&Method::GET, "/api/v1/nope"),
            Err(AppError::NoRoute)
        ));
        assert!(matches!(
            Endpoint::parse(&Method::GET, "/health/"),
            Err(AppError::NoRoute)
        ));
        match Endpoint::parse(&Method::PATCH, "/api/v1/users/me") {
            Err(AppError::MethodNotAllowed(allowed)) => {
                assert_eq!(allowed, ["GET", "PUT", "DELETE"])
            }
            other => panic!("{other:?}"),
        }
    }
}
