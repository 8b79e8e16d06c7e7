//! Parsing a backend's response head and deciding how its body is framed (RFC 9112 6.3).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, header};

use crate::hop;

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
    /// Both `Content-Length` and `Transfer-Encoding`: RFC 9112 6.1 lets a recipient drop
    /// the length, but a message that says two things about its end is how requests and
    /// responses are smuggled, and the router forwards framing as received: refused.
    #[error("Content-Length and Transfer-Encoding in one response")]
    LengthWithTransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 response (RFC 9112 6.1: 1.0 has no chunking; hyper
    /// refuses it too).
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
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
            let Some(len) = head_len(&mut resp, buf)? else {
                return Ok(None);
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
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        // Hop-by-hop headers are read for framing and keep-alive, and left out of the map:
        // the head is ready to forward as it is.
        let mut hop = Hop::default();
        let mut headers = HeaderMap::with_capacity(count);
        for &(ns, ne, vs, ve) in &spans[..count] {
            let (name, value) = (&head[ns..ne], &head[vs..ve]);
            if hop::is_hop_by_hop(name) {
                hop.read(name, value);
                // A protocol switch keeps its `Upgrade` and `Connection: upgrade`.
                if !(switching
                    && (name.eq_ignore_ascii_case(b"upgrade")
                        || name.eq_ignore_ascii_case(b"connection")))
                {
                    continue;
                }
            }
            let name = HeaderName::from_bytes(name).map_err(|_| {
                HeadError::InvalidHeader(String::from_utf8_lossy(name).into_owned())
            })?;
            if name == header::CONTENT_LENGTH {
                hop.content_length(value);
            }
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| HeadError::InvalidHeader(name.as_str().to_owned()))?;
            headers.append(name, value);
        }
        hop.check(version == Version::HTTP_10)?;
        if hop.names_others {
            // `Connection: x-foo` makes `x-foo` hop-by-hop too (rare: a second pass).
            for &(ns, ne, vs, ve) in &spans[..count] {
                if head[ns..ne].eq_ignore_ascii_case(b"connection") {
                    for token in hop::tokens(&head[vs..ve]) {
                        if let Ok(name) = HeaderName::from_bytes(token) {
                            headers.remove(name);
                        }
                    }
                }
            }
        }
        return Ok(Some(frame(status, version, headers, &hop, head_request)));
    }
}

/// Parses a response head from `buf` into `resp`: its length, or `None` if incomplete.
fn head_len<'b>(
    resp: &mut httparse::Response<'_, 'b>,
    buf: &'b [u8],
) -> Result<Option<usize>, HeadError> {
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HeadError::Malformed(e)),
    }
}

/// What a head's hop-by-hop and length headers say.
#[derive(Debug, Default)]
struct Hop {
    close: bool,
    keep_alive: bool,
    /// `Connection` names other headers, to be removed.
    names_others: bool,
    /// `Transfer-Encoding` is present; whether its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    content_length: Option<u64>,
    /// A `Content-Length` header is present (valid or not).
    length_header: bool,
    /// Its values are not one number.
    invalid_length: bool,
}

impl Hop {
    /// Refuses framing the router will not forward (see [`HeadError`]).
    fn check(&self, http10: bool) -> Result<(), HeadError> {
        match (self.transfer_encoding, self.length_header) {
            (Some(_), _) if http10 => Err(HeadError::TransferEncodingInHttp10),
            (Some(_), true) => Err(HeadError::LengthWithTransferEncoding),
            _ if self.invalid_length => Err(HeadError::InvalidContentLength),
            _ => Ok(()),
        }
    }

    fn read(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"connection") {
            for token in hop::tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if !token.eq_ignore_ascii_case(b"upgrade") {
                    self.names_others = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked when the last coding of the last line is (`chunked, ` is not: its last
            // element is empty), exactly as hyper's client decides, so that both clients
            // frame a body alike.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.transfer_encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }

    /// One `Content-Length` header: (possibly comma-listed) values that must all agree;
    /// [`Hop::check`] refuses the head if they do not.
    fn content_length(&mut self, value: &[u8]) {
        self.length_header = true;
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                self.invalid_length = true;
                return;
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if self.content_length.is_some_and(|l| l != n) {
                self.invalid_length = true;
                return;
            }
            self.content_length = Some(n);
        }
    }
}

/// Decides the body framing and keep-alive of a final response head.
fn frame(
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    hop: &Hop,
    head_request: bool,
) -> ResponseHead {
    let (framing, keep_alive) = framing(
        status.as_u16(),
        version == Version::HTTP_10,
        hop,
        head_request,
    );
    ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }
}

/// How the body of a final response ends, and whether its connection can be reused.
fn framing(status: u16, http10: bool, hop: &Hop, head_request: bool) -> (Framing, bool) {
    let mut keep_alive = if http10 { hop.keep_alive } else { !hop.close };
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else if let Some(chunked) = hop.transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112 6.3 item 3); only a final
        // `chunked` says where the body ends, anything else runs until the close.
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = hop.content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    (framing, keep_alive)
}

/// A final response head that was forwarded as bytes ([`parse_raw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHead {
    /// The status code.
    pub status: u16,
    /// How the body ends.
    pub framing: Framing,
    /// Whether the connection may carry another request once this body was read in full.
    pub keep_alive: bool,
}

