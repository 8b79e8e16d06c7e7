//! The config source: watches Routes, EndpointSlices and TLS Secrets into an index, and
//! publishes a new immutable [`Table`] after every batch of changes.
//!
//! Which Routes are served is decided by `flynn_crds::ownership`, the rule the operator
//! reports as `Accepted`: the router applies it itself, so a Route another namespace's host
//! name belongs to is never served, even while the operator is down or behind. The names of
//! TLS Secrets are watched per namespace (metadata only), and only in namespaces holding a
//! Route that names one; only the Secrets served Routes name are read and held
//! ([`crate::secrets`]). The router may read Secrets only where the platform grants it; a
//! refusal there is retried and reported as `CertificateReady=False`, `SecretAccessPending`,
//! never fatal.
//!
//! This is the index pattern (apply / delete / reset per kind, as linkerd's policy controller),
//! not a reconciler: the router keeps a model of what it watches and derives the whole table
//! from it. Events that arrive together are applied together and cost one table build.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use flynn_crds::{
    Route, RouteType, conditions,
    host::Host,
    names,
    ownership::{self, Candidate, Policy, Verdict},
};
use futures::{FutureExt, StreamExt, stream::BoxStream};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Secret},
        discovery::v1::{EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    metrics::{RouteMetrics, SharedMetrics},
    secrets::{self, ReadOutcome, SecretChange, SecretState},
    table::{
        Backend, CertVerdict, Endpoint, HttpEntry, RouteKey, RouteOutcome, Table, TableHandle,
        TcpEntry,
    },
    tls::{self, CertProblem, SecretProblem},
};

/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Upper bound on how long a batch of watch events waits for more (see [`run`]).
const MAX_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// What the index keeps of a Route.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The desired routing.
    pub spec: flynn_crds::RouteSpec,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Older Routes win conflicts.
    pub created: Option<Time>,
    /// Being deleted: it claims nothing.
    pub deleting: bool,
    /// The `Programmed` condition as last seen, to skip no-op status writes.
    pub programmed: Option<Condition>,
    /// The `CertificateReady` condition as last seen.
    pub certificate: Option<Condition>,
}

/// Whether the router can read a namespace's TLS Secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretAccess {
    /// Its watch has not listed yet.
    Pending,
    /// Listed: a Secret not in the index does not exist.
    Listed,
    /// Listing failed (403 until the platform grants access): retried with backoff.
    Refused(String),
}

/// The ready endpoints of one EndpointSlice.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceInfo {
    /// `<namespace>/<service>` the slice belongs to.
    pub service: (String, String),
    /// Ready, non-terminating addresses with the slice's port.
    pub ready: Vec<SocketAddr>,
}

/// Everything the router has seen, by kind.
#[derive(Debug, Default)]
pub struct Index {
    routes: BTreeMap<RouteKey, RouteInfo>,
    slices: HashMap<(String, String), SliceInfo>,
    /// Only Secrets a served Route names: what their read found.
    secrets: HashMap<(String, String), SecretState>,
    /// Per namespace whose Secrets are watched: whether they can be read.
    secret_access: HashMap<String, SecretAccess>,
    /// Namespaces carrying the exclusion label: their Routes are not served.
    excluded: HashSet<String>,
    /// With a namespace selector: the namespaces it selects (only their Routes are served).
    selected: Option<HashSet<String>>,
}

