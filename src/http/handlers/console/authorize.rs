//! `/oauth/authorize`: an OAuth client's authorization request, the consent page and the
//! user's decision.
//!
//! Order of checks (OAuth 2.1, section 4.1.2.1): the client and its redirect URI first, and
//! while either is in doubt the answer is an error page here, **never a redirect**; then
//! everything else, whose errors go back to the client's redirect URI (`error`, `state`, `iss`).
//! A visitor who is not signed in goes to the sign-in page and comes back (`next`); a signed-in
//! one sees the consent page. The decision is a form of this site (origin and CSRF checked,
//! like every console form) that repeats every check before a code is issued.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use url::Url;

use super::{
    Session, Visit, encode, error_page, html, redirect, require_session, session_form, signed_in,
};
use crate::app::AppState;
use crate::console::pages::{Chrome, ConsentPage};
use crate::domain::Scopes;
use crate::error::AppError;
use crate::http::Body;
use crate::http::handlers::oauth::{Resource, client_problem};
use crate::oauth::client::{self, Client, ClientKind};
use crate::oauth::{requested_scopes, tokens};
use crate::store::OAuthCodeGrant;

/// The parameters of an authorization request, in the order the consent form carries them.
const PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
];

/// An authorization request's parameters, each at most once.
#[derive(Debug, Default)]
struct Params(Vec<(&'static str, String)>);

impl Params {
    /// Reads the known parameters of `pairs`; one given twice is an error (RFC 6749, 3.1).
    fn read<'a>(pairs: impl Iterator<Item = (String, String)> + 'a) -> Result<Params, String> {
        let mut found: Vec<(&'static str, String)> = Vec::new();
        for (key, value) in pairs {
            let Some(name) = PARAMS.iter().find(|p| **p == key) else {
                continue;
            };
            if found.iter().any(|(k, _)| k == name) {
                return Err(format!("the request gives {name} more than once"));
            }
            found.push((name, value));
        }
        Ok(Params(found))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// A request that passed every check: what the consent page shows and the code carries.
struct Checked {
    client: std::sync::Arc<Client>,
    redirect_uri: String,
    state: Option<String>,
    scopes: Scopes,
    resource: String,
    code_challenge: String,
}

/// What a check found: a request fit to show, an error page (the client or its redirect URI
/// could not be trusted), or an error to send back to the client.
enum Outcome {
    Ok(Checked),
    Page(Response<Body>),
    Back(Response<Body>),
}

fn bad_request(detail: String) -> Response<Body> {
    error_page(&AppError::BadRequest {
        code: "oauth-request-invalid",
        detail,
    })
}

/// `303` to the client's redirect URI with `params` added to its query (and `iss`).
fn back_to_client(
    redirect_uri: &str,
    origin: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response<Body> {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return bad_request("the redirect URI cannot be used".into());
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", origin);
    }
    let mut response = Response::new(crate::http::response::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    match HeaderValue::from_str(url.as_str()) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => bad_request("the redirect URI cannot be used".into()),
    }
}

async fn check(state: &AppState, visit: &Visit, params: &Params) -> Result<Outcome, AppError> {
    let origin = visit.origin.as_str();
    let Some(client_id) = params.get("client_id") else {
        return Ok(Outcome::Page(bad_request(
            "The app's request names no client_id, so it cannot be answered. Try connecting again from the app."
                .into(),
        )));
    };
    // A client's metadata document is fetched before anyone signs in: limited per address.
    let may_fetch = || state.rate_limits.oauth_fetch(visit.client);
    let client = match state.oauth.client(client_id, may_fetch).await {
        Ok(client) => client,
        Err(problem) => {
            let words = client_problem(problem)?;
            return Ok(Outcome::Page(bad_request(format!(
                "This app cannot connect: {words}"
            ))));
        }
    };
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return Ok(Outcome::Page(bad_request(
            "The app's request names no redirect_uri, so there is nowhere safe to send the answer."
                .into(),
        )));
    };
    if !client::redirect_allowed(&client.redirect_uris, redirect_uri) {
        tracing::info!(client_id = %client.client_id, "OAuth request with an unregistered redirect URI refused");
        return Ok(Outcome::Page(bad_request(format!(
            "The app asked to be answered at {redirect_uri}, which is not an address it registered. \
             Nothing was sent there."
        ))));
    }
    let st = params.get("state").map(str::to_owned);
    let back = |error: &str, description: &str| {
        Outcome::Back(back_to_client(
            redirect_uri,
            origin,
            st.as_deref(),
            &[("error", error), ("error_description", description)],
        ))
    };
    if params.get("response_type") != Some("code") {
        return Ok(back(
            "unsupported_response_type",
            "only response_type=code is offered",
        ));
    }
    let Some(challenge) = params.get("code_challenge") else {
        return Ok(back(
            "invalid_request",
            "code_challenge is required (PKCE with S256)",
        ));
    };
    if params.get("code_challenge_method") != Some("S256") {
        return Ok(back(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not accepted)",
        ));
    }
    if !tokens::is_s256_challenge(challenge) {
        return Ok(back(
            "invalid_request",
            "code_challenge is not the base64url of a SHA-256",
        ));
    }
    let Some(resource) = params.get("resource") else {
        return Ok(back(
            "invalid_target",
            "resource is required (RFC 8707): this server's MCP endpoint, such as /mcp",
        ));
    };
    if Resource::named(origin, resource).is_none() {
        return Ok(back(
            "invalid_target",
            "resource is not an MCP endpoint of this server",
        ));
    }
    Ok(Outcome::Ok(Checked {
        client,
        redirect_uri: redirect_uri.to_owned(),
        state: st.clone(),
        scopes: requested_scopes(params.get("scope")),
        resource: resource.to_owned(),
        code_challenge: challenge.to_owned(),
    }))
}

/// `GET /oauth/authorize`.
pub(super) async fn request(
    state: &AppState,
    visit: &Visit,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let query = req.uri().query().unwrap_or("");
    let params = match Params::read(
        form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())),
    ) {
        Ok(params) => params,
        Err(words) => return Ok(bad_request(words)),
    };
    let checked = match check(state, visit, &params).await? {
        Outcome::Ok(checked) => checked,
        Outcome::Page(response) | Outcome::Back(response) => return Ok(response),
    };
    // One look at the session: signed in, the consent page; otherwise sign in and come back.
    let (Some(user), Some(secret)) = (signed_in(state, visit).await, &visit.session) else {
        let next = format!("/oauth/authorize?{query}");
        return Ok(redirect(&format!("/signin?next={}", encode(&next))));
    };
    let session = Session {
        user,
        csrf: state.csrf.session_token(secret),
    };
    consent_page(state, &session, checked, &params).await
}

