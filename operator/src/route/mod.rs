//! The Route reconciler: conflicts across all namespaces (the oldest Route wins),
//! `Accepted` / `Conflict` conditions and the Route's URL. The router reports
//! `Programmed` itself, under its own field manager.

use std::sync::Arc;

use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::{Route, RouteStatus, RouteType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::Context;
use crate::cache::{Cached, Packed};
use crate::error::Result;

pub const CONTROLLER: &str = "route";

/// What two Routes must not share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKey {
    Http { domain: String, path: String },
    Tcp { port: i32 },
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteKey::Http { domain, path } => write!(f, "domain {domain} path {path}"),
            RouteKey::Tcp { port } => write!(f, "TCP port {port}"),
        }
    }
}

pub fn key(r: &Route) -> Option<RouteKey> {
    match r.spec.type_ {
        RouteType::Http => r.spec.http.as_ref().map(|h| RouteKey::Http {
            domain: h.domain.to_ascii_lowercase(),
            path: h.path.clone(),
        }),
        RouteType::Tcp => r.spec.tcp.as_ref().map(|t| RouteKey::Tcp { port: t.port }),
    }
}

/// Sort key deciding who owns a contested key: the oldest, then namespace/name, so the
/// answer is the same on every replica and every pass.
fn seniority(r: &Route) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        r.namespace().unwrap_or_default(),
        r.name_any(),
    )
}

/// The Route that owns `route`'s key among `all` (possibly `route` itself).
pub fn winner<'a>(route: &'a Route, all: &'a [Arc<Route>]) -> &'a Route {
    let Some(k) = key(route) else { return route };
    all.iter()
        .map(AsRef::as_ref)
        .filter(|r| r.metadata.deletion_timestamp.is_none() && key(r).as_ref() == Some(&k))
        .chain(std::iter::once(route))
        .min_by_key(|r| seniority(r))
        .unwrap_or(route)
}

/// The URL a Route serves: `https://` when it has a certificate.
pub fn url(r: &Route) -> Option<String> {
    match r.spec.type_ {
        RouteType::Http => r.spec.http.as_ref().map(|h| {
            let scheme = if h.tls_secret_name.is_some() {
                "https"
            } else {
                "http"
            };
            let path = if h.path == "/" { "" } else { h.path.as_str() };
            format!("{scheme}://{}{path}", h.domain)
        }),
        RouteType::Tcp => r.spec.tcp.as_ref().map(|t| format!("tcp://:{}", t.port)),
    }
}

/// The status the operator owns on a Route, given all Routes.
pub fn desired_status(route: &Route, all: &[Arc<Route>], now: Time) -> RouteStatus {
    let generation = route.metadata.generation;
    let old = route.status.clone().unwrap_or_default();
    let mut status = RouteStatus {
        conditions: old.conditions.clone(),
        observed_generation: generation,
        url: url(route),
        conflicts_with: None,
    };
    let w = winner(route, all);
    let ours = w.namespace() == route.namespace() && w.name_any() == route.name_any();
    if ours {
        conditions::set(
            &mut status.conditions,
            conditions::new(
                types::ACCEPTED,
                true,
                reasons::ACCEPTED,
                "the route is valid and no older route claims it".to_owned(),
                generation,
                now.clone(),
            ),
        );
        conditions::set(
            &mut status.conditions,
            conditions::new(
                types::CONFLICT,
                false,
                reasons::ACCEPTED,
                String::new(),
                generation,
                now,
            ),
        );
    } else {
        let other = format!("{}/{}", w.namespace().unwrap_or_default(), w.name_any());
        let what = key(route).map(|k| k.to_string()).unwrap_or_default();
        let msg = format!(
            "{what} is already routed by Route {other}, which is older (the oldest Route wins): choose another {}, or delete {other}",
            if matches!(route.spec.type_, RouteType::Tcp) {
                "port"
            } else {
                "domain or path"
            }
        );
        conditions::set(
            &mut status.conditions,
            conditions::new(
                types::ACCEPTED,
                false,
                reasons::CONFLICTING_ROUTE,
                msg.clone(),
                generation,
                now.clone(),
            ),
        );
        conditions::set(
            &mut status.conditions,
            conditions::new(
                types::CONFLICT,
                true,
                reasons::CONFLICTING_ROUTE,
                msg,
                generation,
                now,
            ),
        );
        status.conflicts_with = Some(other);
    }
    status
}

