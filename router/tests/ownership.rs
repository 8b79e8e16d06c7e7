//! Traffic belongs to the namespace that owns the host name, through a real router: one
//! in-process router serving two test namespaces (picked by `--namespace-selector`), Routes,
//! Secrets and EndpointSlices created for real, requests and TLS handshakes sent to it. Each
//! refusal beside a valid twin. The router decides by itself: no operator runs here.

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flynn_crds::{Route, RouteSpec, conditions, ownership::PortRange};
use flynn_e2e::{TestNamespace, install_flynn_crds};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SELECTOR_LABEL: &str = "flynn.io/router-ownership-test";

/// Two test namespaces labelled for one router, and that router.
async fn two_namespaces(
    test: &str,
    tweak: impl FnOnce(&mut flynn_router::Config),
) -> (TestNamespace, TestNamespace, flynn_router::Router) {
    let a = TestNamespace::create(&format!("{test}-a")).await;
    let b = TestNamespace::create(&format!("{test}-b")).await;
    install_flynn_crds(a.client()).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(a.client().clone());
    for ns in [a.name(), b.name()] {
        namespaces
            .patch(
                ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {SELECTOR_LABEL: a.name()}}})),
            )
            .await
            .unwrap();
    }
    let selector = format!("{SELECTOR_LABEL}={}", a.name());
    let router = router_with(a.client().clone(), a.name(), |c| {
        c.namespace = None;
        c.namespace_selector = Some(selector);
        tweak(c);
    })
    .await;
    (a, b, router)
}

async fn create_route(ns: &TestNamespace, name: &str, spec: RouteSpec) {
    ns.api::<Route>()
        .create(&PostParams::default(), &Route::new(name, spec))
        .await
        .unwrap();
}

fn http(app: &str, domain: &str, path: &str, tls: Option<&str>) -> RouteSpec {
    let mut spec = RouteSpec::http(app, domain);
    let h = spec.http.as_mut().unwrap();
    h.path = path.to_owned();
    h.tls_secret_name = tls.map(str::to_owned);
    spec
}

