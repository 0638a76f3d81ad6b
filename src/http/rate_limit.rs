//! Keyed rate limits (governor, GCRA): logins per client address and per account, registrations
//! per address, MCP requests per API token, uploads per user. A refusal is 429 with `Retry-After`.
//!
//! The per-account login limit is keyed by the account, not by how the login spelled it: the
//! handler first resolves the name (user name, or email in any case or normalization form) to the
//! user, so every spelling of one account draws on one allowance. A name that belongs to no
//! account is keyed by its normal form, so the spellings of one unknown name share one too.
//!
//! The client address is the peer's, unless the peer is a configured trusted proxy: then the
//! right-most address of `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a trusted
//! proxy. IPv6 clients are keyed by their /64, which one client usually holds whole.
//!
//! Keyed state grows with the keys seen; [`RateLimits::prune`] (run on a timer) drops every key
//! whose limit has recovered, so a flood of distinct keys costs memory only while it lasts.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::HeaderMap;
use uuid::Uuid;

use std::sync::Arc;

use crate::actors::auth::LoginTarget;
use crate::config::RateLimitSettings;
use crate::error::AppError;
use crate::metrics::Metrics;

/// One keyed limit; `None` when turned off.
#[derive(Debug)]
struct Limit<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    /// The metric label.
    name: &'static str,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(per_period: u32, period: Duration, name: &'static str, what: &'static str) -> Limit<K> {
        let limiter = NonZeroU32::new(per_period).and_then(|n| {
            let quota = Quota::with_period(period / n.get())?.allow_burst(n);
            Some(DefaultKeyedRateLimiter::keyed(quota))
        });
        Limit {
            limiter,
            name,
            what,
        }
    }

    fn check(&self, key: &K, metrics: &Metrics) -> Result<(), AppError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            metrics.rate_limited(self.name);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            AppError::RateLimited(self.what, wait)
        })
    }

    fn prune(&self) -> usize {
        let Some(limiter) = &self.limiter else {
            return 0;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
        limiter.len()
    }
}

/// What the per-account login limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AccountKey {
    /// An account, however the login named it.
    User(Uuid),
    /// A name that belongs to no account, in its normal form.
    Unknown(String),
}

/// Every limit of the service.
#[derive(Debug)]
pub struct RateLimits {
    login_ip: Limit<IpAddr>,
    login_account: Limit<AccountKey>,
    register_ip: Limit<IpAddr>,
    oauth_register_ip: Limit<IpAddr>,
    oauth_fetch_ip: Limit<IpAddr>,
    mcp_token: Limit<Uuid>,
    upload_user: Limit<Uuid>,
    trusted_proxies: Vec<IpAddr>,
    metrics: Arc<Metrics>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl RateLimits {
    pub fn new(settings: &RateLimitSettings, metrics: Arc<Metrics>) -> RateLimits {
        RateLimits {
            metrics,
            login_ip: Limit::new(
                settings.login_per_ip_per_minute,
                MINUTE,
                "login_ip",
                "logins from this address",
            ),
            login_account: Limit::new(
                settings.login_per_account_per_minute,
                MINUTE,
                "login_account",
                "logins to this account",
            ),
            register_ip: Limit::new(
                settings.register_per_ip_per_hour,
                60 * MINUTE,
                "register_ip",
                "registrations from this address",
            ),
            oauth_register_ip: Limit::new(
                settings.oauth_register_per_ip_per_hour,
                60 * MINUTE,
                "oauth_register_ip",
                "OAuth client registrations from this address",
            ),
            oauth_fetch_ip: Limit::new(
                settings.oauth_fetch_per_ip_per_minute,
                MINUTE,
                "oauth_fetch_ip",
                "client metadata documents fetched for this address",
            ),
            mcp_token: Limit::new(
                settings.mcp_per_token_per_second,
                Duration::from_secs(1),
                "mcp_token",
                "MCP requests with this API token",
            ),
            upload_user: Limit::new(
                settings.uploads_per_user_per_minute,
                MINUTE,
                "upload_user",
                "uploads of this user",
            ),
            trusted_proxies: settings
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
        }
    }

    /// A login attempt from `client` (before its body is even read).
    pub fn login_from(&self, client: IpAddr) -> Result<(), AppError> {
        self.login_ip.check(&client_key(client), &self.metrics)
    }

    /// A login attempt to the account `target` names, from anywhere.
    pub fn login_to(&self, target: &LoginTarget) -> Result<(), AppError> {
        let key = match &target.user {
            Some(user) => AccountKey::User(user.id),
            None => AccountKey::Unknown(target.name.as_str().to_owned()),
        };
        self.login_account.check(&key, &self.metrics)
    }

    pub fn register(&self, client: IpAddr) -> Result<(), AppError> {
        self.register_ip.check(&client_key(client), &self.metrics)
    }

    /// A dynamic client registration (`POST /oauth/register`) from `client`.
    pub fn oauth_register(&self, client: IpAddr) -> Result<(), AppError> {
        self.oauth_register_ip
            .check(&client_key(client), &self.metrics)
    }

    /// A client ID metadata document about to be fetched for `client`.
    pub fn oauth_fetch(&self, client: IpAddr) -> Result<(), AppError> {
        self.oauth_fetch_ip
            .check(&client_key(client), &self.metrics)
    }

    pub fn mcp(&self, token_id: Uuid) -> Result<(), AppError> {
        self.mcp_token.check(&token_id, &self.metrics)
    }

    pub fn upload(&self, user_id: Uuid) -> Result<(), AppError> {
        self.upload_user.check(&user_id, &self.metrics)
    }

    /// Drops the keys whose limits have recovered; returns how many keys are left.
    pub fn prune(&self) -> usize {
        self.login_ip.prune()
            + self.login_account.prune()
            + self.register_ip.prune()
            + self.oauth_register_ip.prune()
            + self.oauth_fetch_ip.prune()
            + self.mcp_token.prune()
            + self.upload_user.prune()
    }

    /// Whether `ip` is one of the configured trusted proxies.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.contains(&canonical(ip))
    }

