//! Benchmark: the receive path of this receiver against OpenSSH's sshd + `git receive-pack`
//! on the same machine, in the same run. Not a test; prints figures and ratios.
//!
//! 1. A push of a ~100 MB repository (one commit of incompressible data) into an empty
//!    repository: MB/s and server CPU-seconds, this receiver vs sshd.
//! 2. A one-commit push of a small change, repeated: p50/p99 wall time of the push, this
//!    receiver vs sshd vs a `file://` push (no SSH at all).
//!
//! The pipeline is bypassed with the BENCHMARK-ONLY hook mode
//! (`HookMode::BenchAcceptWithoutBuild`, not reachable from the binary): the hook still
//! runs and calls back over the socket, the build does not. Authentication and the
//! SubjectAccessReview are real, against the local cluster.
//!
//! Run: `cargo build --release -p flynn-gitreceiver --bins --examples &&
//! target/release/examples/push_bench` (needs `e2e/cluster/up`, openssh-client,
//! openssh-server and git). `BENCH_MB` (default 100) and `BENCH_SMALL_PUSHES` (default 30).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flynn_e2e::{TestNamespace, install_flynn_crds};
use flynn_gitreceiver::pipeline::{Pipeline, PipelineSettings};
use flynn_gitreceiver::settings::{HookMode, ObjectRef, Settings};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use nix::sys::resource::{UsageWho, getrusage};

