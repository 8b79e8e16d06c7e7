//! The config source: watches Routes, EndpointSlices and TLS Secrets into an index, and
//! publishes a new immutable [`Table`] after every batch of changes.
//!
//! This is the index pattern (apply / delete / reset per kind, as linkerd's policy controller),
//! not a reconciler: the router keeps a model of what it watches and derives the whole table
//! from it. Events that arrive together are applied together and cost one table build.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use flynn_crds::{Route, RouteType, conditions, names};
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
    table::{Backend, Endpoint, HttpEntry, RouteKey, RouteOutcome, Table, TableHandle, TcpEntry},
    tls,
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
    /// The `Programmed` condition as last seen, to skip no-op status writes.
    pub programmed: Option<Condition>,
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
    secrets: HashMap<(String, String), Result<Arc<CertifiedKey>, String>>,
    /// Namespaces carrying the exclusion label: their Routes are not served.
    excluded: HashSet<String>,
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
        let info = RouteInfo {
            spec: route.spec.clone(),
            generation: route.metadata.generation,
            created: route.metadata.creation_timestamp.clone(),
            programmed,
        };
        let key = RouteKey { namespace, name };
        let changed = self.routes.get(&key).is_none_or(|old| {
            old.spec != info.spec
                || old.generation != info.generation
                || old.created != info.created
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

    /// Adds or replaces a TLS Secret (parsed now, so a bad one is reported once).
    pub fn apply_secret(&mut self, secret: &Secret) -> bool {
        self.secrets.insert(key_of(secret), secret_cert(secret));
        true
    }

    /// Removes a TLS Secret.
    pub fn delete_secret(&mut self, secret: &Secret) -> bool {
        self.secrets.remove(&key_of(secret)).is_some()
    }

    /// Number of Routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

fn secret_cert(secret: &Secret) -> Result<Arc<CertifiedKey>, String> {
    let data = secret.data.as_ref();
    let get = |k: &'static str| {
        data.and_then(|d| d.get(k))
            .map(|b| b.0.as_slice())
            .ok_or(tls::CertError::Missing(k))
    };
    get("tls.crt")
        .and_then(|crt| tls::certified_key(crt, get("tls.key")?))
        .map_err(|e| e.to_string())
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
}

impl Builder {
    /// A table from `index`.
    pub fn build(&mut self, index: &Index, metrics: &SharedMetrics) -> Table {
        self.generation += 1;
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

        // Oldest first: the Route that was there first keeps a contested domain+path or port.
        let mut routes: Vec<(&RouteKey, &RouteInfo)> = index
            .routes
            .iter()
            .filter(|(key, _)| !index.excluded.contains(&key.namespace))
            .collect();
        routes.sort_by(|a, b| {
            let ts = |r: &RouteInfo| r.created.as_ref().map(|t| t.0);
            ts(a.1).cmp(&ts(b.1)).then_with(|| a.0.cmp(b.0))
        });
        let mut table = Table {
            generation: self.generation,
            ..Table::default()
        };
        let mut tcp_owner: HashMap<u16, &RouteKey> = HashMap::new();
        let mut http_owner: HashMap<(String, String), &RouteKey> = HashMap::new();
        for (key, route) in routes {
            let service = names::service_name(&route.spec.app, &route.spec.process);
            let route_metrics = match self.route_metrics.get(key) {
                Some(m) => m.clone(),
                None => {
                    let m = metrics.route(&key.to_string());
                    self.route_metrics.insert(key.clone(), m.clone());
                    m
                }
            };
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
            };
            match (route.spec.type_, &route.spec.http, &route.spec.tcp) {
                (RouteType::Http, Some(http), _) => {
                    let entry = Arc::new(HttpEntry {
                        key: key.clone(),
                        backend: backend_of(&key.namespace, service),
                        sticky: http.sticky,
                        https_redirect: http.https_redirect,
                        metrics: route_metrics,
                    });
                    let domain = crate::matcher::normalize_host(&http.domain);
                    if table.http.insert(&domain, &http.path, entry).is_err() {
                        let owner = http_owner
                            .get(&(domain.clone(), http.path.clone()))
                            .map(|k| k.to_string())
                            .unwrap_or_default();
                        outcome.programmed = false;
                        outcome.reason = conditions::reasons::CONFLICTING_ROUTE;
                        outcome.message = format!(
                            "route {owner} already serves {}{}; this route gets no traffic",
                            http.domain, http.path
                        );
                    } else {
                        http_owner.insert((domain.clone(), http.path.clone()), key);
                        if let Some(secret) = &http.tls_secret_name {
                            match index.secrets.get(&(key.namespace.clone(), secret.clone())) {
                                Some(Ok(cert)) => table.certs.insert(&domain, cert.clone()),
                                Some(Err(e)) => {
                                    outcome.programmed = false;
                                    outcome.reason = conditions::reasons::INVALID_CERTIFICATE;
                                    outcome.message = format!(
                                        "TLS Secret {secret} is invalid ({e}); serving plain HTTP only"
                                    );
                                }
                                None => {
                                    outcome.programmed = false;
                                    outcome.reason = conditions::reasons::INVALID_CERTIFICATE;
                                    outcome.message = format!(
                                        "TLS Secret {secret} (type kubernetes.io/tls) not found; serving plain HTTP only"
                                    );
                                }
                            }
                        }
                    }
                }
                (RouteType::Tcp, _, Some(tcp)) => {
                    let Ok(port) = u16::try_from(tcp.port) else {
                        continue;
                    };
                    if let Some(owner) = tcp_owner.get(&port) {
                        outcome.programmed = false;
                        outcome.reason = conditions::reasons::CONFLICTING_ROUTE;
                        outcome.message = format!(
                            "route {owner} already uses TCP port {port}; this route gets no traffic"
                        );
                    } else {
                        tcp_owner.insert(port, key);
                        table.tcp.insert(
                            port,
                            Arc::new(TcpEntry {
                                key: key.clone(),
                                backend: backend_of(&key.namespace, service),
                                metrics: route_metrics,
                            }),
                        );
                    }
                }
                // The API server refuses a type without its block.
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
                    metrics.forget_route(&key.to_string());
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
}

enum Change {
    Namespace(watcher::Event<Namespace>),
    Route(watcher::Event<Route>),
    Slice(watcher::Event<EndpointSlice>),
    Secret(watcher::Event<Secret>),
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
/// them, e.g. a test's own).
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
    let secrets = watcher(
        api::<Secret>(&client, ns),
        watcher::Config::default().fields("type=kubernetes.io/tls"),
    )
    .default_backoff()
    .map(|e| e.map(Change::Secret));
    let mut streams: Vec<BoxStream<'static, Result<Change, watcher::Error>>> =
        vec![routes.boxed(), slices.boxed(), secrets.boxed()];
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
    let mut events = futures::stream::select_all(streams);

    let mut index = Index::default();
    let mut builder = Builder::default();
    let mut last_build = std::time::Duration::ZERO;
    let (mut r, mut s, mut t) = (
        Relist::<Route>::default(),
        Relist::<EndpointSlice>::default(),
        Relist::<Secret>::default(),
    );
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
                Ok(Change::Secret(e)) => {
                    dirty |= apply(
                        &mut t,
                        e,
                        &mut index,
                        Index::apply_secret,
                        Index::delete_secret,
                        |i| i.secrets.clear(),
                    )
                }
                // The watcher retries with backoff by itself; the table stays as it was.
                Err(e) => warn!(error = %e, "watch error; retrying"),
            }
        }
        if dirty && n.synced && r.synced && s.synced && t.synced {
            let started = Instant::now();
            let table = Arc::new(builder.build(&index, &ctx.metrics));
            last_build = started.elapsed();
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
        index.apply_route(&route("ns", "db", RouteSpec::tcp("a", "db", 5432), 1));
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
        assert!(lost.message.contains("ns/old"), "{}", lost.message);
        let db = &t.tcp[&5432];
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
        index.apply_route(&route("test-1", "db", RouteSpec::tcp("a", "db", 5432), 1));
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

    #[test]
    fn a_missing_tls_secret_is_reported() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut index = Index::default();
        let mut spec = RouteSpec::http("a", "a.example.com");
        spec.http.as_mut().unwrap().tls_secret_name = Some("a-tls".into());
        index.apply_route(&route("ns", "r", spec, 1));
        let t = Builder::default().build(&index, &metrics);
        let o = &t.outcomes[0];
        assert_eq!(o.reason, conditions::reasons::INVALID_CERTIFICATE);
        assert!(
            t.http.lookup("a.example.com", "/").is_some(),
            "still served over HTTP"
        );
    }
}
