//! Registered keys against the local cluster, with the real OpenSSH client and git: the
//! groups a key carries reach the SubjectAccessReview as the exact list (a comma is part of
//! a group's name), a key past its expiry is refused with what to do, and a key in the
//! first, comma-joined format is refused rather than misread; a key registered to one user
//! cannot be registered to another. Each refusal beside a twin that pushes.

mod receiver_env;

use flynn_e2e::{TestNamespace, install_flynn_crds};
use flynn_gitreceiver::keys::{self, Lookup};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use receiver_env::*;

/// A receiver that accepts deploy-branch pushes without building: these tests are about
/// who may push.
async fn setup(test: &str) -> (TestNamespace, Receiver) {
    require_tools();
    let ns = TestNamespace::create(test).await;
    install_flynn_crds(ns.client()).await.unwrap();
    let pipeline = Receiver::failing_pipeline(ns.client());
    let receiver = Receiver::start_with(ns.client(), ns.name(), pipeline, bench_mode).await;
    (ns, receiver)
}

async fn create_secret(ns: &TestNamespace, secret: &Secret) {
    Api::<Secret>::namespaced(ns.client().clone(), ns.name())
        .create(&PostParams::default(), secret)
        .await
        .unwrap();
}

/// Lets members of `group` push to the namespace (the Role from `allow_push`).
async fn allow_group(ns: &TestNamespace, group: &str) {
    // The Role itself, through a user binding nobody uses.
    allow_push(ns.client(), ns.name(), "nobody-uses-this").await;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("deployer-group-{group}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "flynn-deployer".into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: group.into(),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(ns.client().clone(), ns.name())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

fn push(receiver: &Receiver, ns: &TestNamespace, key: &SshKey, app: &str) -> (bool, String) {
    let tree = WorkTree::new();
    tree.commit_file("README", "hi");
    let out = tree.push(key, &url(receiver.port(), ns.name(), app), &["main"]);
    let err = stderr(&out);
    println!("--- push to {app}\n{err}");
    (out.status.success(), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comma_in_a_group_name_does_not_make_two_groups() {
    let (ns, receiver) = setup("key-group-list").await;
    create_app(ns.client(), ns.name(), "shop").await;
    // Only the group `pushers` may push; nobody is bound as a user.
    allow_group(&ns, "pushers").await;

    // The attacking input: one group named `devs,system:masters`. Read as a comma-joined
    // string, as the first format was, it made the groups `devs` and `system:masters`,
    // and the review answered yes (system:masters may do anything).
    let mallory = SshKey::generate();
    let user = random_user("mallory");
    create_secret(
        &ns,
        &keys::key_secret(&mallory.public, &user, &["devs,system:masters"]).unwrap(),
    )
    .await;
    // The twin: two real groups, one of them bound.
    let alice = SshKey::generate();
    let alice_user = random_user("alice");
    create_secret(
        &ns,
        &keys::key_secret(&alice.public, &alice_user, &["devs", "pushers"]).unwrap(),
    )
    .await;
    receiver.wait_for_key(&mallory).await;
    receiver.wait_for_key(&alice).await;

    // What the SubjectAccessReview is given (authz.rs passes `Identity::groups` as is).
    let id = receiver
        .running()
        .keys()
        .lookup_authorized_key(&mallory.public)
        .unwrap();
    assert_eq!(id.groups, ["devs,system:masters"]);
    let twin = receiver
        .running()
        .keys()
        .lookup_authorized_key(&alice.public)
        .unwrap();
    assert_eq!(twin.groups, ["devs", "pushers"]);

    let (ok, err) = push(&receiver, &ns, &mallory, "shop");
    assert!(!ok, "the comma made mallory a cluster admin:\n{err}");
    assert!(
        err.contains(&format!(
            "user \"{user}\" may not push to {}/shop",
            ns.name()
        )),
        "{err}"
    );
    let (ok, err) = push(&receiver, &ns, &alice, "shop");
    assert!(ok, "the twin in group pushers was refused:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_with_how_to_renew_it() {
    let (ns, receiver) = setup("key-expiry").await;
    create_app(ns.client(), ns.name(), "shop").await;
    let now = Timestamp::now();

    let expired = SshKey::generate();
    let expired_user = random_user("dev");
    let at = now - SignedDuration::from_secs(60);
    create_secret(
        &ns,
        &keys::key_secret_expiring(
            &expired.public,
            &expired_user,
            &["system:authenticated"],
            Some(at),
        )
        .unwrap(),
    )
    .await;
    allow_push(ns.client(), ns.name(), &expired_user).await;
    // The twin expires in an hour: it still works.
    let valid = SshKey::generate();
    let valid_user = random_user("dev");
    create_secret(
        &ns,
        &keys::key_secret_expiring(
            &valid.public,
            &valid_user,
            &["system:authenticated"],
            Some(now + SignedDuration::from_secs(3600)),
        )
        .unwrap(),
    )
    .await;
    allow_push(ns.client(), ns.name(), &valid_user).await;
    receiver.wait_for_key(&valid).await;
    flynn_e2e::eventually(
        "the receiver to see the expired key",
        std::time::Duration::from_secs(30),
        || async {
            receiver
                .running()
                .keys()
                .lookup_authorized_key_entry(&expired.public)
        },
        |l| matches!(l, Lookup::Unusable(_)),
    )
    .await;

    let (ok, err) = push(&receiver, &ns, &expired, "shop");
    assert!(!ok, "an expired key pushed:\n{err}");
    let fingerprint = expired.fingerprint();
    assert!(
        err.contains(&format!(
            "your SSH key {fingerprint} expired at {}",
            at.to_string().split('.').next().unwrap()
        )),
        "{err}"
    );
    assert!(err.contains("flynn key add --expires 90d"), "{err}");
    let (ok, err) = push(&receiver, &ns, &valid, "shop");
    assert!(ok, "the twin that expires in an hour was refused:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_the_comma_joined_format_is_refused_with_how_to_register_it_again() {
    let (ns, receiver) = setup("key-old-format").await;
    create_app(ns.client(), ns.name(), "shop").await;
    let old = SshKey::generate();
    let user = random_user("dev");
    let mut secret = keys::key_secret(&old.public, &user, &[]).unwrap();
    let a = secret.metadata.annotations.as_mut().unwrap();
    a.remove(keys::GROUPS_ANNOTATION);
    a.insert(
        keys::OLD_GROUPS_ANNOTATION.into(),
        "devs,system:authenticated".into(),
    );
    create_secret(&ns, &secret).await;
    allow_push(ns.client(), ns.name(), &user).await;
    // The twin, in today's format, for the same kind of user.
    let new = SshKey::generate();
    let new_user = random_user("dev");
    register_key(ns.client(), ns.name(), &new, &new_user).await;
    allow_push(ns.client(), ns.name(), &new_user).await;
    receiver.wait_for_key(&new).await;
    flynn_e2e::eventually(
        "the receiver to see the old-format key",
        std::time::Duration::from_secs(30),
        || async {
            receiver
                .running()
                .keys()
                .lookup_authorized_key_entry(&old.public)
        },
        |l| matches!(l, Lookup::Unusable(_)),
    )
    .await;

    let (ok, err) = push(&receiver, &ns, &old, "shop");
    assert!(!ok, "a key in the old format pushed:\n{err}");
    assert!(err.contains("registered by an older flynn"), "{err}");
    assert!(
        err.contains(&format!("flynn key remove {}", old.fingerprint())),
        "{err}"
    );
    let (ok, err) = push(&receiver, &ns, &new, "shop");
    assert!(ok, "the twin in today's format was refused:\n{err}");
}

/// Bob's key K is registered to bob; alice (who can read bob's public key anywhere) tries
/// to make K hers, as `flynn key add` would and by hand. The Secret `flynn key add` writes
/// is named for its key, so hers collides with bob's: AlreadyExists (which `flynn key add`
/// reports as "already registered for <owner>", and which the chart's admission policy
/// backs by refusing any other user's update or delete). A Secret of another name carrying
/// K is never read by the receiver, not even once bob's is gone. Bob's push with K is bob's:
/// alice may not push when it runs, so had her identity been used it would fail. The twin:
/// alice's own key L, registered the same way, pushes as alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_registered_to_one_user_is_never_another_users() {
    let (ns, receiver) = setup("key-hijack").await;
    create_app(ns.client(), ns.name(), "shop").await;
    // Each push is a new history: alice's go to an app of their own.
    create_app(ns.client(), ns.name(), "cart").await;
    let secrets = Api::<Secret>::namespaced(ns.client().clone(), ns.name());
    let k = SshKey::generate();
    let bob = random_user("bob");
    let alice = random_user("alice");
    register_key(ns.client(), ns.name(), &k, &bob).await;
    allow_push(ns.client(), ns.name(), &bob).await;

    // The attacking inputs. What `flynn key add bob.pub` writes as alice:
    let hers = keys::key_secret(&k.public, &alice, &[&alice, "system:authenticated"]).unwrap();
    match secrets.create(&PostParams::default(), &hers).await {
        Err(kube::Error::Api(status)) => assert!(status.is_already_exists(), "{status:?}"),
        other => panic!("alice registered bob's key: {other:?}"),
    }
    // The same by hand, under a name of her choosing.
    let mut renamed = hers.clone();
    renamed.metadata.name = Some(format!("key-of-{alice}"));
    create_secret(&ns, &renamed).await;
    // Alice's own key, registered after it: once the receiver knows L it has read the
    // renamed Secret too (a watch delivers events in order).
    let l = SshKey::generate();
    register_key(ns.client(), ns.name(), &l, &alice).await;
    receiver.wait_for_key(&l).await;
    let registry = receiver.running().keys();
    assert_eq!(registry.lookup_authorized_key(&k.public).unwrap().user, bob);

    let (ok, err) = push(&receiver, &ns, &k, "shop");
    assert!(ok, "bob's push with his own key was refused:\n{err}");
    assert!(!err.contains(&alice), "bob's push ran as alice:\n{err}");

    // The twin: alice's own key pushes as alice, once she may push.
    assert_eq!(
        registry.lookup_authorized_key(&l.public).unwrap().user,
        alice
    );
    let (ok, err) = push(&receiver, &ns, &l, "cart");
    assert!(!ok, "alice pushed before she was allowed to:\n{err}");
    assert!(
        err.contains(&format!("user \"{alice}\" may not push")),
        "{err}"
    );
    allow_push(ns.client(), ns.name(), &alice).await;
    let (ok, err) = push(&receiver, &ns, &l, "cart");
    assert!(ok, "alice's push with her own key was refused:\n{err}");

    // Bob removes K: it is nobody's, and the renamed Secret does not make it alice's.
    secrets
        .delete(hers.metadata.name.as_deref().unwrap(), &Default::default())
        .await
        .unwrap();
    flynn_e2e::eventually(
        "the receiver to forget bob's key",
        std::time::Duration::from_secs(30),
        || async { registry.lookup_authorized_key_entry(&k.public) },
        |l| *l == Lookup::Unknown,
    )
    .await;
    let (ok, err) = push(&receiver, &ns, &k, "shop");
    assert!(!ok, "a removed key pushed:\n{err}");
    assert!(err.contains("is not registered"), "{err}");
}
