//! What Pod Security "restricted" costs a slug app's start, against the local cluster.
//!
//!   cargo run --release -p flynn-operator --example pod_security_bench -- [ROUNDS] [PODS]
//!
//! One slug app (the `web` process of tests/common/restricted.rs's slug: python3's
//! http.server, PODS replicas, default 2) is started from nothing ROUNDS times (default 5)
//! in each setup, the setups interleaved round by round, each round in fresh namespaces.
//! Each start is timed from the Release's creation to two points: every pod answers HTTP
//! at its own address (polled every 25 ms: when the app serves), and every pod Ready (the
//! Deployment rolled out, every replica updated and available: what a deploy waits for,
//! paced by the 2 s period of the TCP readiness probe).
//!
//! - `before`: the pod template the operator built before pods were restricted: no
//!   securityContext (the slugrunner image's own user, 1000; the runtime's default
//!   capabilities, no seccomp profile), in a namespace that enforces nothing.
//! - `root`: the same as root (`runAsUser: 0`), as an un-hardened platform runs apps.
//! - `restricted`: the template the operator builds now (runAsNonRoot, uid/gid/fsGroup 1000,
//!   RuntimeDefault seccomp, no privilege escalation, every capability dropped), in a
//!   namespace enforcing `restricted` (so admission checks every pod).
//!
//! These three are applied the same way: the bench creates the Release, builds the
//! Deployment with the operator's own build step (`formation::build::desired`), changes only
//! the securityContext for `before` and `root`, and creates it. A fourth line,
//! `restricted, through the operator`, times the real path for reference: an operator
//! running in this process makes the Formation, Deployment, Service and Route from an App
//! and the Release, and the clock stops when the App reports the Release rolled out.
//!
//! Needs the local cluster (`e2e/cluster/up`) and builds the slugrunner image from this
//! workspace's builder (as the tests do). Not part of CI.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flynn_crds::{App, Formation, Release};
use flynn_operator::formation::build::desired;
use flynn_operator::metrics::Metrics;
use flynn_operator::rollout::{DeploymentRollout, deployment_rollout};
use flynn_operator::server::Health;
use flynn_operator::{Settings, run};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSecurityContext};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[path = "../tests/common/restricted.rs"]
mod restricted;

