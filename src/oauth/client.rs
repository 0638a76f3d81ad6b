//! OAuth clients: who they are, where they may be sent back to, and how they register.
//!
//! A client is either registered here (dynamic registration, RFC 7591: a generated
//! `client_id`), or names itself with a client ID metadata document: its `client_id` is an
//! `https` URL whose JSON says its name and redirect URIs ([`super::cimd`]).
//!
//! Redirect URIs are where codes go, so they are checked when a client registers and matched
//! exactly when it asks for a code: the one exception is a loopback `http` URI (a native app's
//! local listener), which may use any port (RFC 8252, section 7.3).

use std::net::IpAddr;

use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::Scopes;

/// Longest redirect URI accepted.
const MAX_URI_LEN: usize = 2000;
/// Most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 10;
/// Longest client name kept (longer ones are cut).
const MAX_NAME_CHARS: usize = 100;

/// A client as the authorization endpoint needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    /// What the consent page calls it: its `client_name`, or the host of its metadata URL.
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub kind: ClientKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Registered here through `POST /oauth/register`.
    Registered,
    /// Named by the metadata document at its `client_id`.
    MetadataDocument,
}

/// An RFC 7591 error: `invalid_redirect_uri` or `invalid_client_metadata`, with words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError {
    pub error: &'static str,
    pub description: String,
}

impl MetadataError {
    fn metadata(description: impl Into<String>) -> MetadataError {
        MetadataError {
            error: "invalid_client_metadata",
            description: description.into(),
        }
    }

    fn redirect(description: impl Into<String>) -> MetadataError {
        MetadataError {
            error: "invalid_redirect_uri",
            description: description.into(),
        }
    }
}

/// The fields of a registration request or a metadata document this server reads; the rest
/// are ignored, as RFC 7591 asks.
#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    #[serde(default)]
    scope: Option<String>,
}

/// A registration request checked: the client to store, and the answer (RFC 7591, 3.2.1).
#[derive(Debug)]
pub struct Registered {
    pub client: Client,
    pub answer: Value,
}

