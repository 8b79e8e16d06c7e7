//! What one push may cost the receiver, against the local cluster with the real OpenSSH
//! client and git: a 2 GB file of zeros (2 MB as a pack) is refused without being loaded,
//! while a normal push in flight at the same time deploys; a tree 10,000 directories deep
//! is refused without recursion; pushes over the pack and repository limits are refused
//! with the setting that raises them; a twin just under each limit goes through; and no
//! temporary file or quarantine is left behind.

#[path = "common/pipeline.rs"]
mod pipeline_env;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use flynn_e2e::{TestNamespace, eventually, install_flynn_crds};
use flynn_gitreceiver::pipeline::Limits;
use pipeline_env::{Env, Repo, releases};
use serde_json::json;
use support::*;

const MIB: u64 = 1 << 20;

/// `VmHWM` (peak resident set) or `VmRSS` of this process, in bytes: the receiver runs in
/// it.
fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
}

fn random_bytes(len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    rand::Rng::fill(&mut rand::rng(), &mut v[..]);
    v
}

/// Entries left in `dir` (temporary tarballs).
fn left_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Quarantine directories left in the App's repository.
fn quarantines(repo: &Path) -> Vec<String> {
    match std::fs::read_dir(repo.join("objects")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tmp_objdir-incoming-"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn branch(receiver: &Receiver, ns: &str, app: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(receiver.repo(ns, app)).ok()?;
    let r = repo.find_reference("refs/heads/main").ok()?;
    r.target().map(|o| o.to_string())
}

fn push(work: &Path, key: &SshKey, remote: &str) -> (bool, String) {
    let out = git_in(
        work,
        &["push", remote, "main"],
        Some(&key.ssh_command("accept-new")),
    );
    (out.status.success(), stderr(&out))
}

/// A bare repository whose `main` is one commit of a directory `deep/` nesting `depth`
/// directories `deep/d/d/...` with a file at the bottom. Built from objects with git2: no
/// file system checks out a path 20,000 characters long, and git pushing from a work tree
/// would warn about each path it cannot look up `.gitattributes` in.
fn nested_repo(depth: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init_bare(dir.path()).unwrap();
    let blob = repo.blob(b"bottom\n").unwrap();
    let mut tb = repo.treebuilder(None).unwrap();
    tb.insert("file", blob, 0o100644).unwrap();
    let mut id = tb.write().unwrap();
    for _ in 0..depth - 1 {
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("d", id, 0o040000).unwrap();
        id = tb.write().unwrap();
    }
    let mut root = repo.treebuilder(None).unwrap();
    root.insert("deep", id, 0o040000).unwrap();
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let sig = git2::Signature::now("Test", "test@example.com").unwrap();
    repo.commit(Some("refs/heads/main"), &sig, &sig, "deep", &tree, &[])
        .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2gb_file_of_zeros_and_a_deep_tree_are_refused_while_other_pushes_deploy() {
    let env = Env::start("limits-source").await;
    let ns = env.ns.name().to_owned();
    for app in ["zeros", "web", "deep", "twin"] {
        env.create_app(app, json!({"deployTimeoutSeconds": 120}))
            .await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp_dir = tmp.path().to_owned();
    let limits = Limits {
        max_source_bytes: 256 * MIB,
        max_tree_depth: 64,
        ..Limits::default()
    };
    let pipeline = env.pipeline_with(|s| {
        s.limits = limits;
        s.tmp_dir = Some(tmp_dir.clone());
    });
    require_tools();
    let receiver = Receiver::start(env.ns.client(), &ns, pipeline).await;
    let key = SshKey::generate();
    let user = random_user("dev");
    register_key(env.ns.client(), &ns, &key, &user).await;
    allow_push(env.ns.client(), &ns, &user).await;
    receiver.wait_for_key(&key).await;

    // A commit holding a 2 GiB file of zeros (sparse on this disk; git sends ~2 MB).
    let zeros = Repo::from_fixture("shell-procfile");
    std::fs::File::create(zeros.work.path().join("zeros.bin"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    zeros.commit("two gigabytes of zeros");
    let normal = Repo::from_fixture("shell-procfile");

    // The bad push first; once the receiver is taking it in (its quarantine exists), the
    // normal push. The receiver's peak RSS is measured over both.
    reset_peak_rss();
    let rss_before = proc_status("VmRSS:");
    let started = Instant::now();
    let zeros_push = tokio::task::spawn_blocking({
        let (work, key, remote) = (
            zeros.work.path().to_owned(),
            key.ssh_command("accept-new"),
            url(receiver.port(), &ns, "zeros"),
        );
        move || {
            let out = git_in(&work, &["push", &remote, "main"], Some(&key));
            (out.status.success(), stderr(&out), started.elapsed())
        }
    });
    let zeros_repo = receiver.repo(&ns, "zeros");
    eventually(
        "the receiver to take in the zeros push (its quarantine)",
        Duration::from_secs(120),
        || async { quarantines(&zeros_repo).len() + usize::from(zeros_push.is_finished()) },
        |n| *n > 0,
    )
    .await;
    let normal_started = started.elapsed();
    let normal_push = tokio::task::spawn_blocking({
        let (work, key, remote) = (
            normal.work.path().to_owned(),
            key.ssh_command("accept-new"),
            url(receiver.port(), &ns, "web"),
        );
        move || {
            let out = git_in(&work, &["push", &remote, "main"], Some(&key));
            (out.status.success(), stderr(&out), started.elapsed())
        }
    });
    let (zeros_ok, zeros_err, zeros_took) = zeros_push.await.unwrap();
    let (normal_ok, normal_err, normal_took) = normal_push.await.unwrap();
    let peak = proc_status("VmHWM:");
    println!("--- zeros push (ended after {zeros_took:?})\n{zeros_err}");
    println!(
        "--- normal push (started after {normal_started:?}, ended after {normal_took:?})\n{normal_err}"
    );
    println!(
        "receiver (test process) RSS: {} MiB before, peak {} MiB during both pushes (+{} MiB) for a 2048 MiB file",
        rss_before / MIB,
        peak / MIB,
        peak.saturating_sub(rss_before) / MIB
    );
    assert!(
        normal_started < zeros_took,
        "the normal push started after the zeros push had ended: not in flight together"
    );

    assert!(!zeros_ok, "the 2 GiB of zeros were accepted:\n{zeros_err}");
    assert!(
        zeros_err
            .contains("more than 256.0M unpacked, the receiver's limit (reached at zeros.bin)"),
        "{zeros_err}"
    );
    assert!(
        zeros_err.contains("--max-source-bytes (FLYNN_MAX_SOURCE_BYTES"),
        "{zeros_err}"
    );
    assert_eq!(branch(&receiver, &ns, "zeros"), None, "main did not move");
    assert!(normal_ok, "the normal push failed:\n{normal_err}");
    assert!(
        normal_err.contains("=====> Application deployed"),
        "{normal_err}"
    );
    assert!(
        peak.saturating_sub(rss_before) < 128 * MIB,
        "the receiver's peak RSS grew by {} MiB: the file was loaded",
        peak.saturating_sub(rss_before) / MIB
    );

    // A tree 10,000 directories deep: refused at the limit, no stack overflow (this
    // process would have aborted).
    let deep = nested_repo(10_000);
    let (ok, err) = push(deep.path(), &key, &url(receiver.port(), &ns, "deep"));
    println!("--- deep push\n{err}");
    assert!(!ok, "a tree 10,000 deep was accepted:\n{err}");
    assert!(
        err.contains("directory deep/d/d/")
            && err.contains("is nested more than 64 directories deep"),
        "{err}"
    );
    assert!(
        err.contains("--max-tree-depth (FLYNN_MAX_TREE_DEPTH"),
        "{err}"
    );
    assert_eq!(branch(&receiver, &ns, "deep"), None);

    // The twin just under both limits deploys: 250 MiB of zeros (kept out of the slug by
    // .slugignore) and directories exactly 64 deep.
    let twin = Repo::from_fixture("shell-procfile");
    std::fs::File::create(twin.work.path().join("zeros.bin"))
        .unwrap()
        .set_len(250 * MIB)
        .unwrap();
    twin.write(".slugignore", "zeros.bin\ndeep\n", false);
    twin.write(&format!("deep/{}keep", "d/".repeat(63)), "bottom\n", false);
    let commit = twin.commit("just under the limits");
    reset_peak_rss();
    let rss_before = proc_status("VmRSS:");
    let (ok, err) = push(twin.work.path(), &key, &url(receiver.port(), &ns, "twin"));
    let peak = proc_status("VmHWM:");
    println!("--- twin push\n{err}");
    println!(
        "receiver (test process) RSS: {} MiB before, peak {} MiB while archiving and deploying a 250 MiB file (+{} MiB)",
        rss_before / MIB,
        peak / MIB,
        peak.saturating_sub(rss_before) / MIB
    );
    assert!(ok, "the twin under the limits failed:\n{err}");
    assert_eq!(branch(&receiver, &ns, "twin"), Some(commit));
    assert_eq!(releases(&env, "twin").await.len(), 1);
    assert!(
        peak.saturating_sub(rss_before) < 128 * MIB,
        "the receiver's peak RSS grew by {} MiB archiving 250 MiB: it was loaded, not streamed",
        peak.saturating_sub(rss_before) / MIB
    );

    // Every path cleaned up after itself.
    assert_eq!(
        left_in(tmp.path()),
        Vec::<String>::new(),
        "temporary tarballs"
    );
    for app in ["zeros", "web", "deep", "twin"] {
        eventually(
            &format!("{app}'s quarantine to be removed"),
            Duration::from_secs(30),
            || async { quarantines(&receiver.repo(&ns, app)) },
            |q| q.is_empty(),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_the_pack_and_repository_limits_are_refused_with_the_setting_to_raise() {
    require_tools();
    let ns = TestNamespace::create("limits-pack").await;
    install_flynn_crds(ns.client()).await.unwrap();
    // Accepting deploy-branch pushes without building: these limits are the SSH side's.
    let receiver = Receiver::start_with(
        ns.client(),
        ns.name(),
        Receiver::failing_pipeline(ns.client()),
        |s| {
            bench_mode(s);
            s.max_push_bytes = 8 * MIB;
            s.max_repo_bytes = 10 * MIB;
        },
    )
    .await;
    let key = SshKey::generate();
    let user = random_user("dev");
    register_key(ns.client(), ns.name(), &key, &user).await;
    allow_push(ns.client(), ns.name(), &user).await;
    create_app(ns.client(), ns.name(), "big").await;
    receiver.wait_for_key(&key).await;
    let remote = url(receiver.port(), ns.name(), "big");
    let repo = receiver.repo(ns.name(), "big");

    // 12 MiB that do not compress: a pack over the 8 MiB limit.
    let over = WorkTree::new();
    std::fs::write(over.dir.path().join("random.bin"), random_bytes(12 * MIB)).unwrap();
    assert!(over.git(&["add", "-A"]).status.success());
    assert!(over.git(&["commit", "-q", "-m", "12 MiB"]).status.success());
    let (ok, err) = push(over.dir.path(), &key, &remote);
    println!("--- 12 MiB push\n{err}");
    assert!(!ok, "a push over the limit was accepted:\n{err}");
    assert!(
        err.contains(
            "flynn: this push is larger than 8.0M, the receiver's limit for the data of one push"
        ),
        "{err}"
    );
    assert!(
        err.contains("--max-push-bytes (FLYNN_MAX_PUSH_BYTES"),
        "{err}"
    );
    assert_eq!(branch(&receiver, ns.name(), "big"), None);
    eventually(
        "the refused push's quarantine to be removed",
        Duration::from_secs(30),
        || async { quarantines(&repo) },
        |q| q.is_empty(),
    )
    .await;

    // The twin, 6 MiB: under the pack limit and the repository limit.
    let twin = WorkTree::new();
    std::fs::write(twin.dir.path().join("random.bin"), random_bytes(6 * MIB)).unwrap();
    assert!(twin.git(&["add", "-A"]).status.success());
    assert!(twin.git(&["commit", "-q", "-m", "6 MiB"]).status.success());
    let first = twin.head();
    let (ok, err) = push(twin.dir.path(), &key, &remote);
    assert!(ok, "the 6 MiB twin was refused:\n{err}");
    assert_eq!(branch(&receiver, ns.name(), "big"), Some(first.clone()));

    // 6 MiB more: this push is under the pack limit, but the repository would hold
    // 12 MiB, over its 10 MiB.
    std::fs::write(twin.dir.path().join("more.bin"), random_bytes(6 * MIB)).unwrap();
    assert!(twin.git(&["add", "-A"]).status.success());
    assert!(
        twin.git(&["commit", "-q", "-m", "6 MiB more"])
            .status
            .success()
    );
    let (ok, err) = push(twin.dir.path(), &key, &remote);
    println!("--- repository over its limit\n{err}");
    assert!(!ok, "a repository over its limit grew:\n{err}");
    assert!(
        err.contains(&format!(
            "the repository of {}/big would hold 12.",
            ns.name()
        )) && err.contains("more than 10.0M"),
        "{err}"
    );
    assert!(
        err.contains("--max-repo-bytes (FLYNN_MAX_REPO_BYTES"),
        "{err}"
    );
    assert_eq!(
        branch(&receiver, ns.name(), "big"),
        Some(first),
        "main did not move"
    );
    eventually(
        "the refused push's quarantine to be removed",
        Duration::from_secs(30),
        || async { quarantines(&repo) },
        |q| q.is_empty(),
    )
    .await;

    let (_, metrics) = receiver.http_get("/metrics").await;
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"too_large\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"repo_too_large\"} 1"),
        "{metrics}"
    );
}
