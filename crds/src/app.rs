//! `App`: an application, the thing a user creates, configures, scales and pushes to.
//!
//! The App holds what the user sets directly (config vars, process counts, deploy strategy)
//! and points at its current [`Release`](crate::Release). `flynn env set` patches `spec.env`
//! and the operator turns that into a new Release; `flynn scale` patches `spec.processes`;
//! a rollback points `spec.release` at an older Release.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    CustomResource, KubeSchema,
    core::{Message, Rule},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{self, MAX_ENV_VARS, MAX_META_ENTRIES, MAX_PROCESS_TYPES};

/// What the user wants of an App: config vars, process counts, the Release to run, and how
/// to roll it out.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flynn.io",
    version = "v1alpha1",
    kind = "App",
    namespaced,
    status = "AppStatus",
    derive = "PartialEq",
    shortname = "flapp",
    category = "flynn",
    label("app.kubernetes.io/part-of", "flynn"),
    doc = "An application: config vars, desired process counts, and the Release it should run.",
    printcolumn(name = "Release", type_ = "string", json_path = ".status.release", description = "The Release running now"),
    printcolumn(name = "Version", type_ = "integer", json_path = ".status.releaseVersion", description = "Version of the Release running now"),
    printcolumn(name = "Processes", type_ = "string", json_path = ".status.processSummary", description = "Ready/desired pods per process type"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.urls[0]", description = "The App's first URL"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = schema::app_name_length(),
    validation = schema::app_name_format(),
    validation = release_belongs_to_app(),
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct AppSpec {
    /// Deprecated and refused when set: config vars in plain text, readable by anyone who may
    /// read Apps. Config vars live in Secrets: `flynn env set`, or a Secret named by a
    /// Release's `configSecret` (see the Release). Apps that had it keep it, unused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_ENV_VARS))]
    #[x_kube(validation = schema::env_keys("spec.env"), validation = schema::no_plain_config("spec.env", "a Release's spec.configSecret"))]
    pub env: BTreeMap<String, String>,

    /// Free-form metadata about the App (owner, repository, ...); not interpreted by Flynn.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_META_ENTRIES))]
    pub meta: BTreeMap<String, String>,

    /// How a new Release replaces the running one: `rolling` (default: start up to 25% more
    /// pods, then remove old ones, never below the desired count), `all-at-once` (start every
    /// new pod, then stop every old one) or `one-by-one` (start one new pod, then stop one old).
    #[serde(default)]
    pub strategy: DeployStrategy,

    /// Name of the Release this App should run (`<app>-v<version>`). Unset until the first
    /// Release; set by `git push`, `flynn env set` and `flynn release rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub release: Option<String>,

    /// Desired number of pods per process type, e.g. `web: 2`. A type missing here runs 0
    /// pods. Keys are process types of the Release (at most 32 lower-case letters, digits and
    /// '-'); values are at least 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_PROCESS_TYPES,
        "additionalProperties" = {"type": "integer", "format": "int32", "minimum": 0, "maximum": i32::MAX},
    ))]
    #[x_kube(validation = schema::process_type_keys("spec.processes"))]
    pub processes: BTreeMap<String, i32>,

    /// Seconds a rollout may take before it counts as failed (and is rolled back if
    /// `autoRollback`). Default 300.
    #[serde(default = "default_deploy_timeout")]
    #[schemars(range(min = 1, max = i32::MAX))]
    pub deploy_timeout_seconds: i32,

    /// Whether a rollout that fails or times out is undone by pointing the App back at the
    /// previous Release. Default true.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,

    /// Whether the operator creates the default Route `<app>.<defaultDomain>` to the `web`
    /// process. Default true; set false for worker-only apps or to route only custom domains.
    #[serde(default = "default_true")]
    pub default_route: bool,
}

impl Default for AppSpec {
    fn default() -> Self {
        Self {
            env: BTreeMap::new(),
            meta: BTreeMap::new(),
            strategy: DeployStrategy::default(),
            release: None,
            processes: BTreeMap::new(),
            deploy_timeout_seconds: default_deploy_timeout(),
            auto_rollback: true,
            default_route: true,
        }
    }
}

