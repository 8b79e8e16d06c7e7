//! The operator binds the git receiver's build role only in namespaces holding an App, and
//! the router's certificate role only in namespaces holding a Route that names a TLS
//! Secret; the API server's own authorizer (SubjectAccessReview) is the judge.
//!
//! Each test runs its operator with a ClusterRole of its own standing in for the chart's.

mod common;

use std::time::Duration;

use common::*;
use flynn_crds::{Route, RouteSpec};
use flynn_e2e::can_i;
use flynn_operator::grants::{Grant, Grants};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};

const WAIT: Duration = Duration::from_secs(30);

/// A ClusterRole for one test, deleted when dropped (it is cluster-scoped: the test
/// namespace's deletion does not take it).
struct TestRole {
    name: String,
}

impl TestRole {
    async fn create(
        client: &Client,
        name: String,
        group: &str,
        resource: &str,
        verbs: &[&str],
    ) -> Self {
        let role = ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("flynn.io/test".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![group.to_owned()]),
                resources: Some(vec![resource.to_owned()]),
                verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
                ..PolicyRule::default()
            }]),
            ..ClusterRole::default()
        };
        Api::<ClusterRole>::all(client.clone())
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        Self { name }
    }
}

impl Drop for TestRole {
    /// `Drop` cannot await and the test's current-thread runtime is blocked here, so the
    /// delete runs on a thread with its own runtime and its own client (a `Client` is tied
    /// to the runtime that made it), as `TestNamespace`'s drop does.
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let client = flynn_e2e::client().await.unwrap();
                    let _ = Api::<ClusterRole>::all(client)
                        .delete(&name, &DeleteParams::default())
                        .await;
                })
        })
        .join();
    }
}

async fn service_account(ns: &flynn_e2e::TestNamespace, name: &str) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

fn route(name: &str, app: &str, domain: &str, tls: Option<&str>) -> Route {
    let mut spec = RouteSpec::http(app, domain);
    if let Some(h) = spec.http.as_mut() {
        h.tls_secret_name = tls.map(str::to_owned);
    }
    let mut r = Route::new(name, spec);
    r.metadata.namespace = None;
    r
}

/// Polls the authorizer until it answers `want` (RBAC caches bindings for a moment).
async fn until_can(
    client: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
    want: bool,
) {
    eventually(
        &format!("{user} may {verb} {resource} in {ns}: {want}"),
        WAIT,
        || can_i(client, user, verb, group, resource, Some(ns)),
        |allowed| *allowed == want,
    )
    .await;
}

#[tokio::test]
async fn builds_are_granted_only_where_apps_are() {
    let ns = namespace("grants-builds").await;
    let client = ns.client().clone();
    let role = TestRole::create(
        &client,
        format!("{}-builds", ns.name()),
        "batch",
        "jobs",
        &["create"],
    )
    .await;
    service_account(&ns, "receiver").await;
    let grant: Grant = format!("{}={}/receiver", role.name, ns.name())
        .parse()
        .unwrap();
    let _op = start(&ns, |s| {
        s.grants = Grants {
            builds: Some(grant),
            certificates: None,
            resources: None,
        }
    });
    let receiver = format!("system:serviceaccount:{}:receiver", ns.name());

    // The attack: with no App here, the receiver must not be able to create a Job here,
    // nor in kube-system (where there never is one).
    until_can(
        &client,
        &receiver,
        "create",
        "batch",
        "jobs",
        ns.name(),
        false,
    )
    .await;
    assert!(
        !can_i(
            &client,
            &receiver,
            "create",
            "batch",
            "jobs",
            Some("kube-system")
        )
        .await
    );

    // The valid twin: an App makes its namespace a place to build.
    let apps = ns.api::<flynn_crds::App>();
    for name in ["alpha", "beta"] {
        apps.create(
            &PostParams::default(),
            &app(
                name,
                &format!("{name}-v1"),
                serde_json::json!({}),
                serde_json::json!({}),
            ),
        )
        .await
        .unwrap();
    }
    until_can(
        &client,
        &receiver,
        "create",
        "batch",
        "jobs",
        ns.name(),
        true,
    )
    .await;
    assert!(
        !can_i(
            &client,
            &receiver,
            "create",
            "batch",
            "jobs",
            Some("kube-system")
        )
        .await,
        "an App in one namespace grants nothing elsewhere"
    );
    let bindings = ns.api::<RoleBinding>();
    let rb = bindings.get(&role.name).await.unwrap();
    let owner = &rb.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("App", "alpha"));

    // The owning App goes, another remains: the grant stays, now owned by the other.
    apps.delete("alpha", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the grant to be owned by the remaining App",
        WAIT,
        || async { bindings.get_opt(&role.name).await.unwrap() },
        |rb| {
            rb.as_ref().is_some_and(|rb| {
                rb.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| o[0].name == "beta")
            })
        },
    )
    .await;
    until_can(
        &client,
        &receiver,
        "create",
        "batch",
        "jobs",
        ns.name(),
        true,
    )
    .await;

    // The last App goes: so does the grant.
    apps.delete("beta", &DeleteParams::default()).await.unwrap();
    until_can(
        &client,
        &receiver,
        "create",
        "batch",
        "jobs",
        ns.name(),
        false,
    )
    .await;
    eventually(
        "the RoleBinding to be gone",
        WAIT,
        || async { bindings.get_opt(&role.name).await.unwrap() },
        Option::is_none,
    )
    .await;
}

