//! `Resource`: a database (or other backing service) provisioned for one App, as Flynn's
//! `flynn resource add postgres` gave one.
//!
//! The operator reconciles each Resource through a *provider* (Postgres, Redis): the
//! provider makes the backing store (a database and role on the platform's Postgres, a
//! Redis of its own), the operator writes its credentials into a Secret in the App's
//! namespace ([`ResourceStatus::secret`], keys in [`secret_keys`]) and makes a new Release
//! of the App whose config has the connection URL under [`ResourceSpec::env`] (or the
//! provider's default name). The URL goes from that Secret into the Release's config
//! snapshot, itself a Secret: it is never written in plain text into an App, Release or
//! Deployment.
//!
//! Deleting a Resource makes a Release without the variable; the data itself is deleted
//! only when `spec.deletionPolicy` is `Delete` (`flynn resource remove --delete-data`).
//! With the default, `Retain`, the provider keeps the data (and says where) until the
//! platform's retention expires.
//!
//! `app`, `provider` and `env` are immutable: a Resource cannot be moved to another App or
//! change what it is.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    CustomResource, KubeSchema,
    core::{Message, Rule},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    schema,
    validation::{APP_NAME_PATTERN, ENV_NAME_PATTERN, MAX_APP_NAME_LEN},
};

/// A backing service (database) provisioned for an App.
// Clippy reads each `printcolumn(type_ = "string", ...)` below as a duplicate of the first.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flynn.io",
    version = "v1alpha1",
    kind = "Resource",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    shortname = "flres",
    category = "flynn",
    label("app.kubernetes.io/part-of", "flynn"),
    selectable = ".spec.app",
    doc = "A backing service (Postgres database, Redis) provisioned for an App, its URL given to the App's processes as a config var.",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.app"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Env", type_ = "string", json_path = ".status.env"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = immutable_optional("env"))]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct ResourceSpec {
    /// Name of the App whose processes get the resource's URL. Immutable.
    #[schemars(length(min = 1, max = MAX_APP_NAME_LEN), regex(pattern = APP_NAME_PATTERN))]
    #[x_kube(validation = immutable("spec.app"))]
    pub app: String,

    /// What kind of backing service: `postgres` or `redis`. Immutable.
    #[x_kube(validation = immutable("spec.provider"))]
    pub provider: Provider,

    /// The provider's plan: its size and limits (`flynn resource add postgres --plan`).
    /// Unset is the provider's default plan; an unknown plan is reported in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub plan: Option<String>,

    /// The config var that holds the URL. Unset is the provider's default
    /// (`DATABASE_URL`, `REDIS_URL`); the CLI names a second resource of a kind
    /// `DATABASE_2_URL`, `REDIS_2_URL`, and so on. Two Resources of one App may not use
    /// one name: the younger is refused in its status. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = ENV_NAME_PATTERN))]
    pub env: Option<String>,

    /// What becomes of the data when the Resource is deleted: `Retain` (the default: the
    /// provider keeps it until the platform's retention expires) or `Delete`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// The kinds of backing service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// A database and role of their own on the platform's Postgres service.
    Postgres,
    /// A Redis server of its own, in the App's namespace.
    Redis,
}

impl Provider {
    /// Every provider, in the order the CLI lists them.
    pub const ALL: [Provider; 2] = [Provider::Postgres, Provider::Redis];

    /// The name in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Postgres => "postgres",
            Provider::Redis => "redis",
        }
    }

    /// The config var of the first Resource of this kind of an App.
    pub fn default_env(self) -> &'static str {
        match self {
            Provider::Postgres => "DATABASE_URL",
            Provider::Redis => "REDIS_URL",
        }
    }

    /// The config var of the `n`th Resource of this kind (1-based): `DATABASE_URL`,
    /// `DATABASE_2_URL`, ...
    pub fn nth_env(self, n: usize) -> String {
        let stem = self.default_env().trim_end_matches("_URL");
        if n <= 1 {
            self.default_env().to_owned()
        } else {
            format!("{stem}_{n}_URL")
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

/// A provider name that is not one of [`Provider::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown resource provider {0:?}: Flynn provides postgres and redis")]
pub struct UnknownProvider(pub String);

/// What becomes of a Resource's data when the Resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the data (no one can log in to it) until the platform's retention expires.
    #[default]
    Retain,
    /// Delete the data with the Resource.
    Delete,
}

/// What the operator and the provider report about a Resource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct ResourceStatus {
    /// The Secret in this namespace holding the connection URL and its parts (keys
    /// `url`, `host`, `port`, `username`, `password`, `database`; see
    /// `flynn_crds::resource::secret_keys`). Set once the provider has made the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,

    /// The config var the URL is given under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,

    /// The first Release of the App with the URL in its config (made by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,

    /// The provider's own names for what it made (e.g. `database`, `role`, `statefulSet`),
    /// for an operator of the platform looking for them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub provider_ids: std::collections::BTreeMap<String, String>,

    /// The plan in effect (the provider's default when `spec.plan` is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,

    /// `Ready` (reason `Provisioned` when true; `Provisioning`, `ServiceUnavailable`,
    /// `AppNotFound`, `EnvConflict`, `UnknownPlan`, `ProviderDisabled`, `Deleting` when
    /// not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The keys of a Resource's credentials Secret.
pub mod secret_keys {
    /// The whole connection URL (`postgres://user:password@host:5432/db`).
    pub const URL: &str = "url";
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    /// Postgres only: the database name.
    pub const DATABASE: &str = "database";
}

/// The Secret type of resource credentials (`kubectl get secrets` shows it).
pub const SECRET_TYPE: &str = "flynn.io/resource-credentials";

/// The name of a Resource's credentials Secret: `<resource>-credentials`.
pub fn secret_name(resource: &str) -> String {
    format!("{resource}-credentials")
}

/// The finalizer that lets the operator remove the URL from the App and release (or
/// retain) the data before a Resource goes.
pub const FINALIZER: &str = "flynn.io/resource";

impl Resource {
    /// The config var the URL goes under: `spec.env`, or the provider's default.
    pub fn env_name(&self) -> &str {
        self.spec
            .env
            .as_deref()
            .unwrap_or(self.spec.provider.default_env())
    }
}

fn immutable(field: &str) -> Rule {
    Rule::new("self == oldSelf").message(Message::Message(format!(
        "{field} is immutable: delete the Resource and add a new one"
    )))
}

/// `env` may not be set, changed or cleared after creation (a rule on the spec: an optional
/// field's own rule does not run when it is removed).
fn immutable_optional(field: &str) -> Rule {
    Rule::new(format!(
        "has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    ))
    .message(Message::Message(format!(
        "spec.{field} is immutable: delete the Resource and add a new one"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_resource_of_a_kind_gets_a_numbered_name() {
        assert_eq!(Provider::Postgres.nth_env(1), "DATABASE_URL");
        assert_eq!(Provider::Postgres.nth_env(2), "DATABASE_2_URL");
        assert_eq!(Provider::Redis.nth_env(3), "REDIS_3_URL");
    }

    #[test]
    fn providers_parse_by_their_names_only() {
        assert_eq!("postgres".parse::<Provider>().unwrap(), Provider::Postgres);
        assert_eq!("redis".parse::<Provider>().unwrap(), Provider::Redis);
        let err = "mysql".parse::<Provider>().unwrap_err();
        assert!(err.to_string().contains("postgres and redis"), "{err}");
    }
}
