//! What the router believes of a client's request at the edge: which peers may tell it who
//! the client was (`--trusted-proxies`), and which `Host` values it accepts.
//!
//! The router faces the internet: a client can send `X-Forwarded-For: 10.0.0.1` or
//! `Forwarded: for=...` to pose as someone else to the backend (rate limits, allow lists,
//! audit logs). So the forwarding headers a client sends are dropped and set afresh from the
//! TCP peer, the listener and `Host`, unless the peer is a proxy in front of the router
//! that the operator trusts (a load balancer): then the chain it sent is kept and the
//! peer is appended (`X-Forwarded-For`, `Forwarded`), and its `X-Forwarded-Proto/Host/Port`
//! are passed on. The headers themselves are written by `http_proxy` (one pass over the
//! client's headers on the router's own paths, a `HeaderMap` rewrite on hyper's).
//!
//! Those are not the only headers backends read the client from: frameworks and libraries
//! look at `X-Real-IP`, `True-Client-IP`, `X-Client-IP`, `X-Forwarded-Ssl` and more
//! ([`CLIENT_CLAIMS`], the one list of them). From a peer that is not a trusted proxy they are
//! dropped, and `X-Real-IP` is set to the client the router decided on ([`real_client`]).
//! A header name with `_` is dropped from every peer, as nginx does by default
//! (`underscores_in_headers off`): CGI, PHP, WSGI and Rack turn `-` into `_` and upper-case
//! the name (`HTTP_X_FORWARDED_FOR`), so `X_Forwarded_For` would reach the application as
//! the very header the router just replaced.
//!
//! `Host` (RFC 9112 3.2): which values are accepted is the wire code's
//! ([`flynn_http1::host`], re-exported here), the same on both servers.

use std::{fmt, net::IpAddr, str::FromStr, sync::Arc};

