//! Per-namespace access for the platform's other components, granted only where there is
//! work for them.
//!
//! The git receiver creates build Jobs (and their config Secrets) and the router reads TLS
//! Secrets. Granting either cluster-wide would let a compromised receiver start a Job in
//! `kube-system` or a compromised router read every Secret in the cluster. Instead the chart
//! gives each a ClusterRole that is bound to nothing, and the operator binds it — with a
//! RoleBinding in one namespace — where that component has work:
//!
//! - **builds**: the receiver's role, in every namespace that holds an App;
//! - **certificates**: the router's role, in every namespace holding a Route that names a
//!   TLS Secret;
//! - **resources**: the operator's own role for Resources (their credentials Secrets, the
//!   config snapshots of the Releases they make, their Redis StatefulSets and
//!   NetworkPolicies), in every namespace that holds an App: the operator gets no Secret
//!   access cluster-wide either.
//!
//! The operator itself needs no more than to `bind` those two roles (Kubernetes refuses a
//! RoleBinding to a role whose permissions the creator lacks, unless it may `bind` it), and
//! `get`/`patch`/`delete` on RoleBindings of those two names: it cannot read a Secret or
//! start a Job itself.
//!
//! Each RoleBinding is owned by one of the objects that needs it (an App; a TLS Route), so
//! the garbage collector removes it when the last of them goes, even while the operator is
//! down. When that owner goes and others remain, the operator re-points the binding at
//! another one within one watch round trip (a build started in that instant is refused and
//! retried by the receiver).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use flynn_crds::labels;
use futures::channel::mpsc::UnboundedReceiver;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, Polled, RouteView};
use crate::context::Scope;
use crate::error::{KubeResultExt, Result, is_not_found};
use crate::{Context, FIELD_MANAGER};

/// A ClusterRole and the ServiceAccount the operator binds it to, namespace by namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The ClusterRole (also the RoleBinding's name).
    pub role: String,
    pub subject_namespace: String,
    pub subject_name: String,
}

/// A `--builds-grant`/`--certificates-grant` value that is not `ROLE=NAMESPACE/SERVICEACCOUNT`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a grant: write CLUSTERROLE=NAMESPACE/SERVICEACCOUNT, e.g. flynn-gitreceiver-builds=flynn-system/flynn-gitreceiver"
)]
pub struct BadGrant(String);

impl FromStr for Grant {
    type Err = BadGrant;

    fn from_str(s: &str) -> std::result::Result<Self, BadGrant> {
        let bad = || BadGrant(s.to_owned());
        let (role, subject) = s.split_once('=').ok_or_else(bad)?;
        let (ns, sa) = subject.split_once('/').ok_or_else(bad)?;
        // A namespace name (RFC 1123 label); the API server checks the rest when it binds.
        let label = |v: &str| {
            (1..=63).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !v.starts_with('-')
                && !v.ends_with('-')
        };
        if role.is_empty() || role.contains('/') || !label(ns) || sa.is_empty() || sa.contains('/')
        {
            return Err(bad());
        }
        Ok(Self {
            role: role.to_owned(),
            subject_namespace: ns.to_owned(),
            subject_name: sa.to_owned(),
        })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}/{}",
            self.role, self.subject_namespace, self.subject_name
        )
    }
}

/// What the operator binds where (nothing, when run outside a chart, e.g. by the tests).
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// The git receiver's build role, bound where Apps are.
    pub builds: Option<Grant>,
    /// The router's certificate role, bound where Routes name a TLS Secret.
    pub certificates: Option<Grant>,
    /// The operator's own role for Resources, bound where Apps are.
    pub resources: Option<Grant>,
}

impl Grants {
    fn each(&self) -> impl Iterator<Item = (Need, &Grant)> {
        [
            (Need::Apps, self.builds.as_ref()),
            (Need::CertificateRoutes, self.certificates.as_ref()),
            (Need::AppsForResources, self.resources.as_ref()),
        ]
        .into_iter()
        .filter_map(|(need, grant)| grant.map(|g| (need, g)))
    }

    pub fn is_empty(&self) -> bool {
        self.builds.is_none() && self.certificates.is_none() && self.resources.is_none()
    }
}

