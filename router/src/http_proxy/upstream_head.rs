//! The request head a backend gets: hop-by-hop headers ([`flynn_http1::hop`]) left out,
//! the forwarding headers written afresh or extended ([`crate::forwarded`] decides whom to
//! believe), `X-Request-Id` and `X-Request-Start` ([`super::request_stamp`]). Two ways to
//! the same bytes: a one-pass write from the client's head for requests without a body
//! ([`encode_forwarded`]), and a `HeaderMap` rewrite for hyper's client
//! ([`prepare_request`]); `tests::forwarded_heads_match_prepared_requests` holds them equal.

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Uri, Version,
    header::{self, HOST},
    uri::PathAndQuery,
};

use flynn_http1::hop;

use super::{
    ConnInfo,
    request_stamp::{request_id, request_start},
};
use crate::forwarded::{ClientHeader, Forwarding, TrustedProxies, classify, real_client};

/// The forwarding header values of one downstream connection, built once per connection
/// (not per request): a request clones them, which only bumps a reference count.
#[derive(Debug, Clone)]
pub struct ForwardHeaders {
    /// The client's address (`X-Forwarded-For`, appended to a trusted proxy's chain).
    pub(crate) client_ip: HeaderValue,
    /// `for=<client>` of the `Forwarded` element the router adds (RFC 7239 6: an IPv6
    /// address is quoted and bracketed).
    pub(crate) forwarded_for: HeaderValue,
    /// `X-Forwarded-Port`.
    pub(crate) port: HeaderValue,
    /// `X-Forwarded-Proto`.
    pub(crate) proto: HeaderValue,
    /// The peer is a trusted proxy (`--trusted-proxies`): the forwarding headers it sends
    /// are kept (and extended), not replaced.
    pub(crate) trusted: bool,
    /// The trusted proxies, to find the client in a trusted proxy's chain (`X-Real-IP`).
    pub(crate) proxies: TrustedProxies,
}

impl ForwardHeaders {
    /// The values for requests arriving on `conn`; the forwarding headers of its requests
    /// are believed only if its peer is in `trusted`.
    pub fn new(conn: &ConnInfo, trusted: &TrustedProxies) -> Self {
        let peer = conn.peer.ip().to_canonical();
        let ip = peer.to_string();
        let forwarded_for = match peer {
            std::net::IpAddr::V4(_) => format!("for={ip}"),
            std::net::IpAddr::V6(_) => format!("for=\"[{ip}]\""),
        };
        let value = |s: String| {
            HeaderValue::from_maybe_shared(Bytes::from(s))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        };
        Self {
            client_ip: value(ip),
            forwarded_for: value(forwarded_for),
            port: HeaderValue::from(conn.local_port),
            proto: HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
            trusted: trusted.contains(peer),
            proxies: trusted.clone(),
        }
    }
}

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub(crate) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");

