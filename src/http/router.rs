//! Routing: a request's method and path become an [`Endpoint`], or 404/405.
//!
//! Every route of the service is in [`Endpoint::parse`]; adding one is a variant there, an arm
//! in [`dispatch`], and an operation in `src/http/openapi.json` (the tests below fail until the
//! document and the router agree on every path and method). Path parameters are parsed here (a
//! token id that is not a UUID cannot name any token, so it is 404 like an unknown one).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument as _;
use uuid::Uuid;

use super::handlers::console::{self, ConsolePage};
use super::handlers::oauth::{self, Resource};
use super::handlers::{accounts, docs, health, imports, mcp, skills, sse, tokens, versions};
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
    /// `GET /openapi.json`: the OpenAPI document of every route here.
    OpenApi,
    /// `GET /docs`: a page that renders it.
    Docs,
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
    ListVersions(Uuid),
    GetVersion(Uuid, i64),
    /// The skill, the version and the file's path as it appears in the URL.
    GetVersionFile(Uuid, i64, String),
    ExportVersion(Uuid, i64),
    RestoreVersion(Uuid, i64),
    DiffSkill(Uuid),
    /// `POST /skills/import`: skills from a Git repository.
    ImportSkills,
    /// `POST /skills/sync`: every imported skill synced with its source.
    SyncSkills,
    ListSources,
    GetSource(Uuid),
    UpdateSource(Uuid),
    SyncSkill(Uuid),
    Mcp,
    /// The legacy HTTP+SSE transport's stream.
    Sse,
    /// The legacy HTTP+SSE transport's message endpoint.
    SseMessage,
    /// `GET /.well-known/oauth-protected-resource[/mcp|/sse]` (RFC 9728).
    ProtectedResource(Resource),
    /// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
    AuthorizationServer,
    OAuthRegister,
    OAuthToken,
    OAuthRevoke,
    ListGrants,
    DeleteGrant(Uuid),
    /// A page, form or asset of the web console (HTML for browsers: not in the OpenAPI document).
    Console(ConsolePage),
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
            ["openapi.json"] => vec![("GET", Endpoint::OpenApi)],
            ["docs"] => vec![("GET", Endpoint::Docs)],
            ["mcp"] => vec![
                ("POST", Endpoint::Mcp),
                ("GET", Endpoint::Mcp),
                ("DELETE", Endpoint::Mcp),
            ],
            ["sse"] => vec![("GET", Endpoint::Sse)],
            ["messages"] => vec![("POST", Endpoint::SseMessage)],
            [".well-known", "oauth-protected-resource"] => {
                vec![("GET", Endpoint::ProtectedResource(Resource::Root))]
            }
            [".well-known", "oauth-protected-resource", "mcp"] => {
                vec![("GET", Endpoint::ProtectedResource(Resource::Mcp))]
            }
            [".well-known", "oauth-protected-resource", "sse"] => {
                vec![("GET", Endpoint::ProtectedResource(Resource::Sse))]
            }
            [
                ".well-known",
                "oauth-authorization-server" | "openid-configuration",
            ] => {
                vec![("GET", Endpoint::AuthorizationServer)]
            }
            ["oauth", "register"] => vec![("POST", Endpoint::OAuthRegister)],
            ["oauth", "token"] => vec![("POST", Endpoint::OAuthToken)],
            ["oauth", "revoke"] => vec![("POST", Endpoint::OAuthRevoke)],
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
                ["skills", "import"] => vec![("POST", Endpoint::ImportSkills)],
                ["skills", "sync"] => vec![("POST", Endpoint::SyncSkills)],
                ["skills", "sources"] => vec![("GET", Endpoint::ListSources)],
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
                        ["diff"] => vec![("GET", Endpoint::DiffSkill(id))],
                        ["source"] => vec![
                            ("GET", Endpoint::GetSource(id)),
                            ("PATCH", Endpoint::UpdateSource(id)),
                        ],
                        ["sync"] => vec![("POST", Endpoint::SyncSkill(id))],
                        ["versions"] => vec![("GET", Endpoint::ListVersions(id))],
                        ["versions", n, rest @ ..] => {
                            // Versions are numbered from 1; anything else names none.
                            let n = n
                                .parse::<i64>()
                                .ok()
                                .filter(|v| *v >= 1 && v.to_string() == *n)
                                .ok_or(AppError::NotFound("version"))?;
                            match rest {
                                [] => vec![("GET", Endpoint::GetVersion(id, n))],
                                ["export"] => vec![("GET", Endpoint::ExportVersion(id, n))],
                                ["restore"] => vec![("POST", Endpoint::RestoreVersion(id, n))],
                                ["files", path @ ..] if !path.is_empty() => {
                                    vec![("GET", Endpoint::GetVersionFile(id, n, path.join("/")))]
                                }
                                _ => return Err(AppError::NoRoute),
                            }
                        }
                        _ => return Err(AppError::NoRoute),
                    }
                }
                ["oauth", "grants"] => vec![("GET", Endpoint::ListGrants)],
                ["oauth", "grants", id] => {
                    if method != Method::DELETE {
                        return Err(AppError::MethodNotAllowed(vec!["DELETE"]));
                    }
                    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound("grant"))?;
                    return Ok(Endpoint::DeleteGrant(id));
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
            // The console's routes come last, so that no API or MCP path is matched later than
            // before: they are cold paths.
            rest => match console::route(rest) {
                Some(choices) => choices
                    .into_iter()
                    .map(|(m, page)| (m, Endpoint::Console(page)))
                    .collect(),
                None => return Err(AppError::NoRoute),
            },
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
            Endpoint::OpenApi => "openapi",
            Endpoint::Docs => "docs",
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
            Endpoint::ListVersions(_) => "skills.versions.list",
            Endpoint::GetVersion(..) => "skills.versions.get",
            Endpoint::GetVersionFile(..) => "skills.versions.files.get",
            Endpoint::ExportVersion(..) => "skills.versions.export",
            Endpoint::RestoreVersion(..) => "skills.versions.restore",
            Endpoint::DiffSkill(_) => "skills.diff",
            Endpoint::ImportSkills => "skills.import",
            Endpoint::SyncSkills => "skills.sync_all",
            Endpoint::ListSources => "skills.sources.list",
            Endpoint::GetSource(_) => "skills.source.get",
            Endpoint::UpdateSource(_) => "skills.source.update",
            Endpoint::SyncSkill(_) => "skills.sync",
            Endpoint::Mcp => "mcp",
            Endpoint::Sse => "sse",
            Endpoint::SseMessage => "sse.message",
            Endpoint::ProtectedResource(_) => "oauth.protected_resource",
            Endpoint::AuthorizationServer => "oauth.authorization_server",
            Endpoint::OAuthRegister => "oauth.register",
            Endpoint::OAuthToken => "oauth.token",
            Endpoint::OAuthRevoke => "oauth.revoke",
            Endpoint::ListGrants => "oauth.grants.list",
            Endpoint::DeleteGrant(_) => "oauth.grants.delete",
            Endpoint::Console(page) => page.name(),
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
    req.extensions_mut().insert(ClientIp(client, peer.ip()));
    let request_id = request_id(req.headers());
    // No parent: a request is where its tree of spans starts (and the current span is not looked
    // up for it).
    let span = tracing::info_span!(
        parent: None,
        "request",
        id = %request_id.to_str().unwrap_or_default()
    );
    async move {
        let method = req.method().clone();
        let origin = req.headers().get(header::ORIGIN).cloned();
        let sends_body = http1_body_follows(&req);
        let http1 = req.version() < http::Version::HTTP_2;
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
        // A refusal may be answered before the request's body is read (401, 404, 405, 413, …);
        // the connection cannot be used again then, and a client that is not told so sends its
        // next request into a closed socket.
        let status = response.status();
        let headers = response.headers_mut();
        if (sends_body && (status.is_client_error() || status.is_server_error()))
            || (http1 && state.draining.load(std::sync::atomic::Ordering::Relaxed))
        {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        headers.insert(REQUEST_ID, request_id);
        state.metrics.request(
            route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        // Refused and failed requests at `info`; the rest at `debug`, since the line costs
        // about a sixth of a `tools/call` (measured by `cargo bench --bench load`) and the
        // metrics count every request anyway.
        let status = response.status().as_u16();
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if status >= 400 {
            tracing::info!(method = %method, route, status, latency_us, client = %client, "request");
        } else {
            tracing::debug!(method = %method, route, status, latency_us, client = %client, "request");
        }
        response
    }
    .instrument(span)
    .await
}

const REQUEST_ID: &str = "x-request-id";

/// Whether an HTTP/1 request announces a body (HTTP/2 has no connection to close).
fn http1_body_follows(req: &Request<Incoming>) -> bool {
    if req.version() >= http::Version::HTTP_2 {
        return false;
    }
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// The client's address (the peer's, or what a trusted proxy says), for handlers that limit by it,
/// and the peer's own (which decides whether a proxy's headers are believed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) std::net::IpAddr, pub(crate) std::net::IpAddr);

/// The request's id: the client's `X-Request-Id` when it is a plain token (1 to 64 letters,
/// digits, `-`, `_`, `.`), so a caller can follow its request through the logs; otherwise a new
/// one, unique in this process and across restarts (a random prefix, then a counter, in hex). As
/// the header value it is returned in: the client's is shared, not copied, and a new one is
/// written without the formatting machinery (this runs for every request).
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    let given = headers.get(REQUEST_ID).filter(|v| {
        (1..=64).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if let Some(id) = given {
        return id.clone();
    }
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 4];
        // A fixed prefix only weakens uniqueness across restarts, never within one.
        let _ = getrandom::fill(&mut bytes);
        u32::from_le_bytes(bytes)
    });
    made_id(
        *prefix,
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    )
}

