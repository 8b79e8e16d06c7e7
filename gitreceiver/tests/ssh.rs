//! The SSH side of the receiver against the local cluster, driven by the real OpenSSH
//! client and git: authentication, authorization, what may be run, the hook's ref checks,
//! a failing pipeline rejecting the push, the host key across restarts, ops endpoints.
//! The deploys themselves are in tests/push.rs.

mod receiver_env;

use flynn_e2e::{TestNamespace, install_flynn_crds};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use receiver_env::*;

async fn setup(test: &str) -> (TestNamespace, Receiver) {
    setup_with(test, |_| {}).await
}

async fn setup_with(
    test: &str,
    adjust: impl FnOnce(&mut flynn_gitreceiver::Settings),
) -> (TestNamespace, Receiver) {
    require_tools();
    let ns = TestNamespace::create(test).await;
    install_flynn_crds(ns.client()).await.unwrap();
    let pipeline = Receiver::failing_pipeline(ns.client());
    let receiver = Receiver::start_with(ns.client(), ns.name(), pipeline, adjust).await;
    (ns, receiver)
}

/// A registered key of a user who may push to the namespace, and an App.
async fn allowed_user(ns: &TestNamespace, receiver: &Receiver, app: Option<&str>) -> SshKey {
    let key = SshKey::generate();
    let user = random_user("dev");
    register_key(ns.client(), ns.name(), &key, &user).await;
    allow_push(ns.client(), ns.name(), &user).await;
    if let Some(app) = app {
        create_app(ns.client(), ns.name(), app).await;
    }
    receiver.wait_for_key(&key).await;
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_key_is_refused_with_how_to_register_it() {
    let (ns, receiver) = setup("unregistered-key").await;
    // A malformed key Secret in the registry is ignored and does not break the watch.
    let mut bad =
        flynn_gitreceiver::keys::key_secret(&SshKey::generate().public, "x", &[]).unwrap();
    bad.data.as_mut().unwrap().insert(
        "publicKey".into(),
        k8s_openapi::ByteString(b"ssh-ed25519 not-base64!".to_vec()),
    );
    Api::<Secret>::namespaced(ns.client().clone(), ns.name())
        .create(&PostParams::default(), &bad)
        .await
        .unwrap();
    let _registered = allowed_user(&ns, &receiver, Some("shop")).await;

    let stranger = SshKey::generate();
    let tree = WorkTree::new();
    tree.commit_file("README", "hi");
    let out = tree.push(
        &stranger,
        &url(receiver.port(), ns.name(), "shop"),
        &["main"],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("your SSH key is not registered"), "{err}");
    assert!(err.contains(&stranger.fingerprint()), "{err}");
    assert!(err.contains("flynn key add"), "{err}");
    assert!(
        !receiver.repo(ns.name(), "shop").exists(),
        "nothing may be created"
    );

    // The wrong SSH user name is named too.
    let out = stranger.ssh(
        receiver.port(),
        &["-l", "bob"],
        Some("git-receive-pack 'shop.git'"),
    );
    let err = stderr(&out);
    assert!(err.contains("the SSH user must be `git`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_rbac_permission_is_denied_and_nothing_is_built() {
    let (ns, receiver) = setup("rbac-denied").await;
    create_app(ns.client(), ns.name(), "shop").await;
    let key = SshKey::generate();
    let user = random_user("alice");
    register_key(ns.client(), ns.name(), &key, &user).await;
    receiver.wait_for_key(&key).await;

    let tree = WorkTree::new();
    tree.commit_file("README", "hi");
    let out = tree.push(&key, &url(receiver.port(), ns.name(), "shop"), &["main"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "user \"{user}\" may not push to {}/shop",
            ns.name()
        )),
        "{err}"
    );
    assert!(err.contains("kubectl create rolebinding"), "{err}");
    assert!(
        !receiver.repo(ns.name(), "shop").exists(),
        "nothing may be created"
    );

    let (_, metrics) = receiver.http_get("/metrics").await;
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"forbidden\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_app_is_named() {
    let (ns, receiver) = setup("unknown-app").await;
    let key = allowed_user(&ns, &receiver, None).await;
    let tree = WorkTree::new();
    tree.commit_file("README", "hi");
    let out = tree.push(&key, &url(receiver.port(), ns.name(), "nope"), &["main"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "there is no app \"nope\" in namespace \"{}\"",
            ns.name()
        )),
        "{err}"
    );
    assert!(err.contains("flynn create nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_commands_and_subsystems_are_refused_in_one_line() {
    let (ns, receiver) = setup("no-shell").await;
    let key = allowed_user(&ns, &receiver, Some("shop")).await;
    let port = receiver.port();

    for (what, extra, command) in [
        ("a shell", &[][..], None),
        ("a shell with a pty", &["-tt"][..], None),
        ("a command", &[][..], Some("ls -la /")),
        ("a command with a pty", &["-tt"][..], Some("id")),
        ("a subsystem", &["-s"][..], Some("sftp")),
        (
            "an env abuse",
            &["-o", "SetEnv=LD_PRELOAD=/tmp/x GIT_PROTOCOL=version=2"][..],
            Some("sh -c id"),
        ),
        ("upload-pack", &[][..], Some("git-upload-pack 'shop.git'")),
    ] {
        let out = key.ssh(port, extra, command);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("flynn: "))
            .unwrap_or_else(|| panic!("{what}: no refusal in {err:?}"));
        assert!(
            line.contains("no shell") || line.contains("only takes `git push`"),
            "{what}: {line}"
        );
        assert!(
            out.stdout.is_empty() || what.contains("pty"),
            "{what}: stdout {:?}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_repository_names_are_refused() {
    let (ns, receiver) = setup("bad-names").await;
    let key = allowed_user(&ns, &receiver, Some("shop")).await;
    let port = receiver.port();
    for command in [
        "git-receive-pack '../x.git'",
        "git-receive-pack '/../../etc/x.git'",
        "git-receive-pack 'a/b/c.git'",
        "git-receive-pack 'Shop.git'",
        "git-receive-pack '~root/x.git'",
    ] {
        let out = key.ssh(port, &[], Some(command));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        assert!(err.contains("flynn: invalid"), "{command}: {err}");
    }
    // Through git too.
    let tree = WorkTree::new();
    tree.commit_file("README", "hi");
    let out = tree.push(
        &key,
        &format!("ssh://git@127.0.0.1:{port}/../x.git"),
        &["main"],
    );
    assert!(stderr(&out).contains("flynn: invalid"), "{}", stderr(&out));
    let repos = std::fs::read_dir(&receiver.settings.repos_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(repos, 0, "nothing may be created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_deploy_branch_is_taken_and_a_failed_pipeline_rejects_the_push() {
    let (ns, receiver) = setup("deploy-branch").await;
    let key = allowed_user(&ns, &receiver, Some("shop")).await;
    let remote = url(receiver.port(), ns.name(), "shop");
    let tree = WorkTree::new();
    tree.commit_file("README", "hi");

    // Another branch: refused with the reason, nothing updated.
    assert!(
        tree.git(&["checkout", "-q", "-b", "feature"])
            .status
            .success()
    );
    let out = tree.push(&key, &remote, &["feature"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "remote:  !     refs/heads/feature was not pushed: only main or master deploys"
        ),
        "{err}"
    );
    assert!(err.contains("pre-receive hook declined"), "{err}");
    let bare = git2::Repository::open_bare(receiver.repo(ns.name(), "shop")).unwrap();
    assert!(bare.find_reference("refs/heads/feature").is_err());

    // The deploy branch reaches the pipeline, which fails here (no slug store): the push
    // is declined with the pipeline's reason and the branch does not move.
    let out = tree.push(&key, &remote, &["feature:main"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("remote:  !     "), "{err}");
    assert!(err.contains("slug store"), "{err}");
    assert!(err.contains("pre-receive hook declined"), "{err}");
    assert!(
        bare.find_reference("refs/heads/main").is_err(),
        "main must not move"
    );

    let (_, metrics) = receiver.http_get("/metrics").await;
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"refused_ref\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"build_failed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_key_stays_the_same_across_restarts() {
    let (ns, mut receiver) = setup("host-key").await;
    let key = allowed_user(&ns, &receiver, Some("shop")).await;
    let secrets: Api<Secret> = Api::namespaced(ns.client().clone(), ns.name());
    let before = secrets.get(HOST_KEY_SECRET).await.unwrap().data;
    // First contact pins the key.
    let out = key.ssh(receiver.port(), &[], Some("git-receive-pack 'nope.git'"));
    assert!(stderr(&out).contains("there is no app"), "{}", stderr(&out));

    receiver.restart().await;
    assert_eq!(secrets.get(HOST_KEY_SECRET).await.unwrap().data, before);
    // StrictHostKeyChecking=yes: a changed key would fail verification.
    let cmd = key.ssh_command("yes");
    let mut parts = cmd.split(' ');
    let out = std::process::Command::new(parts.next().unwrap())
        .args(parts)
        .args([
            "-p",
            &receiver.port().to_string(),
            "git@127.0.0.1",
            "git-receive-pack 'nope.git'",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains("Host key verification failed"), "{err}");
    assert!(err.contains("there is no app"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_are_served() {
    let (_ns, receiver) = setup("ops").await;
    let (status, body) = receiver.http_get("/readyz").await;
    assert!(status.contains("200"), "{status} {body}");
    let (status, _) = receiver.http_get("/healthz").await;
    assert!(status.contains("200"), "{status}");
    let (_, metrics) = receiver.http_get("/metrics").await;
    for name in [
        "flynn_gitreceiver_active_sessions",
        "flynn_gitreceiver_received_bytes_total",
        "flynn_gitreceiver_push_duration_seconds",
        "flynn_gitreceiver_deploy_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}

/// Starts `git-receive-pack` for `app` and keeps it waiting (stdin open, nothing sent): it
/// holds the App's lock like a push in progress.
fn hold_push(key: &SshKey, port: u16, app: &str) -> std::process::Child {
    let cmd = key.ssh_command("accept-new");
    let mut parts = cmd.split(' ');
    std::process::Command::new(parts.next().unwrap())
        .args(parts)
        .args([
            "-p",
            &port.to_string(),
            "git@127.0.0.1",
            &format!("git-receive-pack '{app}.git'"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Reads the ref advertisement's first pkt-line: receive-pack is running.
fn wait_advertised(child: &mut std::process::Child) {
    use std::io::Read;
    let mut first = [0u8; 4];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
}

/// `git receive-pack` processes working on `repo`.
fn receive_packs(repo: &std::path::Path) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("receive-pack {}", repo.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_one_app_wait_for_each_other_and_a_gone_client_is_cleaned_up() {
    let (ns, receiver) = setup("one-push-per-app").await;
    let key = allowed_user(&ns, &receiver, Some("shop")).await;
    create_app(ns.client(), ns.name(), "other").await;
    let port = receiver.port();
    let tree = WorkTree::new();
    tree.commit_file("README", "hi");

    let mut first = hold_push(&key, port, "shop");
    wait_advertised(&mut first);

    // Another App is not blocked: its push reaches the (failing) pipeline at once.
    let out = tree.push(&key, &url(port, ns.name(), "other"), &["main"]);
    assert!(
        stderr(&out).contains("pre-receive hook declined"),
        "{}",
        stderr(&out)
    );

    // The same App: the second push says whom it waits for, then runs when the first ends.
    let second = {
        let key_cmd = key.ssh_command("accept-new");
        let dir = tree.dir.path().to_owned();
        let remote = url(port, ns.name(), "shop");
        tokio::task::spawn_blocking(move || {
            git_in(&dir, &["push", &remote, "main"], Some(&key_cmd))
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!second.is_finished(), "the second push must wait");
    // The first client goes away without a word: its receive-pack group is stopped.
    first.kill().unwrap();
    first.wait().unwrap();
    let out = second.await.unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("flynn: waiting for the push to shop by dev-"),
        "{err}"
    );
    assert!(err.contains("pre-receive hook declined"), "{err}");
    let repo = receiver.repo(ns.name(), "shop");
    flynn_e2e::eventually(
        "receive-pack of the killed client to be gone",
        std::time::Duration::from_secs(30),
        || async { receive_packs(&repo) },
        |n| *n == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_waiting_too_long_is_refused() {
    let (ns, receiver) = setup_with("lock-timeout", |s| {
        s.lock_timeout = std::time::Duration::from_secs(1)
    })
    .await;
    let key = allowed_user(&ns, &receiver, Some("shop")).await;
    let mut first = hold_push(&key, receiver.port(), "shop");
    wait_advertised(&mut first);
    let tree = WorkTree::new();
    tree.commit_file("README", "hi");
    let out = tree.push(&key, &url(receiver.port(), ns.name(), "shop"), &["main"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("another push to shop (by dev-"), "{err}");
    assert!(err.contains("try again when it has finished"), "{err}");
    drop(first.stdin.take());
    first.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_racing_to_create_the_host_key_end_up_with_one() {
    let ns = TestNamespace::create("host-key-race").await;
    let api: Api<Secret> = Api::namespaced(ns.client().clone(), ns.name());
    let tries = (0..4).map(|_| {
        let api = api.clone();
        tokio::spawn(async move { flynn_gitreceiver::hostkey::load_or_create(&api, "race").await })
    });
    let keys: Vec<_> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().public_key().clone())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
}

/// The bare repositories of deleted Apps go; those of live Apps, and those of a deleted App
/// with a push still running, stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_of_a_deleted_app_is_removed() {
    let (ns, receiver) = setup_with("repo-gc", |s| {
        bench_mode(s);
        s.repo_gc_interval = Some(std::time::Duration::from_secs(1));
    })
    .await;
    let key = allowed_user(&ns, &receiver, Some("shop")).await;
    for app in ["keep", "held"] {
        create_app(ns.client(), ns.name(), app).await;
    }
    let port = receiver.port();
    let tree = WorkTree::new();
    tree.commit_file("README", "hi");
    for app in ["shop", "keep"] {
        let out = tree.push(&key, &url(port, ns.name(), app), &["main"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(receiver.repo(ns.name(), app).join("HEAD").exists());
    }
    let mut held = hold_push(&key, port, "held");
    wait_advertised(&mut held);

    let apps: Api<flynn_crds::App> = ns.api();
    for app in ["shop", "held"] {
        apps.delete(app, &Default::default()).await.unwrap();
    }
    let removed = || async {
        let (_, metrics) = receiver.http_get("/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("flynn_gitreceiver_repositories_removed_total "))
            .map(|n| n.trim().to_owned())
    };
    flynn_e2e::eventually(
        "shop's repository to be removed",
        std::time::Duration::from_secs(30),
        || async { receiver.repo(ns.name(), "shop").exists() },
        |exists| !exists,
    )
    .await;
    // The counter is bumped after the directory goes: poll it too (CI once read 0 in
    // between).
    let count = flynn_e2e::eventually(
        "the removal to be counted",
        std::time::Duration::from_secs(10),
        removed,
        |n| n.as_deref() == Some("1"),
    )
    .await;
    assert_eq!(count.as_deref(), Some("1"));
    assert!(receiver.repo(ns.name(), "keep").join("HEAD").exists());
    // A pass while the push runs keeps the repository it writes to.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(receiver.repo(ns.name(), "held").join("HEAD").exists());

    held.kill().unwrap();
    held.wait().unwrap();
    flynn_e2e::eventually(
        "held's repository to be removed once its push ended",
        std::time::Duration::from_secs(30),
        || async { receiver.repo(ns.name(), "held").exists() },
        |exists| !exists,
    )
    .await;
    assert_eq!(removed().await.as_deref(), Some("2"));

    // An App made again under the old name starts from an empty repository.
    create_app(ns.client(), ns.name(), "shop").await;
    let out = tree.push(&key, &url(port, ns.name(), "shop"), &["main"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("[new branch]"), "{err}");
}
