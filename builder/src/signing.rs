//! Capability URLs for the slug store.
//!
//! App pods must download their slug, and build Jobs must upload one, but neither may hold
//! the store's bearer token (which can overwrite and delete every slug of every app, and a
//! build runs the app's own code). So the component that holds the token (the git receiver)
//! hands out URLs carrying an HMAC-SHA256 over the access granted, the object path and an
//! optional expiry:
//!
//! - `GET /slugs/app/v1.tgz?sig=...`: read that object, forever. Release slug URLs look like
//!   this, because rolling back to a year-old release must still work.
//! - `PUT /slugs/app/v2.tgz?access=rw&expires=1767225600&sig=...`: read and write that
//!   object until the expiry: what a build Job gets for its slug and its cache.
//!
//! Such a URL grants exactly that object and nothing else; DELETE always needs the token.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;

use crate::digest::hex;

/// Query parameter holding the signature.
pub const SIG_PARAM: &str = "sig";
/// Query parameter holding the expiry, in seconds since the Unix epoch.
pub const EXPIRES_PARAM: &str = "expires";
/// Query parameter holding the access, `rw` (absent: read-only).
pub const ACCESS_PARAM: &str = "access";

/// What a capability URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET and HEAD.
    Read,
    /// GET, HEAD and PUT.
    ReadWrite,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "r",
            Self::ReadWrite => "rw",
        }
    }

    /// Whether this access includes `needed`.
    pub fn allows(self, needed: Access) -> bool {
        self == Self::ReadWrite || needed == Self::Read
    }
}

/// The query parameters of a capability URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capability<'a> {
    /// `sig`.
    pub sig: Option<&'a str>,
    /// `expires`, when present and a number (`Err` when present and garbage).
    pub expires: Option<Result<u64, ()>>,
    /// `access=rw`.
    pub read_write: bool,
}

impl<'a> Capability<'a> {
    /// Picks the capability parameters out of a query string.
    pub fn from_query(query: &'a str) -> Self {
        let mut c = Self::default();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some((SIG_PARAM, v)) => c.sig = Some(v),
                Some((EXPIRES_PARAM, v)) => c.expires = Some(v.parse().map_err(|_| ())),
                Some((ACCESS_PARAM, v)) => c.read_write = v == "rw",
                _ => {}
            }
        }
        c
    }
}

/// The secret that signs and verifies capability URLs.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// A key from secret bytes (the platform uses the store's token).
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn message(access: Access, path: &str, expires: Option<u64>) -> String {
        format!(
            "{}\n{path}\n{}",
            access.as_str(),
            expires.map(|e| e.to_string()).unwrap_or_default()
        )
    }

    /// The signature, in hex, granting `access` to `path` until `expires` (or forever).
    pub fn sign(&self, access: Access, path: &str, expires: Option<u64>) -> String {
        hex(hmac::sign(&self.0, Self::message(access, path, expires).as_bytes()).as_ref())
    }

    /// A capability URL for `path` (starting with `/`) in the store at `base`
    /// (e.g. `http://shelf.flynn-system.svc:8080`).
    pub fn signed_url(
        &self,
        base: &str,
        path: &str,
        access: Access,
        expires: Option<u64>,
    ) -> String {
        let mut url = format!("{}{path}?", base.trim_end_matches('/'));
        if access == Access::ReadWrite {
            url.push_str(&format!("{ACCESS_PARAM}=rw&"));
        }
        if let Some(e) = expires {
            url.push_str(&format!("{EXPIRES_PARAM}={e}&"));
        }
        url.push_str(&format!("{SIG_PARAM}={}", self.sign(access, path, expires)));
        url
    }

    /// Whether the capability `cap` grants `needed` on `path`, now.
    pub fn verify(&self, path: &str, needed: Access, cap: &Capability<'_>) -> bool {
        let Some(sig) = cap.sig.and_then(unhex) else {
            return false;
        };
        let expires = match cap.expires {
            None => None,
            Some(Ok(e)) if e >= unix_now() => Some(e),
            Some(_) => return false,
        };
        let granted = if cap.read_write {
            Access::ReadWrite
        } else {
            Access::Read
        };
        // ring compares in constant time.
        granted.allows(needed)
            && hmac::verify(
                &self.0,
                Self::message(granted, path, expires).as_bytes(),
                &sig,
            )
            .is_ok()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(url: &str) -> Capability<'_> {
        Capability::from_query(url.split_once('?').unwrap().1)
    }

    #[test]
    fn a_signature_grants_only_its_path() {
        let key = SigningKey::new(b"0123456789abcdef");
        let url = key.signed_url("http://s", "/slugs/a.tgz", Access::Read, None);
        assert!(key.verify("/slugs/a.tgz", Access::Read, &cap(&url)));
        assert!(!key.verify("/slugs/b.tgz", Access::Read, &cap(&url)));
        assert!(!SigningKey::new(b"another key").verify("/slugs/a.tgz", Access::Read, &cap(&url)));
        assert!(!key.verify(
            "/slugs/a.tgz",
            Access::Read,
            &Capability::from_query("sig=zz")
        ));
    }

    #[test]
    fn read_urls_cannot_write_and_cannot_be_upgraded() {
        let key = SigningKey::new(b"k");
        let read = key.signed_url("http://s", "/p", Access::Read, None);
        assert!(!key.verify("/p", Access::ReadWrite, &cap(&read)));
        let forged = read.replace("?sig", "?access=rw&sig");
        assert!(!key.verify("/p", Access::ReadWrite, &cap(&forged)));
        let rw = key.signed_url("http://s", "/p", Access::ReadWrite, None);
        assert!(key.verify("/p", Access::ReadWrite, &cap(&rw)));
        assert!(key.verify("/p", Access::Read, &cap(&rw)));
    }

    #[test]
    fn an_expired_or_extended_signature_is_refused() {
        let key = SigningKey::new(b"k");
        let past = unix_now() - 10;
        let url = key.signed_url("http://s", "/p", Access::Read, Some(past));
        assert!(!key.verify("/p", Access::Read, &cap(&url)));
        let future = unix_now() + 60;
        let url = key.signed_url("http://s/", "/p", Access::Read, Some(future));
        assert!(
            url.starts_with(&format!("http://s/p?expires={future}&sig=")),
            "{url}"
        );
        assert!(key.verify("/p", Access::Read, &cap(&url)));
        let extended = url.replace(&future.to_string(), &(future + 1).to_string());
        assert!(!key.verify("/p", Access::Read, &cap(&extended)));
        let without = format!("/p?sig={}", cap(&url).sig.unwrap());
        assert!(!key.verify("/p", Access::Read, &cap(&without)));
    }
}
