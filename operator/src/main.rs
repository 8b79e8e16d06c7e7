//! `flynn-operator`: the binary. Flags (or environment) → settings; leader election;
//! the controllers; health and metrics; SIGTERM drains and hands the Lease back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use flynn_operator::leader::{self, LeaseConfig};
use flynn_operator::metrics::{ApiCallLayer, Metrics};
use flynn_operator::server::{self, Health};
use flynn_operator::{Settings, run};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Reconciles flynn.io Apps, Releases, Formations and Routes into workloads."
)]
struct Args {
    /// Domain of default Routes: app `shop` gets `shop.<domain>`.
    #[arg(long, env = "FLYNN_DEFAULT_DOMAIN", default_value = "flynn.local")]
    default_domain: String,
    /// Image whose entrypoint is the slugrunner; runs slug artifacts.
    #[arg(
        long,
        env = "FLYNN_SLUGRUNNER_IMAGE",
        default_value = "localhost/flynn-slugrunner:dev"
    )]
    slugrunner_image: String,
    /// Pull policy of the slugrunner image.
    #[arg(
        long,
        env = "FLYNN_SLUGRUNNER_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    slugrunner_pull_policy: String,
    /// Releases kept per App.
    #[arg(long, env = "FLYNN_RELEASE_HISTORY", default_value_t = 10)]
    release_history: usize,
    /// Reconciles run at once per controller.
    #[arg(long, env = "FLYNN_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Only reconcile this namespace (default: all).
    #[arg(long, env = "FLYNN_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Skip namespaces carrying this label (e.g. `flynn.io/test`: tests run their own operator).
    #[arg(long, env = "FLYNN_EXCLUDE_NAMESPACE_LABEL")]
    exclude_namespace_label: Option<String>,
    /// Seconds a pod behind a draining Route (`drainBackends`) keeps running, with no
    /// signal, when it is stopped: the router stops sending it requests first. 0: off.
    #[arg(long, env = "FLYNN_DRAIN_SECONDS", default_value_t = 5)]
    drain_seconds: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FLYNN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Run with a Lease so several replicas can run with one active.
    #[arg(long, env = "FLYNN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease (default: this pod's namespace, else flynn-system).
    #[arg(long, env = "POD_NAMESPACE", default_value = "flynn-system")]
    lease_namespace: String,
    /// A ConfigMap in the Lease's namespace that owns the Lease (the chart's
    /// `flynn-platform`), so `helm uninstall` leaves no Lease behind.
    #[arg(long, env = "FLYNN_LEASE_OWNER_CONFIGMAP")]
    lease_owner_configmap: Option<String>,
    #[command(flatten)]
    log: flynn_telemetry::LogArgs,
    /// CLUSTERROLE=NAMESPACE/SERVICEACCOUNT: the git receiver's build role, bound in each
    /// namespace that holds an App (and nowhere else).
    #[arg(long, env = "FLYNN_BUILDS_GRANT")]
    builds_grant: Option<flynn_operator::grants::Grant>,
    /// CLUSTERROLE=NAMESPACE/SERVICEACCOUNT: the router's certificate-reading role, bound
    /// in each namespace holding a Route that names a TLS Secret.
    #[arg(long, env = "FLYNN_CERTIFICATES_GRANT")]
    certificates_grant: Option<flynn_operator::grants::Grant>,
    /// CLUSTERROLE=NAMESPACE/SERVICEACCOUNT: the operator's own role for Resources
    /// (Secrets, StatefulSets, NetworkPolicies), bound in each namespace that holds an App.
    #[arg(long, env = "FLYNN_RESOURCES_GRANT")]
    resources_grant: Option<flynn_operator::grants::Grant>,
    /// FIRST-LAST: the ports TCP Routes may use (give the router the same range).
    #[arg(long, env = "FLYNN_TCP_PORT_RANGE", default_value_t = flynn_crds::ownership::PortRange::DEFAULT)]
    tcp_port_range: flynn_crds::ownership::PortRange,
    /// Let Routes' wildcards cover the default domain (`*.<default-domain>`), whose names
    /// belong to Apps (give the router the same setting).
    #[arg(long, env = "FLYNN_ALLOW_DEFAULT_DOMAIN_WILDCARD")]
    allow_default_domain_wildcard: bool,
    /// Host of the platform's Postgres service; unset disables `postgres` Resources.
    #[arg(long, env = "FLYNN_POSTGRES_HOST")]
    postgres_host: Option<String>,
    #[arg(long, env = "FLYNN_POSTGRES_PORT", default_value_t = 5432)]
    postgres_port: u16,
    /// A superuser of that service: it makes and drops each Resource's role and database.
    #[arg(long, env = "FLYNN_POSTGRES_ADMIN_USER", default_value = "postgres")]
    postgres_admin_user: String,
    #[arg(
        long,
        env = "FLYNN_POSTGRES_ADMIN_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    postgres_admin_password: String,
    /// The image `redis` Resources run (Debian's redis-server); unset disables them.
    #[arg(long, env = "FLYNN_REDIS_IMAGE")]
    redis_image: Option<String>,
    /// StorageClass of Resources' volumes; empty: the cluster's default.
    #[arg(long, env = "FLYNN_RESOURCE_STORAGE_CLASS")]
    resource_storage_class: Option<String>,
    /// How long the data of a Resource deleted with deletionPolicy Retain is kept (7d, 12h).
    #[arg(long, env = "FLYNN_RESOURCE_RETENTION", default_value = "7d", value_parser = flynn_operator::settings::parse_duration)]
    resource_retention: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.log_format.init("info,kube=warn");

    let metrics = Arc::new(Metrics::default());
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes API configuration ({e}): run in a pod with a ServiceAccount, or set KUBECONFIG")
    })?;
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&ApiCallLayer(metrics.api_requests.clone()))
        .build();
    let settings = Settings {
        default_domain: args.default_domain,
        slugrunner_image: args.slugrunner_image,
        slugrunner_pull_policy: args.slugrunner_pull_policy,
        release_history: args.release_history,
        concurrency: args.concurrency,
        namespace: args.namespace,
        exclude_namespace_label: args.exclude_namespace_label,
        drain_delay: std::time::Duration::from_secs(args.drain_seconds),
        grants: flynn_operator::grants::Grants {
            builds: args.builds_grant,
            certificates: args.certificates_grant,
            resources: args.resources_grant,
        },
        tcp_ports: args.tcp_port_range,
        allow_default_domain_wildcard: args.allow_default_domain_wildcard,
        postgres: flynn_operator::resource::postgres::PostgresSettings {
            host: args.postgres_host.filter(|h| !h.is_empty()),
            port: args.postgres_port,
            admin_user: args.postgres_admin_user,
            admin_password: args.postgres_admin_password,
        },
        redis: flynn_operator::resource::redis::RedisSettings {
            image: args.redis_image.filter(|i| !i.is_empty()),
            storage_class: args.resource_storage_class.filter(|c| !c.is_empty()),
        },
        resource_retention: args.resource_retention,
        ..Settings::default()
    };
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();

    let server = tokio::spawn(server::serve(
        args.metrics_addr,
        metrics.clone(),
        health.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutting down: finishing in-flight reconciles");
            shutdown.cancel();
        }
    });

    let leadership = if args.leader_election {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("flynn-operator-{}", std::process::id()));
        // A standby replica is ready: it serves /metrics and waits for the Lease.
        health
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut lease = LeaseConfig::new(&args.lease_namespace, "flynn-operator", &identity);
        if let Some(name) = &args.lease_owner_configmap {
            match lease_owner(&client, &args.lease_namespace, name).await {
                Ok(owner) => lease = lease.owned_by(owner),
                // Leading matters more than tidiness on uninstall: go on without an owner.
                Err(e) => tracing::warn!(
                    error = %e,
                    "the leader Lease will have no owner (ConfigMap {}/{name}): it stays after an uninstall",
                    args.lease_namespace
                ),
            }
        }
        let leadership = tokio::select! {
            l = leader::acquire(client.clone(), lease) => l,
            () = shutdown.cancelled() => return Ok(()),
        };
        metrics.leader.set(1);
        let lost = leadership.lost_signal();
        let token = shutdown.clone();
        tokio::spawn(async move {
            lost.await;
            tracing::error!("lost the leader lease: stopping so another replica takes over");
            token.cancel();
        });
        Some(leadership)
    } else {
        None
    };

    run(client, settings, metrics.clone(), health, shutdown.clone()).await?;
    metrics.leader.set(0);
    if let Some(l) = leadership {
        l.release().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// An owner reference to the ConfigMap `namespace/name`.
async fn lease_owner(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<OwnerReference, kube::Error> {
    let cm = kube::Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    Ok(OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: name.to_owned(),
        uid: cm.metadata.uid.unwrap_or_default(),
        ..Default::default()
    })
}
