//! Secondary keys of a cache: the objects of each (namespace, App), and, for Routes, the
//! objects claiming each host or port. Lookups are hash lookups: their cost does not
//! grow with the number of Apps (linkerd's policy controller indexes its projections the
//! same way, by namespace and name of what selects them).
//!
//! The index holds keys only; the objects live in the store (or the overlay), so a key
//! found here whose object is gone, or now belongs elsewhere, is dropped by the reader.

use std::collections::HashMap;

use super::projection::Projection;

/// A namespace and a name within it.
pub type Key = (Box<str>, Box<str>);

/// The secondary keys of a set of objects.
#[derive(Debug, Default)]
pub struct Index {
    /// (namespace, App) → names of its objects in that namespace.
    by_app: HashMap<Key, Vec<Box<str>>>,
    /// Claim (`host shop.example.com`, `TCP port 25432`) → objects claiming it.
    by_claim: HashMap<Box<str>, Vec<Key>>,
    /// Parent domain → exact-host claims under it, so a wildcard's change finds the
    /// hosts it covers (`*.example.com` → `shop.example.com`).
    by_parent: HashMap<Box<str>, Vec<Key>>,
}

/// The parent domain of an exact-host claim (`host shop.example.com` → `example.com`);
/// `None` for wildcards and ports.
fn parent(claim: &str) -> Option<&str> {
    let host = claim.strip_prefix("host ")?;
    let (label, parent) = host.split_once('.')?;
    (label != "*").then_some(parent)
}

fn add<K: std::hash::Hash + Eq, V: PartialEq>(map: &mut HashMap<K, Vec<V>>, k: K, v: V) {
    let vs = map.entry(k).or_default();
    if !vs.contains(&v) {
        vs.push(v);
        vs.shrink_to_fit();
    }
}

fn drop_one<V: PartialEq>(map: &mut HashMap<Box<str>, Vec<V>>, k: &str, v: &V) {
    if let Some(vs) = map.get_mut(k) {
        vs.retain(|x| x != v);
        if vs.is_empty() {
            map.remove(k);
        }
    }
}

/// What an object is indexed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub app: Option<Box<str>>,
    pub claim: Option<Box<str>>,
}

impl Entry {
    pub fn of<P: Projection>(obj: &P) -> Self {
        Self {
            namespace: obj.namespace().unwrap_or_default().into(),
            name: obj.name().unwrap_or_default().into(),
            app: obj.app().filter(|_| P::BY_APP).map(Into::into),
            claim: obj.claim().map(Into::into),
        }
    }

    fn key(&self) -> Key {
        (self.namespace.clone(), self.name.clone())
    }
}

impl Index {
    pub fn insert(&mut self, e: &Entry) {
        if let Some(app) = &e.app {
            add(
                &mut self.by_app,
                (e.namespace.clone(), app.clone()),
                e.name.clone(),
            );
        }
        if let Some(claim) = &e.claim {
            add(&mut self.by_claim, claim.clone(), e.key());
            if let Some(parent) = parent(claim) {
                add(&mut self.by_parent, parent.into(), e.key());
            }
        }
    }

    pub fn remove(&mut self, e: &Entry) {
        if let Some(app) = &e.app {
            let k = (e.namespace.clone(), app.clone());
            if let Some(names) = self.by_app.get_mut(&k) {
                names.retain(|n| *n != e.name);
                if names.is_empty() {
                    self.by_app.remove(&k);
                }
            }
        }
        if let Some(claim) = &e.claim {
            let key = e.key();
            drop_one(&mut self.by_claim, claim, &key);
            if let Some(parent) = parent(claim) {
                drop_one(&mut self.by_parent, parent, &key);
            }
        }
    }

    /// Names of the objects of `app` in `namespace`.
    pub fn of_app(&self, namespace: &str, app: &str) -> Vec<Box<str>> {
        self.by_app
            .get(&(Box::from(namespace), Box::from(app)))
            .cloned()
            .unwrap_or_default()
    }

    /// Objects claiming `claim`, in every namespace.
    pub fn claiming(&self, claim: &str) -> Vec<Key> {
        self.by_claim.get(claim).cloned().unwrap_or_default()
    }

    /// Objects claiming an exact host directly under `parent` (`example.com`).
    pub fn hosts_under(&self, parent: &str) -> Vec<Key> {
        self.by_parent.get(parent).cloned().unwrap_or_default()
    }

    /// How many (namespace, App) pairs have objects (for tests).
    pub fn apps(&self) -> usize {
        self.by_app.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: &str, name: &str, app: &str, claim: Option<&str>) -> Entry {
        Entry {
            namespace: ns.into(),
            name: name.into(),
            app: Some(app.into()),
            claim: claim.map(Into::into),
        }
    }

    #[test]
    fn objects_are_found_by_app_and_claim_and_leave_without_a_trace() {
        let mut i = Index::default();
        let a = entry("a", "shop", "shop", Some("host shop.example.com"));
        let b = entry("b", "shop", "shop", Some("host shop.example.com"));
        let w = entry("c", "all", "edge", Some("host *.example.com"));
        for e in [&a, &b, &w] {
            i.insert(e);
        }
        // Inserting twice keeps one key.
        i.insert(&a);
        assert_eq!(i.of_app("a", "shop"), vec![Box::from("shop")]);
        assert!(i.of_app("a", "edge").is_empty());
        assert_eq!(i.claiming("host shop.example.com").len(), 2);
        assert_eq!(i.hosts_under("example.com").len(), 2);
        assert_eq!(i.claiming("host *.example.com").len(), 1);
        for e in [&a, &b, &w] {
            i.remove(e);
        }
        assert_eq!(i.apps(), 0);
        assert!(i.by_claim.is_empty() && i.by_parent.is_empty());
    }
}