/// An HTTP/1.1 protocol switch (`Connection: upgrade` + `Upgrade`).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Writes the head [`prepare_request`] would make of `req` (no upgrade), without touching the
/// request ([`encode_forwarded`] over its headers).
pub(crate) fn encode_forwarded_head<B>(
    out: &mut Vec<u8>,
    req: &Request<B>,
    fwd: &ForwardHeaders,
    id: Option<&HeaderValue>,
    start: &HeaderValue,
) {
    // Backends get origin-form (`/path?query`), whatever form the client used.
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let headers = || {
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    encode_forwarded(
        out,
        req.method().as_str(),
        target,
        authority,
        headers,
        fwd,
        id,
        start,
    );
}

/// Writes the head of a request without a body as the backend gets it, in one pass over the
/// client's headers (names in any case; `headers` makes an iterator over them): hop-by-hop
/// headers (and those `Connection` names) are skipped, the forwarding headers
/// ([`write_forwarding`]), `X-Request-Id` (`id`, when the client sent none) and
/// `X-Request-Start` are written after the client's headers. `authority` becomes the
/// `Host` header when the client sent none (HTTP/2's `:authority`, an absolute-form target).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_forwarded<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>>(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    authority: Option<&str>,
    headers: impl Fn() -> I,
    fwd: &ForwardHeaders,
    id: Option<&HeaderValue>,
    start: &HeaderValue,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // HTTP/1 backends need a Host header.
    let mut host: &[u8] = b"";
    if let Some(authority) = authority
        && !headers().any(|(n, _)| n.eq_ignore_ascii_case(b"host"))
    {
        host = authority.as_bytes();
        line(out, b"host", host);
    }
    // Headers a `Connection` header names are hop-by-hop too (allocates only if there are).
    let named: Vec<&[u8]> = headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| hop::tokens(v))
        .filter(|t| hop::names_other_header(t))
        .collect();
    // What a trusted proxy said (allocates only if it said something).
    let mut prior = Prior::default();
    for (name, value) in headers() {
        if hop::is_hop_by_hop(name) || named.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            continue;
        }
        match classify(name) {
            ClientHeader::Ordinary => {}
            ClientHeader::Forwarding(kind) => {
                // An untrusted client's are dropped: the router writes its own below.
                if fwd.trusted {
                    prior.add(kind, value);
                }
                continue;
            }
            ClientHeader::Claim if fwd.trusted => {}
            ClientHeader::Claim | ClientHeader::Underscore => continue,
        }
        if name.eq_ignore_ascii_case(b"x-request-start") {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            host = value;
        }
        line(out, name, value);
    }
    write_forwarding(out, fwd, host, &prior);
    if let Some(id) = id {
        line(out, b"x-request-id", id.as_bytes());
    }
    line(out, b"x-request-start", start.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The forwarding headers a trusted proxy sent, in order.
#[derive(Debug, Default)]
pub(crate) struct Prior<'a> {
    /// `X-Forwarded-For` and `Forwarded` values: every line, joined.
    chains: Vec<(Forwarding, &'a [u8])>,
    /// The first `X-Forwarded-Proto`, `-Host`, `-Port`.
    proto: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    port: Option<&'a [u8]>,
}

impl<'a> Prior<'a> {
    fn add(&mut self, kind: Forwarding, value: &'a [u8]) {
        // Only visible ASCII is passed on (a value `http` would refuse is dropped).
        if value.is_empty()
            || !value
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return;
        }
        match kind {
            Forwarding::For | Forwarding::Forwarded => self.chains.push((kind, value)),
            Forwarding::Proto => {
                self.proto.get_or_insert(value);
            }
            Forwarding::Host => {
                self.host.get_or_insert(value);
            }
            Forwarding::Port => {
                self.port.get_or_insert(value);
            }
            // Not read: a proxy may pass a client's own on (the chain decides).
            Forwarding::RealIp => {}
        }
    }

    /// The lines of one chain header, in order.
    fn lines(&self, kind: Forwarding) -> impl DoubleEndedIterator<Item = &'a [u8]> + Clone {
        self.chains
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|&(_, v)| v)
    }

    /// The values of one chain header, each followed by `, `.
    fn chain(&self, kind: Forwarding, out: &mut Vec<u8>) {
        for v in self.lines(kind) {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

/// Writes `X-Forwarded-For`, `-Proto`, `-Host`, `-Port`, `Forwarded` and `X-Real-IP` for a
/// request with `host` (already validated) from `fwd`'s connection: set from the peer, the
/// listener and `host`; for a trusted proxy (`prior` holds what it sent), its chains
/// extended by the peer, its `X-Forwarded-Proto/Host/Port` kept, and `X-Real-IP` the client
/// its chain names ([`real_client`]).
pub(crate) fn write_forwarding(
    out: &mut Vec<u8>,
    fwd: &ForwardHeaders,
    host: &[u8],
    prior: &Prior<'_>,
) {
    out.extend_from_slice(b"x-forwarded-for: ");
    prior.chain(Forwarding::For, out);
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    line(
        out,
        b"x-forwarded-proto",
        prior.proto.unwrap_or(fwd.proto.as_bytes()),
    );
    if let Some(host) = prior.host.or((!host.is_empty()).then_some(host)) {
        line(out, b"x-forwarded-host", host);
    }
    line(
        out,
        b"x-forwarded-port",
        prior.port.unwrap_or(fwd.port.as_bytes()),
    );
    out.extend_from_slice(b"forwarded: ");
    prior.chain(Forwarding::Forwarded, out);
    out.extend_from_slice(fwd.forwarded_for.as_bytes());
    if !host.is_empty() {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host);
        out.push(b'"');
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(fwd.proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"x-real-ip: ");
    match fwd
        .trusted
        .then(|| {
            real_client(
                prior.lines(Forwarding::For),
                prior.lines(Forwarding::Forwarded),
                &fwd.proxies,
            )
        })
        .flatten()
    {
        Some(ip) => {
            use std::io::Write as _;
            let _ = write!(out, "{ip}");
        }
        None => out.extend_from_slice(fwd.client_ip.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

/// Rewrites a downstream request into the request sent to the backend.
pub(crate) fn prepare_request<B>(req: &mut Request<B>, fwd: &ForwardHeaders, upgrade: bool) {
    // HTTP/2 carries the host in `:authority`; HTTP/1 backends need a Host header.
    if !req.headers().contains_key(HOST)
        && let Some(authority) = req.uri().authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(HOST, v);
    }
    // Backends get origin-form (`/path?query`), whatever form the client used.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;

    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    // The same headers as `encode_forwarded` writes, by the same code: the client's
    // forwarding headers (and the claims and underscore names it may not send) are taken
    // out, and what `write_forwarding` makes of them (and of the connection) put in.
    let mut written = Vec::new();
    // Allocates only when the client sent any.
    let mut drop: Vec<HeaderName> = Vec::new();
    {
        let mut prior = Prior::default();
        for (name, value) in headers.iter() {
            match classify(name.as_str().as_bytes()) {
                ClientHeader::Ordinary => continue,
                ClientHeader::Forwarding(kind) if fwd.trusted => prior.add(kind, value.as_bytes()),
                ClientHeader::Claim if fwd.trusted => continue,
                ClientHeader::Forwarding(_) | ClientHeader::Claim | ClientHeader::Underscore => {}
            }
            // A name with several values comes once per value: removed once.
            if drop.last() != Some(name) {
                drop.push(name.clone());
            }
        }
        let host = headers.get(HOST).map_or(&b""[..], HeaderValue::as_bytes);
        write_forwarding(&mut written, fwd, host, &prior);
        written.extend_from_slice(b"\r\n");
    }
    for name in &drop {
        headers.remove(name);
    }
    let written = Bytes::from(written);
    let mut fields = [httparse::EMPTY_HEADER; 6];
    if let Ok(httparse::Status::Complete((_, fields))) =
        httparse::parse_headers(&written, &mut fields)
    {
        for f in fields.iter() {
            let at = f.value.as_ptr() as usize - written.as_ptr() as usize;
            // The static names: no allocation per header.
            let ClientHeader::Forwarding(kind) = classify(f.name.as_bytes()) else {
                continue;
            };
            let name = match kind {
                Forwarding::For => &X_FORWARDED_FOR,
                Forwarding::Proto => &X_FORWARDED_PROTO,
                Forwarding::Host => &X_FORWARDED_HOST,
                Forwarding::Port => &X_FORWARDED_PORT,
                Forwarding::Forwarded => &FORWARDED,
                Forwarding::RealIp => &X_REAL_IP,
            };
            if let Ok(value) = HeaderValue::from_maybe_shared(written.slice(at..at + f.value.len()))
            {
                headers.append(name.clone(), value);
            }
        }
    }
    // Keep a request id the client (or an outer proxy) set, so one id follows the request.
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), request_id());
    }
    // Heroku's format: milliseconds since the epoch, for queue-time measurements.
    headers.insert(X_REQUEST_START.clone(), request_start());
}

/// Removes hop-by-hop headers, including those a `Connection` header names. For an upgrade,
/// `Upgrade` (and the `Connection: upgrade` set afterwards) must pass.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers listed in `Connection` are hop-by-hop too. The usual tokens, `keep-alive` and
    // `upgrade`, name headers that are removed (or, for an upgrade, kept) below anyway: they
    // are skipped without building a `HeaderName` (an allocation for `keep-alive`).
    let mut named: Vec<HeaderName> = Vec::new();
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| hop::tokens(v.as_bytes()))
        .filter(|t| hop::names_other_header(t))
    {
        if let Ok(name) = HeaderName::from_bytes(token) {
            named.push(name);
        }
    }
    for name in &named {
        headers.remove(name);
    }
    for name in hop::NAMES {
        // An upgrade keeps `Upgrade` (its `Connection: upgrade` is set afterwards).
        if !(upgrade && name == "upgrade") {
            headers.remove(name);
        }
    }
}
