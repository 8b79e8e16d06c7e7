//! TLS Secrets a Route names: noticed through a metadata-only watch per namespace, read one
//! at a time by name, so that the router holds the data of no Secret a served Route does not
//! name.
//!
//! Why not a watch of whole Secrets: a tenant whose namespace the router may read (it has one
//! TLS Route there) can create any number of Secrets, each up to 1 MiB. A watch of whole
//! Secrets brings every one of them into every router replica (its first list alone is a page
//! of 500), and one tenant could get every replica OOM-killed, everyone's traffic with it.
//! A metadata-only watch (`PartialObjectMetadata`) brings a few hundred bytes per Secret,
//! looked at for its name and dropped at once. A Secret a Route names is then read with a
//! list whose field selector is its name: the `list` the platform grants (with `watch`) is
//! all it takes, no `get`. What is read is bounded too ([`MAX_TLS_CRT_BYTES`],
//! [`MAX_TLS_KEY_BYTES`]): a named Secret with a huge chain is refused, not kept.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use prometheus_client::metrics::counter::Counter;
use rustls::sign::CertifiedKey;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::tls::{self, SecretProblem};

/// The field selector of every Secret request: only TLS Secrets are certificates.
const TLS_TYPE: &str = "type=kubernetes.io/tls";

/// Secrets per page of the metadata watch's (re-)list: a Secret's metadata may carry up to
/// 256 KiB of annotations, so a page of 50 is at most about 13 MiB in flight, once.
pub const META_PAGE_SIZE: u32 = 50;

/// Secret reads in flight at once, over every namespace: a burst of new TLS Routes (or a
/// re-list of a namespace with many) does not become a burst of API requests, and at most
/// this many whole Secrets (1 MiB each at most) are in memory while being read.
pub const MAX_CONCURRENT_READS: usize = 8;

/// Largest `tls.crt` the router parses: a chain of a few certificates is a few KiB, one with
/// a thousand subjectAltNames about 40 KiB. A larger one is refused (`Malformed`, saying so).
pub const MAX_TLS_CRT_BYTES: usize = 128 * 1024;

/// Largest `tls.key` the router parses (an RSA 8192 key is about 6.3 KiB of PEM).
pub const MAX_TLS_KEY_BYTES: usize = 16 * 1024;

/// Longest wait between two tries of a read that failed (other than 403).
const MAX_READ_BACKOFF: Duration = Duration::from_secs(30);

/// What a namespace's Secret watch and reads report to the watch loop.
#[derive(Debug)]
pub enum SecretChange {
    /// A TLS Secret of this name was created, changed or deleted (only its name is kept).
    Changed(String),
    /// The watch (re-)listed the namespace: the router can read its Secrets, and anything may
    /// have changed while it was not watching.
    Listed,
    /// The watch failed (403 until the platform grants access); it retries with backoff.
    WatchFailed(String),
    /// A read of one Secret finished or failed.
    Read {
        /// The Secret's name.
        name: String,
        /// Which read (a newer one for the same name makes an older one's answer stale).
        id: u64,
        /// What it found.
        outcome: ReadOutcome,
    },
}

/// What reading one Secret found.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    /// The Secret exists (its certificate, or why it cannot be used).
    Found(Held),
    /// No TLS Secret of that name.
    Absent,
    /// The read failed: with `retrying`, it is tried again (backoff) and reports again.
    Failed {
        /// The API server's answer.
        why: String,
        /// False for a 403: the namespace watch's next list (once access is granted) asks
        /// for a new read.
        retrying: bool,
    },
}

/// What the router keeps of a Secret a Route names.
#[derive(Debug, Clone)]
pub struct Held {
    /// Its certificate and key, or why they cannot be used.
    pub cert: Result<Arc<CertifiedKey>, SecretProblem>,
    /// Bytes of `tls.crt` and `tls.key` whose certificate is kept (0 when refused).
    pub bytes: usize,
}

/// What the index knows of a named Secret.
#[derive(Debug, Clone)]
pub enum SecretState {
    /// Read: it exists.
    Held(Held),
    /// Read: it does not exist.
    Absent,
    /// Not read yet: the reads fail (the answer is the reason).
    Unreadable(String),
}

