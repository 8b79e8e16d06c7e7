//! How many pushes may run at once: in all, and into the Apps of one namespace. Each push
//! runs git, a build Job and a source tarball; without a bound one team could start any
//! number and take the receiver's memory, temporary space and the cluster's build capacity
//! from every other team. A push over a limit is refused at once (a queue would only move
//! the pile-up into held SSH connections), and told when to try again.
//!
//! A push takes its place after its authorization (so someone who may not push to a
//! namespace can neither use its places nor learn how many are taken) and before it waits
//! for its App's lock (a push waiting there holds a connection too, so it counts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The places taken, in all and per namespace.
#[derive(Debug)]
pub struct PushSlots {
    max_total: usize,
    max_per_namespace: usize,
    taken: Mutex<Taken>,
}

#[derive(Debug, Default)]
struct Taken {
    total: usize,
    per_namespace: HashMap<String, usize>,
}

/// One running push's place; given back when dropped.
#[derive(Debug)]
pub struct PushSlot {
    slots: Arc<PushSlots>,
    namespace: String,
}

/// Why a push may not start now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error(
        "{running} pushes to namespace {namespace} are running, the platform's limit for one namespace: try again when one of them has finished (the platform operator sets this limit: --max-concurrent-pushes-per-namespace, FLYNN_MAX_CONCURRENT_PUSHES_PER_NAMESPACE; chart value gitreceiver.maxConcurrentPushesPerNamespace)"
    )]
    Namespace { namespace: String, running: usize },
    #[error(
        "{running} pushes are running on this receiver, its limit: try again in a minute (the platform operator sets this limit: --max-concurrent-pushes, FLYNN_MAX_CONCURRENT_PUSHES; chart value gitreceiver.maxConcurrentPushes)"
    )]
    Total { running: usize },
}

impl PushSlots {
    pub fn new(max_total: usize, max_per_namespace: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_namespace,
            taken: Mutex::new(Taken::default()),
        })
    }

    /// Takes a place for a push into `namespace`, or says which limit is reached. The
    /// namespace's limit is checked first: it is the one the pusher's team can act on.
    pub fn try_take(self: &Arc<Self>, namespace: &str) -> Result<PushSlot, Full> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let in_namespace = taken.per_namespace.get(namespace).copied().unwrap_or(0);
        if in_namespace >= self.max_per_namespace {
            return Err(Full::Namespace {
                namespace: namespace.to_owned(),
                running: in_namespace,
            });
        }
        if taken.total >= self.max_total {
            return Err(Full::Total {
                running: taken.total,
            });
        }
        taken.total += 1;
        *taken.per_namespace.entry(namespace.to_owned()).or_default() += 1;
        Ok(PushSlot {
            slots: self.clone(),
            namespace: namespace.to_owned(),
        })
    }

    /// Pushes running now, in all.
    pub fn running(&self) -> usize {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for PushSlot {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.total = taken.total.saturating_sub(1);
        if let Some(n) = taken.per_namespace.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Namespaces come and go: keep only those with pushes running.
                taken.per_namespace.remove(&self.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_at_its_limit_is_refused_while_another_starts() {
        let slots = PushSlots::new(3, 2);
        let a1 = slots.try_take("team-a").unwrap();
        let _a2 = slots.try_take("team-a").unwrap();
        let err = slots.try_take("team-a").unwrap_err();
        assert_eq!(
            err,
            Full::Namespace {
                namespace: "team-a".into(),
                running: 2
            }
        );
        assert!(
            err.to_string()
                .contains("gitreceiver.maxConcurrentPushesPerNamespace"),
            "{err}"
        );
        // The twin from another namespace starts.
        let _b1 = slots.try_take("team-b").unwrap();
        // Now the receiver is full: team-b's second is refused by the total.
        let err = slots.try_take("team-b").unwrap_err();
        assert_eq!(err, Full::Total { running: 3 });
        assert!(
            err.to_string().contains("gitreceiver.maxConcurrentPushes)"),
            "{err}"
        );
        // A place given back is taken again.
        drop(a1);
        assert_eq!(slots.running(), 2);
        let _a3 = slots.try_take("team-a").unwrap();
        assert_eq!(slots.running(), 3);
    }

    #[test]
    fn places_are_given_back_and_empty_namespaces_forgotten() {
        let slots = PushSlots::new(16, 4);
        let taken: Vec<_> = (0..4).map(|_| slots.try_take("a").unwrap()).collect();
        assert!(slots.try_take("a").is_err());
        drop(taken);
        assert_eq!(slots.running(), 0);
        assert!(slots.taken.lock().unwrap().per_namespace.is_empty());
        assert!(slots.try_take("a").is_ok());
    }
}
