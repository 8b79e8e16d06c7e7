//! Label keys every component puts on, and selects, the objects it manages.
//!
//! The operator labels each Deployment, Service and Pod it creates with [`APP`], [`PROCESS`]
//! and [`RELEASE`]; the router finds an app's endpoints with [`selector`]. Values are App names,
//! process types and Release names, all valid label values by the rules in
//! [`crate::validation`].

use std::collections::BTreeMap;

/// The App an object belongs to (value: App name).
pub const APP: &str = "flynn.io/app";
/// The process type an object runs (value: process type, e.g. `web`).
pub const PROCESS: &str = "flynn.io/process";
/// The Release an object runs (value: Release name, `<app>-v<version>`).
pub const RELEASE: &str = "flynn.io/release";
/// A build Job and its pod (value: the Job's name): they carry [`APP`] but run no process.
pub const BUILD: &str = "flynn.io/build";
/// Marks a namespace created by a test, so a leaked one is easy to find and delete.
pub const TEST: &str = "flynn.io/test";
/// The standard "who manages this" label (value: [`MANAGED_BY_FLYNN`]).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The standard "part of which application" label; `flynn` on the CRDs and the platform's own
/// objects (`kubectl wait crd -l app.kubernetes.io/part-of=flynn`).
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// The value of [`MANAGED_BY`] on everything Flynn creates.
pub const MANAGED_BY_FLYNN: &str = "flynn";

/// Labels that select the pods of one process type of an App, regardless of release.
///
/// Deployment selectors are immutable, so they must not include the release: a new release
/// rolls the same Deployment.
pub fn selector(app: &str, process: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP.to_owned(), app.to_owned()),
        (PROCESS.to_owned(), process.to_owned()),
    ])
}

/// All labels the operator puts on a workload object (and its pod template) for one process
/// type of one release: the [`selector`] plus [`RELEASE`] and [`MANAGED_BY`].
pub fn workload(app: &str, process: &str, release: &str) -> BTreeMap<String, String> {
    let mut labels = selector(app, process);
    labels.insert(RELEASE.to_owned(), release.to_owned());
    labels.insert(MANAGED_BY.to_owned(), MANAGED_BY_FLYNN.to_owned());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_is_app_and_process_only() {
        let s = selector("node-demo", "web");
        assert_eq!(s.len(), 2);
        assert_eq!(s[APP], "node-demo");
        assert_eq!(s[PROCESS], "web");
    }

    #[test]
    fn workload_labels_extend_the_selector() {
        let l = workload("node-demo", "web", "node-demo-v3");
        assert!(
            selector("node-demo", "web")
                .iter()
                .all(|(k, v)| l.get(k) == Some(v))
        );
        assert_eq!(l[RELEASE], "node-demo-v3");
        assert_eq!(l[MANAGED_BY], "flynn");
    }
}
