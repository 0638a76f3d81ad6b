//! Connections this server makes to places other people name: OAuth client metadata documents
//! (`oauth::cimd`) and Git repositories (`skills::git`). Whoever names the place must not be able
//! to make this server reach what only it can reach (server-side request forgery): its loopback,
//! the private network it runs in, a cloud's metadata address. So every name is resolved here, and
//! only the addresses a [`Reach`] allows are ever connected to; a name left with none fails. A
//! client that uses [`Resolver`] also needs address literals in URLs checked ([`Reach::allows`]),
//! since those are never resolved.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses a connection may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Globally routable addresses only.
    Public,
    /// Those and loopback (tests, a client on the server's machine).
    PublicAndLoopback,
    /// Any unicast address: for servers on the operator's own network, when the operator says so.
    Any,
}

impl Reach {
    /// [`Reach::PublicAndLoopback`] if `loopback`, else [`Reach::Public`].
    pub fn loopback_if(loopback: bool) -> Reach {
        if loopback {
            Reach::PublicAndLoopback
        } else {
            Reach::Public
        }
    }

    /// Whether a connection may go to `ip`.
    pub fn allows(self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match self {
            Reach::Public => is_public(ip),
            Reach::PublicAndLoopback => ip.is_loopback() || is_public(ip),
            Reach::Any => !(ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip)),
        }
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// A globally routable unicast address: not private, loopback, link-local, shared (CGNAT),
/// documentation, benchmarking, multicast, broadcast, unspecified or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b // NAT64: an IPv4 in disguise
                || first == 0x2002 // 6to4: likewise
                || first == 0)
        }
    }
}

/// Resolves names with the system's resolver and keeps only the addresses its [`Reach`] allows;
/// a name with none left fails, so a connection can never go anywhere else (a redirect to
/// another name is resolved here too).
#[derive(Debug)]
pub struct Resolver {
    reach: Reach,
}

impl Resolver {
    pub fn new(reach: Reach) -> Resolver {
        Resolver { reach }
    }
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let reach = self.reach;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| reach.allows(a.ip()))
                .collect();
            if found.is_empty() {
                let what = match reach {
                    Reach::Any => "usable address",
                    Reach::Public | Reach::PublicAndLoopback => "public address",
                };
                return Err(format!("{host} resolves to no {what}").into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_public_addresses_are_fetched_from() {
        for private in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "::",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private}");
            assert!(!Reach::Public.allows(ip), "{private}");
            assert!(
                Reach::Any.allows(ip)
                    || ip.is_multicast()
                    || ip.is_unspecified()
                    || private == "255.255.255.255"
                    || private == "::",
                "{private}"
            );
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        assert!(Reach::PublicAndLoopback.allows("127.0.0.1".parse().unwrap()));
        assert!(Reach::PublicAndLoopback.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!Reach::PublicAndLoopback.allows("10.0.0.1".parse().unwrap()));
        assert!(Reach::Any.allows("10.0.0.1".parse().unwrap()));
        assert!(!Reach::Any.allows("0.0.0.0".parse().unwrap()));
    }
}
