//! What the caches hold of each kind: only the fields the reconcilers read, typed.
//!
//! The three kinds a controller polls (App, Formation, Route) are read almost whole by
//! their reconcilers (spec and status go into every decision), so their views keep spec
//! and status, with the metadata nobody reads dropped (labels, annotations, managed
//! fields, finalizers), the process maps as exact-size lists, and a store key without
//! uid or resourceVersion; a reconcile takes the object back whole ([`Polled::object`]). The three kinds only read (Releases, Deployments,
//! Services) have views of their own, a fraction of the k8s-openapi structs' size: a
//! `Deployment` is 2.4 KB inline before its first string, most of it the pod template
//! the operator wrote itself and never reads back.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use flynn_crds::{
    App, AppSpec, AppStatus, Artifact, Formation, FormationSpec, FormationStatus, ProcessSpec,
    ProcessStatus, Release, ReleaseSpec, Route, RouteSpec, RouteStatus, labels,
};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;
use kube::runtime::reflector::Lookup;
use serde::de::DeserializeOwned;

use crate::rollout::DeploymentState;

/// Annotation holding a hash of what the operator last applied to a child, so an
/// unchanged child costs no API call.
pub const APPLIED_HASH: &str = "flynn.io/applied-hash";

/// A kind as the caches hold it, made from the object a watch delivers or a write
/// answers with.
pub trait Projection:
    Lookup<DynamicType = ()> + Clone + fmt::Debug + Send + Sync + 'static
{
    /// The kind watched and written.
    type Kind: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + fmt::Debug
        + Send
        + Sync
        + 'static;

    /// Keeps what the reconcilers read of `obj`.
    fn project(obj: Self::Kind) -> Self;

    /// The App the object belongs to: what [`super::Cache::of_app`] selects on.
    fn app(&self) -> Option<&str>;

    /// The resourceVersion as etcd's revision (see [`super::overlay`]).
    fn revision(&self) -> Option<u64>;

    /// Whether [`super::Cache::of_app`] finds these by App. Not for the kinds named after
    /// their App (App, Formation): their name is the key, and an index entry per object
    /// (two strings, a list and a hash slot) would only cost memory.
    const BY_APP: bool = true;

    /// What the object contends for across namespaces (a Route's host or port), for
    /// [`super::Cache::claiming`].
    fn claim(&self) -> Option<String> {
        None
    }
}

/// The metadata the reconcilers read of an App, Formation or Route: identity, age (Route
/// seniority), generation, deletion and owners. Labels, annotations and managed fields
/// (often the biggest part of an object) are dropped, and the uid and resourceVersion are
/// kept beside it ([`Polled`]), not in it: the store's key is made from the metadata and
/// would copy both into every key.
fn polled_metadata(meta: ObjectMeta) -> (ObjectMeta, Option<Uid>, Option<u64>) {
    let revision = revision_of(meta.resource_version.as_deref());
    let kept = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        generation: meta.generation,
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        owner_references: meta.owner_references.filter(|o| !o.is_empty()),
        ..ObjectMeta::default()
    };
    (kept, meta.uid.as_deref().map(Uid::new), revision)
}

