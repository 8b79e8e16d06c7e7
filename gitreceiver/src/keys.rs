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

pub use flynn_crds::ssh_key::{
    EXPIRES as EXPIRES_ANNOTATION, GROUPS as GROUPS_ANNOTATION, LABEL,
    OLD_GROUPS as OLD_GROUPS_ANNOTATION, PUBLIC_KEY as PUBLIC_KEY_DATA, USER as USER_ANNOTATION,
};
use k8s_openapi::jiff::Timestamp;

/// Who a registered key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Exactly the list the key's Secret holds: what the SubjectAccessReview receives.
    pub groups: Vec<String>,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The Secret that registered it.
    pub secret: String,
    /// When the key stops working, if it does.
    pub expires: Option<Timestamp>,
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
    #[error("{GROUPS_ANNOTATION}: {0}")]
    Groups(#[from] flynn_crds::ssh_key::GroupError),
    #[error("{0}")]
    Expires(String),
    /// The first format's comma-joined groups, which a comma in a group name could forge:
    /// not read. The key is known (so its owner is told what to do), not usable.
    #[error(
        "it has the comma-separated {OLD_GROUPS_ANNOTATION} of an older flynn and no {GROUPS_ANNOTATION}"
    )]
    OldFormat { fingerprint: String },
}

/// Why a registered key may not log in; `Display` is the line its owner reads.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unusable {
    #[error(
        "your SSH key {fingerprint} expired at {at}: renew it with `flynn key add --expires 90d <its .pub file>`, or add a new key with `flynn key add`"
    )]
    Expired { fingerprint: String, at: Timestamp },
    #[error(
        "your SSH key {fingerprint} was registered by an older flynn, whose format is no longer read: register it again with `flynn key remove {fingerprint}` and `flynn key add <its .pub file>`"
    )]
    OldFormat { fingerprint: String },
}

/// What the registry knows of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Identity),
    /// Registered, but not usable (its owner is told why once the key is proven theirs).
    Unusable(Unusable),
    Unknown,
}

/// An entry of the index: the Secret it comes from, and the identity, or `None` for a key
/// in the old format (kept, so its owner learns why it fails).
#[derive(Clone, Debug)]
struct Entry {
    secret: String,
    identity: Option<Identity>,
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
    let groups = match (
        annotations.and_then(|a| a.get(GROUPS_ANNOTATION)),
        annotations.and_then(|a| a.get(OLD_GROUPS_ANNOTATION)),
    ) {
        (Some(list), _) => flynn_crds::ssh_key::decode_groups(list)?,
        (None, Some(_)) => {
            return Err(Malformed::OldFormat {
                fingerprint: fingerprint(&key),
            });
        }
        (None, None) => Vec::new(),
    };
    let expires = annotations
        .and_then(|a| a.get(EXPIRES_ANNOTATION))
        .map(|e| flynn_crds::ssh_key::parse_expires(e).map_err(Malformed::Expires))
        .transpose()?;
    Ok(Identity {
        user: user.to_owned(),
        groups,
        fingerprint: fingerprint(&key),
        secret: name,
        expires,
    })
}

/// The registry: fingerprint → identity, kept up to date by [`KeyRegistry::run`]. Every
/// authentication reads it, so a changed or deleted key Secret takes effect on the next
/// connection; it holds the user and groups the Secret says, which change only when the
/// Secret does (`flynn key add` again).
#[derive(Clone, Debug, Default)]
pub struct KeyRegistry {
    index: Arc<RwLock<HashMap<String, Entry>>>,
    synced: Arc<AtomicBool>,
}

