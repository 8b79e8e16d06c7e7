//! What the reconcilers read: per kind, a reflector store of typed projections (only the
//! fields they read, see [`projection`]), an [`index`] of them by (namespace, App) and,
//! for Routes, by what they claim, and the [`overlay`] of the operator's own writes since.
//!
//! Reading from watches instead of the API is what lets a burst of Apps cost only the
//! writes it needs (the API server's time is the bottleneck, and a reconcile that GETs
//! and LISTs its inputs spends most of it on reads). Objects the watch has not delivered
//! yet (a Release created a moment before the App points at it) are read from the API on
//! a miss by the reconcilers.
//!
//! The layout follows linkerd's policy controller (`policy-controller/k8s/index`): each
//! watch event updates a projection and its secondary keys, so what a reconcile looks up
//! is a hash lookup whatever the number of Apps, never a scan of the store.

pub mod index;
pub mod overlay;
pub mod projection;

use std::sync::{Arc, RwLock};

use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

use index::{Entry, Index, Key};
use overlay::Overlay;
pub use projection::{
    APPLIED_HASH, AppView, Child, ChildMeta, DeploymentView, FormationView, Polled, Projection,
    ReleaseView, RouteView, ServiceView,
};

/// The caches of every kind the reconcilers read.
#[allow(missing_debug_implementations)] // Stores have no useful Debug.
pub struct Caches {
    pub apps: Cache<AppView>,
    pub formations: Cache<FormationView>,
    pub releases: Cache<ReleaseView>,
    /// Every Route in the cluster: conflicts are cluster-wide.
    pub routes: Cache<RouteView>,
    /// Deployments and Services labelled as made by Flynn.
    pub deployments: Cache<DeploymentView>,
    pub services: Cache<ServiceView>,
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

/// The store's key for `namespace/name`.
fn store_ref<P: Projection>(namespace: &str, name: &str) -> ObjectRef<P> {
    ObjectRef::new(name).within(namespace)
}

/// One kind's cache: the watched store, its index, and our writes over them.
pub struct Cache<P: Projection> {
    store: Store<P>,
    index: Arc<RwLock<Index>>,
    overlay: Arc<Overlay<P>>,
}

impl<P: Projection> Clone for Cache<P> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            index: self.index.clone(),
            overlay: self.overlay.clone(),
        }
    }
}

impl<P: Projection> std::fmt::Debug for Cache<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("kind", &P::kind(&()))
            .field("objects", &self.store.state().len())
            .field("overlay", &self.overlay)
            .finish()
    }
}

/// The watch's side of a [`Cache`]: applies each event to the store, the index and the
/// overlay, in that order, before the event goes on to trigger anything.
#[allow(missing_debug_implementations)] // Writers have no useful Debug.
pub struct Feed<P: Projection> {
    writer: Writer<P>,
    store: Store<P>,
    index: Arc<RwLock<Index>>,
    overlay: Arc<Overlay<P>>,
    on_delete: Option<OnDelete>,
}

/// Told `(namespace, name)` of each deleted object, after the cache.
pub type OnDelete = Box<dyn Fn(&str, &str) + Send>;

impl<P: Projection> Cache<P> {
    /// An empty cache and the feed that fills it.
    pub fn new() -> (Self, Feed<P>) {
        let (store, writer) = reflector::store::<P>();
        let index = Arc::<RwLock<Index>>::default();
        let overlay = Arc::<Overlay<P>>::default();
        let cache = Self {
            store: store.clone(),
            index: index.clone(),
            overlay: overlay.clone(),
        };
        (
            cache,
            Feed {
                writer,
                store,
                index,
                overlay,
                on_delete: None,
            },
        )
    }

    /// The watch's own copy, without our writes (for the controller it triggers).
    pub fn store(&self) -> &Store<P> {
        &self.store
    }

    /// Resolves once the store holds its first full list.
    pub async fn ready(&self) {
        // An error means the writer is gone: the watch task ended with the operator.
        let _ = self.store.wait_until_ready().await;
    }

    fn cached(&self, key: &Key) -> Option<Arc<P>> {
        self.store.get(&store_ref(&key.0, &key.1))
    }

