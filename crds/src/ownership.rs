//! Which Routes are served: the one rule the operator (which reports it as `Accepted`) and the
//! router (which serves by it, even when the operator is down or behind) both run.
//!
//! - **A host name belongs to one namespace**: the namespace of the oldest Route claiming it
//!   (oldest `creationTimestamp`, then namespace/name, so every replica agrees, as OpenShift's
//!   `host_admitter` does). Routes of any other namespace for that host, whatever their path,
//!   are not served. Within the owning namespace, two Routes of the same host and path: the
//!   oldest is served.
//! - **A wildcard** `*.example.com` claims the names of one more label that no other
//!   namespace held before it: an exact host another namespace claimed first stays that
//!   namespace's, and a later exact Route of another namespace under the wildcard is not
//!   served (the name was the wildcard's already). Of two wildcards for one suffix, the older
//!   one's namespace owns it.
//! - **The platform's default domain** (`<app>.<defaultDomain>` names belong to Apps) cannot be
//!   covered by a wildcard unless [`Policy::allow_default_domain_wildcard`] says so.
//! - **TCP ports** must lie in [`Policy::tcp_ports`]; of two Routes for one port the oldest is
//!   served.
//!
//! Messages about another namespace's claim name that namespace only, never the other Route's
//! name, path or backend: a tenant learns who to ask, not what another tenant runs.
//!
//! [`decide`] sorts once and indexes claims by host and port, so 10,000 Routes cost
//! O(n log n), not a comparison of every pair.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::conditions::reasons;
use crate::host::{Host, HostError};
use crate::{Route, RouteSpec, RouteType};

/// The ports TCP Routes may use, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest allowed port.
    pub first: u16,
    /// Highest allowed port.
    pub last: u16,
}

impl PortRange {
    /// 20000-29999. Below it are ports nodes already use (kubelet 10250, kube-proxy 10249
    /// and 10256, the API server 6443, etcd 2379-2380, the git receiver 2222, the router's
    /// own 80, 443, 9090); above it Kubernetes' NodePort range (30000-32767, where the local
    /// cluster's receiver is) and Linux's ephemeral ports (32768-60999). A tenant's TCP Route
    /// cannot take any of those.
    pub const DEFAULT: Self = Self {
        first: 20000,
        last: 29999,
    };

    /// Whether `port` is in the range.
    pub fn contains(&self, port: i32) -> bool {
        i32::from(self.first) <= port && port <= i32::from(self.last)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A port range flag that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a port range: {why} (write FIRST-LAST, e.g. 20000-29999, ports 1-65535)")]
pub struct PortRangeError {
    given: String,
    why: &'static str,
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    /// `FIRST-LAST` (or one port).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| PortRangeError {
            given: s.to_owned(),
            why,
        };
        let (first, last) = s.trim().split_once('-').unwrap_or((s.trim(), s.trim()));
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| err("each end must be a port, 1-65535"))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first > last {
            return Err(err("the first port is above the last"));
        }
        Ok(Self { first, last })
    }
}

/// What the platform allows (operator and router flags; the chart sets both alike).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The domain of Apps' default Routes (`<app>.<domain>`), normalised; `None` if the
    /// component does not know it (then no wildcard is refused for covering it).
    pub default_domain: Option<String>,
    /// Let a Route's wildcard cover the default domain (`*.<defaultDomain>`).
    pub allow_default_domain_wildcard: bool,
    /// Ports TCP Routes may use.
    pub tcp_ports: PortRange,
}

impl Policy {
    /// A policy with `default_domain` (normalised; ignored if malformed).
    pub fn with_default_domain(mut self, domain: &str) -> Self {
        self.default_domain = match Host::parse(domain) {
            Ok(Host::Exact(d)) => Some(d),
            _ => None,
        };
        self
    }