fn key_of<K: ResourceExt>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Index {
    /// Adds or replaces a Route; returns whether routing may have changed (a status-only
    /// update, such as the router's own `Programmed` write, does not need a new table).
    pub fn apply_route(&mut self, route: &Route) -> bool {
        let (namespace, name) = key_of(route);
        let programmed = route
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, conditions::types::PROGRAMMED))
            .cloned();
        let certificate = route
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, conditions::types::CERTIFICATE_READY))
            .cloned();
        let info = RouteInfo {
            spec: route.spec.clone(),
            generation: route.metadata.generation,
            created: route.metadata.creation_timestamp.clone(),
            deleting: route.metadata.deletion_timestamp.is_some(),
            programmed,
            certificate,
        };
        let key = RouteKey { namespace, name };
        let changed = self.routes.get(&key).is_none_or(|old| {
            old.spec != info.spec
                || old.generation != info.generation
                || old.created != info.created
                || old.deleting != info.deleting
        });
        self.routes.insert(key, info);
        changed
    }

    /// Notes a namespace carrying the exclusion label.
    pub fn apply_excluded_namespace(&mut self, namespace: &Namespace) -> bool {
        self.excluded.insert(namespace.name_any())
    }

    /// Forgets an excluded namespace (deleted, or its label removed).
    pub fn delete_excluded_namespace(&mut self, namespace: &Namespace) -> bool {
        self.excluded.remove(&namespace.name_any())
    }

    /// Notes a namespace the namespace selector selects.
    pub fn apply_selected_namespace(&mut self, namespace: &Namespace) -> bool {
        self.selected
            .get_or_insert_with(HashSet::new)
            .insert(namespace.name_any())
    }

    /// Forgets a selected namespace (deleted, or no longer matching).
    pub fn delete_selected_namespace(&mut self, namespace: &Namespace) -> bool {
        self.selected
            .get_or_insert_with(HashSet::new)
            .remove(&namespace.name_any())
    }

    /// Whether this router serves Routes of `namespace` at all.
    pub fn serves(&self, namespace: &str) -> bool {
        !self.excluded.contains(namespace)
            && self.selected.as_ref().is_none_or(|s| s.contains(namespace))
    }

    /// Namespaces holding a served Route that names a TLS Secret: where Secrets are watched.
    pub fn secret_namespaces(&self) -> BTreeSet<String> {
        self.named_secrets().into_iter().map(|(ns, _)| ns).collect()
    }

    /// `(namespace, name)` of every Secret a served Route names: the only Secrets read.
    pub fn named_secrets(&self) -> BTreeSet<(String, String)> {
        self.routes
            .iter()
            .filter(|(k, _)| self.serves(&k.namespace))
            .filter_map(|(k, r)| {
                let secret = r.spec.http.as_ref()?.tls_secret_name.as_ref()?;
                Some((k.namespace.clone(), secret.clone()))
            })
            .collect()
    }

    /// Records what a read of Secret `name` of `namespace` found; returns whether that
    /// changed anything. A failed read keeps what an earlier one found.
    pub fn apply_read(&mut self, namespace: &str, name: &str, outcome: ReadOutcome) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        let state = match outcome {
            ReadOutcome::Found(held) => SecretState::Held(held),
            ReadOutcome::Absent => SecretState::Absent,
            ReadOutcome::Failed { why, .. } => match self.secrets.get(&key) {
                None | Some(SecretState::Unreadable(_)) => SecretState::Unreadable(why),
                Some(_) => return false,
            },
        };
        self.secrets.insert(key, state);
        true
    }

    /// Whether Secret `name` of `namespace` was read (or its reads failed).
    pub fn has_secret(&self, key: &(String, String)) -> bool {
        self.secrets.contains_key(key)
    }

    /// Drops every Secret no served Route names any more; returns whether any went.
    pub fn retain_secrets(&mut self, named: &BTreeSet<(String, String)>) -> bool {
        let before = self.secrets.len();
        self.secrets.retain(|key, _| named.contains(key));
        self.secrets.len() != before
    }

    /// How many Secrets' certificates are held, and their `tls.crt` + `tls.key` bytes.
    pub fn secrets_held(&self) -> (usize, usize) {
        self.secrets
            .values()
            .filter_map(|s| match s {
                SecretState::Held(h) if h.cert.is_ok() => Some(h.bytes),
                // A refused Secret leaves only the reason.
                _ => None,
            })
            .fold((0, 0), |(n, b), bytes| (n + 1, b + bytes))
    }

    /// Records whether `namespace`'s Secrets can be read; returns whether that changed.
    pub fn set_secret_access(&mut self, namespace: &str, access: SecretAccess) -> bool {
        self.secret_access
            .insert(namespace.to_owned(), access.clone())
            != Some(access)
    }

    /// Stops tracking `namespace`'s Secrets (no Route there names one any more).
    pub fn forget_secrets_of(&mut self, namespace: &str) -> bool {
        let before = self.secrets.len();
        self.secrets.retain(|(ns, _), _| ns != namespace);
        self.secret_access.remove(namespace).is_some() || self.secrets.len() != before
    }

    /// Whether every watched namespace's Secrets are listed or refused (none still pending),
    /// and every Secret of `named` in a listed namespace read once.
    fn secrets_settled(&self, named: &BTreeSet<(String, String)>) -> bool {
        self.secret_access
            .values()
            .all(|a| *a != SecretAccess::Pending)
            && named.iter().all(|key| {
                self.secrets.contains_key(key)
                    || self.secret_access.get(&key.0) != Some(&SecretAccess::Listed)
            })
    }

    /// The certificate of Secret `secret` of `namespace` for `host`, or why there is none.
    fn certificate(
        &self,
        namespace: &str,
        secret: &str,
        host: &Host,
    ) -> Result<Arc<CertifiedKey>, CertProblem> {
        let held = match self.secrets.get(&(namespace.to_owned(), secret.to_owned())) {
            Some(SecretState::Held(held)) => Some(&held.cert),
            Some(SecretState::Absent) => {
                return Err(CertProblem::SecretNotFound {
                    secret: secret.to_owned(),
                    namespace: namespace.to_owned(),
                });
            }
            Some(SecretState::Unreadable(why)) => {
                return Err(CertProblem::AccessPending {
                    namespace: namespace.to_owned(),
                    why: why.clone(),
                });
            }
            None => None,
        };
        match held {
            Some(Ok(key)) if tls::covers(key, host) => Ok(key.clone()),
            Some(Ok(_)) => Err(CertProblem::HostNotCovered {
                secret: secret.to_owned(),
                host: host.to_string(),
                wild: match host {
                    Host::Exact(_) => host
                        .wildcard_suffix()
                        .map(|s| format!(" or *.{s}"))
                        .unwrap_or_default(),
                    Host::Wildcard(_) => String::new(),
                },
            }),
            Some(Err(SecretProblem::KeyMismatch)) => Err(CertProblem::KeyMismatch {
                secret: secret.to_owned(),
            }),
            Some(Err(SecretProblem::Malformed(error))) => Err(CertProblem::Malformed {
                secret: secret.to_owned(),
                error: error.clone(),
            }),
            None => match self.secret_access.get(namespace) {
                Some(SecretAccess::Listed) => Err(CertProblem::AccessPending {
                    namespace: namespace.to_owned(),
                    why: format!("Secret {secret} is being read"),
                }),
                Some(SecretAccess::Refused(why)) => Err(CertProblem::AccessPending {
                    namespace: namespace.to_owned(),
                    why: why.clone(),
                }),
                Some(SecretAccess::Pending) | None => Err(CertProblem::AccessPending {
                    namespace: namespace.to_owned(),
                    why: "its Secrets are not listed yet".to_owned(),
                }),
            },
        }
    }

    /// Removes a Route.
    pub fn delete_route(&mut self, route: &Route) -> bool {
        let (namespace, name) = key_of(route);
        self.routes.remove(&RouteKey { namespace, name }).is_some()
    }

    /// Adds or replaces an EndpointSlice; returns whether its ready endpoints changed.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) -> bool {
        match slice_info(slice) {
            Some(info) => self.slices.insert(key_of(slice), info.clone()) != Some(info),
            None => self.slices.remove(&key_of(slice)).is_some(),
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) -> bool {
        self.slices.remove(&key_of(slice)).is_some()
    }

    /// Adds or replaces a TLS Secret as read (parsed now, so a bad one is reported once).
    pub fn apply_secret(&mut self, secret: &Secret) -> bool {
        self.secrets
            .insert(key_of(secret), SecretState::Held(secrets::held(secret)));
        true
    }

    /// Number of Routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

/// The port of a slice to send traffic to: its only port, else one named `http` or `web`,
/// else its first TCP port. The operator's Services have one port; being lenient here keeps
/// hand-made Services working.
fn slice_port(ports: Option<&[EndpointPort]>) -> Option<u16> {
    let tcp: Vec<&EndpointPort> = ports?
        .iter()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP" && p.port.is_some())
        .collect();
    let chosen = tcp
        .iter()
        .find(|p| matches!(p.name.as_deref(), Some("http" | "web")))
        .or_else(|| tcp.first())?;
    chosen.port.and_then(|p| u16::try_from(p).ok())
}

