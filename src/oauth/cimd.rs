//! Client ID metadata documents: a `client_id` that is an `https` URL names the JSON document
//! that describes the client, fetched from there.
//!
//! Fetching a URL a stranger chose is server-side request forgery waiting to happen, so:
//! `https` only (plain `http` only to loopback, and only with `oauth.cimd_allow_loopback`);
//! every address a name resolves to must be public (a resolver of our own refuses the rest, so
//! no redirect and no DNS answer can reach a private address), and address literals likewise;
//! at most 3 redirects, each to a URL that passes the same checks; 5 seconds in all; at most
//! 64 KiB; no cookies, no credentials. A document is cached for what its `Cache-Control:
//! max-age` says (at most a day; 5 minutes without one; not at all with `no-store`), and a
//! failure for a minute, so a client cannot make this server fetch in a loop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::redirect::Policy;

use super::client::{self, Client, MetadataError};
use crate::outbound::{Reach, Resolver};

const MAX_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TTL: Duration = Duration::from_secs(300);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
const FAILURE_TTL: Duration = Duration::from_secs(60);
const MAX_CACHED: usize = 1000;

/// Why a metadata document could not be used; said to the person on the error page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocumentError(pub String);

impl From<MetadataError> for DocumentError {
    fn from(e: MetadataError) -> Self {
        DocumentError(e.description)
    }
}

type Cached = (Result<Arc<Client>, DocumentError>, Instant);

/// Fetches and caches documents.
#[derive(Clone)]
pub struct Documents {
    /// Made at the first fetch, on the blocking pool: making it reads the system's CA store,
    /// about 10 ms that would otherwise hold up every start of the server.
    http: Arc<tokio::sync::OnceCell<reqwest::Client>>,
    allow_loopback: bool,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("allow_loopback", &self.allow_loopback)
            .finish_non_exhaustive()
    }
}

impl Documents {
    pub fn new(allow_loopback: bool) -> Documents {
        Documents {
            http: Arc::new(tokio::sync::OnceCell::new()),
            allow_loopback,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The HTTP client, made on first use: redirects re-checked, names resolved to public
    /// addresses only (loopback too when allowed), no proxy.
    async fn http(&self) -> Result<&reqwest::Client, DocumentError> {
        let allow_loopback = self.allow_loopback;
        self.http
            .get_or_try_init(|| async move {
                let made = tokio::task::spawn_blocking(move || {
                    let policy = Policy::custom(move |attempt| {
                        if attempt.previous().len() >= 3 {
                            attempt.error("more than 3 redirects")
                        } else if let Err(why) = check_url(attempt.url(), allow_loopback) {
                            attempt.error(why)
                        } else {
                            attempt.follow()
                        }
                    });
                    reqwest::Client::builder()
                        .dns_resolver(Arc::new(Resolver::new(Reach::loopback_if(allow_loopback))))
                        .redirect(policy)
                        .timeout(TIMEOUT)
                        .connect_timeout(TIMEOUT)
                        .user_agent(concat!("agentskills-mcp/", env!("CARGO_PKG_VERSION")))
                        .no_proxy()
                        .build()
                })
                .await;
                match made {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot make the HTTP client for client metadata documents");
                        Err(DocumentError("this server cannot fetch documents now".into()))
                    }
                    Err(_) => Err(DocumentError("this server cannot fetch documents now".into())),
                }
            })
            .await
    }

    /// Whether `client_id` is meant as a metadata document's URL (rather than a registered id).
    pub fn names_document(client_id: &str) -> bool {
        client_id.starts_with("https://") || client_id.starts_with("http://")
    }

    /// The client the document at `client_id` describes. `may_fetch` is asked before a fetch
    /// (not for a cached document) and may refuse it (a rate limit).
    pub async fn client<E>(
        &self,
        client_id: &str,
        may_fetch: impl FnOnce() -> Result<(), E>,
    ) -> Result<Result<Arc<Client>, DocumentError>, E> {
        if let Ok(cache) = self.cache.lock()
            && let Some((found, until)) = cache.get(client_id)
            && *until > Instant::now()
        {
            return Ok(found.clone());
        }
        may_fetch()?;
        Ok(self.fetch_and_cache(client_id).await)
    }

    async fn fetch_and_cache(&self, client_id: &str) -> Result<Arc<Client>, DocumentError> {
        let (found, ttl) = match self.fetch(client_id).await {
            Ok((client, ttl)) => (Ok(Arc::new(client)), ttl),
            Err(e) => (Err(e), Some(FAILURE_TTL)),
        };
        if let Some(ttl) = ttl
            && let Ok(mut cache) = self.cache.lock()
        {
            let now = Instant::now();
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (_, until)| *until > now);
            }
            if cache.len() < MAX_CACHED {
                cache.insert(client_id.to_owned(), (found.clone(), now + ttl));
            }
        }
        found
    }

    async fn fetch(&self, client_id: &str) -> Result<(Client, Option<Duration>), DocumentError> {
        let url = Url::parse(client_id)
            .map_err(|e| DocumentError(format!("the client_id is not a URL: {e}")))?;
        if url.as_str() != client_id {
            return Err(DocumentError(
                "the client_id URL is not in its normal form (as the client must write it)".into(),
            ));
        }
        if url.path() == "/" || url.fragment().is_some() {
            return Err(DocumentError(
                "a client_id URL must have a path and no fragment".into(),
            ));
        }
        check_url(&url, self.allow_loopback).map_err(DocumentError)?;
        let response = self
            .http()
            .await?
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                DocumentError(format!(
                    "could not fetch the client's metadata document: {}",
                    fetch_error(&e)
                ))
            })?;
        if !response.status().is_success() {
            return Err(DocumentError(format!(
                "the client's metadata document answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let ttl = cache_ttl(response.headers());
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BYTES as u64)
        {
            return Err(DocumentError(format!(
                "the client's metadata document is larger than {} KiB",
                MAX_BYTES / 1024
            )));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            DocumentError(format!(
                "could not read the client's metadata document: {}",
                fetch_error(&e)
            ))
        })? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(DocumentError(format!(
                    "the client's metadata document is larger than {} KiB",
                    MAX_BYTES / 1024
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let client = client::from_document(&url, &body)?;
        Ok((client, ttl))
    }
}

/// Words for a failed fetch without the URL again (the page already names it).
fn fetch_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// How long a fetched document may be reused: `None` for `no-store` / `no-cache`.
fn cache_ttl(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let Some(value) = headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return Some(DEFAULT_TTL);
    };
    let mut ttl = DEFAULT_TTL;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return None;
        }
        if let Some(secs) = directive.strip_prefix("max-age=") {
            match secs.trim_matches('"').parse::<u64>() {
                Ok(0) => return None,
                Ok(secs) => ttl = Duration::from_secs(secs).min(MAX_TTL),
                Err(_) => {}
            }
        }
    }
    Some(ttl)
}