fn revision_of(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

/// A map as an exact-size list: a `BTreeMap`'s first node has room for eleven entries
/// (about 400 bytes for a process map), an App has one to three.
fn compact<V>(map: BTreeMap<String, V>) -> Box<[(Box<str>, V)]> {
    map.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

fn expand<V: Clone>(list: &[(Box<str>, V)]) -> BTreeMap<String, V> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A uid as held: the 16 bytes of the UUID the API server assigns (its 36 characters would
/// be a 48-byte allocation, and every cached object holds one or two), or the text itself
/// when it is not one in the API server's spelling (tests, other servers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uid {
    Uuid(u128),
    Text(Box<str>),
}

impl Uid {
    pub fn new(s: &str) -> Self {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let uuid = (s.len() == 36 && hex.len() == 32)
            .then(|| {
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .filter(|all_hex| *all_hex)
            .and_then(|_| u128::from_str_radix(&hex, 16).ok())
            .filter(|u| Uid::Uuid(*u).to_string() == s);
        match uuid {
            Some(u) => Uid::Uuid(u),
            None => Uid::Text(s.into()),
        }
    }

    pub fn is(&self, s: &str) -> bool {
        match self {
            Uid::Text(t) => &**t == s,
            Uid::Uuid(_) => *self == Uid::new(s),
        }
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Text(t) => f.write_str(t),
            Uid::Uuid(u) => {
                let h = format!("{u:032x}");
                write!(
                    f,
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
        }
    }
}

/// One of the few dozen words a condition's type, status and reason are made of, kept once
/// per process: most of a status's allocations are these.
type Word = Cow<'static, str>;

/// Words kept once. Bounded: the status subresource is the operator's and the router's to
/// write, but whoever may write it too cannot grow this past [`MAX_WORDS`].
static WORDS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
const MAX_WORDS: usize = 256;
const MAX_WORD_LEN: usize = 64;

fn word(s: String) -> Word {
    let mut words = WORDS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(w) = words.iter().find(|w| **w == s) {
        return Cow::Borrowed(*w);
    }
    if words.len() >= MAX_WORDS || s.len() > MAX_WORD_LEN {
        return Cow::Owned(s);
    }
    let w: &'static str = Box::leak(s.into_boxed_str());
    words.push(w);
    Cow::Borrowed(w)
}

/// A status condition as the caches hold it: its type, status and reason interned.
#[derive(Clone, Debug)]
struct LeanCondition {
    type_: Word,
    status: Word,
    reason: Word,
    message: Box<str>,
    last_transition_time: Time,
    observed_generation: Option<i64>,
}

fn lean(conditions: Vec<Condition>) -> Box<[LeanCondition]> {
    conditions
        .into_iter()
        .map(|c| LeanCondition {
            type_: word(c.type_),
            status: word(c.status),
            reason: word(c.reason),
            message: c.message.into(),
            last_transition_time: c.last_transition_time,
            observed_generation: c.observed_generation,
        })
        .collect()
}

fn full(conditions: &[LeanCondition]) -> Vec<Condition> {
    conditions
        .iter()
        .map(|c| Condition {
            type_: c.type_.to_string(),
            status: c.status.to_string(),
            reason: c.reason.to_string(),
            message: c.message.to_string(),
            last_transition_time: c.last_transition_time.clone(),
            observed_generation: c.observed_generation,
        })
        .collect()
}

/// A kind a controller polls (App, Formation, Route), held compactly: the controller and
/// the overlay keep it, each reconcile takes the whole object back with [`Polled::object`].
pub trait Polled: Projection + Resource<DynamicType = (), Scope = NamespaceResourceScope> {
    /// The object as the reconcilers read it (built on each call: a few allocations,
    /// once per reconcile).
    fn object(&self) -> Self::Kind;
}

/// Makes a compact view a `kube::Resource` of its kind, so a controller can be driven by
/// it, with a store key of name and namespace only (its metadata has no uid or version).
/// The whole kind is what callers read: [`Polled::object`].
macro_rules! polled_resource {
    ($view:ty, $kind:ty) => {
        impl Resource for $view {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::kind(dt)
            }

            fn group(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::group(dt)
            }

            fn version(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::version(dt)
            }

            fn plural(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::plural(dt)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.meta
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.meta
            }
        }

        /// As its kind, projected (kube's `Controller` asks for a kind it could watch).
        impl<'de> serde::Deserialize<'de> for $view {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$kind>::deserialize(d).map(Self::project)
            }
        }
    };
}

/// The whole metadata back, for [`Polled::object`].
fn full_metadata(meta: &ObjectMeta, uid: &Option<Uid>, revision: Option<u64>) -> ObjectMeta {
    ObjectMeta {
        uid: uid.as_ref().map(Uid::to_string),
        resource_version: revision.map(|r| r.to_string()),
        ..meta.clone()
    }
}

/// An App as the caches hold it: the process maps as exact-size lists, the conditions'
/// words interned.
#[derive(Clone, Debug)]
pub struct AppView {
    meta: ObjectMeta,
    uid: Option<Uid>,
    revision: Option<u64>,
    /// `spec` without `processes` (and `meta`, which is not read).
    spec: AppSpec,
    processes: Box<[(Box<str>, i32)]>,
    /// `status` without `processes` and `conditions`.
    status: Option<AppStatus>,
    status_processes: Box<[(Box<str>, ProcessStatus)]>,
    conditions: Box<[LeanCondition]>,
}

polled_resource!(AppView, App);

impl Projection for AppView {
    type Kind = App;
    const BY_APP: bool = false;

    fn project(app: App) -> Self {
        let (meta, uid, revision) = polled_metadata(app.metadata);
        let mut spec = app.spec;
        let processes = compact(std::mem::take(&mut spec.processes));
        spec.meta = BTreeMap::new();
        let mut status = app.status;
        let (status_processes, conditions) = status
            .as_mut()
            .map(|s| {
                let processes = compact(std::mem::take(&mut s.processes));
                (processes, lean(std::mem::take(&mut s.conditions)))
            })
            .unwrap_or_default();
        Self {
            meta,
            uid,
            revision,
            spec,
            processes,
            status,
            status_processes,
            conditions,
        }
    }

    fn app(&self) -> Option<&str> {
        self.meta.name.as_deref()
    }

    fn revision(&self) -> Option<u64> {
        self.revision
    }
}

impl Polled for AppView {
    fn object(&self) -> App {
        let mut spec = self.spec.clone();
        spec.processes = expand(&self.processes);
        let status = self.status.clone().map(|mut s| {
            s.processes = expand(&self.status_processes);
            s.conditions = full(&self.conditions);
            s
        });
        App {
            metadata: full_metadata(&self.meta, &self.uid, self.revision),
            spec,
            status,
        }
    }
}

/// A Formation as the caches hold it: the process maps as exact-size lists, the
/// conditions' words interned.
#[derive(Clone, Debug)]
pub struct FormationView {
    meta: ObjectMeta,
    uid: Option<Uid>,
    revision: Option<u64>,
    /// `spec` without `processes`.
    spec: FormationSpec,
    processes: Box<[(Box<str>, i32)]>,
    /// `status` without `processes` and `conditions`.
    status: Option<FormationStatus>,
    status_processes: Box<[(Box<str>, ProcessStatus)]>,
    conditions: Box<[LeanCondition]>,
}

polled_resource!(FormationView, Formation);

impl Projection for FormationView {
    type Kind = Formation;
    const BY_APP: bool = false;

    fn project(f: Formation) -> Self {
        let (meta, uid, revision) = polled_metadata(f.metadata);
        let mut spec = f.spec;
        let processes = compact(std::mem::take(&mut spec.processes));
        let mut status = f.status;
        let (status_processes, conditions) = status
            .as_mut()
            .map(|s| {
                let processes = compact(std::mem::take(&mut s.processes));
                (processes, lean(std::mem::take(&mut s.conditions)))
            })
            .unwrap_or_default();
        Self {
            meta,
            uid,
            revision,
            spec,
            processes,
            status,
            status_processes,
            conditions,
        }
    }

    fn app(&self) -> Option<&str> {
        Some(&self.spec.app)
    }

    fn revision(&self) -> Option<u64> {
        self.revision
    }
}

impl Polled for FormationView {
    fn object(&self) -> Formation {
        let mut spec = self.spec.clone();
        spec.processes = expand(&self.processes);
        let status = self.status.clone().map(|mut s| {
            s.processes = expand(&self.status_processes);
            s.conditions = full(&self.conditions);
            s
        });
        Formation {
            metadata: full_metadata(&self.meta, &self.uid, self.revision),
            spec,
            status,
        }
    }
}

/// A Route as the caches hold it: thinned metadata, interned condition words.
#[derive(Clone, Debug)]
pub struct RouteView {
    meta: ObjectMeta,
    uid: Option<Uid>,
    revision: Option<u64>,
    pub spec: RouteSpec,
    /// `status` without `conditions`.
    status: Option<RouteStatus>,
    conditions: Box<[LeanCondition]>,
}

polled_resource!(RouteView, Route);

impl Projection for RouteView {
    type Kind = Route;

    fn project(r: Route) -> Self {
        let (meta, uid, revision) = polled_metadata(r.metadata);
        let mut status = r.status;
        let conditions = status
            .as_mut()
            .map(|s| lean(std::mem::take(&mut s.conditions)))
            .unwrap_or_default();
        Self {
            meta,
            uid,
            revision,
            spec: r.spec,
            status,
            conditions,
        }
    }

    fn app(&self) -> Option<&str> {
        Some(&self.spec.app)
    }

    fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// `host <name>`, `host *.<suffix>` or `TCP port <n>`, the host normalised as the
    /// router compares it (the rule lives in `flynn_crds::ownership`).
    fn claim(&self) -> Option<String> {
        flynn_crds::ownership::Claim::of(&self.spec).map(|c| c.to_string())
    }
}

impl Polled for RouteView {
    fn object(&self) -> Route {
        Route {
            metadata: full_metadata(&self.meta, &self.uid, self.revision),
            spec: self.spec.clone(),
            status: self.status.clone().map(|mut s| {
                s.conditions = full(&self.conditions);
                s
            }),
        }
    }
}

/// Name and namespace of a viewed object, the store's key (no resourceVersion or uid:
/// the store would copy both into every key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Id {
    pub name: Box<str>,
    pub namespace: Box<str>,
}

impl Id {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            name: meta.name.as_deref().unwrap_or_default().into(),
            namespace: meta.namespace.as_deref().unwrap_or_default().into(),
        }
    }
}