const APP: &str = "bench";
const USER: &str = "bench-user";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mb: usize = env_or("BENCH_MB", 100);
    let small_pushes: usize = env_or("BENCH_SMALL_PUSHES", 30);
    let work = tempfile::tempdir()?;
    let dir = work.path();

    // The peer: sshd on a random port with its own host key and config.
    let client_key = dir.join("id_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&client_key),
    )?;
    let public = std::fs::read_to_string(client_key.with_extension("pub"))?;

    // This receiver, in-process, against the local cluster.
    let ns = TestNamespace::try_create("push-bench").await?;
    install_flynn_crds(ns.client()).await?;
    setup_cluster(&ns, &public).await?;
    let hook_program = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("flynn-gitreceiver"))
        .filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("build the binary first: cargo build --release -p flynn-gitreceiver --bins --examples"))?;
    let mut settings = Settings::new(dir.join("repos"), dir.join("hook.sock"), hook_program);
    settings.ssh_addr = ([127, 0, 0, 1], 0).into();
    settings.http_addr = ([127, 0, 0, 1], 0).into();
    settings.host_key_secret = ObjectRef {
        namespace: ns.name().into(),
        name: "hostkey".into(),
    };
    settings.keys_namespace = ns.name().into();
    settings.default_namespace = ns.name().into();
    settings.hook_mode = HookMode::BenchAcceptWithoutBuild;
    let pipeline = Pipeline::new(
        ns.client().clone(),
        PipelineSettings {
            shelf_token: "unused-in-bench-mode-0123".into(),
            ..PipelineSettings::default()
        },
    );
    let receiver =
        flynn_gitreceiver::start(settings.clone(), ns.client().clone(), pipeline).await?;
    receiver.ready().await;
    while receiver.keys().lookup_authorized_key(&public).is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ours_port = receiver.ssh_addr.port();

    let sshd = Sshd::start(dir, &public)?;

    // Same client, same key exchange for both servers (Debian's OpenSSH 9.2 would pick
    // sntrup761 with sshd, which this receiver does not offer; its cost is not the
    // server's).
    let ssh_cmd = format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR -o KexAlgorithms=curve25519-sha256 -o Ciphers=chacha20-poly1305@openssh.com,aes256-gcm@openssh.com",
        client_key.display()
    );
    let ours_url = format!("ssh://git@127.0.0.1:{ours_port}/{}/{APP}.git", ns.name());
    let sshd_repo = dir.join("sshd/bench.git");
    let sshd_url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, sshd_repo.display());
    let file_repo = dir.join("file/bench.git");
    let file_url = format!("file://{}", file_repo.display());
    let ours_repo = settings
        .repos_dir
        .join(ns.name())
        .join(format!("{APP}.git"));

    println!(
        "# push_bench: git {}, OpenSSH {}",
        version(&["git", "--version"]),
        version(&["ssh", "-V"])
    );
    println!("# client: {ssh_cmd}");
    println!();

    // 1. Big push.
    let big = tempfile::tempdir()?;
    init_work_tree(big.path())?;
    write_random(&big.path().join("blob.bin"), mb << 20)?;
    git(big.path(), &["add", "-A"])?;
    git(big.path(), &["commit", "-q", "-m", "big"])?;
    println!("## push of a {mb} MB repository into an empty repository (3 runs each, alternating)");
    let mut ours_runs = Vec::new();
    let mut sshd_runs = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&ours_repo);
        let before = Usage::now();
        let client = push(big.path(), &ours_url, &ssh_cmd)?;
        let server = Usage::now().since(&before).cpu() - client.cpu;
        ours_runs.push((client.wall, server));

        fresh_bare(&sshd_repo)?;
        sshd.restart()?;
        let before = Usage::now();
        let client = push(big.path(), &sshd_url, &ssh_cmd)?;
        sshd.stop()?; // reaps sshd and its session children: their CPU lands in ours
        let server = Usage::now().since(&before).cpu() - client.cpu;
        sshd_runs.push((client.wall, server));
    }
    let best = |runs: &[(Duration, f64)]| {
        let wall = runs.iter().map(|r| r.0).min().unwrap_or_default();
        let cpu = runs.iter().map(|r| r.1).sum::<f64>() / runs.len() as f64;
        (wall, cpu)
    };
    let (ours_wall, ours_cpu) = best(&ours_runs);
    let (sshd_wall, sshd_cpu) = best(&sshd_runs);
    let mbs = |w: Duration| mb as f64 / w.as_secs_f64();
    println!(
        "runs (wall s, server cpu s): receiver {:?}",
        fmt_runs(&ours_runs)
    );
    println!(
        "runs (wall s, server cpu s): sshd     {:?}",
        fmt_runs(&sshd_runs)
    );
    println!(
        "flynn-gitreceiver: {:7.1} MB/s (best of 3, {:.2} s)  server CPU {:.2} s (mean)",
        mbs(ours_wall),
        ours_wall.as_secs_f64(),
        ours_cpu
    );
    println!(
        "sshd+receive-pack: {:7.1} MB/s (best of 3, {:.2} s)  server CPU {:.2} s (mean)",
        mbs(sshd_wall),
        sshd_wall.as_secs_f64(),
        sshd_cpu
    );
    println!(
        "ratio receiver/sshd: throughput {:.2}x  CPU {:.2}x",
        mbs(ours_wall) / mbs(sshd_wall),
        ours_cpu / sshd_cpu
    );
    println!();

    // 2. Small pushes.
    println!("## one-commit push of a small change, {small_pushes} pushes each (interleaved)");
    let small = tempfile::tempdir()?;
    init_work_tree(small.path())?;
    std::fs::write(small.path().join("app.txt"), "0\n")?;
    git(small.path(), &["add", "-A"])?;
    git(small.path(), &["commit", "-q", "-m", "base"])?;
    let _ = std::fs::remove_dir_all(&ours_repo);
    fresh_bare(&sshd_repo)?;
    fresh_bare(&file_repo)?;
    sshd.restart()?;
    for url in [&ours_url, &sshd_url, &file_url] {
        push(small.path(), url, &ssh_cmd)?; // the base, not measured
    }
    let (mut ours, mut theirs, mut file) = (Vec::new(), Vec::new(), Vec::new());
    // Server CPU: ours is what this process and its reaped children (receive-pack, the
    // hook) used during our pushes, less the client; sshd's is what our children used
    // over the whole loop (sshd is reaped at the end) less every client and ours.
    let (mut ours_cpu, mut ours_children, mut clients) = (0.0, 0.0, 0.0);
    let server_before = push_duration(&receiver.metrics.render());
    let loop_before = Usage::now();
    for i in 0..small_pushes {
        std::fs::write(small.path().join("app.txt"), format!("{}\n", i + 1))?;
        git(
            small.path(),
            &["commit", "-q", "-am", &format!("change {i}")],
        )?;
        let before = Usage::now();
        let c = push(small.path(), &ours_url, &ssh_cmd)?;
        let used = Usage::now().since(&before);
        ours_cpu += used.cpu() - c.cpu;
        ours_children += used.children - c.cpu;
        clients += c.cpu;
        ours.push(c.wall);
        let c = push(small.path(), &sshd_url, &ssh_cmd)?;
        clients += c.cpu;
        theirs.push(c.wall);
        // A file:// push runs receive-pack itself: all of it is the "client".
        let c = push(small.path(), &file_url, &ssh_cmd)?;
        clients += c.cpu;
        file.push(c.wall);
    }
    sshd.stop()?;
    let server_after = push_duration(&receiver.metrics.render());
    let server_mean =
        (server_after.0 - server_before.0) / (server_after.1 - server_before.1).max(1.0);
    let sshd_cpu_small = Usage::now().since(&loop_before).children - clients - ours_children;
    let (o50, o99) = percentiles(&mut ours);
    let (s50, s99) = percentiles(&mut theirs);
    let (f50, f99) = percentiles(&mut file);
    println!(
        "flynn-gitreceiver: p50 {:6.1} ms  p99 {:6.1} ms  server CPU {:.1} ms/push",
        ms(o50),
        ms(o99),
        ours_cpu * 1000.0 / small_pushes as f64
    );
    println!(
        "  of which inside the receiver (exec request to exit status: SubjectAccessReview, App lookup, receive-pack, hook): mean {:.1} ms",
        server_mean * 1000.0
    );
    println!(
        "sshd+receive-pack: p50 {:6.1} ms  p99 {:6.1} ms  server CPU {:.1} ms/push",
        ms(s50),
        ms(s99),
        sshd_cpu_small * 1000.0 / small_pushes as f64
    );
    println!(
        "file://          : p50 {:6.1} ms  p99 {:6.1} ms",
        ms(f50),
        ms(f99)
    );
    println!(
        "overhead over file:// (p50): receiver {:+.1} ms, sshd {:+.1} ms; ratio receiver/sshd p50 {:.2}x, p99 {:.2}x",
        ms(o50) - ms(f50),
        ms(s50) - ms(f50),
        o50.as_secs_f64() / s50.as_secs_f64(),
        o99.as_secs_f64() / s99.as_secs_f64()
    );
    let metrics = receiver.metrics.render();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("flynn_gitreceiver_pushes_total"))
    {
        println!("# {line}");
    }
    receiver.stop().await;
    Ok(())
}