    /// The client's address: the peer's, or what a trusted proxy says it is.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        // Right to left: each hop appends the address it saw; the first one that is not one of
        // ours is the client as far as we can trust.
        let forwarded = forwarded_for(headers);
        forwarded
            .into_iter()
            .rev()
            .map(canonical)
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer)
    }
}

/// The addresses of `X-Forwarded-For`, else of `Forwarded`'s `for=` parameters, in order.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            if !key.trim().eq_ignore_ascii_case("for") {
                return None;
            }
            let value = value.trim().trim_matches('"');
            // `[2001:db8::1]:4711` or `192.0.2.43:47011` or a bare address.
            let host = if let Some(rest) = value.strip_prefix('[') {
                rest.split(']').next()?
            } else {
                value.split(':').next()?
            };
            host.parse().ok()
        })
        .collect()
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key of a client address: itself for IPv4, its /64 for IPv6.
fn client_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RateLimitSettings {
        RateLimitSettings {
            login_per_ip_per_minute: 3,
            login_per_account_per_minute: 100,
            register_per_ip_per_hour: 1,
            oauth_register_per_ip_per_hour: 1,
            oauth_fetch_per_ip_per_minute: 1,
            mcp_per_token_per_second: 0,
            uploads_per_user_per_minute: 2,
            trusted_proxies: vec!["10.0.0.1".into(), "10.0.0.2".into()],
        }
    }

    #[test]
    fn limits_refuse_with_a_wait_and_zero_turns_them_off() {
        let limits = RateLimits::new(&settings(), Arc::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            limits.login_from(ip).unwrap();
        }
        let refused = limits.login_from(ip).unwrap_err();
        assert_eq!(refused.status(), 429);
        let wait = refused.retry_after().unwrap();
        assert!((1..=20).contains(&wait), "{wait}");
        // Another address is not affected.
        limits.login_from("192.0.2.8".parse().unwrap()).unwrap();
        // Turned off.
        let token = Uuid::new_v4();
        for _ in 0..10_000 {
            limits.mcp(token).unwrap();
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let limits = RateLimits::new(&settings(), Arc::default());
        limits.register("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let same_64 = limits.register("2001:db8:1:2:ffff::9".parse().unwrap());
        assert!(same_64.is_err(), "the same /64");
        limits.register("2001:db8:1:3::1".parse().unwrap()).unwrap();
        // IPv4-mapped is IPv4.
        limits.register("192.0.2.1".parse().unwrap()).unwrap();
        assert!(
            limits
                .register("::ffff:192.0.2.1".parse().unwrap())
                .is_err()
        );
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let limits = RateLimits::new(&settings(), Arc::default());
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        let stranger: IpAddr = "192.0.2.50".parse().unwrap();
        assert_eq!(limits.client(stranger, &headers), stranger, "spoofed");
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            limits.client(proxy, &headers),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "the right-most address that is not a proxy of ours"
        );
        let mut forwarded = HeaderMap::new();
        forwarded.insert(
            http::header::FORWARDED,
            "for=192.0.2.60;proto=https, for=\"[2001:db8::7]:4711\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            limits.client(proxy, &forwarded),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(limits.client(proxy, &HeaderMap::new()), proxy);
    }

    #[test]
    fn recovered_keys_are_pruned() {
        let mut s = settings();
        s.uploads_per_user_per_minute = 600; // one more every 100 ms
        let limits = RateLimits::new(&s, Arc::default());
        for _ in 0..1000 {
            limits.upload(Uuid::new_v4()).unwrap();
        }
        assert_eq!(limits.prune(), 1000, "keys still limited stay");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limits.prune(), 0, "recovered keys go");
    }
}
