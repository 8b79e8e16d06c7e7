//! Smoke test of the local cluster (`e2e/cluster/up`): it is a real Kubernetes
//! with a real node, not just an API server. Every other test builds on this.

use std::time::Duration;

use flynn_e2e::{SMOKE_IMAGE, SMOKE_PAGE as PAGE, TestNamespace, ensure_test_images};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn wait<K, C>(api: &Api<K>, name: &str, what: &str, secs: u64, cond: C) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: Condition<K>,
{
    tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, cond),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {name} to {what}"))
    .unwrap_or_else(|e| panic!("watching {name}: {e}"))
    .unwrap_or_else(|| panic!("{name} was deleted while waiting for it to {what}"))
}

fn deployment_available() -> impl Condition<Deployment> {
    |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Available" && c.status == "True")
            })
    }
}

/// A plain HTTP/1.0 GET over a TCP stream, so the test needs no HTTP client.
async fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: smoke\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

#[tokio::test]
async fn node_runs_pods_services_jobs_dns_and_gc() {
    ensure_test_images();
    let ns = TestNamespace::create("smoke").await;
    let client = ns.client();

    // The node is registered and Ready.
    let nodes: Api<Node> = Api::all(client.clone());
    let node_list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(node_list.items.len(), 1, "expected exactly one node");
    let ready = node_list.items[0]
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(ready, "node {} is not Ready", node_list.items[0].name_any());

    // A Deployment of a locally built image becomes Available behind a Service.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "smoke-http"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "smoke-http"}},
            "template": {
                "metadata": {"labels": {"app": "smoke-http"}},
                "spec": {"containers": [{
                    "name": "http",
                    "image": SMOKE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
                }]}
            }
        }
    }))
    .unwrap();
    deploys
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "smoke-http"},
        "spec": {"selector": {"app": "smoke-http"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    wait(
        &deploys,
        "smoke-http",
        "become Available",
        120,
        deployment_available(),
    )
    .await;

    // Pods got addresses from the pod network.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    for p in pods
        .list(&ListParams::default().labels("app=smoke-http"))
        .await
        .unwrap()
    {
        let ip = p.status.and_then(|s| s.pod_ip).unwrap_or_default();
        assert!(
            ip.starts_with("10.244."),
            "pod IP {ip:?} is not from the pod CIDR"
        );
    }

    // From the host, through the Service's ClusterIP (kube-proxy). kube-proxy
    // programs new endpoints shortly after the Deployment reports them, so a
    // refused connection is retried for a while, as upstream's e2e tests do.
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("service has a ClusterIP");
    let addr = format!("{cluster_ip}:80");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        match http_get(&addr).await {
            Ok(body) => break body,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("host → {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("host → {addr} still failing after 30s: {e}"),
        }
    };
    assert!(body.contains(PAGE), "host → ClusterIP got: {body}");

    // From another Pod, by DNS name and by ClusterIP; a Job that runs to completion.
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns.name());
    let script = format!(
        "set -e; for host in smoke-http smoke-http.{ns}.svc.cluster.local {cluster_ip}; do \
           exec 3<>/dev/tcp/$host/80; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; \
           echo \"via $host: $(tail -n 1 <&3)\"; exec 3<&-; done",
        ns = ns.name()
    );
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "smoke-client"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "client",
                    "image": SMOKE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["bash", "-c", script]
                }]
            }}
        }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let done = wait(&jobs, "smoke-client", "finish", 120, |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .is_some_and(|s| s.succeeded.unwrap_or(0) > 0 || s.failed.unwrap_or(0) > 0)
    })
    .await;
    let pod = pods
        .list(&ListParams::default().labels("job-name=smoke-client"))
        .await
        .unwrap()
        .items
        .pop()
        .expect("the Job made a Pod");
    let logs = pods
        .logs(&pod.name_any(), &LogParams::default())
        .await
        .unwrap();
    assert_eq!(
        done.status.and_then(|s| s.succeeded),
        Some(1),
        "the client Job failed; its log:\n{logs}"
    );
    for host in [
        "via smoke-http:",
        "svc.cluster.local:",
        &format!("via {cluster_ip}:"),
    ] {
        let line = logs.lines().find(|l| l.contains(host));
        assert!(
            line.is_some_and(|l| l.contains(PAGE)),
            "no answer {host} in the Job's log:\n{logs}"
        );
    }

    // Garbage collection: deleting an owner removes what it owns.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let owned: ConfigMap = serde_json::from_value(json!({"metadata": {
        "name": "owned",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap()}]
    }}))
    .unwrap();
    let owned = cms.create(&PostParams::default(), &owned).await.unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(
            cms.clone(),
            "owned",
            conditions::is_deleted(&owned.uid().unwrap_or_default()),
        ),
    )
    .await
    .expect("the owned ConfigMap was not garbage-collected within 60s")
    .unwrap();
}