/// (sum, count) of the receiver's push duration histogram.
fn push_duration(metrics: &str) -> (f64, f64) {
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("flynn_gitreceiver_push_duration_seconds_sum"),
        value("flynn_gitreceiver_push_duration_seconds_count"),
    )
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fmt_runs(runs: &[(Duration, f64)]) -> Vec<(String, String)> {
    runs.iter()
        .map(|(w, c)| (format!("{:.2}", w.as_secs_f64()), format!("{c:.2}")))
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// CPU seconds used by this process and by its reaped children.
#[derive(Clone, Copy, Debug)]
struct Usage {
    own: f64,
    children: f64,
}

impl Usage {
    fn now() -> Self {
        let secs = |who| {
            getrusage(who)
                .map(|u| {
                    let t = |tv: nix::sys::time::TimeVal| {
                        tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6
                    };
                    t(u.user_time()) + t(u.system_time())
                })
                .unwrap_or(0.0)
        };
        Self {
            own: secs(UsageWho::RUSAGE_SELF),
            children: secs(UsageWho::RUSAGE_CHILDREN),
        }
    }

    fn since(&self, before: &Usage) -> Usage {
        Usage {
            own: self.own - before.own,
            children: self.children - before.children,
        }
    }

    fn cpu(&self) -> f64 {
        self.own + self.children
    }
}

/// A client push: wall time and the client's CPU (git, ssh, pack-objects), as bash's
/// `times` reports for its children.
struct ClientRun {
    wall: Duration,
    cpu: f64,
}

fn push(work: &Path, url: &str, ssh_cmd: &str) -> anyhow::Result<ClientRun> {
    let started = Instant::now();
    let out = Command::new("bash")
        .args([
            "-c",
            "git push -q \"$1\" main >/dev/null 2>\"$2\" || { cat \"$2\" >&2; exit 1; }; times",
            "push",
        ])
        .arg(url)
        .arg(work.join(".push-err"))
        .current_dir(work)
        .env("GIT_SSH_COMMAND", ssh_cmd)
        .stdin(Stdio::null())
        .output()?;
    let wall = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "push to {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `times`: the shell's user/sys, then its children's, as `0m1.234s 0m0.567s`.
    let text = String::from_utf8_lossy(&out.stdout);
    // Both lines: the shell's own time is the client's too.
    let cpu = text
        .lines()
        .take(2)
        .flat_map(str::split_whitespace)
        .filter_map(|t| {
            let (m, s) = t.strip_suffix('s')?.split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
        })
        .sum();
    Ok(ClientRun { wall, cpu })
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    run_ok(
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "Bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com"),
    )
}

