//! The chart follows the conventions a platform team reviews for, checked on what `helm
//! template` renders (the same objects `helm install` applies): the standard labels on
//! every object, names that two releases do not share, pods that pass Pod Security
//! "restricted" (and the one that cannot, the router on the host network, only where it
//! says so), a router that is never one pod replaced with `Recreate`, a disruption budget
//! and spreading for the operator, monitors only where their API is, network policies,
//! the `helm test` hook, and a render with nothing random in it (the slug store's token is
//! not rendered at all, so no render can replace it).
//!
//! Each check runs beside a twin that must fail it, so it cannot pass for the wrong reason.

use std::collections::BTreeSet;
use std::process::Output;

use flynn_e2e::helm;
use serde_json::Value;

fn template(release: &str, ns: &str, args: &[&str]) -> Output {
    let mut cmd = helm();
    cmd.args(["template", release, "charts/flynn", "-n", ns])
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd.output().expect("running helm")
}

/// The objects `helm template` renders with `args` (`--set ...`), release `flynn` in
/// `flynn-system` unless `args` say otherwise.
#[track_caller]
fn objects_of(release: &str, ns: &str, args: &[&str]) -> Vec<Value> {
    let out = template(release, ns, args);
    assert!(
        out.status.success(),
        "helm template {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // serde-saphyr refuses a duplicated key, which Kubernetes would silently collapse.
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("the chart renders invalid YAML ({e}):\n{text}"))
        .into_iter()
        .filter(|o| !o.is_null())
        .collect()
}

#[track_caller]
fn objects(args: &[&str]) -> Vec<Value> {
    objects_of("flynn", "flynn-system", args)
}

fn set(values: &str) -> Vec<&str> {
    vec!["--set", values]
}

fn id(o: &Value) -> String {
    format!(
        "{}/{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["namespace"].as_str().unwrap_or("(cluster)"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

#[track_caller]
fn one<'a>(objs: &'a [Value], kind_: &str, name: &str) -> &'a Value {
    kind(objs, kind_)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind_} {name} among {:?}",
                objs.iter().map(id).collect::<Vec<_>>()
            )
        })
}

/// A workload's (or a bare Pod's) pod spec.
fn pod_spec(o: &Value) -> Option<&Value> {
    match o["kind"].as_str()? {
        "Pod" => Some(&o["spec"]),
        "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => Some(&o["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// What Pod Security "restricted" (v1.34) refuses in a pod spec, one line per finding;
/// empty when the pod is admitted. Follows the profile's rules: no host namespaces, ports
/// or paths; non-root (pod or every container); seccomp RuntimeDefault or Localhost; no
/// privilege escalation; every capability dropped, only NET_BIND_SERVICE added back.
fn restricted_violations(spec: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host] == true {
            v.push(format!("{host}: true"));
        }
    }
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        if !vol["hostPath"].is_null() {
            v.push(format!("hostPath volume {}", vol["name"]));
        }
    }
    let pod = &spec["securityContext"];
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let non_root = if sc["runAsNonRoot"].is_null() {
            pod["runAsNonRoot"] == true
        } else {
            sc["runAsNonRoot"] == true
        };
        if !non_root {
            v.push(format!("{name}: runAsNonRoot is not true"));
        }
        let uid = if sc["runAsUser"].is_null() {
            &pod["runAsUser"]
        } else {
            &sc["runAsUser"]
        };
        if uid == 0 {
            v.push(format!("{name}: runAsUser 0"));
        }
        let seccomp = if sc["seccompProfile"]["type"].is_null() {
            &pod["seccompProfile"]["type"]
        } else {
            &sc["seccompProfile"]["type"]
        };
        if seccomp != "RuntimeDefault" && seccomp != "Localhost" {
            v.push(format!("{name}: seccompProfile is {seccomp}"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            v.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if sc["privileged"] == true {
            v.push(format!("{name}: privileged"));
        }
        let drop: Vec<_> = sc["capabilities"]["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        if !drop.iter().any(|d| *d == "ALL") {
            v.push(format!("{name}: capabilities do not drop ALL"));
        }
        for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if add != "NET_BIND_SERVICE" {
                v.push(format!("{name}: adds capability {add}"));
            }
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if !p["hostPort"].is_null() && p["hostPort"] != 0 {
                v.push(format!("{name}: hostPort {}", p["hostPort"]));
            }
        }
    }
    v
}