impl KeyRegistry {
    /// What the registry knows of `key` at `now`.
    pub fn lookup_at(&self, key: &PublicKey, now: Timestamp) -> Lookup {
        let fp = fingerprint(key);
        match self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fp)
        {
            None => Lookup::Unknown,
            Some(Entry {
                identity: Some(id), ..
            }) => match id.expires {
                Some(at) if at <= now => Lookup::Unusable(Unusable::Expired {
                    fingerprint: fp,
                    at,
                }),
                _ => Lookup::Found(id.clone()),
            },
            Some(Entry { identity: None, .. }) => {
                Lookup::Unusable(Unusable::OldFormat { fingerprint: fp })
            }
        }
    }

    /// Who `key` belongs to, if it is registered and usable now.
    pub fn lookup(&self, key: &PublicKey) -> Option<Identity> {
        match self.lookup_at(key, Timestamp::now()) {
            Lookup::Found(id) => Some(id),
            _ => None,
        }
    }

    /// Who the key of an `authorized_keys` line belongs to, if it is registered.
    pub fn lookup_authorized_key(&self, line: &str) -> Option<Identity> {
        PublicKey::from_openssh(line.trim())
            .ok()
            .and_then(|k| self.lookup(&k))
    }

    /// What the registry knows of the key of an `authorized_keys` line, now.
    pub fn lookup_authorized_key_entry(&self, line: &str) -> Lookup {
        match PublicKey::from_openssh(line.trim()) {
            Ok(k) => self.lookup_at(&k, Timestamp::now()),
            Err(_) => Lookup::Unknown,
        }
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
        let mut relist: HashMap<String, Entry> = HashMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => relist.clear(),
                Ok(Event::InitApply(secret)) => {
                    if let Some((fp, entry)) = accept(&secret) {
                        relist.insert(fp, entry);
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
                    let before = index
                        .values()
                        .find(|e| e.secret == name)
                        .and_then(|e| e.identity.as_ref())
                        .map(|id| id.user.clone());
                    // The Secret may have changed its key or become malformed: drop its
                    // old entry first.
                    index.retain(|_, e| e.secret != name);
                    if let Some((fp, entry)) = accept(&secret) {
                        if let Some(id) = &entry.identity {
                            match before {
                                // A key's Secret is named for its key, so one key has one
                                // Secret: this is the only way a key changes hands. The
                                // admission policy lets only cluster admins do it; say so
                                // loudly, for whoever reads the log after a surprise.
                                Some(old) if old != id.user => tracing::warn!(
                                    secret = %name, fingerprint = %id.fingerprint,
                                    from = %old, to = %id.user,
                                    "SSH key moved to another user: its pushes are {}'s now",
                                    id.user
                                ),
                                _ => {
                                    tracing::info!(user = %id.user, fingerprint = %id.fingerprint, "SSH key registered")
                                }
                            }
                        }
                        index.insert(fp, entry);
                    }
                }
                Ok(Event::Delete(secret)) => {
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    self.index
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|_, e| e.secret != name);
                    tracing::info!(secret = %name, "SSH key removed");
                }
                Err(e) => tracing::warn!(error = %e, "watching SSH key Secrets (retrying)"),
            }
        }
    }
}

/// The index entry of a key Secret: a usable identity, or a key known to be in the old
/// format (kept, so its owner learns why it fails). Anything else is logged and left out.
fn accept(secret: &Secret) -> Option<(String, Entry)> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    match parse_secret(secret) {
        Ok(id) => Some((
            id.fingerprint.clone(),
            Entry {
                secret: name,
                identity: Some(id),
            },
        )),
        Err(e) => {
            tracing::warn!(
                secret = %name,
                namespace = secret.metadata.namespace.as_deref().unwrap_or_default(),
                "ignoring SSH key Secret: {e}"
            );
            match e {
                Malformed::OldFormat { fingerprint } => Some((
                    fingerprint,
                    Entry {
                        secret: name,
                        identity: None,
                    },
                )),
                _ => None,
            }
        }
    }
}

/// Builds the Secret that registers `authorized_key` for `user` (what `flynn key add`
/// writes; used by tests and the benchmark).
pub fn key_secret(authorized_key: &str, user: &str, groups: &[&str]) -> Result<Secret, Malformed> {
    key_secret_expiring(authorized_key, user, groups, None)
}