/// The router's condition `type_` on a Route, once it has a settled one (not
/// `SecretAccessPending`, which a namespace's certificates are until its Secrets are listed).
async fn condition(ns: &TestNamespace, route: &str, type_: &str) -> Condition {
    let api = ns.api::<Route>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = api
            .get(route)
            .await
            .ok()
            .and_then(|r| r.status)
            .and_then(|s| conditions::find(&s.conditions, type_).cloned())
            .filter(|c| c.reason != conditions::reasons::SECRET_ACCESS_PENDING);
        if let Some(c) = found {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {type_} on {}/{route}",
            ns.name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits one second: creationTimestamp has one-second resolution.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn a_host_is_served_for_the_namespace_that_claimed_it_first() {
    let (a, b, router) = two_namespaces("own-http", |_| {}).await;
    let net = Netns::create();
    let (ba, bb) = (
        Backend::http(&net, "a", 8080).await,
        Backend::http(&net, "b", 8080).await,
    );
    put_slice(
        &a.api(),
        "shop-web-1",
        "shop-web",
        8080,
        &[(ba.addr.ip(), true)],
    )
    .await;
    put_slice(
        &b.api(),
        "evil-web-1",
        "evil-web",
        8080,
        &[(bb.addr.ip(), true)],
    )
    .await;
    let zone = format!("{}.test", a.name());
    let (shop, account) = (format!("shop.{zone}"), format!("account.{zone}"));

    // A claims shop (every path) and account (only /login), first.
    create_route(&a, "storefront", http("shop", &shop, "/", None)).await;
    create_route(&a, "account", http("shop", &account, "/login", None)).await;
    next_second().await;
    // The attacks from B: /login of A's host; a wildcard over A's zone.
    create_route(&b, "login", http("evil", &shop, "/login", None)).await;
    create_route(&b, "wild", http("evil", &format!("*.{zone}"), "/", None)).await;
    // The twin: a host of B's own.
    create_route(
        &b,
        "blog",
        http("evil", &format!("blog.b.{zone}"), "/", None),
    )
    .await;

    let addr = router.http_addr;
    eventually("B's own host is served", || async {
        get(addr, &format!("blog.b.{zone}"), "/").await.body == "b"
    })
    .await;
    eventually("the wildcard serves names nobody else holds", || async {
        get(addr, &format!("other.{zone}"), "/").await.body == "b"
    })
    .await;
    // A still serves /login of its host, and everything else of it.
    for path in ["/login", "/login/x", "/"] {
        assert_eq!(get(addr, &shop, path).await.body, "a", "{shop}{path}");
    }
    // Spelled with upper case and a trailing dot, the Host is the same host.
    assert_eq!(
        get(addr, &format!("SHOP.{zone}."), "/login").await.body,
        "a"
    );
    // A routes only /login of account: its other paths are nobody's, not B's wildcard's.
    assert_eq!(get(addr, &account, "/login").await.body, "a");
    let rest = get(addr, &account, "/").await;
    assert_eq!(rest.status, 404, "{rest:?}");

    let c = condition(&b, "login", conditions::types::PROGRAMMED).await;
    assert_eq!(c.status, "False");
    assert_eq!(c.reason, conditions::reasons::HOST_OWNED_BY_NAMESPACE);
    assert!(
        c.message.contains(&format!("namespace {}", a.name())),
        "{}",
        c.message
    );
    assert!(
        !c.message.contains("storefront"),
        "A's Route is not named: {}",
        c.message
    );
    let c = condition(&b, "wild", conditions::types::PROGRAMMED).await;
    assert_eq!(c.status, "True", "{}", c.message);
    router.shutdown(Duration::from_secs(5)).await;
}

fn cert(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let c = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .unwrap();
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().clone(),
    )
}

async fn create_secret(ns: &TestNamespace, name: &str, crt: &str, key: &str) {
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": crt, "tls.key": key},
    }))
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// A TLS handshake for `name` trusting only `root`: the certificate presented, or the error.
async fn handshake(
    addr: SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

#[tokio::test]
async fn a_certificate_is_used_only_from_the_owning_namespace_for_hosts_it_covers() {
    let (a, b, router) = two_namespaces("own-tls", |_| {}).await;
    let (za, zb) = (format!("{}.test", a.name()), format!("{}.test", b.name()));
    let shop = format!("shop.{za}");
    let (shop_crt, shop_key, shop_der) = cert(&[&shop]);
    create_secret(&a, "shop-tls", &shop_crt, &shop_key).await;
    // B's Secrets: a certificate for another name, one whose key is not its own, a wildcard.
    let (other_crt, other_key, other_der) = cert(&["other.example"]);
    create_secret(&b, "other-tls", &other_crt, &other_key).await;
    let mismatch = format!("mismatch.{zb}");
    let (mm_crt, _, mm_der) = cert(&[&mismatch]);
    let (_, stranger_key, _) = cert(&[&mismatch]);
    create_secret(&b, "mismatch-tls", &mm_crt, &stranger_key).await;
    let (wild_crt, wild_key, wild_der) = cert(&[&format!("*.{zb}")]);
    create_secret(&b, "wild-tls", &wild_crt, &wild_key).await;

    // The valid twin: A's host with A's Secret.
    create_route(&a, "shop", http("shop", &shop, "/", Some("shop-tls"))).await;
    // The attacks, from B: A's Secret by name (it is only in A), a certificate for another
    // name, a key not the certificate's, a wildcard certificate one label short.
    let steal = format!("steal.{zb}");
    create_route(&b, "steal", http("evil", &steal, "/", Some("shop-tls"))).await;
    let wrong = format!("wrong.{zb}");
    create_route(&b, "wrong", http("evil", &wrong, "/", Some("other-tls"))).await;
    create_route(
        &b,
        "mismatch",
        http("evil", &mismatch, "/", Some("mismatch-tls")),
    )
    .await;
    let deep = format!("a.deep.{zb}");
    create_route(&b, "deep", http("evil", &deep, "/", Some("wild-tls"))).await;
    // The wildcard's twin: one label under it.
    let shallow = format!("shallow.{zb}");
    create_route(&b, "shallow", http("evil", &shallow, "/", Some("wild-tls"))).await;

    let https = router.https_addr.unwrap();
    for (ns, route) in [(&a, "shop"), (&b, "shallow")] {
        let c = condition(ns, route, conditions::types::CERTIFICATE_READY).await;
        assert_eq!(c.status, "True", "{route}: {}", c.message);
    }
    assert_eq!(
        handshake(https, &shop, &shop_der).await.as_ref(),
        Ok(&shop_der)
    );
    assert_eq!(
        handshake(https, &shallow, &wild_der).await.as_ref(),
        Ok(&wild_der)
    );
    for (route, host, root, reason) in [
        (
            "steal",
            &steal,
            &shop_der,
            conditions::reasons::SECRET_NOT_FOUND,
        ),
        (
            "wrong",
            &wrong,
            &other_der,
            conditions::reasons::HOST_NOT_COVERED,
        ),
        (
            "mismatch",
            &mismatch,
            &mm_der,
            conditions::reasons::KEY_MISMATCH,
        ),
        (
            "deep",
            &deep,
            &wild_der,
            conditions::reasons::HOST_NOT_COVERED,
        ),
    ] {
        let c = condition(&b, route, conditions::types::CERTIFICATE_READY).await;
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reason),
            "{route}: {}",
            c.message
        );
        // No certificate at all for the host: the handshake fails (no default certificate).
        let got = handshake(https, host, root).await;
        assert!(got.is_err(), "{route}: {host} got a certificate: {got:?}");
        // Still served over plain HTTP (it is B's host), and told why not over HTTPS.
        let p = condition(&b, route, conditions::types::PROGRAMMED).await;
        assert_eq!(p.status, "True", "{route}: {}", p.message);
    }
    router.shutdown(Duration::from_secs(5)).await;
}

