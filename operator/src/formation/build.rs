//! The pure half of the Formation reconciler: a Formation and its Release in, the
//! Deployments and Services that should exist out. No I/O, so every rule here has a
//! unit test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flynn_crds::{
    DeployStrategy, Formation, HealthCheck, HealthCheckType, ProcessSpec, Protocol, Release,
    labels, names, pod_security,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service,
    ServicePort, ServiceSpec, SleepAction, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::Settings;

/// Why a Formation cannot be built as asked. Reported in its conditions, never retried in a
/// loop: only a change to the Formation or Release can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error(
        "process type {process:?} is not in release {release} (it has: {available}); remove it from the App's processes or push a release that defines it"
    )]
    UnknownProcessType {
        process: String,
        release: String,
        available: String,
    },
    #[error("release {0} defines no process types: add a Procfile (or processes to the Release)")]
    NoProcesses(String),
    #[error("release {0} belongs to app {1}, not to this Formation's app {2}")]
    WrongApp(String, String, String),
}

/// Everything one Formation should own.
#[derive(Debug, Default)]
pub struct Desired {
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
}

/// Builds the Deployments and Services of `formation` running `release`.
///
/// A process type gets a Deployment when it is both in the Release and in the Formation's
/// counts (a count of 0 keeps a Deployment scaled to zero); it gets a Service when it has a
/// port exposed as a service. Counts naming a type the Release lacks are refused as a whole,
/// so a typo never silently scales the rest. `draining`: the process types whose pods
/// drain when stopped (see [`drain`] and `formation::draining_processes`).
pub fn desired(
    formation: &Formation,
    release: &Release,
    settings: &Settings,
    draining: &BTreeSet<String>,
) -> Result<Desired, Invalid> {
    let app = &formation.spec.app;
    let release_name = release.metadata.name.clone().unwrap_or_default();
    if release.spec.app != *app {
        return Err(Invalid::WrongApp(
            release_name,
            release.spec.app.clone(),
            app.clone(),
        ));
    }
    if release.spec.processes.is_empty() {
        return Err(Invalid::NoProcesses(release_name));
    }
    if let Some(process) = formation
        .spec
        .processes
        .keys()
        .find(|p| !release.spec.processes.contains_key(*p))
    {
        return Err(Invalid::UnknownProcessType {
            process: process.clone(),
            release: release_name,
            available: release.spec.process_types(),
        });
    }

    let owner = owner_reference(formation);
    let mut out = Desired::default();
    for (process, &replicas) in &formation.spec.processes {
        let spec = &release.spec.processes[process];
        let mut d = deployment(
            formation, release, process, spec, replicas, &owner, settings,
        );
        if draining.contains(process) {
            drain(&mut d, settings.drain_delay);
        }
        out.deployments.push(d);
        if let Some(svc) = service(app, process, spec, &owner, formation) {
            out.services.push(svc);
        }
    }
    Ok(out)
}

/// Flynn's `drain_backends`, on Kubernetes: a pod being stopped keeps running, with no
/// signal, for `delay` before its SIGTERM (a `preStop` sleep), and has the usual 30 s after
/// it.
///
/// Why: deleting a pod sends its SIGTERM at the same moment its endpoint turns
/// terminating, and the router learns of that a few milliseconds later. A process that
/// exits on SIGTERM would break the requests in flight, and any sent before the router
/// heard. With the delay, the router has stopped sending new requests long before the
/// signal, and the requests in flight have `delay` to finish. (Flynn's scheduler waited
/// for the router's drain events instead; a pod cannot ask the router about itself
/// without a client in every image.)
pub fn drain(d: &mut Deployment, delay: Duration) {
    if delay.is_zero() {
        return;
    }
    let Some(pod) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return;
    };
    let seconds = i64::try_from(delay.as_secs().max(1)).unwrap_or(i64::MAX);
    pod.termination_grace_period_seconds = Some(seconds.saturating_add(30));
    for c in &mut pod.containers {
        c.lifecycle = Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
}

