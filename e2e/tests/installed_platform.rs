//! The platform as a platform team installs it and a developer uses it, on the local
//! cluster: every image built from its Containerfile by `e2e/images` and pushed to the
//! cluster's registry, `helm upgrade --install` through `e2e/install` pulling them by
//! digest, then `flynn create`, `flynn key add`, `git push` over SSH, curl through the
//! router, scale, env, rollback, routes (HTTPS with a TLS Secret, TCP), `flynn run` with a
//! TTY, `flynn log`, databases for apps (`flynn resource add postgres|redis`, `flynn pg`:
//! installed_platform/databases.rs), `flynn delete`; `helm upgrade` to a rebuilt router
//! image under steady load; and `helm uninstall`, after which nothing of the platform is
//! left.
//!
//! This test owns the Helm release `flynn` in `flynn-system` (the one `e2e/demo` installs):
//! it upgrades it in place and uninstalls it at the end. Run `e2e/demo` again afterwards
//! for a running platform. Every step that fails shows the command's own output.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flynn_e2e::{LOCAL_CLUSTER_KUBECONFIG, free_port, helm};

#[path = "installed_platform/databases.rs"]
mod databases;

const SYSTEM_NS: &str = "flynn-system";
const RELEASE: &str = "flynn";
const DOMAIN: &str = "flynn.local";
/// The router's own namespace (host networking needs Pod Security "privileged").
const EDGE_NS: &str = "flynn-edge";
/// The git receiver's NodePort (e2e/cluster/platform-values.yaml), in git remotes.
const SSH_PORT: u16 = 30222;
const RESTRICTED: &str = "pod-security.kubernetes.io/enforce=restricted";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubeconfig() -> String {
    std::env::var("KUBECONFIG").unwrap_or_else(|_| LOCAL_CLUSTER_KUBECONFIG.to_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to the end; panics with its command line, exit status and output unless it
/// succeeded. Returns stdout.
#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn output(cmd: &mut Command) -> Output {
    cmd.env("KUBECONFIG", kubeconfig())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not start `{}`: {e} (is it installed? e2e/cluster/deps installs the cluster's tools)",
                describe(cmd)
            )
        })
}

fn kubectl(args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.args(args);
    c
}

/// `e2e/install` with `values` and what the local cluster needs beside the image pins
/// (e2e/cluster/platform-values.yaml: the router in a namespace of its own, the receiver
/// behind a NodePort, state on the claims e2e/cluster/platform-prereqs binds).
fn install_command(values: &[&Path]) -> Command {
    let mut cmd = Command::new(repo().join("e2e/install"));
    for v in values {
        cmd.arg("-f").arg(v);
    }
    cmd.arg("-f")
        .arg(repo().join("e2e/cluster/platform-values.yaml"));
    cmd
}

fn install(values: &[&Path]) {
    run(&mut install_command(values));
}

/// An HTTP/1.1 GET of `path` with `Host: host` to 127.0.0.1:`port`: (status, body).
fn get(port: u16, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    request(port, host, "GET", path, "")
}

/// An HTTP/1.1 request with `Host: host` and `body` to 127.0.0.1:`port`: (status, body).
fn request(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `f` every 500 ms until it returns Some, or panics after `secs` with the last
/// value seen.
#[track_caller]
fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {secs} s waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Waits until the router answers `host` with a body containing `want`.
#[track_caller]
fn serves(host: &str, want: &str) -> String {
    until(
        &format!("http://{host}/ to say {want:?}"),
        120,
        || match get(80, host, "/") {
            Ok((200, body)) if body.contains(want) => Ok(body),
            other => Err(format!("{other:?}")),
        },
    )
}

/// The developer: a namespace, an SSH key, a git checkout, the `flynn` CLI.
struct Developer {
    ns: String,
    home: tempfile::TempDir,
    src: PathBuf,
    flynn: PathBuf,
}

impl Drop for Developer {
    fn drop(&mut self) {
        let _ = output(
            kubectl(&["delete", "namespace", &self.ns, "--wait=false"]).stdout(Stdio::null()),
        );
    }
}

impl Developer {
    fn flynn(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.flynn);
        c.arg("-n")
            .arg(&self.ns)
            .args(args)
            .current_dir(&self.src)
            .env("HOME", self.home.path())
            .env("NO_COLOR", "1")
            .env("GIT_SSH_COMMAND", self.ssh_command())
            .env_remove("FLYNN_APP");
        c
    }

    fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.home.path().join("ssh_config").display())
    }

    fn git(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(&self.src)
            .env("HOME", self.home.path())
            .env("GIT_SSH_COMMAND", self.ssh_command())
            .env("GIT_AUTHOR_NAME", "dev")
            .env("GIT_AUTHOR_EMAIL", "dev@flynn.local")
            .env("GIT_COMMITTER_NAME", "dev")
            .env("GIT_COMMITTER_EMAIL", "dev@flynn.local");
        c
    }
}