async fn consent_page(
    state: &AppState,
    session: &Session,
    checked: Checked,
    params: &Params,
) -> Result<Response<Body>, AppError> {
    let user = &session.user.user;
    let known = state
        .oauth
        .knows_client(user.id, &checked.client.client_id)
        .await?;
    let redirect_host = Url::parse(&checked.redirect_uri)
        .ok()
        .map(|u| match u.host_str() {
            Some(host) if !host.is_empty() => match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            },
            _ => format!("{}:", u.scheme()),
        })
        .unwrap_or_default();
    let scopes = checked
        .scopes
        .names()
        .into_iter()
        .map(|name| (name, scope_words(name)))
        .collect();
    let page = ConsentPage {
        chrome: Chrome::new(
            format!("Connect {}", checked.client.name),
            session.csrf.clone(),
            Some(user.username.clone()),
            "tokens",
        ),
        client_name: checked.client.name.clone(),
        client_url: (checked.client.kind == ClientKind::MetadataDocument)
            .then(|| checked.client.client_id.clone()),
        registered: checked.client.kind == ClientKind::Registered,
        known,
        account: format!("{} ({})", user.username, user.email),
        redirect_host,
        resource: checked.resource.clone(),
        scopes,
        params: params.0.clone(),
    };
    let mut response = html(StatusCode::OK, &page);
    // The decision's answer is a redirect to the client: a form's redirect is held to the
    // page's form-action, so the client's origin (or its scheme) joins 'self' on this page.
    if let Some(source) = form_action_source(&checked.redirect_uri)
        && let Ok(value) = HeaderValue::from_str(&crate::console::CONTENT_SECURITY_POLICY.replace(
            "form-action 'self'",
            &format!("form-action 'self' {source}"),
        ))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    Ok(response)
}