/// Creates cluster-scoped `obj` (ClusterRole or ClusterRoleBinding) owned by namespace
/// `owner`, so it goes with the test's namespace.
async fn create_owned<K>(client: &kube::Client, owner: &Namespace, obj: serde_json::Value)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let mut obj: K = serde_json::from_value(obj).unwrap();
    obj.meta_mut().owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: owner.metadata.name.clone().unwrap(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    Api::<K>::all(client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

/// Lets `subject` list and watch TLS Secrets in `ns` (what the operator's grant does).
async fn grant_secrets(ns: &TestNamespace, sa_namespace: &str) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "router-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}],
    }))
    .unwrap();
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "router-secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "router-secrets"},
        "subjects": [{"kind": "ServiceAccount", "name": "router", "namespace": sa_namespace}],
    }))
    .unwrap();
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// The Route's condition `type_` once `done` holds for it.
async fn wait_condition(
    ns: &TestNamespace,
    route: &str,
    type_: &str,
    timeout: Duration,
    done: impl Fn(&Condition) -> bool,
) -> Condition {
    let api = ns.api::<Route>();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let found = api
            .get(route)
            .await
            .ok()
            .and_then(|r| r.status)
            .and_then(|s| conditions::find(&s.conditions, type_).cloned());
        if let Some(c) = found.filter(|c| done(c)) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting on {type_} of {}/{route}",
            ns.name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn secrets_it_may_not_read_yet_are_reported_and_retried_never_fatal() {
    use k8s_openapi::api::{
        core::v1::ServiceAccount,
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    };
    let a = TestNamespace::create("own-403-a").await;
    let b = TestNamespace::create("own-403-b").await;
    install_flynn_crds(a.client()).await.unwrap();
    let client = a.client().clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [a.name(), b.name()] {
        namespaces
            .patch(
                ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {SELECTOR_LABEL: a.name()}}})),
            )
            .await
            .unwrap();
    }
    // The router's identity: everything but Secrets cluster-wide; Secrets in A only.
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "router"}})).unwrap();
    a.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let owner = namespaces.get(a.name()).await.unwrap();
    let role = format!("flynn-test-router-{}", a.name());
    create_owned::<ClusterRole>(&client, &owner, json!({
        "metadata": {"name": role},
        "rules": [
            {"apiGroups": ["flynn.io"], "resources": ["routes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["flynn.io"], "resources": ["routes/status"], "verbs": ["patch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        ],
    }))
    .await;
    create_owned::<ClusterRoleBinding>(&client, &owner, json!({
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "router", "namespace": a.name()}],
    }))
    .await;
    grant_secrets(&a, a.name()).await;
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{}:router", a.name()));
    let router_client = kube::Client::try_from(config).unwrap();
    let selector = format!("{SELECTOR_LABEL}={}", a.name());
    let router = router_with(router_client, a.name(), |c| {
        c.namespace = None;
        c.namespace_selector = Some(selector);
    })
    .await;

    let (za, zb) = (format!("{}.test", a.name()), format!("{}.test", b.name()));
    let (host_a, host_b) = (format!("shop.{za}"), format!("shop.{zb}"));
    let (crt_a, key_a, der_a) = cert(&[&host_a]);
    let (crt_b, key_b, der_b) = cert(&[&host_b]);
    create_secret(&a, "tls", &crt_a, &key_a).await;
    create_secret(&b, "tls", &crt_b, &key_b).await;
    create_route(&a, "shop", http("shop", &host_a, "/", Some("tls"))).await;
    create_route(&b, "shop", http("shop", &host_b, "/", Some("tls"))).await;

    // B: the router may not read its Secrets: reported, retried; A's twin is unaffected.
    let t = Duration::from_secs(30);
    let c = wait_condition(&b, "shop", conditions::types::CERTIFICATE_READY, t, |c| {
        c.reason == conditions::reasons::SECRET_ACCESS_PENDING
    })
    .await;
    assert_eq!(c.status, "False");
    assert!(c.message.contains("403"), "{}", c.message);
    wait_condition(&a, "shop", conditions::types::CERTIFICATE_READY, t, |c| {
        c.status == "True"
    })
    .await;
    let https = router.https_addr.unwrap();
    assert_eq!(handshake(https, &host_a, &der_a).await.as_ref(), Ok(&der_a));
    assert!(handshake(https, &host_b, &der_b).await.is_err());
    assert!(router.is_ready(), "a refused Secret watch is not fatal");

    // Granted (as the operator would): the retry picks B's certificate up.
    grant_secrets(&b, a.name()).await;
    wait_condition(
        &b,
        "shop",
        conditions::types::CERTIFICATE_READY,
        Duration::from_secs(90),
        |c| c.status == "True",
    )
    .await;
    eventually("B's certificate is served", || async {
        handshake(https, &host_b, &der_b).await.as_ref() == Ok(&der_b)
    })
    .await;
    router.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_router_listens_only_on_tcp_ports_in_the_platforms_range() {
    let inside = flynn_e2e::free_port();
    let outside = flynn_e2e::free_port();
    let (a, _b, router) = two_namespaces("own-tcp", |c| {
        c.route_policy.tcp_ports = PortRange {
            first: inside,
            last: inside,
        };
    })
    .await;
    let net = Netns::create();
    let echo = Backend::echo(&net, "e", 5432).await;
    put_slice(
        &a.api(),
        "db-pg-1",
        "db-pg",
        5432,
        &[(echo.addr.ip(), true)],
    )
    .await;
    // The attack: a port outside the range. The twin: the range's port.
    create_route(&a, "out", RouteSpec::tcp("db", "pg", i32::from(outside))).await;
    create_route(&a, "in", RouteSpec::tcp("db", "pg", i32::from(inside))).await;

    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    eventually("the port in the range echoes", || async {
        let Ok(mut s) = TcpStream::connect(at(inside)).await else {
            return false;
        };
        let mut buf = [0u8; 4];
        s.write_all(b"ping").await.is_ok()
            && s.read_exact(&mut buf).await.is_ok()
            && &buf == b"ping"
    })
    .await;
    let c = condition(&a, "out", conditions::types::PROGRAMMED).await;
    assert_eq!(c.status, "False");
    assert_eq!(c.reason, conditions::reasons::PORT_OUT_OF_RANGE);
    assert!(
        c.message.contains(&format!("{inside}-{inside}")),
        "{}",
        c.message
    );
    let refused = TcpStream::connect(at(outside)).await;
    assert!(
        refused.is_err(),
        "nothing listens on {outside}, outside the range"
    );
    router.shutdown(Duration::from_secs(5)).await;
}
