//! What the reconcilers read: one reflector store per kind, each object trimmed to the
//! fields they use and held packed, plus the objects the operator itself wrote since.
//!
//! Reading from watches instead of the API is what lets a burst of Apps cost only the
//! writes it needs (the API server's time is the bottleneck, and a reconcile that GETs
//! and LISTs its inputs spends most of it on reads). Two things make a cache safe here:
//!
//! - **Our own writes.** The store learns of a write one watch round trip after it
//!   returns. A reconcile triggered in between (an App has four triggers) would
//!   work from the copy before it, redo the write and announce it twice. The write's
//!   response *is* the object as stored, so [`Cache::remember`] keeps it until the store
//!   has caught up, and every read returns the newer of the two.
//! - **Objects the watch has not delivered yet** (a Release created a moment before the
//!   App points at it): the reconcilers fall back to a GET on a miss.
//!
//! **Why packed.** Every App has six objects here, and k8s-openapi's structs are built
//! for completeness, not size: a `Deployment` is 2.4 KB before its first string, each
//! non-empty map costs a B-tree node of about 550 bytes, and a Release's process map
//! allocates room for eleven process specs. Held as structs, an App cost 22–26 KiB of
//! memory. A [`Packed`] object is its trimmed JSON, LZ4-compressed against the first
//! object of its kind (objects of a kind share most of their bytes: field names,
//! labels, owner kinds, condition texts), next to the few fields that lists select on
//! (namespace, App, a Route's key). Reads unpack the handful of objects a reconcile
//! needs, a few microseconds each; lists filter on the unpacked fields and unpack only
//! what they return.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flynn_crds::{App, Formation, Release, Route, labels};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// The caches of every kind the reconcilers read.
#[allow(missing_debug_implementations)] // Stores have no useful Debug.
pub struct Caches {
    pub apps: Cache<App>,
    pub formations: Cache<Formation>,
    pub releases: Cache<Release, Slim<Release>>,
    /// Every Route in the cluster: conflicts are cluster-wide.
    pub routes: Cache<Route>,
    /// Deployments and Services labelled as made by Flynn.
    pub deployments: Cache<Deployment, Slim<Deployment>>,
    pub services: Cache<Service, Slim<Service>>,
    /// Set once every store holds its first full list. (A store's own readiness wakes
    /// only one of several waiters, so reconciles wait on this instead.)
    pub synced: tokio::sync::watch::Sender<bool>,
}

impl Caches {
    /// Waits for every store's first full list and tells [`Caches::synced`] waiters.
    /// Called once, by one task.
    pub async fn sync(&self) {
        self.apps.ready().await;
        self.formations.ready().await;
        self.releases.ready().await;
        self.routes.ready().await;
        self.deployments.ready().await;
        self.services.ready().await;
        self.synced.send_replace(true);
    }

    /// Resolves once [`Caches::sync`] has.
    pub async fn wait_synced(&self) {
        // An error means the sender is gone, with the operator.
        let _ = self.synced.subscribe().wait_for(|synced| *synced).await;
    }
}

/// A kind the operator caches: what is dropped before it is stored, and the keys
/// lists select it by without unpacking it.
pub trait Cached:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Drops the fields no reconciler reads.
    fn trim(&mut self) {
        trim::metadata(self);
    }

    /// The App the object belongs to.
    fn app(&self) -> Option<&str>;

    /// A second key lists select on: the key Routes contend for.
    fn tag(&self) -> Option<String> {
        None
    }
}

impl Cached for App {
    fn app(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
}

impl Cached for Release {
    fn app(&self) -> Option<&str> {
        Some(&self.spec.app)
    }
}

impl Cached for Formation {
    fn app(&self) -> Option<&str> {
        Some(&self.spec.app)
    }
}

impl Cached for Route {
    fn app(&self) -> Option<&str> {
        Some(&self.spec.app)
    }

    fn tag(&self) -> Option<String> {
        crate::route::key(self).map(|k| k.to_string())
    }
}

impl Cached for Deployment {
    fn trim(&mut self) {
        trim::deployment(self);
    }

    fn app(&self) -> Option<&str> {
        app_label(&self.metadata)
    }
}

impl Cached for Service {
    fn trim(&mut self) {
        trim::service(self);
    }

