//! `Release`: an immutable pairing of a build artifact with config and process types.
//!
//! Changing code (`git push`) or config (`flynn env set`) makes a new Release; the App points
//! at one and rollback points it at an older one. Because a Release never changes, "what ran
//! at version 7" always has an answer, and a rollback restores code and config together.
//!
//! Two rules are enforced by the API server, not by convention:
//! - `spec` is immutable (`self == oldSelf`);
//! - the name is `<spec.app>-v<spec.version>`, so one App cannot have two Releases of one version.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{
    CustomResource, KubeSchema,
    core::{Message, Reason, Rule},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    schema::{self, MAX_ENV_VARS, MAX_META_ENTRIES, MAX_PROCESS_TYPES},
    validation::{
        APP_NAME_PATTERN, DNS_SUBDOMAIN_PATTERN, MAX_APP_NAME_LEN, PORT_NAME_PATTERN,
        SHA256_PATTERN,
    },
};

/// Most ports one process type may declare.
const MAX_PORTS: u32 = 16;

/// The content of a Release; immutable once created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flynn.io",
    version = "v1alpha1",
    kind = "Release",
    namespaced,
    derive = "PartialEq",
    shortname = "flrel",
    category = "flynn",
    label("app.kubernetes.io/part-of", "flynn"),
    selectable = ".spec.app",
    doc = "An immutable build and config of an App, named `<app>-v<version>`. Create a new Release to change anything.",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.app"),
    printcolumn(name = "Version", type_ = "integer", json_path = ".spec.version"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.artifact.image", description = "Container image, for image releases"),
    printcolumn(name = "Slug", type_ = "string", json_path = ".spec.artifact.slug.url", description = "Slug URL, for buildpack releases"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = name_is_app_and_version(),
    validation = config_secret_is_its_own(),
)]
#[x_kube(validation = spec_is_immutable())]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct ReleaseSpec {
    /// Name of the App this Release belongs to.
    #[schemars(length(min = 1, max = MAX_APP_NAME_LEN), regex(pattern = APP_NAME_PATTERN))]
    pub app: String,

    /// Version number within the App: 1, 2, 3, ... The Release's name is `<app>-v<version>`.
    #[schemars(range(min = 1))]
    pub version: i64,

    /// What runs: a slug built by the buildpacks, or a container image.
    pub artifact: Artifact,

    /// Name of an immutable Secret in this namespace holding the config vars of every
    /// process (each key an environment variable), given to them with `envFrom`: the App's
    /// config when the Release was made. It must be `<release name>-env` (a Release may not
    /// hand another Secret of the namespace to its processes); Flynn makes it owned by the
    /// Release. One written by hand must have `type: flynn.io/config` and should be
    /// `immutable: true`, so that the Release (and a rollback to it) always runs with the
    /// same config. Unset: no config vars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub config_secret: Option<String>,

    /// Deprecated and refused on new Releases: config vars in plain text, readable by anyone
    /// who may read Releases. Releases made before `configSecret` existed keep it (and it is
    /// still given to their processes); put config in a Secret and name it in `configSecret`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_ENV_VARS))]
    #[x_kube(validation = schema::env_keys("spec.env"), validation = schema::no_plain_config("spec.env", "spec.configSecret"))]
    pub env: BTreeMap<String, String>,

    /// Process types (`web`, `worker`, ... from the Procfile) and how to run each. At least one.
    #[schemars(extend("minProperties" = 1, "maxProperties" = MAX_PROCESS_TYPES))]
    #[x_kube(validation = schema::process_type_keys("spec.processes"))]
    pub processes: BTreeMap<String, ProcessSpec>,

    /// Where the Release came from: git commit, who pushed, build id, ... Not interpreted by Flynn.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_META_ENTRIES))]
    pub meta: BTreeMap<String, String>,
}

impl ReleaseSpec {
    /// The process types, comma-separated (`web, worker`), for messages.
    pub fn process_types(&self) -> String {
        self.processes
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The build artifact of a Release: exactly one of `slug` and `image`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = exactly_one_artifact())]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// A slug (a tarball of the built app) run by slugrunner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Slug>,

    /// A container image reference, e.g. `registry.example.com/team/app:1.2` or one pinned by
    /// `@sha256:...` digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"^\S+$"))]
    pub image: Option<String>,
}

impl Artifact {
    /// A short description for logs and the CLI: the image reference, or the slug URL.
    pub fn describe(&self) -> &str {
        match (&self.image, &self.slug) {
            (Some(image), _) => image,
            (None, Some(slug)) => &slug.url,
            (None, None) => "",
        }
    }
}