    /// Whether a wildcard of `suffix` covers the default domain: `*.<domain>` itself, or a
    /// wildcard one label above it that matches the domain's own name.
    fn covers_default_domain(&self, suffix: &str) -> bool {
        self.default_domain.as_deref().is_some_and(|d| {
            d == suffix
                || d.split_once('.')
                    .is_some_and(|(_, parent)| parent == suffix)
        })
    }
}

/// A Route as [`decide`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub created: Option<Timestamp>,
    /// Being deleted: it claims nothing.
    pub deleting: bool,
    pub spec: &'a RouteSpec,
}

impl<'a> Candidate<'a> {
    /// The candidate of a Route object.
    pub fn of(route: &'a Route) -> Self {
        Self {
            namespace: route.metadata.namespace.as_deref().unwrap_or_default(),
            name: route.metadata.name.as_deref().unwrap_or_default(),
            created: route.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: route.metadata.deletion_timestamp.is_some(),
            spec: &route.spec,
        }
    }

    /// Oldest first, then namespace and name: the same order on every replica.
    fn seniority(&self) -> (Option<Timestamp>, &'a str, &'a str) {
        (self.created, self.namespace, self.name)
    }
}

/// What a Route contends for: the index key Routes that may affect each other share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Claim {
    /// An HTTP Route's host (exact or wildcard), normalised.
    Host(Host),
    /// A TCP Route's port.
    Port(i32),
}

impl Claim {
    /// What `spec` contends for; `None` if its host is malformed or its block is missing.
    pub fn of(spec: &RouteSpec) -> Option<Self> {
        match spec.type_ {
            RouteType::Http => Host::parse(&spec.http.as_ref()?.domain)
                .ok()
                .map(Self::Host),
            RouteType::Tcp => spec.tcp.map(|t| Self::Port(t.port)),
        }
    }

    /// The claims whose Routes can change the verdict on a Route claiming `self`: its own,
    /// and for an exact host the wildcard covering it.
    pub fn contenders(&self) -> Vec<Claim> {
        let mut out = vec![self.clone()];
        if let Self::Host(h @ Host::Exact(_)) = self
            && let Some(suffix) = h.wildcard_suffix()
        {
            out.push(Self::Host(Host::Wildcard(suffix.to_owned())));
        }
        out
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(h) => write!(f, "host {h}"),
            Self::Port(p) => write!(f, "TCP port {p}"),
        }
    }
}

/// Why a Route is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `spec.http.domain` is not a host name.
    MalformedHost { domain: String, error: HostError },
    /// `spec.type` names a block that is missing (the API server refuses this).
    Incomplete,
    /// The Route is being deleted.
    Deleting,
    /// A wildcard over the platform's default domain, which the platform does not allow.
    WildcardNotAllowed {
        wildcard: String,
        default_domain: String,
    },
    /// Another namespace owns the host.
    HostOwnedByNamespace { host: String, namespace: String },
    /// An older Route of the same namespace has the same host and path.
    PathTaken {
        host: String,
        path: String,
        route: String,
    },
    /// The TCP port is outside the platform's range.
    PortOutOfRange { port: i32, range: PortRange },
    /// An older Route has the port; `route` is named only when it is in the same namespace.
    PortTaken {
        port: i32,
        namespace: String,
        route: Option<String>,
    },
}