/// Every pod the chart renders, with what "restricted" refuses in it.
fn pods_violating(objs: &[Value]) -> Vec<(String, Vec<String>)> {
    objs.iter()
        .filter_map(|o| Some((id(o), restricted_violations(pod_spec(o)?))))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The values a cluster enforcing "restricted" everywhere installs with: the router and
/// the git receiver behind Services, state on claims.
const ALL_RESTRICTED: &str = "router.mode=service,gitreceiver.hostNetwork=false";

#[test]
fn every_object_carries_the_standard_labels() {
    for args in [
        vec![],
        vec![
            "--set",
            "router.mode=service,router.namespace=flynn-edge,router.createNamespace=true,gitreceiver.hostNetwork=false,networkPolicy.enabled=true,metrics.podMonitor.enabled=true",
            "--api-versions",
            "monitoring.coreos.com/v1/PodMonitor",
        ],
    ] {
        let objs = objects(&args);
        assert!(objs.len() > 20, "{args:?}: only {} objects", objs.len());
        for o in &objs {
            let labels = &o["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by",
                "helm.sh/chart",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{args:?}: {} has no label {key}: {labels}",
                    id(o)
                );
            }
            assert_eq!(labels["app.kubernetes.io/instance"], "flynn", "{}", id(o));
            // A workload's pods carry them too, and its selector only the stable two.
            if let Some(template) = o["spec"]["template"]["metadata"].as_object() {
                let pod_labels = &template["labels"];
                assert_eq!(
                    pod_labels["app.kubernetes.io/version"],
                    labels["app.kubernetes.io/version"]
                );
                assert_eq!(
                    pod_labels["app.kubernetes.io/component"],
                    labels["app.kubernetes.io/component"]
                );
                // A Job's selector is the one Kubernetes makes (its controller-uid).
                if o["kind"] == "Job" {
                    continue;
                }
                let selector = o["spec"]["selector"]["matchLabels"].as_object().unwrap();
                assert_eq!(
                    selector.keys().collect::<Vec<_>>(),
                    ["app.kubernetes.io/instance", "app.kubernetes.io/name"],
                    "{}: a selector with more than name and instance changes on upgrade (and selectors are immutable)",
                    id(o)
                );
            }
        }
    }
}

#[test]
fn two_releases_in_one_cluster_name_nothing_alike() {
    let names = |objs: Vec<Value>| -> BTreeSet<String> { objs.iter().map(id).collect() };
    let first = names(objects(&[]));
    let second = names(objects_of(
        "team-b",
        "team-b-system",
        &set("gitreceiver.keysNamespace=team-b-keys"),
    ));
    assert!(
        second.iter().any(|n| n.contains("team-b-flynn-operator")),
        "the second release's names: {second:?}"
    );
    let shared: Vec<_> = first.intersection(&second).collect();
    assert!(shared.is_empty(), "both releases render {shared:?}");
    // The twin: the same release name twice does collide (the check can fail).
    let again = names(objects_of("flynn", "flynn-system", &[]));
    assert!(!first.is_disjoint(&again));
    // A release called "flynn-staging" is its own prefix.
    let staging = names(objects_of(
        "flynn-staging",
        "staging",
        &set("gitreceiver.keysNamespace=staging-keys"),
    ));
    assert!(
        staging.contains("ClusterRole/(cluster)/flynn-staging-router"),
        "{staging:?}"
    );
}

