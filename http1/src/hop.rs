//! Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection and are not forwarded.
//! The one list of them, for every path of the router: its own client's response heads
//! and server's request heads, and hyper's requests and responses (`HeaderMap`s).

/// Headers that are hop-by-hop whatever `Connection` says (`upgrade` is kept for a protocol
/// switch, by the caller).
pub const NAMES: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` (any case) is one of [`NAMES`].
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // Cheap first cut on length: most headers are none of these.
    matches!(name.len(), 2 | 7 | 10 | 16 | 17 | 18 | 19)
        && NAMES
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a `Connection` token names a header to strip beyond [`NAMES`]. `keep-alive` and
/// `upgrade`, the usual tokens, name headers [`NAMES`] already covers (`Upgrade` is kept for a
/// protocol switch): skipping them saves building a header name for each.
pub fn names_other_header(token: &[u8]) -> bool {
    !token.eq_ignore_ascii_case(b"keep-alive") && !token.eq_ignore_ascii_case(b"upgrade")
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for n in NAMES {
            assert!(is_hop_by_hop(n.as_bytes()), "{n}");
            assert!(is_hop_by_hop(n.to_uppercase().as_bytes()), "{n}");
        }
        for n in ["content-length", "host", "x-te", "trailers", "connections"] {
            assert!(!is_hop_by_hop(n.as_bytes()), "{n}");
        }
        assert!(names_other_header(b"x-private"));
        assert!(!names_other_header(b"Keep-Alive"));
        assert!(!names_other_header(b"UPGRADE"));
        assert_eq!(
            tokens(b" close, ,Keep-Alive ").collect::<Vec<_>>(),
            [&b"close"[..], b"Keep-Alive"]
        );
    }
}
