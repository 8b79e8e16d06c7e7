//! Watched objects the operator cannot read: reported and skipped, never a stuck watch.
//!
//! kube's watcher deserializes each list page and watch event into the typed struct. One
//! object that does not fit it (an integer past its type's range that the API server
//! accepted, a status field written by another version) fails the whole page, and the
//! watcher retries the same list with backoff, forever: every object of the kind goes
//! unreconciled, with one opaque error in the log. Here each object is parsed on its own
//! ([`Lenient`]), as linkerd's policy controller indexes each resource on its own: one
//! that fails is reported on itself (a Warning Event saying what did not parse) and in
//! the `unreadable_objects_total` metric, and skipped. The last copy the operator could
//! read, if any, stays in its cache: what was admitted and running keeps running.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

/// An object of kind `K` as the watch delivered it: parsed, or why not.
#[derive(Clone, Debug)]
pub struct Lenient<K> {
    /// Identity and resourceVersion (the watcher resumes from it); for an unreadable
    /// object, its whole metadata, to report on it.
    meta: ObjectMeta,
    pub parsed: Result<K, String>,
}

impl<K: Resource<DynamicType = ()>> Lenient<K> {
    /// What to report about an unreadable object, `None` for a readable one.
    pub fn unreadable(&self) -> Option<Unreadable> {
        let error = self.parsed.as_ref().err()?;
        Some(Unreadable {
            reference: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: self.meta.name.clone(),
                namespace: self.meta.namespace.clone(),
                uid: self.meta.uid.clone(),
                resource_version: self.meta.resource_version.clone(),
                field_path: None,
            },
            error: error.clone(),
        })
    }
}

/// An object that could not be read, and why.
#[derive(Clone, Debug)]
pub struct Unreadable {
    pub reference: ObjectReference,
    pub error: String,
}

impl Unreadable {
    /// The Event's note: what failed and how to fix it.
    pub fn note(&self) -> String {
        let kind = self.reference.kind.as_deref().unwrap_or("object");
        format!(
            "the operator cannot read this {kind} ({}), so it is not reconciled (the last \
             version it could read, if any, stays in effect): correct the field, e.g. with \
             `kubectl edit {} {}`",
            self.error,
            kind.to_lowercase(),
            self.reference.name.as_deref().unwrap_or_default(),
        )
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

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

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

impl<'de, K: Resource + DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a `Value`: the typed parse can then fail without failing the page.
        let value = serde_json::Value::deserialize(d)?;
        let metadata = |value: &serde_json::Value| {
            value
                .get("metadata")
                .map(ObjectMeta::deserialize)
                .transpose()
                .map(Option::unwrap_or_default)
        };
        match K::deserialize(&value) {
            Ok(obj) => {
                let m = obj.meta();
                let meta = ObjectMeta {
                    name: m.name.clone(),
                    namespace: m.namespace.clone(),
                    resource_version: m.resource_version.clone(),
                    ..ObjectMeta::default()
                };
                Ok(Self {
                    meta,
                    parsed: Ok(obj),
                })
            }
            Err(e) => Ok(Self {
                // Without readable metadata there is nothing to report on: fail as before.
                meta: metadata(&value).map_err(D::Error::custom)?,
                parsed: Err(e.to_string()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flynn_crds::App;
    use serde_json::json;

    fn app(count: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "flynn.io/v1alpha1", "kind": "App",
            "metadata": {"name": "shop", "namespace": "a", "uid": "u1", "resourceVersion": "5"},
            "spec": {"release": "shop-v1", "processes": {"web": count}}})
    }

    #[test]
    fn an_object_that_does_not_fit_is_kept_as_its_identity_and_the_reason() {
        // The attack: a process count past i32. The twin: the same App with 1.
        let bad: Lenient<App> = serde_json::from_value(app(json!(3_000_000_000u64))).unwrap();
        let good: Lenient<App> = serde_json::from_value(app(json!(1))).unwrap();
        assert!(good.parsed.is_ok() && good.unreadable().is_none());
        assert_eq!(good.meta().resource_version.as_deref(), Some("5"));
        let u = bad.unreadable().expect("unreadable");
        assert_eq!(u.reference.name.as_deref(), Some("shop"));
        assert_eq!(u.reference.uid.as_deref(), Some("u1"));
        assert_eq!(u.reference.kind.as_deref(), Some("App"));
        assert!(u.error.contains("3000000000"), "{}", u.error);
        assert!(u.note().contains("kubectl edit app shop"), "{}", u.note());
        // A list page holding both still parses: the readable one is not lost.
        let page: Vec<Lenient<App>> =
            serde_json::from_value(json!([app(json!(3_000_000_000u64)), app(json!(2))])).unwrap();
        assert_eq!(page.iter().filter(|a| a.parsed.is_ok()).count(), 1);
    }
}
