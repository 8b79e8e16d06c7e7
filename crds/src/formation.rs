//! `Formation`: what runs for one App, a Release and a pod count per process type.
//!
//! The operator keeps exactly one Formation per App, named after the App, and turns it into
//! one Deployment (`<app>-<process>`) per process type and one Service per process type that
//! listens. The App says what the user wants; the Formation is the operator's record of what it
//! is rolling out, so a rollout can be observed (`kubectl get flform`) apart from the App.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    CustomResource, KubeSchema,
    core::{Message, Rule},
};
use serde::{Deserialize, Serialize};

use crate::{
    ProcessStatus,
    schema::{self, MAX_PROCESS_TYPES},
    validation::{APP_NAME_PATTERN, MAX_APP_NAME_LEN},
};

/// What the operator runs for an App: one Release, and pods per process type.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flynn.io",
    version = "v1alpha1",
    kind = "Formation",
    namespaced,
    status = "FormationStatus",
    derive = "PartialEq",
    shortname = "flform",
    category = "flynn",
    label("app.kubernetes.io/part-of", "flynn"),
    selectable = ".spec.app",
    doc = "What runs for one App: a Release and a pod count per process type. One per App, named after it.",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.app"),
    printcolumn(name = "Release", type_ = "string", json_path = ".spec.release"),
    printcolumn(name = "Processes", type_ = "string", json_path = ".status.processSummary", description = "Ready/desired pods per process type"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = named_after_app(),
    validation = release_belongs_to_app(),
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct FormationSpec {
    /// Name of the App; the Formation has the same name.
    #[schemars(length(min = 1, max = MAX_APP_NAME_LEN), regex(pattern = APP_NAME_PATTERN))]
    pub app: String,

    /// Name of the Release to run (`<app>-v<version>`).
    #[schemars(length(min = 1, max = 253))]
    pub release: String,

    /// Pods per process type, e.g. `web: 2`. A process type of the Release that is missing
    /// here runs 0 pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_PROCESS_TYPES,
        "additionalProperties" = {"type": "integer", "format": "int32", "minimum": 0, "maximum": i32::MAX},
    ))]
    #[x_kube(validation = schema::process_type_keys("spec.processes"))]
    pub processes: BTreeMap<String, i32>,

    /// How a new Release replaces the running pods (copied from the App).
    #[serde(default)]
    pub strategy: crate::DeployStrategy,
}

/// What the operator observed about a Formation's Deployments.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct FormationStatus {
    /// Desired, ready and available pods per process type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, ProcessStatus>,

    /// `processes` in one line for `kubectl get`: `web=2/2 worker=1/1` (ready/desired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_summary: Option<String>,

    /// The Release every process type runs, once each Deployment has rolled out to
    /// `spec.release` (all pods updated and available); unset while a rollout is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,

    /// `Ready` and `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn named_after_app() -> Rule {
    Rule::new("self.metadata.name == self.spec.app").message(Message::Message(
        "metadata.name must equal spec.app: an App has exactly one Formation, named after it"
            .into(),
    ))
}

fn release_belongs_to_app() -> Rule {
    Rule::new("self.spec.release.startsWith(self.spec.app + '-v')")
        .field_path(".spec.release")
        .message(Message::Message(
            "spec.release must name a Release of spec.app: `<app>-v<version>`, e.g. myapp-v3"
                .into(),
        ))
}