/// Checks a dynamic registration request's JSON and makes the client `client_id`.
///
/// This server has public clients only (PKCE is their proof): a request for a client secret
/// gets `token_endpoint_auth_method: none` back, which RFC 7591 lets a server decide and the
/// client must then follow.
pub fn register(
    body: &[u8],
    client_id: String,
    issued_at: i64,
) -> Result<Registered, MetadataError> {
    let metadata: Metadata = serde_json::from_slice(body).map_err(|e| {
        MetadataError::metadata(format!(
            "the registration is not a JSON object of client metadata: {e}"
        ))
    })?;
    let redirect_uris = checked_redirect_uris(metadata.redirect_uris)?;
    check_grant_types(metadata.grant_types.as_deref())?;
    check_response_types(metadata.response_types.as_deref())?;
    let scope = match metadata.scope.as_deref() {
        Some(s) => Some(
            Scopes::parse_spaced(s).map_err(|e| MetadataError::metadata(format!("scope: {e}")))?,
        ),
        None => None,
    };
    let name = clean_name(metadata.client_name.as_deref());
    let mut answer = json!({
        "client_id": client_id,
        "client_id_issued_at": issued_at,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    if let Some(name) = &name {
        answer["client_name"] = Value::from(name.as_str());
    }
    if let Some(scope) = scope {
        answer["scope"] = Value::from(scope.to_string());
    }
    Ok(Registered {
        client: Client {
            client_id,
            name: name.unwrap_or_else(|| "An unnamed app".to_owned()),
            redirect_uris,
            kind: ClientKind::Registered,
        },
        answer,
    })
}

/// Checks a client ID metadata document fetched from `url`.
pub fn from_document(url: &Url, body: &[u8]) -> Result<Client, MetadataError> {
    let metadata: Metadata = serde_json::from_slice(body).map_err(|e| {
        MetadataError::metadata(format!(
            "the client's metadata document is not JSON client metadata: {e}"
        ))
    })?;
    if metadata.client_id.as_deref() != Some(url.as_str()) {
        return Err(MetadataError::metadata(
            "the client's metadata document names another client_id than its own URL",
        ));
    }
    match metadata.token_endpoint_auth_method.as_deref() {
        None | Some("none") => {}
        Some(other) => {
            return Err(MetadataError::metadata(format!(
                "the client wants token_endpoint_auth_method {other}; this server has public clients only (none)"
            )));
        }
    }
    check_grant_types(metadata.grant_types.as_deref())?;
    check_response_types(metadata.response_types.as_deref())?;
    let redirect_uris = checked_redirect_uris(metadata.redirect_uris)?;
    let name = clean_name(metadata.client_name.as_deref())
        .unwrap_or_else(|| url.host_str().unwrap_or("an app").to_owned());
    Ok(Client {
        client_id: url.as_str().to_owned(),
        name,
        redirect_uris,
        kind: ClientKind::MetadataDocument,
    })
}

fn checked_redirect_uris(uris: Option<Vec<String>>) -> Result<Vec<String>, MetadataError> {
    let uris = uris.unwrap_or_default();
    if uris.is_empty() {
        return Err(MetadataError::redirect(
            "redirect_uris must name at least one URI",
        ));
    }
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(MetadataError::redirect(format!(
            "redirect_uris may name at most {MAX_REDIRECT_URIS} URIs"
        )));
    }
    for uri in &uris {
        check_redirect_uri(uri).map_err(MetadataError::redirect)?;
    }
    Ok(uris)
}

fn check_grant_types(types: Option<&[String]>) -> Result<(), MetadataError> {
    if let Some(other) = types
        .unwrap_or_default()
        .iter()
        .find(|t| !matches!(t.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(MetadataError::metadata(format!(
            "grant type {other} is not offered: this server issues authorization_code and refresh_token"
        )));
    }
    Ok(())
}

fn check_response_types(types: Option<&[String]>) -> Result<(), MetadataError> {
    if let Some(other) = types.unwrap_or_default().iter().find(|t| *t != "code") {
        return Err(MetadataError::metadata(format!(
            "response type {other} is not offered: only code"
        )));
    }
    Ok(())
}

/// A client name fit to show: control characters dropped, spaces collapsed, at most 100
/// characters; `None` when nothing is left.
fn clean_name(name: Option<&str>) -> Option<String> {
    let words: Vec<&str> = name?
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.join(" ");
    let cut: String = joined.chars().take(MAX_NAME_CHARS).collect();
    (!cut.is_empty()).then_some(cut)
}

/// Whether a redirect URI may be registered: `https`; `http` only to a loopback address (a
/// native app's listener); or an app's own scheme (`cursor://…`, `com.example.app:/cb`). Never
/// a fragment, credentials, or a scheme a browser would run or read (`javascript:`, `data:`,
/// `file:`, …).
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err(format!(
            "a redirect URI may be at most {MAX_URI_LEN} characters"
        ));
    }
    let url = Url::parse(uri).map_err(|e| format!("{uri:?} is not an absolute URI: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!(
            "{uri:?} has a fragment, which a redirect URI must not have"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{uri:?} carries credentials"));
    }
    match url.scheme() {
        "https" if url.host_str().is_none_or(str::is_empty) => {
            return Err(format!("{uri:?} has no host"));
        }
        "http" if !is_loopback_url(&url) => {
            return Err(format!(
                "{uri:?} is plain http to another machine: use https, or http to 127.0.0.1, [::1] or localhost"
            ));
        }
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss"
        | "mailto" | "filesystem" => {
            return Err(format!("{uri:?} uses a scheme a redirect must not use"));
        }
        _ => {}
    }
    Ok(())
}

/// `http` to a loopback address or `localhost`.
pub fn is_loopback_url(url: &Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        }
}

