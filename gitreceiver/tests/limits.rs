//! What one push may cost the receiver, against the local cluster with the real OpenSSH
//! client and git: a 2 GB file of zeros (2 MB as a pack) is refused without being loaded,
//! while a normal push in flight at the same time deploys; a tree 10,000 directories deep
//! is refused without recursion; pushes over the pack and repository limits are refused
//! with the setting that raises them; a twin just under each limit goes through; and no
//! temporary file or quarantine is left behind. A pack whose second file is a delta against
//! a 900 MiB file of zeros (1 MB of pack) makes git fail alone, under its memory limit,
//! while another push goes through; and a namespace over its number of pushes at once is
//! refused at once while another namespace's push goes through.

mod pipeline_env;
mod receiver_env;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use flynn_e2e::{TestNamespace, eventually, install_flynn_crds};
use flynn_gitreceiver::pipeline::Limits;
use pipeline_env::{Env, Repo, releases};
use receiver_env::*;
use serde_json::json;

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

/// A push spoken by hand over the real OpenSSH client (`git-receive-pack` protocol v0), so
/// the test decides what is sent and when: it can hold a push mid-receive, and send a pack
/// no git client would make.
struct RawPush {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: std::thread::JoinHandle<String>,
}

impl RawPush {
    /// Connects and reads the ref advertisement: once this returns, receive-pack is running
    /// for the push (authorized, counted, holding the App's lock) and waits for commands.
    fn start(key: &SshKey, port: u16, namespace: &str, app: &str) -> Self {
        let cmd = key.ssh_command("accept-new");
        let mut parts = cmd.split(' ');
        let mut child = Command::new(parts.next().unwrap())
            .args(parts)
            .args(["-p", &port.to_string(), "git@127.0.0.1"])
            .arg(format!("git-receive-pack '{namespace}/{app}.git'"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut push = Self {
            stdin: child.stdin.take(),
            stdout: child.stdout.take().unwrap(),
            child,
            stderr,
        };
        if push.read_pkt_lines().is_none() {
            let (_, err) = push.finish();
            panic!("no ref advertisement from {namespace}/{app}:\n{err}");
        }
        push
    }

    /// Reads pkt-lines up to a flush; `None` at end of stream.
    fn read_pkt_lines(&mut self) -> Option<Vec<Vec<u8>>> {
        let mut lines = Vec::new();
        loop {
            let mut len = [0u8; 4];
            self.stdout.read_exact(&mut len).ok()?;
            let len = usize::from_str_radix(std::str::from_utf8(&len).ok()?, 16).ok()?;
            if len == 0 {
                return Some(lines);
            }
            let mut line = vec![0u8; len - 4];
            self.stdout.read_exact(&mut line).ok()?;
            lines.push(line);
        }
    }

    /// Asks to set `refs/heads/main` (new) to `commit`, reporting status.
    fn command(&mut self, commit: &str) {
        let line = format!(
            "{} {commit} refs/heads/main\0report-status\n",
            "0".repeat(40)
        );
        self.send(format!("{:04x}{line}0000", line.len() + 4).as_bytes());
    }

    fn send(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(data).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the input (a push without commands ends there), then reads everything:
    /// (stdout, stderr).
    fn finish(mut self) -> (String, String) {
        drop(self.stdin.take());
        let mut out = Vec::new();
        let _ = self.stdout.read_to_end(&mut out);
        let _ = self.child.wait();
        (
            String::from_utf8_lossy(&out).into_owned(),
            self.stderr.join().unwrap(),
        )
    }
}

/// `git <args>` in `dir`, its stdout trimmed; fails the test on an error.
fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = git_in(dir, args, None);
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A pack object's header: type and size.
fn pack_header(kind: u8, mut size: u64) -> Vec<u8> {
    let mut out = vec![(kind << 4) | (size & 15) as u8];
    size >>= 4;
    while size > 0 {
        *out.last_mut().unwrap() |= 0x80;
        out.push((size & 0x7f) as u8);
        size >>= 7;
    }
    out
}

/// A delta's size: little-endian groups of 7 bits.
fn delta_varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// The attacking pack: blob A, `size` bytes of zeros (as git itself deflates it: ~1 KB per
/// MiB); blob B, A and one byte more, as a REF_DELTA against A (a few hundred bytes); a
/// tree holding B; a commit of that tree. git cannot stream a delta: whoever unpacks B
/// holds A and B in memory, 2 × `size`. Returns (commit, the pack up to and with A, the
/// rest), so a test can hold the push between the two.
fn delta_bomb(dir: &Path, size: u64) -> (String, Vec<u8>, Vec<u8>) {
    let scratch = dir.join("scratch.git");
    git_out(dir, &["init", "-q", "--bare", scratch.to_str().unwrap()]);
    // Sparse files: nothing of them is on disk or in memory; git hashes them streaming.
    let a = dir.join("a.bin");
    std::fs::File::create(&a).unwrap().set_len(size).unwrap();
    let b = dir.join("b.bin");
    std::fs::File::create(&b).unwrap().set_len(size).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&b)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    // A, written by git into a pack of its own (a file above core.bigFileThreshold goes
    // straight into a pack): its entry is copied from there.
    let git_dir = format!("--git-dir={}", scratch.display());
    let a_id = git_out(
        dir,
        &[
            &git_dir,
            "-c",
            "core.bigFileThreshold=1m",
            "hash-object",
            "-w",
            "--no-filters",
            a.to_str().unwrap(),
        ],
    );
    let b_id = git_out(
        dir,
        &[
            &git_dir,
            "-c",
            "core.bigFileThreshold=1m",
            "hash-object",
            "--no-filters",
            b.to_str().unwrap(),
        ],
    );
    let pack_dir = scratch.join("objects/pack");
    let packed = std::fs::read_dir(&pack_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .expect("git hash-object -w wrote no pack");
    let packed = std::fs::read(packed).unwrap();
    let a_entry = &packed[12..packed.len() - 20];

    // B = copy A (in copies of at most 0xff0000 bytes) + insert "x".
    let mut delta = Vec::new();
    delta_varint(size, &mut delta);
    delta_varint(size + 1, &mut delta);
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(0xff_0000);
        let mut op = 0x80u8;
        let mut args = Vec::new();
        for i in 0..4 {
            let byte = (offset >> (8 * i)) as u8;
            if byte != 0 {
                op |= 1 << i;
                args.push(byte);
            }
        }
        for i in 0..3 {
            let byte = (len >> (8 * i)) as u8;
            if byte != 0 {
                op |= 1 << (4 + i);
                args.push(byte);
            }
        }
        delta.push(op);
        delta.extend(args);
        offset += len;
    }
    delta.extend([1, b'x']);

    let b_oid = git2::Oid::from_str(&b_id).unwrap();
    let mut tree = b"100644 b.bin\0".to_vec();
    tree.extend_from_slice(b_oid.as_bytes());
    let tree_id = git2::Oid::hash_object(git2::ObjectType::Tree, &tree).unwrap();
    let commit = format!(
        "tree {tree_id}\nauthor A <a@example.com> 0 +0000\ncommitter A <a@example.com> 0 +0000\n\nB is a delta against 900 MiB of zeros\n"
    );
    let commit_id = git2::Oid::hash_object(git2::ObjectType::Commit, commit.as_bytes()).unwrap();

    let mut head = b"PACK".to_vec();
    head.extend(2u32.to_be_bytes());
    head.extend(4u32.to_be_bytes());
    head.extend_from_slice(a_entry);
    let mut rest = pack_header(7, delta.len() as u64);
    rest.extend_from_slice(git2::Oid::from_str(&a_id).unwrap().as_bytes());
    rest.extend(zlib(&delta));
    rest.extend(pack_header(2, tree.len() as u64));
    rest.extend(zlib(&tree));
    rest.extend(pack_header(1, commit.len() as u64));
    rest.extend(zlib(commit.as_bytes()));
    // The trailer: SHA-1 of everything before it (sha1sum: no SHA-1 crate here).
    let whole = dir.join("bomb.pack");
    std::fs::write(&whole, [head.as_slice(), rest.as_slice()].concat()).unwrap();
    let sum = Command::new("sha1sum").arg(&whole).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = git2::Oid::from_str(sum.split_whitespace().next().unwrap()).unwrap();
    rest.extend_from_slice(sum.as_bytes());
    std::fs::write(&whole, [head.as_slice(), rest.as_slice()].concat()).unwrap();
    (commit_id.to_string(), head, rest)
}

/// Watches the processes working in a directory (their cwd: git enters the repository it
/// works on) and keeps the largest peak RSS (`VmHWM`) seen, sampling every 5 ms. VmHWM only
/// grows, so the last sample before a process exits holds its peak up to then. Per
/// directory, so the tests running beside this one (their git clients) do not count.
struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, std::collections::BTreeSet<u32>)>,
}

