//! The `flynn.io/v1alpha1` API: the custom resources every Flynn component reads and writes,
//! and the small shared vocabulary around them (label keys, object names, condition types,
//! name validation, the pod security every Flynn pod runs with).
//!
//! | Kind          | Short name | What it is                                                         |
//! |---------------|------------|--------------------------------------------------------------------|
//! | [`App`]       | `flapp`    | an application: desired process counts, current release, rollout  |
//! | [`Release`]   | `flrel`    | an immutable build + config, named `<app>-v<version>`              |
//! | [`Formation`] | `flform`   | what runs: one per App, named after it; a Deployment per process  |
//! | [`Route`]     | `flroute`  | an HTTP (domain + path) or TCP (port) route to an app's process    |
//! | [`Resource`]  | `flres`    | a database (Postgres, Redis) provisioned for an App                |
//!
//! All five are namespaced and in the `flynn` category (`kubectl get flynn`).
//!
//! Validation the API server can do is in the schema or in CEL rules, so a bad manifest is
//! refused by `kubectl apply` with a message naming the field; the Rust-side helpers in
//! [`validation`] apply the same name rules for code that builds names before they reach the
//! API server (the CLI, gitreceiver).
//!
//! The CRD YAML in `crds/` and `charts/flynn/crds/` is generated from these types by the
//! `crdgen` binary: `cargo run -p flynn-crds --bin crdgen`.

pub mod app;
pub mod conditions;
pub mod config;
pub mod formation;
pub mod host;
pub mod labels;
pub mod list;
pub mod names;
pub mod next_release;
pub mod ownership;
pub mod pod_security;
pub mod quantity;
pub mod release;
pub mod resource;
pub mod rollout;
pub mod route;
pub mod ssh_key;
pub mod validation;

mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use app::{App, AppSpec, AppStatus, DeployStrategy, ProcessStatus, Rollback, Rollout};
pub use formation::{Formation, FormationSpec, FormationStatus};
pub use release::{
    Artifact, HealthCheck, HealthCheckType, ProcessPort, ProcessSpec, Protocol, Release,
    ReleaseSpec, Resources, Slug,
};
pub use resource::{DeletionPolicy, Provider, Resource, ResourceSpec, ResourceStatus};
pub use route::{HttpRoute, Route, RouteSpec, RouteStatus, RouteType, TcpRoute};

/// The API group of every Flynn custom resource.
pub const GROUP: &str = "flynn.io";
/// The one served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// The category all Flynn kinds are in: `kubectl get flynn` lists them together.
pub const CATEGORY: &str = "flynn";

/// Every Flynn CustomResourceDefinition, in a fixed order (App, Release, Formation, Route,
/// Resource).
///
/// This is what `crdgen` writes and what the tests install.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        App::crd(),
        Release::crd(),
        Formation::crd(),
        Route::crd(),
        Resource::crd(),
    ]
}

/// The header of every generated CRD file.
pub const GENERATED_HEADER: &str = "# Generated from the Rust types in crds/src by `cargo run -p flynn-crds --bin crdgen`. Do not edit.\n";

/// Rendering a CRD to YAML failed (a bug in the types, not something a user can cause).
#[derive(Debug, thiserror::Error)]
#[error("cannot render CustomResourceDefinition {name} as YAML: {source}")]
pub struct RenderError {
    name: String,
    #[source]
    source: serde_saphyr::SerializeError,
}

/// Every CRD as `(file name, YAML)`, e.g. `("flynn.io_apps.yaml", "...")`, in [`crds`] order.
///
/// Deterministic: the same types always give byte-identical files, so `crdgen` output can be
/// committed and compared (crds/tests/crd_drift.rs).
pub fn crd_files() -> Result<Vec<(String, String)>, RenderError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_saphyr::to_string(&crd).map_err(|source| RenderError {
                name: name.clone(),
                source,
            })?;
            Ok((
                format!("{GROUP}_{}.yaml", crd.spec.names.plural),
                format!("{GENERATED_HEADER}{yaml}"),
            ))
        })
        .collect()
}
