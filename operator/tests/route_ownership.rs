//! Host names belong to the namespace that claimed them first: the operator's `Accepted`
//! verdicts across two namespaces (each with its own scoped operator, which reads every
//! namespace's Routes, as the installed one does). Each refusal beside a valid twin.
//!
//! Hosts are under the test's own namespace name, so tests running at once never contend.

mod common;

use std::time::Duration;

use common::*;
use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::{App, Route, RouteSpec};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn http(name: &str, domain: &str, path: &str) -> Route {
    let mut spec = RouteSpec::http("shop", domain);
    spec.http.as_mut().unwrap().path = path.to_owned();
    Route::new(name, spec)
}

async fn create(api: &Api<Route>, route: Route) {
    api.create(&PostParams::default(), &route).await.unwrap();
}

/// The Route's `Accepted` condition once it is there: (status, reason, message).
async fn accepted(api: &Api<Route>, name: &str) -> (String, String, String) {
    let r = eventually(
        &format!("an Accepted verdict on {name}"),
        T,
        || get(api, name),
        |r: &Option<Route>| {
            r.as_ref()
                .and_then(|r| r.status.as_ref())
                .is_some_and(|s| conditions::find(&s.conditions, types::ACCEPTED).is_some())
        },
    )
    .await
    .unwrap();
    let c = conditions::find(&r.status.as_ref().unwrap().conditions, types::ACCEPTED).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Waits a second: creationTimestamp has one-second resolution, and "first" must be first.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn another_namespace_gets_no_path_of_an_owned_host_and_learns_only_its_namespace() {
    let (a, _op_a) = setup("own-a").await;
    let (b, _op_b) = setup("own-b").await;
    let (ra, rb): (Api<Route>, Api<Route>) = (a.api(), b.api());
    let shop = format!("shop.{}.test", a.name());

    create(&ra, http("storefront", &shop, "/")).await;
    next_second().await;
    // The attack: team B routes /login of team A's host.
    create(&rb, http("login", &shop, "/login")).await;
    // The twin: team A routes /login itself.
    create(&ra, http("login", &shop, "/login")).await;

    let (status, reason, message) = accepted(&rb, "login").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::HOST_OWNED_BY_NAMESPACE)
    );
    assert!(
        message.contains(&format!("namespace {}", a.name())),
        "{message}"
    );
    assert!(
        !message.contains("storefront"),
        "A's Route is not named: {message}"
    );
    let b_login = get(&rb, "login").await.unwrap();
    assert_eq!(
        b_login.status.unwrap().conflicts_with,
        None,
        "conflictsWith names no Route of another namespace"
    );
    let (status, ..) = accepted(&ra, "login").await;
    assert_eq!(status, "True");
    let (status, ..) = accepted(&ra, "storefront").await;
    assert_eq!(status, "True");

    // Spelled with a trailing dot, the same host is refused by the API server's schema
    // (a Route's domain is one normal form); the twin without it is stored.
    let err = rb
        .create(
            &PostParams::default(),
            &http("dot", &format!("{shop}."), "/x"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.http.domain"), "{err}");
    create(
        &rb,
        http("nodot", &format!("shop2.{}.test", a.name()), "/x"),
    )
    .await;
    let (status, ..) = accepted(&rb, "nodot").await;
    assert_eq!(status, "True", "a host nobody holds is B's");
}

#[tokio::test]
async fn a_wildcard_claims_only_names_no_other_namespace_holds() {
    let (a, _op_a) = setup("own-wild-a").await;
    let (b, _op_b) = setup("own-wild-b").await;
    let (ra, rb): (Api<Route>, Api<Route>) = (a.api(), b.api());
    let zone = format!("{}.test", a.name());

    create(&ra, http("shop", &format!("shop.{zone}"), "/")).await;
    next_second().await;
    create(&rb, http("wild", &format!("*.{zone}"), "/")).await;
    next_second().await;
    // B's exact route for A's host: refused. A second wildcard, in A: B's is older.
    create(&rb, http("shop", &format!("shop.{zone}"), "/b")).await;
    create(&ra, http("wild", &format!("*.{zone}"), "/a")).await;
    // Twins: a name under B's wildcard, routed exactly by B; A's own host stays A's.
    create(&rb, http("blog", &format!("blog.{zone}"), "/")).await;

    let (status, ..) = accepted(&rb, "wild").await;
    assert_eq!(
        status, "True",
        "the wildcard serves the names nobody else holds"
    );
    let (status, reason, message) = accepted(&rb, "shop").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::HOST_OWNED_BY_NAMESPACE)
    );
    assert!(
        message.contains(&format!("namespace {}", a.name())),
        "{message}"
    );
    let (status, reason, message) = accepted(&ra, "wild").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::HOST_OWNED_BY_NAMESPACE)
    );
    assert!(
        message.contains(&format!("namespace {}", b.name())),
        "{message}"
    );
    assert_eq!(accepted(&rb, "blog").await.0, "True");
    assert_eq!(accepted(&ra, "shop").await.0, "True");
}

