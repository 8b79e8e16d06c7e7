//! Reading a client's request head and deciding whether the router's own server serves it.

use httparse::Header;

use crate::host::{HostError, valid_host};

/// Headers accepted in one request head (hyper's server allows as many).
pub const MAX_HEADERS: usize = 100;

/// A request head the router's own server serves: HTTP/1.1, origin-form, one `Host`, and
/// nothing after the head (no body, no upgrade, no `Expect`).
#[derive(Debug)]
pub struct Head<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The origin-form target (`/path?query`).
    pub target: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    /// Every header, in order, names in the client's case.
    pub headers: &'a [Header<'a>],
    /// The client did not ask to close the connection after this request.
    pub keep_alive: bool,
    /// The client (or an outer proxy) sent an `X-Request-Id`.
    pub has_request_id: bool,
}

impl Head<'_> {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// A HEAD request: the response has no body, whatever its headers say.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// RFC 9110 9.2.1: a proxy may repeat a safe request the client did not see fail
    /// ([`crate::method::is_safe`]).
    pub fn is_safe(&self) -> bool {
        crate::method::is_safe(self.method)
    }

    /// The values of its `Cookie` headers.
    pub fn cookies(&self) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .map(|h| h.value)
    }

    /// Its headers as (name, value) bytes.
    pub fn header_bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|h| (h.name.as_bytes(), h.value))
    }
}

/// What a buffered request head is.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// Served here; the head is this many bytes.
    Serve(Head<'a>, usize),
    /// Not complete yet: read more.
    Partial,
    /// Given to hyper with the rest of the connection: requests with a body, upgrades,
    /// `Expect`, HTTP/1.0, absolute-form targets, and heads that are not valid HTTP/1
    /// (hyper answers those with the right 4xx).
    Hand,
    /// An HTTP/1.1 origin-form request whose `Host` is missing, repeated or malformed
    /// (RFC 9112 3.2): answered with a 400 here, and the connection closed.
    Refuse(HostError),
}

/// Whether `buf` holds the blank line that ends a head (CRLF or bare LF line ends), without
/// parsing it. `from`: bytes already searched by an earlier call on the same head.
pub fn head_complete(buf: &[u8], from: &mut usize) -> bool {
    let start = from.saturating_sub(2);
    for at in memchr::memchr_iter(b'\n', &buf[start..]) {
        let rest = &buf[start + at + 1..];
        if rest.first() == Some(&b'\n') || rest.starts_with(b"\r\n") {
            return true;
        }
    }
    *from = buf.len();
    false
}

/// Bytes an origin-form target may hold as the router forwards it (RFC 3986 `pchar`, `/`,
/// `?`): a target with anything else (a fragment, `{`, `"`, `\`, non-ASCII, ...) goes to
/// hyper, whose URI parser decides it (it drops a fragment, refuses some), so that both
/// servers forward a target alike (`tests/differential.rs`).
const TARGET: [bool; 256] = {
    let mut t = [false; 256];
    let ok = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:@/?";
    let mut i = 0;
    while i < ok.len() {
        t[ok[i] as usize] = true;
        i += 1;
    }
    t
};

fn plain_target(target: &[u8]) -> bool {
    target.iter().all(|&b| TARGET[b as usize])
}

/// Parses the head at the start of `buf` into `headers`.
pub fn parse<'a>(buf: &'a [u8], headers: &'a mut [Header<'a>; MAX_HEADERS]) -> Parsed<'a> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hand,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Hand;
    };
    if method == "CONNECT" || !target.starts_with('/') || !plain_target(target.as_bytes()) {
        return Parsed::Hand;
    }
    let mut host = None;
    let mut keep_alive = true;
    let mut has_request_id = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if host.is_some() {
                    return Parsed::Refuse(HostError::Several);
                }
                // Valid hosts are ASCII.
                match std::str::from_utf8(h.value) {
                    Ok(v) if valid_host(h.value) => host = Some(v),
                    _ => return Parsed::Refuse(HostError::Invalid),
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => return Parsed::Hand,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Parsed::Hand,
            10 if name.eq_ignore_ascii_case(b"connection")
                && crate::hop::tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close")) =>
            {
                keep_alive = false;
            }
            12 if name.eq_ignore_ascii_case(b"x-request-id") => has_request_id = true,
            // `Content-Length: 0` is a body of nothing; any other length is a body.
            14 if name.eq_ignore_ascii_case(b"content-length") && h.value.trim_ascii() != b"0" => {
                return Parsed::Hand;
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => return Parsed::Hand,
            _ => {}
        }
    }
    let Some(host) = host else {
        return Parsed::Refuse(HostError::Missing);
    };
    Parsed::Serve(
        Head {
            method,
            target,
            host,
            headers: req.headers,
            keep_alive,
            has_request_id,
        },
        len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(raw: &str) -> Option<(String, String, bool, bool, usize)> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse(raw.as_bytes(), &mut headers) {
            Parsed::Serve(h, len) => Some((
                h.path().to_owned(),
                h.host.to_owned(),
                h.keep_alive,
                h.has_request_id,
                len,
            )),
            Parsed::Partial => panic!("partial: {raw:?}"),
            Parsed::Hand | Parsed::Refuse(_) => None,
        }
    }

    #[test]
    fn bodiless_http11_requests_are_served_here() {
        let raw = "GET /a/b?q=1 HTTP/1.1\r\nHost: x.test\r\nX-Request-Id: r1\r\n\r\nNEXT";
        assert_eq!(
            served(raw),
            Some(("/a/b".into(), "x.test".into(), true, true, raw.len() - 4))
        );
        let raw = "DELETE / HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            served(raw),
            Some(("/".into(), "x".into(), false, false, raw.len()))
        );
        // Bare LF line ends.
        assert!(served("GET / HTTP/1.1\nhost: x\n\n").is_some());
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for raw in [
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            "PUT / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.0\r\nhost: x\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nhost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(served(raw), None, "{raw:?}");
        }
    }

    /// RFC 9112 3.2, beside a valid twin of each.
    #[test]
    fn bad_hosts_are_refused_here() {
        let refused = |raw: &str| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match parse(raw.as_bytes(), &mut headers) {
                Parsed::Refuse(e) => Some(e),
                _ => None,
            }
        };
        for (bad, good, why) in [
            (
                "GET / HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1\r\nhost: b\r\n\r\n",
                HostError::Missing,
            ),
            (
                "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
                "GET / HTTP/1.1\r\nhost: a\r\nx-host: b\r\n\r\n",
                HostError::Several,
            ),
            (
                "GET / HTTP/1.1\r\nhost: evil.test/x?\r\n\r\n",
                "GET / HTTP/1.1\r\nhost: evil.test\r\n\r\n",
                HostError::Invalid,
            ),
            (
                "GET / HTTP/1.1\r\nhost: xé\r\n\r\n",
                "GET / HTTP/1.1\r\nhost: xe\r\n\r\n",
                HostError::Invalid,
            ),
        ] {
            assert_eq!(refused(bad), Some(why), "{bad:?}");
            assert!(served(good).is_some(), "{good:?}");
        }
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let raw = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        for split in 1..raw.len() {
            let mut from = 0;
            let mut complete = false;
            for end in [split, raw.len()] {
                complete = head_complete(&raw[..end], &mut from);
                if end < raw.len() {
                    assert!(!complete, "complete after {end} bytes");
                }
            }
            assert!(complete, "split at {split}");
        }
        assert!(head_complete(b"GET / HTTP/1.1\nhost: x\n\n", &mut 0));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nhost: x\r\n", &mut 0));
    }
}
