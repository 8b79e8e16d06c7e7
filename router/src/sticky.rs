//! Sticky sessions: a cookie naming the backend, signed so a client cannot aim at an
//! arbitrary address.
//!
//! The cookie is `flynn-sticky=<addr>.<tag>` with `tag` = hex of the first 16 bytes of
//! HMAC-SHA256(key, addr). Router replicas that share `--sticky-key` accept each other's
//! cookies. A cookie naming an endpoint that is no longer ready is ignored and replaced.

use std::net::SocketAddr;

use http::HeaderMap;
use ring::hmac;

/// The cookie's name.
pub const COOKIE: &str = "flynn-sticky";
const TAG_BYTES: usize = 16;

/// Signs and checks sticky cookies.
#[derive(Debug, Clone)]
pub struct Sticky {
    key: hmac::Key,
}

impl Sticky {
    /// A signer with `secret` (any length; 32 random bytes are plenty).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn tag(&self, addr: &str) -> String {
        let tag = hmac::sign(&self.key, addr.as_bytes());
        tag.as_ref()[..TAG_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The cookie value for `addr`.
    pub fn value(&self, addr: SocketAddr) -> String {
        let addr = addr.to_string();
        let tag = self.tag(&addr);
        format!("{addr}.{tag}")
    }

    /// A `Set-Cookie` header value pinning the client to `addr`.
    pub fn set_cookie(&self, addr: SocketAddr) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
            self.value(addr)
        )
    }

    /// The backend named by a valid sticky cookie in `headers`.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<SocketAddr> {
        self.from_cookies(
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
        )
    }

    /// The backend named by a valid sticky cookie among `Cookie` header values.
    pub fn from_cookies<'a>(&self, values: impl Iterator<Item = &'a [u8]>) -> Option<SocketAddr> {
        values
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .and_then(|(_, v)| self.verify(v))
    }

    /// The address in a cookie value, if its tag is right.
    pub fn verify(&self, value: &str) -> Option<SocketAddr> {
        let (addr, tag) = value.rsplit_once('.')?;
        let want = hmac::sign(&self.key, addr.as_bytes());
        let got: Vec<u8> = (0..tag.len())
            .step_by(2)
            .map(|i| {
                tag.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<_>>()?;
        // Compare without an early exit, so timing does not reveal a matching prefix.
        let want = &want.as_ref()[..TAG_BYTES];
        let diff = want.iter().zip(&got).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if got.len() != TAG_BYTES || diff != 0 {
            return None;
        }
        addr.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_round_trip_and_reject_forgeries() {
        let s = Sticky::new(b"secret");
        let addr: SocketAddr = "10.244.0.7:8080".parse().unwrap();
        let v = s.value(addr);
        assert_eq!(s.verify(&v), Some(addr));
        let forged = v.replace("10.244.0.7", "10.244.0.8");
        assert_eq!(s.verify(&forged), None);
        assert_eq!(Sticky::new(b"other").verify(&v), None);
        assert_eq!(s.verify("garbage"), None);
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("a=b; {COOKIE}={v}; c=d").parse().unwrap(),
        );
        assert_eq!(s.from_headers(&h), Some(addr));
        assert!(
            s.set_cookie(addr)
                .starts_with("flynn-sticky=10.244.0.7:8080.")
        );
    }
}