#[tracing::instrument(skip_all, fields(route = %route.name_any(), namespace = route.namespace().unwrap_or_default()))]
pub async fn reconcile(route: Arc<Packed<Route>>, ctx: Arc<Context>) -> Result<Action> {
    let route = ctx.caches.routes.fresh(&route)?;
    let ns = route.namespace().unwrap_or_default();
    if let Some(action) = ctx.out_of_scope(Some(&ns)) {
        return Ok(action);
    }
    if route.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // The Routes contending for its key (only those are unpacked).
    let all = match route.tag() {
        Some(key) => ctx.caches.routes.tagged(&key)?,
        None => Vec::new(),
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = desired_status(&route, &all, now);
    let old = route.status.clone().unwrap_or_default();
    // Only our fields: the router's Programmed condition is its own.
    let ours = |s: &RouteStatus| {
        (
            s.url.clone(),
            s.conflicts_with.clone(),
            s.observed_generation,
            conditions::find(&s.conditions, types::ACCEPTED).cloned(),
            conditions::find(&s.conditions, types::CONFLICT).cloned(),
        )
    };
    if ours(&status) == ours(&old) {
        return Ok(Action::await_change());
    }
    if status.conflicts_with.is_some() && old.conflicts_with != status.conflicts_with {
        let msg = conditions::find(&status.conditions, types::CONFLICT)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(route.as_ref(), true, reasons::CONFLICTING_ROUTE, msg)
            .await;
    }
    // Apply only the operator's conditions: the list is a map keyed by type, so the
    // router's `Programmed` entry, applied by its own manager, stays.
    let conds: Vec<_> = status
        .conditions
        .iter()
        .filter(|c| c.type_ == types::ACCEPTED || c.type_ == types::CONFLICT)
        .collect();
    let patch = serde_json::json!({
        "url": status.url, "conflictsWith": status.conflicts_with,
        "observedGeneration": status.observed_generation, "conditions": conds,
    });
    ctx.apply_status(&ctx.caches.routes, route.as_ref(), patch)
        .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(ns: &str, name: &str, created: &str, spec: serde_json::Value) -> Arc<Route> {
        Arc::new(serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created, "generation": 1},
            "spec": spec,
        })).unwrap())
    }

    fn http(domain: &str, path: &str) -> serde_json::Value {
        json!({"type": "http", "app": "shop", "http": {"domain": domain, "path": path}})
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(2_000_000_000).unwrap())
    }

    #[test]
    fn the_oldest_route_wins_across_namespaces() {
        let a = route(
            "team-a",
            "shop",
            "2026-01-01T00:00:00Z",
            http("shop.example.com", "/"),
        );
        let b = route(
            "team-b",
            "shop",
            "2026-02-01T00:00:00Z",
            http("Shop.example.com", "/"),
        );
        let c = route(
            "team-b",
            "api",
            "2026-03-01T00:00:00Z",
            http("shop.example.com", "/api"),
        );
        let all = vec![a.clone(), b.clone(), c.clone()];
        let sa = desired_status(&a, &all, now());
        assert!(conditions::is_true(&sa.conditions, types::ACCEPTED));
        assert_eq!(sa.url.as_deref(), Some("http://shop.example.com"));
        let sb = desired_status(&b, &all, now());
        assert!(conditions::is_true(&sb.conditions, types::CONFLICT));
        assert_eq!(sb.conflicts_with.as_deref(), Some("team-a/shop"));
        let msg = &conditions::find(&sb.conditions, types::CONFLICT)
            .unwrap()
            .message;
        assert!(
            msg.contains("domain shop.example.com path / is already routed by Route team-a/shop"),
            "{msg}"
        );
        // A different path is a different key.
        let sc = desired_status(&c, &all, now());
        assert!(conditions::is_true(&sc.conditions, types::ACCEPTED));
        assert_eq!(sc.url.as_deref(), Some("http://shop.example.com/api"));
    }

    #[test]
    fn tcp_ports_conflict_and_a_deleted_winner_hands_over() {
        let a = route(
            "x",
            "db",
            "2026-01-01T00:00:00Z",
            json!({"type": "tcp", "app": "db", "tcp": {"port": 5432}}),
        );
        let b = route(
            "y",
            "db",
            "2026-01-02T00:00:00Z",
            json!({"type": "tcp", "app": "db", "tcp": {"port": 5432}}),
        );
        let all = vec![a.clone(), b.clone()];
        assert!(conditions::is_true(
            &desired_status(&b, &all, now()).conditions,
            types::CONFLICT
        ));
        // Both are found by the key they contend for (what a change re-checks).
        assert_eq!(a.tag().as_deref(), Some("TCP port 5432"));
        assert_eq!(a.tag(), b.tag());
        let all = vec![b.clone()];
        let s = desired_status(&b, &all, now());
        assert!(conditions::is_true(&s.conditions, types::ACCEPTED));
        assert_eq!(s.url.as_deref(), Some("tcp://:5432"));
    }

    #[test]
    fn tls_routes_are_https() {
        let r = route(
            "x",
            "s",
            "2026-01-01T00:00:00Z",
            json!({"type": "http", "app": "s", "http": {"domain": "s.example.com", "path": "/", "tlsSecretName": "s-tls"}}),
        );
        assert_eq!(url(&r).as_deref(), Some("https://s.example.com"));
    }
}
