//! Which `Host` values the router accepts (RFC 9112 3.2), on both of its servers.
//!
//! An HTTP/1.1 request without `Host`, with two, with one that is not `host[:port]`, or
//! whose absolute-form target names another authority, gets a 400. Only a host that passed
//! [`valid_host`] is ever put into a response (the HTTPS redirect's `Location`, the 404
//! body), so a client cannot make the router reflect markup, a path or a second URL.

/// Why a request's `Host` was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// HTTP/1.1 without `Host`.
    #[error("the request has no Host header (HTTP/1.1 requires one)")]
    Missing,
    /// More than one `Host` header.
    #[error("the request has more than one Host header")]
    Several,
    /// Not `host[:port]`.
    #[error(
        "the Host header is not a valid host[:port] (a DNS name, an IPv4 address or a \
         bracketed IPv6 address, then an optional port)"
    )]
    Invalid,
    /// An absolute-form target (or HTTP/2 `:authority`) that names another host than `Host`.
    #[error("the request target's authority and the Host header differ")]
    Disagrees,
}

impl HostError {
    /// The body of the 400: what was wrong; the value itself is never echoed.
    pub fn body(self) -> String {
        format!("400 Bad Request: {self}\n")
    }
}

/// Whether `host` is `name[:port]` where `name` is a DNS-style name (letters, digits, `-`,
/// `.`, `_`) or IPv4 address, or `[IPv6]`, and `port` at most 5 digits. Stricter than RFC
/// 3986's reg-name (no percent-encoding, no sub-delims such as `'`, `(` or `;`): no Route can
/// name such a host, and refusing them keeps anything but a host name out of the
/// responses that echo it.
pub fn valid_host(host: &[u8]) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b"x"[..], port),
            _ => return false,
        }
    } else {
        match host.iter().position(|&b| b == b':') {
            Some(at) => (&host[..at], &host[at + 1..]),
            None => (host, &b""[..]),
        }
    };
    !name.is_empty()
        && name.len() <= 253
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
}

/// The host of a request (HTTP/1.1 or HTTP/2, as hyper gives it): the one `Host` header,
/// which must agree with the target's authority (absolute-form, HTTP/2 `:authority`) if
/// there is one; without `Host`, the authority; for HTTP/1.0 with neither, `""` (no Route
/// matches it: a 404).
pub fn request_host<B>(req: &http::Request<B>) -> Result<&str, HostError> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Several);
    }
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = match (header, authority) {
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_bytes()) => {
            return Err(HostError::Disagrees);
        }
        (Some(h), _) => h.to_str().map_err(|_| HostError::Invalid)?,
        (None, Some(a)) if req.version() != http::Version::HTTP_11 => a,
        (None, _) if req.version() == http::Version::HTTP_11 => return Err(HostError::Missing),
        (None, _) => return Ok(""),
    };
    if valid_host(host.as_bytes()) {
        Ok(host)
    } else {
        Err(HostError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for good in [
            "example.com",
            "EXAMPLE.com:8080",
            "a_b.test",
            "10.0.0.1",
            "10.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "x:",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "evil.com/path",
            "evil.com@x",
            "a b",
            "\"><script>",
            "x:80:80",
            "x:123456",
            "x:8o",
            "[::1",
            "[::1]x",
            "[zz]",
            "[]",
            ":80",
            "x%2f",
            "x\\y",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn request_hosts() {
        let req = |uri: &str, hosts: &[&str], version| {
            let mut b = http::Request::builder().uri(uri).version(version);
            for h in hosts {
                b = b.header("host", *h);
            }
            b.body(()).unwrap()
        };
        use http::Version as V;
        assert_eq!(
            request_host(&req("/", &["x.test"], V::HTTP_11)),
            Ok("x.test")
        );
        assert_eq!(
            request_host(&req("http://x.test/", &["X.test"], V::HTTP_11)),
            Ok("X.test")
        );
        assert_eq!(
            request_host(&req("http://x.test/", &["evil.test"], V::HTTP_11)),
            Err(HostError::Disagrees)
        );
        assert_eq!(
            request_host(&req("/", &["a", "b"], V::HTTP_11)),
            Err(HostError::Several)
        );
        assert_eq!(
            request_host(&req("/", &[], V::HTTP_11)),
            Err(HostError::Missing)
        );
        assert_eq!(
            request_host(&req("http://x.test/", &[], V::HTTP_11)),
            Err(HostError::Missing)
        );
        assert_eq!(request_host(&req("/", &[], V::HTTP_10)), Ok(""));
        assert_eq!(
            request_host(&req("https://x.test/", &[], V::HTTP_2)),
            Ok("x.test")
        );
        assert_eq!(
            request_host(&req("/", &["x/y"], V::HTTP_11)),
            Err(HostError::Invalid)
        );
        assert!(HostError::Invalid.body().starts_with("400 Bad Request: "));
    }
}