/// [`parse`] for a proxy that forwards the head as bytes (the router's own HTTP/1 server):
/// on success `out` holds the client's head (an HTTP/1.1 status line and every header
/// except the hop-by-hop ones) without the blank line that ends it, so that the caller can
/// add headers. `Transfer-Encoding` and `Trailer` stay: the body is forwarded with its
/// framing, and any trailers, as received. Interim (1xx) responses are skipped; nothing is
/// written to `out` unless a final head is complete.
pub fn parse_raw(
    buf: &mut BytesMut,
    head_request: bool,
    out: &mut Vec<u8>,
) -> Result<Option<RawHead>, HeadError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let Some(len) = head_len(&mut resp, buf)? else {
            return Ok(None);
        };
        let status = resp.code.unwrap_or_default();
        if !(100..1000).contains(&status) {
            return Err(HeadError::Malformed(httparse::Error::Status));
        }
        if status < 200 {
            if status == 101 {
                return Err(HeadError::UnexpectedSwitch);
            }
            // Not forwarded, as in `parse`; the final response follows.
            let _ = buf.split_to(len);
            continue;
        }
        let mut hop = Hop::default();
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            if hop::is_hop_by_hop(name) {
                hop.read(name, h.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                hop.content_length(h.value);
            }
        }
        hop.check(resp.version == Some(0))?;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(&[
            b'0' + (status / 100) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
            b' ',
        ]);
        out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            let framing_header = name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"trailer");
            if (hop::is_hop_by_hop(name) && !framing_header)
                || (hop.names_others && connection_names(resp.headers, name))
            {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        let (framing, keep_alive) = framing(status, resp.version == Some(0), &hop, head_request);
        let _ = buf.split_to(len);
        return Ok(Some(RawHead {
            status,
            framing,
            keep_alive,
        }));
    }
}

/// Whether a `Connection` header among `headers` names `name` (making it hop-by-hop).
fn connection_names(headers: &[httparse::Header<'_>], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| hop::tokens(h.value))
        .any(|t| t.eq_ignore_ascii_case(name))
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
    fn framing_that_says_two_things_is_refused() {
        // Each refused head beside its valid twin, on both parsers.
        for (bad, good, why) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                HeadError::LengthWithTransferEncoding,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n",
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
                HeadError::LengthWithTransferEncoding,
            ),
            (
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                HeadError::TransferEncodingInHttp10,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ncontent-length: 8\r\n\r\n",
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ncontent-length: 9\r\n\r\n",
                HeadError::InvalidContentLength,
            ),
        ] {
            let mut buf = BytesMut::from(bad);
            assert_eq!(parse(&mut buf, false, false).unwrap_err(), why, "{bad:?}");
            let mut buf = BytesMut::from(bad);
            let e = parse_raw(&mut buf, false, &mut Vec::new()).unwrap_err();
            assert_eq!(e, why, "{bad:?}");
            let mut buf = BytesMut::from(good);
            assert!(parse(&mut buf, false, false).unwrap().is_some(), "{good:?}");
            let mut buf = BytesMut::from(good);
            assert!(
                parse_raw(&mut buf, false, &mut Vec::new())
                    .unwrap()
                    .is_some()
            );
        }
        let mut buf =
            BytesMut::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx: y\r\n\r\n");
        let mut out = Vec::new();
        let raw = parse_raw(&mut buf, false, &mut out).unwrap().unwrap();
        assert_eq!(raw.framing, Framing::Chunked);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx: y\r\n"
        );
        // Only a final `chunked` (of the last line, as hyper reads it) frames the body.
        for (te, framing) in [
            ("chunked, gzip", Framing::UntilClose),
            ("chunked, ", Framing::UntilClose),
            ("gzip, chunked", Framing::Chunked),
        ] {
            let (h, _) = parsed(
                &format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\n\r\n"),
                false,
            );
            assert_eq!(h.framing, framing, "{te}");
            assert_eq!(h.keep_alive, framing == Framing::Chunked);
        }
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
    fn hop_by_hop_headers_are_left_out() {
        let (h, _) = parsed(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
             X-Private: 1\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nUpgrade: h2c\r\n\
             Proxy-Authenticate: Basic\r\nX-Kept: 1\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        assert_eq!(
            h.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    /// `parse_raw` frames like `parse` and forwards the same headers, as bytes, plus the
    /// framing ones.
    #[test]
    fn raw_heads_keep_framing_headers_and_drop_other_hop_by_hop_ones() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Private\r\n\
             Keep-Alive: timeout=5\r\nX-Private: 1\r\nTransfer-Encoding: chunked\r\n\
             Trailer: x-sum\r\nProxy-Authenticate: Basic\r\nX-Kept: 1\r\n\r\nbody",
        );
        let mut out = Vec::new();
        let head = parse_raw(&mut buf, false, &mut out).unwrap().unwrap();
        assert_eq!(
            head,
            RawHead {
                status: 200,
                framing: Framing::Chunked,
                keep_alive: true
            }
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nX-Kept: 1\r\n"
        );
        assert_eq!(&buf[..], b"body");
        for (raw, head_request, want) in [
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n",
                false,
                (Framing::Length(3), false),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n",
                true,
                (Framing::Empty, true),
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                false,
                (Framing::Empty, true),
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                false,
                (Framing::UntilClose, false),
            ),
        ] {
            let mut buf = BytesMut::from(raw);
            let h = parse_raw(&mut buf, head_request, &mut Vec::new())
                .unwrap()
                .unwrap();
            assert_eq!((h.framing, h.keep_alive), want, "{raw:?}");
        }
        let mut out = b"untouched".to_vec();
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-le");
        assert!(parse_raw(&mut buf, false, &mut out).unwrap().is_none());
        assert_eq!(out, b"untouched");
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n");
        assert_eq!(
            parse_raw(&mut buf, false, &mut out).unwrap_err(),
            HeadError::InvalidContentLength
        );
        let mut buf = BytesMut::from("HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert_eq!(
            parse_raw(&mut buf, false, &mut out).unwrap_err(),
            HeadError::UnexpectedSwitch
        );
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
        assert_eq!(h.headers["upgrade"], "websocket");
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