/// A slug in the slug store.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Slug {
    /// Where slugrunner downloads the slug from (http or https).
    #[schemars(length(max = 2048), regex(pattern = r"^https?://\S+$"))]
    pub url: String,

    /// SHA-256 of the slug tarball, 64 lower-case hex digits; slugrunner refuses a slug that
    /// does not match.
    #[schemars(regex(pattern = SHA256_PATTERN))]
    pub sha256: String,

    /// Size of the slug tarball in bytes.
    #[schemars(range(min = 0))]
    pub size: i64,
}

/// How to run one process type.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSpec {
    /// Overrides the entrypoint: slugrunner's for slugs, the image's ENTRYPOINT for images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments to the entrypoint. For slugs, the process type's command line from the
    /// Procfile, e.g. `["bundle", "exec", "puma"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Ports the process listens on. The first is passed as `$PORT`; ports with `service: true`
    /// are exposed through the `<app>-<process>` Service, which Routes point at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PORTS))]
    #[x_kube(
        merge_strategy = kube::core::ListMerge::Map(vec!["port".into(), "protocol".into()]),
        validation = unique_port_names(),
    )]
    pub ports: Vec<ProcessPort>,

    /// CPU and memory requests and limits of each pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// How Kubernetes decides a pod is ready (and, after failureThreshold failures, restarts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// A port a process listens on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = port_name_has_a_letter())]
#[serde(rename_all = "camelCase")]
pub struct ProcessPort {
    /// Port number, 1-65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Optional name (an IANA service name: at most 15 lower-case letters, digits and '-',
    /// with at least one letter), e.g. `http` or `metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = PORT_NAME_PATTERN))]
    pub name: Option<String>,

    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,

    /// Whether the `<app>-<process>` Service exposes this port. Default true.
    #[serde(default = "default_true")]
    pub service: bool,
}

/// Transport protocol of a port.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// Resource requests and limits; keys are resource names (`cpu`, `memory`,
/// `ephemeral-storage`), values quantities (`500m`, `512Mi`). A request may not exceed
/// the limit of the same resource (the API server would refuse the Deployment's pods).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = requests_within_limits())]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// What the scheduler reserves for each pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = quantity_schema(), "maxProperties" = MAX_RESOURCES))]
    pub requests: BTreeMap<String, Quantity>,
    /// The most each pod may use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = quantity_schema(), "maxProperties" = MAX_RESOURCES))]
    pub limits: BTreeMap<String, Quantity>,
}

/// Most resource names in one of `requests` and `limits` (bounds the CEL rule's cost).
const MAX_RESOURCES: u32 = 16;

fn requests_within_limits() -> Rule {
    // Values are int-or-string: `string()` makes either a quantity string.
    Rule::new(
        "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) \
         || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
    )
    .message(Message::Message(
        "resources: a request may not exceed the limit of the same resource (e.g. requests.cpu 1 \
         with limits.cpu 500m): lower the request or raise the limit"
            .into(),
    ))
    .reason(Reason::FieldValueInvalid)
}

/// A readiness and liveness check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = path_only_for_http(),
    validation = command_required_for_exec(),
    validation = command_only_for_exec(),
)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `tcp` (the port accepts connections), `http` (GET `path` answers 2xx/3xx) or `exec`
    /// (`command` exits 0).
    #[serde(rename = "type")]
    pub type_: HealthCheckType,

    /// HTTP path to GET, for `http` checks. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/\S*$"))]
    pub path: Option<String>,

    /// Port to check, for `tcp` and `http` checks. Default: the process's first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Command to run in the container, for `exec` checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Seconds after start before the first check. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0, max = i32::MAX))]
    pub initial_delay_seconds: i32,

    /// Seconds between checks. Default 10.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = i32::MAX))]
    pub period_seconds: i32,

    /// Seconds before a check counts as failed. Default 1.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = i32::MAX))]
    pub timeout_seconds: i32,

    /// Consecutive failures before the pod is marked unready (and restarted). Default 3.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = i32::MAX))]
    pub failure_threshold: i32,
}

/// Kind of health check.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckType {
    Tcp,
    Http,
    Exec,
}

/// The schema Kubernetes' own CRDs use for a quantity: an integer or a string in quantity
/// syntax, so `cpu: lots` is refused at admission rather than when the Deployment is made.
/// (k8s-openapi's `Quantity` schema has no pattern and a page-long description.)
fn quantity_schema() -> serde_json::Value {
    serde_json::json!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        // Bounds the cost of the request-within-limit rule (CEL's budget counts length).
        "maxLength": 64,
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        "x-kubernetes-int-or-string": true,
    })
}

