//! What the controllers remember about each object between reconciles: its consecutive
//! failures (for the error backoff) and since when its interim status has been held back
//! (see [`PerObject::hold_interim`]). Entries leave when the object reconciles cleanly, is
//! no longer held, or is deleted ([`PerObject::forget`], called by its watch), so the
//! maps hold only live objects however many come and go.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest an interim status is held back (see [`PerObject::hold_interim`]).
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// A controller's object: (controller, namespace, name).
pub type Key = (&'static str, Box<str>, Box<str>);

/// Builds a [`Key`].
pub fn key(controller: &'static str, namespace: &str, name: &str) -> Key {
    (controller, namespace.into(), name.into())
}

#[derive(Debug, Default)]
struct Maps {
    failures: HashMap<Key, u32>,
    held: HashMap<Key, Instant>,
}

/// Per-object failure counts and holds.
#[derive(Debug, Default)]
pub struct PerObject {
    maps: Mutex<Maps>,
}

impl PerObject {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a failed reconcile; returns how many in a row.
    pub fn failed(&self, key: Key) -> u32 {
        let mut maps = self.lock();
        let n = maps.failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// A reconcile succeeded: the backoff starts over.
    pub fn succeeded(&self, key: &Key) {
        self.lock().failures.remove(key);
    }

    /// Whether to hold back an interim status ("still rolling out") that a change
    /// already on its way will supersede: a child just written, or one whose own
    /// controller has not reported on its latest spec yet. Its report triggers the next
    /// reconcile, which writes a status with something new in it; each skipped write is
    /// one the API server does not have to make, and a burst of deploys is mostly such
    /// writes. Held for at most [`MAX_HOLD`], so a child that never reports (its
    /// controller is down) cannot keep the status from moving. Returns how long to wait.
    pub fn hold_interim(&self, key: Key, superseded_soon: bool) -> Option<Duration> {
        let mut maps = self.lock();
        if !superseded_soon {
            maps.held.remove(&key);
            return None;
        }
        let since = *maps.held.entry(key.clone()).or_insert_with(Instant::now);
        match MAX_HOLD.checked_sub(since.elapsed()) {
            Some(left) if !left.is_zero() => Some(left),
            _ => {
                maps.held.remove(&key);
                None
            }
        }
    }

    /// Drops everything kept about `controller`'s object `namespace/name` (deleted).
    pub fn forget(&self, controller: &'static str, namespace: &str, name: &str) {
        let key = key(controller, namespace, name);
        let mut maps = self.lock();
        maps.failures.remove(&key);
        maps.held.remove(&key);
    }

    /// (objects with failures, objects held): for the `tracked_objects` gauge and tests.
    pub fn sizes(&self) -> (usize, usize) {
        let maps = self.lock();
        (maps.failures.len(), maps.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_up_and_reset_and_holds_expire() {
        let p = PerObject::default();
        let k = key("app", "a", "shop");
        assert_eq!(p.failed(k.clone()), 1);
        assert_eq!(p.failed(k.clone()), 2);
        p.succeeded(&k);
        assert_eq!(p.failed(k.clone()), 1);
        assert!(p.hold_interim(k.clone(), true).is_some());
        assert!(p.hold_interim(k.clone(), false).is_none());
        assert_eq!(p.sizes(), (1, 0));
    }

    #[test]
    fn a_deleted_object_leaves_both_maps_and_its_twin_stays() {
        let p = PerObject::default();
        p.failed(key("app", "a", "shop"));
        assert!(p.hold_interim(key("app", "a", "shop"), true).is_some());
        // The twin: same name in another namespace, and another controller's object.
        p.failed(key("app", "b", "shop"));
        p.failed(key("formation", "a", "shop"));
        p.forget("app", "a", "shop");
        assert_eq!(p.sizes(), (2, 0));
        p.forget("app", "b", "shop");
        p.forget("formation", "a", "shop");
        assert_eq!(p.sizes(), (0, 0));
    }
}
