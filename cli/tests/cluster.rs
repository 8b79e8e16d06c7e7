//! One test per command group, each running the real `flynn` binary against the local
//! cluster in its own namespace, with the operator running in this process for it.
//! Needs the local cluster: `export KUBECONFIG=$(e2e/cluster/up)`.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use flynn_crds::{App, Release};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn one_off_pods(env: &Env) -> Vec<Pod> {
    env.ns
        .api::<Pod>()
        .list(&ListParams::default().labels("flynn.io/one-off=true"))
        .await
        .unwrap()
        .items
}

async fn app_pods(env: &Env, app: &str) -> Vec<Pod> {
    env.ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("flynn.io/app={app},flynn.io/process=web")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn create_apps_info_delete() {
    let env = setup("cli-create").await;
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    git(&["init", "-q"]);

    let out = env.flynn(&["create", "shop"]).await;
    let url = format!("{GIT_URL}/{}/shop.git", env.name());
    assert_eq!(
        out.ok(),
        format!(
            "Created app shop in namespace {ns}\nAdded git remote flynn {url}\nDeploy with: git push flynn main\n",
            ns = env.name()
        )
    );
    assert_eq!(git(&["config", "--get", "remote.flynn.url"]), url);

    // The remote names the app, so no -a is needed here.
    let out = env.flynn(&["info"]).await;
    assert!(
        out.ok().starts_with(&format!(
            "Name:       shop\nNamespace:  {}\nRelease:    none yet",
            env.name()
        )),
        "{out:#?}"
    );
    let info: App = serde_json::from_str(env.flynn(&["info", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(info.name_any(), "shop");

    env.flynn(&["create", "shop", "--no-remote"])
        .await
        .fails(4, "app \"shop\" already exists in namespace");
    env.flynn(&["create", "Bad_Name", "--no-remote"])
        .await
        .fails(2, "invalid app name \"Bad_Name\"");
    env.flynn(&["create", "other"])
        .await
        .fails(4, "git remote flynn already exists and points at");

    let apps = env.flynn(&["apps"]).await;
    let lines: Vec<&str> = apps.ok().lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "RELEASE", "PROCESSES", "READY", "URL", "AGE"]
    );
    assert_eq!(
        lines[1].split_whitespace().take(3).collect::<Vec<_>>(),
        ["shop", "-", "-"],
        "{apps:#?}"
    );
    let rows: serde_json::Value =
        serde_json::from_str(env.flynn(&["apps", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(rows[0]["name"], "shop");
    let yaml = env.flynn(&["apps", "-o", "yaml"]).await;
    assert!(yaml.ok().contains("name: shop"), "{yaml:#?}");

    // Bad input: no app here, an unknown app.
    let elsewhere = tempfile::TempDir::new().unwrap();
    env.flynn_in(elsewhere.path(), &["info"])
        .await
        .fails(2, "no app here: this directory has no `flynn` git remote");
    let err = env.flynn(&["-a", "nope", "info"]).await;
    err.fails(
        3,
        &format!("app \"nope\" not found in namespace {}", env.name()),
    );
    assert!(err.stderr.contains("hint: `flynn -n"), "{err:#?}");

    // Delete asks; without a terminal it needs --yes.
    env.flynn(&["delete"])
        .await
        .fails(2, "refusing to delete app shop without confirmation");
    let out = env.flynn(&["delete", "--yes"]).await;
    assert_eq!(out.ok(), "Deleted app shop\nRemoved git remote flynn\n");
    assert!(
        env.ns
            .api::<App>()
            .get_opt("shop")
            .await
            .unwrap()
            .is_none_or(|a| a.metadata.deletion_timestamp.is_some())
    );
    let out = std::process::Command::new("git")
        .args(["remote"])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[tokio::test]
async fn key_add_list_remove() {
    let env = setup("cli-keys").await;
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeXkViPtiFektWYayOx67JDvpxURqdVPPUCOY0/Ij1q alice@laptop";
    const FINGERPRINT: &str = "SHA256:X7DkcHCYtpLn0IvvXNX/bxwF3VHLGjW2M/cU2eIl96E";

    env.flynn(&["key", "add"])
        .await
        .fails(3, "no SSH public key found");
    let ssh = env.home.path().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::write(
        ssh.join("id_ed25519"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    env.flynn(&["key", "add", ssh.join("id_ed25519").to_str().unwrap()])
        .await
        .fails(2, "it is a private key");
    std::fs::write(ssh.join("id_ed25519.pub"), format!("{KEY}\n")).unwrap();

    let out = env.flynn(&["key", "add"]).await;
    let review = Api::<SelfSubjectReview>::all(env.ns.client().clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let me = review.status.unwrap().user_info.unwrap();
    let user = me.username.unwrap();
    assert_eq!(
        out.ok(),
        format!(
            "Added key {FINGERPRINT} ({}) for {user}\n",
            ssh.join("id_ed25519.pub").display()
        )
    );

    // Exactly the Secret gitreceiver/README.md specifies.
    let secret = env
        .ns
        .api::<Secret>()
        .get("key-5fb0e4707098b692e7d08bef5cd5ff6f")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("flynn.io/ssh-public-key"));
    assert_eq!(secret.labels()["flynn.io/ssh-key"], "true");
    assert_eq!(secret.annotations()["flynn.io/user"], user);
    assert_eq!(
        secret.annotations()["flynn.io/group-list"],
        me.groups.unwrap().join("\n"),
        "the groups, one per line"
    );
    assert_eq!(secret.annotations()["flynn.io/fingerprint"], FINGERPRINT);
    assert_eq!(secret.data.unwrap()["publicKey"].0, KEY.as_bytes());

    // Adding it again is fine; listing shows it.
    let again = env.flynn(&["key", "add"]).await;
    again.ok();
    assert!(again.stderr.contains("already registered"), "{again:#?}");
    let list = env.flynn(&["key", "list"]).await;
    assert_eq!(
        normalize(list.ok(), env.name()),
        normalize(&common::golden("key-list"), env.name())
    );

    env.flynn(&["key", "remove", FINGERPRINT]).await.ok();
    assert_eq!(env.flynn(&["key", "list"]).await.ok(), "");
    env.flynn(&["key", "remove", FINGERPRINT])
        .await
        .fails(3, &format!("no key {FINGERPRINT} registered for {user}"));
}

#[tokio::test]
async fn deploy_scale_ps_kill() {
    let env = setup("cli-scale").await;
    env.deploy_app("shop").await;

    assert_eq!(
        env.flynn(&["-a", "shop", "scale"]).await.ok(),
        "TYPE  DESIRED  READY\nweb   1        1\n"
    );
    let out = env.flynn(&["-a", "shop", "scale", "web=2"]).await;
    assert_eq!(out.ok(), "Scaled web=2: all ready\n");
    assert_eq!(
        env.flynn(&["-a", "shop", "scale"]).await.ok(),
        "TYPE  DESIRED  READY\nweb   2        2\n"
    );

    // Bad TYPE=N, each with its message.
    env.flynn(&["-a", "shop", "scale", "web=x"]).await.fails(
        2,
        "invalid argument \"web=x\": N must be a whole number, 0 or more",
    );
    env.flynn(&["-a", "shop", "scale", "web"])
        .await
        .fails(2, "invalid argument \"web\": expected TYPE=N");
    env.flynn(&["-a", "shop", "scale", "nope=1"]).await.fails(
        2,
        "process type \"nope\" is not in release shop-v1 (it has: web)",
    );

    let ps = env.flynn(&["-a", "shop", "ps"]).await;
    let lines: Vec<&str> = ps.ok().lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TYPE", "RELEASE", "STATE", "RESTARTS", "AGE"]
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{ps:#?}");
    for row in &rows {
        assert!(row[0].starts_with("shop-web-"));
        assert_eq!(&row[1..5], ["web", "v1", "up", "0"], "{ps:#?}");
    }

    let victim = rows[0][0].to_owned();
    assert_eq!(
        env.flynn(&["-a", "shop", "kill", &victim]).await.ok(),
        format!("Killed {victim} (a replacement starts)\n")
    );
    eventually(
        "a replacement pod",
        T,
        || app_pods(&env, "shop"),
        |pods| pods.len() == 2 && pods.iter().all(|p| p.name_any() != victim),
    )
    .await;
    env.flynn(&["-a", "shop", "kill", "not-a-pod"])
        .await
        .fails(3, "pod not-a-pod is not a pod of app shop");
}

#[tokio::test]
async fn log_follow_across_scale_up() {
    let env = setup("cli-log").await;
    env.deploy_app("shop").await;
    let first = app_pods(&env, "shop").await[0].name_any();

    // Without -f: what is there, merged and prefixed.
    let out = env.flynn(&["-a", "shop", "log"]).await;
    assert!(
        out.ok()
            .contains(&format!("web[{first}]: hello from {first}\n")),
        "{out:#?}"
    );
    let raw = env
        .flynn(&["-a", "shop", "log", "--raw", "--lines", "1", "-t", "web"])
        .await;
    assert_eq!(raw.ok(), format!("hello from {first}\n"));
    env.flynn(&["-a", "shop", "log", "--since", "soon"])
        .await
        .fails(2, "expected a duration like 30s");

    // With -f: a pod started later (a scale-up) shows up in the stream.
    let mut follow = env.command_in(env.dir.path(), &["-a", "shop", "log", "-f"]);
    follow.stdout(std::process::Stdio::piped());
    let mut child = follow.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut expect = async |want: &dyn Fn(&str) -> bool, seen: &mut Vec<String>| {
        tokio::time::timeout(T, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
            panic!("log -f ended: {seen:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("timed out; saw {seen:?}"))
    };
    expect(
        &|l| l == format!("web[{first}]: hello from {first}"),
        &mut seen,
    )
    .await;
    env.flynn(&["-a", "shop", "scale", "web=2", "--no-wait"])
        .await
        .ok();
    let line = expect(
        &|l| l.starts_with("web[shop-web-") && !l.contains(&first),
        &mut seen,
    )
    .await;
    let second = line
        .trim_start_matches("web[")
        .split(']')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(line, format!("web[{second}]: hello from {second}"));
    child.kill().await.unwrap();
}

/// Reads a pty into a shared buffer, on a thread (portable-pty readers block).
fn pty_reader(mut reader: Box<dyn Read + Send>) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let out = buffer.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = reader.read(&mut chunk) {
            if n == 0 {
                break;
            }
            out.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buffer
}

async fn wait_for_text(buffer: &Arc<Mutex<String>>, text: &str) {
    let deadline = tokio::time::Instant::now() + T;
    while !buffer.lock().unwrap().contains(text) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {text:?} on the terminal; it shows:\n{}",
            buffer.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn run_with_a_tty() {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let env = setup("cli-run-tty").await;
    env.deploy_app("shop").await;

    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 30,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(flynn_bin());
    // The command waits for input before printing, so nothing is missed before the attach;
    // `stty size` shows the size the pod's TTY has; the exit code must come back. The
    // container runtime applies a resize on its own goroutine, apart from stdin, so the
    // keys can reach the shell before the size does (the TTY is 0x0 until then; CI saw
    // it once): the shell waits for the size to change, as a full-screen program would
    // on its SIGWINCH, and a size that never arrives fails the test by its timeout.
    cmd.args([
        "-n",
        env.name(),
        "-a",
        "shop",
        "run",
        "--",
        "sh",
        "-c",
        "read a; echo \"got $a\"; \
         while [ \"$(stty size)\" = '0 0' ]; do sleep 0.1; done; stty size; read b; \
         while [ \"$(stty size)\" = '30 100' ]; do sleep 0.1; done; stty size; exit 7",
    ]);
    cmd.cwd(env.dir.path());
    for (k, v) in env.envs() {
        cmd.env(k, v);
    }
    cmd.env("TERM", "xterm");
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let screen = pty_reader(pair.master.try_clone_reader().unwrap());
    let mut keys = pair.master.take_writer().unwrap();

    eventually(
        "the one-off pod to run",
        T,
        || one_off_pods(&env),
        |pods| {
            pods.iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        },
    )
    .await;
    keys.write_all(b"first\r").unwrap();
    wait_for_text(&screen, "got first").await;
    wait_for_text(&screen, "30 100").await;

    // A window resize reaches the pod's TTY (SIGWINCH → the attach's resize channel).
    pair.master
        .resize(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    keys.write_all(b"second\r").unwrap();
    wait_for_text(&screen, "40 120").await;

    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.exit_code(),
        7,
        "the command's exit code; terminal:\n{}",
        screen.lock().unwrap()
    );
    eventually(
        "the one-off pod to be deleted",
        T,
        || one_off_pods(&env),
        |pods| pods.is_empty(),
    )
    .await;
}

#[tokio::test]
async fn run_without_a_tty_and_detached() {
    let env = setup("cli-run").await;
    env.deploy_app("shop").await;

    // Without a TTY the output comes from the pod's log, where stdout and stderr are two
    // streams the runtime timestamps apart: lines written microseconds apart can swap, so
    // the command spaces them out.
    let out = env
        .flynn(&[
            "-a",
            "shop",
            "run",
            "-e",
            "FOO=bar",
            "--",
            "sh",
            "-c",
            "echo \"$FOO $FLYNN_APP $FLYNN_RELEASE\"; sleep 0.2; echo oops >&2; exit 3",
        ])
        .await;
    assert_eq!(out.code, 3, "{out:#?}");
    assert_eq!(out.stdout, "bar shop shop-v1\noops\n");
    eventually(
        "the one-off pod to be deleted",
        T,
        || one_off_pods(&env),
        |pods| pods.is_empty(),
    )
    .await;

    env.flynn(&["-a", "shop", "run", "-e", "1X=y", "--", "true"])
        .await
        .fails(2, "invalid environment variable name \"1X\"");

    // Input piped into `flynn run` reaches the command, and ends with EOF.
    let mut piped = env.command_in(
        env.dir.path(),
        &["-a", "shop", "run", "--", "sh", "-c", "wc -l; exit 4"],
    );
    piped
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = piped.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut input, b"one\ntwo\nthree\n")
        .await
        .unwrap();
    drop(input);
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3\n", "{out:?}");

    let out = env
        .flynn(&["-a", "shop", "run", "-d", "--", "sleep", "300"])
        .await;
    let pod = out.ok().trim().to_owned();
    assert!(pod.starts_with("shop-run-"), "{out:#?}");
    let ps = eventually(
        "ps to show the one-off pod up",
        T,
        || env.flynn(&["-a", "shop", "ps"]),
        |out| {
            out.stdout.lines().any(|l| {
                l.split_whitespace().collect::<Vec<_>>()[..4] == [pod.as_str(), "run", "v1", "up"]
            })
        },
    )
    .await;
    ps.ok();
    assert_eq!(
        env.flynn(&["-a", "shop", "kill", &pod]).await.ok(),
        format!("Killed {pod}\n")
    );
}

/// The slugrunner image's tag for this test binary (not another crate's, so tests of
/// different crates running at once never swap an image under each other).
const SLUGRUNNER_TAG: &str = "cli-test";

/// An operator running slugs on the slugrunner image built from this workspace, in a
/// namespace enforcing Pod Security "restricted", with the slug app `py` (web=1) running.
/// The file server must live as long as the app may start pods.
async fn restricted_with_a_slug_app(test: &str) -> (Env, restricted::FileServer) {
    let image = tokio::task::spawn_blocking(|| restricted::ensure_slugrunner_image(SLUGRUNNER_TAG))
        .await
        .unwrap();
    let env = setup_with(test, |s| {
        s.slugrunner_image = image.clone();
        s.slugrunner_pull_policy = "Never".into();
    })
    .await;
    restricted::restrict(env.ns.client(), env.name()).await;
    let slug = restricted::web_slug();
    let server = restricted::FileServer::start("py-v1.tgz", slug.bytes.clone()).await;
    let pp = PostParams::default();
    env.ns
        .api::<Release>()
        .create(&pp, &restricted::slug_release("py", 1, &server.url, &slug))
        .await
        .unwrap();
    let app: App = serde_json::from_value(serde_json::json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "App",
        "metadata": {"name": "py"},
        "spec": {"release": "py-v1", "processes": {"web": 1}}
    }))
    .unwrap();
    let apps = env.ns.api::<App>();
    apps.create(&pp, &app).await.unwrap();
    let _ = eventually(
        "py to run v1",
        T,
        || apps.get("py"),
        |a| {
            a.as_ref().is_ok_and(|a| {
                a.status.as_ref().and_then(|s| s.release.as_deref()) == Some("py-v1")
            })
        },
    )
    .await;
    (env, server)
}

#[tokio::test]
async fn run_under_pod_security_restricted() {
    let (env, _slug_server) = restricted_with_a_slug_app("cli-run-restricted").await;

    // A slug's command runs as the slug user, in the slug's directory, which it may write
    // to, as it may to /tmp; its output and exit code come back.
    let out = env
        .flynn(&[
            "-a",
            "py",
            "run",
            "--",
            "sh",
            "-c",
            "echo \"$(id -u):$(id -g) in $PWD\"; touch /app/x /tmp/y && echo writable; \
             sleep 0.2; cat index.html; exit 4",
        ])
        .await;
    assert_eq!(out.code, 4, "{out:#?}");
    // (The log also has the slugrunner's own line about the slug it unpacked.)
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.contains("slug unpacked"))
        .collect();
    assert_eq!(
        lines,
        [
            "1000:1000 in /app".to_owned(),
            "writable".to_owned(),
            format!("<p>{}</p>", restricted::SLUG_PAGE)
        ],
        "{out:#?}"
    );
    let pod = env
        .flynn(&["-a", "py", "run", "-d", "--", "sleep", "300"])
        .await
        .ok()
        .trim()
        .to_owned();
    let spec = serde_json::to_value(env.ns.api::<Pod>().get(&pod).await.unwrap().spec).unwrap();
    assert_eq!(
        spec["securityContext"],
        serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
                           "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        spec["containers"][0]["securityContext"],
        serde_json::json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );

    // An image runs as its own user, never a forced one...
    env.deploy_app("shop").await;
    let out = env.flynn(&["-a", "shop", "run", "--", "id", "-u"]).await;
    assert_eq!(
        out.ok(),
        format!("{}\n", restricted::NONROOT_UID),
        "{out:#?}"
    );
    // ...and an image that runs as root is refused, saying why and what to change.
    env.flynn(&["create", "rooty", "--no-remote"]).await.ok();
    env.flynn(&[
        "-a",
        "rooty",
        "deploy",
        "--image",
        SMOKE_IMAGE,
        "--process",
        WEB,
        "--no-wait",
    ])
    .await
    .ok();
    let stderr = env
        .flynn(&["-a", "rooty", "run", "--", "true"])
        .await
        .fails(1, "failed: the image runs as root.")
        .to_owned();
    assert!(
        stderr.contains("set a numeric non-root user in the image (e.g. `USER 10001:10001`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn run_with_a_tty_as_the_slug_user() {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let (env, _slug_server) = restricted_with_a_slug_app("cli-run-tty-restricted").await;

    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 30,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(flynn_bin());
    // The command waits for input before printing, so nothing is missed before the attach.
    cmd.args([
        "-n",
        env.name(),
        "-a",
        "py",
        "run",
        "--",
        "sh",
        "-c",
        "read a; echo \"got $a as $(id -u) on $(tty)\"; exit 5",
    ]);
    cmd.cwd(env.dir.path());
    for (k, v) in env.envs() {
        cmd.env(k, v);
    }
    cmd.env("TERM", "xterm");
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let screen = pty_reader(pair.master.try_clone_reader().unwrap());
    let mut keys = pair.master.take_writer().unwrap();
    eventually(
        "the one-off pod to run",
        T,
        || one_off_pods(&env),
        |pods| {
            pods.iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        },
    )
    .await;
    keys.write_all(b"first\r").unwrap();
    // The slug user has the pod's terminal.
    wait_for_text(&screen, "got first as 1000 on /dev/pts/").await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.exit_code(),
        5,
        "the command's exit code; terminal:\n{}",
        screen.lock().unwrap()
    );
}

/// Config vars are Secrets (issue 17): `set` makes a release with its own immutable
/// snapshot; values are printed only when asked for; nothing a `view` user reads (App,
/// Release, Deployment, pods) holds a value, while the process sees it; a rollback brings
/// the old config back; config set before the first release reaches it.
#[tokio::test]
async fn env_get_set_unset() {
    let env = setup("cli-env").await;
    env.deploy_app("shop").await;
    const VALUE: &str = "hello world s3cret";

    assert_eq!(
        env.flynn(&[
            "-a",
            "shop",
            "env",
            "set",
            &format!("GREETING={VALUE}"),
            "DEBUG=1"
        ])
        .await
        .ok(),
        "Created release v2\n"
    );
    assert_eq!(
        env.flynn(&["-a", "shop", "env", "get", "GREETING"])
            .await
            .ok(),
        format!("{VALUE}\n")
    );
    // Names only, unless asked.
    assert_eq!(
        env.flynn(&["-a", "shop", "env"]).await.ok(),
        "DEBUG\nGREETING\n"
    );
    assert_eq!(
        env.flynn(&["-a", "shop", "env", "--values"]).await.ok(),
        format!("DEBUG=1\nGREETING={VALUE}\n")
    );
    let json: serde_json::Value =
        serde_json::from_str(env.flynn(&["-a", "shop", "env", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(json, serde_json::json!(["DEBUG", "GREETING"]));
    let json: serde_json::Value = serde_json::from_str(
        env.flynn(&["-a", "shop", "env", "--values", "-o", "json"])
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(json, serde_json::json!({"DEBUG": "1", "GREETING": VALUE}));

    // The process sees the value...
    let out = env
        .flynn(&["-a", "shop", "run", "--", "sh", "-c", "echo \"$GREETING\""])
        .await;
    assert_eq!(out.ok(), format!("{VALUE}\n"));
    // ... and nothing a `view` user may read holds it: the App, the Release, the
    // Deployment, the pods (`view` may not read Secrets: checked by the authorizer).
    let deployments = env.ns.api::<k8s_openapi::api::apps::v1::Deployment>();
    let readable = [
        serde_json::to_string(&env.ns.api::<App>().get("shop").await.unwrap()).unwrap(),
        serde_json::to_string(&env.ns.api::<Release>().get("shop-v2").await.unwrap()).unwrap(),
        serde_json::to_string(&deployments.get("shop-web").await.unwrap()).unwrap(),
        serde_json::to_string(&app_pods(&env, "shop").await).unwrap(),
    ];
    for text in &readable {
        assert!(
            !text.contains("s3cret"),
            "a config value in plain text: {text}"
        );
    }
    let viewer = format!("{}-viewer", env.name());
    bind_view(&env, &viewer).await;
    let client = env.ns.client();
    assert!(
        can_i(
            client,
            &viewer,
            "get",
            "apps",
            "deployments",
            Some(env.name())
        )
        .await,
        "the twin: the viewer reads Deployments"
    );
    assert!(!can_i(client, &viewer, "get", "", "secrets", Some(env.name())).await);
    let v2 = env.ns.api::<Release>().get("shop-v2").await.unwrap();
    let snapshot = env.ns.api::<Secret>().get("shop-v2-env").await.unwrap();
    assert_eq!(v2.spec.config_secret.as_deref(), Some("shop-v2-env"));
    assert_eq!(snapshot.immutable, Some(true));
    assert_eq!(snapshot.owner_references()[0].name, "shop-v2");
    assert!(
        v2.spec.meta["flynn.io/cause"] == "flynn env set GREETING, DEBUG",
        "the cause names keys, never values: {:?}",
        v2.spec.meta
    );

    assert_eq!(
        env.flynn(&["-a", "shop", "env", "set", "DEBUG=1"])
            .await
            .ok(),
        "No change: still release v2\n"
    );
    assert_eq!(
        env.flynn(&["-a", "shop", "env", "unset", "DEBUG"])
            .await
            .ok(),
        "Created release v3\n"
    );
    let v3 = env.ns.api::<Secret>().get("shop-v3-env").await.unwrap();
    assert_eq!(
        flynn_crds::config::vars(&v3).unwrap(),
        [("GREETING".to_owned(), VALUE.to_owned())].into()
    );
    // A rollback brings back the config the release ran with.
    env.flynn(&["-a", "shop", "release", "rollback", "2"])
        .await
        .ok();
    assert_eq!(
        env.flynn(&["-a", "shop", "env", "get", "DEBUG"]).await.ok(),
        "1\n"
    );

    // A Release may name only its own config Secret: the API server refuses another
    // Secret of the namespace (it would be handed to processes its author controls).
    let mut v9 = env.ns.api::<Release>().get("shop-v3").await.unwrap();
    v9.metadata = kube::api::ObjectMeta {
        name: Some("shop-v9".into()),
        ..Default::default()
    };
    v9.spec.version = 9;
    v9.spec.config_secret = Some("shop-tls".into());
    match env
        .ns
        .api::<Release>()
        .create(&PostParams::default(), &v9)
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 422 => {
            assert!(
                s.message
                    .contains("must be the Release's own config Secret"),
                "{}",
                s.message
            )
        }
        other => panic!("a Release naming shop-tls was not refused: {other:?}"),
    }
    // And a Secret of that name that is not a config Secret (here a TLS key) is not read
    // as config: otherwise the next `env set` or push would copy the key into a release
    // whose processes (and builds) anyone who may push controls.
    let tls: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "shop-v9-env"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "CERT", "tls.key": "PRIVATE-KEY"},
    }))
    .unwrap();
    env.ns
        .api::<Secret>()
        .create(&PostParams::default(), &tls)
        .await
        .unwrap();
    v9.spec.config_secret = Some("shop-v9-env".into());
    env.ns
        .api::<Release>()
        .create(&PostParams::default(), &v9)
        .await
        .unwrap();
    let apps = env.ns.api::<App>();
    let point = |release: &'static str| {
        let apps = apps.clone();
        async move {
            apps.patch(
                "shop",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"spec": {"release": release}})),
            )
            .await
            .unwrap();
        }
    };
    point("shop-v9").await;
    let refused = env
        .flynn(&["-a", "shop", "env", "set", "--no-wait", "STEAL=1"])
        .await;
    refused.fails(3, "Secret shop-v9-env is not a config Secret");
    assert!(!refused.stdout.contains("PRIVATE-KEY") && !refused.stderr.contains("PRIVATE-KEY"));
    assert!(
        env.ns
            .api::<Release>()
            .get_opt("shop-v10")
            .await
            .unwrap()
            .is_none(),
        "no release was made from the TLS key"
    );
    // The twin: pointed back at a release with a config Secret, the same command works.
    point("shop-v2").await;
    assert_eq!(
        env.flynn(&["-a", "shop", "env", "set", "--no-wait", "STEAL=1"])
            .await
            .ok(),
        "Created release v10\n"
    );

    env.flynn(&["-a", "shop", "env", "get", "NOPE"])
        .await
        .fails(3, "config var NOPE is not set on app shop");
    env.flynn(&["-a", "shop", "env", "unset", "NOPE"])
        .await
        .fails(3, "config var NOPE is not set");
    env.flynn(&["-a", "shop", "env", "set", "1X=y"])
        .await
        .fails(2, "invalid environment variable name \"1X\"");
    env.flynn(&["-a", "shop", "env", "set", "NOEQUALS"])
        .await
        .fails(2, "expected KEY=VALUE");

    // Before the first release, config waits in the app's initial Secret for it.
    env.flynn(&["create", "early", "--no-remote"]).await.ok();
    let saved = env.flynn(&["-a", "early", "env", "set", "EARLY=yes"]).await;
    assert!(
        saved.stderr.contains("its first release gets this config"),
        "{saved:#?}"
    );
    assert_eq!(
        env.flynn(&["-a", "early", "env", "--values"]).await.ok(),
        "EARLY=yes\n"
    );
    env.deploy("early").await;
    let v1 = env.ns.api::<Release>().get("early-v1").await.unwrap();
    assert_eq!(v1.spec.config_secret.as_deref(), Some("early-v1-env"));
    assert_eq!(
        env.flynn(&["-a", "early", "env", "get", "EARLY"])
            .await
            .ok(),
        "yes\n"
    );
}

/// Binds the `view` ClusterRole to `user` in the test's namespace.
async fn bind_view(env: &Env, user: &str) {
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    env.ns
        .api::<k8s_openapi::api::rbac::v1::RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

#[tokio::test]
async fn release_list_show_rollback() {
    let env = setup("cli-release").await;
    env.deploy_app("shop").await;
    assert_eq!(
        env.flynn(&["-a", "shop", "env", "set", "A=1"]).await.ok(),
        "Created release v2\n"
    );
    let apps = env.ns.api::<App>();
    let _ = eventually(
        "v2 to roll out",
        T,
        || apps.get("shop"),
        |a| {
            a.as_ref().is_ok_and(|a| {
                a.status.as_ref().and_then(|s| s.release.as_deref()) == Some("shop-v2")
            })
        },
    )
    .await;

    let list = env.flynn(&["-a", "shop", "release", "list"]).await;
    assert_eq!(
        normalize(list.ok(), env.name()),
        "VERSION  STATE    ARTIFACT                         CAUSE                                                 AGE\n\
         v2       current  localhost/flynn-smoke-nonroot:1  flynn env set A                                       <age>\n\
         v1       -        localhost/flynn-smoke-nonroot:1  flynn deploy --image localhost/flynn-smoke-nonroot:1  <age>\n"
    );
    let show = env.flynn(&["-a", "shop", "release", "show", "1"]).await;
    assert!(show.ok().starts_with("Release:    shop-v1\nVersion:    1\nState:      -\nArtifact:   localhost/flynn-smoke-nonroot:1\n"), "{show:#?}");
    assert!(show.stdout.contains("  web: sh -c echo \"hello from $HOSTNAME\"; exec busybox httpd -f -p 8080 -h /www (port 8080)\n"), "{show:#?}");
    let current: Release = serde_json::from_str(
        env.flynn(&["-a", "shop", "release", "show", "-o", "json"])
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(current.spec.version, 2);

    env.flynn(&["-a", "shop", "release", "show", "99"])
        .await
        .fails(3, "release v99 of app shop not found");
    env.flynn(&["-a", "shop", "release", "rollback", "v99"])
        .await
        .fails(3, "release v99 of app shop not found");
    env.flynn(&["-a", "shop", "release", "show", "latest"])
        .await
        .fails(2, "expected a release version");

    assert_eq!(
        env.flynn(&["-a", "shop", "release", "rollback"]).await.ok(),
        "Rolled back to release v1\n"
    );
    let app = env.ns.api::<App>().get("shop").await.unwrap();
    assert_eq!(app.spec.release.as_deref(), Some("shop-v1"));
    assert!(
        app.spec.env.is_empty(),
        "the env rolls back with the release"
    );
    // No new release: the operator sees env and release agree.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let releases = env
        .ns
        .api::<Release>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(releases.len(), 2);
}

#[tokio::test]
async fn limit_set_unset_reach_the_pods_and_outlive_a_deploy() {
    let env = setup("cli-limit").await;
    env.deploy_app("shop").await;
    fn limit<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["-a", "shop", "limit"][..], args].concat()
    }
    assert_eq!(
        env.flynn(&limit(&[])).await.ok(),
        "TYPE  REQUESTS  LIMITS\nweb   -         -\n"
    );
    assert_eq!(
        env.flynn(&limit(&["set", "web", "memory=64Mi", "cpu=200m"]))
            .await
            .ok(),
        "Created release v2\n"
    );
    // The pods of the new release run with them (a limit alone is also the request).
    let pods = app_pods(&env, "shop").await;
    let v2: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.labels().get("flynn.io/release").map(String::as_str) == Some("shop-v2"))
        .collect();
    assert!(!v2.is_empty(), "{pods:#?}");
    let resources = v2[0].spec.as_ref().unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    let limits = resources.limits.unwrap();
    assert_eq!(limits["memory"].0, "64Mi");
    assert_eq!(limits["cpu"].0, "200m");
    assert_eq!(resources.requests.unwrap()["memory"].0, "64Mi");

    // Bad input changes nothing and says how to fix it.
    env.flynn(&limit(&["set", "web", "--requests", "memory=128Mi"]))
        .await
        .fails(
            2,
            "memory request of web (128Mi) would be above its limit (64Mi)",
        );
    env.flynn(&limit(&["set", "web", "memory=64MB"]))
        .await
        .fails(2, "\"64MB\" is not a quantity");
    env.flynn(&limit(&["set", "wrker", "memory=64Mi"]))
        .await
        .fails(2, "process type \"wrker\" is not in release shop-v2");
    env.flynn(&limit(&["unset", "web", "ephemeral-storage"]))
        .await
        .fails(2, "web has no ephemeral-storage limit");
    assert_eq!(
        env.flynn(&limit(&["set", "web", "memory=64Mi"])).await.ok(),
        "No change: still release v2\n"
    );

    assert_eq!(
        env.flynn(&limit(&["unset", "web", "cpu", "--no-wait"]))
            .await
            .ok(),
        "Created release v3\n"
    );
    // A deploy with a new command keeps them.
    let out = env
        .flynn(&[
            "-a",
            "shop",
            "deploy",
            "--image",
            NONROOT_IMAGE,
            "--process",
            WEB,
            "--timeout",
            "180",
        ])
        .await;
    assert!(out.ok().contains("Deployed release v4"), "{out:#?}");
    assert_eq!(
        env.flynn(&limit(&[])).await.ok(),
        "TYPE  REQUESTS  LIMITS\nweb   -         memory=64Mi\n"
    );
    let show = env.flynn(&["-a", "shop", "release", "show", "3"]).await;
    assert!(show.ok().contains("[limits memory=64Mi]"), "{show:#?}");
    let json: serde_json::Value =
        serde_json::from_str(env.flynn(&limit(&["-o", "json"])).await.ok()).unwrap();
    assert_eq!(json["web"]["limits"]["memory"], "64Mi");
}

#[tokio::test]
async fn deployment_settings_show_and_change() {
    let env = setup("cli-deployment").await;
    env.flynn(&["create", "shop", "--no-remote"]).await.ok();
    fn d<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["-a", "shop", "deployment"][..], args].concat()
    }
    assert_eq!(
        env.flynn(&d(&[])).await.ok(),
        "Strategy:       rolling\nTimeout:        300s\nAuto-rollback:  on\n"
    );
    assert_eq!(
        env.flynn(&d(&["set", "--strategy", "one-by-one", "--timeout", "600"]))
            .await
            .ok(),
        "Strategy:       one-by-one\nTimeout:        600s\nAuto-rollback:  on\n"
    );
    env.flynn(&d(&["set", "--auto-rollback", "off"])).await.ok();
    let app = env.ns.api::<App>().get("shop").await.unwrap();
    assert_eq!(app.spec.strategy, flynn_crds::DeployStrategy::OneByOne);
    assert_eq!(app.spec.deploy_timeout_seconds, 600);
    assert!(!app.spec.auto_rollback);
    let json: serde_json::Value =
        serde_json::from_str(env.flynn(&d(&["-o", "json"])).await.ok()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"strategy": "one-by-one", "deployTimeoutSeconds": 600, "autoRollback": false})
    );

    env.flynn(&d(&["set"])).await.fails(2, "nothing to change");
    // Refused by the argument parser, which names the flag and what it takes.
    for (args, says) in [
        (
            &["set", "--timeout", "0"][..],
            "invalid value '0' for '--timeout <SECONDS>'",
        ),
        (
            &["set", "--strategy", "fast"][..],
            "[possible values: rolling, all-at-once, one-by-one]",
        ),
    ] {
        let out = env.flynn(&d(args)).await;
        assert_eq!(out.code, 2, "{out:#?}");
        assert!(out.stderr.contains(says), "{out:#?}");
    }
}