    fn app(&self) -> Option<&str> {
        app_label(&self.metadata)
    }
}

fn app_label(meta: &ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(labels::APP).map(String::as_str)
}

/// What a kind's objects are compressed against: the JSON of the first one packed.
/// Set once and shared by every object of the kind (an `Arc` each, no copy).
#[derive(Clone, Debug, Default)]
pub struct Dictionary(Arc<OnceLock<Arc<[u8]>>>);

impl Dictionary {
    fn get_or_init(&self, first: &[u8]) -> Arc<[u8]> {
        self.0.get_or_init(|| Arc::from(first)).clone()
    }
}

/// Why a packed object could not be read back (a bug: the bytes are our own).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("decompressing: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
    #[error("decoding: {0}")]
    Decode(#[from] serde_json::Error),
}

/// A stored type names the kind of the object it holds (the store's keys and kube's
/// controller ask).
macro_rules! kind_of_k {
    () => {
        fn kind(dt: &()) -> Cow<'_, str> {
            K::kind(dt)
        }

        fn group(dt: &()) -> Cow<'_, str> {
            K::group(dt)
        }

        fn version(dt: &()) -> Cow<'_, str> {
            K::version(dt)
        }

        fn plural(dt: &()) -> Cow<'_, str> {
            K::plural(dt)
        }
    };
}

/// An object packed: its trimmed JSON, LZ4-compressed against its kind's
/// [`Dictionary`] (about 150–250 bytes where the struct took 3–7 KB), and what lists
/// select on without unpacking it (App, tag).
pub struct Payload<K> {
    /// The resourceVersion as etcd's revision (see [`newer`]).
    version: Option<u64>,
    app: Option<Box<str>>,
    tag: Option<Box<str>>,
    bytes: Box<[u8]>,
    dictionary: Arc<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Cached> Payload<K> {
    /// Packs `obj`, trimmed already.
    fn new(obj: &K, dictionary: &Dictionary) -> Self {
        // Serializing these types cannot fail (their maps have string keys); were it to,
        // the empty body would fail to unpack, with an error naming the object.
        let json = serde_json::to_vec(obj).unwrap_or_default();
        let dictionary = dictionary.get_or_init(&json);
        let bytes =
            lz4_flex::block::compress_prepend_size_with_dict(&json, &dictionary).into_boxed_slice();
        Self {
            version: revision(obj.meta()),
            app: obj.app().map(Into::into),
            tag: obj.tag().map(Into::into),
            bytes,
            dictionary,
            kind: PhantomData,
        }
    }
}

impl<K> Clone for Payload<K> {
    fn clone(&self) -> Self {
        Self {
            version: self.version,
            app: self.app.clone(),
            tag: self.tag.clone(),
            bytes: self.bytes.clone(),
            dictionary: self.dictionary.clone(),
            kind: PhantomData,
        }
    }
}

/// How a cache stores its objects: [`Packed`] for the kinds a controller polls (kube's
/// controller wants them to be `Resource`s), [`Slim`] for the others.
pub trait Stored<K: Cached>: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static {
    /// Trims and packs `obj`.
    fn pack(obj: K, dictionary: &Dictionary) -> Self;

    fn payload(&self) -> &Payload<K>;

    /// The object's namespace, borrowed.
    fn namespace_str(&self) -> Option<&str>;

    /// The unpacked object's reference.
    fn reference(&self) -> ObjectRef<K>;

    /// The App the object belongs to.
    fn app(&self) -> Option<&str> {
        self.payload().app.as_deref()
    }

    /// The key lists select it by (see [`Cached::tag`]).
    fn tag(&self) -> Option<&str> {
        self.payload().tag.as_deref()
    }

    /// The object, trimmed.
    fn unpack(&self) -> Result<K> {
        let payload = self.payload();
        let unpack = || -> Result<K, UnpackError> {
            let json = lz4_flex::block::decompress_size_prepended_with_dict(
                &payload.bytes,
                &payload.dictionary,
            )?;
            Ok(serde_json::from_slice(&json)?)
        };
        unpack().map_err(|e| Error::Unpack(self.reference().to_string(), e))
    }
}

/// A packed object that is a `Resource` (with a metadata holding only its name and
/// namespace, what the store keys on): the type a controller polls.
pub struct Packed<K> {
    meta: ObjectMeta,
    payload: Payload<K>,
}

impl<K: Cached> Stored<K> for Packed<K> {
    fn pack(mut obj: K, dictionary: &Dictionary) -> Self {
        obj.trim();
        let payload = Payload::new(&obj, dictionary);
        let meta = obj.meta();
        Self {
            // Not the resourceVersion: the store would copy it into every key.
            meta: ObjectMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                ..ObjectMeta::default()
            },
            payload,
        }
    }

