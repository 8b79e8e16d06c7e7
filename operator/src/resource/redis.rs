//! The Redis provider: one Redis server per Resource, in the App's namespace.
//!
//! Per Resource `<r>`, all owned by the Resource (the garbage collector removes them with
//! it, even while the operator is down):
//! - Secret `<r>-redis`: `redis.conf` with `requirepass` (the credentials Secret's
//!   password), AOF persistence (`appendonly yes`) in `/data`, and the plan's `maxmemory`;
//! - StatefulSet `<r>-redis`: one replica of `FLYNN_REDIS_IMAGE` under the "restricted" Pod
//!   Security profile, its `/data` on a PersistentVolumeClaim of
//!   `FLYNN_RESOURCE_STORAGE_CLASS`. The claim is the StatefulSet's, and its
//!   `persistentVolumeClaimRetentionPolicy.whenDeleted` follows `spec.deletionPolicy`:
//!   `Delete` removes the data with the Resource, `Retain` keeps the claim;
//! - Service `<r>-redis` on 6379;
//! - NetworkPolicy `<r>-redis`: only the App's pods (label `flynn.io/app=<app>`: its
//!   processes and `flynn run`; not its build Jobs) may connect.

use std::collections::BTreeMap;

use flynn_crds::labels;
use flynn_crds::resource::{DeletionPolicy, Provider, Resource};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::provider::{Connection, Plan, ProviderError, Provisioned, Request, ResourceProvider};
use crate::FIELD_MANAGER;

/// The label that ties a Redis's objects to its Resource.
pub const RESOURCE_LABEL: &str = "flynn.io/resource";
const PORT: u16 = 6379;
/// The uid and gid Redis runs as (the image's own user, `nobody`; the volume is given to
/// its group).
const RUN_AS: i64 = 65534;

/// How the operator runs Redis (`FLYNN_REDIS_IMAGE`, `FLYNN_RESOURCE_STORAGE_CLASS`).
#[derive(Clone, Debug, Default)]
pub struct RedisSettings {
    /// Unset: the provider is disabled.
    pub image: Option<String>,
    /// Unset: the cluster's default StorageClass.
    pub storage_class: Option<String>,
}

pub const PLANS: &[Plan] = &[
    Plan {
        name: "hobby",
        summary: "64 MiB of memory, 1 GiB of disk",
        connection_limit: 0,
        memory_mib: 64,
        storage_gib: 1,
    },
    Plan {
        name: "standard",
        summary: "512 MiB of memory, 8 GiB of disk",
        connection_limit: 0,
        memory_mib: 512,
        storage_gib: 8,
    },
];

#[derive(Clone, Debug)]
pub struct Redis {
    pub settings: RedisSettings,
}

/// The name of every object of the Redis of Resource `resource`.
pub fn object_name(resource: &str) -> String {
    format!("{resource}-redis")
}

/// `redis.conf` for `plan` with `password`.
pub fn config(plan: &Plan, password: &str) -> String {
    format!(
        "bind 0.0.0.0 ::\nport {PORT}\nrequirepass {password}\nappendonly yes\ndir /data\n\
         maxmemory {}mb\nmaxmemory-policy noeviction\n",
        plan.memory_mib
    )
}

fn owner(resource: &Resource) -> OwnerReference {
    OwnerReference {
        api_version: "flynn.io/v1alpha1".into(),
        kind: "Resource".into(),
        name: resource.name_any(),
        uid: resource.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn selector(resource: &Resource) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RESOURCE_LABEL.to_owned(), resource.name_any()),
        ("app.kubernetes.io/component".to_owned(), "redis".to_owned()),
    ])
}

fn meta(resource: &Resource) -> ObjectMeta {
    let mut l = selector(resource);
    l.insert(labels::PART_OF.into(), "flynn".into());
    ObjectMeta {
        name: Some(object_name(&resource.name_any())),
        namespace: resource.namespace(),
        labels: Some(l),
        owner_references: Some(vec![owner(resource)]),
        ..Default::default()
    }
}

/// The objects of a Redis (pure): config Secret, StatefulSet, Service, NetworkPolicy.
pub fn build(
    settings: &RedisSettings,
    resource: &Resource,
    plan: &Plan,
    password: &str,
) -> (Secret, StatefulSet, Service, NetworkPolicy) {
    let conf = config(plan, password);
    let secret = Secret {
        metadata: meta(resource),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([("redis.conf".to_owned(), conf.clone())])),
        ..Default::default()
    };
    // A new password or plan restarts the server: the pod template changes with the config.
    let digest = ring::digest::digest(&ring::digest::SHA256, conf.as_bytes());
    let checksum: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = object_name(&resource.name_any());
    let memory = Quantity(format!("{}Mi", plan.memory_mib + plan.memory_mib / 2 + 32));
    let container = Container {
        name: "redis".into(),
        image: settings.image.clone(),
        // The image's entrypoint (images/redis) runs redis-server on
        // /etc/redis/redis.conf, adding what a pod needs (foreground, /data, the port).
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: PORT.into(),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(PORT.into()),
                ..Default::default()
            }),
            period_seconds: Some(2),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".into())),
                ("memory".to_owned(), memory.clone()),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), memory)])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/redis".into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let policy = match resource.spec.deletion_policy {
        DeletionPolicy::Delete => "Delete",
        DeletionPolicy::Retain => "Retain",
    };
    let statefulset = StatefulSet {
        metadata: meta(resource),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector(resource)),
                ..Default::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(policy.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector(resource)),
                    annotations: Some(BTreeMap::from([(
                        "flynn.io/config-checksum".to_owned(),
                        checksum,
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(name.clone()),
                            default_mode: Some(0o440),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(selector(resource)),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: settings.storage_class.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_owned(),
                            Quantity(format!("{}Gi", plan.storage_gib)),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(resource),
        spec: Some(ServiceSpec {
            selector: Some(selector(resource)),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: PORT.into(),
                target_port: Some(IntOrString::Int(PORT.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let netpol = NetworkPolicy {
        metadata: meta(resource),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(resource)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            labels::APP.to_owned(),
                            resource.spec.app.clone(),
                        )])),
                        // Build Jobs carry the App's label too; they have no business here.
                        match_expressions: Some(vec![LabelSelectorRequirement {
                            key: labels::BUILD.into(),
                            operator: "DoesNotExist".into(),
                            values: None,
                        }]),
                    }),
                    ..Default::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(PORT.into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            egress: None,
        }),
    };
    (secret, statefulset, service, netpol)
}