/// The certificate of a Secret, checked and size-bounded.
pub fn held(secret: &Secret) -> Held {
    let data = secret.data.as_ref();
    let get = |k: &'static str, max: usize| {
        let bytes = data
            .and_then(|d| d.get(k))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| SecretProblem::Malformed(tls::CertError::Missing(k).to_string()))?;
        if bytes.len() > max {
            return Err(SecretProblem::Malformed(format!(
                "{k} is {} bytes, over the router's limit of {max} bytes: put only the \
                 certificate and its chain (tls.crt) and its private key (tls.key) there",
                bytes.len()
            )));
        }
        Ok(bytes)
    };
    let cert = get("tls.crt", MAX_TLS_CRT_BYTES).and_then(|crt| {
        let key = get("tls.key", MAX_TLS_KEY_BYTES)?;
        tls::secret_key(crt, key).map(|k| (k, crt.len() + key.len()))
    });
    match cert {
        Ok((key, bytes)) => Held {
            cert: Ok(key),
            bytes,
        },
        Err(e) => Held {
            cert: Err(e),
            bytes: 0,
        },
    }
}

/// A task aborted when dropped: a namespace's watch, or a read.
#[derive(Debug)]
pub struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether an API error is a 403.
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_forbidden())
}

/// Whether a watch error is the API server's 403.
pub fn watch_forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => is_forbidden(e),
        watcher::Error::WatchError(s) => s.is_forbidden(),
        _ => false,
    }
}

const FORBIDDEN: &str = "the API server answers 403 Forbidden until the platform grants access";

/// Watches the names of `namespace`'s TLS Secrets (metadata only) until dropped; `send`
/// returns false once nobody listens.
pub fn watch_names(
    client: &Client,
    namespace: &str,
    send: impl Fn(SecretChange) -> bool + Send + Sync + 'static,
) -> Task {
    // Requests for `PartialObjectMeta` ask for metadata only (`as=PartialObjectMetadata`).
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
    let ns = namespace.to_owned();
    Task(tokio::spawn(async move {
        let config = watcher::Config::default()
            .fields(TLS_TYPE)
            .page_size(META_PAGE_SIZE);
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(e) = events.next().await {
            let change = match e {
                Ok(watcher::Event::Apply(meta) | watcher::Event::Delete(meta)) => {
                    SecretChange::Changed(meta.name_any())
                }
                // A list's Secrets are read after it, if named, whatever they are.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(watcher::Event::InitDone) => SecretChange::Listed,
                Err(e) => {
                    let forbidden = watch_forbidden(&e);
                    debug!(namespace = %ns, error = %e, forbidden, "Secret watch failed; retrying");
                    SecretChange::WatchFailed(if forbidden {
                        FORBIDDEN.to_owned()
                    } else {
                        e.to_string()
                    })
                }
            };
            if !send(change) {
                return;
            }
        }
    }))
}

/// Whether `name` can be a Secret's name (a DNS subdomain), so it cannot add a clause to the
/// field selector it goes into.
fn secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Reads Secret `name` of `namespace` (a list with its name as field selector) and reports
/// it as [`SecretChange::Read`] with `id`; retries failures other than 403 with backoff.
pub fn read(
    client: &Client,
    namespace: &str,
    name: &str,
    id: u64,
    limit: Arc<Semaphore>,
    reads: Counter,
    send: impl Fn(SecretChange) -> bool + Send + Sync + 'static,
) -> Task {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (ns, name) = (namespace.to_owned(), name.to_owned());
    Task(tokio::spawn(async move {
        let report = |outcome| {
            send(SecretChange::Read {
                name: name.clone(),
                id,
                outcome,
            })
        };
        if !secret_name(&name) {
            report(ReadOutcome::Absent);
            return;
        }
        let params = ListParams::default().fields(&format!("metadata.name={name},{TLS_TYPE}"));
        let mut backoff = Duration::from_millis(500);
        loop {
            let listed = {
                let Ok(_permit) = limit.acquire().await else {
                    return;
                };
                reads.inc();
                api.list(&params).await
            };
            let outcome = match listed {
                Ok(list) => match list.items.first() {
                    Some(secret) => ReadOutcome::Found(held(secret)),
                    None => ReadOutcome::Absent,
                },
                Err(e) => {
                    let forbidden = is_forbidden(&e);
                    debug!(namespace = %ns, secret = %name, error = %e, "reading the Secret failed");
                    let why = if forbidden {
                        FORBIDDEN.to_owned()
                    } else {
                        e.to_string()
                    };
                    let retrying = !forbidden;
                    if !report(ReadOutcome::Failed { why, retrying }) || !retrying {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_READ_BACKOFF);
                    continue;
                }
            };
            report(outcome);
            return;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_secret_names_go_into_a_field_selector() {
        assert!(secret_name("shop-tls.v2"));
        for bad in ["", "a,type!=x", "A", "a=b", &"a".repeat(254)] {
            assert!(!secret_name(bad), "{bad}");
        }
    }
}