#[tokio::test]
async fn route_list_add_remove_and_conflict() {
    let env = setup("cli-route").await;
    // Default routes (`<app>.test.flynn.local`) are unique cluster-wide, and other tests run
    // an app `shop` at the same time: this test's apps get the namespace's random suffix.
    let id = env.name().rsplit('-').next().unwrap().to_owned();
    let (shop, other) = (format!("shop-{id}"), format!("other-{id}"));
    for app in [&shop, &other] {
        env.flynn(&["create", app, "--no-remote"]).await.ok();
    }
    let domain = format!("www.{}.example", env.name());
    let out = env
        .flynn(&[
            "-a",
            &shop,
            "route",
            "add",
            "http",
            &format!("{domain}/api"),
            "--sticky",
            "--no-drain-backends",
        ])
        .await;
    assert_eq!(
        out.ok(),
        format!("Added route {shop}-{domain}-api: http://{domain}/api → web\n")
    );
    let api = env
        .ns
        .api::<flynn_crds::Route>()
        .get(&format!("{shop}-{domain}-api"))
        .await
        .unwrap()
        .spec
        .http
        .unwrap();
    assert!(api.sticky && !api.drain_backends, "{api:?}");

    // Changed in place: the certificate, the redirect and stickiness; the rest stays.
    let name = format!("{shop}-{domain}-api");
    let out = env
        .flynn(&[
            "-a",
            &shop,
            "route",
            "update",
            &name,
            "--tls-secret",
            "api-tls",
            "--https-redirect",
            "--no-sticky",
        ])
        .await;
    assert_eq!(
        out.ok(),
        format!("Updated route {name}: {domain}/api → web (tls=api-tls,https-redirect,no-drain)\n")
    );
    let list = env.flynn(&["-a", &shop, "route", "list"]).await;
    assert!(
        list.ok().contains("tls=api-tls,https-redirect,no-drain"),
        "{list:#?}"
    );
    env.flynn(&["-a", &shop, "route", "update", &name])
        .await
        .fails(2, "nothing to change");
    env.flynn(&["-a", &other, "route", "update", &name, "--sticky"])
        .await
        .fails(3, "is not a route of app");

    // The same domain and path for another app in this namespace: refused up front.
    let err = env
        .flynn(&[
            "-a",
            &other,
            "route",
            "add",
            "http",
            &format!("{domain}/api"),
        ])
        .await;
    err.fails(
        4,
        &format!(
            "domain {domain} path /api is already routed by {}/{shop}-{domain}-api",
            env.name()
        ),
    );
    let routes = env.ns.api::<flynn_crds::Route>();
    assert!(
        routes
            .get_opt(&format!("{other}-{domain}-api"))
            .await
            .unwrap()
            .is_none()
    );

    // A domain another namespace routes (older by more than the operator's one-second
    // resolution): the operator sets Conflict, and the losing route is removed again.
    let elsewhere = flynn_e2e::TestNamespace::create("cli-route-owner").await;
    let taken = format!("taken.{}.example", env.name());
    let owner = flynn_crds::Route::new("owner", flynn_crds::RouteSpec::http("owner", &taken));
    elsewhere
        .api::<flynn_crds::Route>()
        .create(&PostParams::default(), &owner)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = env
        .flynn(&["-a", &other, "route", "add", "http", &taken])
        .await;
    // The owning namespace is named, never its Route.
    err.fails(
        4,
        &format!(
            "domain {taken} was refused: host {taken} belongs to namespace {}",
            elsewhere.name()
        ),
    );
    assert!(!err.stderr.contains("/owner"), "{}", err.stderr);
    assert!(
        routes
            .get_opt(&format!("{other}-{taken}"))
            .await
            .unwrap()
            .is_none(),
        "the losing route is removed"
    );
    env.flynn(&["-a", &other, "route", "add", "http", "Bad_Domain"])
        .await
        .fails(2, "is not a lower-case DNS name");

    let tcp = env
        .flynn(&["-a", &shop, "route", "add", "tcp", "-t", "web"])
        .await;
    assert!(
        tcp.ok().starts_with(&format!("Added route {shop}-tcp-")),
        "{tcp:#?}"
    );
    let tcp_name = tcp
        .stdout
        .split(':')
        .next()
        .unwrap()
        .trim_start_matches("Added route ")
        .to_owned();

    let route_args = ["-a", shop.as_str(), "route"];
    eventually(
        "the default route to be accepted",
        T,
        || env.flynn(&route_args),
        |out| out.stdout.contains("-default") && !out.stdout.contains("pending"),
    )
    .await;
    let out_list = env.flynn(&["-a", &shop, "route", "list"]).await;
    let list = &out_list;
    let port = tcp_name.rsplit('-').next().unwrap();
    let list = normalize(list.ok(), env.name())
        .replace(port, "<port>")
        .replace(&id, "<id>");
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "NAME", "TYPE", "ROUTE", "PROCESS", "OPTIONS", "STATUS", "URL", "AGE"
            ],
            vec![
                "shop-<id>-default",
                "http",
                "shop-<id>.test.flynn.local",
                "web",
                "-",
                "accepted",
                "http://shop-<id>.test.flynn.local",
                "<age>"
            ],
            vec![
                "shop-<id>-tcp-<port>",
                "tcp",
                ":<port>",
                "web",
                "-",
                "accepted",
                "tcp://:<port>",
                "<age>"
            ],
            vec![
                "shop-<id>-www.<ns>.example-api",
                "http",
                "www.<ns>.example/api",
                "web",
                "tls=api-tls,https-redirect,no-drain",
                "accepted",
                "https://www.<ns>.example/api",
                "<age>"
            ],
        ],
        "{list}"
    );
    // Columns align: every row's URL starts where the header's does.
    let raw = &out_list.stdout;
    let url_at = raw.lines().next().unwrap().find("URL").unwrap();
    assert!(
        raw.lines()
            .skip(1)
            .all(|l| l[url_at..].starts_with("http") || l[url_at..].starts_with("tcp")),
        "{raw}"
    );

    assert_eq!(
        env.flynn(&["-a", &shop, "route", "remove", &tcp_name])
            .await
            .ok(),
        format!("Removed route {tcp_name}\n")
    );
    env.flynn(&["-a", &other, "route", "remove", &format!("{shop}-default")])
        .await
        .fails(
            3,
            &format!("route {shop}-default is not a route of app {other}"),
        );
}

