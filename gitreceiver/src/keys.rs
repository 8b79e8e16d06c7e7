//! The SSH key registry: Secrets labelled `flynn.io/ssh-key=true` in the keys namespace
//! (format in the README), watched and indexed by key fingerprint.
//!
//! A malformed Secret is logged and left out; it never stops the watch. The index is
//! rebuilt from each (re)list, so a key whose Secret was deleted while the watch was down
//! does not linger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::Config};
use russh::keys::{HashAlg, PublicKey};

/// The label the registry watches.
pub const LABEL: &str = "flynn.io/ssh-key";
/// Annotation: the Kubernetes user name the key belongs to.
pub const USER_ANNOTATION: &str = "flynn.io/user";
/// Annotation: the user's groups, comma-separated.
pub const GROUPS_ANNOTATION: &str = "flynn.io/groups";
/// Data key: the `authorized_keys` line.
pub const PUBLIC_KEY_DATA: &str = "publicKey";

/// Who a registered key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The Secret that registered it.
    pub secret: String,
}

/// Why a key Secret was left out of the registry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("no data.{PUBLIC_KEY_DATA}")]
    NoKey,
    #[error("data.{PUBLIC_KEY_DATA} is not an OpenSSH public key: {0}")]
    BadKey(String),
    #[error("no {USER_ANNOTATION} annotation")]
    NoUser,
    #[error("the name should be {expected} (\"key-\" + 32 hex digits of the key blob's SHA-256)")]
    Name { expected: String },
}

/// The fingerprint of a key, `SHA256:<base64 without padding>`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The Secret name a key must be registered under: `key-` + 32 hex digits of the SHA-256 of
/// its wire-format blob.
pub fn secret_name(key: &PublicKey) -> Result<String, Malformed> {
    let blob = key
        .to_bytes()
        .map_err(|e| Malformed::BadKey(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &blob);
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("key-{hex}"))
}

/// Reads one key Secret.
pub fn parse_secret(secret: &Secret) -> Result<Identity, Malformed> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let line = secret
        .data
        .as_ref()
        .and_then(|d| d.get(PUBLIC_KEY_DATA))
        .ok_or(Malformed::NoKey)?;
    let line = std::str::from_utf8(&line.0).map_err(|e| Malformed::BadKey(e.to_string()))?;
    let key = PublicKey::from_openssh(line.trim()).map_err(|e| Malformed::BadKey(e.to_string()))?;
    let expected = secret_name(&key)?;
    if name != expected {
        return Err(Malformed::Name { expected });
    }
    let annotations = secret.metadata.annotations.as_ref();
    let user = annotations
        .and_then(|a| a.get(USER_ANNOTATION))
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .ok_or(Malformed::NoUser)?;
    let groups = annotations
        .and_then(|a| a.get(GROUPS_ANNOTATION))
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity {
        user: user.to_owned(),
        groups,
        fingerprint: fingerprint(&key),
        secret: name,
    })
}

/// The registry: fingerprint → identity, kept up to date by [`KeyRegistry::run`].
#[derive(Clone, Debug, Default)]
pub struct KeyRegistry {
    index: Arc<RwLock<HashMap<String, Identity>>>,
    synced: Arc<AtomicBool>,
}

