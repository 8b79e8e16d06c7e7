//! Decoding a `Transfer-Encoding: chunked` body (RFC 9112 7.1) straight out of the
//! connection's read buffer: data is cut from the buffer, not copied.
//!
//! Strict: the router forwards a backend's chunked body (and trailers) as received, so
//! anything a downstream parser could read differently is refused instead (a 502, or a
//! body cut off): a bare LF anywhere in the framing (chunk-size lines, trailer lines),
//! chunk extensions that are not `;name[=token|"quoted"]`, trailer lines that are not
//! `name: value` (obs-fold, no colon, control characters). Whitespace after the size
//! (RFC 9112's BWS) is accepted, as hyper does.

use bytes::{Bytes, BytesMut};

/// Longest chunk extension or trailer section accepted (bytes). Extensions are dropped;
/// [`ChunkedDecoder::decode`] keeps the trailers ([`ChunkedDecoder::take_trailers`]).
const MAX_SKIPPED: usize = 64 * 1024;

/// Why a chunked body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk size that is not hex, is empty, or does not fit in 64 bits.
    #[error("invalid chunk size")]
    InvalidSize,
    /// A chunk not followed by CRLF, or a bare LF.
    #[error("invalid chunk framing")]
    InvalidFraming,
    /// Chunk extensions or trailers longer than we keep reading.
    #[error("chunk extensions or trailers over {MAX_SKIPPED} bytes")]
    TooLong,
    /// A chunk extension that is not `;name[=value]` (token or quoted-string).
    #[error("invalid chunk extension")]
    InvalidExtension,
    /// A trailer line that is not `name: value` (obs-fold, no colon, control characters,
    /// a bare LF).
    #[error("invalid trailer field")]
    InvalidTrailer,
}

/// What [`ChunkedDecoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer ran out: read more and call again.
    NeedMore,
    /// The last chunk and trailers were read: the body is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    /// Whitespace after the size digits.
    SizeWs,
    /// After `;` (and whitespace): the extension's name.
    ExtBeforeName,
    ExtName,
    /// After the name: whitespace, `=`, `;` or CR.
    ExtAfterName,
    /// After `=` (and whitespace): a token or a quoted string.
    ExtBeforeValue,
    ExtToken,
    ExtQuoted,
    /// After `\` in a quoted string.
    ExtQuotedPair,
    /// After the value: whitespace, `;` or CR.
    ExtAfterValue,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    /// A trailer field's name.
    TrailerLine,
    /// A trailer field's value (after the colon).
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// What [`ChunkedDecoder::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes from the start of the scanned slice that belong to the body.
    pub body: usize,
    /// The body ends after them.
    pub done: bool,
}

/// The position within a chunked body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The current chunk's size while reading it, then what is left of its data.
    size: u64,
    digits: u8,
    /// Bytes of extensions or trailers skipped so far.
    skipped: usize,
    /// The trailer section's lines, as received (`decode` only).
    trailers: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            skipped: 0,
            trailers: Vec::new(),
        }
    }
}