#[tokio::test]
async fn version_and_completion() {
    let env = setup("cli-version").await;
    let out = env.flynn(&["version"]).await;
    let text = out.ok();
    assert!(
        text.starts_with(&format!(
            "client:      flynn {}\nplatform:    ",
            env!("CARGO_PKG_VERSION")
        )),
        "{out:#?}"
    );
    assert!(text.contains("\nkubernetes:  v1."), "{out:#?}");
    let json: serde_json::Value =
        serde_json::from_str(env.flynn(&["version", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(json["client"], env!("CARGO_PKG_VERSION"));

    // Installed as a kubectl plugin (`kubectl flynn ...` runs `kubectl-flynn ...`).
    let plugin = env.home.path().join("kubectl-flynn");
    std::os::unix::fs::symlink(flynn_bin(), &plugin).unwrap();
    let out = tokio::process::Command::new(&plugin)
        .args(["-n", env.name(), "version"])
        .envs(env.envs())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("client:      flynn "),
        "{out:?}"
    );

    for shell in ["bash", "zsh", "fish"] {
        let out = env.flynn(&["completion", shell]).await;
        assert!(out.ok().contains("flynn"), "{shell}: {out:#?}");
        assert!(
            out.stdout.contains("rollback"),
            "{shell} completes subcommands"
        );
    }
    let help = env.flynn(&["scale", "--help"]).await;
    assert!(help.ok().contains("Examples:\n  flynn scale"), "{help:#?}");
    let help = env.flynn(&["--help"]).await;
    assert!(help.ok().contains("Exit codes:"), "{help:#?}");
}

/// Runs `flynn -n <ns> ARGS` on a pseudo-terminal to completion; returns what it showed.
async fn on_a_terminal(env: &Env, args: &[&str], no_color: bool) -> String {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 30,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(flynn_bin());
    cmd.arg("-n");
    cmd.arg(env.name());
    cmd.args(args);
    cmd.cwd(env.dir.path());
    for (k, v) in env.envs() {
        if k != "NO_COLOR" || no_color {
            cmd.env(k, v);
        }
    }
    if !no_color {
        cmd.env_remove("NO_COLOR");
    }
    cmd.env("TERM", "xterm");
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let screen = pty_reader(pair.master.try_clone_reader().unwrap());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = screen.lock().unwrap().clone();
    assert!(status.success(), "{args:?} failed on a terminal:\n{text}");
    text
}

#[tokio::test]
async fn colour_on_a_terminal_unless_no_color() {
    let env = setup("cli-color").await;
    env.flynn(&["create", "shop", "--no-remote"]).await.ok();
    let coloured = on_a_terminal(&env, &["apps"], false).await;
    assert!(
        coloured.contains("\x1b[1mNAME\x1b[0m"),
        "a bold header on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(&env, &["apps"], true).await;
    assert!(
        !plain.contains('\x1b'),
        "NO_COLOR: no escape codes at all: {plain:?}"
    );
    assert!(plain.contains("NAME  RELEASE"), "{plain:?}");
}