/// The scheme and address-literal rules of a URL to fetch (names are checked when resolved).
fn check_url(url: &Url, allow_loopback: bool) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a client_id URL must not carry credentials".into());
    }
    let loopback_ok = allow_loopback && client::is_loopback_url(url);
    match url.scheme() {
        "https" => {}
        "http" if loopback_ok => {}
        _ => return Err("a client_id URL must be https".into()),
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("a client_id URL must have a host".into()),
    };
    if let Some(ip) = literal
        && !Reach::loopback_if(allow_loopback).allows(ip)
    {
        return Err(format!(
            "the client_id URL points at {ip}, an address that is not public"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_checked_before_any_fetch() {
        let check = |u: &str, loopback| check_url(&Url::parse(u).unwrap(), loopback);
        assert!(check("https://app.example.com/client.json", false).is_ok());
        assert!(check("http://app.example.com/client.json", false).is_err());
        assert!(check("http://127.0.0.1:9/client.json", false).is_err());
        assert!(check("http://127.0.0.1:9/client.json", true).is_ok());
        assert!(check("http://10.0.0.1/client.json", true).is_err());
        assert!(check("https://10.0.0.1/client.json", false).is_err());
        assert!(check("https://[::1]/client.json", false).is_err());
        assert!(check("https://u:p@app.example.com/client.json", false).is_err());
    }

    #[test]
    fn cache_headers_decide_how_long_a_document_is_kept() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(cache_ttl(&headers), Some(DEFAULT_TTL));
        headers.insert(
            reqwest::header::CACHE_CONTROL,
            "public, max-age=60".parse().unwrap(),
        );
        assert_eq!(cache_ttl(&headers), Some(Duration::from_secs(60)));
        headers.insert(
            reqwest::header::CACHE_CONTROL,
            "max-age=999999999".parse().unwrap(),
        );
        assert_eq!(cache_ttl(&headers), Some(MAX_TTL));
        headers.insert(reqwest::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(cache_ttl(&headers), None);
    }
}
