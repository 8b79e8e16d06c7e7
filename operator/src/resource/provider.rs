//! The provider interface: what the Resource controller asks of a kind of backing service,
//! and the registry of the providers this operator runs.
//!
//! The controller does everything that is the same for every kind: the finalizer, the App
//! and env checks, the credentials Secret (written before the store is made, with a
//! password the controller draws), the Release with the URL, status and Events. A provider
//! only knows its service:
//!
//! - [`ResourceProvider::connection`]: where the store of a Resource is and who logs in
//!   (pure, from the Resource's uid, so the Secret can be written before anything exists);
//! - [`ResourceProvider::provision`]: make or update the store so that the Secret's password
//!   logs in (called on every reconcile: it must converge from any half-made state);
//! - [`ResourceProvider::deprovision`]: drop or retain the data (idempotent: it may run again
//!   after a failure, or for a store that was never made).
//!
//! Another implementation of the same trait (e.g. one that writes a CloudNativePG `Cluster`
//! or `Database` object and waits for it) plugs in through [`Registry`] with no change to the
//! `Resource` API: see "Resources and providers" in the operator's README.

use std::collections::BTreeMap;
use std::sync::Arc;

use flynn_crds::resource::{DeletionPolicy, Provider, Resource};
use futures::future::BoxFuture;

/// One plan of a provider: a name users choose and what it gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub name: &'static str,
    /// Shown in the `UnknownPlan` message and the README.
    pub summary: &'static str,
    /// Postgres: the role's connection limit.
    pub connection_limit: i32,
    /// Redis: `maxmemory` (and the container's memory limit is set above it).
    pub memory_mib: u32,
    /// Redis: the size of its volume.
    pub storage_gib: u32,
}

/// How the App reaches its store: what the credentials Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// Postgres: the database name.
    pub database: Option<String>,
    /// The provider's own names for what it makes (`status.providerIds`).
    pub ids: BTreeMap<String, String>,
}

/// Why a provider could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The service cannot be reached or refused (Postgres down, a login refused): the
    /// Resource says so (`ServiceUnavailable`) and the operator retries with backoff.
    #[error("{0}")]
    Unavailable(String),
    /// Writing the provider's Kubernetes objects failed.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

/// What a provider is asked to provision or deprovision.
#[allow(missing_debug_implementations)] // Holds the password: never printed.
pub struct Request<'a> {
    pub client: &'a kube::Client,
    pub resource: &'a Resource,
    pub plan: &'a Plan,
    /// The password from the credentials Secret (provision only; empty on deprovision).
    pub password: &'a str,
    pub connection: &'a Connection,
}

/// Whether the store is ready to be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provisioned {
    Ready,
    /// Made, not serving yet (a Redis pod starting): the message says what is awaited.
    Waiting(String),
}

/// A kind of backing service (see the module doc).
pub trait ResourceProvider: Send + Sync {
    /// The `spec.provider` this serves.
    fn kind(&self) -> Provider;

    /// Why this provider cannot serve on this platform, and how to enable it; `None` when
    /// it can.
    fn disabled(&self) -> Option<String>;

    /// The plans, the default first.
    fn plans(&self) -> &[Plan];

    /// Where the store of `resource` is and who logs in (pure, deterministic).
    fn connection(&self, resource: &Resource) -> Connection;

    /// The URL of `connection` with `password` (what the App's config var holds).
    fn url(&self, connection: &Connection, password: &str) -> String;

    /// Makes or updates the store so that `request.password` logs in.
    fn provision<'a>(
        &'a self,
        request: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Provisioned, ProviderError>>;

    /// Drops (`Delete`) or retains (`Retain`) the data. Idempotent.
    fn deprovision<'a>(
        &'a self,
        request: &'a Request<'a>,
        policy: DeletionPolicy,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// The providers this operator runs, by kind.
#[derive(Clone, Default)]
pub struct Registry {
    providers: Vec<Arc<dyn ResourceProvider>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|p| p.kind()))
            .finish()
    }
}

impl Registry {
    /// Adds `provider`, replacing one of the same kind.
    pub fn with(mut self, provider: Arc<dyn ResourceProvider>) -> Self {
        self.providers.retain(|p| p.kind() != provider.kind());
        self.providers.push(provider);
        self
    }

    pub fn get(&self, kind: Provider) -> Option<&Arc<dyn ResourceProvider>> {
        self.providers.iter().find(|p| p.kind() == kind)
    }
}

/// The plan `requested` (the default when `None`) of `provider`, or the error message
/// listing the plans.
pub fn plan<'a>(
    provider: &'a dyn ResourceProvider,
    requested: Option<&str>,
) -> Result<&'a Plan, String> {
    let plans = provider.plans();
    match requested {
        None => plans
            .first()
            .ok_or_else(|| format!("provider {} has no plans", provider.kind())),
        Some(name) => plans.iter().find(|p| p.name == name).ok_or_else(|| {
            let list: Vec<String> = plans
                .iter()
                .map(|p| format!("{} ({})", p.name, p.summary))
                .collect();
            format!(
                "{} has no plan {name:?}; its plans are: {}. Delete the Resource and add it \
                 again with one of them (flynn resource add {} --plan NAME)",
                provider.kind(),
                list.join(", "),
                provider.kind()
            )
        }),
    }
}

/// The name a provider gives the store of `resource`: `flynn_<uid without dashes>`. From
/// the uid (unique and never reused), so a Resource deleted and added again under the same
/// name gets a new store, and a retained one is never taken over.
pub fn store_name(resource: &Resource) -> String {
    let uid = resource.metadata.uid.as_deref().unwrap_or_default();
    format!(
        "flynn_{}",
        uid.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    )
}