impl Refusal {
    /// The condition reason (see [`crate::conditions::reasons`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedHost { .. } | Self::Incomplete => reasons::INVALID_HOST,
            Self::Deleting => reasons::DELETING,
            Self::WildcardNotAllowed { .. } => reasons::WILDCARD_NOT_ALLOWED,
            Self::HostOwnedByNamespace { .. } => reasons::HOST_OWNED_BY_NAMESPACE,
            Self::PathTaken { .. } => reasons::CONFLICTING_ROUTE,
            Self::PortOutOfRange { .. } => reasons::PORT_OUT_OF_RANGE,
            Self::PortTaken { route: Some(_), .. } => reasons::CONFLICTING_ROUTE,
            Self::PortTaken { route: None, .. } => reasons::PORT_OWNED_BY_NAMESPACE,
        }
    }

    /// The conflicting Route of the same namespace, if that is the reason.
    pub fn same_namespace_route(&self) -> Option<&str> {
        match self {
            Self::PathTaken { route, .. } => Some(route),
            Self::PortTaken { route, .. } => route.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedHost { domain, error } => {
                write!(f, "spec.http.domain {domain:?} is not a host name: {error}")
            }
            Self::Incomplete => f.write_str(
                "spec.type names a block (spec.http or spec.tcp) that is not set: set it",
            ),
            Self::Deleting => f.write_str("the Route is being deleted"),
            Self::WildcardNotAllowed {
                wildcard,
                default_domain,
            } => write!(
                f,
                "{wildcard} covers the platform's default domain {default_domain}, whose names \
                 belong to Apps (<app>.{default_domain}), and the platform does not allow such \
                 wildcards: use a domain of your own"
            ),
            Self::HostOwnedByNamespace { host, namespace } => write!(
                f,
                "host {host} belongs to namespace {namespace}, whose Route claimed it first; a \
                 host is served for one namespace only, whatever the path: choose another \
                 domain, or ask the owners of namespace {namespace} to route it"
            ),
            Self::PathTaken { host, path, route } => write!(
                f,
                "domain {host} path {path} is already routed by Route {route} of this \
                 namespace, which is older (the oldest Route wins): choose another domain or \
                 path, or delete {route}"
            ),
            Self::PortOutOfRange { port, range } => write!(
                f,
                "TCP port {port} is outside the ports the platform allows for TCP Routes, \
                 {range}: choose a port in {range}"
            ),
            Self::PortTaken {
                port,
                route: Some(route),
                ..
            } => write!(
                f,
                "TCP port {port} is already routed by Route {route} of this namespace, which \
                 is older (the oldest Route wins): choose another port, or delete {route}"
            ),
            Self::PortTaken {
                port,
                namespace,
                route: None,
            } => write!(
                f,
                "TCP port {port} is already used by a Route of namespace {namespace}, which is \
                 older (the oldest Route wins): choose another port"
            ),
        }
    }
}

/// The verdict on one Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Served.
    Served,
    /// Not served, and why.
    Refused(Refusal),
}

impl Verdict {
    /// Whether the Route is served.
    pub fn is_served(&self) -> bool {
        matches!(self, Self::Served)
    }
}

/// The verdicts on a set of Routes, and who owns which host.
#[derive(Debug, Default)]
pub struct Decisions {
    /// One per candidate, in the candidates' order.
    pub verdicts: Vec<Verdict>,
    /// Exact host → the namespace owning it (of hosts some Route names exactly).
    hosts: HashMap<String, String>,
    /// Wildcard suffix → the namespace owning the wildcard.
    wildcards: HashMap<String, String>,
}

impl Decisions {
    /// The namespace owning `name` (a normalised exact name): its own claim, else the
    /// wildcard's covering it.
    pub fn owner(&self, name: &str) -> Option<&str> {
        self.hosts
            .get(name)
            .or_else(|| self.wildcards.get(name.split_once('.')?.1))
            .map(String::as_str)
    }

    /// The namespace owning the wildcard `*.<suffix>`.
    pub fn wildcard_owner(&self, suffix: &str) -> Option<&str> {
        self.wildcards.get(suffix).map(String::as_str)
    }
}

