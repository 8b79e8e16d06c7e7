//! Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection and are not forwarded.

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
        assert_eq!(
            tokens(b" close, ,Keep-Alive ").collect::<Vec<_>>(),
            [&b"close"[..], b"Keep-Alive"]
        );
    }
}