/// The ready addresses of a slice; `None` for slices the router cannot use.
pub fn slice_info(slice: &EndpointSlice) -> Option<SliceInfo> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?.clone();
    if slice.address_type == "FQDN" {
        return None;
    }
    let port = slice_port(slice.ports.as_deref())?;
    let mut ready: Vec<SocketAddr> = slice
        .endpoints
        .iter()
        .filter(|e| {
            // API conventions: a missing `ready` means ready; terminating endpoints are not
            // ready, so in-flight requests finish but no new ones arrive (drainBackends).
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .filter_map(|e| e.addresses.first()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    ready.sort();
    Some(SliceInfo {
        service: (slice.namespace().unwrap_or_default(), service),
        ready,
    })
}

/// Builds tables, keeping one `Arc<Endpoint>` per address across builds.
#[derive(Debug, Default)]
pub struct Builder {
    endpoints: HashMap<SocketAddr, Arc<Endpoint>>,
    /// Metric handles per Route, so a rebuild does not look up label sets again.
    route_metrics: HashMap<RouteKey, RouteMetrics>,
    generation: u64,
    /// What Routes may claim.
    policy: Policy,
    /// The Secrets the served HTTP Routes of the last table name.
    named_secrets: BTreeSet<(String, String)>,
}

impl Builder {
    /// A builder applying `policy` (the default builder: no default domain, default ports).
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// `(namespace, name)` of the Secrets the Routes served by the last table name: the only
    /// Secrets the router reads and holds (a Route another namespace's host belongs to names
    /// none).
    pub fn named_secrets(&self) -> &BTreeSet<(String, String)> {
        &self.named_secrets
    }

    /// A table from `index`.
    pub fn build(&mut self, index: &Index, metrics: &SharedMetrics) -> Table {
        self.generation += 1;
        self.named_secrets.clear();
        // Service → ready addresses (union of its slices).
        let mut services: HashMap<(&str, &str), Vec<SocketAddr>> = HashMap::new();
        for slice in index.slices.values() {
            services
                .entry((&slice.service.0, &slice.service.1))
                .or_default()
                .extend(&slice.ready);
        }
        let mut endpoints = HashMap::with_capacity(self.endpoints.len());
        let mut backends: HashMap<(String, String), Arc<Backend>> = HashMap::new();
        let mut backend_of = |namespace: &str, service: String| -> Arc<Backend> {
            backends
                .entry((namespace.to_owned(), service))
                .or_insert_with_key(|(ns, svc)| {
                    let mut addrs = services
                        .get(&(ns.as_str(), svc.as_str()))
                        .cloned()
                        .unwrap_or_default();
                    addrs.sort();
                    addrs.dedup();
                    let eps = addrs
                        .into_iter()
                        .map(|a| {
                            let ep = self
                                .endpoints
                                .get(&a)
                                .cloned()
                                .unwrap_or_else(|| Arc::new(Endpoint::new(a)));
                            endpoints.insert(a, ep.clone());
                            ep
                        })
                        .collect();
                    Arc::new(Backend {
                        service: format!("{ns}/{svc}"),
                        endpoints: eps,
                    })
                })
                .clone()
        };

        // Who is served: the rule the operator reports, over every Route this router serves
        // namespaces of.
        let routes: Vec<(&RouteKey, &RouteInfo)> = index
            .routes
            .iter()
            .filter(|(key, _)| index.serves(&key.namespace))
            .collect();
        let candidates: Vec<Candidate<'_>> = routes
            .iter()
            .map(|(key, r)| Candidate {
                namespace: &key.namespace,
                name: &key.name,
                created: r.created.as_ref().map(|t| t.0),
                deleting: r.deleting,
                spec: &r.spec,
            })
            .collect();
        let decisions = ownership::decide(&candidates, &self.policy);
        let mut table = Table {
            generation: self.generation,
            ..Table::default()
        };
        for ((key, route), verdict) in routes.into_iter().zip(&decisions.verdicts) {
            let service = names::service_name(&route.spec.app, &route.spec.process);
            let mut outcome = RouteOutcome {
                key: key.clone(),
                generation: route.generation,
                programmed: true,
                reason: conditions::reasons::PROGRAMMED,
                message: format!(
                    "the router serves this route (service {}/{service})",
                    key.namespace
                ),
                current: route.programmed.clone(),
                certificate: None,
                current_certificate: route.certificate.clone(),
            };
            if let Verdict::Refused(why) = verdict {
                if route.deleting {
                    continue;
                }
                outcome.programmed = false;
                outcome.reason = why.reason();
                outcome.message = format!("{why}; this route gets no traffic");
                table.outcomes.push(outcome);
                continue;
            }
            let route_metrics = match self.route_metrics.get(key) {
                Some(m) => m.clone(),
                None => {
                    let m = metrics.route(&key.namespace, &key.name);
                    self.route_metrics.insert(key.clone(), m.clone());
                    m
                }
            };
            match (route.spec.type_, &route.spec.http, &route.spec.tcp) {
                (RouteType::Http, Some(http), _) => {
                    // Served: the host parsed (a malformed one is refused above).
                    let Ok(host) = Host::parse(&http.domain) else {
                        continue;
                    };
                    let domain = host.to_string();
                    let entry = Arc::new(HttpEntry {
                        key: (*key).clone(),
                        backend: backend_of(&key.namespace, service),
                        sticky: http.sticky,
                        https_redirect: http.https_redirect,
                        metrics: route_metrics,
                    });
                    // Ownership already gave each host + path to one Route.
                    let _ = table.http.insert(&domain, &http.path, entry);
                    // Another namespace's wildcard gets neither this host's other paths nor
                    // its handshakes.
                    if let Host::Exact(name) = &host
                        && host
                            .wildcard_suffix()
                            .and_then(|s| decisions.wildcard_owner(s))
                            .is_some_and(|owner| owner != key.namespace)
                    {
                        table.http.seal(name);
                        table.certs.refuse(name);
                    }
                    if let Some(secret) = &http.tls_secret_name {
                        self.named_secrets
                            .insert((key.namespace.clone(), secret.clone()));
                        outcome.certificate = Some(
                            match index.certificate(&key.namespace, secret, &host) {
                                Ok(cert) => {
                                    table.certs.insert(&domain, cert);
                                    CertVerdict {
                                        ready: true,
                                        reason: conditions::reasons::CERTIFICATE_VALID,
                                        message: format!(
                                            "Secret {secret} covers {domain} and its key matches; \
                                             HTTPS is served with it"
                                        ),
                                    }
                                }
                                Err(problem) => {
                                    // Not the wildcard's certificate either.
                                    table.certs.refuse(&domain);
                                    outcome.message.push_str(
                                        "; over plain HTTP only: its certificate is not used (see CertificateReady)",
                                    );
                                    CertVerdict {
                                        ready: false,
                                        reason: problem.reason(),
                                        message: problem.to_string(),
                                    }
                                }
                            },
                        );
                    }
                }
                (RouteType::Tcp, _, Some(tcp)) => {
                    // In the platform's range (else refused above), so a u16.
                    let Ok(port) = u16::try_from(tcp.port) else {
                        continue;
                    };
                    table.tcp.insert(
                        port,
                        Arc::new(TcpEntry {
                            key: (*key).clone(),
                            backend: backend_of(&key.namespace, service),
                            metrics: route_metrics,
                        }),
                    );
                }
                // The API server refuses a type without its block (and ownership with it).
                _ => continue,
            }
            table.outcomes.push(outcome);
        }
        // Endpoints that left: drop their idle connections now; requests in flight keep
        // their own references and finish.
        for (addr, ep) in &self.endpoints {
            if !endpoints.contains_key(addr) {
                ep.close_idle();
            }
        }
        self.endpoints = endpoints;
        // Deleted Routes' series go away with them.
        if self.route_metrics.len() > index.routes.len() {
            self.route_metrics.retain(|key, _| {
                let keep = index.routes.contains_key(key);
                if !keep {
                    metrics.forget_route(&key.namespace, &key.name);
                }
                keep
            });
        }
        table
    }
}

/// What the watch loop shares with the rest of the router.
#[derive(Debug, Clone)]
pub struct WatchContext {
    /// Where tables are published.
    pub table: TableHandle,
    /// Metrics (table generation and swap time, per-Route series).
    pub metrics: SharedMetrics,
    /// Told the generation of every published table.
    pub published: watch::Sender<u64>,
    /// Set once the first complete table is published.
    pub ready: Arc<AtomicBool>,
    /// What Routes may claim (the operator is given the same).
    pub policy: Policy,
    /// Serve only Routes of namespaces matching this label selector (all if unset).
    pub namespace_selector: Option<String>,
}

enum Change {
    Namespace(watcher::Event<Namespace>),
    Selected(watcher::Event<Namespace>),
    Route(watcher::Event<Route>),
    Slice(watcher::Event<EndpointSlice>),
    Secret(String, SecretChange),
}

/// A namespace whose Secret names are watched.
struct NamespaceWatch {
    _task: secrets::Task,
    /// Listed once: a Secret it names can be read.
    listed: bool,
}

/// A read of one named Secret.
struct SecretRead {
    _task: secrets::Task,
    id: u64,
    /// The Secret changed again since this read began: read it once more when it ends.
    again: bool,
}

/// The named Secrets' reads: at most one per Secret at a time, the last one's answer kept.
struct SecretReads {
    client: Client,
    tx: futures::channel::mpsc::UnboundedSender<Change>,
    limit: Arc<tokio::sync::Semaphore>,
    count: prometheus_client::metrics::counter::Counter,
    next_id: u64,
    reads: HashMap<(String, String), SecretRead>,
}

impl SecretReads {
    /// Reads `key` now, or once the read in flight ends: a read that began before a change
    /// may have missed it, and the answer of a read that began after every change is current.
    fn request(&mut self, key: &(String, String)) {
        if let Some(read) = self.reads.get_mut(key) {
            read.again = true;
            return;
        }
        self.start(key.clone());
    }

    fn start(&mut self, key: (String, String)) {
        self.next_id += 1;
        let id = self.next_id;
        let (tx, ns) = (self.tx.clone(), key.0.clone());
        let task = secrets::read(
            &self.client,
            &key.0,
            &key.1,
            id,
            self.limit.clone(),
            self.count.clone(),
            move |c| tx.unbounded_send(Change::Secret(ns.clone(), c)).is_ok(),
        );
        self.reads.insert(
            key,
            SecretRead {
                _task: task,
                id,
                again: false,
            },
        );
    }

    /// Notes the answer of read `id` of `key`; returns whether it is current (not of a read
    /// since dropped or superseded).
    fn answered(&mut self, key: &(String, String), id: u64, done: bool) -> bool {
        match self.reads.get(key) {
            Some(read) if read.id == id => {
                if done && self.reads.remove(key).is_some_and(|r| r.again) {
                    self.start(key.clone());
                }
                true
            }
            _ => false,
        }
    }
}

/// Why the watch loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Every watch stream ended (the client was dropped).
    #[error("the watch streams ended")]
    Ended,
}

/// Per-kind re-list buffer: `Init` .. `InitApply`* .. `InitDone` replaces the kind wholesale.
struct Relist<K> {
    buffer: Option<Vec<K>>,
    synced: bool,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Self {
            buffer: None,
            synced: false,
        }
    }
}