fn version(cmd: &[&str]) -> String {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s).trim().to_owned()
        })
        .unwrap_or_default()
}

fn init_work_tree(dir: &Path) -> anyhow::Result<()> {
    git(dir, &["init", "-q", "-b", "main"]).map(|_| ())
}

/// An empty bare repository configured as the receiver configures its own.
fn fresh_bare(path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path)?;
    git(path, &["init", "-q", "--bare", "-b", "main"])?;
    git(path, &["config", "receive.denyNonFastForwards", "false"])?;
    git(path, &["config", "receive.denyDeletes", "true"])?;
    Ok(())
}

/// Incompressible bytes (ring's generator), so neither side can shortcut the transfer.
fn write_random(path: &Path, len: usize) -> anyhow::Result<()> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(1 << 16) {
        rng.fill(chunk).map_err(|_| anyhow::anyhow!("random"))?;
    }
    std::fs::write(path, data)?;
    Ok(())
}

/// The key registry, RBAC and the App the benchmark pushes to.
async fn setup_cluster(ns: &TestNamespace, public: &str) -> anyhow::Result<()> {
    let secret = flynn_gitreceiver::keys::key_secret(public, USER, &["system:authenticated"])?;
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await?;
    ns.api::<Role>()
        .create(
            &PostParams::default(),
            &Role {
                metadata: ObjectMeta {
                    name: Some("deployer".into()),
                    ..Default::default()
                },
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["flynn.io".into()]),
                    resources: Some(vec!["releases".into()]),
                    verbs: vec!["create".into()],
                    ..Default::default()
                }]),
            },
        )
        .await?;
    ns.api::<RoleBinding>()
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some("deployer".into()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "deployer".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "User".into(),
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    name: USER.into(),
                    ..Default::default()
                }]),
            },
        )
        .await?;
    let app = flynn_crds::App::new(APP, flynn_crds::AppSpec::default());
    Api::<flynn_crds::App>::namespaced(ns.client().clone(), ns.name())
        .create(&PostParams::default(), &app)
        .await?;
    Ok(())
}

/// OpenSSH's sshd on a random loopback port, with its own host key and config, as a child
/// of this process (so its CPU time is counted when it is reaped).
struct Sshd {
    port: u16,
    config: PathBuf,
    child: std::cell::RefCell<Option<std::process::Child>>,
}

impl Sshd {
    fn start(dir: &Path, authorized_key: &str) -> anyhow::Result<Self> {
        let sshd_dir = dir.join("sshd");
        std::fs::create_dir_all(&sshd_dir)?;
        std::fs::create_dir_all("/run/sshd")?;
        let host_key = sshd_dir.join("ssh_host_ed25519_key");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key),
        )?;
        std::fs::write(sshd_dir.join("authorized_keys"), authorized_key)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = sshd_dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUseDNS no\nPrintMotd no\nSubsystem sftp internal-sftp\n",
                host_key.display(),
                sshd_dir.join("authorized_keys").display()
            ),
        )?;
        let sshd = Self {
            port,
            config,
            child: std::cell::RefCell::new(None),
        };
        sshd.restart()?;
        Ok(sshd)
    }

    fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("starting /usr/sbin/sshd ({e}): apt-get install -y openssh-server")
            })?;
        *self.child.borrow_mut() = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("sshd did not listen on {}", self.port)
    }

    /// SIGTERM and reap (after its session children have exited and been reaped).
    fn stop(&self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.borrow_mut().take() {
            std::thread::sleep(Duration::from_millis(200));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