/// A view names the kind of the object it was made from (the store's keys ask).
macro_rules! lookup_as {
    ($view:ty, $kind:ty, $($id:ident).+) => {
        impl Lookup for $view {
            type DynamicType = ();

            fn kind(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::kind(dt)
            }

            fn group(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::group(dt)
            }

            fn version(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::version(dt)
            }

            fn plural(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::plural(dt)
            }

            fn name(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Borrowed(&self.$($id).+.name))
            }

            fn namespace(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Borrowed(&self.$($id).+.namespace))
            }

            fn resource_version(&self) -> Option<Cow<'_, str>> {
                None
            }

            fn uid(&self) -> Option<Cow<'_, str>> {
                None
            }
        }
    };
}

/// A Release as read: its identity and the spec the Formation builds from. `processes`
/// is an exact-size list, not the spec's map (whose first B-tree node has room for
/// eleven process specs, about 2.5 KB, for the one or two a Release has); `meta` (git
/// commit, pusher) is not read.
#[derive(Clone, Debug)]
pub struct ReleaseView {
    pub id: Id,
    uid: Option<Uid>,
    revision: Option<u64>,
    created: Option<Time>,
    app: Box<str>,
    pub version: i64,
    artifact: Artifact,
    config_secret: Option<Box<str>>,
    env: Box<[(String, String)]>,
    processes: Box<[(String, ProcessSpec)]>,
}