impl PeakRss {
    fn watch(dir: &Path) -> Self {
        let dir = std::fs::canonicalize(dir).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (mut peak, mut seen) = (0u64, std::collections::BTreeSet::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                            continue;
                        };
                        if std::fs::read_link(entry.path().join("cwd")).ok().as_deref()
                            != Some(dir.as_path())
                        {
                            continue;
                        }
                        let Ok(status) = std::fs::read_to_string(entry.path().join("status"))
                        else {
                            continue;
                        };
                        if let Some(kib) = status
                            .lines()
                            .find(|l| l.starts_with("VmHWM:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|n| n.parse::<u64>().ok())
                        {
                            peak = peak.max(kib * 1024);
                            seen.insert(pid);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                (peak, seen)
            }
        });
        Self { stop, thread }
    }

    /// (the largest peak RSS, how many processes were seen).
    fn stop(self) -> (u64, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (peak, seen) = self.thread.join().unwrap();
        (peak, seen.len())
    }
}

/// A commit of `len` random bytes in a new work tree.
fn random_commit(len: u64) -> WorkTree {
    let tree = WorkTree::new();
    std::fs::write(tree.dir.path().join("random.bin"), random_bytes(len)).unwrap();
    assert!(tree.git(&["add", "-A"]).status.success());
    assert!(tree.git(&["commit", "-q", "-m", "random"]).status.success());
    tree
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_against_900_mib_of_zeros_fails_in_git_alone_while_another_push_goes_through() {
    require_tools();
    let ns = TestNamespace::create("limits-git-memory").await;
    install_flynn_crds(ns.client()).await.unwrap();
    // The default limit (256 MiB): normal pushes must fit under it.
    let receiver = Receiver::start_with(
        ns.client(),
        ns.name(),
        Receiver::failing_pipeline(ns.client()),
        bench_mode,
    )
    .await;
    let limit = receiver.settings.max_git_memory;
    assert_eq!(limit, 256 * MIB);
    let key = SshKey::generate();
    let user = random_user("dev");
    register_key(ns.client(), ns.name(), &key, &user).await;
    allow_push(ns.client(), ns.name(), &user).await;
    for app in ["bomb", "twin", "after"] {
        create_app(ns.client(), ns.name(), app).await;
    }
    receiver.wait_for_key(&key).await;

    let work = tempfile::tempdir().unwrap();
    let size = 900 * MIB;
    let (commit, head, rest) = delta_bomb(work.path(), size);
    println!(
        "attacking pack: {} KiB for two blobs of 900 MiB",
        (head.len() + rest.len()) / 1024
    );
    // The repository exists once the first push to it has begun.
    let mut bomb = RawPush::start(&key, receiver.port(), ns.name(), "bomb");
    let bounded = PeakRss::watch(&receiver.repo(ns.name(), "bomb"));

    // The attack, held mid-receive (the 900 MiB of zeros sent, the delta not yet) while
    // the twin pushes: both in flight together.
    bomb.command(&commit);
    bomb.send(&head);
    let twin = random_commit(4 * MIB);
    let (ok, err) = push(
        twin.dir.path(),
        &key,
        &url(receiver.port(), ns.name(), "twin"),
    );
    assert!(ok, "the twin pushed beside the attack failed:\n{err}");
    assert_eq!(branch(&receiver, ns.name(), "twin"), Some(twin.head()));
    let mut bomb = tokio::task::spawn_blocking(move || {
        bomb.send(&rest);
        bomb.finish()
    });
    let (report, bomb_err) = tokio::time::timeout(Duration::from_secs(300), &mut bomb)
        .await
        .expect("the attacking push did not end within 300 s")
        .unwrap();
    let (bounded_peak, bounded_seen) = bounded.stop();
    println!("--- attacking push: report\n{report}\n--- its stderr\n{bomb_err}");

    assert!(
        bomb_err.contains("Out of memory"),
        "git did not run out of its memory:\n{bomb_err}"
    );
    assert!(
        bomb_err.contains("flynn: git ran out of memory unpacking this push: each git process of a push may use 256.0M"),
        "{bomb_err}"
    );
    assert!(
        bomb_err.contains(
            "--max-git-memory (FLYNN_MAX_GIT_MEMORY; chart value gitreceiver.maxGitMemory)"
        ),
        "{bomb_err}"
    );
    assert!(!report.contains("ok refs/heads/main"), "{report}");
    assert_eq!(
        branch(&receiver, ns.name(), "bomb"),
        None,
        "main did not move"
    );
    eventually(
        "the attacking push's quarantine to be removed",
        Duration::from_secs(30),
        || async { quarantines(&receiver.repo(ns.name(), "bomb")) },
        |q| q.is_empty(),
    )
    .await;

    // The receiver lives on: the next push goes through.
    let after = random_commit(MIB);
    let (ok, err) = push(
        after.dir.path(),
        &key,
        &url(receiver.port(), ns.name(), "after"),
    );
    assert!(ok, "a push after the attack failed:\n{err}");

    // The peer, measured in this run: the same pack unpacked by git without the limit.
    let peer_repo = work.path().join("peer.git");
    git_out(
        work.path(),
        &["init", "-q", "--bare", peer_repo.to_str().unwrap()],
    );
    let pack = std::fs::read(work.path().join("bomb.pack")).unwrap();
    let unbounded = PeakRss::watch(&peer_repo);
    let mut unpack = Command::new("git")
        .args(["-c", "core.bigFileThreshold=1m", "unpack-objects", "-q"])
        .current_dir(&peer_repo)
        .env("GIT_DIR", &peer_repo)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    unpack.stdin.take().unwrap().write_all(&pack).unwrap();
    let unbounded_ok = unpack.wait().unwrap().success();
    let (unbounded_peak, unbounded_seen) = unbounded.stop();
    println!(
        "peak RSS of git in the repository: {} MiB receiving the attack under the 256 MiB limit ({bounded_seen} processes), {} MiB unpacking the same pack without it ({unbounded_seen}): ratio {:.1}x",
        bounded_peak / MIB,
        unbounded_peak / MIB,
        unbounded_peak as f64 / bounded_peak.max(1) as f64
    );
    assert!(unbounded_ok, "the peer could not unpack the attacking pack");
    assert!(
        bounded_seen > 0 && unbounded_seen > 0,
        "no git process was seen in the repositories: nothing was measured"
    );
    assert!(
        bounded_peak < limit + 64 * MIB,
        "a git process of the push reached {} MiB, over its {} MiB limit",
        bounded_peak / MIB,
        limit / MIB
    );
    assert!(
        unbounded_peak > size,
        "the peer did not need the memory: the pack is not the attack it should be ({} MiB)",
        unbounded_peak / MIB
    );

    let (_, metrics) = receiver.http_get("/metrics").await;
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"git_memory\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_the_concurrent_limits_are_refused_at_once_while_another_namespace_pushes() {
    require_tools();
    let team_a = TestNamespace::create("limits-concurrent-a").await;
    let team_b = TestNamespace::create("limits-concurrent-b").await;
    install_flynn_crds(team_a.client()).await.unwrap();
    let receiver = Receiver::start_with(
        team_a.client(),
        team_a.name(),
        Receiver::failing_pipeline(team_a.client()),
        |s| {
            bench_mode(s);
            s.max_concurrent_pushes = 3;
            s.max_concurrent_pushes_per_namespace = 2;
        },
    )
    .await;
    let key = SshKey::generate();
    let user = random_user("dev");
    register_key(team_a.client(), team_a.name(), &key, &user).await;
    for ns in [&team_a, &team_b] {
        allow_push(ns.client(), ns.name(), &user).await;
        for app in ["one", "two", "three"] {
            create_app(ns.client(), ns.name(), app).await;
        }
    }
    receiver.wait_for_key(&key).await;
    let (a, b) = (team_a.name(), team_b.name());
    let port = receiver.port();

    // Two pushes of team A held mid-receive: its limit.
    let held_a1 = RawPush::start(&key, port, a, "one");
    let held_a2 = RawPush::start(&key, port, a, "two");
    let work = random_commit(64 * 1024);
    let (ok, err) = push(work.dir.path(), &key, &url(port, a, "three"));
    println!("--- team A's third push\n{err}");
    assert!(!ok, "a third push of team A ran:\n{err}");
    assert!(
        err.contains(&format!(
            "flynn: 2 pushes to namespace {a} are running, the platform's limit for one namespace: try again when one of them has finished"
        )),
        "{err}"
    );
    assert!(
        err.contains("gitreceiver.maxConcurrentPushesPerNamespace"),
        "{err}"
    );
    assert_eq!(branch(&receiver, a, "three"), None);

    // The twin from team B, at the same time: it goes through.
    let (ok, err) = push(work.dir.path(), &key, &url(port, b, "one"));
    assert!(ok, "team B's push was refused beside team A's:\n{err}");
    assert_eq!(branch(&receiver, b, "one"), Some(work.head()));

    // One of team B held too: three in all, the receiver's limit.
    let held_b = RawPush::start(&key, port, b, "two");
    let (ok, err) = push(work.dir.path(), &key, &url(port, b, "three"));
    println!("--- team B's push with three running\n{err}");
    assert!(!ok, "a fourth push ran:\n{err}");
    assert!(
        err.contains(
            "flynn: 3 pushes are running on this receiver, its limit: try again in a minute"
        ),
        "{err}"
    );
    assert!(err.contains("gitreceiver.maxConcurrentPushes)"), "{err}");

    // A held push ends (a push without commands): its place is free again.
    let (report, _) = held_a1.finish();
    assert_eq!(report, "", "a push without commands reports nothing");
    eventually(
        "the ended push's place to be given back",
        Duration::from_secs(30),
        || async {
            let (_, m) = receiver.http_get("/metrics").await;
            m.contains("flynn_gitreceiver_active_pushes 2")
        },
        |freed| *freed,
    )
    .await;
    let (ok, err) = push(work.dir.path(), &key, &url(port, a, "three"));
    assert!(ok, "team A's push was refused with a place free:\n{err}");
    assert_eq!(branch(&receiver, a, "three"), Some(work.head()));

    let (_, metrics) = receiver.http_get("/metrics").await;
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"too_many_pushes\"} 2"),
        "{metrics}"
    );
    drop((held_a2.finish(), held_b.finish()));
}