#[test]
fn the_render_has_nothing_random_and_no_token() {
    let a = template("flynn", "flynn-system", &[]);
    let b = template("flynn", "flynn-system", &[]);
    assert!(a.status.success());
    assert_eq!(
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
        "two renders differ: an Argo CD sync would change the cluster every time"
    );
    let objs = objects(&[]);
    assert!(
        kind(&objs, "Secret").is_empty(),
        "the chart renders a Secret: {:?}",
        kind(&objs, "Secret")
            .iter()
            .map(|o| id(o))
            .collect::<Vec<_>>()
    );
    // The store and the receiver read the token from the Secret the store creates ...
    let shelf = one(&objs, "Deployment", "flynn-shelf").to_string();
    assert!(
        shelf.contains(r#"{"name":"SHELF_TOKEN_SECRET","value":"flynn-system/flynn-shelf-token"}"#),
        "{shelf}"
    );
    let receiver = one(&objs, "Deployment", "flynn-gitreceiver").to_string();
    assert!(
        receiver.contains("flynn-system/flynn-shelf-token"),
        "{receiver}"
    );
    let role = one(&objs, "Role", "flynn-shelf-token").to_string();
    assert!(role.contains(r#""create""#), "{role}");
    // ... or from the platform team's, and then the store may create nothing.
    let objs = objects(&set("shelf.token.existingSecret=team-token"));
    let shelf = one(&objs, "Deployment", "flynn-shelf").to_string();
    assert!(shelf.contains("flynn-system/team-token"), "{shelf}");
    let role = one(&objs, "Role", "flynn-shelf-token").to_string();
    assert!(!role.contains(r#""create""#), "{role}");
    assert!(role.contains(r#"["team-token"]"#), "{role}");
}

#[test]
fn every_pod_passes_pod_security_restricted_where_the_platform_asks_for_it() {
    // With the router and the receiver behind Services, every pod is admitted.
    let objs = objects(&set(ALL_RESTRICTED));
    let pods = objs.iter().filter(|o| pod_spec(o).is_some()).count();
    assert_eq!(
        pods, 7,
        "operator, router, shelf, git receiver, postgres, its admin-secret hook and the test pod"
    );
    assert_eq!(pods_violating(&objs), vec![]);
    // The twin: on the host network, the router and the receiver are refused, and
    // nothing else is; the router says so in its own namespace when given one.
    let objs = objects(&[]);
    let refused: Vec<_> = pods_violating(&objs)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        refused,
        [
            "DaemonSet/flynn-system/flynn-router",
            "Deployment/flynn-system/flynn-gitreceiver"
        ]
    );
    let objs = objects(&set(
        "router.namespace=flynn-edge,router.createNamespace=true,gitreceiver.hostNetwork=false",
    ));
    let edge = one(&objs, "Namespace", "flynn-edge");
    assert_eq!(
        edge["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let refused: Vec<_> = pods_violating(&objs)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(refused, ["DaemonSet/flynn-edge/flynn-router"]);
    // Its only added capability is binding ports below 1024, and on ports above it
    // needs none.
    let router = one(&objs, "DaemonSet", "flynn-router");
    let sc = &pod_spec(router).unwrap()["containers"][0]["securityContext"];
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_BIND_SERVICE"])
    );
    let objs = objects(&set("router.httpPort=8080,router.httpsPort=8443"));
    let router = one(&objs, "DaemonSet", "flynn-router");
    let v = restricted_violations(pod_spec(router).unwrap());
    assert_eq!(v, ["hostNetwork: true"], "{router}");
    // Hostpath state (single-node development) is refused too: the check sees volumes.
    let objs = objects(&set(&format!(
        "{ALL_RESTRICTED},shelf.storage.hostPath=/srv/shelf"
    )));
    let refused: Vec<_> = pods_violating(&objs)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(refused, ["Deployment/flynn-system/flynn-shelf"]);
    // A platform team's own securityContext replaces the chart's.
    let objs = objects(&set("operator.securityContext.runAsUser=4242"));
    let op = one(&objs, "Deployment", "flynn-operator").to_string();
    assert!(op.contains(r#""runAsUser":4242"#), "{op}");
}

#[test]
fn the_router_is_never_one_pod_replaced_with_recreate() {
    // Default: a DaemonSet on the host network; the new pod starts beside the old.
    let objs = objects(&[]);
    assert!(
        kind(&objs, "Deployment")
            .iter()
            .all(|d| d["metadata"]["name"] != "flynn-router")
    );
    let ds = one(&objs, "DaemonSet", "flynn-router");
    assert_eq!(
        ds["spec"]["updateStrategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    // Declared ports would be host ports, and the scheduler would keep the new pod off
    // the node while the old one holds them.
    assert!(c["ports"].is_null(), "{c}");
    // Probes through the pod's own socket, not the shared admin port.
    for probe in ["readinessProbe", "livenessProbe"] {
        let cmd = c[probe]["exec"]["command"].to_string();
        assert!(
            cmd.contains("probe") && cmd.contains("/run/flynn-router/admin.sock"),
            "{probe}: {cmd}"
        );
    }
    assert!(
        c["args"]
            .to_string()
            .contains("--admin-socket=/run/flynn-router/admin.sock")
    );

    // service mode: N replicas behind a LoadBalancer, rolled one at a time, a budget.
    let objs = objects(&set(
        "router.mode=service,router.replicas=3,router.service.nodePorts.http=30080",
    ));
    assert!(kind(&objs, "DaemonSet").is_empty());
    let d = one(&objs, "Deployment", "flynn-router");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert!(d["spec"]["template"]["spec"]["hostNetwork"].is_null());
    let svc = one(&objs, "Service", "flynn-router");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    one(&objs, "PodDisruptionBudget", "flynn-router");
    // A mode it does not know is refused, naming the value.
    let out = template("flynn", "flynn-system", &set("router.mode=ingress"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/router/mode"));
}

#[test]
fn the_operator_has_a_budget_and_spreads_its_replicas() {
    let objs = objects(&[]);
    let pdb = one(&objs, "PodDisruptionBudget", "flynn-operator");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let op = one(&objs, "Deployment", "flynn-operator");
    let anti = &op["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["labelSelector"]["matchLabels"],
        op["spec"]["selector"]["matchLabels"]
    );
    // The platform team's affinity replaces it; one replica has no budget to keep.
    let objs = objects(&set(
        "operator.replicas=1,operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool,operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
    ));
    assert!(kind(&objs, "PodDisruptionBudget").is_empty());
    let op = one(&objs, "Deployment", "flynn-operator");
    let affinity = &op["spec"]["template"]["spec"]["affinity"];
    assert!(
        affinity["podAntiAffinity"].is_null() && !affinity["nodeAffinity"].is_null(),
        "{affinity}"
    );
}

#[test]
fn pod_monitors_only_where_their_api_is() {
    let out = template(
        "flynn",
        "flynn-system",
        &set("metrics.podMonitor.enabled=true"),
    );
    assert!(
        !out.status.success(),
        "rendered PodMonitors without the API"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("monitoring.coreos.com/v1"), "{err}");
    let objs = objects(&[
        "--set",
        "metrics.podMonitor.enabled=true,metrics.podMonitor.labels.release=prom",
        "--api-versions",
        "monitoring.coreos.com/v1/PodMonitor",
    ]);
    // On the host network the router's admin port listens on loopback only (the node's
    // address may face the internet): nothing to scrape there ...
    let monitors = kind(&objs, "PodMonitor");
    assert_eq!(monitors.len(), 3, "operator, shelf, git receiver");
    let args = |objs: &[Value]| {
        one(objs, "DaemonSet", "flynn-router")["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string()
    };
    assert!(
        args(&objs).contains("--admin-addr=127.0.0.1:9090"),
        "{}",
        args(&objs)
    );
    // ... unless the platform team names an address the cluster alone reaches.
    let objs = objects(&[
        "--set",
        "metrics.podMonitor.enabled=true,metrics.podMonitor.labels.release=prom,router.adminAddress=$(HOST_IP)",
        "--api-versions",
        "monitoring.coreos.com/v1/PodMonitor",
    ]);
    assert!(
        args(&objs).contains("--admin-addr=$(HOST_IP):9090"),
        "{}",
        args(&objs)
    );
    let monitors = kind(&objs, "PodMonitor");
    assert_eq!(monitors.len(), 4, "operator, router, shelf, git receiver");
    let router = one(&objs, "PodMonitor", "flynn-router");
    assert_eq!(router["spec"]["podMetricsEndpoints"][0]["portNumber"], 9090);
    assert_eq!(router["metadata"]["labels"]["release"], "prom");
    // Off by default.
    assert!(kind(&objects(&[]), "PodMonitor").is_empty());
}

#[test]
fn network_policies_admit_only_the_platforms_own_traffic() {
    assert!(kind(&objects(&[]), "NetworkPolicy").is_empty());
    let objs = objects(&set(&format!(
        "{ALL_RESTRICTED},networkPolicy.enabled=true,networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring"
    )));
    let names: Vec<_> = kind(&objs, "NetworkPolicy")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "flynn-operator",
            "flynn-shelf",
            "flynn-postgres",
            "flynn-gitreceiver",
            "flynn-router"
        ]
    );
    // Every platform pod is selected by one.
    for p in kind(&objs, "NetworkPolicy") {
        assert_eq!(p["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    }
    // The slug store: from the receiver, apps' and builds' pods, the scrapers and the
    // test pod; on its HTTP port only.
    let shelf = &one(&objs, "NetworkPolicy", "flynn-shelf")["spec"]["ingress"];
    assert_eq!(shelf.as_array().unwrap().len(), 1);
    assert_eq!(shelf[0]["ports"], serde_json::json!([{"port": "http"}]));
    let from = shelf[0]["from"].to_string();
    assert!(
        from.contains("flynn-gitreceiver")
            && from.contains("flynn.io/app")
            && from.contains("monitoring"),
        "{from}"
    );
    // The operator takes nothing but scrapes.
    let op = one(&objs, "NetworkPolicy", "flynn-operator")["spec"]["ingress"].to_string();
    assert!(
        op.contains("monitoring") && op.contains(r#""port":"metrics""#),
        "{op}"
    );
    assert!(!op.contains("0.0.0.0/0"), "{op}");
    // Postgres: from pods in every namespace (apps sign in with their own roles), on its
    // port only, and from nothing outside the cluster.
    let pg = &one(&objs, "NetworkPolicy", "flynn-postgres")["spec"]["ingress"];
    assert_eq!(
        pg,
        &serde_json::json!([{"from": [{"namespaceSelector": {}}], "ports": [{"port": "postgres"}]}])
    );
    let names: Vec<_> = kind(
        &objects(&set(&format!(
            "{ALL_RESTRICTED},networkPolicy.enabled=true,postgres.enabled=false"
        ))),
        "NetworkPolicy",
    )
    .iter()
    .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
    .collect();
    assert!(!names.contains(&"flynn-postgres".to_string()), "{names:?}");
}

/// The env of the operator's container, as NAME → the whole entry.
fn operator_env(objs: &[Value]) -> std::collections::BTreeMap<String, Value> {
    let op = one(objs, "Deployment", "flynn-operator");
    pod_spec(op).unwrap()["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

#[test]
fn the_platform_postgres_is_one_pod_on_its_claim_and_the_operator_is_told_where() {
    let objs = objects(&[]);
    let sts = one(&objs, "StatefulSet", "flynn-postgres");
    assert_eq!(sts["spec"]["replicas"], 1);
    let spec = pod_spec(sts).unwrap();
    assert_eq!(
        spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "flynn-postgres"
    );
    assert_eq!(
        spec["containers"][0]["readinessProbe"]["exec"]["command"][0],
        "pg_isready"
    );
    let claim = one(&objs, "PersistentVolumeClaim", "flynn-postgres");
    assert_eq!(
        claim["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(
        one(&objs, "Service", "flynn-postgres")["spec"]["ports"][0]["port"],
        5432
    );
    // The operator: where it is, and the superuser's password from the Secret (never a
    // value in the Deployment).
    let env = operator_env(&objs);
    assert_eq!(
        env["FLYNN_POSTGRES_HOST"]["value"],
        "flynn-postgres.flynn-system.svc"
    );
    assert_eq!(env["FLYNN_POSTGRES_PORT"]["value"], "5432");
    assert_eq!(env["FLYNN_POSTGRES_ADMIN_USER"]["value"], "postgres");
    assert_eq!(
        env["FLYNN_POSTGRES_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "flynn-postgres-admin", "key": "password"})
    );
    assert!(
        env["FLYNN_REDIS_IMAGE"]["value"]
            .as_str()
            .unwrap()
            .contains("/flynn-redis:")
    );
    assert_eq!(env["FLYNN_RESOURCE_STORAGE_CLASS"]["value"], "");
    // The CLI's clients run from the images the platform ConfigMap names.
    let cm = &one(&objs, "ConfigMap", "flynn-platform")["data"];
    assert!(
        cm["postgresImage"]
            .as_str()
            .unwrap()
            .contains("/flynn-postgres:"),
        "{cm}"
    );
    assert!(
        cm["redisImage"].as_str().unwrap().contains("/flynn-redis:"),
        "{cm}"
    );
    // The password is made by the hook, before anything reads it.
    let job = one(&objs, "Job", "flynn-postgres-admin-secret");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    // The twin: off, there is no server, no hook, and the operator is told of none.
    let objs = objects(&set(
        "postgres.enabled=false,redis.enabled=false,resources.storageClass=flynn-local-pool",
    ));
    assert!(kind(&objs, "StatefulSet").is_empty());
    assert!(kind(&objs, "Job").is_empty());
    let env = operator_env(&objs);
    for name in [
        "FLYNN_POSTGRES_HOST",
        "FLYNN_POSTGRES_ADMIN_PASSWORD",
        "FLYNN_REDIS_IMAGE",
    ] {
        assert!(!env.contains_key(name), "{name} with postgres/redis off");
    }
    assert_eq!(
        env["FLYNN_RESOURCE_STORAGE_CLASS"]["value"],
        "flynn-local-pool"
    );
    // A platform team's own Secret: read by both, and no hook makes one.
    let objs = objects(&set("postgres.admin.existingSecret=team-pg"));
    assert!(kind(&objs, "Job").is_empty());
    assert_eq!(
        operator_env(&objs)["FLYNN_POSTGRES_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"],
        "team-pg"
    );
    let sts = one(&objs, "StatefulSet", "flynn-postgres");
    assert_eq!(
        pod_spec(sts).unwrap()["volumes"][4]["secret"]["secretName"],
        "team-pg"
    );
    // Server settings become -c arguments.
    let objs = objects(&set("postgres.parameters.max_connections=200"));
    let sts = one(&objs, "StatefulSet", "flynn-postgres");
    assert_eq!(
        pod_spec(sts).unwrap()["containers"][0]["args"],
        serde_json::json!(["-c", "max_connections=200"])
    );
}

#[test]
fn helm_test_checks_that_every_component_answers() {
    let objs = objects(&[]);
    let pod = one(&objs, "Pod", "flynn-test");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let script = pod["spec"]["containers"][0]["args"][0].as_str().unwrap();
    for check in [
        "flynn-operator-metrics.flynn-system.svc 8080 /healthz",
        "flynn-shelf.flynn-system.svc 80 /readyz",
        "flynn-operator-metrics.flynn-system.svc 8080 flynn_operator_build_info",
        "flynn-shelf.flynn-system.svc 80 flynn_shelf_build_info",
        "\"$NODE_IP\" 80 / helm-test.invalid 404",
        "flynn-gitreceiver.flynn-system.svc/2222",
        "/dev/tcp/flynn-postgres.flynn-system.svc/5432",
    ] {
        assert!(
            script.contains(check),
            "the test does not check {check}:\n{script}"
        );
    }
    assert!(kind(&objects(&set("tests.enabled=false")), "Pod").is_empty());
}

#[test]
fn combinations_that_cannot_work_are_refused_naming_the_way_out() {
    // The keys namespace is readable by every user: never a namespace with other Secrets.
    for ns in ["kube-system", "default", "flynn-system"] {
        let out = template(
            "flynn",
            "flynn-system",
            &set(&format!("gitreceiver.keysNamespace={ns}")),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "keysNamespace={ns} was accepted");
        assert!(
            err.contains(&format!("gitreceiver.keysNamespace={ns}")) && err.contains("flynn-keys"),
            "{err}"
        );
    }
    objects(&set("gitreceiver.keysNamespace=team-keys"));
    // A NetworkPolicy cannot name the node a host-network receiver comes from.
    let out = template("flynn", "flynn-system", &set("networkPolicy.enabled=true"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gitreceiver.hostNetwork=false"));
    objects(&set(
        "networkPolicy.enabled=true,gitreceiver.hostNetwork=false",
    ));
}

#[test]
fn git_remotes_name_the_port_developers_reach() {
    let git_url = |values: &str| {
        let objs = objects(&set(values));
        one(&objs, "ConfigMap", "flynn-platform")["data"]["gitURL"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        git_url("gitreceiver.host=git.example.com"),
        "ssh://git@git.example.com:2222"
    );
    assert_eq!(
        git_url(
            "gitreceiver.hostNetwork=false,gitreceiver.service.type=NodePort,gitreceiver.service.nodePort=30222"
        ),
        "ssh://git@flynn.local:30222"
    );
    assert_eq!(
        git_url(
            "gitreceiver.hostNetwork=false,gitreceiver.service.type=LoadBalancer,gitreceiver.publicPort=22"
        ),
        "ssh://git@flynn.local:22"
    );
}

/// What a cluster-wide binding hands a platform component: `(role, resource, verb)` for
/// every rule of every ClusterRole a ClusterRoleBinding of the render binds.
fn cluster_wide_grants(objs: &[Value]) -> Vec<(String, String, String)> {
    let bound: BTreeSet<&str> = kind(objs, "ClusterRoleBinding")
        .iter()
        .filter_map(|b| b["roleRef"]["name"].as_str())
        .collect();
    let mut out = Vec::new();
    for role in kind(objs, "ClusterRole") {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        if !bound.contains(name) {
            continue;
        }
        for rule in role["rules"].as_array().into_iter().flatten() {
            let strings = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            if !strings("resourceNames").is_empty() {
                continue; // limited to named objects
            }
            for r in strings("resources") {
                for v in strings("verbs") {
                    out.push((name.to_owned(), r.clone(), v));
                }
            }
        }
    }
    out
}

#[test]
fn no_component_reads_secrets_or_starts_jobs_cluster_wide() {
    let objs = objects(&[]);
    let dangerous = |g: &(String, String, String)| {
        matches!(
            (g.1.as_str(), g.2.as_str()),
            ("secrets", _)
                | ("jobs", "create")
                | ("pods", "create")
                | ("rolebindings", _)
                | ("clusterroles", _)
        ) || g.1 == "*"
            || g.2 == "*"
    };
    let found: Vec<_> = cluster_wide_grants(&objs)
        .into_iter()
        .filter(dangerous)
        .collect();
    assert!(found.is_empty(), "granted cluster-wide: {found:?}");
    // The per-namespace roles exist, and nothing in the render binds them: the operator
    // does, namespace by namespace.
    for role in ["flynn-gitreceiver-builds", "flynn-router-certificates"] {
        one(&objs, "ClusterRole", role);
        for binding in kind(&objs, "ClusterRoleBinding")
            .into_iter()
            .chain(kind(&objs, "RoleBinding"))
        {
            assert_ne!(
                binding["roleRef"]["name"],
                role,
                "{} binds {role}",
                id(binding)
            );
        }
    }
    // The twin that must fail: the same check over a role that reads Secrets, bound
    // cluster-wide (as the router's was before grants).
    let twin: Vec<Value> = serde_json::from_value(serde_json::json!([
        {"kind": "ClusterRole", "metadata": {"name": "r"},
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "r"}, "roleRef": {"name": "r"}}
    ]))
    .unwrap();
    assert_eq!(
        cluster_wide_grants(&twin)
            .into_iter()
            .filter(dangerous)
            .count(),
        2
    );
}

#[test]
fn every_rbac_rule_says_why() {
    // Each rule of each Role/ClusterRole template has a comment line of its own after the
    // rule before it (the first rule: or above the role).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/flynn/templates");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---") {
            if !(doc.contains("\nkind: ClusterRole\n") || doc.contains("\nkind: Role\n")) {
                continue;
            }
            let lines: Vec<&str> = doc.lines().collect();
            let heading = lines
                .iter()
                .take_while(|l| !l.starts_with("apiVersion"))
                .any(|l| l.trim_start().starts_with('#'));
            let mut commented = heading;
            for l in &lines {
                let t = l.trim_start();
                if t.starts_with('#') {
                    commented = true;
                } else if t.starts_with("- apiGroups:") {
                    if !commented {
                        missing.push(format!("{}: {}", path.display(), l.trim()));
                    }
                    commented = false;
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "rules without a comment saying why: {missing:#?}"
    );
}
