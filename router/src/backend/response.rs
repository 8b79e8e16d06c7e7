//! Parsing a backend's response head and deciding how its body is framed (RFC 9112 6.3).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, header};

/// Headers accepted in one response head (hyper's client default too).
pub const MAX_HEADERS: usize = 100;

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all: a response to HEAD, 1xx, 204 and 304.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// A parsed final (non-1xx) response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The headers as sent; values point into the head's bytes (no copy).
    pub headers: HeaderMap,
    /// How the body ends.
    pub framing: Framing,
    /// Whether the connection may carry another request once this body was read in full.
    pub keep_alive: bool,
}

/// Why a response head was refused (the client gets a 502 naming it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x syntax.
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// A header name or value the `http` crate refuses.
    #[error("invalid header {0:?} in the response")]
    InvalidHeader(String),
    /// `Content-Length` is not a number, or several disagree.
    #[error("invalid Content-Length in the response")]
    InvalidContentLength,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("101 Switching Protocols to a request without Upgrade")]
    UnexpectedSwitch,
}

/// Parses the response head at the start of `buf`, skipping interim (1xx) responses.
///
/// `Ok(None)`: the head is not complete yet, read more. On success the head's bytes are
/// removed from `buf`, which then starts with the body. `head_request`: the request was
/// HEAD, so the response has no body whatever its headers say. `upgrade`: the request
/// asked for a protocol switch, so a `101` is the final response.
pub fn parse(
    buf: &mut BytesMut,
    head_request: bool,
    upgrade: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        // Where each header's name and value lie in `buf`, so that the values can be cut
        // from the frozen head afterwards instead of copied one by one.
        let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
        let (len, code, minor, count) = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            let len = match resp.parse(buf) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(HeadError::Malformed(e)),
            };
            let base = buf.as_ptr() as usize;
            let mut count = 0;
            for (h, span) in resp.headers.iter().zip(spans.iter_mut()) {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                *span = (name, name + h.name.len(), value, value + h.value.len());
                count += 1;
            }
            (
                len,
                resp.code.unwrap_or_default(),
                resp.version.unwrap_or(1),
                count,
            )
        };
        let status = StatusCode::from_u16(code)
            .map_err(|_| HeadError::Malformed(httparse::Error::Status))?;
        if status.is_informational() && !(status == StatusCode::SWITCHING_PROTOCOLS && upgrade) {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(HeadError::UnexpectedSwitch);
            }
            // 100 Continue, 103 Early Hints, ...: not forwarded (hyper's client drops them
            // too); the final response follows on the same connection.
            let _ = buf.split_to(len);
            continue;
        }
        let head: Bytes = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| {
                HeadError::InvalidHeader(String::from_utf8_lossy(&head[ns..ne]).into_owned())
            })?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| HeadError::InvalidHeader(name.as_str().to_owned()))?;
            headers.append(name, value);
        }
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        return Ok(Some(frame(status, version, headers, head_request)?));
    }
}

/// Decides the body framing and keep-alive of a final response head.
fn frame(
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    head_request: bool,
) -> Result<ResponseHead, HeadError> {
    let mut keep_alive = match version {
        Version::HTTP_10 => connection_has(&headers, "keep-alive"),
        _ => !connection_has(&headers, "close"),
    };
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length (RFC 9112 6.3 item 3); only a final
        // `chunked` says where the body ends, anything else runs until the close.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        if last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        Framing::Length(content_length(&headers)?)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    })
}

/// The one value of (possibly repeated, possibly comma-listed) `Content-Length` headers.
fn content_length(headers: &HeaderMap) -> Result<u64, HeadError> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::InvalidContentLength);
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::InvalidContentLength);
            }
            length = Some(n);
        }
    }
    length.ok_or(HeadError::InvalidContentLength)
}

/// Whether a `Connection` header lists `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str, head_request: bool) -> (ResponseHead, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let head = parse(&mut buf, head_request, false).unwrap().unwrap();
        (head, buf)
    }

    #[test]
    fn content_length_bodies() {
        let (h, rest) = parsed(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
            false,
        );
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&rest[..], b"hello");
        // Repeated identical values are one length; differing ones are refused.
        let (h, _) = parsed(
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Length(3));
        for bad in ["3, 4", "-1", "", "0x10", "99999999999999999999"] {
            let raw = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            let mut buf = BytesMut::from(raw.as_str());
            assert_eq!(
                parse(&mut buf, false, false).unwrap_err(),
                HeadError::InvalidContentLength,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn chunked_overrides_content_length() {
        let (h, _) = parsed(
            "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        let (h, _) = parsed(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
    }

    #[test]
    fn close_delimited_bodies() {
        let (h, rest) = parsed("HTTP/1.1 200 OK\r\nx: y\r\n\r\nsome", false);
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        assert_eq!(&rest[..], b"some");
        let (h, _) = parsed("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
        assert_eq!(h.version, Version::HTTP_10);
        assert!(!h.keep_alive, "HTTP/1.0 closes unless told otherwise");
        let (h, _) = parsed(
            "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
        let (h, _) = parsed(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!h.keep_alive);
    }

    #[test]
    fn heads_without_bodies() {
        let (h, _) = parsed("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty, "response to HEAD");
        assert_eq!(h.headers["content-length"], "100");
        assert!(h.keep_alive);
        for status in [204, 304] {
            let (h, _) = parsed(&format!("HTTP/1.1 {status} X\r\n\r\n"), false);
            assert_eq!(h.framing, Framing::Empty, "{status}");
            assert!(h.keep_alive);
        }
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (h, rest) = parsed(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
             HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
            false,
        );
        assert_eq!(h.status, StatusCode::CREATED);
        assert!(!h.headers.contains_key("link"));
        assert_eq!(&rest[..], b"ok");
        // An interim response alone: wait for more.
        let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\n");
        assert!(parse(&mut buf, false, false).unwrap().is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn switching_protocols_only_when_asked() {
        let raw = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        let mut buf = BytesMut::from(raw);
        assert_eq!(
            parse(&mut buf, false, false).unwrap_err(),
            HeadError::UnexpectedSwitch
        );
        let mut buf = BytesMut::from(raw);
        let h = parse(&mut buf, false, true).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn partial_and_malformed_heads() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-le");
        assert!(parse(&mut buf, false, false).unwrap().is_none());
        assert_eq!(buf.len(), 27, "nothing consumed");
        for bad in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "garbage\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            let e = parse(&mut buf, false, false).unwrap_err();
            assert!(matches!(e, HeadError::Malformed(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().starts_with("malformed response head"));
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_str());
        assert_eq!(
            parse(&mut buf, false, false).unwrap_err(),
            HeadError::Malformed(httparse::Error::TooManyHeaders)
        );
    }
}