    /// The freshest copy of `namespace/name`, or `None` if neither the watch nor our
    /// writes know it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<P>> {
        let key: Key = (namespace.into(), name.into());
        self.overlay.freshest(&key, self.cached(&key))
    }

    /// `obj` (the copy a controller handed a reconcile), or the newer one we wrote.
    pub fn fresh(&self, obj: &Arc<P>) -> Arc<P> {
        let key: Key = (
            obj.namespace().unwrap_or_default().into(),
            obj.name().unwrap_or_default().into(),
        );
        self.overlay
            .freshest(&key, Some(obj.clone()))
            .unwrap_or_else(|| obj.clone())
    }

    /// The objects of `app` in `namespace`, each in its freshest copy, including objects
    /// we created that the watch has not delivered yet. Two hash lookups and one per
    /// object found: the same cost with ten Apps or ten thousand.
    pub fn of_app(&self, namespace: &str, app: &str) -> Vec<Arc<P>> {
        debug_assert!(P::BY_APP, "{} is not indexed by App", P::kind(&()));
        let mut names = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .of_app(namespace, app);
        names.extend(self.overlay.of_app(namespace, app));
        names.sort();
        names.dedup();
        names
            .iter()
            .filter_map(|name| self.get(namespace, name))
            // Keys are dropped on change; a copy of ours may have moved on meanwhile.
            .filter(|obj| obj.app() == Some(app))
            .collect()
    }

    /// The objects claiming `claim` in every namespace (Routes contending for a host or
    /// port), each in its freshest copy.
    pub fn claiming(&self, claim: &str) -> Vec<Arc<P>> {
        let mut keys = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .claiming(claim);
        keys.extend(self.overlay.claiming(claim));
        self.freshest_of(keys)
            .filter(|obj| obj.claim().as_deref() == Some(claim))
            .collect()
    }

    /// Keys of the stored objects whose claim is `claim` or, for a wildcard claim
    /// (`host *.example.com`), an exact host it covers: the Routes whose verdict a change
    /// to a Route claiming `claim` may change.
    pub fn affected_by(&self, claim: &str) -> Vec<ObjectRef<P>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut keys = index.claiming(claim);
        if let Some(suffix) = claim.strip_prefix("host *.") {
            keys.extend(index.hosts_under(suffix));
        }
        keys.iter().map(|(ns, name)| store_ref(ns, name)).collect()
    }

    /// Every stored object in `namespace`, in its freshest copy, sorted by name. A scan:
    /// for the grants' namespace passes (one per changed namespace), not for reconciles.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<P>> {
        let mut keys: Vec<Key> = self
            .store
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == Some(namespace))
            .map(|o| (namespace.into(), o.name().unwrap_or_default().into()))
            .collect();
        keys.sort();
        self.freshest_of(keys).collect()
    }

    /// Namespaces that hold at least one stored object.
    pub fn namespaces(&self) -> Vec<String> {
        self.store
            .state()
            .iter()
            .filter_map(|o| o.namespace().map(|n| n.into_owned()))
            .collect()
    }

    fn freshest_of(&self, mut keys: Vec<Key>) -> impl Iterator<Item = Arc<P>> + '_ {
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|key| self.overlay.freshest(&key, self.cached(&key)))
    }

    /// Keeps the object a write answered with (projected), until the store has it too.
    pub fn remember(&self, obj: P::Kind) -> Arc<P> {
        self.overlay.remember(P::project(obj), |k| self.cached(k))
    }

    /// Forgets a written copy (the object was deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.overlay.forget(&(namespace.into(), name.into()));
    }

    /// How many of our writes are held (for tests).
    pub fn overlay_len(&self) -> usize {
        self.overlay.len()
    }
}

impl<P: Projection> Feed<P> {
    /// Calls `f` with each deleted object's namespace and name, after the cache has
    /// dropped it (what else is kept per object leaves with it).
    pub fn on_delete(mut self, f: impl Fn(&str, &str) + Send + 'static) -> Self {
        self.on_delete = Some(Box::new(f));
        self
    }

    /// Applies one watch event (its object projected already).
    pub fn apply(&mut self, event: &watcher::Event<P>) {
        use watcher::Event;
        match event {
            Event::Apply(obj) => {
                let entry = Entry::of(obj);
                let old = self
                    .store
                    .get(&store_ref(&entry.namespace, &entry.name))
                    .map(|o| Entry::of(o.as_ref()));
                self.writer.apply_watcher_event(event);
                let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
                if let Some(old) = old.filter(|o| *o != entry) {
                    index.remove(&old);
                }
                index.insert(&entry);
            }
            Event::Delete(obj) => {
                let entry = Entry::of(obj);
                self.writer.apply_watcher_event(event);
                self.index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&entry);
                // A copy we wrote before the deletion must not stand in for it.
                self.overlay
                    .forget(&(entry.namespace.clone(), entry.name.clone()));
                if let Some(f) = &self.on_delete {
                    f(&entry.namespace, &entry.name);
                }
            }
            Event::Init | Event::InitApply(_) => self.writer.apply_watcher_event(event),
            Event::InitDone => {
                // A relist replaces the store whole (objects deleted while the watch was
                // down are gone): rebuild the index from what it now holds.
                self.writer.apply_watcher_event(event);
                let mut fresh = Index::default();
                for obj in self.store.state() {
                    fresh.insert(&Entry::of(obj.as_ref()));
                }
                *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
        }
    }
}

#[cfg(test)]
mod tests;
