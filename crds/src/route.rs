//! `Route`: how traffic reaches an App's process, by HTTP host and path or by TCP port.
//!
//! The operator reports in `status` whether the Route is accepted, and the router whether it
//! serves it; both decide by [`crate::ownership`] (a host name belongs to the namespace whose
//! Route claimed it first, TCP ports come from the platform's range).
//! Which of `http` and `tcp` is set must match `type`: the API server refuses anything else, so
//! the router never sees a half-specified Route.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    CustomResource, KubeSchema,
    core::{Message, Reason, Rule},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    names::WEB_PROCESS,
    schema,
    validation::{
        APP_NAME_PATTERN, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, DOMAIN_PATTERN,
        MAX_APP_NAME_LEN, MAX_PROCESS_TYPE_LEN,
    },
};

/// Desired routing: which traffic (`http` or `tcp`) goes to which process of which App.
// Clippy reads each `printcolumn(type_ = "string", ...)` below as a duplicate of the first.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flynn.io",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    status = "RouteStatus",
    derive = "PartialEq",
    shortname = "flroute",
    category = "flynn",
    label("app.kubernetes.io/part-of", "flynn"),
    selectable = ".spec.app",
    doc = "HTTP (by domain and path) or TCP (by port) traffic to one process type of an App.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Domain",
        type_ = "string",
        json_path = ".spec.http.domain",
        description = "HTTP routes: the host"
    ),
    printcolumn(
        name = "Path",
        type_ = "string",
        json_path = ".spec.http.path",
        description = "HTTP routes: the path prefix"
    ),
    printcolumn(
        name = "Port",
        type_ = "integer",
        json_path = ".spec.tcp.port",
        description = "TCP routes: the router's port"
    ),
    printcolumn(name = "App", type_ = "string", json_path = ".spec.app"),
    printcolumn(name = "Process", type_ = "string", json_path = ".spec.process"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = block_required("http", "set spec.http.domain"),
    validation = block_forbidden("http", "tcp"),
    validation = block_required("tcp", "set spec.tcp.port"),
    validation = block_forbidden("tcp", "http"),
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct RouteSpec {
    /// `http` (route by Host and path; set `http`) or `tcp` (route by port; set `tcp`).
    #[serde(rename = "type")]
    pub type_: RouteType,

    /// HTTP routing; required when `type` is `http`, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRoute>,

    /// TCP routing; required when `type` is `tcp`, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpRoute>,

    /// Name of the App whose process receives the traffic.
    #[schemars(length(min = 1, max = MAX_APP_NAME_LEN), regex(pattern = APP_NAME_PATTERN))]
    pub app: String,

    /// Process type that receives the traffic, through its `<app>-<process>` Service. Default `web`.
    #[serde(default = "default_process")]
    #[schemars(length(min = 1, max = MAX_PROCESS_TYPE_LEN), regex(pattern = DNS_LABEL_PATTERN))]
    pub process: String,
}

/// Kind of Route.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RouteType {
    Http,
    Tcp,
}

/// An HTTP route: requests for `domain` whose path starts with `path`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Host to match, lower case, e.g. `www.example.com`, or a wildcard `*.example.com`
    /// (one label, any name). The longest matching path wins among Routes of one domain.
    #[schemars(length(min = 1, max = 253), regex(pattern = DOMAIN_PATTERN))]
    pub domain: String,

    /// Path prefix to match; starts with `/`. Default `/` (everything).
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/\S*$"))]
    pub path: String,

    /// Name of a `kubernetes.io/tls` Secret in the Route's namespace holding the certificate
    /// for `domain`. Unset: the router's default certificate, if any, is used for HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub tls_secret_name: Option<String>,

    /// Pin each client to one backend with a cookie. Default false.
    #[serde(default)]
    pub sticky: bool,

    /// Drain the process's pods when they stop (as Flynn's `drain_backends`): a pod being
    /// stopped keeps running, unsignalled, for the operator's drain delay (5 s by default)
    /// before its SIGTERM, so the router stops sending it requests first and those in flight
    /// finish. False on every Route of a process: its pods stop at once. Default true.
    #[serde(default = "default_true")]
    pub drain_backends: bool,

    /// Answer plain-HTTP requests with a redirect to HTTPS. Default false.
    #[serde(default)]
    pub https_redirect: bool,
}

/// A TCP route: connections to `port` on the router.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    /// Port the router listens on for this Route, 1-65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// What the router observed about a Route.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::reflow_descriptions)]
pub struct RouteStatus {
    /// `Accepted` and `Conflict` (the operator's), `Programmed` and, for Routes naming a TLS
    /// Secret, `CertificateReady` (the router's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where the Route is reachable, e.g. `https://www.example.com/api` or `tcp://router:5432`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When `Conflict` is true because of an older Route of the same namespace: that Route
    /// (`<namespace>/<name>`). Unset when another namespace owns the host or port: the
    /// condition's message names that namespace, never its Routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts_with: Option<String>,
}

impl RouteSpec {
    /// An HTTP route for `domain` (path `/`) to `app`'s `web` process, with default options.
    pub fn http(app: &str, domain: &str) -> Self {
        Self {
            type_: RouteType::Http,
            http: Some(HttpRoute {
                domain: domain.to_owned(),
                path: default_path(),
                tls_secret_name: None,
                sticky: false,
                drain_backends: true,
                https_redirect: false,
            }),
            tcp: None,
            app: app.to_owned(),
            process: default_process(),
        }
    }

    /// A TCP route on the router's `port` to `app`'s `process`.
    pub fn tcp(app: &str, process: &str, port: i32) -> Self {
        Self {
            type_: RouteType::Tcp,
            http: None,
            tcp: Some(TcpRoute { port }),
            app: app.to_owned(),
            process: process.to_owned(),
        }
    }
}

/// `spec.<block>` must be set when `spec.type` is `<block>`.
fn block_required(block: &str, fix: &str) -> Rule {
    Rule::new(format!("self.type != '{block}' || has(self.{block})"))
        .message(Message::Message(format!(
            "spec.{block} is required when spec.type is {block}: {fix}"
        )))
        .reason(Reason::FieldValueRequired)
}

/// `spec.<block>` must not be set when `spec.type` is the other type.
fn block_forbidden(block: &str, other: &str) -> Rule {
    Rule::new(format!("self.type == '{block}' || !has(self.{block})"))
        .message(Message::Message(format!(
            "spec.{block} is forbidden when spec.type is {other}: remove it, or set spec.type: {block}"
        )))
        .reason(Reason::FieldValueForbidden)
}

fn default_process() -> String {
    WEB_PROCESS.to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_http_route_gets_defaults() {
        let spec: RouteSpec = serde_json::from_value(serde_json::json!({
            "type": "http", "app": "node-demo", "http": {"domain": "node-demo.example.com"}
        }))
        .unwrap();
        assert_eq!(spec, RouteSpec::http("node-demo", "node-demo.example.com"));
    }

    #[test]
    fn tcp_routes_serialize_without_an_http_block() {
        let json = serde_json::to_value(RouteSpec::tcp("db", "postgres", 5432)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "tcp", "tcp": {"port": 5432}, "app": "db", "process": "postgres"})
        );
    }
}
