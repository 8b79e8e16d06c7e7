//! Names of the objects Flynn creates, derived from App names, process types and versions.
//!
//! Keeping these in one place means the operator that creates a Deployment, the router that
//! looks up its Service and the CLI that prints it agree on the name. The API server enforces
//! the Release and Formation naming rules (CEL on `metadata.name`), so these functions are the
//! only way those objects can be named.

/// The Deployment (and Service) running one process type of an App: `<app>-<process>`.
///
/// With an App name of at most 30 and a process type of at most 32 characters (see
/// [`crate::validation`]), the result is a valid RFC 1035 label of at most 63.
pub fn deployment_name(app: &str, process: &str) -> String {
    format!("{app}-{process}")
}

/// The Service in front of one process type: the same name as its Deployment.
pub fn service_name(app: &str, process: &str) -> String {
    deployment_name(app, process)
}

/// A Release's name: `<app>-v<version>`, e.g. `node-demo-v3`.
///
/// The API server refuses a Release whose name differs, so two concurrent pushes cannot both
/// create version N of one App.
pub fn release_name(app: &str, version: i64) -> String {
    format!("{app}-v{version}")
}

/// Splits a Release name into App name and version; `None` if it is not `<app>-v<N>` with N ≥ 1.
pub fn parse_release_name(name: &str) -> Option<(&str, i64)> {
    let (app, version) = name.rsplit_once("-v")?;
    if app.is_empty() || version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let version: i64 = version.parse().ok()?;
    (version >= 1).then_some((app, version))
}

/// The one Formation of an App has the App's name (the API server enforces this).
pub fn formation_name(app: &str) -> String {
    app.to_owned()
}

/// The Route the operator creates for an App unless `spec.defaultRoute` is false:
/// `<app>-default`, for `<app>.<defaultDomain>` to the `web` process.
pub fn default_route_name(app: &str) -> String {
    format!("{app}-default")
}

/// The process type routes go to when they don't name one, and the one that gets `$PORT`.
pub const WEB_PROCESS: &str = "web";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_join_app_and_process() {
        assert_eq!(deployment_name("node-demo", "web"), "node-demo-web");
        assert_eq!(service_name("node-demo", "worker"), "node-demo-worker");
    }

    #[test]
    fn release_names_round_trip() {
        assert_eq!(release_name("node-demo", 3), "node-demo-v3");
        assert_eq!(parse_release_name("node-demo-v3"), Some(("node-demo", 3)));
        // An App may itself contain "-v": the version is after the last one.
        assert_eq!(parse_release_name("my-vapp-v12"), Some(("my-vapp", 12)));
        assert_eq!(
            parse_release_name(&release_name("a-v1", 2)),
            Some(("a-v1", 2))
        );
    }

    #[test]
    fn malformed_release_names_do_not_parse() {
        for bad in [
            "node-demo",
            "node-demo-v",
            "node-demo-v0",
            "-v3",
            "node-demo-vx",
            "node-demo-v+3",
            "a-v99999999999999999999",
        ] {
            assert_eq!(parse_release_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn formation_and_default_route_names() {
        assert_eq!(formation_name("node-demo"), "node-demo");
        assert_eq!(default_route_name("node-demo"), "node-demo-default");
    }
}