lookup_as!(ReleaseView, Release, id);

impl Projection for ReleaseView {
    type Kind = Release;

    fn project(r: Release) -> Self {
        Self {
            id: Id::of(&r.metadata),
            uid: r.metadata.uid.as_deref().map(Uid::new),
            revision: revision_of(r.metadata.resource_version.as_deref()),
            created: r.metadata.creation_timestamp,
            app: r.spec.app.into(),
            version: r.spec.version,
            artifact: r.spec.artifact,
            config_secret: r.spec.config_secret.map(Into::into),
            env: r.spec.env.into_iter().collect(),
            processes: r.spec.processes.into_iter().collect(),
        }
    }

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    fn revision(&self) -> Option<u64> {
        self.revision
    }
}

impl ReleaseView {
    /// The Release the build steps take (built on each read: a few allocations, once per
    /// reconcile that needs it).
    pub fn to_release(&self) -> Release {
        Release {
            metadata: ObjectMeta {
                name: Some(self.id.name.to_string()),
                namespace: Some(self.id.namespace.to_string()),
                uid: self.uid.as_ref().map(Uid::to_string),
                resource_version: self.revision.map(|r| r.to_string()),
                creation_timestamp: self.created.clone(),
                ..ObjectMeta::default()
            },
            spec: ReleaseSpec {
                app: self.app.to_string(),
                version: self.version,
                artifact: self.artifact.clone(),
                config_secret: self.config_secret.as_deref().map(str::to_owned),
                env: self.env.iter().cloned().collect(),
                processes: self.processes.iter().cloned().collect(),
                meta: BTreeMap::new(),
            },
        }
    }
}