/// How a new Release replaces the running one (see `AppSpec::strategy`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeployStrategy {
    // Plain comments, not doc comments, on the variants: documented variants make schemars emit
    // `oneOf`, and a plain `enum` is what `kubectl explain` shows best.
    // Surge up to 25%, never below the desired count (maxSurge 25%, maxUnavailable 0).
    #[default]
    Rolling,
    // Start all new pods, then stop all old ones.
    AllAtOnce,
    // Replace one pod at a time: start one new pod, then stop one old (maxSurge 1, maxUnavailable 0).
    OneByOne,
}

/// What the operator observed about an App.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct AppStatus {
    /// The Release running now (after a rollout completes; during one, the previous Release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,

    /// Version of `release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_version: Option<i64>,

    /// URLs the App is reachable at, from its Routes; the default Route's first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,

    /// Desired, ready and available pods per process type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, ProcessStatus>,

    /// `processes` in one line for `kubectl get`: `web=2/2 worker=1/1` (ready/desired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_summary: Option<String>,

    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The rollout under way, if any: which Release, and since when (for
    /// `deployTimeoutSeconds`). Cleared when it completes or is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,

    /// The last automatic rollback: which Release failed, why, and which one the App was
    /// pointed back at. Kept until the next one; read by `git push` and the CLI to say
    /// what happened to their release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<Rollback>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// An automatic rollback of an App (see `AppStatus::last_rollback`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// The Release that failed to roll out.
    pub from: String,
    /// The Release the App was pointed back at.
    pub to: String,
    /// Why `from` failed, e.g. `release shop-v3 did not become available within 300s: ...`.
    pub reason: String,
    /// When.
    pub at: Time,
}

/// A rollout of an App to a new Release.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The Release being rolled out.
    pub release: String,
    /// When the operator first saw the App point at it.
    pub started_at: Time,
}

/// Pod counts of one process type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    /// Pods wanted.
    #[serde(default)]
    pub desired: i32,
    /// Pods passing their readiness check.
    #[serde(default)]
    pub ready: i32,
    /// Pods ready for at least the Deployment's minReadySeconds.
    #[serde(default)]
    pub available: i32,
}

impl ProcessStatus {
    /// One line for a printer column: `web=2/2 worker=1/1` (ready/desired), in key order.
    pub fn summary(processes: &BTreeMap<String, ProcessStatus>) -> String {
        processes
            .iter()
            .map(|(process, s)| format!("{process}={}/{}", s.ready, s.desired))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `spec.release`, when set, must be a Release of this App (Release names are `<app>-v<N>`).
fn release_belongs_to_app() -> Rule {
    // A root rule because it needs metadata.name; reported at spec.release.
    Rule::new("!has(self.spec.release) || self.spec.release.startsWith(self.metadata.name + '-v')")
        .field_path(".spec.release")
        .message(Message::Message(
            "spec.release must name a Release of this App: `<app name>-v<version>`, e.g. myapp-v3"
                .into(),
        ))
}

fn default_deploy_timeout() -> i32 {
    300
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_serializes_kebab_case() {
        let json = serde_json::to_value([
            DeployStrategy::Rolling,
            DeployStrategy::AllAtOnce,
            DeployStrategy::OneByOne,
        ]);
        assert_eq!(
            json.unwrap(),
            serde_json::json!(["rolling", "all-at-once", "one-by-one"])
        );
    }

    #[test]
    fn an_empty_spec_gets_the_documented_defaults() {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(spec, AppSpec::default());
        assert_eq!(spec.strategy, DeployStrategy::Rolling);
        assert_eq!(spec.deploy_timeout_seconds, 300);
        assert!(spec.auto_rollback && spec.default_route);
    }

    #[test]
    fn process_summary_lists_ready_over_desired() {
        let processes = BTreeMap::from([
            (
                "worker".to_owned(),
                ProcessStatus {
                    desired: 1,
                    ready: 0,
                    available: 0,
                },
            ),
            (
                "web".to_owned(),
                ProcessStatus {
                    desired: 2,
                    ready: 2,
                    available: 2,
                },
            ),
        ]);
        assert_eq!(ProcessStatus::summary(&processes), "web=2/2 worker=0/1");
        assert_eq!(ProcessStatus::summary(&BTreeMap::new()), "");
    }
}