/// [`key_secret`], with an expiry.
pub fn key_secret_expiring(
    authorized_key: &str,
    user: &str,
    groups: &[&str],
    expires: Option<Timestamp>,
) -> Result<Secret, Malformed> {
    let key = PublicKey::from_openssh(authorized_key.trim())
        .map_err(|e| Malformed::BadKey(e.to_string()))?;
    let mut annotations: std::collections::BTreeMap<String, String> = [
        (USER_ANNOTATION.to_owned(), user.to_owned()),
        (
            GROUPS_ANNOTATION.to_owned(),
            flynn_crds::ssh_key::encode_groups(groups)?,
        ),
        (
            flynn_crds::ssh_key::FINGERPRINT.to_owned(),
            fingerprint(&key),
        ),
    ]
    .into();
    if let Some(at) = expires {
        annotations.insert(EXPIRES_ANNOTATION.to_owned(), at.to_string());
    }
    Ok(Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name(&key)?),
            labels: Some([(LABEL.to_owned(), "true".to_owned())].into()),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some(flynn_crds::ssh_key::SECRET_TYPE.into()),
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

    #[test]
    fn groups_are_read_as_the_exact_list() {
        // The attack on the first format: one group whose name holds a comma. It stays one
        // group; its twin with two real groups reads as two.
        let attack = key_secret(KEY, "mallory", &["devs,system:masters"]).unwrap();
        assert_eq!(
            parse_secret(&attack).unwrap().groups,
            ["devs,system:masters"]
        );
        let twin = key_secret(KEY, "alice", &["devs", "system:authenticated"]).unwrap();
        assert_eq!(
            parse_secret(&twin).unwrap().groups,
            ["devs", "system:authenticated"]
        );
        // A newline in a group name cannot be written one per line: refused.
        assert!(matches!(
            key_secret(KEY, "mallory", &["devs\nsystem:masters"]),
            Err(Malformed::Groups(_))
        ));
    }

    #[test]
    fn a_key_in_the_comma_joined_format_is_not_read_and_its_owner_is_told() {
        let mut s = key_secret(KEY, "mallory", &[]).unwrap();
        let a = s.metadata.annotations.as_mut().unwrap();
        a.remove(GROUPS_ANNOTATION);
        a.insert(OLD_GROUPS_ANNOTATION.into(), "devs,system:masters".into());
        assert_eq!(
            parse_secret(&s),
            Err(Malformed::OldFormat {
                fingerprint: FINGERPRINT.into()
            })
        );
        let (fp, entry) = accept(&s).unwrap();
        assert_eq!((fp.as_str(), entry.identity), (FINGERPRINT, None));
    }

    #[test]
    fn an_expired_key_is_unusable_and_its_twin_is_not() {
        let registry = KeyRegistry::default();
        let at: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let s = key_secret_expiring(KEY, "alice", &["devs"], Some(at)).unwrap();
        let (fp, entry) = accept(&s).unwrap();
        registry.index.write().unwrap().insert(fp, entry);
        let key = PublicKey::from_openssh(KEY).unwrap();
        let before: Timestamp = "2026-05-31T23:59:59Z".parse().unwrap();
        assert!(
            matches!(registry.lookup_at(&key, before), Lookup::Found(id) if id.expires == Some(at))
        );
        let Lookup::Unusable(why) = registry.lookup_at(&key, at) else {
            panic!("an expired key was usable")
        };
        let msg = why.to_string();
        assert!(msg.contains("expired at 2026-06-01T00:00:00Z"), "{msg}");
        assert!(msg.contains("flynn key add --expires 90d"), "{msg}");
        // A malformed expiry leaves the key out rather than never expiring.
        let mut bad = s.clone();
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(EXPIRES_ANNOTATION.into(), "next week".into());
        assert!(matches!(parse_secret(&bad), Err(Malformed::Expires(_))));
    }
}
