//! The Flynn operator: Flynn's layer 0 mapped onto Kubernetes.
//!
//! Four reconcilers, each a `validate → build → apply → update status` pipeline whose
//! `build` step is a pure function (manifest in, objects out) with unit tests:
//!
//! - [`app`]: an App → its one Formation and default Route; a config change → a new
//!   Release; rollout tracking, `Degraded` with the reason read from pods, auto-rollback;
//!   Release history pruning.
//! - [`formation`]: a Formation → one Deployment per process type (`<app>-<type>`) and one
//!   Service per listening type, built from the Release.
//! - [`route`]: conflict detection across all namespaces (oldest Route wins), `Accepted` /
//!   `Conflict` and the Route's URL.
//!
//! - [`resource`]: a Resource → its store made by a provider (Postgres, Redis), its
//!   credentials Secret, and a Release of its App with the URL as a config var.
//!
//! Beside them, [`grants`] binds the git receiver's and the router's roles only in the
//! namespaces where they have work (Apps; Routes naming a certificate).
//!
//! Around them: [`leader`] election on a coordination.k8s.io Lease, [`metrics`] and the
//! health [`server`], [`settings`] and the shared [`context`].

pub mod app;
pub mod cache;
pub mod context;
pub mod error;
pub mod formation;
pub mod grants;
pub mod leader;
pub mod metrics;
pub mod per_object;
pub mod resource;
pub mod rollout;
pub mod route;
pub mod run;
pub mod server;
pub mod settings;
pub mod unreadable;

pub use context::Context;
pub use error::{Error, Result};
pub use run::run;
pub use settings::Settings;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "flynn-operator";