/// What the Formation reads of any child it makes (Deployment or Service): whose it is,
/// which App's, and the hash of what was last applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildMeta {
    pub id: Id,
    revision: Option<u64>,
    app: Option<Box<str>>,
    /// The uid of the owner reference with `controller: true`, if any.
    controller_uid: Option<Uid>,
    /// The applied hash (`{:016x}` of a u64, see `formation::apply_child`) as its number;
    /// anything else in the annotation reads as no hash (the child is then applied again).
    applied_hash: Option<u64>,
}

impl ChildMeta {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            id: Id::of(meta),
            revision: revision_of(meta.resource_version.as_deref()),
            app: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::APP))
                .map(|a| a.as_str().into()),
            controller_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| Uid::new(&o.uid)),
            applied_hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPLIED_HASH))
                .and_then(|h| {
                    let n = u64::from_str_radix(h, 16).ok()?;
                    (format!("{n:016x}") == *h).then_some(n)
                }),
        }
    }

    /// Whether the owner with this uid controls the child. (Only a `controller: true`
    /// reference counts: anyone can write a plain owner reference into their own object.)
    pub fn controlled_by(&self, uid: &str) -> bool {
        self.controller_uid.as_ref().is_some_and(|u| u.is(uid))
    }

    pub fn name(&self) -> &str {
        &self.id.name
    }

    /// The hash of what was last applied, as the annotation spells it.
    pub fn applied_hash(&self) -> Option<String> {
        self.applied_hash.map(|h| format!("{h:016x}"))
    }
}

/// A child the Formation makes, as the caches hold it.
pub trait Child: Projection {
    fn child(&self) -> &ChildMeta;
}

/// A Deployment as read: whose it is, the release its pod template runs, and its
/// rollout state.
#[derive(Clone, Debug)]
pub struct DeploymentView {
    pub meta: ChildMeta,
    /// The release its pod template runs (the template's `flynn.io/release` label).
    pub template_release: Option<Box<str>>,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub state: DeploymentState,
}

lookup_as!(DeploymentView, Deployment, meta.id);

impl Projection for DeploymentView {
    type Kind = Deployment;

    fn project(d: Deployment) -> Self {
        let template_release = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(labels::RELEASE))
            .map(|r| r.as_str().into());
        let status = d.status.as_ref();
        Self {
            meta: ChildMeta::of(&d.metadata),
            template_release,
            ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            available_replicas: status.and_then(|s| s.available_replicas).unwrap_or(0),
            state: DeploymentState::of(&d),
        }
    }

    fn app(&self) -> Option<&str> {
        self.meta.app.as_deref()
    }

    fn revision(&self) -> Option<u64> {
        self.meta.revision
    }
}

impl Child for DeploymentView {
    fn child(&self) -> &ChildMeta {
        &self.meta
    }
}

/// A Service as read: only whose it is and what was last applied.
#[derive(Clone, Debug)]
pub struct ServiceView {
    pub meta: ChildMeta,
}

lookup_as!(ServiceView, Service, meta.id);

impl Projection for ServiceView {
    type Kind = Service;

    fn project(s: Service) -> Self {
        Self {
            meta: ChildMeta::of(&s.metadata),
        }
    }