/// Whether `given` is one of the client's redirect URIs: the same string, or for a loopback
/// `http` URI the same but for the port.
pub fn redirect_allowed(registered: &[String], given: &str) -> bool {
    if registered.iter().any(|r| r == given) {
        return true;
    }
    let Ok(given_url) = Url::parse(given) else {
        return false;
    };
    if !is_loopback_url(&given_url) || given_url.fragment().is_some() {
        return false;
    }
    registered.iter().any(|r| {
        Url::parse(r).is_ok_and(|r| {
            is_loopback_url(&r)
                && r.host() == given_url.host()
                && r.path() == given_url.path()
                && r.query() == given_url.query()
                && r.username() == given_url.username()
                && r.password() == given_url.password()
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn redirect_uris_people_use_are_accepted_and_dangerous_ones_are_not() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "http://127.0.0.1:33418/callback",
            "http://localhost:6274/oauth/callback",
            "http://[::1]:8080/cb",
            "cursor://anysphere.cursor-retrieval/oauth/user-agentskills/callback",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://evil.example/callback",
            "https://claude.ai/cb#frag",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "https://user:pw@example.com/cb",
            "/relative",
            "",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_redirects_match_on_any_port_and_nothing_else_does() {
        let registered = vec![
            "http://127.0.0.1:3000/callback".to_owned(),
            "https://app.example.com/cb".to_owned(),
        ];
        assert!(redirect_allowed(
            &registered,
            "http://127.0.0.1:3000/callback"
        ));
        assert!(redirect_allowed(
            &registered,
            "http://127.0.0.1:49152/callback"
        ));
        assert!(!redirect_allowed(
            &registered,
            "http://127.0.0.1:49152/other"
        ));
        assert!(!redirect_allowed(
            &registered,
            "http://localhost:3000/callback"
        ));
        assert!(redirect_allowed(&registered, "https://app.example.com/cb"));
        assert!(!redirect_allowed(
            &registered,
            "https://app.example.com:8443/cb"
        ));
        assert!(!redirect_allowed(
            &registered,
            "https://app.example.com/cb/"
        ));
        assert!(!redirect_allowed(
            &registered,
            "https://app.example.com/cb?x=1"
        ));
        assert!(!redirect_allowed(&registered, "https://evil.example/cb"));
    }

    #[test]
    fn registration_answers_a_public_client() {
        let body = br#"{"client_name":"  Claude\u0000 Desktop ","redirect_uris":["http://127.0.0.1:1/cb"],
            "token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],
            "scope":"skills:read"}"#;
        let done = register(body, "ask_client_x".to_owned(), 7).unwrap();
        assert_eq!(done.client.name, "Claude Desktop");
        assert_eq!(done.answer["token_endpoint_auth_method"], "none");
        assert_eq!(done.answer["client_id"], "ask_client_x");
        assert_eq!(done.answer["scope"], "skills:read");
        let bad = register(
            br#"{"redirect_uris":["http://evil.example/cb"]}"#,
            "x".into(),
            0,
        );
        assert_eq!(bad.unwrap_err().error, "invalid_redirect_uri");
        let bad = register(
            br#"{"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}"#,
            "x".into(),
            0,
        );
        assert_eq!(bad.unwrap_err().error, "invalid_client_metadata");
        let bad = register(br#"{"client_name":"x"}"#, "x".into(), 0);
        assert_eq!(bad.unwrap_err().error, "invalid_redirect_uri");
    }

    #[test]
    fn a_metadata_document_must_name_its_own_url() {
        let url = Url::parse("https://app.example.com/oauth/client.json").unwrap();
        let good =
            br#"{"client_id":"https://app.example.com/oauth/client.json","client_name":"App",
            "redirect_uris":["https://app.example.com/cb"]}"#;
        let client = from_document(&url, good).unwrap();
        assert_eq!(client.name, "App");
        assert_eq!(client.kind, ClientKind::MetadataDocument);
        let other = br#"{"client_id":"https://evil.example/client.json","redirect_uris":["https://app.example.com/cb"]}"#;
        assert!(from_document(&url, other).is_err());
        let secret = br#"{"client_id":"https://app.example.com/oauth/client.json","redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#;
        assert!(from_document(&url, secret).is_err());
        let unnamed = br#"{"client_id":"https://app.example.com/oauth/client.json","redirect_uris":["https://app.example.com/cb"]}"#;
        assert_eq!(
            from_document(&url, unnamed).unwrap().name,
            "app.example.com"
        );
    }
}