const TAG: &str = "bench";
/// How long one start may take before the bench gives up.
const START_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Before,
    Root,
    Restricted,
    Operator,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::Before,
        Setup::Root,
        Setup::Restricted,
        Setup::Operator,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::Before => "before",
            Setup::Root => "root",
            Setup::Restricted => "restricted",
            Setup::Operator => "restricted, through the operator",
        }
    }

    fn enforces(self) -> bool {
        matches!(self, Setup::Restricted | Setup::Operator)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let replicas: i32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2);
    let client = flynn_e2e::client().await?;
    flynn_e2e::install_flynn_crds(&client).await?;
    eprintln!("building the slugrunner image from this workspace's builder");
    let image = tokio::task::spawn_blocking(|| restricted::ensure_slugrunner_image(TAG)).await?;
    let slug = restricted::web_slug();
    let server = restricted::FileServer::start("bench.tgz", slug.bytes.clone()).await;
    let settings = Settings {
        slugrunner_image: image.clone(),
        slugrunner_pull_policy: "Never".into(),
        default_domain: "bench.flynn.local".into(),
        ..Settings::default()
    };
    println!(
        "flynn pod security benchmark: one slug app ({image}, web: {replicas} pods), {rounds} rounds, setups interleaved"
    );
    println!(
        "timed from the Release's creation: \"serving\" = every pod answers HTTP (polled every 25 ms),"
    );
    println!(
        "\"Ready\" = every pod Ready (the Deployment rolled out; paced by the 2 s readiness probe)\n"
    );

    // A warm-up start, not counted: the first start on a node pays for things no later one
    // does (the image's layers into the page cache, python's bytecode cache, ...).
    let warm = start(
        &client,
        Setup::Restricted,
        usize::MAX,
        replicas,
        &settings,
        &server.url,
        &slug,
    )
    .await?;
    println!(
        "warm-up (restricted, not counted): serving {:.2}s, Ready {:.2}s",
        warm.serving.as_secs_f64(),
        warm.ready.as_secs_f64()
    );

    let mut serving: Vec<Vec<f64>> = vec![Vec::new(); Setup::ALL.len()];
    let mut ready: Vec<Vec<f64>> = vec![Vec::new(); Setup::ALL.len()];
    for round in 0..rounds {
        // Rotate the order, so no setup always runs right after another's pods went away.
        for i in 0..Setup::ALL.len() {
            let k = (i + round) % Setup::ALL.len();
            let setup = Setup::ALL[k];
            let t = start(
                &client,
                setup,
                round,
                replicas,
                &settings,
                &server.url,
                &slug,
            )
            .await?;
            println!(
                "round {:>2}: {:<33} serving {:.2}s  Ready {:.2}s",
                round + 1,
                setup.name(),
                t.serving.as_secs_f64(),
                t.ready.as_secs_f64()
            );
            serving[k].push(t.serving.as_secs_f64());
            ready[k].push(t.ready.as_secs_f64());
        }
    }

    for (what, times) in [("serving", &serving), ("Ready", &ready)] {
        println!("\n{what}: median (min … max) over {rounds} rounds");
        let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
        for (k, setup) in Setup::ALL.iter().enumerate() {
            let t = &times[k];
            println!(
                "  {:<33} {:.2}s ({:.2} … {:.2})",
                setup.name(),
                medians[k],
                t.iter().cloned().fold(f64::INFINITY, f64::min),
                t.iter().cloned().fold(0.0, f64::max)
            );
        }
        let (before, root, restricted, operator) = (medians[0], medians[1], medians[2], medians[3]);
        println!("  restricted / before: {:.3}x", restricted / before);
        println!("  restricted / root:   {:.3}x", restricted / root);
        println!(
            "  through the operator / restricted applied directly: {:.3}x",
            operator / restricted
        );
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Times from the Release's creation.
#[derive(Debug, Clone, Copy)]
struct Times {
    /// Every pod answers HTTP (polled at its address): the app serves.
    serving: Duration,
    /// Every pod Ready (the Deployment rolled out; through the operator: the App says so).
    ready: Duration,
}

/// One start of the app in `setup`, in a namespace of its own (deleted after, waiting for
/// its pods to be gone so they cost the next start nothing).
async fn start(
    client: &Client,
    setup: Setup,
    round: usize,
    replicas: i32,
    settings: &Settings,
    slug_url: &str,
    slug: &restricted::Slug,
) -> anyhow::Result<Times> {
    let tag = match setup {
        Setup::Before => "before",
        Setup::Root => "root",
        Setup::Restricted => "restricted",
        Setup::Operator => "operator",
    };
    let round = if round == usize::MAX {
        "warm".to_owned()
    } else {
        round.to_string()
    };
    let ns = format!("bench-psa-{}-{tag}-{round}", std::process::id());
    let mut labels = json!({"flynn.io/test": "true"});
    if setup.enforces() {
        labels[flynn_crds::pod_security::ENFORCE_LABEL] = json!("restricted");
        labels[flynn_crds::pod_security::ENFORCE_VERSION_LABEL] = json!("latest");
    }
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    let result = match setup {
        Setup::Operator => {
            through_the_operator(client, &ns, replicas, settings, slug_url, slug).await
        }
        _ => applied_directly(client, setup, &ns, replicas, settings, slug_url, slug).await,
    };
    clean_up(client, &ns).await?;
    result
}

async fn applied_directly(
    client: &Client,
    setup: Setup,
    ns: &str,
    replicas: i32,
    settings: &Settings,
    slug_url: &str,
    slug: &restricted::Slug,
) -> anyhow::Result<Times> {
    let release = restricted::slug_release("bench", 1, slug_url, slug);
    let formation: Formation = serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Formation",
        "metadata": {"name": "bench", "namespace": ns},
        "spec": {"app": "bench", "release": "bench-v1", "processes": {"web": replicas}}
    }))?;
    let started = Instant::now();
    let release = Api::<Release>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &release)
        .await
        .context("creating the Release")?;
    let built = desired(&formation, &release, settings, &BTreeSet::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut d = built
        .deployments
        .into_iter()
        .next()
        .context("no Deployment")?;
    // No Formation exists to own it (the garbage collector would delete it).
    d.metadata.owner_references = None;
    let pod = d
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .context("no pod template")?;
    match setup {
        Setup::Before => {
            pod.security_context = None;
            pod.containers[0].security_context = None;
        }
        Setup::Root => {
            pod.security_context = Some(PodSecurityContext {
                run_as_user: Some(0),
                run_as_group: Some(0),
                ..Default::default()
            });
            pod.containers[0].security_context = None;
        }
        Setup::Restricted | Setup::Operator => {}
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .with_context(|| format!("creating the Deployment ({})", setup.name()))?;
    wait(client, ns, replicas, started, async || {
        let d = deployments.get("bench-web").await?;
        Ok(match deployment_rollout(&d) {
            DeploymentRollout::Complete => None,
            waiting => Some(format!("{waiting:?}")),
        })
    })
    .await
    .with_context(|| format!("{}: `kubectl -n {ns} describe pods` says why", setup.name()))
}

/// Waits from `started` until `replicas` pods of the namespace answer HTTP on their own
/// address (polled every 25 ms: the app serves) and until `rolled_out` says nothing is
/// left to wait for (every pod Ready, which the readiness probe's 2 s period paces).
async fn wait(
    client: &Client,
    ns: &str,
    replicas: i32,
    started: Instant,
    mut rolled_out: impl AsyncFnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Times> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let mut answered = BTreeSet::new();
    let (mut serving, mut ready) = (None, None);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if serving.is_none() {
            for pod in pods.list(&ListParams::default()).await?.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let Some(ip) = pod.status.and_then(|s| s.pod_ip) else {
                    continue;
                };
                if answered.contains(&name) {
                    continue;
                }
                let addr = std::net::SocketAddr::new(ip.parse()?, 5000);
                let get = restricted::http_get(addr, "/");
                if let Ok(Ok((200, _))) =
                    tokio::time::timeout(Duration::from_millis(500), get).await
                {
                    answered.insert(name);
                }
            }
            if answered.len() >= usize::try_from(replicas)? {
                serving = Some(started.elapsed());
            }
        }
        let waiting = if ready.is_none() {
            let waiting = rolled_out().await?;
            if waiting.is_none() {
                ready = Some(started.elapsed());
            }
            waiting
        } else {
            None
        };
        if let (Some(serving), Some(ready)) = (serving, ready) {
            return Ok(Times { serving, ready });
        }
        if Instant::now() > deadline {
            bail!(
                "not started within {START_TIMEOUT:?}: {} of {replicas} pods answer HTTP; {}",
                answered.len(),
                waiting.unwrap_or_else(|| "rolled out".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn through_the_operator(
    client: &Client,
    ns: &str,
    replicas: i32,
    settings: &Settings,
    slug_url: &str,
    slug: &restricted::Slug,
) -> anyhow::Result<Times> {
    let token = CancellationToken::new();
    let settings = Settings {
        namespace: Some(ns.to_owned()),
        ..settings.clone()
    };
    tokio::spawn(run(
        client.clone(),
        settings,
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
        token.clone(),
    ));
    let _stop = token.drop_guard();
    let apps = Api::<App>::namespaced(client.clone(), ns);
    let app: App = serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "App",
        "metadata": {"name": "bench"},
        "spec": {"processes": {"web": replicas}}
    }))?;
    apps.create(&PostParams::default(), &app)
        .await
        .context("creating the App")?;
    let release = restricted::slug_release("bench", 1, slug_url, slug);
    let started = Instant::now();
    Api::<Release>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &release)
        .await
        .context("creating the Release")?;
    // What `git push` does next: point the App at the new Release.
    let patch = json!({"spec": {"release": "bench-v1"}});
    apps.patch(
        "bench",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    wait(client, ns, replicas, started, async || {
        let status = apps.get("bench").await?.status.unwrap_or_default();
        Ok((status.release.as_deref() != Some("bench-v1"))
            .then(|| format!("App status: {:?}", status.conditions)))
    })
    .await
    .context("through the operator")
}

/// Deletes the namespace's pods at once and the namespace, and waits until no pod is left.
async fn clean_up(client: &Client, ns: &str) -> anyhow::Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    // The Deployments go first, or their ReplicaSets would make new pods.
    let _ = Api::<Deployment>::namespaced(client.clone(), ns)
        .delete_collection(&DeleteParams::background(), &ListParams::default())
        .await;
    let _ = pods
        .delete_collection(
            &DeleteParams::background().grace_period(0),
            &ListParams::default(),
        )
        .await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::background())
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("the pods of namespace {ns} were not gone within 120s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