    fn app(&self) -> Option<&str> {
        self.meta.app.as_deref()
    }

    fn revision(&self) -> Option<u64> {
        self.meta.revision
    }
}

impl Child for ServiceView {
    fn child(&self) -> &ChildMeta {
        &self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_view_keeps_what_the_formation_reads() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "shop-web", "namespace": "a", "resourceVersion": "42", "generation": 3,
                "labels": {"flynn.io/app": "shop"},
                "annotations": {"flynn.io/applied-hash": "00ff", "other": "x"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "not-controller"},
                    {"apiVersion": "flynn.io/v1alpha1", "kind": "Formation", "name": "shop", "uid": "f-uid", "controller": true}]},
            "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"labels": {"flynn.io/release": "shop-v4"}},
                "spec": {"containers": [{"name": "web", "image": "x"}]}}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}
        }))
        .unwrap();
        let v = DeploymentView::project(d.clone());
        assert_eq!(v.meta.name(), "shop-web");
        assert_eq!(v.app(), Some("shop"));
        assert_eq!(v.revision(), Some(42));
        assert!(v.meta.controlled_by("f-uid"));
        assert!(!v.meta.controlled_by("not-controller"));
        assert_eq!(
            v.meta.applied_hash(),
            None,
            "not a hash the operator writes"
        );
        assert_eq!(v.template_release.as_deref(), Some("shop-v4"));
        assert_eq!((v.ready_replicas, v.available_replicas), (1, 1));
        assert_eq!(
            v.state.rollout(),
            crate::rollout::deployment_rollout(&d),
            "the view judges the rollout as the whole object does"
        );
    }

    #[test]
    fn uids_and_hashes_are_held_as_numbers_and_read_back_as_written() {
        let uuid = "1dcfd75f-5569-4fd7-bab6-80762db95d51";
        assert!(matches!(Uid::new(uuid), Uid::Uuid(_)));
        assert_eq!(Uid::new(uuid).to_string(), uuid);
        assert!(Uid::new(uuid).is(uuid));
        assert!(!Uid::new(uuid).is("1dcfd75f-5569-4fd7-bab6-80762db95d52"));
        // Not the API server's spelling: kept as written, so it reads back the same.
        for other in [
            "f-uid",
            "1DCFD75F-5569-4FD7-BAB6-80762DB95D51",
            "+dcfd75f-5569-4fd7-bab6-80762db95d51",
            "1dcfd75f5569-4fd7-bab6-80762db95d51-",
        ] {
            assert!(matches!(Uid::new(other), Uid::Text(_)), "{other}");
            assert_eq!(Uid::new(other).to_string(), other);
            assert!(Uid::new(other).is(other) && !Uid::new(other).is(uuid));
        }
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "a", "annotations": {"flynn.io/applied-hash": "00000000000000ff"}}
        }))
        .unwrap();
        assert_eq!(
            DeploymentView::project(d).meta.applied_hash().as_deref(),
            Some("00000000000000ff")
        );
    }

    #[test]
    fn a_release_view_gives_back_the_release_the_build_reads() {
        let r: Release = serde_json::from_value(json!({
            "metadata": {"name": "shop-v2", "namespace": "a", "uid": "r-uid", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"x": "y"}},
            "spec": {"app": "shop", "version": 2, "artifact": {"image": "img:2"}, "configSecret": "shop-v2-env",
                "processes": {"web": {"command": ["run"], "ports": [{"port": 8080}]}, "worker": {"command": ["work"]}},
                "meta": {"git.commit": "abc"}}
        }))
        .unwrap();
        let v = ReleaseView::project(r.clone());
        let back = v.to_release();
        assert_eq!(back.spec.processes, r.spec.processes);
        assert_eq!(back.spec.artifact, r.spec.artifact);
        assert_eq!(back.spec.config_secret, r.spec.config_secret);
        assert_eq!(back.metadata.name, r.metadata.name);
        assert_eq!(back.metadata.uid, r.metadata.uid);
        assert_eq!(
            back.metadata.creation_timestamp,
            r.metadata.creation_timestamp
        );
        assert!(back.spec.meta.is_empty(), "meta is not read, so not kept");
        assert_eq!(v.app(), Some("shop"));
    }

    #[test]
    fn a_route_keeps_identity_age_and_owners_and_drops_the_rest() {
        let r: Route = serde_json::from_value(json!({
            "metadata": {"name": "shop", "namespace": "a", "uid": "u", "resourceVersion": "9", "generation": 2,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"flynn.io/app": "shop"},
                "managedFields": [{"manager": "flynn-operator", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "flynn.io/v1alpha1", "kind": "App", "name": "shop", "uid": "a-uid", "controller": true}]},
            "spec": {"type": "http", "app": "shop", "http": {"domain": "Shop.Example.com.", "path": "/"}}
        }))
        .unwrap();
        let p = RouteView::project(r.clone());
        assert_eq!(p.claim().as_deref(), Some("host shop.example.com"));
        assert_eq!(p.revision(), Some(9));
        // The store's key: name and namespace only.
        let key = kube::runtime::reflector::Lookup::to_object_ref(&p, ());
        assert_eq!((key.extra.uid, key.extra.resource_version), (None, None));
        let back = p.object();
        assert_eq!(
            back.metadata.creation_timestamp,
            r.metadata.creation_timestamp
        );
        assert_eq!(back.metadata.owner_references, r.metadata.owner_references);
        assert_eq!(back.metadata.generation, Some(2));
        assert_eq!(back.metadata.uid.as_deref(), Some("u"));
        assert_eq!(back.metadata.resource_version.as_deref(), Some("9"));
        assert!(back.metadata.labels.is_none() && back.metadata.managed_fields.is_none());
        assert_eq!(back.spec, r.spec);
    }

    #[test]
    fn app_and_formation_views_give_back_what_the_reconcilers_read() {
        let app: App = serde_json::from_value(json!({
            "metadata": {"name": "shop", "namespace": "a", "uid": "a-uid", "resourceVersion": "12", "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": "2026-01-02T00:00:00Z",
                "labels": {"x": "y"}, "annotations": {"big": "z"}},
            "spec": {"release": "shop-v2", "processes": {"web": 2, "worker": 1}, "strategy": "one-by-one",
                "deployTimeoutSeconds": 60, "autoRollback": false, "meta": {"k": "v"}},
            "status": {"release": "shop-v1", "releaseVersion": 1, "urls": ["http://shop.example.com"],
                "processes": {"web": {"desired": 2, "ready": 1, "available": 1}},
                "processSummary": "web=1/2", "observedGeneration": 3,
                "conditions": [{"type": "Ready", "status": "False", "reason": "RollingOut", "message": "m",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3}],
                "rollout": {"release": "shop-v2", "startedAt": "2026-01-01T00:00:00Z"}}
        }))
        .unwrap();
        let back = AppView::project(app.clone()).object();
        let mut expected = app.clone();
        expected.metadata.labels = None;
        expected.metadata.annotations = None;
        expected.spec.meta = BTreeMap::new();
        assert_eq!(
            back, expected,
            "everything but labels, annotations and spec.meta"
        );
        assert_eq!(AppView::project(app).app(), Some("shop"));

        let f: Formation = serde_json::from_value(json!({
            "metadata": {"name": "shop", "namespace": "a", "uid": "f-uid", "resourceVersion": "13", "generation": 4,
                "ownerReferences": [{"apiVersion": "flynn.io/v1alpha1", "kind": "App", "name": "shop", "uid": "a-uid", "controller": true}]},
            "spec": {"app": "shop", "release": "shop-v2", "processes": {"web": 2}},
            "status": {"release": "shop-v2", "processes": {"web": {"desired": 2, "ready": 2, "available": 2}},
                "observedGeneration": 4}
        }))
        .unwrap();
        let v = FormationView::project(f.clone());
        assert_eq!(v.object(), f);
        assert_eq!(v.revision(), Some(13));
    }
}