async fn apply<K>(client: &kube::Client, obj: &K) -> Result<K, ProviderError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(
        client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    let mut body = serde_json::to_value(obj).unwrap_or_default();
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(|source| ProviderError::Kube {
        action: format!("applying {} {name}", K::kind(&())),
        source,
    })
}

impl ResourceProvider for Redis {
    fn kind(&self) -> Provider {
        Provider::Redis
    }

    fn disabled(&self) -> Option<String> {
        self.settings.image.is_none().then(|| {
            "this platform runs no Redis image: the platform team enables it with the chart \
             value redis.enabled=true (the operator then gets FLYNN_REDIS_IMAGE)"
                .to_owned()
        })
    }

    fn plans(&self) -> &[Plan] {
        PLANS
    }

    fn connection(&self, resource: &Resource) -> Connection {
        let name = object_name(&resource.name_any());
        Connection {
            host: format!("{name}.{}.svc", resource.namespace().unwrap_or_default()),
            port: PORT,
            username: "default".into(),
            database: None,
            ids: [
                ("statefulSet".to_owned(), name.clone()),
                ("service".to_owned(), name.clone()),
                ("networkPolicy".to_owned(), name.clone()),
                ("persistentVolumeClaim".to_owned(), format!("data-{name}-0")),
            ]
            .into(),
        }
    }

    fn url(&self, c: &Connection, password: &str) -> String {
        format!("redis://{}:{password}@{}:{}", c.username, c.host, c.port)
    }

    fn provision<'a>(
        &'a self,
        request: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Provisioned, ProviderError>> {
        async move {
            let (secret, sts, svc, netpol) = build(
                &self.settings,
                request.resource,
                request.plan,
                request.password,
            );
            // The policy first: the server never listens unguarded.
            apply(request.client, &netpol).await?;
            apply(request.client, &secret).await?;
            apply(request.client, &svc).await?;
            let sts = apply(request.client, &sts).await?;
            let ready = sts
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            Ok(if ready >= 1 {
                Provisioned::Ready
            } else {
                Provisioned::Waiting(format!(
                    "waiting for Redis pod {}-0 to be ready",
                    sts.name_any()
                ))
            })
        }
        .boxed()
    }

    fn deprovision<'a>(
        &'a self,
        _request: &'a Request<'a>,
        _policy: DeletionPolicy,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        // Everything is owned by the Resource: the garbage collector removes it once the
        // Resource is gone, and the claim follows the StatefulSet's retention policy
        // (kept in step with spec.deletionPolicy on every reconcile).
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flynn_crds::resource::ResourceSpec;

    fn resource(policy: DeletionPolicy) -> Resource {
        let mut r = Resource::new(
            "cache",
            ResourceSpec {
                app: "shop".into(),
                provider: Provider::Redis,
                plan: None,
                env: None,
                deletion_policy: policy,
            },
        );
        r.metadata.namespace = Some("team".into());
        r.metadata.uid = Some("u-1".into());
        r
    }

    #[test]
    fn the_config_has_the_password_persistence_and_the_plans_memory() {
        let c = config(&PLANS[0], "s3cret");
        for line in [
            "requirepass s3cret",
            "appendonly yes",
            "dir /data",
            "maxmemory 64mb",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing from {c}");
        }
    }

    #[test]
    fn only_the_apps_pods_and_not_its_builds_may_connect() {
        let settings = RedisSettings {
            image: Some("redis:x".into()),
            storage_class: Some("fast".into()),
        };
        let (_, sts, _, netpol) =
            build(&settings, &resource(DeletionPolicy::Retain), &PLANS[0], "p");
        let spec = netpol.spec.unwrap();
        let peer = spec.ingress.unwrap()[0].from.clone().unwrap()[0].clone();
        let sel = peer.pod_selector.unwrap();
        assert_eq!(sel.match_labels.unwrap()[labels::APP], "shop");
        assert_eq!(sel.match_expressions.unwrap()[0].key, labels::BUILD);
        assert!(
            peer.namespace_selector.is_none(),
            "other namespaces stay out"
        );
        let s = sts.spec.unwrap();
        assert_eq!(
            s.persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Retain")
        );
        assert_eq!(
            s.volume_claim_templates.unwrap()[0]
                .spec
                .clone()
                .unwrap()
                .storage_class_name
                .as_deref(),
            Some("fast")
        );
        let (_, sts, _, _) = build(&settings, &resource(DeletionPolicy::Delete), &PLANS[0], "p");
        assert_eq!(
            sts.spec
                .unwrap()
                .persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
    }
}