/// The verdict on every candidate under `policy` (see the module's rules).
pub fn decide(candidates: &[Candidate<'_>], policy: &Policy) -> Decisions {
    let n = candidates.len();
    let mut verdicts: Vec<Option<Verdict>> = vec![None; n];
    let mut claims: Vec<Option<Claim>> = vec![None; n];
    // Checks that need no other Route.
    for (i, c) in candidates.iter().enumerate() {
        if c.deleting {
            verdicts[i] = Some(Verdict::Refused(Refusal::Deleting));
            continue;
        }
        match (c.spec.type_, &c.spec.http, &c.spec.tcp) {
            (RouteType::Http, Some(http), _) => match Host::parse(&http.domain) {
                Err(error) => {
                    verdicts[i] = Some(Verdict::Refused(Refusal::MalformedHost {
                        domain: http.domain.clone(),
                        error,
                    }))
                }
                Ok(Host::Wildcard(suffix))
                    if !policy.allow_default_domain_wildcard
                        && policy.covers_default_domain(&suffix) =>
                {
                    verdicts[i] = Some(Verdict::Refused(Refusal::WildcardNotAllowed {
                        wildcard: format!("*.{suffix}"),
                        default_domain: policy.default_domain.clone().unwrap_or_default(),
                    }))
                }
                Ok(host) => claims[i] = Some(Claim::Host(host)),
            },
            (RouteType::Tcp, _, Some(tcp)) if !policy.tcp_ports.contains(tcp.port) => {
                verdicts[i] = Some(Verdict::Refused(Refusal::PortOutOfRange {
                    port: tcp.port,
                    range: policy.tcp_ports,
                }))
            }
            (RouteType::Tcp, _, Some(tcp)) => claims[i] = Some(Claim::Port(tcp.port)),
            _ => verdicts[i] = Some(Verdict::Refused(Refusal::Incomplete)),
        }
    }

    // Oldest first: the first claim met is the one that stands.
    let mut order: Vec<usize> = (0..n).filter(|&i| claims[i].is_some()).collect();
    order.sort_by(|&a, &b| candidates[a].seniority().cmp(&candidates[b].seniority()));

    // Wildcards first, each with the rank (age) of its oldest Route, so an exact host can
    // tell whether the wildcard covering it came before it.
    let mut wildcards: HashMap<&str, (usize, &str)> = HashMap::new();
    for (rank, &i) in order.iter().enumerate() {
        if let Some(Claim::Host(Host::Wildcard(suffix))) = &claims[i] {
            wildcards
                .entry(suffix.as_str())
                .or_insert((rank, candidates[i].namespace));
        }
    }
    let mut hosts: HashMap<&str, &str> = HashMap::new();
    // (host or "*.suffix", path) → the Route serving it, within the owner's namespace.
    let mut paths: HashMap<(String, &str), &str> = HashMap::new();
    let mut ports: HashMap<i32, &Candidate<'_>> = HashMap::new();
    for (rank, &i) in order.iter().enumerate() {
        let c = &candidates[i];
        let verdict = match &claims[i] {
            Some(Claim::Host(host)) => {
                let owner = match host {
                    Host::Wildcard(suffix) => wildcards.get(suffix.as_str()).map(|w| w.1),
                    Host::Exact(name) => Some(*hosts.entry(name.as_str()).or_insert_with(|| {
                        match host.wildcard_suffix().and_then(|s| wildcards.get(s)) {
                            Some(&(wildcard_rank, ns)) if wildcard_rank < rank => ns,
                            _ => c.namespace,
                        }
                    })),
                }
                .unwrap_or(c.namespace);
                let path = c.spec.http.as_ref().map_or("/", |h| h.path.as_str());
                if owner != c.namespace {
                    Verdict::Refused(Refusal::HostOwnedByNamespace {
                        host: host.to_string(),
                        namespace: owner.to_owned(),
                    })
                } else {
                    match paths.entry((host.to_string(), path)) {
                        std::collections::hash_map::Entry::Occupied(first) => {
                            Verdict::Refused(Refusal::PathTaken {
                                host: host.to_string(),
                                path: path.to_owned(),
                                route: (*first.get()).to_owned(),
                            })
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(c.name);
                            Verdict::Served
                        }
                    }
                }
            }
            Some(Claim::Port(port)) => match ports.get(port) {
                Some(first) => Verdict::Refused(Refusal::PortTaken {
                    port: *port,
                    namespace: first.namespace.to_owned(),
                    route: (first.namespace == c.namespace).then(|| first.name.to_owned()),
                }),
                None => {
                    ports.insert(*port, c);
                    Verdict::Served
                }
            },
            None => continue,
        };
        verdicts[i] = Some(verdict);
    }
    Decisions {
        verdicts: verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Verdict::Refused(Refusal::Incomplete)))
            .collect(),
        hosts: hosts
            .into_iter()
            .map(|(h, ns)| (h.to_owned(), ns.to_owned()))
            .collect(),
        wildcards: wildcards
            .into_iter()
            .map(|(s, (_, ns))| (s.to_owned(), ns.to_owned()))
            .collect(),
    }
}

