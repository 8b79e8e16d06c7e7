//! OpenSSH public keys as the key registry stores them (gitreceiver/README.md): the
//! fingerprint `ssh-keygen -lf` prints, and the Secret name derived from the key blob.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::digest::{SHA256, digest};

/// One `authorized_keys`-style line: `ssh-ed25519 AAAA... comment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, ...
    pub algorithm: String,
    /// The decoded key blob (what fingerprints hash).
    pub blob: Vec<u8>,
    /// The comment after the key, often `user@host`; may be empty.
    pub comment: String,
}

/// Why a line is not a public key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("it is empty")]
    Empty,
    #[error("it is a private key (use the .pub file next to it)")]
    PrivateKey,
    #[error("{0:?} is not an SSH key type (expected e.g. ssh-ed25519 or ssh-rsa)")]
    UnknownType(String),
    #[error("the key data after {0} is missing")]
    NoData(String),
    #[error("the key data is not valid base64")]
    BadBase64,
    #[error("the key data says {inner:?} but the line says {outer:?}")]
    TypeMismatch { outer: String, inner: String },
}

impl PublicKey {
    /// Parses the first non-empty, non-comment line of a `.pub` file.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.contains("PRIVATE KEY") {
            return Err(KeyError::PrivateKey);
        }
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or(KeyError::Empty)?;
        let mut fields = line.split_whitespace();
        let algorithm = fields.next().ok_or(KeyError::Empty)?.to_owned();
        let known = algorithm.starts_with("ssh-")
            || algorithm.starts_with("ecdsa-sha2-")
            || algorithm.starts_with("sk-");
        if !known {
            return Err(KeyError::UnknownType(algorithm));
        }
        let data = fields
            .next()
            .ok_or_else(|| KeyError::NoData(algorithm.clone()))?;
        let blob = STANDARD.decode(data).map_err(|_| KeyError::BadBase64)?;
        // The blob starts with the key type as an SSH string (u32 length, bytes).
        let inner = blob
            .get(..4)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .and_then(|len| blob.get(4..4 + len))
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default();
        if inner != algorithm {
            return Err(KeyError::TypeMismatch {
                outer: algorithm,
                inner,
            });
        }
        Ok(PublicKey {
            algorithm,
            blob,
            comment: fields.collect::<Vec<_>>().join(" "),
        })
    }

    /// `SHA256:<unpadded base64 of sha256(blob)>`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(digest(&SHA256, &self.blob))
        )
    }

    /// The registry Secret's name: `key-` + the first 32 hex digits of sha256(blob).
    pub fn secret_name(&self) -> String {
        let hex: String = digest(&SHA256, &self.blob)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("key-{}", &hex[..32])
    }

    /// The normalized line stored in the Secret: `type base64 [comment]`.
    pub fn line(&self) -> String {
        let mut line = format!("{} {}", self.algorithm, STANDARD.encode(&self.blob));
        if !self.comment.is_empty() {
            line.push(' ');
            line.push_str(&self.comment);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `ssh-keygen -t ed25519 -C alice@laptop`; `ssh-keygen -lf` printed
    // `256 SHA256:X7DkcHCYtpLn0IvvXNX/bxwF3VHLGjW2M/cU2eIl96E alice@laptop (ED25519)`.
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeXkViPtiFektWYayOx67JDvpxURqdVPPUCOY0/Ij1q alice@laptop\n";

    #[test]
    fn fingerprints_match_ssh_keygen() {
        let key = PublicKey::parse(KEY).unwrap();
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert_eq!(key.comment, "alice@laptop");
        assert_eq!(
            key.fingerprint(),
            "SHA256:X7DkcHCYtpLn0IvvXNX/bxwF3VHLGjW2M/cU2eIl96E"
        );
        assert_eq!(key.line(), KEY.trim());
        assert_eq!(key.secret_name(), "key-5fb0e4707098b692e7d08bef5cd5ff6f");
    }

    #[test]
    fn bad_keys_say_why() {
        assert_eq!(PublicKey::parse(""), Err(KeyError::Empty));
        assert_eq!(
            PublicKey::parse("-----BEGIN OPENSSH PRIVATE KEY-----\nabc"),
            Err(KeyError::PrivateKey)
        );
        assert_eq!(
            PublicKey::parse("hello world"),
            Err(KeyError::UnknownType("hello".into()))
        );
        assert_eq!(PublicKey::parse("ssh-rsa !!!"), Err(KeyError::BadBase64));
        let mismatch = KEY.replace("ssh-ed25519 ", "ssh-rsa ");
        assert!(matches!(
            PublicKey::parse(&mismatch),
            Err(KeyError::TypeMismatch { .. })
        ));
    }
}