impl KeyRegistry {
    /// Who `key` belongs to, if it is registered.
    pub fn lookup(&self, key: &PublicKey) -> Option<Identity> {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fingerprint(key))
            .cloned()
    }

    /// Who the key of an `authorized_keys` line belongs to, if it is registered.
    pub fn lookup_authorized_key(&self, line: &str) -> Option<Identity> {
        PublicKey::from_openssh(line.trim())
            .ok()
            .and_then(|k| self.lookup(&k))
    }

    /// Whether the first list has been read.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// How many keys are registered.
    pub fn len(&self) -> usize {
        self.index.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Watches `api` (the keys namespace) until the stream ends (it retries with backoff on
    /// errors, so only when the task is dropped).
    pub async fn run(self, api: Api<Secret>) {
        let config = Config::default().labels(&format!("{LABEL}=true"));
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        // Objects of the list in progress: swapped in whole at InitDone.
        let mut relist: HashMap<String, Identity> = HashMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => relist.clear(),
                Ok(Event::InitApply(secret)) => {
                    if let Some(id) = accept(&secret) {
                        relist.insert(id.fingerprint.clone(), id);
                    }
                }
                Ok(Event::InitDone) => {
                    let count = relist.len();
                    *self.index.write().unwrap_or_else(|e| e.into_inner()) =
                        std::mem::take(&mut relist);
                    self.synced.store(true, Ordering::Relaxed);
                    tracing::info!(keys = count, "SSH key registry synced");
                }
                Ok(Event::Apply(secret)) => {
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                    // The Secret may have changed its key or become malformed: drop its
                    // old entry first.
                    index.retain(|_, id| id.secret != name);
                    if let Some(id) = accept(&secret) {
                        tracing::info!(user = %id.user, fingerprint = %id.fingerprint, "SSH key registered");
                        index.insert(id.fingerprint.clone(), id);
                    }
                }
                Ok(Event::Delete(secret)) => {
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    self.index
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|_, id| id.secret != name);
                    tracing::info!(secret = %name, "SSH key removed");
                }
                Err(e) => tracing::warn!(error = %e, "watching SSH key Secrets (retrying)"),
            }
        }
    }
}

fn accept(secret: &Secret) -> Option<Identity> {
    match parse_secret(secret) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(
                secret = secret.metadata.name.as_deref().unwrap_or_default(),
                namespace = secret.metadata.namespace.as_deref().unwrap_or_default(),
                "ignoring SSH key Secret: {e}"
            );
            None
        }
    }
}

/// Builds the Secret that registers `authorized_key` for `user` (what `flynn key add`
/// writes; used by tests and the benchmark).
pub fn key_secret(authorized_key: &str, user: &str, groups: &[&str]) -> Result<Secret, Malformed> {
    let key = PublicKey::from_openssh(authorized_key.trim())
        .map_err(|e| Malformed::BadKey(e.to_string()))?;
    Ok(Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name(&key)?),
            labels: Some([(LABEL.to_owned(), "true".to_owned())].into()),
            annotations: Some(
                [
                    (USER_ANNOTATION.to_owned(), user.to_owned()),
                    (GROUPS_ANNOTATION.to_owned(), groups.join(",")),
                    ("flynn.io/fingerprint".to_owned(), fingerprint(&key)),
                ]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("flynn.io/ssh-public-key".into()),
        data: Some(
            [(
                PUBLIC_KEY_DATA.to_owned(),
                k8s_openapi::ByteString(authorized_key.trim().as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ssh-keygen -t ed25519 -N '' -C test`; fingerprint from `ssh-keygen -lf`.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8m/vQ2Bai31pEuezN5yQAgpeLKGULPYB6z7N8YQ7KA test";
    const FINGERPRINT: &str = "SHA256:iz7HUYEa5xQ+eZngtaMurswJemtQKkD/rtCGqtumI+M";

    #[test]
    fn round_trips_what_key_add_writes() {
        let secret =
            key_secret(KEY, "alice@example.com", &["dev", "system:authenticated"]).unwrap();
        let id = parse_secret(&secret).unwrap();
        assert_eq!(id.user, "alice@example.com");
        assert_eq!(id.groups, ["dev", "system:authenticated"]);
        assert_eq!(id.fingerprint, FINGERPRINT);
        assert!(id.secret.starts_with("key-") && id.secret.len() == 36);
    }

    #[test]
    fn malformed_secrets_say_why() {
        let good = key_secret(KEY, "alice", &[]).unwrap();

        let mut s = good.clone();
        s.metadata.name = Some("key-0000".into());
        assert!(matches!(parse_secret(&s), Err(Malformed::Name { .. })));

        let mut s = good.clone();
        s.data = None;
        assert_eq!(parse_secret(&s), Err(Malformed::NoKey));

        let mut s = good.clone();
        s.data.as_mut().unwrap().insert(
            PUBLIC_KEY_DATA.into(),
            k8s_openapi::ByteString(b"ssh-ed25519 garbage".to_vec()),
        );
        assert!(matches!(parse_secret(&s), Err(Malformed::BadKey(_))));

        let mut s = good;
        s.metadata.annotations = None;
        assert_eq!(parse_secret(&s), Err(Malformed::NoUser));
    }
}