/// What makes a namespace need a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Need {
    Apps,
    CertificateRoutes,
    /// As `Apps`, for a second role (one key per grant in what the loop remembers).
    AppsForResources,
}

/// The object a RoleBinding is owned by.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
}

/// The RoleBinding granting `grant` in `namespace`, owned by `owner`.
fn binding(grant: &Grant, namespace: &str, owner: &Owner) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(grant.role.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [(
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_FLYNN.to_owned(),
                )]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: owner.api_version.clone(),
                kind: owner.kind.clone(),
                name: owner.name.clone(),
                uid: owner.uid.clone(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: grant.role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: grant.subject_name.clone(),
            namespace: Some(grant.subject_namespace.clone()),
            ..Subject::default()
        }]),
    }
}

/// The first (by name, so every pass agrees) of `cache`'s objects in `namespace` that
/// `needs` accepts.
fn first_in<P: Polled>(
    cache: &Cache<P>,
    namespace: &str,
    needs: impl Fn(&P) -> bool,
) -> Option<Owner> {
    cache
        .in_namespace(namespace)
        .into_iter()
        .find(|obj| obj.meta().deletion_timestamp.is_none() && needs(obj.as_ref()))
        .map(|obj| {
            let meta = kube::Resource::meta(&obj.object()).clone();
            Owner {
                api_version: <P as kube::Resource>::api_version(&()).into_owned(),
                kind: <P as kube::Resource>::kind(&()).into_owned(),
                name: meta.name.unwrap_or_default(),
                uid: meta.uid.unwrap_or_default(),
            }
        })
}

/// Whether a Route needs the router to read a Secret in its namespace.
fn names_a_certificate(r: &RouteView) -> bool {
    r.spec
        .http
        .as_ref()
        .is_some_and(|h| h.tls_secret_name.is_some())
}

/// What the loop last wrote per (need, namespace): the owner, or `None` once removed.
type Written = HashMap<(Need, String), Option<Owner>>;

/// Makes `namespace`'s RoleBindings match what it holds.
#[tracing::instrument(skip(ctx, written), level = "debug")]
async fn reconcile(ctx: &Context, written: &mut Written, namespace: &str) -> Result<()> {
    let in_scope = ctx.scope(Some(namespace)) == Scope::In;
    for (need, grant) in ctx.settings.grants.each() {
        let owner = if !in_scope {
            None
        } else {
            match need {
                Need::Apps | Need::AppsForResources => {
                    first_in(&ctx.caches.apps, namespace, |_| true)
                }
                Need::CertificateRoutes => {
                    first_in(&ctx.caches.routes, namespace, names_a_certificate)
                }
            }
        };
        let key = (need, namespace.to_owned());
        if written.get(&key) == Some(&owner) {
            continue;
        }
        let api: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), namespace);
        match &owner {
            Some(o) => {
                let rb = Patch::Apply(binding(grant, namespace, o));
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let apply = || api.patch(&grant.role, &params, &rb);
                match apply().await {
                    // A binding of this name made by someone else, bound to another role:
                    // its roleRef cannot change, so it is replaced (otherwise every grant
                    // here would fail for good, and its binding would stand in ours' name).
                    Err(kube::Error::Api(s)) if s.code == 422 => {
                        tracing::warn!(namespace, role = %grant.role, message = %s.message, "replacing a RoleBinding of the grant's name that binds another role");
                        match api.delete(&grant.role, &DeleteParams::default()).await {
                            Ok(_) => {}
                            Err(e) if is_not_found(&e) => {}
                            Err(e) => {
                                return Err(e).context(|| {
                                    format!("replacing {} in namespace {namespace}", grant.role)
                                });
                            }
                        }
                        apply().await
                    }
                    other => other,
                }
                .context(|| format!("granting {} in namespace {namespace}", grant.role))?;
                tracing::info!(namespace, role = %grant.role, owner = %o.name, "granted");
            }
            None => match api.delete(&grant.role, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(namespace, role = %grant.role, "grant withdrawn"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(e).context(|| {
                        format!("withdrawing {} in namespace {namespace}", grant.role)
                    });
                }
            },
        }
        written.insert(key, owner);
    }
    Ok(())
}

