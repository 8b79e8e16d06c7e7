//! The Route reconciler: whether a Route is served, by the one rule in
//! [`flynn_crds::ownership`] (host names belong to the namespace that claimed them first;
//! within it, the oldest Route of a host and path; TCP ports in the platform's range), as
//! `Accepted` / `Conflict` conditions and the Route's URL. The router decides with the same
//! function and reports `Programmed` (and `CertificateReady`) itself, under its own field
//! manager.
//!
//! A refusal because of another namespace names that namespace only: `conflictsWith` and the
//! messages never carry another tenant's Route name, path or backend.

use std::collections::HashSet;
use std::sync::Arc;

use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::ownership::{self, Claim, Policy, Verdict};
use flynn_crds::{Route, RouteStatus, RouteType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::Context;
use crate::cache::{Cache, Polled, Projection, RouteView};
use crate::error::Result;

pub const CONTROLLER: &str = "route";

/// What a Route contends for (its cache tag): `host <name>`, `host *.<suffix>` or
/// `TCP port <n>`, the host normalised as the router compares it.
pub fn key(r: &Route) -> Option<Claim> {
    Claim::of(&r.spec)
}

/// The Routes to reconcile again after `changed` changed: those claiming the same thing,
/// and, for a wildcard, the exact hosts under it (their owner may have changed).
pub fn affected(cache: &Cache<RouteView>, changed: &RouteView) -> Vec<ObjectRef<RouteView>> {
    match changed.claim() {
        Some(claim) => cache.affected_by(&claim),
        None => Vec::new(),
    }
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
            let host = flynn_crds::host::normalize(&h.domain).unwrap_or_else(|| h.domain.clone());
            format!("{scheme}://{host}{path}")
        }),
        RouteType::Tcp => r.spec.tcp.as_ref().map(|t| format!("tcp://:{}", t.port)),
    }
}

/// The verdict on `route` among `contenders` (Routes of any namespace claiming what it
/// claims; `route` itself may or may not be among them).
pub fn verdict(route: &Route, contenders: &[Arc<Route>], policy: &Policy) -> Verdict {
    let me = (route.namespace(), route.name_any());
    let others = contenders
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| (r.namespace(), r.name_any()) != me);
    let all: Vec<&Route> = std::iter::once(route).chain(others).collect();
    ownership::decide_routes(all, policy)
        .verdicts
        .swap_remove(0)
}

/// The status the operator owns on a Route, given its contenders.
pub fn desired_status(
    route: &Route,
    contenders: &[Arc<Route>],
    policy: &Policy,
    now: Time,
) -> RouteStatus {
    let generation = route.metadata.generation;
    let old = route.status.clone().unwrap_or_default();
    let mut status = RouteStatus {
        conditions: old.conditions.clone(),
        observed_generation: generation,
        url: url(route),
        conflicts_with: None,
    };
    let (accepted, reason, message, conflict) = match verdict(route, contenders, policy) {
        Verdict::Served => (
            true,
            reasons::ACCEPTED,
            "the route is valid and no older route claims it".to_owned(),
            false,
        ),
        Verdict::Refused(why) => {
            // Only a Route of the same namespace is named; another namespace's stays private.
            status.conflicts_with = why
                .same_namespace_route()
                .map(|name| format!("{}/{name}", route.namespace().unwrap_or_default()));
            let conflict = matches!(
                why.reason(),
                reasons::CONFLICTING_ROUTE
                    | reasons::HOST_OWNED_BY_NAMESPACE
                    | reasons::PORT_OWNED_BY_NAMESPACE
            );
            (false, why.reason(), why.to_string(), conflict)
        }
    };
    conditions::set(
        &mut status.conditions,
        conditions::new(
            types::ACCEPTED,
            accepted,
            reason,
            message.clone(),
            generation,
            now.clone(),
        ),
    );
    conditions::set(
        &mut status.conditions,
        conditions::new(
            types::CONFLICT,
            conflict,
            if conflict { reason } else { reasons::ACCEPTED },
            if conflict { message } else { String::new() },
            generation,
            now,
        ),
    );
    status
}

