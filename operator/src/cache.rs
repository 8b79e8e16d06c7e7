//! What the reconcilers read: one reflector store per kind, trimmed to the fields they
//! use, plus the objects the operator itself wrote since.
//!
//! Reading from watches instead of the API is what lets a burst of Apps cost only the
//! writes it needs (the API server's time is the bottleneck, and a reconcile that GETs
//! and LISTs its inputs spends most of it on reads). Two things make a cache safe here:
//!
//! - **Our own writes.** The store learns of a write one watch round trip after the
//!   write returns. A reconcile triggered in between (an App has four triggers) would
//!   work from the copy before it, redo the write and announce it twice. The write's
//!   response *is* the object as stored, so [`Cache::remember`] keeps it until the store
//!   has caught up, and every read returns the newer of the two.
//! - **Objects the watch has not delivered yet** (a Release created a moment before the
//!   App points at it): the reconcilers fall back to a GET on a miss.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flynn_crds::{App, Formation, Release, Route};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

/// The caches of every kind the reconcilers read.
#[allow(missing_debug_implementations)] // Stores have no useful Debug.
pub struct Caches {
    pub apps: Cache<App>,
    pub formations: Cache<Formation>,
    pub releases: Cache<Release>,
    /// Every Route in the cluster: conflicts are cluster-wide.
    pub routes: Cache<Route>,
    /// Deployments and Services labelled as made by Flynn.
    pub deployments: Cache<Deployment>,
    pub services: Cache<Service>,
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

/// How long a written object may stand in for the store's copy. The store normally
/// catches up within milliseconds; this bounds what a lost watch event (or an object
/// deleted right after we wrote it) can make us believe.
const OVERLAY_TTL: Duration = Duration::from_secs(10);

/// Objects the operator wrote, with when.
type Written<K> = HashMap<ObjectRef<K>, (Arc<K>, Instant)>;

/// A reflector store and the objects written since (see the module docs).
#[allow(missing_debug_implementations)] // Stores have no useful Debug.
pub struct Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    trim: fn(&mut K),
    written: Arc<Mutex<Written<K>>>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// `trim` is applied to what [`Cache::remember`] keeps, the same function the
    /// watch applies to what the store keeps.
    pub fn new(store: Store<K>, trim: fn(&mut K)) -> Self {
        Self {
            store,
            trim,
            written: Arc::default(),
        }
    }

    /// What the watch calls with each deleted object, so a copy we wrote before the
    /// deletion cannot stand in for it.
    pub fn on_delete(&self) -> impl Fn(&K) + Send + Sync + 'static + use<K>
    where
        K: Send + Sync,
    {
        let written = self.written.clone();
        move |obj| {
            written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&ObjectRef::from_obj(obj));
        }
    }

    /// The watch's own copy, without our writes (for the controller it triggers).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Resolves once the store holds its first full list.
    pub async fn ready(&self) {
        // An error means the writer is gone: the watch task ended with the operator.
        let _ = self.store.wait_until_ready().await;
    }

    /// The freshest copy of an object, or `None` if neither the watch nor our writes
    /// know it.
    pub fn get(&self, r: &ObjectRef<K>) -> Option<Arc<K>> {
        self.freshest(r, self.store.get(r))
    }

    /// `obj` (the copy a reconcile was handed), or the newer one we wrote.
    pub fn fresh(&self, obj: Arc<K>) -> Arc<K> {
        let r = ObjectRef::from_obj(obj.as_ref());
        self.freshest(&r, Some(obj.clone())).unwrap_or(obj)
    }

    /// Every object matching `filter`, each in its freshest copy, including objects we
    /// created that the watch has not delivered yet.
    pub fn list(&self, filter: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        let mut out: Vec<Arc<K>> = Vec::new();
        let mut written = self.lock();
        for cached in self.store.state() {
            let r = ObjectRef::from_obj(cached.as_ref());
            let obj = match written.get(&r) {
                Some((mine, at))
                    if at.elapsed() < OVERLAY_TTL && newer(mine.as_ref(), cached.as_ref()) =>
                {
                    mine.clone()
                }
                Some(_) => {
                    // The store has caught up.
                    written.remove(&r);
                    cached
                }
                None => cached,
            };
            if filter(&obj) {
                out.push(obj);
            }
        }
        for (r, (mine, at)) in written.iter() {
            if at.elapsed() < OVERLAY_TTL && self.store.get(r).is_none() && filter(mine) {
                out.push(mine.clone());
            }
        }
        out
    }

    /// Keeps the object a write answered with, until the store has it too.
    pub fn remember(&self, mut obj: K) -> Arc<K> {
        (self.trim)(&mut obj);
        let obj = Arc::new(obj);
        let mut written = self.lock();
        // Entries leave when a read finds the store caught up; this sweeps the ones no
        // read came back for, so the map holds only writes the watch has not delivered
        // yet (plus at most this many), not a second copy of everything written.
        if written.len() >= 64 {
            written.retain(|r, (mine, at)| {
                at.elapsed() < OVERLAY_TTL
                    && self
                        .store
                        .get(r)
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

    fn freshest(&self, r: &ObjectRef<K>, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        let mut written = self.lock();
        let Some((mine, at)) = written.get(r) else {
            return cached;
        };
        let use_mine = at.elapsed() < OVERLAY_TTL
            && match &cached {
                Some(c) => newer(mine.as_ref(), c.as_ref()),
                None => true,
            };
        if use_mine {
            return Some(mine.clone());
        }
        // The store has caught up (or the entry is too old to trust): it answers alone.
        written.remove(r);
        cached
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Written<K>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `a` is a later version of the object than `b`.
///
/// resourceVersions are opaque by contract, but on every API server backed by etcd they
/// are its revision numbers, which only grow. Should one not parse, the store is trusted:
/// a wrong answer costs one redundant (idempotent) write, never a lost one.
fn newer<K: Resource>(a: &K, b: &K) -> bool {
    let rv = |k: &K| {
        k.meta()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (rv(a), rv(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
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