/// `{prefix:08x}-{n:x}`: 8 digits, a dash, and 1 to 16 digits.
fn made_id(prefix: u32, n: u64) -> HeaderValue {
    let mut id = [0u8; 25];
    let digits = |value: u64, out: &mut [u8]| {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, slot) in out.iter_mut().rev().enumerate() {
            *slot = HEX[((value >> (4 * i)) & 0xf) as usize];
        }
    };
    digits(u64::from(prefix), &mut id[..8]);
    id[8] = b'-';
    let width = (16 - (n.leading_zeros() as usize) / 4).max(1);
    digits(n, &mut id[9..9 + width]);
    HeaderValue::from_bytes(&id[..9 + width]).unwrap_or(HeaderValue::from_static("-"))
}

/// Runs the endpoint's handler. The handlers of the REST API are boxed, so that an MCP request's
/// future (allocated once per request, see `http::server`) is the size of the MCP handler's, not
/// of the largest REST handler's; REST requests are rare and pay for a second allocation.
async fn dispatch(
    state: &AppState,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    match endpoint {
        Endpoint::Health => Box::pin(health::health(state, req, false)).await,
        Endpoint::Live => Ok(health::live(state)),
        Endpoint::Ready => Box::pin(health::health(state, req, true)).await,
        Endpoint::Metrics => Ok(health::metrics(state)),
        Endpoint::OpenApi => docs::openapi(),
        Endpoint::Docs => docs::docs(),
        Endpoint::Register => Box::pin(accounts::register(state, req)).await,
        Endpoint::Login => Box::pin(accounts::login(state, req)).await,
        Endpoint::Refresh => Box::pin(accounts::refresh(state, req)).await,
        Endpoint::Logout => Box::pin(accounts::logout(state, req)).await,
        Endpoint::GetMe => Box::pin(accounts::get_me(state, req)).await,
        Endpoint::UpdateMe => Box::pin(accounts::update_me(state, req)).await,
        Endpoint::DeleteMe => Box::pin(accounts::delete_me(state, req)).await,
        Endpoint::ChangePassword => Box::pin(accounts::change_password(state, req)).await,
        Endpoint::ListTokens => Box::pin(tokens::list(state, req)).await,
        Endpoint::CreateToken => Box::pin(tokens::create(state, req)).await,
        Endpoint::DeleteToken(id) => Box::pin(tokens::delete(state, req, id)).await,
        Endpoint::ListSkills => Box::pin(skills::list(state, req)).await,
        Endpoint::CreateSkill => Box::pin(skills::create(state, req)).await,
        Endpoint::UploadSkill => Box::pin(skills::upload(state, req)).await,
        Endpoint::GetSkill(id) => Box::pin(skills::get(state, req, id)).await,
        Endpoint::UpdateSkill(id) => Box::pin(skills::update(state, req, id)).await,
        Endpoint::DeleteSkill(id) => Box::pin(skills::delete(state, req, id)).await,
        Endpoint::ListSkillFiles(id) => Box::pin(skills::list_files(state, req, id)).await,
        Endpoint::GetSkillFile(id, path) => Box::pin(skills::get_file(state, req, id, &path)).await,
        Endpoint::ExportSkill(id) => Box::pin(skills::export(state, req, id)).await,
        Endpoint::ListVersions(id) => Box::pin(versions::list(state, req, id)).await,
        Endpoint::GetVersion(id, n) => Box::pin(versions::get(state, req, id, n)).await,
        Endpoint::GetVersionFile(id, n, path) => {
            Box::pin(versions::get_file(state, req, id, n, &path)).await
        }
        Endpoint::ExportVersion(id, n) => Box::pin(versions::export(state, req, id, n)).await,
        Endpoint::RestoreVersion(id, n) => Box::pin(versions::restore(state, req, id, n)).await,
        Endpoint::DiffSkill(id) => Box::pin(versions::diff(state, req, id)).await,
        Endpoint::ImportSkills => Box::pin(imports::import(state, req)).await,
        Endpoint::SyncSkills => Box::pin(imports::sync_all(state, req)).await,
        Endpoint::ListSources => Box::pin(imports::list_sources(state, req)).await,
        Endpoint::GetSource(id) => Box::pin(imports::get_source(state, req, id)).await,
        Endpoint::UpdateSource(id) => Box::pin(imports::update_source(state, req, id)).await,
        Endpoint::SyncSkill(id) => Box::pin(imports::sync_one(state, req, id)).await,
        Endpoint::Mcp => mcp::mcp(state, req).await,
        Endpoint::Sse => Box::pin(sse::open(state, req)).await,
        Endpoint::SseMessage => sse::message(state, req).await,
        Endpoint::ProtectedResource(resource) => oauth::protected_resource(state, &req, resource),
        Endpoint::AuthorizationServer => oauth::authorization_server(state, &req),
        Endpoint::OAuthRegister => Box::pin(oauth::register(state, req)).await,
        Endpoint::OAuthToken => Box::pin(oauth::token(state, req)).await,
        Endpoint::OAuthRevoke => Box::pin(oauth::revoke(state, req)).await,
        Endpoint::ListGrants => Box::pin(oauth::list_grants(state, req)).await,
        Endpoint::DeleteGrant(id) => Box::pin(oauth::delete_grant(state, req, id)).await,
        Endpoint::Console(page) => Ok(Box::pin(console::handle(state, req, page)).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_request_ids_are_the_prefix_and_the_counter_in_hex() {
        for (prefix, n) in [
            (0, 1),
            (0xdead_beef, 15),
            (7, 16),
            (u32::MAX, 255),
            (0x0102_0304, 0x1234_5678_9abc),
            (1, u64::MAX),
            (1, 0),
        ] {
            assert_eq!(made_id(prefix, n), format!("{prefix:08x}-{n:x}").as_str());
        }
    }

    use std::collections::BTreeSet;

    use serde_json::Value;

    /// Every method a request line can carry, documented or not.
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];

    /// How many variants [`Endpoint`] has; [`variant_index`] gives each its own number below it.
    const VARIANTS: usize = 49;

    /// Variants left out of the document on purpose: the console's pages are HTML for people
    /// (forms with CSRF tokens and cookies), not part of the API the document describes.
    const UNDOCUMENTED: [usize; 1] = [29];

    /// A match without a wildcard: a new variant does not compile until it is numbered here, and
    /// then `the_document_reaches_every_endpoint` fails until the document has an operation that
    /// the router parses to it.
    fn variant_index(endpoint: &Endpoint) -> usize {
        match endpoint {
            Endpoint::Health => 0,
            Endpoint::Live => 1,
            Endpoint::Ready => 2,
            Endpoint::Metrics => 3,
            Endpoint::OpenApi => 4,
            Endpoint::Docs => 5,
            Endpoint::Register => 6,
            Endpoint::Login => 7,
            Endpoint::Refresh => 8,
            Endpoint::Logout => 9,
            Endpoint::GetMe => 10,
            Endpoint::UpdateMe => 11,
            Endpoint::DeleteMe => 12,
            Endpoint::ChangePassword => 13,
            Endpoint::ListTokens => 14,
            Endpoint::CreateToken => 15,
            Endpoint::DeleteToken(_) => 16,
            Endpoint::ListSkills => 17,
            Endpoint::CreateSkill => 18,
            Endpoint::UploadSkill => 19,
            Endpoint::GetSkill(_) => 20,
            Endpoint::UpdateSkill(_) => 21,
            Endpoint::DeleteSkill(_) => 22,
            Endpoint::ListSkillFiles(_) => 23,
            Endpoint::GetSkillFile(..) => 24,
            Endpoint::ExportSkill(_) => 25,
            Endpoint::Mcp => 26,
            Endpoint::Sse => 27,
            Endpoint::SseMessage => 28,
            Endpoint::Console(_) => 29,
            Endpoint::ListVersions(_) => 30,
            Endpoint::GetVersion(..) => 31,
            Endpoint::GetVersionFile(..) => 32,
            Endpoint::ExportVersion(..) => 33,
            Endpoint::RestoreVersion(..) => 34,
            Endpoint::DiffSkill(_) => 35,
            Endpoint::ProtectedResource(_) => 36,
            Endpoint::AuthorizationServer => 37,
            Endpoint::OAuthRegister => 38,
            Endpoint::OAuthToken => 39,
            Endpoint::OAuthRevoke => 40,
            Endpoint::ListGrants => 41,
            Endpoint::DeleteGrant(_) => 42,
            Endpoint::ImportSkills => 43,
            Endpoint::SyncSkills => 44,
            Endpoint::ListSources => 45,
            Endpoint::GetSource(_) => 46,
            Endpoint::UpdateSource(_) => 47,
            Endpoint::SyncSkill(_) => 48,
        }
    }

    const SAMPLE_ID: &str = "0b7c6d2e-3f4a-4b5c-8d9e-0f1a2b3c4d5e";
    const SAMPLE_PATH: &str = "scripts/convert.py";
    const SAMPLE_VERSION: &str = "7";

    fn document() -> Value {
        serde_json::from_str(super::super::handlers::docs::OPENAPI_JSON)
            .expect("src/http/openapi.json is JSON")
    }

    /// Each documented path with its parameters filled in, and its documented methods.
    fn documented_paths(document: &Value) -> Vec<(String, String, BTreeSet<String>)> {
        let paths = document["paths"].as_object().expect("`paths` is an object");
        paths
            .iter()
            .map(|(template, item)| {
                let item = item.as_object().expect("a path item is an object");
                let methods: BTreeSet<String> = item
                    .keys()
                    .filter(|k| METHODS.iter().any(|m| m.eq_ignore_ascii_case(k)))
                    .map(|k| k.to_ascii_uppercase())
                    .collect();
                let concrete = template
                    .replace("{id}", SAMPLE_ID)
                    .replace("{path}", SAMPLE_PATH)
                    .replace("{n}", SAMPLE_VERSION);
                assert!(
                    !concrete.contains('{'),
                    "{template}: a path parameter without a sample value in this test"
                );
                (template.clone(), concrete, methods)
            })
            .collect()
    }

    #[test]
    fn every_documented_operation_is_routed_to_its_endpoint() {
        let document = document();
        let id = Uuid::parse_str(SAMPLE_ID).unwrap();
        for (template, path, methods) in documented_paths(&document) {
            assert!(!methods.is_empty(), "{template}: no operation");
            for method in &methods {
                let operation = &document["paths"][&template][method.to_ascii_lowercase()];
                let parsed =
                    Endpoint::parse(&Method::from_bytes(method.as_bytes()).unwrap(), &path)
                        .unwrap_or_else(|e| {
                            panic!("{method} {template} is documented but not routed: {e:?}")
                        });
                // The operation id starts with the endpoint's name (`/mcp`'s three methods share one).
                let operation_id = operation["operationId"].as_str().unwrap_or_default();
                let name = parsed.name();
                assert!(
                    operation_id == name || operation_id.starts_with(&format!("{name}.")),
                    "{method} {template}: operationId {operation_id:?} but the router gives {name:?}"
                );
                match &parsed {
                    Endpoint::DeleteToken(got)
                    | Endpoint::DeleteGrant(got)
                    | Endpoint::GetSkill(got)
                    | Endpoint::UpdateSkill(got)
                    | Endpoint::DeleteSkill(got)
                    | Endpoint::ListSkillFiles(got)
                    | Endpoint::ExportSkill(got)
                    | Endpoint::ListVersions(got)
                    | Endpoint::DiffSkill(got)
                    | Endpoint::GetSource(got)
                    | Endpoint::UpdateSource(got)
                    | Endpoint::SyncSkill(got) => assert_eq!(*got, id),
                    Endpoint::GetSkillFile(got, file) => {
                        assert_eq!((*got, file.as_str()), (id, SAMPLE_PATH))
                    }
                    Endpoint::GetVersion(got, n)
                    | Endpoint::ExportVersion(got, n)
                    | Endpoint::RestoreVersion(got, n) => assert_eq!((*got, *n), (id, 7)),
                    Endpoint::GetVersionFile(got, n, file) => {
                        assert_eq!((*got, *n, file.as_str()), (id, 7, SAMPLE_PATH))
                    }
                    _ => {}
                }
                // Every `{name}` of the template is a documented path parameter.
                for param in template
                    .split('{')
                    .skip(1)
                    .filter_map(|p| p.split_once('}'))
                {
                    let declared = operation["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == param.0 && p["in"] == "path")
                    });
                    assert!(
                        declared,
                        "{method} {template}: `{}` is not declared",
                        param.0
                    );
                }
            }
        }
    }

    /// The variants (as numbered by [`variant_index`]) that no documented operation reaches.
    fn unreached(document: &Value) -> Vec<usize> {
        let mut reached = [false; VARIANTS];
        for (_, path, methods) in documented_paths(document) {
            for method in methods {
                if let Ok(endpoint) =
                    Endpoint::parse(&Method::from_bytes(method.as_bytes()).unwrap(), &path)
                {
                    let i = variant_index(&endpoint);
                    assert!(
                        i < VARIANTS,
                        "raise VARIANTS to the number of Endpoint variants"
                    );
                    reached[i] = true;
                }
            }
        }
        (0..VARIANTS)
            .filter(|&i| !reached[i] && !UNDOCUMENTED.contains(&i))
            .collect()
    }

    /// Each (method, path) where the router and the document disagree: routed but not
    /// documented, documented but not routed, or a 405 whose `Allow` is not the documented set.
    fn method_mismatches(document: &Value) -> Vec<String> {
        let mut mismatches = Vec::new();
        for (template, path, documented) in documented_paths(document) {
            for method in METHODS {
                let result =
                    Endpoint::parse(&Method::from_bytes(method.as_bytes()).unwrap(), &path);
                match result {
                    Ok(_) if documented.contains(method) => {}
                    Ok(_) => {
                        mismatches.push(format!("{method} {template}: routed, not documented"))
                    }
                    Err(AppError::MethodNotAllowed(allowed)) => {
                        let allowed: BTreeSet<String> =
                            allowed.iter().map(|m| (*m).to_owned()).collect();
                        if documented.contains(method) || allowed != documented {
                            mismatches.push(format!(
                                "{method} {template}: 405 allowing {allowed:?}, documented {documented:?}"
                            ));
                        }
                    }
                    Err(e) => mismatches.push(format!("{method} {template}: {e:?}, not 405")),
                }
            }
        }
        mismatches
    }

    #[test]
    fn the_document_reaches_every_endpoint() {
        let missing = unreached(&document());
        assert!(
            missing.is_empty(),
            "Endpoint variants {missing:?} (numbered in variant_index) are in no operation of src/http/openapi.json"
        );
    }

    #[test]
    fn each_documented_path_takes_exactly_the_documented_methods() {
        let mismatches = method_mismatches(&document());
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    #[test]
    fn a_route_left_out_of_the_document_is_caught() {
        let mut document = document();
        let paths = document["paths"].as_object_mut().unwrap();
        paths.remove("/docs");
        paths.remove("/api/v1/tokens/{id}");
        paths["/api/v1/users/me"]
            .as_object_mut()
            .unwrap()
            .remove("delete");
        assert_eq!(unreached(&document), [5, 12, 16]);
        assert_eq!(
            method_mismatches(&document),
            [
                "HEAD /api/v1/users/me: 405 allowing {\"DELETE\", \"GET\", \"PUT\"}, documented {\"GET\", \"PUT\"}",
                "POST /api/v1/users/me: 405 allowing {\"DELETE\", \"GET\", \"PUT\"}, documented {\"GET\", \"PUT\"}",
                "DELETE /api/v1/users/me: routed, not documented",
                "PATCH /api/v1/users/me: 405 allowing {\"DELETE\", \"GET\", \"PUT\"}, documented {\"GET\", \"PUT\"}",
                "OPTIONS /api/v1/users/me: 405 allowing {\"DELETE\", \"GET\", \"PUT\"}, documented {\"GET\", \"PUT\"}",
                "TRACE /api/v1/users/me: 405 allowing {\"DELETE\", \"GET\", \"PUT\"}, documented {\"GET\", \"PUT\"}",
                "CONNECT /api/v1/users/me: 405 allowing {\"DELETE\", \"GET\", \"PUT\"}, documented {\"GET\", \"PUT\"}",
            ]
        );
    }

    #[test]
    fn no_documented_path_is_a_console_page_and_the_console_is_routed() {
        for (template, path, methods) in documented_paths(&document()) {
            for method in methods {
                let parsed =
                    Endpoint::parse(&Method::from_bytes(method.as_bytes()).unwrap(), &path);
                assert!(
                    !matches!(parsed, Ok(Endpoint::Console(_))),
                    "{method} {template} is documented but routed to the console"
                );
            }
        }
        assert_eq!(
            Endpoint::parse(&Method::GET, "/").unwrap(),
            Endpoint::Console(ConsolePage::Home)
        );
        assert_eq!(
            Endpoint::parse(&Method::POST, "/signin").unwrap(),
            Endpoint::Console(ConsolePage::SignIn)
        );
        let id = Uuid::new_v4();
        assert_eq!(
            Endpoint::parse(&Method::GET, &format!("/skills/{id}/files/a/b.md")).unwrap(),
            Endpoint::Console(ConsolePage::SkillFile(id, "a/b.md".to_owned()))
        );
        assert!(matches!(
            Endpoint::parse(&Method::GET, "/signout"),
            Err(AppError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            Endpoint::parse(&Method::GET, "/nowhere"),
            Err(AppError::NoRoute)
        ));
        // The MCP endpoint is matched before any console route.
        assert_eq!(
            Endpoint::parse(&Method::POST, "/mcp").unwrap(),
            Endpoint::Mcp
        );
    }

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

    /// The size of the future a function returns, without calling it.
    fn future_size<'a, A, B, F>(_: impl FnOnce(&'a AppState, A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn handler_future_size<'a, A, F>(_: impl FnOnce(&'a AppState, A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_request_future_stays_small() {
        // Each request allocates this much (`http::server` boxes it); the rare paths inside are
        // boxed again. (In debug builds, where futures are largest, it was 11.8 KB before they
        // were.)
        let size = future_size(handle);
        eprintln!(
            "SIZES handle {size} mcp {} sse {}",
            handler_future_size(mcp::mcp),
            handler_future_size(sse::message)
        );
        assert!(size <= 6 * 1024, "router::handle's future is {size} bytes");
        for (name, size) in [
            ("mcp", handler_future_size(mcp::mcp)),
            ("sse::message", handler_future_size(sse::message)),
        ] {
            assert!(
                size <= 4 * 1024,
                "the {name} handler's future is {size} bytes"
            );
        }
    }
}
