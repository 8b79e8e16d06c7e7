//! `redis-cli [-r RESOURCE] [-- ARGS]`: a redis-cli session with the app's Redis, in a
//! client pod from the platform's `redisImage` (wired like `flynn pg psql`).
//!
//! The password reaches redis-cli as `REDISCLI_AUTH` and the host and port as `-h`/`-p`
//! from env vars, all from the Resource's credentials Secret by reference (Kubernetes
//! expands `$(VAR)` in the command): nothing secret passes through the CLI or shows in
//! the pod's spec.

use std::time::Duration;

use flynn_crds::resource::{Provider, Resource, secret_keys};
use k8s_openapi::api::core::v1::EnvVar;
use kube::ResourceExt;

use super::pg::escape_expansion;
use super::pod_session::{self, Io};
use super::resource::{self, ClientPod, client_pod, credentials_secret, from_secret};
use crate::cli::RedisCliArgs;
use crate::context::Ctx;
use crate::errors::Result;

/// The env vars of a redis-cli pod, from the credentials Secret of `r`.
pub fn redis_env(r: &Resource) -> Vec<EnvVar> {
    let secret = credentials_secret(r);
    [
        ("REDIS_HOST", secret_keys::HOST),
        ("REDIS_PORT", secret_keys::PORT),
        ("REDISCLI_AUTH", secret_keys::PASSWORD),
    ]
    .into_iter()
    .map(|(name, key)| from_secret(name, &secret, key))
    .collect()
}

/// `redis-cli -h $(REDIS_HOST) -p $(REDIS_PORT) ARGS...` (the user's args taken literally).
pub fn redis_command(args: &[String]) -> Vec<String> {
    let mut command: Vec<String> = ["redis-cli", "-h", "$(REDIS_HOST)", "-p", "$(REDIS_PORT)"]
        .map(str::to_owned)
        .to_vec();
    command.extend(args.iter().map(|a| escape_expansion(a)));
    command
}

/// Runs redis-cli; its exit code.
pub async fn redis_cli(ctx: &Ctx, args: &RedisCliArgs) -> Result<u8> {
    let app = ctx.app().await?.name_any();
    let r = resource::pick(ctx, &app, Provider::Redis, args.pick.resource.as_deref()).await?;
    let image = ctx.platform().await.redis_image()?;
    let io = Io::detect();
    let pod = client_pod(&ClientPod {
        app: &app,
        purpose: "redis-cli",
        image: &image,
        command: redis_command(&args.args),
        env: redis_env(&r),
        io,
    });
    pod_session::run_interactive(
        ctx,
        &pod,
        "redis-cli",
        io,
        Duration::from_secs(args.pick.timeout),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redis_cli_gets_host_port_and_password_by_reference() {
        let r: Resource = serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Resource",
            "metadata": {"name": "shop-redis"},
            "spec": {"app": "shop", "provider": "redis"}
        }))
        .unwrap();
        let env = serde_json::to_value(redis_env(&r)).unwrap();
        assert_eq!(
            env[2],
            json!({"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {
                "name": "shop-redis-credentials", "key": "password", "optional": false}}})
        );
        assert_eq!(
            redis_command(&["set".into(), "k".into(), "$(REDISCLI_AUTH)".into()]),
            [
                "redis-cli",
                "-h",
                "$(REDIS_HOST)",
                "-p",
                "$(REDIS_PORT)",
                "set",
                "k",
                "$$(REDISCLI_AUTH)"
            ]
        );
    }
}