    fn payload(&self) -> &Payload<K> {
        &self.payload
    }

    fn namespace_str(&self) -> Option<&str> {
        self.meta.namespace.as_deref()
    }

    fn reference(&self) -> ObjectRef<K> {
        reference(self.meta.name.as_deref(), self.meta.namespace.as_deref())
    }
}

/// A packed object with just its name and namespace beside: a third of a [`Packed`]
/// one's size before the payload (an `ObjectMeta` is 360 bytes however empty). For the
/// kinds only read (Releases, Deployments, Services).
pub struct Slim<K> {
    name: Box<str>,
    namespace: Option<Box<str>>,
    payload: Payload<K>,
}

impl<K: Cached> Stored<K> for Slim<K> {
    fn pack(mut obj: K, dictionary: &Dictionary) -> Self {
        obj.trim();
        let payload = Payload::new(&obj, dictionary);
        let meta = obj.meta();
        Self {
            name: meta.name.as_deref().unwrap_or_default().into(),
            namespace: meta.namespace.as_deref().map(Into::into),
            payload,
        }
    }

    fn payload(&self) -> &Payload<K> {
        &self.payload
    }

    fn namespace_str(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn reference(&self) -> ObjectRef<K> {
        reference(Some(&self.name), self.namespace.as_deref())
    }
}

impl<K: Cached> Lookup for Slim<K> {
    type DynamicType = ();

    kind_of_k!();

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }

    // Neither is needed to find an object, and the store would copy both into its key.
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

impl<K> Clone for Slim<K> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            payload: self.payload.clone(),
        }
    }
}

fn reference<K: Cached>(name: Option<&str>, namespace: Option<&str>) -> ObjectRef<K> {
    let r = ObjectRef::new(name.unwrap_or_default());
    match namespace {
        Some(ns) => r.within(ns),
        None => r,
    }
}

/// A watch event with its object packed.
pub fn pack_event<K: Cached, S: Stored<K>>(
    event: watcher::Event<K>,
    dictionary: &Dictionary,
) -> watcher::Event<S> {
    use watcher::Event;
    match event {
        Event::Apply(obj) => Event::Apply(S::pack(obj, dictionary)),
        Event::Delete(obj) => Event::Delete(S::pack(obj, dictionary)),
        Event::Init => Event::Init,
        Event::InitApply(obj) => Event::InitApply(S::pack(obj, dictionary)),
        Event::InitDone => Event::InitDone,
    }
}

impl<K: Cached> Resource for Packed<K> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    kind_of_k!();

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Self {
            meta: self.meta.clone(),
            payload: self.payload.clone(),
        }
    }
}

impl<K> fmt::Debug for Packed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packed")
            .field("namespace", &self.meta.namespace)
            .field("name", &self.meta.name)
            .field("payload", &self.payload)
            .finish()
    }
}

impl<K> fmt::Debug for Slim<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slim")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("payload", &self.payload)
            .finish()
    }
}

impl<K> fmt::Debug for Payload<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("version", &self.version)
            .field("app", &self.app)
            .field("tag", &self.tag)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// kube's controller asks its object type to be deserializable. The operator's watches
/// deserialize `K` and pack it with the kind's dictionary; this path (unused) packs
/// without one.
impl<'de, K: Cached> Deserialize<'de> for Packed<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(d).map(|obj| Packed::pack(obj, &Dictionary::default()))
    }
}

/// How long a written object may stand in for the store's copy. The store normally
/// catches up within milliseconds; this bounds what a lost watch event (or an object
/// deleted right after we wrote it) can make us believe.
const OVERLAY_TTL: Duration = Duration::from_secs(10);

/// Objects the operator wrote, with when.
type Written<K> = HashMap<ObjectRef<K>, (Arc<K>, Instant)>;

/// A reflector store of packed objects and the objects written since (see the module
/// docs).
#[allow(missing_debug_implementations)] // Stores have no useful Debug.
pub struct Cache<K: Cached, S: Stored<K> = Packed<K>> {
    store: Store<S>,
    written: Arc<Mutex<Written<K>>>,
}