/// The Routes `route` contends with, from the cache: those claiming its host or port and
/// the wildcard covering its host, in any namespace but those the installed router leaves
/// out (the exclusion label), as the router itself counts them.
fn contenders(route: &Route, ctx: &Context) -> Result<Vec<Arc<Route>>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for claim in key(route).map(|c| c.contenders()).unwrap_or_default() {
        for r in ctx.caches.routes.claiming(&claim.to_string()) {
            if seen.insert((r.namespace(), r.name_any()))
                && !excluded(ctx, r.namespace().as_deref())
            {
                out.push(Arc::new(r.object()));
            }
        }
    }
    Ok(out)
}

/// Whether `namespace` carries the exclusion label (its Routes are another router's).
fn excluded(ctx: &Context, namespace: Option<&str>) -> bool {
    let (Some(store), Some(label), Some(ns)) = (
        &ctx.excluded_namespaces,
        &ctx.settings.exclude_namespace_label,
        namespace,
    ) else {
        return false;
    };
    store
        .get(&ObjectRef::new(ns))
        .is_some_and(|meta| meta.labels().contains_key(label))
}

#[tracing::instrument(skip_all, fields(route = %route.name_any(), namespace = route.namespace().unwrap_or_default()))]
pub async fn reconcile(route: Arc<RouteView>, ctx: Arc<Context>) -> Result<Action> {
    let route = Arc::new(ctx.caches.routes.fresh(&route).object());
    let ns = route.namespace().unwrap_or_default();
    if let Some(action) = ctx.out_of_scope(Some(&ns)) {
        return Ok(action);
    }
    if route.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let all = contenders(&route, &ctx)?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = desired_status(&route, &all, &ctx.settings.route_policy(), now);
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
    let refused = conditions::find(&status.conditions, types::ACCEPTED)
        .filter(|c| c.status == conditions::status::FALSE);
    let was = conditions::find(&old.conditions, types::ACCEPTED);
    if let Some(c) = refused
        && was.is_none_or(|w| w.reason != c.reason || w.message != c.message)
    {
        ctx.event(route.as_ref(), true, &c.reason, c.message.clone())
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

    fn policy() -> Policy {
        Settings::default().route_policy()
    }

    use crate::Settings;
    use crate::cache::Projection;

    fn accepted(s: &RouteStatus) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        conditions::find(&s.conditions, types::ACCEPTED).unwrap()
    }

    #[test]
    fn another_namespace_is_refused_any_path_and_told_only_the_owning_namespace() {
        let a = route(
            "team-a",
            "shop",
            "2026-01-01T00:00:00Z",
            http("shop.example.com", "/"),
        );
        // The attack: another path of team-a's host, from team-b.
        let b = route(
            "team-b",
            "login",
            "2026-02-01T00:00:00Z",
            http("shop.example.com", "/login"),
        );
        // The twin: the same path from team-a itself.
        let c = route(
            "team-a",
            "login",
            "2026-03-01T00:00:00Z",
            http("shop.example.com", "/login"),
        );
        let all = vec![a.clone(), b.clone(), c.clone()];
        let sa = desired_status(&a, &all, &policy(), now());
        assert!(conditions::is_true(&sa.conditions, types::ACCEPTED));
        assert_eq!(sa.url.as_deref(), Some("http://shop.example.com"));
        let sb = desired_status(&b, &all, &policy(), now());
        let cond = accepted(&sb);
        assert_eq!(cond.status, "False");
        assert_eq!(cond.reason, reasons::HOST_OWNED_BY_NAMESPACE);
        assert!(
            cond.message.contains("namespace team-a"),
            "{}",
            cond.message
        );
        assert!(!cond.message.contains("team-a/shop"), "{}", cond.message);
        assert!(conditions::is_true(&sb.conditions, types::CONFLICT));
        assert_eq!(
            sb.conflicts_with, None,
            "another namespace's Route is not named"
        );
        let sc = desired_status(&c, &all, &policy(), now());
        assert!(conditions::is_true(&sc.conditions, types::ACCEPTED));
        assert_eq!(sc.url.as_deref(), Some("http://shop.example.com/login"));
    }

    #[test]
    fn within_a_namespace_the_conflicting_route_is_named() {
        let a = route(
            "x",
            "old",
            "2026-01-01T00:00:00Z",
            http("shop.example.com", "/"),
        );
        let b = route(
            "x",
            "new",
            "2026-01-02T00:00:00Z",
            http("Shop.Example.com.", "/"),
        );
        let all = vec![a.clone(), b.clone()];
        let sb = desired_status(&b, &all, &policy(), now());
        assert_eq!(accepted(&sb).reason, reasons::CONFLICTING_ROUTE);
        assert_eq!(sb.conflicts_with.as_deref(), Some("x/old"));
        assert_eq!(sb.url.as_deref(), Some("http://shop.example.com"));
        assert!(
            accepted(&sb).message.contains("Route old"),
            "{}",
            accepted(&sb).message
        );
    }

    #[test]
    fn tcp_ports_conflict_and_a_deleted_winner_hands_over() {
        let a = route(
            "x",
            "db",
            "2026-01-01T00:00:00Z",
            json!({"type": "tcp", "app": "db", "tcp": {"port": 25432}}),
        );
        let b = route(
            "y",
            "db",
            "2026-01-02T00:00:00Z",
            json!({"type": "tcp", "app": "db", "tcp": {"port": 25432}}),
        );
        let all = vec![a.clone(), b.clone()];
        let sb = desired_status(&b, &all, &policy(), now());
        assert_eq!(accepted(&sb).reason, reasons::PORT_OWNED_BY_NAMESPACE);
        assert_eq!(sb.conflicts_with, None);
        // Both are found by the key they contend for (what a change re-checks).
        assert_eq!(
            RouteView::project((*a).clone()).claim().as_deref(),
            Some("TCP port 25432")
        );
        assert_eq!(
            RouteView::project((*a).clone()).claim(),
            RouteView::project((*b).clone()).claim()
        );
        let all = vec![b.clone()];
        let s = desired_status(&b, &all, &policy(), now());
        assert!(conditions::is_true(&s.conditions, types::ACCEPTED));
        assert_eq!(s.url.as_deref(), Some("tcp://:25432"));
    }

    #[test]
    fn tcp_ports_outside_the_range_are_refused_naming_it() {
        let out = route(
            "x",
            "ssh",
            "2026-01-01T00:00:00Z",
            json!({"type": "tcp", "app": "git", "tcp": {"port": 2222}}),
        );
        let s = desired_status(&out, &[], &policy(), now());
        assert_eq!(accepted(&s).reason, reasons::PORT_OUT_OF_RANGE);
        assert!(
            accepted(&s).message.contains("20000-29999"),
            "{}",
            accepted(&s).message
        );
        let wide = Policy {
            tcp_ports: "2000-3000".parse().unwrap(),
            ..policy()
        };
        let s = desired_status(&out, &[], &wide, now());
        assert!(conditions::is_true(&s.conditions, types::ACCEPTED));
    }

    #[test]
    fn hosts_differently_spelled_share_a_tag_and_wildcards_their_own() {
        let a = route(
            "x",
            "a",
            "2026-01-01T00:00:00Z",
            http("shop.example.com", "/"),
        );
        let b = route(
            "y",
            "b",
            "2026-01-01T00:00:00Z",
            http("SHOP.example.com.", "/x"),
        );
        assert_eq!(
            RouteView::project((*a).clone()).claim().as_deref(),
            Some("host shop.example.com")
        );
        assert_eq!(
            RouteView::project((*a).clone()).claim(),
            RouteView::project((*b).clone()).claim()
        );
        let w = route("y", "w", "2026-01-01T00:00:00Z", http("*.example.com", "/"));
        assert_eq!(
            RouteView::project((*w).clone()).claim().as_deref(),
            Some("host *.example.com")
        );
        let claims: Vec<String> = key(&a)
            .unwrap()
            .contenders()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(claims, ["host shop.example.com", "host *.example.com"]);
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