/// [`decide`] for Route objects.
pub fn decide_routes<'a>(
    routes: impl IntoIterator<Item = &'a Route>,
    policy: &Policy,
) -> Decisions {
    let candidates: Vec<Candidate<'_>> = routes.into_iter().map(Candidate::of).collect();
    decide(&candidates, policy)
}

/// `<namespace>/<name>` of a Route, for logs.
pub fn route_ref(route: &Route) -> String {
    format!(
        "{}/{}",
        route.namespace().unwrap_or_default(),
        route.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R {
        ns: &'static str,
        name: &'static str,
        at: i64,
        spec: RouteSpec,
    }

    fn http(ns: &'static str, name: &'static str, at: i64, domain: &str, path: &str) -> R {
        let mut spec = RouteSpec::http("app", domain);
        spec.http.as_mut().unwrap().path = path.to_owned();
        R { ns, name, at, spec }
    }

    fn tcp(ns: &'static str, name: &'static str, at: i64, port: i32) -> R {
        R {
            ns,
            name,
            at,
            spec: RouteSpec::tcp("app", "db", port),
        }
    }

    fn run(routes: &[R], policy: &Policy) -> (Vec<Verdict>, Decisions) {
        let cands: Vec<Candidate<'_>> = routes
            .iter()
            .map(|r| Candidate {
                namespace: r.ns,
                name: r.name,
                created: Some(Timestamp::from_second(r.at).unwrap()),
                deleting: false,
                spec: &r.spec,
            })
            .collect();
        let d = decide(&cands, policy);
        (d.verdicts.clone(), d)
    }

    fn owned_by(ns: &str, host: &str) -> Verdict {
        Verdict::Refused(Refusal::HostOwnedByNamespace {
            host: host.into(),
            namespace: ns.into(),
        })
    }

    #[test]
    fn another_namespace_gets_no_path_of_an_owned_host() {
        // The attack: team-b routes /login of team-a's host. The twin: team-a itself adds
        // /login, which is served.
        let routes = [
            http("team-a", "shop", 1, "shop.example.com", "/"),
            http("team-b", "login", 2, "shop.example.com", "/login"),
            http("team-a", "login", 3, "shop.example.com", "/login"),
        ];
        let (v, d) = run(&routes, &Policy::default());
        assert_eq!(v[0], Verdict::Served);
        assert_eq!(v[1], owned_by("team-a", "shop.example.com"));
        assert_eq!(v[2], Verdict::Served);
        assert_eq!(d.owner("shop.example.com"), Some("team-a"));
        // The message names the namespace, not its Route, path or App.
        let msg = match &v[1] {
            Verdict::Refused(r) => r.to_string(),
            Verdict::Served => unreachable!(),
        };
        assert!(msg.contains("namespace team-a"), "{msg}");
        assert!(!msg.contains("shop\"") && !msg.contains(" / ") && !msg.contains("app"));
    }

    #[test]
    fn the_same_host_differently_spelled_is_the_same_host() {
        let routes = [
            http("team-a", "shop", 1, "shop.example.com", "/"),
            http("team-b", "dot", 2, "shop.example.com.", "/x"),
            http("team-b", "case", 3, "SHOP.Example.com", "/y"),
        ];
        let (v, _) = run(&routes, &Policy::default());
        assert_eq!(v[1], owned_by("team-a", "shop.example.com"));
        assert_eq!(v[2], owned_by("team-a", "shop.example.com"));
        // Twin: another host entirely is team-b's.
        let routes = [
            http("team-a", "shop", 1, "shop.example.com", "/"),
            http("team-b", "dot", 2, "shop2.example.com.", "/x"),
        ];
        assert_eq!(run(&routes, &Policy::default()).0[1], Verdict::Served);
    }

    #[test]
    fn within_a_namespace_the_oldest_of_one_host_and_path_wins() {
        let routes = [
            http("a", "new", 2, "shop.example.com", "/"),
            http("a", "old", 1, "shop.example.com", "/"),
        ];
        let (v, _) = run(&routes, &Policy::default());
        assert_eq!(v[1], Verdict::Served);
        let Verdict::Refused(r) = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(r.same_namespace_route(), Some("old"));
        assert_eq!(r.reason(), reasons::CONFLICTING_ROUTE);
    }

    #[test]
    fn ties_in_age_are_broken_by_namespace_then_name() {
        let routes = [
            http("b", "r", 1, "shop.example.com", "/"),
            http("a", "r", 1, "shop.example.com", "/x"),
        ];
        let (v, _) = run(&routes, &Policy::default());
        assert_eq!(v[0], owned_by("a", "shop.example.com"));
        assert_eq!(v[1], Verdict::Served);
    }

    #[test]
    fn a_wildcard_claims_only_names_no_other_namespace_held_first() {
        let routes = [
            // team-a holds shop exactly, before team-b's wildcard.
            http("team-a", "shop", 1, "shop.example.com", "/"),
            http("team-b", "wild", 2, "*.example.com", "/"),
            // Under team-b's wildcard, later: team-c may not take a name of it.
            http("team-c", "blog", 3, "blog.example.com", "/"),
            // team-b's own exact name under its wildcard: fine.
            http("team-b", "api", 4, "api.example.com", "/"),
            // A second wildcard for the suffix, in another namespace: the first wins.
            http("team-c", "wild", 5, "*.example.com", "/x"),
        ];
        let (v, d) = run(&routes, &Policy::default());
        assert_eq!(v[0], Verdict::Served);
        assert_eq!(v[1], Verdict::Served);
        assert_eq!(v[2], owned_by("team-b", "blog.example.com"));
        assert_eq!(v[3], Verdict::Served);
        assert_eq!(v[4], owned_by("team-b", "*.example.com"));
        assert_eq!(d.owner("shop.example.com"), Some("team-a"));
        assert_eq!(d.owner("anything.example.com"), Some("team-b"));
        assert_eq!(d.wildcard_owner("example.com"), Some("team-b"));
        assert_eq!(d.owner("a.b.example.com"), None, "one label only");
    }

    #[test]
    fn wildcards_over_the_default_domain_need_the_platform_to_allow_them() {
        let routes = [
            http("b", "wild", 1, "*.apps.flynn.local", "/"),
            http("b", "above", 2, "*.flynn.local", "/"),
            http("b", "below", 3, "*.x.apps.flynn.local", "/"),
            http("b", "other", 4, "*.example.com", "/"),
        ];
        let strict = Policy::default().with_default_domain("Apps.Flynn.Local.");
        let (v, _) = run(&routes, &strict);
        for i in [0, 1] {
            let Verdict::Refused(r) = &v[i] else {
                panic!("{i}: {v:?}")
            };
            assert_eq!(r.reason(), reasons::WILDCARD_NOT_ALLOWED);
            assert!(r.to_string().contains("apps.flynn.local"), "{r}");
        }
        assert_eq!(v[2], Verdict::Served, "names below <app>.apps.flynn.local");
        assert_eq!(v[3], Verdict::Served);
        let allowing = Policy {
            allow_default_domain_wildcard: true,
            ..strict
        };
        let (v, _) = run(&routes, &allowing);
        assert!(v.iter().all(Verdict::is_served), "{v:?}");
    }

    #[test]
    fn tcp_ports_must_be_in_the_range_and_the_oldest_wins() {
        let policy = Policy {
            tcp_ports: "20000-20010".parse().unwrap(),
            ..Policy::default()
        };
        let routes = [
            tcp("a", "ssh", 1, 2222),
            tcp("a", "db", 1, 20000),
            tcp("b", "db", 2, 20000),
            tcp("a", "db2", 3, 20000),
            tcp("a", "top", 1, 20010),
            tcp("a", "over", 1, 20011),
        ];
        let (v, _) = run(&routes, &policy);
        let Verdict::Refused(r) = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(r.reason(), reasons::PORT_OUT_OF_RANGE);
        assert!(r.to_string().contains("20000-20010"), "{r}");
        assert_eq!(v[1], Verdict::Served);
        assert_eq!(
            v[2],
            Verdict::Refused(Refusal::PortTaken {
                port: 20000,
                namespace: "a".into(),
                route: None
            })
        );
        let Verdict::Refused(r) = &v[3] else {
            panic!("{v:?}")
        };
        assert_eq!(r.same_namespace_route(), Some("db"));
        assert_eq!(v[4], Verdict::Served);
        assert!(matches!(
            v[5],
            Verdict::Refused(Refusal::PortOutOfRange { .. })
        ));
    }

    #[test]
    fn malformed_and_deleting_routes_claim_nothing() {
        let routes = [
            http("a", "bad", 1, "a..example.com", "/"),
            http("b", "gone", 1, "shop.example.com", "/"),
            http("c", "shop", 2, "shop.example.com", "/"),
        ];
        let mut cands: Vec<Candidate<'_>> = routes
            .iter()
            .map(|r| Candidate {
                namespace: r.ns,
                name: r.name,
                created: Some(Timestamp::from_second(r.at).unwrap()),
                deleting: false,
                spec: &r.spec,
            })
            .collect();
        cands[1].deleting = true;
        let d = decide(&cands, &Policy::default());
        assert_eq!(
            d.verdicts[0],
            Verdict::Refused(Refusal::MalformedHost {
                domain: "a..example.com".into(),
                error: HostError::EmptyLabel
            })
        );
        assert_eq!(d.verdicts[1], Verdict::Refused(Refusal::Deleting));
        assert_eq!(
            d.verdicts[2],
            Verdict::Served,
            "the deleted route held nothing"
        );
    }

    #[test]
    fn port_ranges_parse_or_say_how_to_write_them() {
        assert_eq!(
            "30000-32767".parse::<PortRange>(),
            Ok(PortRange {
                first: 30000,
                last: 32767
            })
        );
        assert_eq!(
            "5432".parse::<PortRange>(),
            Ok(PortRange {
                first: 5432,
                last: 5432
            })
        );
        for bad in ["", "0-10", "10-5", "1-70000", "a-b"] {
            let e = bad.parse::<PortRange>().unwrap_err();
            assert!(e.to_string().contains("FIRST-LAST"), "{e}");
        }
    }

    #[test]
    fn ten_thousand_routes_are_decided_by_index() {
        // Not a timing test: the result is what a pairwise rule would give, and the run
        // is bounded by the sort (see the router's table benchmark for figures).
        let routes: Vec<R> = (0..10_000)
            .map(|i| {
                let ns: &'static str = if i % 2 == 0 { "a" } else { "b" };
                let domain = format!("app{}.example.com", i / 2);
                http(ns, "r", i, &domain, "/")
            })
            .collect();
        let (v, _) = run(&routes, &Policy::default());
        for (i, verdict) in v.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(*verdict, Verdict::Served);
            } else {
                assert_eq!(
                    *verdict,
                    owned_by("a", &format!("app{}.example.com", i / 2))
                );
            }
        }
    }
}