/// Watches `namespace` (or all namespaces) and publishes tables until the streams end.
/// Routes in namespaces labelled `exclude_label` are left out (another router serves
/// them, e.g. a test's own), as are, with `ctx.namespace_selector`, those of namespaces it
/// does not select. TLS Secrets are watched in `namespace`, or else in each namespace
/// holding a served Route that names one, from when the first such Route appears to when
/// the last goes.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    exclude_label: Option<String>,
    ctx: WatchContext,
) -> Result<(), WatchError> {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let routes = watcher(api::<Route>(&client, ns), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(Change::Route));
    let slices = watcher(
        api::<EndpointSlice>(&client, ns),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
    )
    .default_backoff()
    .map(|e| e.map(Change::Slice));
    let (secret_tx, secret_rx) = futures::channel::mpsc::unbounded::<Change>();
    let mut streams: Vec<BoxStream<'static, Result<Change, watcher::Error>>> =
        vec![routes.boxed(), slices.boxed(), secret_rx.map(Ok).boxed()];
    let mut n = Relist::<Namespace>::default();
    match exclude_label {
        Some(label) => streams.push(
            watcher(
                Api::<Namespace>::all(client.clone()),
                watcher::Config::default().labels(&label),
            )
            .default_backoff()
            .map(|e| e.map(Change::Namespace))
            .boxed(),
        ),
        None => n.synced = true,
    }
    let mut sel = Relist::<Namespace>::default();
    match &ctx.namespace_selector {
        Some(selector) => streams.push(
            watcher(
                Api::<Namespace>::all(client.clone()),
                watcher::Config::default().labels(selector),
            )
            .default_backoff()
            .map(|e| e.map(Change::Selected))
            .boxed(),
        ),
        None => sel.synced = true,
    }
    let mut events = futures::stream::select_all(streams);

    let mut index = Index::default();
    let mut builder = Builder::new(ctx.policy.clone());
    let mut last_build = std::time::Duration::ZERO;
    let (mut r, mut s) = (
        Relist::<Route>::default(),
        Relist::<EndpointSlice>::default(),
    );
    // Per namespace whose Secrets are watched: the watch of their names.
    let mut secret_watches: HashMap<String, NamespaceWatch> = HashMap::new();
    let mut reads = SecretReads {
        client: client.clone(),
        tx: secret_tx.clone(),
        limit: Arc::new(tokio::sync::Semaphore::new(secrets::MAX_CONCURRENT_READS)),
        count: ctx.metrics.tls_secret_reads.clone(),
        next_id: 0,
        reads: HashMap::new(),
    };
    loop {
        let Some(first) = events.next().await else {
            return Err(WatchError::Ended);
        };
        let mut batch = vec![first];
        // Everything already queued goes into the same table. Beyond that, keep collecting
        // for as long as the last build took: building then takes at most about half of the
        // time under a burst (a large table is not rebuilt per event), while a small table,
        // built in microseconds, is published at once.
        let deadline = tokio::time::Instant::now() + last_build.min(MAX_BATCH_WAIT);
        loop {
            match events.next().now_or_never() {
                Some(Some(more)) => batch.push(more),
                Some(None) => break,
                None => match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(Some(more)) => batch.push(more),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        let mut dirty = false;
        // Namespaces whose Secret names were (re-)listed, and Secrets that changed: read
        // again if named.
        let mut relisted = HashSet::new();
        let mut changed = HashSet::new();
        for change in batch {
            match change {
                Ok(Change::Namespace(e)) => {
                    dirty |= apply(
                        &mut n,
                        e,
                        &mut index,
                        Index::apply_excluded_namespace,
                        Index::delete_excluded_namespace,
                        |i| i.excluded.clear(),
                    )
                }
                Ok(Change::Selected(e)) => {
                    dirty |= apply(
                        &mut sel,
                        e,
                        &mut index,
                        Index::apply_selected_namespace,
                        Index::delete_selected_namespace,
                        |i| i.selected = Some(HashSet::new()),
                    )
                }
                Ok(Change::Route(e)) => {
                    dirty |= apply(
                        &mut r,
                        e,
                        &mut index,
                        Index::apply_route,
                        Index::delete_route,
                        |i| i.routes.clear(),
                    )
                }
                Ok(Change::Slice(e)) => {
                    dirty |= apply(
                        &mut s,
                        e,
                        &mut index,
                        Index::apply_slice,
                        Index::delete_slice,
                        |i| i.slices.clear(),
                    )
                }
                Ok(Change::Secret(ns, change)) => {
                    // Events of a watch already stopped are stale.
                    let Some(watch) = secret_watches.get_mut(&ns) else {
                        continue;
                    };
                    match change {
                        SecretChange::Changed(name) => {
                            changed.insert((ns, name));
                        }
                        SecretChange::Listed => {
                            watch.listed = true;
                            dirty |= index.set_secret_access(&ns, SecretAccess::Listed);
                            relisted.insert(ns);
                        }
                        // A namespace listed before keeps its certificates through a failing
                        // re-watch.
                        SecretChange::WatchFailed(why) if !watch.listed => {
                            dirty |= index.set_secret_access(&ns, SecretAccess::Refused(why));
                        }
                        SecretChange::WatchFailed(why) => {
                            warn!(namespace = %ns, error = %why, "Secret watch failed; retrying, certificates kept");
                        }
                        SecretChange::Read { name, id, outcome } => {
                            let key = (ns, name);
                            let done =
                                !matches!(outcome, ReadOutcome::Failed { retrying: true, .. });
                            if reads.answered(&key, id, done) {
                                dirty |= index.apply_read(&key.0, &key.1, outcome);
                            }
                        }
                    }
                }
                // The watcher retries with backoff by itself; the table stays as it was.
                Err(e) => warn!(error = %e, "watch error; retrying"),
            }
        }
        // Secret watches follow the namespaces that need them (once Routes are listed).
        if r.synced && n.synced && sel.synced {
            let wanted = match &namespace {
                Some(ns) => std::collections::BTreeSet::from([ns.clone()]),
                None => index.secret_namespaces(),
            };
            secret_watches.retain(|ns, _| {
                let keep = wanted.contains(ns);
                if !keep {
                    info!(namespace = %ns, "no Route names a TLS Secret here any more: Secret watch stopped");
                    dirty |= index.forget_secrets_of(ns);
                }
                keep
            });
            for ns in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = secret_watches.entry(ns) {
                    let ns = slot.key().clone();
                    info!(namespace = %ns, "watching the names of TLS Secrets");
                    index.set_secret_access(&ns, SecretAccess::Pending);
                    let (tx, to) = (secret_tx.clone(), ns.clone());
                    let task = secrets::watch_names(&client, &ns, move |c| {
                        tx.unbounded_send(Change::Secret(to.clone(), c)).is_ok()
                    });
                    slot.insert(NamespaceWatch {
                        _task: task,
                        listed: false,
                    });
                    dirty = true;
                }
            }
        }
        let synced = n.synced && sel.synced && r.synced && s.synced;
        let built = (dirty && synced).then(|| {
            let started = Instant::now();
            let table = builder.build(&index, &ctx.metrics);
            last_build = started.elapsed();
            (table, started)
        });
        if !synced {
            continue;
        }
        // Only the Secrets the Routes of the last table name (served, accepted) are read and
        // held; any other is forgotten (its read, if one is in flight, is dropped with it). The
        // table just built does not use them.
        let named: BTreeSet<(String, String)> = builder
            .named_secrets()
            .iter()
            .filter(|(ns, _)| secret_watches.contains_key(ns))
            .cloned()
            .collect();
        reads.reads.retain(|key, _| named.contains(key));
        index.retain_secrets(&named);
        for key in &named {
            if !secret_watches.get(&key.0).is_some_and(|w| w.listed) {
                continue;
            }
            if relisted.contains(&key.0) || changed.contains(key) {
                reads.request(key);
            } else if !index.has_secret(key) && !reads.reads.contains_key(key) {
                // Newly named: read it once; its changes come through the watch.
                reads.start(key.clone());
            }
        }
        let (held, bytes) = index.secrets_held();
        ctx.metrics
            .tls_secrets_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        ctx.metrics
            .tls_secret_bytes_held
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        // The first table waits for each Secret watch to list or fail once, and each Secret
        // its Routes name in a listed namespace to be read once, so a router taking over from
        // another does not start without certificates it can read (a table built before that
        // is dropped; the reads' answers build the next).
        let Some((table, started)) = built else {
            continue;
        };
        if !ctx.ready.load(Ordering::SeqCst) && !index.secrets_settled(&named) {
            continue;
        }
        let table = Arc::new(table);
        let generation = table.generation;
        ctx.table.store(table);
        let took = started.elapsed();
        ctx.metrics.table_swap_seconds.observe(took.as_secs_f64());
        ctx.metrics
            .table_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        if !ctx.ready.swap(true, Ordering::SeqCst) {
            info!(
                generation,
                routes = index.route_count(),
                "first routing table published"
            );
        } else {
            debug!(generation, ?took, "routing table published");
        }
        ctx.published.send_replace(generation);
    }
}

/// Applies one watch event to the index; returns whether the index may have changed.
fn apply<K>(
    relist: &mut Relist<K>,
    event: watcher::Event<K>,
    index: &mut Index,
    apply: fn(&mut Index, &K) -> bool,
    delete: fn(&mut Index, &K) -> bool,
    clear: fn(&mut Index),
) -> bool {
    match event {
        watcher::Event::Apply(obj) => apply(index, &obj),
        watcher::Event::Delete(obj) => delete(index, &obj),
        watcher::Event::Init => {
            relist.buffer = Some(Vec::new());
            false
        }
        watcher::Event::InitApply(obj) => {
            relist.buffer.get_or_insert_with(Vec::new).push(obj);
            false
        }
        watcher::Event::InitDone => {
            // A (re-)list replaces what we had: objects deleted while disconnected vanish.
            clear(index);
            for obj in relist.buffer.take().unwrap_or_default() {
                let _ = apply(index, &obj);
            }
            relist.synced = true;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flynn_crds::RouteSpec;
    use serde_json::json;

    fn route(ns: &str, name: &str, spec: RouteSpec, created: i64) -> Route {
        let mut r = Route::new(name, spec);
        r.metadata.namespace = Some(ns.into());
        r.metadata.generation = Some(1);
        r.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        r
    }

    fn slice(
        ns: &str,
        name: &str,
        service: &str,
        port: i32,
        eps: serde_json::Value,
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": port, "protocol": "TCP"}],
            "endpoints": eps,
        }))
        .unwrap()
    }

    #[test]
    fn slices_keep_only_ready_endpoints() {
        let s = slice(
            "ns",
            "web-abc",
            "app-web",
            8080,
            json!([
                {"addresses": ["10.244.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.244.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.0.4"]},
            ]),
        );
        let info = slice_info(&s).unwrap();
        assert_eq!(info.service, ("ns".into(), "app-web".into()));
        let want: Vec<SocketAddr> = vec![
            "10.244.0.1:8080".parse().unwrap(),
            "10.244.0.4:8080".parse().unwrap(),
        ];
        assert_eq!(info.ready, want);
    }

    #[test]
    fn port_choice_prefers_http_then_first_tcp() {
        let p = |name: &str, port: i32, proto: &str| EndpointPort {
            name: Some(name.into()),
            port: Some(port),
            protocol: Some(proto.into()),
            ..EndpointPort::default()
        };
        assert_eq!(
            slice_port(Some(&[p("metrics", 9090, "TCP"), p("http", 80, "TCP")])),
            Some(80)
        );
        assert_eq!(
            slice_port(Some(&[p("dns", 53, "UDP"), p("x", 5000, "TCP")])),
            Some(5000)
        );
        assert_eq!(slice_port(Some(&[])), None);
    }

    #[test]
    fn tables_route_to_services_resolve_conflicts_and_keep_endpoints() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        index.apply_route(&route(
            "ns",
            "old",
            RouteSpec::http("a", "a.example.com"),
            1,
        ));
        index.apply_route(&route(
            "ns",
            "new",
            RouteSpec::http("b", "a.example.com"),
            2,
        ));
        index.apply_route(&route("ns", "db", RouteSpec::tcp("a", "db", 25432), 1));
        index.apply_slice(&slice(
            "ns",
            "s1",
            "a-web",
            8080,
            json!([{"addresses": ["10.244.0.1"]}]),
        ));
        index.apply_slice(&slice(
            "ns",
            "s2",
            "a-web",
            8081,
            json!([{"addresses": ["10.244.0.2"]}]),
        ));
        let mut b = Builder::default();
        let t = b.build(&index, &metrics);
        let e = t.http.lookup("a.example.com", "/x").unwrap();
        assert_eq!(e.key.name, "old");
        assert_eq!(
            e.backend.endpoints.len(),
            2,
            "slices of one Service are merged"
        );
        let lost = t.outcomes.iter().find(|o| o.key.name == "new").unwrap();
        assert!(!lost.programmed);
        assert_eq!(lost.reason, conditions::reasons::CONFLICTING_ROUTE);
        assert!(lost.message.contains("Route old"), "{}", lost.message);
        let db = &t.tcp[&25432];
        assert!(
            db.backend.endpoints.is_empty(),
            "no a-db Service: no endpoints"
        );

        // An endpoint that stays keeps its identity (and pool) across tables.
        let ep1 = e.backend.endpoints[0].clone();
        index.delete_route(&route(
            "ns",
            "old",
            RouteSpec::http("a", "a.example.com"),
            1,
        ));
        let t2 = b.build(&index, &metrics);
        assert_eq!(t2.generation, t.generation + 1);
        let e2 = t2.http.lookup("a.example.com", "/").unwrap();
        assert_eq!(
            e2.key.name, "new",
            "the conflicting route takes over when the owner goes"
        );
        assert!(e2.backend.endpoints.is_empty(), "b-web has no slices");
        index.apply_route(&route(
            "ns",
            "old",
            RouteSpec::http("a", "a.example.com"),
            1,
        ));
        let t3 = b.build(&index, &metrics);
        let e3 = t3.http.lookup("a.example.com", "/").unwrap();
        assert!(
            !Arc::ptr_eq(&e3.backend.endpoints[0], &ep1),
            "an endpoint absent from a table is new when it returns"
        );
    }

    #[test]
    fn routes_in_excluded_namespaces_are_not_served() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        index.apply_route(&route(
            "test-1",
            "r",
            RouteSpec::http("a", "a.example.com"),
            1,
        ));
        index.apply_route(&route("test-1", "db", RouteSpec::tcp("a", "db", 25432), 1));
        let mut ns = Namespace::default();
        ns.metadata.name = Some("test-1".into());
        assert!(index.apply_excluded_namespace(&ns));
        let mut b = Builder::default();
        let t = b.build(&index, &metrics);
        assert!(t.http.lookup("a.example.com", "/").is_none());
        assert!(t.tcp.is_empty(), "no listener for an excluded TCP route");
        assert!(
            t.outcomes.is_empty(),
            "no status for routes another router serves"
        );

        assert!(index.delete_excluded_namespace(&ns));
        let t = b.build(&index, &metrics);
        assert!(t.http.lookup("a.example.com", "/").is_some());
    }

    #[test]
    fn status_only_updates_do_not_rebuild() {
        let mut index = Index::default();
        let mut r = route("ns", "r", RouteSpec::http("a", "a.example.com"), 1);
        assert!(index.apply_route(&r));
        r.status = Some(flynn_crds::RouteStatus {
            url: Some("http://a.example.com/".into()),
            ..Default::default()
        });
        assert!(!index.apply_route(&r), "a status write needs no new table");
        r.metadata.generation = Some(2);
        r.spec.http.as_mut().unwrap().path = "/x".into();
        assert!(index.apply_route(&r));
        let s = slice(
            "ns",
            "s",
            "a-web",
            80,
            json!([{"addresses": ["10.244.0.1"]}]),
        );
        assert!(index.apply_slice(&s));
        assert!(
            !index.apply_slice(&s),
            "an unchanged slice needs no new table"
        );
    }

    fn tls_route(ns: &str, name: &str, domain: &str, secret: &str, created: i64) -> Route {
        let mut spec = RouteSpec::http("a", domain);
        spec.http.as_mut().unwrap().tls_secret_name = Some(secret.into());
        route(ns, name, spec, created)
    }

    fn tls_secret(ns: &str, name: &str, crt: &str, key: &str) -> Secret {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": crt, "tls.key": key},
        }))
        .map(|mut s: Secret| {
            // The API server turns stringData into data; the index reads data.
            s.data = s.string_data.take().map(|d| {
                d.into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                    .collect()
            });
            s
        })
        .unwrap()
    }

    /// A self-signed certificate for `names` and its key, PEM.
    fn cert(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn cert_outcome<'t>(t: &'t Table, name: &str) -> &'t CertVerdict {
        t.outcomes
            .iter()
            .find(|o| o.key.name == name)
            .and_then(|o| o.certificate.as_ref())
            .unwrap_or_else(|| panic!("no certificate verdict for {name}: {:?}", t.outcomes))
    }

    #[test]
    fn a_missing_tls_secret_is_reported() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        index.apply_route(&tls_route("ns", "r", "a.example.com", "a-tls", 1));
        // Before the namespace's Secrets are listed: access pending, not "not found".
        let t = Builder::default().build(&index, &metrics);
        assert_eq!(
            cert_outcome(&t, "r").reason,
            conditions::reasons::SECRET_ACCESS_PENDING
        );
        index.set_secret_access("ns", SecretAccess::Listed);
        // Listed, but not read yet: still pending.
        let mut builder = Builder::default();
        let t = builder.build(&index, &metrics);
        assert_eq!(
            cert_outcome(&t, "r").reason,
            conditions::reasons::SECRET_ACCESS_PENDING
        );
        let named = builder.named_secrets().clone();
        assert_eq!(named.len(), 1);
        assert!(
            !index.secrets_settled(&named),
            "the first table waits for the read"
        );
        assert!(index.apply_read("ns", "a-tls", ReadOutcome::Absent));
        assert!(index.secrets_settled(&named));
        let t = Builder::default().build(&index, &metrics);
        let o = &t.outcomes[0];
        assert!(o.programmed, "served over HTTP: {o:?}");
        let c = cert_outcome(&t, "r");
        assert!(!c.ready);
        assert_eq!(c.reason, conditions::reasons::SECRET_NOT_FOUND);
        assert!(
            t.http.lookup("a.example.com", "/").is_some(),
            "still served over HTTP"
        );
        assert!(t.certs.get("a.example.com").is_none());
    }

    #[test]
    fn a_certificate_is_used_only_if_it_covers_the_host_and_its_key_matches() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        index.set_secret_access("ns", SecretAccess::Listed);
        let (good_crt, good_key) = cert(&["good.example.com"]);
        let (other_crt, other_key) = cert(&["other.example.com"]);
        let (wild_crt, wild_key) = cert(&["*.example.com"]);
        let (_, stranger_key) = cert(&["good.example.com"]);
        for (name, crt, key) in [
            ("good", &good_crt, &good_key),
            ("other", &other_crt, &other_key),
            ("mismatch", &good_crt, &stranger_key),
            ("wild", &wild_crt, &wild_key),
            ("junk", &"not a certificate".to_owned(), &good_key),
        ] {
            index.apply_secret(&tls_secret("ns", name, crt, key));
        }
        // Valid: covers its host, its key.
        index.apply_route(&tls_route("ns", "good", "good.example.com", "good", 1));
        // The attacks, each beside that twin: a certificate for another name, a key that
        // is not the certificate's, a wildcard one label short, not PEM at all.
        index.apply_route(&tls_route("ns", "other", "good2.example.com", "other", 1));
        index.apply_route(&tls_route(
            "ns",
            "mismatch",
            "good3.example.com",
            "mismatch",
            1,
        ));
        index.apply_route(&tls_route("ns", "deep", "a.b.example.com", "wild", 1));
        index.apply_route(&tls_route("ns", "junk", "junk.example.com", "junk", 1));
        // The wildcard's twin: one label under it is covered.
        index.apply_route(&tls_route("ns", "shallow", "a.example.com", "wild", 1));
        let t = Builder::default().build(&index, &metrics);
        let reasons = conditions::reasons::CERTIFICATE_VALID;
        assert_eq!(cert_outcome(&t, "good").reason, reasons);
        assert!(t.certs.get("good.example.com").is_some());
        assert_eq!(cert_outcome(&t, "shallow").reason, reasons);
        for (name, host, reason) in [
            (
                "other",
                "good2.example.com",
                conditions::reasons::HOST_NOT_COVERED,
            ),
            (
                "mismatch",
                "good3.example.com",
                conditions::reasons::KEY_MISMATCH,
            ),
            (
                "deep",
                "a.b.example.com",
                conditions::reasons::HOST_NOT_COVERED,
            ),
            ("junk", "junk.example.com", conditions::reasons::MALFORMED),
        ] {
            let c = cert_outcome(&t, name);
            assert!(!c.ready, "{name}");
            assert_eq!(c.reason, reason, "{name}: {}", c.message);
            assert!(
                t.certs.get(host).is_none(),
                "{name}: no certificate for {host}"
            );
        }
        assert!(
            cert_outcome(&t, "deep")
                .message
                .contains("a.b.example.com or *.b.example.com"),
            "{}",
            cert_outcome(&t, "deep").message
        );
    }

    #[test]
    fn a_certificate_comes_only_from_the_routes_own_namespace() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        let (crt, key) = cert(&["shop.example.com"]);
        // team-a's Secret; team-b's Route names a Secret of the same name.
        index.apply_secret(&tls_secret("team-a", "shop-tls", &crt, &key));
        index.set_secret_access("team-a", SecretAccess::Listed);
        index.set_secret_access("team-b", SecretAccess::Listed);
        // Read in team-b, the Route's namespace: not there.
        index.apply_read("team-b", "shop-tls", ReadOutcome::Absent);
        index.apply_route(&tls_route(
            "team-b",
            "shop",
            "shop.example.com",
            "shop-tls",
            1,
        ));
        let t = Builder::default().build(&index, &metrics);
        assert_eq!(
            cert_outcome(&t, "shop").reason,
            conditions::reasons::SECRET_NOT_FOUND
        );
        assert!(t.certs.get("shop.example.com").is_none());
        // Twin: the same Route in team-a gets it.
        index.apply_route(&tls_route(
            "team-a",
            "shop",
            "shop.example.com",
            "shop-tls",
            0,
        ));
        let t = Builder::default().build(&index, &metrics);
        assert!(cert_outcome(&t, "shop").ready || t.certs.get("shop.example.com").is_some());
        assert!(t.certs.get("shop.example.com").is_some());
    }

    #[test]
    fn another_namespaces_route_for_an_owned_host_is_not_served() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        let mut login = RouteSpec::http("b", "shop.example.com");
        login.http.as_mut().unwrap().path = "/login".into();
        index.apply_route(&route(
            "team-a",
            "shop",
            RouteSpec::http("a", "shop.example.com"),
            1,
        ));
        index.apply_route(&route("team-b", "login", login.clone(), 2));
        // Spelled with a trailing dot and upper case: the same host.
        login.http.as_mut().unwrap().domain = "SHOP.example.com.".into();
        login.http.as_mut().unwrap().path = "/admin".into();
        index.apply_route(&route("team-b", "admin", login, 3));
        let t = Builder::default().build(&index, &metrics);
        for path in ["/login", "/admin", "/"] {
            let e = t.http.lookup("shop.example.com", path).unwrap();
            assert_eq!(e.key.namespace, "team-a", "{path}");
        }
        for name in ["login", "admin"] {
            let o = t.outcomes.iter().find(|o| o.key.name == name).unwrap();
            assert!(!o.programmed);
            assert_eq!(o.reason, conditions::reasons::HOST_OWNED_BY_NAMESPACE);
            assert!(o.message.contains("namespace team-a"), "{}", o.message);
        }
    }

    #[test]
    fn another_namespaces_wildcard_gets_nothing_of_an_owned_host() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        let mut login = RouteSpec::http("a", "shop.example.com");
        login.http.as_mut().unwrap().path = "/login".into();
        index.apply_route(&route("team-a", "login", login, 1));
        let (crt, key) = cert(&["*.example.com"]);
        index.apply_secret(&tls_secret("team-b", "wild-tls", &crt, &key));
        index.set_secret_access("team-b", SecretAccess::Listed);
        index.apply_route(&tls_route("team-b", "wild", "*.example.com", "wild-tls", 2));
        let t = Builder::default().build(&index, &metrics);
        assert_eq!(
            t.http
                .lookup("shop.example.com", "/login")
                .unwrap()
                .key
                .namespace,
            "team-a"
        );
        // team-a routes only /login of its host; the rest is not team-b's.
        assert!(t.http.lookup("shop.example.com", "/").is_none());
        assert!(
            t.certs.get("shop.example.com").is_none(),
            "not team-b's certificate"
        );
        // Twin: a name nobody else holds is the wildcard's.
        assert_eq!(
            t.http
                .lookup("blog.example.com", "/")
                .unwrap()
                .key
                .namespace,
            "team-b"
        );
        assert!(t.certs.get("blog.example.com").is_some());
    }

    #[test]
    fn only_named_secrets_are_held_and_a_failed_read_keeps_the_last_certificate() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        index.set_secret_access("ns", SecretAccess::Listed);
        index.apply_route(&tls_route("ns", "r", "a.example.com", "a-tls", 1));
        let (crt, key) = cert(&["a.example.com"]);
        let named = index.named_secrets();
        assert_eq!(named.len(), 1);
        // A Secret no Route names (as a stale read could bring) goes at the next retain.
        index.apply_secret(&tls_secret("ns", "unnamed", &crt, &key));
        index.apply_secret(&tls_secret("ns", "a-tls", &crt, &key));
        assert_eq!(index.secrets_held().0, 2);
        assert!(index.retain_secrets(&named));
        let (held, bytes) = index.secrets_held();
        assert_eq!((held, bytes), (1, crt.len() + key.len()));
        // A failed read keeps what was read before; a first one that fails says why.
        let failed = ReadOutcome::Failed {
            why: "timeout".into(),
            retrying: true,
        };
        assert!(!index.apply_read("ns", "a-tls", failed.clone()));
        let t = Builder::default().build(&index, &metrics);
        assert!(cert_outcome(&t, "r").ready);
        index.apply_route(&tls_route("ns", "s", "b.example.com", "b-tls", 1));
        assert!(index.apply_read("ns", "b-tls", failed));
        let t = Builder::default().build(&index, &metrics);
        let c = cert_outcome(&t, "s");
        assert_eq!(c.reason, conditions::reasons::SECRET_ACCESS_PENDING);
        assert!(c.message.contains("timeout"), "{}", c.message);
        // Deleted: not found, and nothing held of it.
        assert!(index.apply_read("ns", "a-tls", ReadOutcome::Absent));
        let t = Builder::default().build(&index, &metrics);
        assert_eq!(
            cert_outcome(&t, "r").reason,
            conditions::reasons::SECRET_NOT_FOUND
        );
        assert_eq!(index.secrets_held(), (0, 0));
    }

    #[test]
    fn a_certificate_chain_over_the_limit_is_refused() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        index.set_secret_access("ns", SecretAccess::Listed);
        let (crt, key) = cert(&["big.example.com"]);
        // The attack: a valid chain, the certificate repeated past the limit.
        let big = crt.repeat(secrets::MAX_TLS_CRT_BYTES / crt.len() + 1);
        assert!(big.len() > secrets::MAX_TLS_CRT_BYTES);
        index.apply_secret(&tls_secret("ns", "big", &big, &key));
        index.apply_route(&tls_route("ns", "big", "big.example.com", "big", 1));
        // The twin: a chain just under the limit is parsed and used.
        let (fcrt, fkey) = cert(&["fits.example.com"]);
        let fits = fcrt.repeat(secrets::MAX_TLS_CRT_BYTES / fcrt.len());
        assert!(fits.len() <= secrets::MAX_TLS_CRT_BYTES);
        assert!(fits.len() > secrets::MAX_TLS_CRT_BYTES - fcrt.len());
        index.apply_secret(&tls_secret("ns", "fits", &fits, &fkey));
        index.apply_route(&tls_route("ns", "fits", "fits.example.com", "fits", 1));
        let t = Builder::default().build(&index, &metrics);
        let c = cert_outcome(&t, "big");
        assert!(!c.ready);
        assert_eq!(c.reason, conditions::reasons::MALFORMED);
        assert!(
            c.message.contains(&format!(
                "tls.crt is {} bytes, over the router's limit of {} bytes",
                big.len(),
                secrets::MAX_TLS_CRT_BYTES
            )),
            "{}",
            c.message
        );
        assert!(t.certs.get("big.example.com").is_none());
        assert!(cert_outcome(&t, "fits").ready);
        assert!(t.certs.get("fits.example.com").is_some());
        assert_eq!(index.secrets_held(), (1, fits.len() + fkey.len()));
    }

    #[test]
    fn a_route_that_is_not_served_gets_no_secret_read() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        index.apply_route(&tls_route("team-a", "shop", "shop.example.com", "a-tls", 1));
        // The attack: team-b names its own Secret on team-a's host; refused, so not read.
        index.apply_route(&tls_route("team-b", "shop", "shop.example.com", "b-tls", 2));
        let mut builder = Builder::default();
        let t = builder.build(&index, &metrics);
        let refused = t
            .outcomes
            .iter()
            .find(|o| o.key.namespace == "team-b")
            .unwrap();
        assert_eq!(refused.reason, conditions::reasons::HOST_OWNED_BY_NAMESPACE);
        // The twin, served, is read.
        let named: Vec<_> = builder.named_secrets().iter().cloned().collect();
        assert_eq!(named, vec![("team-a".to_owned(), "a-tls".to_owned())]);
    }

    #[test]
    fn tcp_ports_outside_the_range_are_never_in_the_table() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        index.apply_route(&route("ns", "ssh", RouteSpec::tcp("a", "ssh", 2222), 1));
        index.apply_route(&route("ns", "db", RouteSpec::tcp("a", "db", 20001), 1));
        let policy = Policy {
            tcp_ports: "20000-20010".parse().unwrap(),
            ..Policy::default()
        };
        let t = Builder::new(policy).build(&index, &metrics);
        assert!(!t.tcp.contains_key(&2222));
        assert!(t.tcp.contains_key(&20001));
        let o = t.outcomes.iter().find(|o| o.key.name == "ssh").unwrap();
        assert_eq!(o.reason, conditions::reasons::PORT_OUT_OF_RANGE);
        assert!(o.message.contains("20000-20010"), "{}", o.message);
    }
}