/// Counts requests through the router on a few threads until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(host: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, host) =
                    (stop.clone(), ok.clone(), failed.clone(), host.to_owned());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match get(80, &host, "/") {
                            Ok((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                if errors.len() < 5 {
                                    errors.push(format!("{other:?}"));
                                }
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn total(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// (succeeded, failed, a few of the failures).
    fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[test]
fn a_platform_team_installs_it_and_a_developer_uses_it() {
    let kubeconfig = kubeconfig();
    assert!(
        Path::new(&kubeconfig).exists(),
        "no cluster: {kubeconfig} is missing; start the local cluster with `export KUBECONFIG=$(e2e/cluster/up)`"
    );

    // --- The platform team: images to the registry, then the chart pulling them.
    let values = run(&mut Command::new(repo().join("e2e/images")));
    let values = PathBuf::from(values.lines().last().expect("e2e/images printed nothing"));
    let pinned = std::fs::read_to_string(&values).unwrap();
    for c in [
        "operator",
        "router",
        "gitreceiver",
        "slugbuilder",
        "slugrunner",
    ] {
        assert!(
            pinned.contains(&format!("repository: \"localhost:5001/flynn-{c}\", "))
                && pinned.contains("digest: \"sha256:"),
            "{} does not pin flynn-{c} by digest:\n{pinned}",
            values.display()
        );
    }
    // The release namespace enforces Pod Security "restricted"; its volumes are ready.
    run(&mut Command::new(
        repo().join("e2e/cluster/platform-prereqs"),
    ));
    refusals_before_anything_is_applied(&values);
    install(&[&values]);
    let labels = run(&mut kubectl(&[
        "get",
        "namespace",
        SYSTEM_NS,
        "--show-labels",
        "--no-headers",
    ]));
    assert!(
        labels.contains(RESTRICTED),
        "{SYSTEM_NS} does not enforce restricted: {labels}"
    );
    helm_test_checks_each_component();
    // An upgrade that would change what cannot change (a claim's storage class) is
    // refused before anything is applied, naming the claim and the way out.
    let before = helm_revision();
    let mut cmd = install_command(&[&values]);
    cmd.args(["--set", "shelf.storage.storageClassName=other"]);
    let out = output(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a claim's class changed: {err}");
    assert!(
        err.contains("the claim flynn-system/flynn-shelf holds the data on class \"flynn-local\"")
            && err.contains("shelf.storage.existingClaim"),
        "{err}"
    );
    assert_eq!(
        helm_revision(),
        before,
        "the refused upgrade changed the release"
    );
    a_pod_that_cannot_pull_is_named(&values);
    // Every platform pod runs an image from the registry, by digest.
    let images = run(&mut kubectl(&[
        "-n",
        SYSTEM_NS,
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "-o",
        "jsonpath={range .items[*].spec.containers[*]}{.image}{\"\\n\"}{end}",
    ]));
    assert!(!images.trim().is_empty(), "no platform pods");
    for image in images.lines() {
        assert!(
            image.starts_with("localhost:5001/flynn-") && image.contains("@sha256:"),
            "a platform pod runs {image}, not an image from the registry by digest"
        );
    }

    // --- The developer.
    let dev = developer();
    let app = "shop";
    let host = format!("{app}.{DOMAIN}");
    run(&mut dev.flynn(&["create", app]));
    let remote = run(&mut dev.git(&["remote", "get-url", "flynn"]));
    assert!(
        remote.trim() == format!("ssh://git@flynn.local:{SSH_PORT}/{}/{app}.git", dev.ns),
        "flynn create set the remote to {remote:?}"
    );
    let key = dev.home.path().join("id_ed25519.pub");
    run(&mut dev.flynn(&["key", "add", key.to_str().unwrap()]));
    run(&mut dev.git(&["push", "flynn", "main"]));
    let body = serves(&host, "from Python");
    assert!(body.contains("Hello, world"), "{body}");

    // Scale: two web processes, both serving.
    run(&mut dev.flynn(&["scale", "web=2", "--timeout", "180"]));
    let ps = run(&mut dev.flynn(&["ps"]));
    assert_eq!(
        ps.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.get(1) == Some(&"web") && f.get(3) == Some(&"up"))
            .count(),
        2,
        "flynn ps after scale web=2:\n{ps}"
    );

    // Config: a new release with the variable; rollback to the one before. The value
    // reaches the process, and nothing anyone with `view` reads (App, Release,
    // Deployment, pods) holds it: it is in the release's Secret.
    run(&mut dev.flynn(&["env", "set", "GREETING_NAME=cfg-7f3a9"]));
    serves(&host, "Hello, cfg-7f3a9");
    let readable = run(&mut kubectl(&[
        "-n",
        &dev.ns,
        "get",
        "apps.flynn.io,releases.flynn.io,deployments,pods",
        "-o",
        "json",
    ]));
    assert!(
        readable.contains("\"configSecret\"") && readable.contains("secretRef"),
        "the check reads the release and the Deployment naming its Secret"
    );
    assert!(
        !readable.contains("cfg-7f3a9"),
        "a config value in plain text:\n{readable}"
    );
    run(&mut dev.flynn(&["release", "rollback", "--timeout", "180"]));
    serves(&host, "Hello, world");

    // HTTPS with a certificate from a TLS Secret, and a TCP route.
    let secure = format!("secure-{app}.{DOMAIN}");
    let certs = tempfile::tempdir().unwrap();
    let (crt, key_pem) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        &format!("/CN={secure}"),
        "-addext",
        &format!("subjectAltName=DNS:{secure}"),
        "-keyout",
        key_pem.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]));
    run(&mut kubectl(&[
        "-n",
        &dev.ns,
        "create",
        "secret",
        "tls",
        "shop-tls",
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key_pem.to_str().unwrap(),
    ]));
    run(&mut dev.flynn(&["route", "add", "http", &secure, "--tls-secret", "shop-tls"]));
    let https = until(&format!("https://{secure}/ through the router"), 60, || {
        let out = output(Command::new("curl").args([
            "-sS",
            "--fail",
            "--cacert",
            crt.to_str().unwrap(),
            "--resolve",
            &format!("{secure}:443:127.0.0.1"),
            &format!("https://{secure}/"),
        ]));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    assert!(https.contains("from Python"), "{https}");
    // From the platform's range of TCP Route ports (the chart's default, 20000-29999).
    let tcp_port = (20000..=29999u16)
        .cycle()
        .skip(usize::from(free_port()) % 10000)
        .take(10000)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("no free port in 20000-29999");
    run(&mut dev.flynn(&["route", "add", "tcp", "--port", &tcp_port.to_string()]));
    until(
        &format!("the TCP route on port {tcp_port}"),
        60,
        || match get(tcp_port, "anything", "/") {
            Ok((200, body)) if body.contains("from Python") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    least_privilege(&dev.ns);

    // A one-off process with a terminal (script(1) gives `flynn run` a real pty); its
    // exit code comes back. (It waits before printing: like `kubectl attach`, `flynn run`
    // attaches after the process starts, and what a TTY process writes before is lost.)
    let mut tty = Command::new("script");
    tty.args(["-qec"])
        .arg(format!(
            "{} -n {} -a {app} run -- sh -c 'sleep 3; tty; exit 7'",
            dev.flynn.display(),
            dev.ns
        ))
        .arg("/dev/null")
        .current_dir(&dev.src)
        .env("HOME", dev.home.path());
    let out = output(&mut tty);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "flynn run with a TTY: {text}");
    assert!(text.contains("/dev/pts/"), "no terminal in the pod: {text}");

    // The log has the app's lines.
    let log = run(&mut dev.flynn(&["log", "--lines", "50"]));
    assert!(log.contains("web"), "flynn log:\n{log}");

    // --- Databases for apps: Postgres and Redis Resources of a second sample.
    databases::databases(&dev);

    // --- The platform team upgrades each component to a rebuilt image while traffic
    // flows. The router: the new pod binds the node's ports beside the old one, which
    // drains once the new one is ready. Not one request may fail.
    let router = rebuilt("router", certs.path());
    let (ok, failed, errors) = under_load(&host, || install(&[&values, &router.values]));
    eprintln!(
        "FIGURE helm upgrade of the router under load: {failed} of {} requests failed; first failures: {errors:?}",
        ok + failed
    );
    assert_eq!(
        failed, 0,
        "requests failed during the router's upgrade: {errors:?}"
    );
    let router_images = run(&mut kubectl(&[
        "-n",
        EDGE_NS,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=flynn-router",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]));
    assert!(
        router_images.contains(&router.tag) && router_images.split_whitespace().count() == 1,
        "the router runs {router_images}, not only the rebuilt {}",
        router.tag
    );
    // The operator: apps keep serving while its replicas roll, and the new one reconciles.
    let operator = rebuilt("operator", certs.path());
    let (ok, failed, errors) = under_load(&host, || {
        install(&[&values, &router.values, &operator.values])
    });
    eprintln!(
        "FIGURE helm upgrade of the operator under load: {failed} of {} requests failed; first failures: {errors:?}",
        ok + failed
    );
    assert_eq!(
        failed, 0,
        "requests failed during the operator's upgrade: {errors:?}"
    );
    run(&mut dev.flynn(&["scale", "web=1", "--timeout", "180"]));
    // The git receiver, with a push in flight: the old pod finishes it before it goes.
    let receiver = rebuilt("gitreceiver", certs.path());
    std::fs::write(
        dev.src.join("UPGRADE"),
        "pushed while the receiver was upgraded\n",
    )
    .unwrap();
    run(&mut dev.git(&["add", "UPGRADE"]));
    run(&mut dev.git(&["commit", "-q", "-m", "during the upgrade"]));
    let builds = || {
        run(&mut kubectl(&[
            "-n",
            &dev.ns,
            "get",
            "jobs",
            "-l",
            "flynn.io/build",
            "-o",
            "name",
        ]))
    };
    let before = builds();
    let receiver_pods = || {
        run(&mut kubectl(&[
            "-n",
            SYSTEM_NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=flynn-gitreceiver",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.deletionTimestamp}{\" \"}{end}",
        ]))
    };
    let old_receiver = receiver_pods();
    let mut push = dev.git(&["push", "flynn", "main"]);
    let push = std::thread::spawn(move || (output(&mut push), Instant::now()));
    until("the push's build to start", 120, || {
        let now = builds();
        if now.lines().any(|j| !before.lines().any(|b| b == j)) {
            Ok(())
        } else {
            Err(now)
        }
    });
    let started = Instant::now();
    let upgrade = {
        let files =
            [&values, &router.values, &operator.values, &receiver.values].map(|p| p.to_path_buf());
        std::thread::spawn(move || {
            output(&mut install_command(&files.each_ref().map(|p| p.as_path())))
        })
    };
    // When the old receiver is told to stop (its pod marked for deletion).
    let stopping = until("the old receiver to be told to stop", 120, || {
        let now = receiver_pods();
        if now != old_receiver {
            Ok(Instant::now())
        } else {
            Err(now)
        }
    });
    let (pushed, push_ended) = push.join().unwrap();
    let upgraded = upgrade.join().unwrap();
    assert!(
        upgraded.status.success(),
        "the receiver's upgrade failed: {}",
        String::from_utf8_lossy(&upgraded.stderr)
    );
    let in_flight = push_ended > stopping;
    eprintln!(
        "FIGURE helm upgrade of the git receiver with a push in flight: the push {} ({}), {}; the upgrade took {:?}",
        if pushed.status.success() {
            "succeeded"
        } else {
            "FAILED"
        },
        pushed.status,
        if in_flight {
            format!(
                "ending {:?} after the old receiver was told to stop",
                push_ended - stopping
            )
        } else {
            format!(
                "ending {:?} before the old receiver was told to stop",
                stopping - push_ended
            )
        },
        started.elapsed()
    );
    assert!(
        pushed.status.success(),
        "the push in flight during the receiver's upgrade failed:\n{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    serves(&host, "from Python");
    // The slug store: its pod replaced (a config change; Recreate, one writer per volume)
    // while new app pods download their slug from it. They retry connecting for 30 s, so
    // none fails to start.
    let upgrade = {
        let (values, router, operator, receiver) = (
            values.clone(),
            router.values.clone(),
            operator.values.clone(),
            receiver.values.clone(),
        );
        std::thread::spawn(move || {
            let mut cmd = install_command(&[&values, &router, &operator, &receiver]);
            cmd.args(["--set", "shelf.gc.graceSeconds=21601"]);
            output(&mut cmd)
        })
    };
    let store_pod = || {
        run(&mut kubectl(&[
            "-n",
            SYSTEM_NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=flynn-shelf",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.deletionTimestamp}{\" \"}{end}",
        ]))
    };
    let old_store = store_pod();
    until("the slug store's pod to be replaced", 120, || {
        let now = store_pod();
        if now != old_store { Ok(()) } else { Err(now) }
    });
    run(&mut dev.flynn(&["scale", "web=3", "--timeout", "180"]));
    let upgraded = upgrade.join().unwrap();
    assert!(
        upgraded.status.success(),
        "the slug store's upgrade failed: {}",
        String::from_utf8_lossy(&upgraded.stderr)
    );
    let restarts = run(&mut kubectl(&[
        "-n",
        &dev.ns,
        "get",
        "pods",
        "-l",
        "flynn.io/process=web",
        "-o",
        "jsonpath={range .items[*]}{.status.containerStatuses[0].restartCount}{\" \"}{end}",
    ]));
    let restarted: u32 = restarts
        .split_whitespace()
        .map(|r| r.parse::<u32>().unwrap())
        .sum();
    eprintln!(
        "FIGURE helm upgrade of the slug store while 2 app pods started: {restarted} container restarts among the web pods ({restarts})"
    );
    assert_eq!(
        restarted, 0,
        "app pods failed to start while the store was replaced"
    );
    serves(&host, "from Python");

    // --- A cluster that forbids host networking: the router as a Deployment behind a
    // Service on unprivileged ports (here a NodePort: the local cluster has no load
    // balancer), so its namespace too enforces "restricted" and nothing of the platform
    // runs privileged.
    let mut cmd = install_command(&[&values, &router.values, &operator.values, &receiver.values]);
    cmd.args([
        "--set",
        "router.mode=service,router.service.type=NodePort,router.service.nodePorts.http=30080",
    ]);
    run(&mut cmd);
    let edge = run(&mut kubectl(&[
        "get",
        "namespace",
        EDGE_NS,
        "--show-labels",
        "--no-headers",
    ]));
    assert!(
        edge.contains(RESTRICTED),
        "{EDGE_NS} in service mode: {edge}"
    );
    // Two pods of the Deployment, none on the host network (the DaemonSet's is gone).
    until(
        "two router pods behind the Service, and no other",
        120,
        || {
            let routers = run(&mut kubectl(&[
                "-n",
                EDGE_NS,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=flynn-router",
                "-o",
                "jsonpath={range .items[*]}{.metadata.ownerReferences[0].kind} hostNetwork={.spec.hostNetwork} {.status.phase}{\"\\n\"}{end}",
            ]));
            let lines: Vec<_> = routers.lines().collect();
            if lines.len() == 2
                && lines
                    .iter()
                    .all(|l| *l == "ReplicaSet hostNetwork= Running")
            {
                Ok(())
            } else {
                Err(routers)
            }
        },
    );
    let body = until(
        &format!("http://{host}/ through the router's NodePort"),
        120,
        || match get(30080, &host, "/") {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(body.contains("from Python"), "{body}");

    // --- The developer deletes the app: its objects go.
    run(&mut dev.flynn(&["delete", "--yes"]));
    until("the app's pods to go", 120, || {
        let pods = run(&mut kubectl(&["-n", &dev.ns, "get", "pods", "-o", "name"]));
        if pods.trim().is_empty() {
            Ok(())
        } else {
            Err(pods)
        }
    });

    // --- The platform team uninstalls: nothing of the platform stays but what is
    // documented as kept (CRDs, which Helm never deletes; the PersistentVolumeClaims of
    // slugs and repositories; the SSH host key and the slug store's token, which the
    // components create). The leader Lease, which the operator makes, goes with the
    // chart's ConfigMap that owns it; the router's namespace goes with the router.
    drop(dev);
    run(helm().args([
        "uninstall",
        RELEASE,
        "-n",
        SYSTEM_NS,
        "--wait",
        "--timeout",
        "180s",
    ]));
    // Pods go after their Deployments, and owned objects after their owners: give the
    // garbage collector a moment.
    until(
        "helm uninstall to leave nothing of the platform",
        120,
        || {
            let left = run(&mut kubectl(&[
                "get",
                "all,configmaps,secrets,serviceaccounts,roles,rolebindings,leases,persistentvolumeclaims,poddisruptionbudgets,networkpolicies",
                "-n",
                SYSTEM_NS,
                "-o",
                "name",
            ]));
            let mut left: Vec<String> = left
                .lines()
                .filter(|l| {
                    ![
                        // Kubernetes' own, in every namespace.
                        "configmap/kube-root-ca.crt",
                        "serviceaccount/default",
                        // Kept on purpose (README, "On a real cluster"): a reinstall keeps the
                        // SSH host key developers pinned.
                        "secret/flynn-gitreceiver-hostkey",
                        // ... and every Release's slug URL keeps working after a reinstall.
                        "secret/flynn-shelf-token",
                        // (or, installed first by a chart before 0.2, the token it made)
                        "secret/flynn-shelf",
                        "persistentvolumeclaim/flynn-shelf",
                        "persistentvolumeclaim/flynn-gitreceiver",
                        // The platform's Postgres: the apps' databases, and the superuser
                        // password they were made with (charts/flynn/README.md).
                        "persistentvolumeclaim/flynn-postgres",
                        "secret/flynn-postgres-admin",
                    ]
                    .contains(l)
                })
                .map(|l| format!("{SYSTEM_NS}: {l}"))
                .collect();
            // The keys namespace is kept with developers' keys in it, and nothing else.
            let keys = run(&mut kubectl(&[
                "get",
                "roles,rolebindings,configmaps,deployments",
                "-n",
                "flynn-keys",
                "-o",
                "name",
            ]));
            left.extend(
                keys.lines()
                    .filter(|l| *l != "configmap/kube-root-ca.crt")
                    .map(|l| format!("flynn-keys: {l}")),
            );
            let cluster = run(&mut kubectl(&[
                "get",
                "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings",
                "-l",
                &format!("app.kubernetes.io/instance={RELEASE}"),
                "-o",
                "name",
            ]));
            left.extend(cluster.lines().map(str::to_owned));
            let edge = output(&mut kubectl(&["get", "namespace", EDGE_NS, "-o", "name"]));
            if edge.status.success() {
                left.push(format!("namespace {EDGE_NS}"));
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}

/// A namespace without the test label (the installed platform serves it), a key pair, an
/// ssh config that finds the receiver on this node with its host key pinned from the
/// cluster (no trust on first use), and the Python sample as a git checkout.
/// What each component may do, as the API server's authorizer answers
/// `kubectl auth can-i --as=<its ServiceAccount>`: a permission the component needs where
/// it works (the developer's namespace, which now holds an App and a TLS Route), beside the
/// same permission where it has no business (kube-system, the platform's own namespace).
fn least_privilege(dev_ns: &str) {
    let can = |sa_ns: &str, sa: &str, what: &[&str], ns: &str| -> bool {
        let user = format!("--as=system:serviceaccount:{sa_ns}:{RELEASE}-{sa}");
        let mut args = vec!["auth", "can-i"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-n", ns, &user]);
        let out = output(&mut kubectl(&args));
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            answer == "yes" || answer == "no",
            "kubectl auth can-i {what:?} -n {ns} {user}: {answer:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        answer == "yes"
    };
    let receiver = |what: &[&str], ns: &str| can(SYSTEM_NS, "gitreceiver", what, ns);
    let router = |what: &[&str], ns: &str| can(EDGE_NS, "router", what, ns);
    let operator = |what: &[&str], ns: &str| can(SYSTEM_NS, "operator", what, ns);
    for (who, allowed, what, ns) in [
        // The receiver builds where Apps are, and only there.
        (
            "receiver",
            receiver(&["create", "jobs"], dev_ns),
            "create jobs",
            dev_ns,
        ),
        (
            "receiver",
            !receiver(&["create", "jobs"], "kube-system"),
            "not create jobs",
            "kube-system",
        ),
        (
            "receiver",
            receiver(&["create", "secrets"], dev_ns),
            "create secrets",
            dev_ns,
        ),
        (
            "receiver",
            !receiver(&["create", "secrets"], "kube-system"),
            "not create secrets",
            "kube-system",
        ),
        // It reads the App's config (the current release's snapshot) where it builds.
        (
            "receiver",
            receiver(&["get", "secrets"], dev_ns),
            "get secrets",
            dev_ns,
        ),
        (
            "receiver",
            !receiver(&["get", "secrets"], "kube-system"),
            "not get secrets",
            "kube-system",
        ),
        (
            "receiver",
            !receiver(&["delete", "secrets"], dev_ns),
            "not delete secrets",
            dev_ns,
        ),
        (
            "receiver",
            !receiver(&["create", "events.events.k8s.io"], dev_ns),
            "not create events",
            dev_ns,
        ),
        // The router reads certificates where Routes name one, and only there.
        (
            "router",
            router(&["list", "secrets"], dev_ns),
            "list secrets",
            dev_ns,
        ),
        (
            "router",
            !router(&["list", "secrets"], "kube-system"),
            "not list secrets",
            "kube-system",
        ),
        (
            "router",
            !router(&["list", "secrets"], SYSTEM_NS),
            "not list secrets",
            SYSTEM_NS,
        ),
        (
            "router",
            !router(&["get", "secrets"], "kube-system"),
            "not get secrets",
            "kube-system",
        ),
        // The operator binds those two roles and holds neither itself; it binds nothing
        // else but its own resources grant (issue 19), which gives it get, never list, on
        // Secrets only where an App is (the developer's namespace holds `shop`).
        (
            "operator",
            operator(&["get", "secrets"], dev_ns),
            "get secrets (its resources grant, where an App is)",
            dev_ns,
        ),
        (
            "operator",
            !operator(&["list", "secrets"], dev_ns),
            "not list secrets",
            dev_ns,
        ),
        (
            "operator",
            !operator(&["get", "secrets"], "kube-system"),
            "not get secrets",
            "kube-system",
        ),
        (
            "operator",
            !operator(&["create", "jobs"], dev_ns),
            "not create jobs",
            dev_ns,
        ),
        (
            "operator",
            operator(
                &[
                    "patch",
                    &format!("rolebindings/{RELEASE}-gitreceiver-builds"),
                ],
                dev_ns,
            ),
            "patch its grant",
            dev_ns,
        ),
        (
            "operator",
            !operator(&["patch", "rolebindings/admin"], "kube-system"),
            "not patch other bindings",
            "kube-system",
        ),
        (
            "operator",
            !operator(&["bind", "clusterroles/cluster-admin"], dev_ns),
            "not bind cluster-admin",
            dev_ns,
        ),
    ] {
        assert!(allowed, "the {who} should {what} in {ns}");
    }
}

fn developer() -> Developer {
    let ns = format!("e2e-dev-{}", std::process::id());
    run(&mut kubectl(&["create", "namespace", &ns]));
    // Its apps, builds and one-off runs must pass Pod Security "restricted".
    run(&mut kubectl(&["label", "namespace", &ns, RESTRICTED]));
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_owned();
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f"])
        .arg(h.join("id_ed25519")));
    let host_private = run(&mut kubectl(&[
        "-n",
        SYSTEM_NS,
        "get",
        "secret",
        "flynn-gitreceiver-hostkey",
        "-o",
        "go-template={{index .data \"ssh_host_ed25519_key\" | base64decode}}",
    ]));
    let private = h.join("hostkey");
    std::fs::write(&private, host_private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let public = run(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&private));
    std::fs::remove_file(&private).unwrap();
    std::fs::write(h.join("known_hosts"), format!("flynn.local {public}")).unwrap();
    std::fs::write(
        h.join("ssh_config"),
        format!(
            "Host flynn.local\n  HostName 127.0.0.1\n  HostKeyAlias flynn.local\n  Port {1}\n  User git\n  \
             IdentityFile {0}/id_ed25519\n  IdentitiesOnly yes\n  UserKnownHostsFile {0}/known_hosts\n  \
             StrictHostKeyChecking yes\n",
            h.display(),
            SSH_PORT
        ),
    )
    .unwrap();
    let src = h.join("shop");
    run(Command::new("cp")
        .arg("-r")
        .arg(repo().join("builder/fixtures/apps/python-web"))
        .arg(&src));
    let dev = Developer {
        ns,
        home,
        src,
        flynn: flynn_bin(),
    };
    run(&mut dev.git(&["init", "-q", "-b", "main"]));
    run(&mut dev.git(&["add", "-A"]));
    run(&mut dev.git(&["commit", "-q", "-m", "the sample"]));
    dev
}

/// The release build of the CLI that `e2e/images` made beside the images.
fn flynn_bin() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    let bin = target.join("release/flynn");
    assert!(
        bin.exists(),
        "{} is missing: e2e/images builds it (cargo build --release --workspace --bins)",
        bin.display()
    );
    bin
}

/// The release binaries e2e/images built.
fn release_dir() -> PathBuf {
    flynn_bin().parent().unwrap().to_owned()
}

/// A component's image rebuilt under a new tag and pushed, and the values file that
/// installs it.
struct Rebuilt {
    tag: String,
    values: PathBuf,
}

fn rebuilt(component: &str, dir: &Path) -> Rebuilt {
    let tag = format!("e2e-rebuilt-{}", std::process::id());
    let pushed = run(
        Command::new(repo().join(format!("{component}/image/build"))).args([
            "--bin-dir",
            release_dir().to_str().unwrap(),
            "--tag",
            &tag,
            "--push",
            "localhost:5001",
        ]),
    );
    let pushed = pushed.trim().lines().last().unwrap().to_owned();
    let (repo_tag, digest) = pushed
        .split_once('@')
        .expect("a pushed reference has a digest");
    let values = dir.join(format!("{component}.yaml"));
    std::fs::write(
        &values,
        format!(
            "{component}:\n  image: {{repository: {}, tag: {tag}, digest: \"{digest}\"}}\n",
            repo_tag.rsplit_once(':').unwrap().0
        ),
    )
    .unwrap();
    Rebuilt { tag, values }
}

/// Runs `f` (an upgrade) while clients request `host` through the router, and on until
/// at least 20,000 requests have been made and 3 s have passed since `f` returned:
/// (succeeded, failed, a few of the failures).
fn under_load(host: &str, f: impl FnOnce()) -> (u64, u64, Vec<String>) {
    let load = Load::start(host, 4);
    std::thread::sleep(Duration::from_secs(2));
    f();
    let done = Instant::now();
    while done.elapsed() < Duration::from_secs(3) || load.total() < 20_000 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, failed, errors) = load.stop();
    assert!(ok > 0, "no request succeeded: {errors:?}");
    (ok, failed, errors)
}

/// `helm test` says which component does not answer (here the slug store, stopped), and
/// passes once every one does, from a restricted pod.
fn helm_test_checks_each_component() {
    let test = || output(helm().args(["test", RELEASE, "-n", SYSTEM_NS, "--timeout", "120s"]));
    let scale = |n: &str| {
        run(&mut kubectl(&[
            "-n",
            SYSTEM_NS,
            "scale",
            "deployment/flynn-shelf",
            "--replicas",
            n,
        ]));
        run(&mut kubectl(&[
            "-n",
            SYSTEM_NS,
            "rollout",
            "status",
            "deployment/flynn-shelf",
            "--timeout",
            "120s",
        ]));
    };
    scale("0");
    // Until its pod is gone it may still answer (a terminating pod serves on).
    run(&mut kubectl(&[
        "-n",
        SYSTEM_NS,
        "wait",
        "--for=delete",
        "pods",
        "-l",
        "app.kubernetes.io/name=flynn-shelf",
        "--timeout=120s",
    ]));
    let out = test();
    // A failed test pod stays for its logs (until the next `helm test` replaces it).
    let logs = output(&mut kubectl(&["-n", SYSTEM_NS, "logs", "flynn-test"]));
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    scale("1");
    let said = format!(
        "helm test said:\n{}{}\nthe test pod's log:\n{logs}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "helm test passed without the slug store: {said}"
    );
    assert!(
        logs.contains("FAIL slug store")
            && logs.contains("ok   operator")
            && logs.contains("ok   operator build: flynn_operator_build_info"),
        "{said}"
    );
    let out = test();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Phase:          Succeeded"),
        "helm test: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A values file pinning the router to a digest no registry has.
fn missing_router_digest(dir: &Path) -> PathBuf {
    let file = dir.join("missing-router.yaml");
    std::fs::write(
        &file,
        format!(
            "router:\n  image: {{repository: localhost:5001/flynn-router, tag: gone, digest: \"sha256:{}\"}}\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    file
}

fn helm_revision() -> String {
    let out = output(helm().args(["status", RELEASE, "-n", SYSTEM_NS, "-o", "json"]));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\"version\":")
        .nth(1)
        .map(|v| v.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_else(|| "none".to_owned())
}

/// A registry that refuses the push, and an install naming an image that is not in the
/// registry, each end in a message naming the cause, and nothing is applied.
fn refusals_before_anything_is_applied(values: &Path) {
    let dir = tempfile::tempdir().unwrap();
    // A real registry (the same server as the cluster's) in read-only mode.
    let port = free_port();
    let config = dir.path().join("readonly.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  maintenance: {{readonly: {{enabled: true}}}}\n\
             http: {{addr: \"127.0.0.1:{port}\"}}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting docker-registry (Debian package docker-registry; e2e/cluster/deps installs it)");
    until("the read-only registry to answer", 30, || {
        get(port, "localhost", "/v2/").map_err(|e| e.to_string())
    });
    let out = output(Command::new(repo().join("router/image/build")).args([
        "--bin-dir",
        release_dir().to_str().unwrap(),
        "--tag",
        "refused",
        "--push",
        &format!("localhost:{port}"),
    ]));
    let _ = registry.kill();
    let _ = registry.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a push to a read-only registry succeeded: {err}"
    );
    assert!(
        err.contains(&format!(
            "pushing localhost:{port}/flynn-router:refused failed"
        )),
        "the error does not name the push: {err}"
    );
    assert!(
        err.contains("read-only") || err.contains("unsupported") || err.contains("405"),
        "the error does not give the registry's reason: {err}"
    );

    // An image that is not in the registry: refused before Helm changes anything.
    let before = helm_revision();
    let mut cmd = Command::new(repo().join("e2e/install"));
    cmd.arg("-f")
        .arg(values)
        .arg("-f")
        .arg(missing_router_digest(dir.path()));
    let out = output(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "installing a missing image succeeded: {err}"
    );
    assert!(
        err.contains(&format!(
            "localhost:5001/flynn-router:gone@sha256:{}",
            "0".repeat(64)
        )) && err.contains("is not in its registry"),
        "the error does not name the missing image: {err}"
    );
    assert_eq!(
        helm_revision(),
        before,
        "the refused install changed the release"
    );

    // The router on the host network, into the release namespace that enforces
    // "restricted": refused before anything is applied, naming the namespace, its level
    // and what to do. (The valid twin is the install that follows, with the router in a
    // namespace of its own.)
    let mut cmd = install_command(&[values]);
    cmd.args([
        "--set",
        "router.namespace=",
        "--set",
        "router.createNamespace=false",
    ]);
    let out = output(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a host-network router installed into a restricted namespace: {err}"
    );
    assert!(
        err.contains("The router (router.mode=hostNetwork)")
            && err.contains(&format!("namespace {SYSTEM_NS} forbids"))
            && err.contains("\"restricted\"")
            && err.contains("router.mode=service"),
        "the refusal does not say why: {err}"
    );
    assert_eq!(
        helm_revision(),
        before,
        "the refused install changed the release"
    );
}

/// When a pod cannot pull its image (here the registry check is skipped, as for a
/// registry only the nodes reach), the installer names the pod, the image and the
/// runtime's reason instead of timing out in silence; the next good install recovers.
fn a_pod_that_cannot_pull_is_named(values: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let missing = missing_router_digest(dir.path());
    let mut cmd = install_command(&[values, &missing]);
    cmd.env("FLYNN_INSTALL_SKIP_IMAGE_CHECK", "1")
        .env("FLYNN_INSTALL_TIMEOUT", "60s");
    let out = output(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an install whose router cannot pull succeeded: {err}"
    );
    assert!(
        err.contains("container router: ")
            && (err.contains("ErrImagePull") || err.contains("ImagePullBackOff"))
            && err.contains(&"0".repeat(64)),
        "the installer does not say the router cannot pull its image: {err}"
    );
    install(&[values]);
}
