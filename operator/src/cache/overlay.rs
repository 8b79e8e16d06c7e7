//! Read-your-writes: the objects the operator wrote, until the watch has delivered them.
//!
//! A store learns of a write one watch round trip after it returns. A reconcile
//! triggered in between (an App has four triggers) would work from the copy before it,
//! redo the write and announce it twice. The write's response *is* the object as
//! stored, so it is kept here, and every read returns the newer of the two (by
//! resourceVersion). Entries leave when a read finds the store caught up, when the
//! object is deleted, or after [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::index::{Entry, Index, Key};
use super::projection::Projection;

/// How long a written object may stand in for the store's copy. The store normally
/// catches up within milliseconds; this bounds what a lost watch event (or an object
/// deleted right after we wrote it) can make us believe.
pub const TTL: Duration = Duration::from_secs(10);

/// Past this many entries, a write first sweeps out those the store has caught up with
/// (entries normally leave when read; this bounds the ones no read came back for).
const SWEEP_AT: usize = 64;

struct Written<P> {
    obj: Arc<P>,
    at: Instant,
    entry: Entry,
}

struct State<P> {
    written: HashMap<Key, Written<P>>,
    index: Index,
}

/// The operator's own recent writes of one kind.
pub struct Overlay<P> {
    state: Mutex<State<P>>,
}

impl<P> Default for Overlay<P> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                written: HashMap::new(),
                index: Index::default(),
            }),
        }
    }
}

impl<P: Projection> std::fmt::Debug for Overlay<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("written", &self.lock().written.len())
            .finish()
    }
}

/// Whether `mine` is a later version of the object than the store's `cached`.
///
/// resourceVersions are opaque by contract, but on every API server backed by etcd they
/// are its revision numbers, which only grow. Should one not parse, the store is trusted:
/// a wrong answer costs one redundant (idempotent) write, never a lost one.
fn newer<P: Projection>(mine: &P, cached: &P) -> bool {
    match (mine.revision(), cached.revision()) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

impl<P: Projection> Overlay<P> {
    fn lock(&self) -> MutexGuard<'_, State<P>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `obj`, just written. `in_store` answers the store's copy of a key, for the
    /// sweep.
    pub fn remember(&self, obj: P, in_store: impl Fn(&Key) -> Option<Arc<P>>) -> Arc<P> {
        let obj = Arc::new(obj);
        let entry = Entry::of(obj.as_ref());
        let mut state = self.lock();
        if state.written.len() >= SWEEP_AT {
            let stale: Vec<Key> = state
                .written
                .iter()
                .filter(|(k, w)| {
                    w.at.elapsed() >= TTL
                        || in_store(k).is_some_and(|cached| !newer(w.obj.as_ref(), &cached))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                state.remove(&k);
            }
        }
        let key = (entry.namespace.clone(), entry.name.clone());
        state.remove(&key);
        state.index.insert(&entry);
        state.written.insert(
            key,
            Written {
                obj: obj.clone(),
                at: Instant::now(),
                entry,
            },
        );
        obj
    }

    /// The fresher of our write of `key` and the store's `cached` copy.
    pub fn freshest(&self, key: &Key, cached: Option<Arc<P>>) -> Option<Arc<P>> {
        let mut state = self.lock();
        if let Some(w) = state.written.get(key) {
            if w.at.elapsed() < TTL && cached.as_deref().is_none_or(|c| newer(w.obj.as_ref(), c)) {
                return Some(w.obj.clone());
            }
            // The store has caught up (or the entry is too old to trust): it answers alone.
            state.remove(key);
        }
        cached
    }

    /// Forgets our write of `key` (the object was deleted).
    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// Names of the objects of `app` we wrote in `namespace`.
    pub fn of_app(&self, namespace: &str, app: &str) -> Vec<Box<str>> {
        self.lock().index.of_app(namespace, app)
    }

    /// Objects we wrote claiming `claim`.
    pub fn claiming(&self, claim: &str) -> Vec<Key> {
        self.lock().index.claiming(claim)
    }

    /// How many writes are held (for tests).
    pub fn len(&self) -> usize {
        self.lock().written.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<P> State<P> {
    fn remove(&mut self, key: &Key) {
        if let Some(w) = self.written.remove(key) {
            self.index.remove(&w.entry);
        }
    }
}