#[tokio::test]
async fn certificates_are_readable_only_where_routes_name_one() {
    let ns = namespace("grants-certs").await;
    let client = ns.client().clone();
    let role = TestRole::create(
        &client,
        format!("{}-certs", ns.name()),
        "",
        "secrets",
        &["list", "watch"],
    )
    .await;
    service_account(&ns, "router").await;
    let grant: Grant = format!("{}={}/router", role.name, ns.name())
        .parse()
        .unwrap();
    let _op = start(&ns, |s| {
        s.grants = Grants {
            builds: None,
            certificates: Some(grant),
            resources: None,
        }
    });
    let router = format!("system:serviceaccount:{}:router", ns.name());
    let routes = ns.api::<Route>();

    // The attack: a plain HTTP Route gives the router no reason to read Secrets here.
    routes
        .create(
            &PostParams::default(),
            &route("plain", "shop", &format!("plain.{}.test", ns.name()), None),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!can_i(&client, &router, "list", "", "secrets", Some(ns.name())).await);

    // The valid twin: a Route naming a certificate.
    routes
        .create(
            &PostParams::default(),
            &route(
                "secure",
                "shop",
                &format!("secure.{}.test", ns.name()),
                Some("shop-tls"),
            ),
        )
        .await
        .unwrap();
    until_can(&client, &router, "list", "", "secrets", ns.name(), true).await;
    assert!(
        !can_i(&client, &router, "list", "", "secrets", Some("kube-system")).await,
        "a TLS Route in one namespace opens no other namespace's Secrets"
    );

    // The Route stops naming a certificate (and still exists): the grant is withdrawn.
    merge(
        &routes,
        "secure",
        serde_json::json!({"spec": {"http": {"tlsSecretName": null}}}),
    )
    .await;
    until_can(&client, &router, "list", "", "secrets", ns.name(), false).await;
}

/// Issue 17's review: a binding of the grant's name made beforehand by someone else with
/// another role (its roleRef cannot change) made every grant there fail for good; and a
/// grant's binding deleted by someone else stayed gone until its owner changed.
#[tokio::test]
async fn a_squatted_or_deleted_grant_binding_is_put_back() {
    let ns = namespace("grants-squat").await;
    let client = ns.client().clone();
    let role = TestRole::create(
        &client,
        format!("{}-builds", ns.name()),
        "batch",
        "jobs",
        &["create"],
    )
    .await;
    service_account(&ns, "receiver").await;
    let receiver = format!("system:serviceaccount:{}:receiver", ns.name());
    // The attacking input: a RoleBinding already named as the grant, bound to `view`.
    let squat: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": role.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "receiver", "namespace": ns.name()}],
    }))
    .unwrap();
    let bindings = ns.api::<RoleBinding>();
    bindings
        .create(&PostParams::default(), &squat)
        .await
        .unwrap();
    let grant: Grant = format!("{}={}/receiver", role.name, ns.name())
        .parse()
        .unwrap();
    let _op = start(&ns, |s| {
        s.grants = Grants {
            builds: Some(grant),
            certificates: None,
            resources: None,
        };
        s.grants_resync = Duration::from_secs(3);
    });
    ns.api::<flynn_crds::App>()
        .create(
            &PostParams::default(),
            &app(
                "alpha",
                "alpha-v1",
                serde_json::json!({}),
                serde_json::json!({}),
            ),
        )
        .await
        .unwrap();
    // Replaced by the grant's own binding: the receiver may build here.
    until_can(
        &client,
        &receiver,
        "create",
        "batch",
        "jobs",
        ns.name(),
        true,
    )
    .await;
    let rb = bindings.get(&role.name).await.unwrap();
    assert_eq!(
        rb.role_ref.name, role.name,
        "the squatter's roleRef is gone"
    );

    // Deleted by someone else: put back within the resync, with no change to its owner.
    let before = rb.metadata.uid.clone();
    bindings
        .delete(&role.name, &DeleteParams::default())
        .await
        .unwrap();
    let _ = eventually(
        "the deleted binding to be made again",
        WAIT,
        || bindings.get_opt(&role.name),
        |rb| {
            rb.as_ref()
                .is_ok_and(|rb| rb.as_ref().is_some_and(|rb| rb.metadata.uid != before))
        },
    )
    .await;
    until_can(
        &client,
        &receiver,
        "create",
        "batch",
        "jobs",
        ns.name(),
        true,
    )
    .await;
}