pub use flynn_http1::host::{HostError, request_host, valid_host};

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a `--trusted-proxies` entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not an address block: write an address with an optional prefix length, \
     e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32"
)]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(err)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` lies in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The peers whose forwarding headers are believed. Empty (the default): nobody's.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    /// Trust these blocks.
    pub fn new(blocks: impl IntoIterator<Item = Cidr>) -> Self {
        Self(blocks.into_iter().collect())
    }

    /// Whether a connection from `ip` comes from a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The blocks.
    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }
}

/// The headers the router writes itself for the backend: a client's are dropped, a trusted
/// proxy's are read (`X-Real-IP` excepted: the router works it out from the chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forwarding {
    For,
    Proto,
    Host,
    Port,
    /// RFC 7239 `Forwarded`.
    Forwarded,
    /// `X-Real-IP`: the one client address ([`real_client`]).
    RealIp,
}

/// What the router does with a request header before the backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientHeader {
    /// Passed on as it is.
    Ordinary,
    /// Written by the router ([`Forwarding`]): the client's copy never reaches the backend.
    Forwarding(Forwarding),
    /// Another claim about who or where the client is: passed on from a trusted proxy (as
    /// its `X-Forwarded-Proto` is), dropped from anyone else.
    Claim,
    /// A name with `_`: dropped from every peer (module docs).
    Underscore,
}

/// Every header that tells a backend who or where the client is, and what the router makes
/// of it. Both servers' paths read it through [`classify`]; add a name here and nowhere else.
pub(crate) const CLIENT_CLAIMS: &[(&str, ClientHeader)] = {
    use ClientHeader::{Claim, Forwarding as F};
    use Forwarding::*;
    &[
        ("x-forwarded-for", F(For)),
        ("x-forwarded-proto", F(Proto)),
        ("x-forwarded-host", F(Host)),
        ("x-forwarded-port", F(Port)),
        ("forwarded", F(Forwarded)),
        ("x-real-ip", F(RealIp)),
        // Client addresses that CDNs, load balancers and libraries (Rails' remote_ip, PHP's
        // HTTP_CLIENT_IP idiom, Node's request-ip, Spring, Symfony) take at their word.
        ("true-client-ip", Claim),
        ("client-ip", Claim),
        ("x-client-ip", Claim),
        ("x-cluster-client-ip", Claim),
        ("x-original-forwarded-for", Claim),
        ("x-forwarded", Claim),
        ("forwarded-for", Claim),
        ("cf-connecting-ip", Claim),
        ("fastly-client-ip", Claim),
        // "The client used HTTPS" (Rack, Django's SECURE_PROXY_SSL_HEADER setups) and the
        // path prefix the client saw (Spring, Symfony): trusted as `X-Forwarded-Proto` is.
        ("x-forwarded-ssl", Claim),
        ("x-forwarded-scheme", Claim),
        ("x-forwarded-prefix", Claim),
    ]
};

/// Longer than any name of [`CLIENT_CLAIMS`].
const CLAIM_LEN_LIMIT: usize = 32;

/// `CLAIM_LENGTHS[n]`: some name of [`CLIENT_CLAIMS`] is `n` bytes long. Every request
/// header is classified, and most are none of them: their length alone says so.
const CLAIM_LENGTHS: [bool; CLAIM_LEN_LIMIT] = {
    let mut lengths = [false; CLAIM_LEN_LIMIT];
    let mut i = 0;
    while i < CLIENT_CLAIMS.len() {
        lengths[CLIENT_CLAIMS[i].0.len()] = true;
        i += 1;
    }
    lengths
};

/// What `name` (any case) is to the router.
pub(crate) fn classify(name: &[u8]) -> ClientHeader {
    if name.contains(&b'_') {
        return ClientHeader::Underscore;
    }
    if !CLAIM_LENGTHS.get(name.len()).copied().unwrap_or(false) {
        return ClientHeader::Ordinary;
    }
    CLIENT_CLAIMS
        .iter()
        .find(|(claim, _)| name.eq_ignore_ascii_case(claim.as_bytes()))
        .map_or(ClientHeader::Ordinary, |&(_, what)| what)
}

/// The client a trusted proxy's chain names: walking the addresses right to left (the one
/// nearest the router first), the first that is not a trusted proxy, as nginx's realip
/// module does with `real_ip_recursive on`. The entries further left were written by hops
/// nobody vouches for (a client can send its own `X-Forwarded-For` to the proxy). When every
/// address is a trusted proxy, the leftmost; an entry that is no address (`unknown`, an
/// obfuscated RFC 7239 name) ends the walk at the last address before it; no address at all:
/// `None` (then the peer is the client).
///
/// `x_forwarded_for` are the `X-Forwarded-For` lines in order; without any, the `for=` of
/// the `Forwarded` lines.
pub(crate) fn real_client<'a>(
    x_forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]> + Clone,
    forwarded: impl DoubleEndedIterator<Item = &'a [u8]>,
    proxies: &TrustedProxies,
) -> Option<IpAddr> {
    fn walk<'b>(
        entries: impl Iterator<Item = &'b [u8]>,
        proxies: &TrustedProxies,
    ) -> Option<IpAddr> {
        let mut last = None;
        for entry in entries {
            let Some(ip) = entry_address(entry) else {
                break;
            };
            last = Some(ip);
            if !proxies.contains(ip) {
                break;
            }
        }
        last
    }
    if x_forwarded_for.clone().next().is_some() {
        let entries = x_forwarded_for
            .rev()
            .flat_map(|line| line.rsplit(|&b| b == b','));
        return walk(entries, proxies);
    }
    let entries = forwarded
        .rev()
        .flat_map(|line| line.rsplit(|&b| b == b','))
        .map(|element| {
            element
                .split(|&b| b == b';')
                .find_map(|pair| {
                    let pair = pair.trim_ascii();
                    (pair.len() > 4 && pair[..4].eq_ignore_ascii_case(b"for=")).then(|| &pair[4..])
                })
                .unwrap_or(b"")
        });
    walk(entries, proxies)
}

/// The address of one chain entry: `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`, optionally quoted (RFC 7239); IPv4-mapped IPv6
/// as IPv4.
fn entry_address(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    let entry = entry
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or(entry);
    let ip = if let Some(rest) = entry.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)?
    } else if let Ok(ip) = entry.parse::<IpAddr>() {
        ip
    } else {
        let (ip, port) = entry.rsplit_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(ip.parse().ok()?)
    };
    Some(ip.to_canonical())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_blocks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        // IPv4-mapped IPv6 peers (a dual-stack listener) are IPv4.
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "", "x", "::/129", "10.0.0.0/"] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.to_string().contains("e.g. 10.0.0.0/8"), "{bad}: {e}");
        }
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        let t = TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]);
        assert!(t.contains("10.9.9.9".parse().unwrap()));
        assert!(!TrustedProxies::default().contains("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn client_claims_and_underscore_names() {
        use ClientHeader::*;
        for (name, want) in [
            ("X-Forwarded-For", Forwarding(super::Forwarding::For)),
            ("x-real-ip", Forwarding(super::Forwarding::RealIp)),
            ("Forwarded", Forwarding(super::Forwarding::Forwarded)),
            ("True-Client-IP", Claim),
            ("X-Forwarded-Ssl", Claim),
            ("X_Forwarded_For", Underscore),
            ("x_real_ip", Underscore),
            ("my_header", Underscore),
            // Valid twins: ordinary names, and names that only contain a claim's name.
            ("X-Team-Trace", Ordinary),
            ("x-forwarded-for-real", Ordinary),
            ("ip", Ordinary),
            ("accept", Ordinary),
        ] {
            assert_eq!(classify(name.as_bytes()), want, "{name}");
        }
        // The list holds lower-case names, each once.
        let mut names: Vec<&str> = CLIENT_CLAIMS.iter().map(|(n, _)| *n).collect();
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| !b.is_ascii_uppercase()))
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CLIENT_CLAIMS.len());
    }

    /// The client of a trusted proxy's chain: the rightmost address that is not a trusted
    /// proxy, never one further left a client could have written.
    #[test]
    fn the_real_client_of_a_chain() {
        let proxies = TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]);
        let real = |xff: &[&str], fwd: &[&str]| {
            real_client(
                xff.iter().map(|l| l.as_bytes()),
                fwd.iter().map(|l| l.as_bytes()),
                &proxies,
            )
            .map(|ip| ip.to_string())
        };
        let some = |s: &str| Some(s.to_owned());
        // The client's spoofed entry (6.6.6.6) is left of the one the proxy appended.
        assert_eq!(real(&["6.6.6.6, 203.0.113.7"], &[]), some("203.0.113.7"));
        // Trusted hops on the right are skipped, over several lines too.
        assert_eq!(
            real(&["6.6.6.6, 203.0.113.7", "10.1.1.1,10.2.2.2"], &[]),
            some("203.0.113.7")
        );
        // All trusted: the leftmost.
        assert_eq!(real(&["10.9.9.9, 10.1.1.1"], &[]), some("10.9.9.9"));
        // Ports, brackets, IPv4-mapped addresses.
        assert_eq!(real(&["203.0.113.7:4711"], &[]), some("203.0.113.7"));
        assert_eq!(real(&["[2001:db8::7]:443"], &[]), some("2001:db8::7"));
        assert_eq!(real(&["::ffff:203.0.113.7"], &[]), some("203.0.113.7"));
        // Garbage ends the walk at the last address before it, never past it.
        assert_eq!(
            real(&["203.0.113.7, unknown, 10.1.1.1"], &[]),
            some("10.1.1.1")
        );
        assert_eq!(real(&["6.6.6.6, evil.test"], &[]), None);
        // Without X-Forwarded-For, RFC 7239's for= (quoted, bracketed, with a port).
        assert_eq!(
            real(
                &[],
                &[
                    "for=6.6.6.6, for=\"[2001:db8::7]:80\";proto=https",
                    "For=10.1.1.1"
                ]
            ),
            some("2001:db8::7")
        );
        assert_eq!(real(&[], &["for=_hidden;proto=https"]), None);
        assert_eq!(real(&[], &[]), None);
    }
}