impl<K: Cached, S: Stored<K>> Cache<K, S> {
    pub fn new(store: Store<S>) -> Self {
        Self {
            store,
            written: Arc::default(),
        }
    }

    /// What the watch calls with each deleted object, so a copy we wrote before the
    /// deletion cannot stand in for it.
    pub fn on_delete(&self) -> impl Fn(&S) + Send + Sync + 'static + use<K, S> {
        let written = self.written.clone();
        move |obj| {
            written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&obj.reference());
        }
    }

    /// The watch's own copy, without our writes (for the controller it triggers).
    pub fn store(&self) -> &Store<S> {
        &self.store
    }

    /// Resolves once the store holds its first full list.
    pub async fn ready(&self) {
        // An error means the writer is gone: the watch task ended with the operator.
        let _ = self.store.wait_until_ready().await;
    }

    /// The freshest copy of an object, or `None` if neither the watch nor our writes
    /// know it.
    pub fn get(&self, r: &ObjectRef<K>) -> Result<Option<Arc<K>>> {
        self.freshest(r, self.store.get(&packed_ref(r)).as_deref())
    }

    /// `obj` (the copy a reconcile was handed) unpacked, or the newer one we wrote.
    pub fn fresh(&self, obj: &S) -> Result<Arc<K>> {
        match self.freshest(&obj.reference(), Some(obj))? {
            Some(fresh) => Ok(fresh),
            None => obj.unpack().map(Arc::new),
        }
    }

    /// The objects of `app` in `namespace`, each in its freshest copy, including objects
    /// we created that the watch has not delivered yet.
    pub fn of_app(&self, namespace: &str, app: &str) -> Result<Vec<Arc<K>>> {
        self.select(|ns, a, _| ns == Some(namespace) && a == Some(app))
    }

    /// The objects tagged `tag` in every namespace (Routes contending for a key).
    pub fn tagged(&self, tag: &str) -> Result<Vec<Arc<K>>> {
        self.select(|_, _, t| t == Some(tag))
    }

    /// References to the stored objects tagged `tag`, without unpacking them.
    pub fn tagged_refs(&self, tag: &str) -> Vec<ObjectRef<S>> {
        self.store
            .state()
            .iter()
            .filter(|p| p.tag() == Some(tag))
            .map(|p| p.as_ref().to_object_ref(()))
            .collect()
    }

    /// Every object whose (namespace, App, tag) matches, in its freshest copy. Only the
    /// matches are unpacked.
    fn select(
        &self,
        matches: impl Fn(Option<&str>, Option<&str>, Option<&str>) -> bool,
    ) -> Result<Vec<Arc<K>>> {
        let mine_matches =
            |o: &K| matches(o.meta().namespace.as_deref(), o.app(), o.tag().as_deref());
        let mut out: Vec<Arc<K>> = Vec::new();
        let mut written = self.lock();
        for cached in self.store.state() {
            let r = cached.reference();
            match written.get(&r) {
                Some((mine, at))
                    if at.elapsed() < OVERLAY_TTL && newer(mine.as_ref(), cached.as_ref()) =>
                {
                    if mine_matches(mine) {
                        out.push(mine.clone());
                    }
                    continue;
                }
                Some(_) => {
                    // The store has caught up.
                    written.remove(&r);
                }
                None => {}
            }
            if matches(cached.namespace_str(), cached.app(), cached.tag()) {
                out.push(Arc::new(cached.unpack()?));
            }
        }
        for (r, (mine, at)) in written.iter() {
            if at.elapsed() < OVERLAY_TTL
                && mine_matches(mine)
                && self.store.get(&packed_ref(r)).is_none()
            {
                out.push(mine.clone());
            }
        }
        Ok(out)
    }

    /// Keeps the object a write answered with, until the store has it too.
    pub fn remember(&self, mut obj: K) -> Arc<K> {
        obj.trim();
        let obj = Arc::new(obj);
        let mut written = self.lock();
        // Entries leave when a read finds the store caught up; this sweeps the ones no
        // read came back for, so the map holds only writes the watch has not delivered
        // yet (plus at most this many), not a second copy of everything written.
        if written.len() >= 64 {
            let store = &self.store;
            written.retain(|r, (mine, at)| {
                at.elapsed() < OVERLAY_TTL
                    && store
                        .get(&packed_ref(r))
                        .is_none_or(|cached| newer(mine.as_ref(), cached.as_ref()))
            });
        }
        written.insert(
            ObjectRef::from_obj(obj.as_ref()),
            (obj.clone(), Instant::now()),
        );
        obj
    }

    /// Forgets a written copy (the object was deleted).
    pub fn forget(&self, r: &ObjectRef<K>) {
        self.lock().remove(r);
    }

    fn freshest(&self, r: &ObjectRef<K>, cached: Option<&S>) -> Result<Option<Arc<K>>> {
        let mut written = self.lock();
        if let Some((mine, at)) = written.get(r) {
            let use_mine =
                at.elapsed() < OVERLAY_TTL && cached.is_none_or(|c| newer(mine.as_ref(), c));
            if use_mine {
                return Ok(Some(mine.clone()));
            }
            // The store has caught up (or the entry is too old to trust): it answers alone.
            written.remove(r);
        }
        drop(written);
        cached.map(|c| c.unpack().map(Arc::new)).transpose()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Written<K>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The store's key for an object reference.
fn packed_ref<K: Cached, S: Stored<K>>(r: &ObjectRef<K>) -> ObjectRef<S> {
    let packed = ObjectRef::new(&r.name);
    match &r.namespace {
        Some(ns) => packed.within(ns),
        None => packed,
    }
}

/// Whether `mine` is a later version of the object than the store's `cached`.
///
/// resourceVersions are opaque by contract, but on every API server backed by etcd they
/// are its revision numbers, which only grow. Should one not parse, the store is trusted:
/// a wrong answer costs one redundant (idempotent) write, never a lost one.
fn newer<K: Cached>(mine: &K, cached: &impl Stored<K>) -> bool {
    match (revision(mine.meta()), cached.payload().version) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

fn revision(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// The trims: fields the reconcilers never read, dropped before an object is stored.
pub mod trim {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::ResourceExt;

    /// Every cached kind: managed fields and kubectl's copy of the last applied manifest
    /// are the biggest parts of most objects, and nothing here reads them.
    pub fn metadata<K: kube::Resource>(obj: &mut K) {
        obj.managed_fields_mut().clear();
        if let Some(a) = obj.meta_mut().annotations.as_mut() {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }

    /// Deployments: the rollout is read from the status, the replica count, the
    /// generation and the template's labels; whether to re-apply from the applied-hash
    /// annotation. The pod template's spec is most of the object.
    pub fn deployment(d: &mut Deployment) {
        metadata(d);
        if let Some(spec) = d.spec.as_mut() {
            spec.template.spec = None;
            spec.selector = Default::default();
            spec.strategy = None;
        }
        if let Some(status) = d.status.as_mut() {
            for c in status.conditions.iter_mut().flatten() {
                c.last_update_time = None;
                c.last_transition_time = None;
            }
        }
    }

    /// Services: only names, owners and the applied-hash annotation are read.
    pub fn service(s: &mut Service) {
        metadata(s);
        s.spec = None;
        s.status = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::reflector::store::Writer;
    use serde_json::json;

    fn route(ns: &str, name: &str, rv: &str, domain: &str) -> Route {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                "uid": "1dcfd75f-5569-4fd7-bab6-80762db95d51", "generation": 1,
                "managedFields": [{"manager": "flynn-operator", "operation": "Apply"}],
                "labels": {"flynn.io/app": name}},
            "spec": {"type": "http", "app": name, "process": "web",
                "http": {"domain": domain, "path": "/"}},
            "status": {"url": format!("http://{domain}"), "observedGeneration": 1},
        }))
        .unwrap()
    }

    fn cache() -> (Cache<Route>, Writer<Packed<Route>>, Dictionary) {
        let (store, writer) = reflector::store();
        (Cache::new(store), writer, Dictionary::default())
    }

    fn apply(w: &mut Writer<Packed<Route>>, d: &Dictionary, r: Route) {
        w.apply_watcher_event(&watcher::Event::Apply(Packed::pack(r, d)));
    }

    #[test]
    fn a_packed_object_unpacks_to_the_trimmed_object_and_is_smaller() {
        let d = Dictionary::default();
        let first = route("team-a", "shop", "10", "shop.example.com");
        let second = route("team-b", "blog", "11", "blog.example.com");
        let _ = Packed::pack(first, &d);
        let packed = Packed::pack(second.clone(), &d);
        let mut trimmed = second.clone();
        trimmed.trim();
        let unpacked = packed.unpack().unwrap();
        assert_eq!(unpacked, trimmed);
        assert!(
            unpacked
                .metadata
                .managed_fields
                .is_none_or(|m| m.is_empty())
        );
        assert_eq!(packed.app(), Some("blog"));
        assert_eq!(packed.tag(), Some("host blog.example.com"));
        let json = serde_json::to_vec(&trimmed).unwrap().len();
        assert!(
            packed.payload.bytes.len() * 2 < json,
            "{} packed bytes for {json} bytes of JSON",
            packed.payload.bytes.len()
        );
    }

    #[test]
    fn a_slim_object_keys_the_store_by_name_and_namespace_only() {
        let (store, mut w) = reflector::store::<Slim<Route>>();
        let d = Dictionary::default();
        let slim = Slim::pack(route("a", "shop", "12", "shop.example.com"), &d);
        let key = slim.to_object_ref(());
        assert_eq!(
            (key.name.as_str(), key.namespace.as_deref()),
            ("shop", Some("a"))
        );
        assert!(key.extra.resource_version.is_none() && key.extra.uid.is_none());
        w.apply_watcher_event(&watcher::Event::Apply(slim));
        let cache = Cache::new(store);
        let got = cache
            .get(&ObjectRef::new("shop").within("a"))
            .unwrap()
            .unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("12"));
        assert_eq!(got.spec.app, "shop");
    }

    #[test]
    fn lists_select_by_app_and_tag_and_unpack_only_those() {
        let (cache, mut w, d) = cache();
        apply(&mut w, &d, route("a", "shop", "1", "shop.example.com"));
        apply(&mut w, &d, route("b", "shop", "2", "shop.example.com"));
        apply(&mut w, &d, route("a", "blog", "3", "blog.example.com"));
        let of_shop = cache.of_app("a", "shop").unwrap();
        assert_eq!(of_shop.len(), 1);
        assert_eq!(of_shop[0].metadata.namespace.as_deref(), Some("a"));
        let contending = cache.tagged("host shop.example.com").unwrap();
        assert_eq!(contending.len(), 2);
        assert_eq!(cache.tagged_refs("host shop.example.com").len(), 2);
        assert!(cache.of_app("a", "nope").unwrap().is_empty());
    }

    #[test]
    fn our_newer_write_stands_in_until_the_watch_delivers_it() {
        let (cache, mut w, d) = cache();
        apply(&mut w, &d, route("a", "shop", "5", "shop.example.com"));
        let r = ObjectRef::new("shop").within("a");
        // We wrote version 6 (a new domain); the watch still has 5.
        cache.remember(route("a", "shop", "6", "new.example.com"));
        let got = cache.get(&r).unwrap().unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("6"));
        assert_eq!(
            cache.of_app("a", "shop").unwrap()[0]
                .metadata
                .resource_version
                .as_deref(),
            Some("6")
        );
        // Lists select our copy by its own key, not the stale one's.
        assert!(cache.tagged("host shop.example.com").unwrap().is_empty());
        assert_eq!(cache.tagged("host new.example.com").unwrap().len(), 1);
        // The watch catches up with 7: the store answers again.
        apply(&mut w, &d, route("a", "shop", "7", "new.example.com"));
        let got = cache.get(&r).unwrap().unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("7"));
        assert!(cache.lock().is_empty());
    }

    #[test]
    fn a_created_object_is_listed_before_the_watch_has_it_and_forgotten_on_delete() {
        let (cache, mut w, d) = cache();
        let created = route("a", "shop", "9", "shop.example.com");
        cache.remember(created.clone());
        assert_eq!(cache.of_app("a", "shop").unwrap().len(), 1);
        let packed = Packed::pack(created, &d);
        w.apply_watcher_event(&watcher::Event::Delete(packed.clone()));
        cache.on_delete()(&packed);
        assert!(cache.of_app("a", "shop").unwrap().is_empty());
        assert!(
            cache
                .get(&ObjectRef::new("shop").within("a"))
                .unwrap()
                .is_none()
        );
    }
}
