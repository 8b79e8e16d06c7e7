//! What the installed platform publishes for clients: the ConfigMap
//! `flynn-system/flynn-platform` (contract in gitreceiver/README.md), with environment
//! overrides so the CLI also works (and is tested) without the chart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use crate::errors::{Error, Result};

pub const NAMESPACE: &str = "flynn-system";
pub const CONFIGMAP: &str = "flynn-platform";

/// Overrides `gitURL`.
pub const ENV_GIT_URL: &str = "FLYNN_GIT_URL";
/// Overrides `keysNamespace`.
pub const ENV_KEYS_NAMESPACE: &str = "FLYNN_KEYS_NAMESPACE";
/// Overrides `slugrunnerImage` (not in the chart's ConfigMap yet: see [`Platform::slugrunner_image`]).
pub const ENV_SLUGRUNNER_IMAGE: &str = "FLYNN_SLUGRUNNER_IMAGE";

/// Overrides `postgresImage`.
pub const ENV_POSTGRES_IMAGE: &str = "FLYNN_POSTGRES_IMAGE";
/// Overrides `redisImage`.
pub const ENV_REDIS_IMAGE: &str = "FLYNN_REDIS_IMAGE";

/// The platform ConfigMap's data, or why there is none.
#[derive(Debug, Clone)]
pub struct Platform {
    data: BTreeMap<String, String>,
    /// Why `data` is empty, for error messages ("is not installed", "cannot be read: ...").
    missing: Option<String>,
}

impl Platform {
    /// Reads the ConfigMap. A missing or unreadable one is not an error here: only the
    /// setting a command needs is, and an environment override may supply it.
    pub async fn load(client: &Client) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
        match api.get_opt(CONFIGMAP).await {
            Ok(Some(cm)) => Platform {
                data: cm.data.unwrap_or_default(),
                missing: None,
            },
            Ok(None) => Self::absent("does not exist (the platform is not installed here)"),
            Err(e) => Self::absent(&format!("cannot be read ({e})")),
        }
    }

    /// A platform with no ConfigMap (and why), e.g. when the cluster is unreachable.
    pub fn absent(why: &str) -> Self {
        Platform {
            data: BTreeMap::new(),
            missing: Some(why.to_owned()),
        }
    }

    fn setting(&self, key: &str, env: &'static str, what: &'static str) -> Result<String> {
        if let Ok(value) = std::env::var(env)
            && !value.is_empty()
        {
            return Ok(value);
        }
        match self.data.get(key).filter(|v| !v.is_empty()) {
            Some(value) => Ok(value.clone()),
            None => Err(Error::Platform {
                what,
                problem: self
                    .missing
                    .clone()
                    .unwrap_or_else(|| format!("has no {key}")),
                env,
            }),
        }
    }

    /// Base of git remotes (`ssh://git@flynn.local:2222`).
    pub fn git_url(&self) -> Result<String> {
        self.setting("gitURL", ENV_GIT_URL, "where to git push")
    }

    /// Namespace of the SSH key registry.
    pub fn keys_namespace(&self) -> Result<String> {
        self.setting(
            "keysNamespace",
            ENV_KEYS_NAMESPACE,
            "where SSH keys are registered",
        )
    }

    /// The image that runs slugs. The chart's ConfigMap does not publish it yet; until it
    /// does, `flynn run` of a slug release copies it from the app's own Deployments.
    pub fn slugrunner_image(&self) -> Option<String> {
        self.setting(
            "slugrunnerImage",
            ENV_SLUGRUNNER_IMAGE,
            "the slugrunner image",
        )
        .ok()
    }

    /// The image with `psql`, `pg_dump` and `pg_restore` (the platform's Postgres major
    /// version), published by the chart when its Postgres provider is enabled.
    pub fn postgres_image(&self) -> Result<String> {
        self.image(
            "postgresImage",
            ENV_POSTGRES_IMAGE,
            "Postgres client image (postgresImage)",
            "postgres.enabled",
        )
    }

    /// The image with `redis-cli`, published by the chart when its Redis provider is enabled.
    pub fn redis_image(&self) -> Result<String> {
        self.image(
            "redisImage",
            ENV_REDIS_IMAGE,
            "Redis client image (redisImage)",
            "redis.enabled",
        )
    }

    fn image(
        &self,
        key: &str,
        env: &'static str,
        what: &'static str,
        chart_value: &'static str,
    ) -> Result<String> {
        self.setting(key, env, what)
            .map_err(|_| Error::PlatformImage {
                what,
                problem: self
                    .missing
                    .clone()
                    .unwrap_or_else(|| format!("has no {key}")),
                chart_value,
                env,
            })
    }

    /// The ports TCP Routes may take (the chart's `routes.tcpPortRange`); the platform's
    /// default when the ConfigMap does not say (or says something unreadable: the operator
    /// has the last word anyway).
    pub fn tcp_port_range(&self) -> flynn_crds::ownership::PortRange {
        self.data
            .get("tcpPortRange")
            .and_then(|r| r.parse().ok())
            .unwrap_or_default()
    }

    /// The platform's version, if installed.
    pub fn version(&self) -> Option<&str> {
        self.data.get("version").map(String::as_str)
    }

    /// Why there is no ConfigMap, if there is none.
    pub fn missing(&self) -> Option<&str> {
        self.missing.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_client_image_names_the_chart_value() {
        for env in [ENV_POSTGRES_IMAGE, ENV_REDIS_IMAGE] {
            assert!(
                std::env::var_os(env).is_none(),
                "unset {env} to run this test: it overrides the ConfigMap"
            );
        }
        // Not installed: the error says so and which chart value installs the client.
        let p = Platform::absent("does not exist (the platform is not installed here)");
        let e = p.postgres_image().unwrap_err();
        assert!(
            e.to_string()
                .contains("the platform has no Postgres client image (postgresImage)"),
            "{e}"
        );
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("--set postgres.enabled=true") && hint.contains(ENV_POSTGRES_IMAGE),
            "{hint}"
        );
        assert_eq!(e.exit_code(), crate::errors::exit::NOT_FOUND);
        // Installed without the key (a chart from before the providers).
        let p = Platform {
            data: BTreeMap::from([("gitURL".to_owned(), "ssh://git@x:22".to_owned())]),
            missing: None,
        };
        let e = p.redis_image().unwrap_err();
        assert!(e.to_string().ends_with("has no redisImage"), "{e}");
        assert!(e.hint().unwrap().contains("redis.enabled"));
        // The twin with the key.
        let p = Platform {
            data: BTreeMap::from([("redisImage".to_owned(), "r/redis:1".to_owned())]),
            missing: None,
        };
        assert_eq!(p.redis_image().unwrap(), "r/redis:1");
    }
}
