//! The slug store's token Secret against a real API server (the local cluster): `ensure`
//! creates it once and never overwrites it, `wait` returns once it is there, and both work
//! with exactly the RBAC the chart grants.

use std::time::Duration;

use flynn_builder::store::token::{self, TokenError};
use flynn_e2e::{TestNamespace, eventually};
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use kube::api::{ObjectMeta, PostParams};

const NAME: &str = "flynn-shelf-token";

#[tokio::test]
async fn ensure_creates_the_secret_once_and_then_reads_it() {
    let ns = TestNamespace::create("shelf-token-ensure").await;
    let first = token::ensure(ns.client(), ns.name(), NAME).await.unwrap();
    assert_eq!(first.len(), 48);
    assert!(first.chars().all(|c| c.is_ascii_alphanumeric()), "{first}");

    let secret = ns.api::<Secret>().get(NAME).await.unwrap();
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/part-of").map(String::as_str),
        Some("flynn")
    );
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("flynn-shelf")
    );
    assert!(
        secret.metadata.annotations.clone().unwrap_or_default()["kubernetes.io/description"]
            .contains("slug store")
    );
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret.data.as_ref().unwrap()["token"].0,
        first.as_bytes(),
        "the token is under data.token"
    );

    // A restart (or another replica) reads the same token; the Secret is not written again.
    let again = token::ensure(ns.client(), ns.name(), NAME).await.unwrap();
    assert_eq!(again, first);
    let after = ns.api::<Secret>().get(NAME).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        secret.metadata.resource_version
    );
}

#[tokio::test]
async fn ensure_reads_a_secret_the_platform_team_made() {
    let ns = TestNamespace::create("shelf-token-existing").await;
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &secret_with(&[("token", b"team-chosen-token-0123456789\n")]),
        )
        .await
        .unwrap();
    let got = token::ensure(ns.client(), ns.name(), NAME).await.unwrap();
    assert_eq!(got, "team-chosen-token-0123456789");
}

#[tokio::test]
async fn ensure_refuses_a_secret_without_a_token_and_leaves_it_alone() {
    let ns = TestNamespace::create("shelf-token-malformed").await;
    let created = ns
        .api::<Secret>()
        .create(
            &PostParams::default(),
            &secret_with(&[("password", b"not-the-token-key-0123456789")]),
        )
        .await
        .unwrap();
    let err = token::ensure(ns.client(), ns.name(), NAME)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Malformed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "Secret {}/{NAME} has no usable data.token",
            ns.name()
        )),
        "{msg}"
    );
    assert!(msg.contains("never overwrites it"), "{msg}");
    let after = ns.api::<Secret>().get(NAME).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(after.data, created.data);

    // An empty token is no token either.
    ns.api::<Secret>()
        .create(&PostParams::default(), &{
            let mut s = secret_with(&[("token", b"")]);
            s.metadata.name = Some("empty".into());
            s
        })
        .await
        .unwrap();
    let err = token::ensure(ns.client(), ns.name(), "empty")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("(empty)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ensures_agree_on_one_token() {
    let ns = TestNamespace::create("shelf-token-race").await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let client = ns.client().clone();
            let namespace = ns.name().to_owned();
            tokio::spawn(async move { token::ensure(&client, &namespace, NAME).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    assert!(tokens.iter().all(|t| t == &tokens[0]), "{tokens:?}");
    let secret = ns.api::<Secret>().get(NAME).await.unwrap();
    assert_eq!(secret.data.unwrap()["token"].0, tokens[0].as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_once_the_store_has_created_the_secret() {
    let ns = TestNamespace::create("shelf-token-wait").await;
    let waiter = {
        let client = ns.client().clone();
        let namespace = ns.name().to_owned();
        tokio::spawn(async move {
            token::wait(&client, &namespace, NAME, Duration::from_secs(60)).await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !waiter.is_finished(),
        "wait returned before the Secret existed"
    );
    let created = token::ensure(ns.client(), ns.name(), NAME).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait did not notice the Secret within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(waited, created);
}

#[tokio::test]
async fn wait_gives_up_saying_the_store_has_not_created_it() {
    let ns = TestNamespace::create("shelf-token-timeout").await;
    let started = std::time::Instant::now();
    let err = token::wait(ns.client(), ns.name(), NAME, Duration::from_secs(3))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "the slug store has not created Secret {}/{NAME} after 3s: is it running",
            ns.name()
        )),
        "{msg}"
    );

    // A Secret without a token is reported at once, not waited on.
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &secret_with(&[("other", b"0123456789abcdef0123")]),
        )
        .await
        .unwrap();
    let err = token::wait(ns.client(), ns.name(), NAME, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Malformed { .. }), "{err:?}");
}

/// The RBAC the chart grants, and no more, is enough: the store `get`s its Secret by name and
/// `create`s Secrets in the namespace; the receiver only `get`s it by name. Without it the
/// error says which verb is missing.
#[tokio::test]
async fn the_charts_rbac_is_enough() {
    let ns = TestNamespace::create("shelf-token-rbac").await;
    let n = ns.name();
    grant(&ns, "shelf", &["get"], Some(NAME)).await;
    grant(&ns, "shelf-create", &["create"], None).await;
    bind(&ns, "shelf", "shelf").await;
    bind(&ns, "shelf-create", "shelf").await;
    grant(&ns, "gitreceiver", &["get"], Some(NAME)).await;
    bind(&ns, "gitreceiver", "gitreceiver").await;

    let nobody = as_service_account(n, "nobody").await;
    let err = token::ensure(&nobody, n, NAME).await.unwrap_err();
    assert!(
        matches!(err, TokenError::Forbidden { verb: "get", .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!(
            "grant this ServiceAccount `get` on Secrets in namespace {n}"
        )),
        "{err}"
    );
    let err = token::wait(&nobody, n, NAME, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TokenError::Forbidden { verb: "get", .. }),
        "a refusal is not waited on: {err:?}"
    );

    // (Eventually: the authorizer sees new Roles within moments, not at once.)
    let reader = as_service_account(n, "gitreceiver").await;
    let _refused = eventually(
        "the receiver to be refused `create` only",
        Duration::from_secs(10),
        || token::ensure(&reader, n, NAME),
        |r| matches!(r, Err(TokenError::Forbidden { verb: "create", .. })),
    )
    .await;

    let shelf = as_service_account(n, "shelf").await;
    let created = eventually(
        "the store to create its token",
        Duration::from_secs(10),
        || token::ensure(&shelf, n, NAME),
        Result::is_ok,
    )
    .await
    .unwrap();
    assert_eq!(token::ensure(&shelf, n, NAME).await.unwrap(), created);
    assert_eq!(
        token::wait(&reader, n, NAME, Duration::from_secs(10))
            .await
            .unwrap(),
        created
    );
}

fn secret_with(data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

async fn grant(ns: &TestNamespace, role: &str, verbs: &[&str], name: Option<&str>) {
    let role = Role {
        metadata: ObjectMeta {
            name: Some(role.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: name.map(|n| vec![n.to_owned()]),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..Default::default()
        }]),
    };
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
}

async fn bind(ns: &TestNamespace, role: &str, service_account: &str) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{role}-{service_account}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account.into(),
            namespace: Some(ns.name().into()),
            ..Default::default()
        }]),
    };
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// A client acting as ServiceAccount `namespace/name` (impersonation: the test's admin
/// identity may; the account itself need not exist for RBAC).
async fn as_service_account(namespace: &str, name: &str) -> kube::Client {
    let mut config = flynn_e2e::config().await.unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]);
    kube::Client::try_from(config).unwrap()
}