/// The CSP source that allows a redirect to `uri`: its origin, or its scheme for an app's own
/// scheme.
fn form_action_source(uri: &str) -> Option<String> {
    let url = Url::parse(uri).ok()?;
    match url.scheme() {
        "http" | "https" => {
            let origin = url.origin().ascii_serialization();
            (origin != "null").then_some(origin)
        }
        scheme => Some(format!("{scheme}:")),
    }
}

fn scope_words(scope: &str) -> &'static str {
    match scope {
        "skills:read" => "list your skills and read their files",
        "skills:run" => "run commands in a sandbox with a copy of a skill's files",
        _ => "",
    }
}

/// `POST /oauth/authorize`: Allow or Deny.
pub(super) async fn decision(
    state: &AppState,
    visit: &Visit,
    req: Request<Incoming>,
) -> Result<Response<Body>, AppError> {
    let session = match require_session(state, visit).await {
        Ok(session) => session,
        Err(to_sign_in) => return Ok(to_sign_in),
    };
    let form = session_form(state, visit, req, state.settings.server.max_json_body_bytes).await?;
    let params = match Params::read(form.0.iter().cloned()) {
        Ok(params) => params,
        Err(words) => return Ok(bad_request(words)),
    };
    let checked = match check(state, visit, &params).await? {
        Outcome::Ok(checked) => checked,
        Outcome::Page(response) | Outcome::Back(response) => return Ok(response),
    };
    let user = &session.user.user;
    if form.get("decision") != Some("allow") {
        tracing::info!(user_id = %user.id, client_id = %checked.client.client_id, "OAuth request denied");
        return Ok(back_to_client(
            &checked.redirect_uri,
            &visit.origin,
            checked.state.as_deref(),
            &[
                ("error", "access_denied"),
                ("error_description", "the user denied the request"),
            ],
        ));
    }
    let code = state
        .oauth
        .issue_code(OAuthCodeGrant {
            user_id: user.id,
            client_id: checked.client.client_id.clone(),
            client_name: checked.client.name.clone(),
            redirect_uri: checked.redirect_uri.clone(),
            code_challenge: checked.code_challenge.clone(),
            scopes: checked.scopes.to_string(),
            resource: checked.resource.clone(),
        })
        .await?;
    tracing::info!(user_id = %user.id, client_id = %checked.client.client_id, "OAuth request allowed");
    Ok(back_to_client(
        &checked.redirect_uri,
        &visit.origin,
        checked.state.as_deref(),
        &[("code", &code)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_is_allowed_by_the_consent_page_form_action() {
        assert_eq!(
            form_action_source("https://claude.ai/api/mcp/auth_callback").as_deref(),
            Some("https://claude.ai")
        );
        assert_eq!(
            form_action_source("http://127.0.0.1:33418/callback").as_deref(),
            Some("http://127.0.0.1:33418")
        );
        assert_eq!(
            form_action_source("cursor://anysphere.cursor-retrieval/oauth/cb").as_deref(),
            Some("cursor:")
        );
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        let pairs = vec![
            ("client_id".to_owned(), "a".to_owned()),
            ("client_id".to_owned(), "b".to_owned()),
        ];
        assert!(Params::read(pairs.into_iter()).is_err());
    }
}
