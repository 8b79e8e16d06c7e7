//! Operator scale benchmark against the local control plane.
//!
//!   cargo build --release -p flynn-operator && \
//!   cargo run --release -p flynn-operator --example scale_bench -- [APPS] [CONCURRENCY]
//!
//! 1. Creates APPS (default 1000) Apps, each with an image Release and `web: 0` (every
//!    child is made, no pods are started), with the operator stopped.
//! 2. Starts the operator binary (release build) as a ServiceAccount with the chart's
//!    permissions, scoped to the namespace, and times it until every App's status says
//!    its release is rolled out and every Formation, Deployment and Service exists.
//!    Reports its peak RSS, CPU-seconds and API requests per App.
//! 3. Steady state: restarts the operator over the converged Apps and counts its writes
//!    (the goal is zero), then changes one spec at a time and times the Deployment update.
//! 4. The ceiling: a plain client with the same credentials and concurrency writes
//!    exactly the objects and statuses the operator wrote, for a second set of Apps.
//!
//! The ServiceAccount matters: an admin in `system:masters` is exempt from API Priority
//! and Fairness and would flatter either side.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flynn_crds::{
    App, AppStatus, Formation, FormationStatus, ProcessStatus, Release, Route, RouteStatus,
};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const MANAGER: &str = "flynn-operator";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let apps: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16);
    let operator_bin = operator_binary()?;
    let admin = flynn_e2e::client().await?;
    flynn_e2e::install_flynn_crds(&admin).await?;

    let run_id = std::process::id();
    let ns_op = format!("bench-op-{run_id}");
    let ns_ceiling = format!("bench-ceiling-{run_id}");
    let sa_ns = ns_op.clone();
    for ns in [&ns_op, &ns_ceiling] {
        create_namespace(&admin, ns).await?;
    }
    let result = bench(
        &admin,
        &operator_bin,
        &ns_op,
        &ns_ceiling,
        &sa_ns,
        apps,
        concurrency,
    )
    .await;
    eprintln!("cleaning up");
    for ns in [&ns_op, &ns_ceiling] {
        let _ = Api::<Namespace>::all(admin.clone())
            .delete(ns, &DeleteParams::background())
            .await;
    }
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&format!("flynn-bench-{run_id}"), &DeleteParams::default())
        .await;
    result
}

async fn bench(
    admin: &Client,
    operator_bin: &PathBuf,
    ns_op: &str,
    ns_ceiling: &str,
    sa_ns: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (kubeconfig, sa_client) = service_account(admin, sa_ns).await?;
    println!(
        "flynn operator scale benchmark: {n} Apps (image Release, web: 0), concurrency {concurrency}"
    );

    // 1. The Apps, with no operator running.
    let t = Instant::now();
    create_apps(admin, ns_op, n, concurrency).await?;
    println!(
        "created {n} Apps and Releases in {:.1}s (admin, not timed below)",
        t.elapsed().as_secs_f64()
    );

    // 2. The operator, timed to convergence.
    let metrics_port = 18080 + (std::process::id() % 1000) as u16;
    let start = Instant::now();
    let op = start_operator(operator_bin, &kubeconfig, ns_op, metrics_port, concurrency)?;
    let reconciled = wait_converged(admin, ns_op, n, start, Duration::from_secs(900)).await?;
    let took = reconciled.reconciled;
    let (rss_kib, cpu_s) = process_usage(op.id())?;
    let calls = api_calls(metrics_port).await?;
    let writes: f64 = ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|v| calls.get(*v).copied().unwrap_or(0.0))
        .sum();
    let total: f64 = calls.values().sum();
    let baseline_rss =
        idle_rss_kib(operator_bin, &kubeconfig, ns_ceiling, metrics_port + 1).await?;
    println!();
    println!(
        "operator: {n} Apps reconciled (children exist, every App status current) in {:.2}s = {:.1} Apps/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    println!(
        "  every App Ready (rolled out: also waits for kube-controller-manager's Deployment controller, client QPS 20 by default) in {:.2}s = {:.1} Apps/s",
        reconciled.rolled_out.as_secs_f64(),
        n as f64 / reconciled.rolled_out.as_secs_f64()
    );
    println!(
        "  peak RSS during the burst {:.1} MiB ({:.1} MiB with no Apps) = {:.2} KiB per App; CPU {cpu_s:.2}s = {:.2} ms per App",
        rss_kib as f64 / 1024.0,
        baseline_rss as f64 / 1024.0,
        rss_kib.saturating_sub(baseline_rss) as f64 / n as f64,
        cpu_s * 1000.0 / n as f64
    );
    println!(
        "  API requests: {:.2} per App ({:.2} writes), by verb: {}",
        total / n as f64,
        writes / n as f64,
        calls
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 3a. Steady state: a fresh operator over converged Apps writes nothing.
    drop(op);
    let op = start_operator(operator_bin, &kubeconfig, ns_op, metrics_port, concurrency)?;
    wait_ready(metrics_port).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let calls = api_calls(metrics_port).await?;
    let steady_writes: f64 = ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|v| calls.get(*v).copied().unwrap_or(0.0))
        .sum();
    println!("  restart over {n} converged Apps: {steady_writes} writes in 15s (goal 0)");
    let cached_rss = current_rss_kib(op.id())?;
    println!(
        "  RSS with every App cached (after the restart): {:.1} MiB = {:.2} KiB per cached App (goal ≤ 8)",
        cached_rss as f64 / 1024.0,
        cached_rss.saturating_sub(baseline_rss) as f64 / n as f64
    );

    // 3b. One spec change at a time → the Deployment updated.
    let latencies = spec_change_latency(admin, ns_op, n.min(100)).await?;
    println!(
        "  spec change → Deployment updated: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} changes (goal p99 ≤ 100 ms)",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        pct(&latencies, 1.0),
        latencies.len()
    );
    drop(op);

    // 4. The ceiling: the same writes from a plain client.
    create_apps(admin, ns_ceiling, n, concurrency).await?;
    let start = Instant::now();
    ceiling(&sa_client, ns_ceiling, n, concurrency).await?;
    let ceiling_took = start.elapsed();
    println!();
    println!(
        "ceiling (plain client, same ServiceAccount, concurrency {concurrency}): {:.2}s = {:.1} Apps/s",
        ceiling_took.as_secs_f64(),
        n as f64 / ceiling_took.as_secs_f64()
    );
    println!(
        "operator / ceiling throughput: {:.2}x (goal ≥ 0.8x)",
        ceiling_took.as_secs_f64() / took.as_secs_f64()
    );
    Ok(())
}