#[tokio::test]
async fn a_wildcard_over_the_default_domain_needs_the_platform_to_allow_it() {
    // Each operator with a default domain of its own, so the allowed wildcard covers no
    // other test's default Routes.
    let strict_domain = format!("strict-{}.flynn.test", std::process::id());
    let (strict, _op) = setup_with("own-dd-strict", |s| {
        s.default_domain = strict_domain.clone();
    })
    .await;
    let allowing_domain = format!("allowing-{}.flynn.test", std::process::id());
    let (allowing, _op2) = setup_with("own-dd-allow", |s| {
        s.default_domain = allowing_domain.clone();
        s.allow_default_domain_wildcard = true;
    })
    .await;
    let (rs, ra): (Api<Route>, Api<Route>) = (strict.api(), allowing.api());
    create(&rs, http("wild", &format!("*.{strict_domain}"), "/")).await;
    create(&ra, http("wild", &format!("*.{allowing_domain}"), "/")).await;
    // Twin of the refusal: a wildcard one level below the default domain is fine.
    create(&rs, http("below", &format!("*.x.{strict_domain}"), "/")).await;

    let (status, reason, message) = accepted(&rs, "wild").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::WILDCARD_NOT_ALLOWED)
    );
    assert!(message.contains(&strict_domain), "{message}");
    assert_eq!(accepted(&ra, "wild").await.0, "True");
    assert_eq!(accepted(&rs, "below").await.0, "True");
}

#[tokio::test]
async fn two_apps_of_one_name_in_two_namespaces_the_second_is_told_what_to_do() {
    let domain = format!("dup-{}.flynn.test", std::process::id());
    let (a, _op_a) = setup_with("own-app-a", |s| s.default_domain = domain.clone()).await;
    let (b, _op_b) = setup_with("own-app-b", |s| s.default_domain = domain.clone()).await;
    let app = |name: &str| -> App {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "App",
            "metadata": {"name": name}, "spec": {},
        }))
        .unwrap()
    };
    let (aa, ab): (Api<App>, Api<App>) = (a.api(), b.api());
    aa.create(&PostParams::default(), &app("web"))
        .await
        .unwrap();
    next_second().await;
    ab.create(&PostParams::default(), &app("web"))
        .await
        .unwrap();
    // Twin: another name in B has its own default Route.
    ab.create(&PostParams::default(), &app("api"))
        .await
        .unwrap();

    let told = |a: &Option<App>| {
        a.as_ref()
            .and_then(|a| condition(a, types::DEFAULT_ROUTE_ACCEPTED))
            .is_some()
    };
    let b_web = eventually(
        "B's web to say whether its default Route is served",
        T,
        || get(&ab, "web"),
        told,
    )
    .await
    .unwrap();
    let (status, reason, message) = condition(&b_web, types::DEFAULT_ROUTE_ACCEPTED).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::HOST_OWNED_BY_NAMESPACE)
    );
    assert!(message.contains(&format!("web.{domain}")), "{message}");
    assert!(
        message.contains(&format!("namespace {}", a.name())),
        "{message}"
    );
    assert!(message.contains("rename this App"), "{message}");
    assert!(message.contains("flynn route add"), "{message}");
    for (api, name) in [(&aa, "web"), (&ab, "api")] {
        let got = eventually(
            &format!("{name} to say its default Route is served"),
            T,
            || get(api, name),
            |a: &Option<App>| {
                a.as_ref()
                    .and_then(|a| condition(a, types::DEFAULT_ROUTE_ACCEPTED))
                    .is_some_and(|c| c.0 == "True")
            },
        )
        .await;
        assert!(got.is_some());
    }
}

#[tokio::test]
async fn tcp_ports_come_from_the_platforms_range() {
    let (ns, _op) = setup_with("own-tcp", |s| {
        s.tcp_ports = "21000-21099".parse().unwrap();
    })
    .await;
    let routes: Api<Route> = ns.api();
    // The attack: the git receiver's port. The twin: a port in the range.
    create(
        &routes,
        Route::new("ssh", RouteSpec::tcp("shop", "ssh", 2222)),
    )
    .await;
    create(
        &routes,
        Route::new("db", RouteSpec::tcp("shop", "db", 21042)),
    )
    .await;
    let (status, reason, message) = accepted(&routes, "ssh").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::PORT_OUT_OF_RANGE)
    );
    assert!(message.contains("21000-21099"), "{message}");
    assert_eq!(accepted(&routes, "db").await.0, "True");
}