fn spec_is_immutable() -> Rule {
    Rule::new("self == oldSelf")
        .message("Release spec is immutable: create a new Release instead")
        .reason(Reason::FieldValueForbidden)
}

/// A Release may use only its own config Secret, `<release>-env`: otherwise whoever may
/// create a Release (but not read Secrets) could name any Secret of the namespace, a TLS
/// key, a token or another App's config, and have it handed to processes they control.
fn config_secret_is_its_own() -> Rule {
    Rule::new("!has(self.spec.configSecret) || self.spec.configSecret == self.metadata.name + '-env'")
        .field_path(".spec.configSecret")
        .message(Message::Message(
            "spec.configSecret must be the Release's own config Secret, `<release name>-env` (e.g. shop-v3-env): a Release may not hand another Secret of the namespace to its processes"
                .into(),
        ))
        .reason(Reason::FieldValueForbidden)
}

fn name_is_app_and_version() -> Rule {
    // `format` rather than `+ string(version)`: the API server cannot bound the length of
    // `string(int)` and refuses the rule as too expensive.
    Rule::new("self.metadata.name == '%s-v%d'.format([self.spec.app, self.spec.version])").message(
        Message::Message(
            "metadata.name must be `<spec.app>-v<spec.version>` (e.g. myapp-v3), so an App has one Release per version"
                .into(),
        ),
    )
}

fn exactly_one_artifact() -> Rule {
    Rule::new("has(self.slug) != has(self.image)").message(
        "spec.artifact must set exactly one of slug (a buildpack build) or image (a container image)",
    )
}

fn unique_port_names() -> Rule {
    Rule::new("self.all(p, !has(p.name) || self.exists_one(q, has(q.name) && q.name == p.name))")
        // No `reason`: the API server prints FieldValueDuplicate errors without the message.
        .message("ports: port names must be unique within a process type")
}

fn port_name_has_a_letter() -> Rule {
    Rule::new("!has(self.name) || self.name.matches('[a-z]')").message(
        "ports[].name must contain at least one letter (it is an IANA service name), e.g. http",
    )
}

fn path_only_for_http() -> Rule {
    Rule::new("self.type == 'http' || !has(self.path)")
        .message("healthCheck.path is only used by http checks: remove it, or set type: http")
        .reason(Reason::FieldValueForbidden)
}

fn command_required_for_exec() -> Rule {
    Rule::new("self.type != 'exec' || (has(self.command) && size(self.command) > 0)")
        .message("healthCheck.command is required when type is exec")
        .reason(Reason::FieldValueRequired)
}

fn command_only_for_exec() -> Rule {
    Rule::new("self.type == 'exec' || !has(self.command)")
        .message("healthCheck.command is only used by exec checks: remove it, or set type: exec")
        .reason(Reason::FieldValueForbidden)
}

fn default_true() -> bool {
    true
}

fn default_period() -> i32 {
    10
}

fn default_timeout() -> i32 {
    1
}

fn default_failure_threshold() -> i32 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_port_gets_tcp_and_a_service() {
        let port: ProcessPort = serde_json::from_value(serde_json::json!({"port": 8080})).unwrap();
        assert_eq!(port.protocol, Protocol::Tcp);
        assert!(port.service);
        assert_eq!(serde_json::to_value(Protocol::Udp).unwrap(), "UDP");
    }

    #[test]
    fn health_check_defaults_match_kubernetes_probes() {
        let check: HealthCheck =
            serde_json::from_value(serde_json::json!({"type": "http"})).unwrap();
        assert_eq!(check.type_, HealthCheckType::Http);
        assert_eq!(
            (
                check.initial_delay_seconds,
                check.period_seconds,
                check.timeout_seconds,
                check.failure_threshold
            ),
            (0, 10, 1, 3)
        );
    }

    #[test]
    fn artifact_describes_itself() {
        let image = Artifact {
            image: Some("nginx:1.27".into()),
            slug: None,
        };
        assert_eq!(image.describe(), "nginx:1.27");
        let slug = Artifact {
            image: None,
            slug: Some(Slug {
                url: "https://shelf/s.tgz".into(),
                sha256: "0".repeat(64),
                size: 1,
            }),
        };
        assert_eq!(slug.describe(), "https://shelf/s.tgz");
    }
}