fn operator_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/release/examples/scale_bench → target/release/flynn-operator
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("flynn-operator"))
        .context("locating the target dir")?;
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p flynn-operator` first",
            bin.display()
        );
    }
    Ok(bin)
}

async fn create_namespace(admin: &Client, ns: &str) -> anyhow::Result<()> {
    let obj: Namespace = serde_json::from_value(
        json!({"metadata": {"name": ns, "labels": {"flynn.io/test": "true"}}}),
    )?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &obj)
        .await?;
    Ok(())
}

/// A ServiceAccount bound to the chart's operator ClusterRole; returns a kubeconfig file
/// for the operator process and a client for the ceiling, both with its token.
async fn service_account(admin: &Client, ns: &str) -> anyhow::Result<(PathBuf, Client)> {
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/flynn/templates/operator.yaml"
    );
    let text = std::fs::read_to_string(chart)?;
    // The ClusterRole document of the chart, so the bench runs with exactly its rules.
    let doc = text
        .split("\n---\n")
        .find(|d| d.contains("kind: ClusterRole\n"))
        .context("the chart has no ClusterRole")?;
    let rules = &doc[doc.find("rules:").context("ClusterRole without rules")?..];
    // The rules up to the chart's template logic: what follows are the grants' rules,
    // given only with grants configured (the bench runs without).
    let rules_yaml: String = rules
        .lines()
        .take_while(|l| !l.trim_start().starts_with("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let role: serde_json::Value = serde_saphyr::from_str(&rules_yaml)?;
    let name = format!("flynn-bench-{}", std::process::id());
    let cr: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": role["rules"]}))?;
    Api::<ClusterRole>::all(admin.clone())
        .patch(
            &name,
            &PatchParams::apply("flynn-bench").force(),
            &Patch::Apply(&cr),
        )
        .await?;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "flynn-operator"}}))?;
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await?;
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "flynn-operator", "namespace": ns}]
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crb)
        .await?;
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(
            "flynn-operator",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(7200),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?
        .status
        .context("no token issued")?
        .token;

    let path =
        std::env::var("KUBECONFIG").unwrap_or_else(|_| flynn_e2e::LOCAL_CLUSTER_KUBECONFIG.into());
    let mut kc = Kubeconfig::read_from(&path)?;
    for named in &mut kc.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            *auth = Default::default();
            auth.token = Some(token.clone().into());
        }
    }
    let out = std::env::temp_dir().join(format!("flynn-bench-{}.kubeconfig", std::process::id()));
    let mut value = serde_json::to_value(&kc)?;
    for user in value["users"].as_array_mut().into_iter().flatten() {
        user["user"] = json!({"token": token});
    }
    std::fs::write(&out, serde_json::to_vec(&value)?)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok((out, Client::try_from(config)?))
}

async fn create_apps(admin: &Client, ns: &str, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let releases: Api<Release> = Api::namespaced(admin.clone(), ns);
    let apps: Api<App> = Api::namespaced(admin.clone(), ns);
    stream::iter(0..n)
        .map(|i| {
            let (releases, apps) = (releases.clone(), apps.clone());
            async move {
                let app = format!("app{i}");
                let r: Release = serde_json::from_value(json!({
                    "metadata": {"name": format!("{app}-v1")},
                    "spec": {"app": app, "version": 1, "artifact": {"image": "localhost/flynn-smoke:1"},
                             "processes": {"web": {"command": ["busybox", "httpd", "-f", "-p", "8080"], "ports": [{"port": 8080}]}}}
                }))?;
                releases.create(&PostParams::default(), &r).await?;
                let a: App = serde_json::from_value(json!({
                    "metadata": {"name": app}, "spec": {"release": format!("{app}-v1"), "processes": {"web": 0}}
                }))?;
                apps.create(&PostParams::default(), &a).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn start_operator(
    bin: &PathBuf,
    kubeconfig: &PathBuf,
    ns: &str,
    port: u16,
    concurrency: usize,
) -> anyhow::Result<Operator> {
    Ok(Operator(
        std::process::Command::new(bin)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("FLYNN_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .args([
                "--namespace",
                ns,
                "--leader-election=false",
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--concurrency", &concurrency.to_string()])
            .stdin(std::process::Stdio::null())
            .spawn()?,
    ))
}

/// The operator process, killed when dropped (also when the bench fails or times out:
/// a stray operator would skew the next run).
struct Operator(std::process::Child);

impl Operator {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When the operator's work was done, and when the Apps were rolled out.
struct Converged {
    /// Every Formation, Deployment and Service exists and every App's status is for its
    /// current spec: all the operator itself has to do.
    reconciled: Duration,
    /// Every App reports its release rolled out, which also takes the Deployment
    /// controller's status updates.
    rolled_out: Duration,
}

async fn wait_converged(
    admin: &Client,
    ns: &str,
    n: usize,
    start: Instant,
    timeout: Duration,
) -> anyhow::Result<Converged> {
    let deadline = Instant::now() + timeout;
    let mut reconciled = None;
    loop {
        let lp = ListParams::default();
        let apps = Api::<App>::namespaced(admin.clone(), ns).list(&lp).await?;
        let current = |a: &&App| {
            a.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == a.metadata.generation)
        };
        let status_current = apps.items.iter().filter(current).count();
        let rolled_out = apps
            .items
            .iter()
            .filter(current)
            .filter(|a| a.status.as_ref().is_some_and(|s| s.release.is_some()))
            .count();
        if reconciled.is_none() && status_current == n {
            let f = Api::<Formation>::namespaced(admin.clone(), ns)
                .list(&lp)
                .await?
                .items
                .len();
            let d = Api::<Deployment>::namespaced(admin.clone(), ns)
                .list(&lp)
                .await?
                .items
                .len();
            let s = Api::<Service>::namespaced(admin.clone(), ns)
                .list(&lp)
                .await?
                .items
                .len();
            if f == n && d == n && s == n {
                reconciled = Some(start.elapsed());
            }
        }
        if let Some(reconciled) = reconciled
            && rolled_out == n
        {
            return Ok(Converged {
                reconciled,
                rolled_out: start.elapsed(),
            });
        }
        if Instant::now() > deadline {
            bail!(
                "only {status_current} of {n} App statuses current and {rolled_out} rolled out within {timeout:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Peak RSS (KiB) and CPU-seconds of a process, from /proc.
fn process_usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("VmHWM")?
        .parse()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat[stat.rfind(')').context("stat")? + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok((hwm, ticks / 100.0))
}

/// Current RSS (KiB) of a process.
fn current_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("VmRSS")?
        .parse()?)
}

/// The RSS of an operator with nothing to do (an empty namespace), for the per-App figure.
async fn idle_rss_kib(
    bin: &PathBuf,
    kubeconfig: &PathBuf,
    ns: &str,
    port: u16,
) -> anyhow::Result<u64> {
    let op = start_operator(bin, kubeconfig, ns, port, 1)?;
    wait_ready(port).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, _) = process_usage(op.id())?;
    drop(op);
    Ok(rss)
}

async fn metrics_text(port: u16) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the operator did not become ready")
}

/// API requests by verb, summed over response codes.
async fn api_calls(port: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = metrics_text(port).await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("flynn_operator_api_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let verb = labels
            .split(',')
            .find_map(|l| l.strip_prefix("verb=\""))
            .map(|v| v.trim_end_matches('"'));
        if let (Some(verb), Ok(n)) = (verb, value.trim().parse::<f64>()) {
            *out.entry(verb.to_owned()).or_insert(0.0) += n;
        }
    }
    Ok(out)
}

/// Flips `strategy` on Apps one at a time and times until the Deployment shows it.
async fn spec_change_latency(admin: &Client, ns: &str, count: usize) -> anyhow::Result<Vec<f64>> {
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let apps: Api<App> = Api::namespaced(admin.clone(), ns);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(
        watcher::watcher(deployments, watcher::Config::default()).for_each(move |ev| {
            if let Ok(watcher::Event::Apply(d)) = ev {
                let surge = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.strategy.as_ref())
                    .and_then(|s| s.rolling_update.as_ref())
                    .and_then(|r| r.max_surge.clone());
                if surge == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
                {
                    let _ = tx.send((d.name_any(), Instant::now()));
                }
            }
            futures::future::ready(())
        }),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut out = vec![];
    for i in 0..count {
        let t = Instant::now();
        apps.patch(
            &format!("app{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"strategy": "one-by-one"}})),
        )
        .await?;
        let want = format!("app{i}-web");
        loop {
            let (name, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await?
                .context("watch ended")?;
            if name == want {
                out.push(at.duration_since(t).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    watch.abort();
    Ok(out)
}

/// What the operator writes per App, from a plain client: the Formation, Deployment,
/// Service and default Route (server-side apply), then the Route, Formation and App
/// statuses. The objects come from the operator's own pure build functions.
async fn ceiling(client: &Client, ns: &str, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let settings = Arc::new(flynn_operator::Settings::default());
    let pp = PatchParams::apply(MANAGER).force();
    stream::iter(0..n)
        .map(|i| {
            let (client, settings, pp) = (client.clone(), settings.clone(), pp.clone());
            async move {
                let app_api: Api<App> = Api::namespaced(client.clone(), ns);
                let app = app_api.get(&format!("app{i}")).await?;
                let release = Api::<Release>::namespaced(client.clone(), ns).get(&format!("app{i}-v1")).await?;
                let mut formation = flynn_operator::app::build::formation(&app, &release.name_any());
                let route = flynn_operator::app::build::default_route(&app, &settings.default_domain);
                let formations: Api<Formation> = Api::namespaced(client.clone(), ns);
                let f = formations.patch(&formation.name_any(), &pp, &Patch::Apply(&formation)).await?;
                formation.metadata.uid = f.metadata.uid.clone();
                Api::<Route>::namespaced(client.clone(), ns).patch(&route.name_any(), &pp, &Patch::Apply(&route)).await?;
                let desired = flynn_operator::formation::build::desired(&formation, &release, &settings, &Default::default())?;
                for d in desired.deployments {
                    let mut v = serde_json::to_value(&d)?;
                    v["apiVersion"] = "apps/v1".into();
                    v["kind"] = "Deployment".into();
                    Api::<Deployment>::namespaced(client.clone(), ns).patch(&d.name_any(), &pp, &Patch::Apply(v)).await?;
                }
                for s in desired.services {
                    let mut v = serde_json::to_value(&s)?;
                    v["apiVersion"] = "v1".into();
                    v["kind"] = "Service".into();
                    Api::<Service>::namespaced(client.clone(), ns).patch(&s.name_any(), &pp, &Patch::Apply(v)).await?;
                }
                let processes = BTreeMap::from([("web".to_owned(), ProcessStatus::default())]);
                let route_status = RouteStatus { url: Some(format!("http://app{i}.flynn.local")), ..Default::default() };
                Api::<Route>::namespaced(client.clone(), ns).patch_status(&route.name_any(), &pp,
                    &Patch::Apply(json!({"apiVersion": "flynn.io/v1alpha1", "kind": "Route", "status": route_status}))).await?;
                let fstatus = FormationStatus { processes: processes.clone(), release: Some(release.name_any()), ..Default::default() };
                formations.patch_status(&formation.name_any(), &pp,
                    &Patch::Apply(json!({"apiVersion": "flynn.io/v1alpha1", "kind": "Formation", "status": fstatus}))).await?;
                let astatus = AppStatus { processes, release: Some(release.name_any()), release_version: Some(1), ..Default::default() };
                app_api.patch_status(&app.name_any(), &pp,
                    &Patch::Apply(json!({"apiVersion": "flynn.io/v1alpha1", "kind": "App", "status": astatus}))).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}