fn owner_reference(formation: &Formation) -> OwnerReference {
    OwnerReference {
        api_version: "flynn.io/v1alpha1".into(),
        kind: "Formation".into(),
        name: formation.metadata.name.clone().unwrap_or_default(),
        uid: formation.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn deployment(
    formation: &Formation,
    release: &Release,
    process: &str,
    spec: &ProcessSpec,
    replicas: i32,
    owner: &OwnerReference,
    settings: &Settings,
) -> Deployment {
    let app = &formation.spec.app;
    let release_name = release.metadata.name.clone().unwrap_or_default();
    let pod_labels = labels::workload(app, process, &release_name);
    Deployment {
        metadata: child_meta(formation, process, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector(app, process)),
                ..Default::default()
            },
            strategy: Some(strategy(formation.spec.strategy)),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        "flynn.io/release-version".to_owned(),
                        release.spec.version.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(app, process, release, spec, settings)],
                    // Flynn never had Docker links: a Service per process type is found by
                    // DNS, and the link variables would only leak other apps' addresses.
                    enable_service_links: Some(false),
                    security_context: Some(pod_security_context(release)),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Pod Security "restricted" for every process (`flynn_crds::pod_security`): a slug runs as
/// the slugrunner image's user, which owns `/app` where the slug is unpacked; an image runs
/// as its own user, and the kubelet refuses it if that is root (the rollout's diagnosis says
/// so, see `rollout::diagnose`).
pub fn pod_security_context(release: &Release) -> PodSecurityContext {
    let user = release
        .spec
        .artifact
        .slug
        .is_some()
        .then_some(pod_security::SLUG_USER);
    pod_security::pod_security_context(user)
}

/// The Deployment strategy for an App's deploy strategy (see `flynn_crds::DeployStrategy`).
/// None of them ever goes below the desired count: `maxUnavailable` is always 0.
fn strategy(strategy: DeployStrategy) -> DeploymentStrategy {
    let surge = match strategy {
        DeployStrategy::Rolling => IntOrString::String("25%".into()),
        DeployStrategy::AllAtOnce => IntOrString::String("100%".into()),
        DeployStrategy::OneByOne => IntOrString::Int(1),
    };
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(surge),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

fn container(
    app: &str,
    process: &str,
    release: &Release,
    spec: &ProcessSpec,
    settings: &Settings,
) -> Container {
    let release_name = release.metadata.name.clone().unwrap_or_default();
    // Config vars come from the Release's snapshot Secret (envFrom), so no value is written
    // into the Deployment. A Release made before snapshots carries them in plain text: still
    // given, so an upgrade loses nothing. Variables listed in `env` win over `envFrom`, so a
    // config var cannot change what Flynn sets below.
    let env_from = flynn_crds::config::env_from(release);
    let mut env: Vec<EnvVar> = release
        .spec
        .env
        .iter()
        .map(|(k, v)| env_var(k, v))
        .collect();
    env.push(env_var("FLYNN_APP", app));
    env.push(env_var("FLYNN_RELEASE", &release_name));
    env.push(env_var("FLYNN_PROCESS_TYPE", process));
    if let Some(port) = spec.ports.first() {
        env.push(env_var("PORT", &port.port.to_string()));
    }

    let (image, pull_policy, command, args) =
        match (&release.spec.artifact.slug, &release.spec.artifact.image) {
            (Some(slug), _) => {
                env.push(env_var("SLUG_URL", &slug.url));
                env.push(env_var("SLUG_SHA256", &slug.sha256));
                // The slugrunner reads the Procfile in the slug; a command set on the
                // Release overrides it with a literal command line.
                let args = if spec.command.is_empty() {
                    vec!["start".to_owned(), process.to_owned()]
                } else {
                    spec.command.iter().chain(&spec.args).cloned().collect()
                };
                (
                    settings.slugrunner_image.clone(),
                    settings.slugrunner_pull_policy.clone(),
                    None,
                    Some(args),
                )
            }
            (None, Some(image)) => (
                image.clone(),
                "IfNotPresent".to_owned(),
                non_empty(&spec.command),
                non_empty(&spec.args),
            ),
            // The API server guarantees exactly one of slug and image.
            (None, None) => (String::new(), "IfNotPresent".to_owned(), None, None),
        };

    let ports: Vec<ContainerPort> = spec
        .ports
        .iter()
        .map(|p| ContainerPort {
            container_port: p.port,
            name: p.name.clone(),
            protocol: Some(protocol(p.protocol).into()),
            ..Default::default()
        })
        .collect();
    let (readiness, liveness) = probes(spec);

    Container {
        name: process.to_owned(),
        image: Some(image),
        image_pull_policy: Some(pull_policy),
        command,
        args,
        env: Some(env),
        env_from,
        ports: (!ports.is_empty()).then_some(ports),
        resources: spec.resources.as_ref().map(|r| ResourceRequirements {
            requests: (!r.requests.is_empty()).then(|| r.requests.clone()),
            limits: (!r.limits.is_empty()).then(|| r.limits.clone()),
            ..Default::default()
        }),
        readiness_probe: readiness,
        liveness_probe: liveness,
        security_context: Some(pod_security::container_security_context()),
        ..Default::default()
    }
}

/// Readiness and liveness probes. An explicit health check drives both. Without one, a
/// process that listens gets a TCP readiness probe on its first port (so no traffic
/// reaches a pod before it listens) and no liveness probe (restarting a slow starter in a
/// loop helps nobody); a process that does not listen gets none.
fn probes(spec: &ProcessSpec) -> (Option<Probe>, Option<Probe>) {
    let first_port = spec.ports.first().map(|p| p.port);
    match &spec.health_check {
        Some(check) => {
            let probe = probe_from_check(check, first_port);
            (Some(probe.clone()), Some(probe))
        }
        None => match first_port {
            Some(port) => (
                Some(Probe {
                    tcp_socket: Some(TCPSocketAction {
                        port: IntOrString::Int(port),
                        ..Default::default()
                    }),
                    period_seconds: Some(2),
                    failure_threshold: Some(3),
                    ..Default::default()
                }),
                None,
            ),
            None => (None, None),
        },
    }
}

fn probe_from_check(check: &HealthCheck, first_port: Option<i32>) -> Probe {
    let port = IntOrString::Int(check.port.or(first_port).unwrap_or(8080));
    let mut probe = Probe {
        initial_delay_seconds: Some(check.initial_delay_seconds),
        period_seconds: Some(check.period_seconds),
        timeout_seconds: Some(check.timeout_seconds),
        failure_threshold: Some(check.failure_threshold),
        ..Default::default()
    };
    match check.type_ {
        HealthCheckType::Tcp => {
            probe.tcp_socket = Some(TCPSocketAction {
                port,
                ..Default::default()
            });
        }
        HealthCheckType::Http => {
            probe.http_get = Some(HTTPGetAction {
                path: Some(check.path.clone().unwrap_or_else(|| "/".into())),
                port,
                ..Default::default()
            });
        }
        HealthCheckType::Exec => {
            probe.exec = Some(ExecAction {
                command: Some(check.command.clone()),
            });
        }
    }
    probe
}

fn service(
    app: &str,
    process: &str,
    spec: &ProcessSpec,
    owner: &OwnerReference,
    formation: &Formation,
) -> Option<Service> {
    let ports: Vec<ServicePort> =
        spec.ports
            .iter()
            .filter(|p| p.service)
            .map(|p| ServicePort {
                name: Some(p.name.clone().unwrap_or_else(|| {
                    format!("{}-{}", protocol(p.protocol).to_lowercase(), p.port)
                })),
                port: p.port,
                target_port: Some(IntOrString::Int(p.port)),
                protocol: Some(protocol(p.protocol).into()),
                ..Default::default()
            })
            .collect();
    if ports.is_empty() {
        return None;
    }
    Some(Service {
        metadata: child_meta(formation, process, owner),
        spec: Some(ServiceSpec {
            selector: Some(labels::selector(app, process)),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    })
}

/// Metadata of a process type's Deployment or Service (they share the name
/// `<app>-<process>`): the selector labels, managed-by, and the Formation as owner.
fn child_meta(formation: &Formation, process: &str, owner: &OwnerReference) -> ObjectMeta {
    let app = &formation.spec.app;
    let mut labels = labels::selector(app, process);
    labels.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_FLYNN.into());
    ObjectMeta {
        name: Some(names::deployment_name(app, process)),
        namespace: formation.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn formation(processes: serde_json::Value, strategy: &str) -> Formation {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Formation",
            "metadata": {"name": "shop", "namespace": "ns", "uid": "f-uid"},
            "spec": {"app": "shop", "release": "shop-v3", "processes": processes, "strategy": strategy}
        }))
        .unwrap()
    }

    fn release(artifact: serde_json::Value) -> Release {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
            "metadata": {"name": "shop-v3", "namespace": "ns"},
            "spec": {
                "app": "shop", "version": 3, "artifact": artifact,
                "env": {"DATABASE_URL": "postgres://db"},
                "processes": {
                    "web": {"ports": [{"port": 5000}]},
                    "worker": {"command": ["bin/worker"], "args": ["--queue", "default"]},
                    "admin": {"ports": [{"port": 9000, "name": "admin", "service": false}],
                              "healthCheck": {"type": "http", "path": "/healthz"}}
                }
            }
        }))
        .unwrap()
    }

    fn slug() -> serde_json::Value {
        json!({"slug": {"url": "http://shelf/slugs/shop/3.tgz", "sha256": "a".repeat(64), "size": 10}})
    }

    fn container_of(d: &Deployment) -> &Container {
        &d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    fn env_of(d: &Deployment) -> BTreeMap<String, String> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn processes_behind_draining_routes_stop_after_a_delay() {
        let web_drains = BTreeSet::from(["web".to_owned()]);
        let pods = |delay: u64| {
            let settings = Settings {
                drain_delay: Duration::from_secs(delay),
                ..Settings::default()
            };
            let f = formation(json!({"web": 2, "worker": 1}), "rolling");
            desired(&f, &release(slug()), &settings, &web_drains)
                .unwrap()
                .deployments
                .into_iter()
                .map(|d| d.spec.unwrap().template.spec.unwrap())
                .map(|pod| (pod.containers[0].name.clone(), pod))
                .collect::<BTreeMap<_, _>>()
        };
        let with_delay = pods(5);
        let web = &with_delay["web"];
        let pre_stop = web.containers[0]
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref();
        assert_eq!(pre_stop.unwrap().sleep.as_ref().unwrap().seconds, 5);
        assert_eq!(web.termination_grace_period_seconds, Some(35));
        // No Route sends traffic to the worker: it stops at once.
        let worker = &with_delay["worker"];
        assert!(worker.containers[0].lifecycle.is_none());
        assert!(worker.termination_grace_period_seconds.is_none());
        // A delay of 0 turns draining off.
        let web = &pods(0)["web"];
        assert!(web.containers[0].lifecycle.is_none());
        assert!(web.termination_grace_period_seconds.is_none());
    }

    #[test]
    fn slug_processes_run_the_slugrunner_with_start_type() {
        let out = desired(
            &formation(json!({"web": 2, "worker": 1}), "rolling"),
            &release(slug()),
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(out.deployments.len(), 2);
        let web = &out.deployments[0];
        assert_eq!(web.metadata.name.as_deref(), Some("shop-web"));
        let c = container_of(web);
        assert_eq!(c.image.as_deref(), Some("localhost/flynn-slugrunner:dev"));
        assert_eq!(
            c.args.as_deref(),
            Some(&["start".to_owned(), "web".to_owned()][..])
        );
        let env = env_of(web);
        assert_eq!(env["PORT"], "5000");
        assert_eq!(env["SLUG_URL"], "http://shelf/slugs/shop/3.tgz");
        assert_eq!(env["DATABASE_URL"], "postgres://db");
        assert_eq!(env["FLYNN_RELEASE"], "shop-v3");
        assert_eq!(web.spec.as_ref().unwrap().replicas, Some(2));

        // A literal command on a slug process replaces `start <type>`.
        let worker = &out.deployments[1];
        let c = container_of(worker);
        assert_eq!(
            c.args.as_deref(),
            Some(
                &[
                    "bin/worker".to_owned(),
                    "--queue".to_owned(),
                    "default".to_owned()
                ][..]
            )
        );
        assert!(
            !env_of(worker).contains_key("PORT"),
            "a worker does not listen"
        );
    }

    #[test]
    fn image_processes_run_the_image_with_its_command() {
        let out = desired(
            &formation(json!({"worker": 1}), "rolling"),
            &release(json!({"image": "registry.example/shop:1.2"})),
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap();
        let c = container_of(&out.deployments[0]);
        assert_eq!(c.image.as_deref(), Some("registry.example/shop:1.2"));
        assert_eq!(c.command.as_deref(), Some(&["bin/worker".to_owned()][..]));
        assert_eq!(
            c.args.as_deref(),
            Some(&["--queue".to_owned(), "default".to_owned()][..])
        );
        assert!(!env_of(&out.deployments[0]).contains_key("SLUG_URL"));
    }

    #[test]
    fn config_vars_come_from_the_snapshot_secret_and_no_value_is_written() {
        let mut r = release(json!({"image": "registry.example/shop:1.2"}));
        r.spec.env.clear();
        r.spec.config_secret = Some("shop-v3-env".into());
        let out = desired(
            &formation(json!({"web": 1}), "rolling"),
            &r,
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap();
        let d = &out.deployments[0];
        let c = container_of(d);
        let from = c.env_from.as_ref().expect("envFrom");
        let secret = from[0].secret_ref.as_ref().expect("a secretRef");
        assert_eq!(secret.name, "shop-v3-env");
        assert_eq!(
            secret.optional,
            Some(false),
            "a missing snapshot must not start"
        );
        // Only Flynn's own variables are written into the Deployment.
        let env = env_of(d);
        assert!(
            env.keys().all(|k| k.starts_with("FLYNN_") || k == "PORT"),
            "{env:?}"
        );
        // The twin: a Release without a snapshot has no envFrom.
        let out = desired(
            &formation(json!({"web": 1}), "rolling"),
            &release(json!({"image": "registry.example/shop:1.2"})),
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap();
        let c = container_of(&out.deployments[0]);
        assert!(c.env_from.is_none());
    }

    /// The fields Pod Security "restricted" checks, as the API server sees them.
    fn assert_restricted(d: &Deployment) -> serde_json::Value {
        let pod = serde_json::to_value(&d.spec.as_ref().unwrap().template.spec).unwrap();
        let name = d.metadata.name.as_deref().unwrap();
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for c in pod["containers"].as_array().unwrap() {
            assert_eq!(
                c["securityContext"],
                json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
                "{name}"
            );
        }
        assert!(pod.get("volumes").is_none(), "{name}: no volumes");
        assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
        pod["securityContext"].clone()
    }

    #[test]
    fn every_process_passes_pod_security_restricted() {
        let f = formation(json!({"web": 2, "worker": 1, "admin": 1}), "rolling");
        let draining = BTreeSet::from(["web".to_owned()]);
        // Slugs run as the slugrunner image's user (it owns /app, where the slug goes).
        let out = desired(&f, &release(slug()), &Settings::default(), &draining).unwrap();
        assert_eq!(out.deployments.len(), 3);
        for d in &out.deployments {
            let sc = assert_restricted(d);
            assert_eq!(
                (&sc["runAsUser"], &sc["runAsGroup"], &sc["fsGroup"]),
                (&json!(1000), &json!(1000), &json!(1000))
            );
        }
        // Images keep their own user: none is forced, so a root image is refused by the
        // kubelet rather than run.
        let image = release(json!({"image": "registry.example/shop:1.2"}));
        let out = desired(&f, &image, &Settings::default(), &draining).unwrap();
        for d in &out.deployments {
            let sc = assert_restricted(d);
            assert!(
                sc.get("runAsUser").is_none()
                    && sc.get("runAsGroup").is_none()
                    && sc.get("fsGroup").is_none(),
                "{sc}"
            );
        }
    }

    #[test]
    fn labels_selector_and_owner() {
        let out = desired(
            &formation(json!({"web": 1}), "rolling"),
            &release(slug()),
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap();
        let d = &out.deployments[0];
        let spec = d.spec.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels["flynn.io/app"], "shop");
        assert_eq!(pod_labels["flynn.io/process"], "web");
        assert_eq!(pod_labels["flynn.io/release"], "shop-v3");
        // The selector must not include the release, or every release would orphan pods.
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert!(!selector.contains_key("flynn.io/release"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Formation", "f-uid", Some(true))
        );
    }

    #[test]
    fn strategies_never_go_below_desired() {
        for (name, surge) in [
            ("rolling", IntOrString::String("25%".into())),
            ("all-at-once", IntOrString::String("100%".into())),
            ("one-by-one", IntOrString::Int(1)),
        ] {
            let out = desired(
                &formation(json!({"web": 4}), name),
                &release(slug()),
                &Settings::default(),
                &BTreeSet::new(),
            )
            .unwrap();
            let ru = out.deployments[0]
                .spec
                .as_ref()
                .unwrap()
                .strategy
                .as_ref()
                .unwrap()
                .rolling_update
                .clone()
                .unwrap();
            assert_eq!(ru.max_surge, Some(surge), "{name}");
            assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)), "{name}");
        }
    }

    #[test]
    fn probes_default_to_tcp_readiness_on_the_first_port() {
        let out = desired(
            &formation(json!({"web": 1, "worker": 1, "admin": 1}), "rolling"),
            &release(slug()),
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap();
        let by_name: BTreeMap<_, _> = out
            .deployments
            .iter()
            .map(|d| (d.metadata.name.clone().unwrap(), d))
            .collect();
        let c = |n: &str| {
            by_name[n]
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .clone()
        };
        let web = c("shop-web");
        assert_eq!(
            web.readiness_probe.unwrap().tcp_socket.unwrap().port,
            IntOrString::Int(5000)
        );
        assert!(web.liveness_probe.is_none());
        let worker = c("shop-worker");
        assert!(worker.readiness_probe.is_none() && worker.liveness_probe.is_none());
        let admin = c("shop-admin");
        let http = admin.liveness_probe.unwrap().http_get.unwrap();
        assert_eq!(
            (http.path.as_deref(), http.port),
            (Some("/healthz"), IntOrString::Int(9000))
        );
    }

    #[test]
    fn services_only_for_exposed_ports() {
        let out = desired(
            &formation(json!({"web": 1, "worker": 1, "admin": 0}), "rolling"),
            &release(slug()),
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap();
        let names: Vec<_> = out
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["shop-web"],
            "admin's only port has service: false; worker has none"
        );
        let port = &out.services[0]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0];
        assert_eq!((port.port, port.name.as_deref()), (5000, Some("tcp-5000")));
        // Scale to zero keeps the Deployment.
        assert!(
            out.deployments
                .iter()
                .any(|d| d.metadata.name.as_deref() == Some("shop-admin")
                    && d.spec.as_ref().unwrap().replicas == Some(0))
        );
    }

    #[test]
    fn types_missing_from_the_counts_get_nothing() {
        let out = desired(
            &formation(json!({"web": 1}), "rolling"),
            &release(slug()),
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(out.deployments.len(), 1);
    }

    #[test]
    fn unknown_process_types_are_refused_with_what_exists() {
        let err = desired(
            &formation(json!({"web": 1, "wrker": 2}), "rolling"),
            &release(slug()),
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"wrker\"") && msg.contains("admin, web, worker"),
            "{msg}"
        );
    }

    #[test]
    fn a_release_without_processes_is_refused() {
        let mut r = release(slug());
        r.spec.processes.clear();
        let err = desired(
            &formation(json!({}), "rolling"),
            &r,
            &Settings::default(),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(matches!(err, Invalid::NoProcesses(_)));
    }
}