/// Keeps the grants of every namespace named on `changed` (the namespaces of changed Apps
/// and Routes) up to date until `shutdown`. Starts with a pass over every namespace that
/// holds an App or a Route once the caches are synced.
pub async fn run(
    ctx: Arc<Context>,
    mut changed: UnboundedReceiver<String>,
    shutdown: CancellationToken,
) {
    if ctx.settings.grants.is_empty() {
        // Drain, so senders never queue without bound.
        while changed.next().await.is_some() {}
        return;
    }
    ctx.caches.wait_synced().await;
    let mut pending: BTreeSet<String> = ctx
        .caches
        .apps
        .namespaces()
        .into_iter()
        .chain(ctx.caches.routes.namespaces())
        .collect();
    let mut written = Written::new();
    let mut resync = tokio::time::interval(ctx.settings.grants_resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    let mut failures: HashMap<String, u32> = HashMap::new();
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut failed: BTreeSet<String> = BTreeSet::new();
    loop {
        // Everything queued meanwhile is handled in the same pass.
        while let Some(Some(ns)) = changed.next().now_or_never() {
            pending.insert(ns);
        }
        for ns in std::mem::take(&mut pending) {
            match reconcile(&ctx, &mut written, &ns).await {
                Ok(()) => {
                    failures.remove(&ns);
                }
                Err(e) => {
                    ctx.metrics.error("grants", e.metric_label());
                    let n = failures.entry(ns.clone()).or_insert(0);
                    *n = n.saturating_add(1);
                    let wait = ctx
                        .settings
                        .error_backoff
                        .saturating_mul(1 << (*n - 1).min(5))
                        .min(Duration::from_secs(30));
                    tracing::warn!(namespace = %ns, error = %e, retry_in = ?wait, "granting access failed");
                    let at = tokio::time::Instant::now() + wait;
                    retry_at = Some(retry_at.map_or(at, |r| r.min(at)));
                    failed.insert(ns);
                }
            }
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            next = changed.next() => match next {
                Some(ns) => { pending.insert(ns); }
                None => return,
            },
            () = retry => {
                retry_at = None;
                pending.append(&mut failed);
            }
            // Write every grant again: the loop only knows what it wrote, and a binding
            // deleted or edited by someone else would otherwise stay so until its owner
            // changes.
            _ = resync.tick() => {
                pending.extend(written.keys().map(|(_, ns)| ns.clone()));
                written.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_reads_role_namespace_and_service_account() {
        let g: Grant = "flynn-gitreceiver-builds=flynn-system/flynn-gitreceiver"
            .parse()
            .unwrap();
        assert_eq!(g.role, "flynn-gitreceiver-builds");
        assert_eq!(g.subject_namespace, "flynn-system");
        assert_eq!(g.subject_name, "flynn-gitreceiver");
        assert_eq!(
            g.to_string(),
            "flynn-gitreceiver-builds=flynn-system/flynn-gitreceiver"
        );
    }

    #[test]
    fn a_malformed_grant_says_how_to_write_one() {
        for bad in [
            "",
            "role",
            "role=sa",
            "=ns/sa",
            "role=ns/",
            "role=Bad_NS/sa",
            "role=ns/sa/extra",
        ] {
            let e = bad.parse::<Grant>().unwrap_err().to_string();
            assert!(
                e.contains("CLUSTERROLE=NAMESPACE/SERVICEACCOUNT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_binding_names_the_role_the_subject_and_one_owner() {
        let g: Grant = "r=flynn-system/sa".parse().unwrap();
        let owner = Owner {
            api_version: "flynn.io/v1alpha1".into(),
            kind: "App".into(),
            name: "shop".into(),
            uid: "u1".into(),
        };
        let rb = binding(&g, "team-a", &owner);
        assert_eq!(rb.metadata.name.as_deref(), Some("r"));
        assert_eq!(rb.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(rb.role_ref.kind, "ClusterRole");
        assert_eq!(rb.role_ref.name, "r");
        let s = &rb.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", "sa", Some("flynn-system"))
        );
        let o = &rb.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            ("App", "shop", "u1")
        );
        assert_eq!(o.api_version, "flynn.io/v1alpha1");
        // Not the controller and not blocking: the binding must not hold up deleting an App.
        assert_eq!(o.controller, None);
        assert_eq!(o.block_owner_deletion, None);
    }
}
