//! Responses the server writes itself (408, 431, 400 for a refused `Host`), and the
//! caller's own (404, 502, the HTTPS redirect), in one encoding.

use http::{HeaderValue, StatusCode};

/// Appends a plain-text HTTP/1.1 response to `out`: `status`, `body`, a `Location` if
/// `location` is a valid header value (it is left out otherwise), and `Connection: close`
/// if `close`.
pub fn encode_text(
    out: &mut Vec<u8>,
    status: StatusCode,
    body: &str,
    location: Option<&str>,
    close: bool,
) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(location) = location.filter(|l| HeaderValue::from_str(l).is_ok()) {
        let _ = write!(out, "location: {location}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_responses() {
        let mut out = Vec::new();
        encode_text(
            &mut out,
            StatusCode::PERMANENT_REDIRECT,
            "moved\n",
            Some("https://x.test/a?b"),
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 308 Permanent Redirect\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 6\r\nlocation: https://x.test/a?b\r\nconnection: close\r\n\r\nmoved\n"
        );
        // A location that would split the head is left out, beside a valid twin above.
        let mut out = Vec::new();
        encode_text(
            &mut out,
            StatusCode::PERMANENT_REDIRECT,
            "",
            Some("https://x.test/\r\nset-cookie: a=b"),
            false,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("location"), "{out}");
        assert!(!out.contains("set-cookie"), "{out}");
    }
}