impl ChunkedDecoder {
    /// Consumes framing from the front of `buf` until it yields data, needs more bytes or
    /// finds the end. Extensions are skipped; trailer fields are kept for
    /// [`take_trailers`](Self::take_trailers).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            if self.state == State::Done {
                return Ok(Decoded::End);
            }
            if self.state == State::Data {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            let Some(&b) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            let _ = buf.split_to(1);
            let was = self.state;
            self.state = self.step(b)?;
            // Each trailer line with its CRLF; not the blank line that ends the body.
            if matches!(
                self.state,
                State::TrailerLine | State::TrailerValue | State::TrailerLf
            ) || (was == State::TrailerLf && self.state == State::TrailerStart)
            {
                self.trailers.push(b);
            }
        }
    }

    /// The trailer fields of a body [`decode`](Self::decode) read to its end; `None` when
    /// there were none, or when they are not valid header fields (the body itself is fine,
    /// so they are dropped rather than failing it).
    pub fn take_trailers(&mut self) -> Option<http::HeaderMap> {
        if self.state != State::Done || self.trailers.is_empty() {
            return None;
        }
        let mut raw = std::mem::take(&mut self.trailers);
        raw.extend_from_slice(b"\r\n");
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let httparse::Status::Complete((_, fields)) =
            httparse::parse_headers(&raw, &mut fields).ok()?
        else {
            return None;
        };
        let mut map = http::HeaderMap::with_capacity(fields.len());
        for f in fields {
            let name = http::HeaderName::from_bytes(f.name.as_bytes()).ok()?;
            let value = http::HeaderValue::from_bytes(f.value).ok()?;
            map.append(name, value);
        }
        Some(map)
    }

    /// Walks the chunked body at the front of `buf` without changing it, for a proxy that
    /// forwards the framing (and trailers) as received: how many of `buf`'s bytes belong to
    /// the body, and whether the body ends there. Call again with the bytes that follow.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Scanned, ChunkedError> {
        let mut at = 0;
        while at < buf.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let n = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(buf.len() - at);
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    at += n;
                }
                _ => {
                    self.state = self.step(buf[at])?;
                    at += 1;
                }
            }
        }
        Ok(Scanned {
            body: at,
            done: self.state == State::Done,
        })
    }

    /// One framing byte.
    fn step(&mut self, b: u8) -> Result<State, ChunkedError> {
        use State::*;
        let ws = b == b' ' || b == b'\t';
        let next = match (self.state, b) {
            (Size, b) if b.is_ascii_hexdigit() => {
                if self.digits == 16 {
                    return Err(ChunkedError::InvalidSize);
                }
                self.digits += 1;
                self.size = self.size << 4 | u64::from(hex(b));
                Size
            }
            (Size | SizeWs, _) if self.digits == 0 => return Err(ChunkedError::InvalidSize),
            (Size | SizeWs, b' ' | b'\t') => SizeWs,
            (Size | SizeWs, b';') => ExtBeforeName,
            (Size | SizeWs, b'\r') => SizeLf,
            (Size | SizeWs, _) => return Err(ChunkedError::InvalidSize),
            // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
            (ExtBeforeName, _) if ws => ExtBeforeName,
            (ExtBeforeName | ExtName, b) if is_tchar(b) => ExtName,
            (ExtName | ExtAfterName, _) if ws => ExtAfterName,
            (ExtName | ExtAfterName, b'=') => ExtBeforeValue,
            (ExtName | ExtAfterName | ExtToken | ExtAfterValue, b';') => ExtBeforeName,
            (ExtName | ExtAfterName | ExtToken | ExtAfterValue, b'\r') => SizeLf,
            (ExtBeforeValue, _) if ws => ExtBeforeValue,
            (ExtBeforeValue, b'"') => ExtQuoted,
            (ExtBeforeValue | ExtToken, b) if is_tchar(b) => ExtToken,
            (ExtToken | ExtAfterValue, _) if ws => ExtAfterValue,
            (ExtQuoted, b'"') => ExtAfterValue,
            (ExtQuoted, b'\\') => ExtQuotedPair,
            (ExtQuoted | ExtQuotedPair, b) if ws || is_vchar_or_obs(b) => ExtQuoted,
            (
                ExtBeforeName | ExtName | ExtAfterName | ExtBeforeValue | ExtToken | ExtQuoted
                | ExtQuotedPair | ExtAfterValue,
                _,
            ) => return Err(ChunkedError::InvalidExtension),
            (SizeLf, b'\n') => {
                self.digits = 0;
                if self.size == 0 { TrailerStart } else { Data }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            // field-line = field-name ":" OWS field-value OWS; no obs-fold (a line that
            // starts with whitespace), no bare LF.
            (TrailerStart | TrailerLine, b) if is_tchar(b) => TrailerLine,
            (TrailerLine, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, b) if ws || is_vchar_or_obs(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (TrailerStart | TrailerLine | TrailerValue | TrailerLf, _) => {
                return Err(ChunkedError::InvalidTrailer);
            }
            (EndLf, b'\n') => Done,
            _ => return Err(ChunkedError::InvalidFraming),
        };
        if matches!(
            next,
            ExtBeforeName
                | ExtName
                | ExtAfterName
                | ExtBeforeValue
                | ExtToken
                | ExtQuoted
                | ExtQuotedPair
                | ExtAfterValue
                | TrailerLine
                | TrailerValue
        ) {
            self.skipped += 1;
            if self.skipped > MAX_SKIPPED {
                return Err(ChunkedError::TooLong);
            }
        }
        Ok(next)
    }
}

/// RFC 9110 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Visible ASCII or obs-text (what a field value or quoted string may hold besides
/// whitespace).
fn is_vchar_or_obs(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the body or the error.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, BytesMut), ChunkedError> {
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::End => return Ok((body, buf)),
                Decoded::NeedMore => {
                    assert!(fed < input.len(), "input ended mid-body");
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let input = b"5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (body, rest) = decode_all(input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn trailers_are_kept_apart_and_what_follows_is_left() {
        let (body, rest) =
            decode_all(b"3\r\nabc\r\n0\r\nx-sum: 1\r\nx-b: 2\r\n\r\nNEXT", 100).unwrap();
        assert_eq!(body, b"abc");
        assert_eq!(&rest[..], b"NEXT");

        // In any split, the trailer fields come out whole, after the body.
        let input = b"3\r\nabc\r\n0\r\nx-sum: 1\r\nx-b: 2\r\nx-b: 3\r\n\r\n";
        for step in [1, 2, 5, input.len()] {
            let mut d = ChunkedDecoder::default();
            let mut buf = BytesMut::new();
            for piece in input.chunks(step) {
                buf.extend_from_slice(piece);
                while let Decoded::Data(_) = d.decode(&mut buf).unwrap() {}
            }
            assert_eq!(d.decode(&mut buf).unwrap(), Decoded::End);
            let t = d.take_trailers().expect("trailers");
            assert_eq!(t["x-sum"], "1", "step {step}");
            let b: Vec<_> = t.get_all("x-b").iter().collect();
            assert_eq!(b, ["2", "3"], "step {step}");
        }
        // None when there are none, and none before the end.
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n"[..]);
        while let Decoded::Data(_) = d.decode(&mut buf).unwrap() {}
        assert_eq!(d.take_trailers(), None);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::End);
        assert_eq!(d.take_trailers(), None);
    }

    #[test]
    fn scans_in_any_split_and_stops_at_the_end() {
        let input =
            b"5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\n";
        let mut with_next = input.to_vec();
        with_next.extend_from_slice(b"NEXT");
        for step in [1, 2, 3, 7, with_next.len()] {
            let mut d = ChunkedDecoder::default();
            let mut at = 0;
            let end = loop {
                let piece = &with_next[at..(at + step).min(with_next.len())];
                let s = d.scan(piece).unwrap();
                at += s.body;
                if s.done {
                    break at;
                }
                assert_eq!(s.body, piece.len(), "step {step}: stopped early");
            };
            assert_eq!(end, input.len(), "step {step}");
        }
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.scan(b"3\r\nabc").unwrap(),
            Scanned {
                body: 6,
                done: false
            }
        );
        assert_eq!(d.scan(b"X\r\n").unwrap_err(), ChunkedError::InvalidFraming);
    }

    /// What a downstream parser could read differently is refused, each beside its valid
    /// twin, on both the decoding and the scanning path.
    #[test]
    fn framing_a_strict_parser_refuses() {
        for (bad, good, why) in [
            // A bare LF inside a trailer section: one field to us, two to a lenient parser.
            (
                &b"3\r\nabc\r\n0\r\nx-a: 1\nx-b: 2\r\n\r\n"[..],
                &b"3\r\nabc\r\n0\r\nx-a: 1\r\nx-b: 2\r\n\r\n"[..],
                ChunkedError::InvalidTrailer,
            ),
            // A trailer section ended by bare LFs.
            (
                b"3\r\nabc\r\n0\r\nx-a: 1\n\n",
                b"3\r\nabc\r\n0\r\nx-a: 1\r\n\r\n",
                ChunkedError::InvalidTrailer,
            ),
            // obs-fold in a trailer.
            (
                b"3\r\nabc\r\n0\r\nx-a: 1\r\n folded\r\n\r\n",
                b"3\r\nabc\r\n0\r\nx-a: 1 folded\r\n\r\n",
                ChunkedError::InvalidTrailer,
            ),
            // A trailer line without a colon, and one with a control character.
            (
                b"3\r\nabc\r\n0\r\nnocolon\r\n\r\n",
                b"3\r\nabc\r\n0\r\nno: colon\r\n\r\n",
                ChunkedError::InvalidTrailer,
            ),
            (
                b"3\r\nabc\r\n0\r\nx: a\x01b\r\n\r\n",
                b"3\r\nabc\r\n0\r\nx: a\x80b\r\n\r\n",
                ChunkedError::InvalidTrailer,
            ),
            // A bare LF ending a chunk-size line, with and without an extension.
            (
                b"3\nabc\r\n0\r\n\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
                ChunkedError::InvalidSize,
            ),
            (
                b"3;a=b\nabc\r\n0\r\n\r\n",
                b"3;a=b\r\nabc\r\n0\r\n\r\n",
                ChunkedError::InvalidExtension,
            ),
            // Extensions that are not `;name[=token|quoted]`.
            (
                b"3;\r\nabc\r\n0\r\n\r\n",
                b"3;n\r\nabc\r\n0\r\n\r\n",
                ChunkedError::InvalidExtension,
            ),
            (
                b"3;a=b c\r\nabc\r\n0\r\n\r\n",
                b"3 ; a = \"b c\" ; d\r\nabc\r\n0\r\n\r\n",
                ChunkedError::InvalidExtension,
            ),
            (
                b"3;a=\"b\r\nabc\r\n0\r\n\r\n",
                b"3;a=\"b\\\"\"\r\nabc\r\n0\r\n\r\n",
                ChunkedError::InvalidExtension,
            ),
            (
                b"3;a\x00\r\nabc\r\n0\r\n\r\n",
                b"3;a\r\nabc\r\n0\r\n\r\n",
                ChunkedError::InvalidExtension,
            ),
            // Whitespace then anything but `;` or CR after the size.
            (
                b"3 x\r\nabc\r\n0\r\n\r\n",
                b"3 \r\nabc\r\n0\r\n\r\n",
                ChunkedError::InvalidSize,
            ),
        ] {
            assert_eq!(decode_all(bad, 100).unwrap_err(), why, "{bad:?}");
            assert_eq!(ChunkedDecoder::default().scan(bad).unwrap_err(), why);
            let (body, _) = decode_all(good, 100).unwrap();
            assert_eq!(body, b"abc", "{good:?}");
            let s = ChunkedDecoder::default().scan(good).unwrap();
            assert!(s.done && s.body == good.len(), "{good:?}");
        }
    }

    #[test]
    fn malformed_bodies() {
        for (bad, want) in [
            (&b"x\r\n"[..], ChunkedError::InvalidSize),
            (b"\r\n", ChunkedError::InvalidSize),
            (b"11111111111111111\r\n", ChunkedError::InvalidSize),
            (b"3\r\nabcX\r\n", ChunkedError::InvalidFraming),
            (b"3\nabc\r\n", ChunkedError::InvalidSize),
            (b"3\r\nabc\r\n0\r\n\n", ChunkedError::InvalidTrailer),
        ] {
            assert_eq!(decode_all(bad, 100).unwrap_err(), want, "{bad:?}");
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_SKIPPED + 1));
        assert_eq!(
            decode_all(long.as_bytes(), 1000).unwrap_err(),
            ChunkedError::TooLong
        );
    }
}
