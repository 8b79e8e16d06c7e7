//! `run [-d] [-e K=V] [--limits cpu=,memory=] -- CMD...`: a one-off pod of the current
//! release.
//!
//! The pod's container is built the way the operator builds a process's container (its
//! `formation::build::container` is private, so this repeats the few lines it needs): a slug
//! runs on the slugrunner image with `SLUG_URL`/`SLUG_SHA256` and the command as a literal
//! command line; an image runs with the command as its entrypoint. Both get the release's
//! env and `FLYNN_APP`/`FLYNN_RELEASE`/`FLYNN_PROCESS_TYPE=run`, and the same security
//! context (Pod Security "restricted": a slug runs as the slug user, an image as its own
//! user, never as root).
//!
//! With stdin and stdout on a terminal the pod gets a TTY; otherwise its output is streamed
//! from its log and piped input goes in through an attach of stdin (the machinery is
//! [`super::pod_session`]'s, shared with `flynn pg psql` and `flynn redis-cli`). Either way
//! the command's exit code becomes flynn's and the pod is deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use flynn_crds::validation::validate_env_name;
use flynn_crds::{Release, labels, pod_security};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{ListParams, ObjectMeta};

use super::pod_session::{self, Io};
use super::ps::{ONE_OFF, RUN_TYPE};
use super::split_pair;
use crate::cli::RunArgs;
use crate::context::Ctx;
use crate::errors::{Error, Result, exit};
use crate::output::{self, note};

/// The container name of one-off pods.
pub use super::pod_session::CONTAINER;

/// What a one-off pod runs.
#[derive(Debug, Clone)]
pub struct OneOff<'a> {
    pub app: &'a str,
    pub release: &'a Release,
    pub command: &'a [String],
    pub env: &'a [(String, String)],
    pub limits: &'a BTreeMap<String, Quantity>,
    pub tty: bool,
    /// Keep the container's stdin open for one attach (a TTY, or input piped to `flynn run`).
    pub stdin: bool,
    /// Required for slug releases.
    pub slugrunner_image: Option<&'a str>,
}

/// The one-off Pod (pure, unit-tested). `None` image means a slug release without a
/// slugrunner image.
pub fn one_off_pod(spec: &OneOff<'_>) -> Option<Pod> {
    let release_name = spec.release.name_any();
    let env_var = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    };
    let mut env: Vec<EnvVar> = spec
        .release
        .spec
        .env
        .iter()
        .map(|(k, v)| env_var(k, v))
        .collect();
    env.push(env_var("FLYNN_APP", spec.app));
    env.push(env_var("FLYNN_RELEASE", &release_name));
    env.push(env_var("FLYNN_PROCESS_TYPE", RUN_TYPE));
    let artifact = &spec.release.spec.artifact;
    // Pod Security "restricted", as the operator's processes: a slug as the slugrunner
    // image's user (it owns /app), an image as its own user, refused by the kubelet if root.
    let (image, command, args, user) = match (&artifact.slug, &artifact.image) {
        (Some(slug), _) => {
            env.push(env_var("SLUG_URL", &slug.url));
            env.push(env_var("SLUG_SHA256", &slug.sha256));
            // slugrunner runs anything but `start <type>` as a literal command line.
            (
                spec.slugrunner_image?.to_owned(),
                None,
                Some(spec.command.to_vec()),
                Some(pod_security::SLUG_USER),
            )
        }
        (None, Some(image)) => (image.clone(), Some(spec.command.to_vec()), None, None),
        (None, None) => return None,
    };
    // -e comes last, so it overrides the release's env (`env` wins over `envFrom` too).
    for (k, v) in spec.env {
        env.retain(|e| &e.name != k);
        env.push(env_var(k, v));
    }
    let mut pod_labels = BTreeMap::from([
        (labels::APP.to_owned(), spec.app.to_owned()),
        (labels::RELEASE.to_owned(), release_name.clone()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_FLYNN.to_owned(),
        ),
        (ONE_OFF.to_owned(), "true".to_owned()),
    ]);
    pod_labels.retain(|_, v| !v.is_empty());
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-run-", spec.app)),
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(
                "flynn.io/release-version".to_owned(),
                spec.release.spec.version.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(5),
            security_context: Some(pod_security::pod_security_context(user)),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(image),
                image_pull_policy: Some("IfNotPresent".into()),
                command,
                args,
                env: Some(env),
                // The release's config vars, from its snapshot Secret (never copied in).
                env_from: flynn_crds::config::env_from(spec.release),
                stdin: Some(spec.tty || spec.stdin),
                stdin_once: Some(spec.tty || spec.stdin),
                tty: Some(spec.tty),
                resources: (!spec.limits.is_empty()).then(|| ResourceRequirements {
                    limits: Some(spec.limits.clone()),
                    ..ResourceRequirements::default()
                }),
                security_context: Some(pod_security::container_security_context()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// Parses `cpu=500m,memory=512Mi` (names and quantities checked as `flynn limit` does).
pub fn parse_limits(text: &str) -> Result<BTreeMap<String, Quantity>> {
    super::limit::parse_quantities(
        text.split(',').filter(|p| !p.is_empty()),
        "flynn run --limits cpu=500m,memory=512Mi -- bash",
    )
}

/// Runs the command; returns the exit code to end with.
pub async fn run(ctx: &Ctx, args: &RunArgs) -> Result<u8> {
    let app = ctx.app().await?;
    let app_name = app.name_any();
    let release = ctx.current_release(&app).await?;
    let mut env = Vec::new();
    for pair in &args.env {
        let (k, v) = split_pair(pair, "flynn run -e DEBUG=1 -- bash")?;
        validate_env_name(k).map_err(|e| {
            Error::bad_argument(pair, e.to_string(), "flynn run -e DEBUG=1 -- bash")
        })?;
        env.push((k.to_owned(), v.to_owned()));
    }
    let limits = args
        .limits
        .as_deref()
        .map(parse_limits)
        .transpose()?
        .unwrap_or_default();
    let io = if args.detach {
        Io::OutputOnly
    } else {
        Io::detect()
    };
    let slugrunner = if release.spec.artifact.slug.is_some() {
        Some(slugrunner_image(ctx, &app_name).await?)
    } else {
        None
    };
    let pod = one_off_pod(&OneOff {
        app: &app_name,
        release: &release,
        command: &args.command,
        env: &env,
        limits: &limits,
        tty: io.tty(),
        stdin: io.stdin(),
        slugrunner_image: slugrunner.as_deref(),
    })
    .ok_or_else(|| Error::RunFailed {
        pod: format!("{app_name}-run"),
        reason: format!("release {} has no artifact", release.name_any()),
    })?;
    let (api, name) = pod_session::create(ctx, &pod, "one-off").await?;
    if args.detach {
        output::print_out(&format!("{name}\n"))?;
        return Ok(exit::OK);
    }
    // Whatever happens from here on (an error, Ctrl-C), the pod goes.
    pod_session::with_pod(
        &api,
        &name,
        pod_session::attach_or_stream(ctx, &api, &name, io, Duration::from_secs(args.timeout)),
    )
    .await
}

/// The slugrunner image: the platform's setting, else what the operator put in this app's
/// Deployments (the operator's own flag, so always the right one).
async fn slugrunner_image(ctx: &Ctx, app: &str) -> Result<String> {
    let platform = ctx.platform().await;
    if let Some(image) = platform.slugrunner_image() {
        return Ok(image);
    }
    let deployments = ctx
        .api::<Deployment>()
        .list(&ListParams::default().labels(&format!("{}={app}", labels::APP)))
        .await
        .map_err(Error::kube(format!("listing the deployments of app {app}")))?;
    let image = deployments
        .items
        .iter()
        .filter_map(|d| d.spec.as_ref()?.template.spec.as_ref())
        .flat_map(|spec| spec.containers.iter())
        .find(|c| c.env.iter().flatten().any(|e| e.name == "SLUG_URL"))
        .and_then(|c| c.image.clone());
    match image {
        Some(image) => Ok(image),
        None => {
            note(
                ctx.ui,
                "the slugrunner image is neither in the platform ConfigMap nor in a running process of this app",
            );
            Err(Error::Platform {
                what: "the slugrunner image",
                problem: platform
                    .missing()
                    .map_or_else(|| "has no slugrunnerImage".to_owned(), str::to_owned),
                env: crate::platform::ENV_SLUGRUNNER_IMAGE,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(artifact: serde_json::Value) -> Release {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
            "metadata": {"name": "shop-v3"},
            "spec": {"app": "shop", "version": 3, "artifact": artifact,
                     "env": {"GREETING": "hi", "DEBUG": "0"},
                     "processes": {"web": {"args": ["node", "server.js"], "ports": [{"port": 8080}]}}}
        }))
        .unwrap()
    }

    fn container(pod: &Pod) -> &Container {
        &pod.spec.as_ref().unwrap().containers[0]
    }

    fn env(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    /// Asserts the container-level fields Pod Security "restricted" checks; returns the
    /// pod-level security context.
    fn restricted(pod: &Pod) -> serde_json::Value {
        let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
        assert_eq!(
            spec["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
        );
        spec["securityContext"].clone()
    }

    #[test]
    fn an_image_release_runs_the_command_as_entrypoint() {
        let r = release(json!({"image": "localhost/flynn-smoke:1"}));
        let command = vec!["sh".to_owned(), "-c".into(), "echo hi".into()];
        let pod = one_off_pod(&OneOff {
            app: "shop",
            release: &r,
            command: &command,
            env: &[("DEBUG".into(), "1".into())],
            limits: &parse_limits("cpu=500m,memory=256Mi").unwrap(),
            tty: true,
            stdin: false,
            slugrunner_image: None,
        })
        .unwrap();
        let c = container(&pod);
        assert_eq!(c.image.as_deref(), Some("localhost/flynn-smoke:1"));
        assert_eq!(c.command.as_ref(), Some(&command));
        assert_eq!(c.args, None);
        assert_eq!(
            (c.tty, c.stdin, c.stdin_once),
            (Some(true), Some(true), Some(true))
        );
        assert_eq!(
            env(c),
            [
                ("GREETING", "hi"),
                ("FLYNN_APP", "shop"),
                ("FLYNN_RELEASE", "shop-v3"),
                ("FLYNN_PROCESS_TYPE", "run"),
                ("DEBUG", "1")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"], Quantity("256Mi".into()));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[flynn_crds::labels::APP], "shop");
        assert_eq!(labels[ONE_OFF], "true");
        assert!(
            !labels.contains_key(flynn_crds::labels::PROCESS),
            "no Service or Deployment may select it"
        );
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("shop-run-"));
        // Pod Security "restricted", with the image's own user (none forced).
        assert_eq!(
            restricted(&pod),
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
        );
    }

    #[test]
    fn a_slug_release_runs_on_slugrunner_with_the_literal_command() {
        let r = release(
            json!({"slug": {"url": "http://shelf/s.tgz", "sha256": "a".repeat(64), "size": 1}}),
        );
        let command = vec!["bash".to_owned()];
        let spec = OneOff {
            app: "shop",
            release: &r,
            command: &command,
            env: &[],
            limits: &BTreeMap::new(),
            tty: false,
            stdin: false,
            slugrunner_image: Some("localhost/flynn-slugrunner:dev"),
        };
        let pod = one_off_pod(&spec).unwrap();
        let c = container(&pod);
        assert_eq!(c.image.as_deref(), Some("localhost/flynn-slugrunner:dev"));
        assert_eq!(c.command, None);
        assert_eq!(c.args.as_ref(), Some(&command));
        assert!(env(c).contains(&("SLUG_URL".into(), "http://shelf/s.tgz".into())));
        assert_eq!(c.tty, Some(false));
        // Pod Security "restricted", as the slug user (the owner of /app in the image).
        assert_eq!(
            restricted(&pod),
            json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                   "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert!(
            one_off_pod(&OneOff {
                slugrunner_image: None,
                ..spec
            })
            .is_none()
        );
    }

    #[test]
    fn bad_limits_say_why() {
        assert!(
            parse_limits("gpu=1")
                .unwrap_err()
                .to_string()
                .contains("\"gpu\" is not a resource")
        );
        assert!(parse_limits("cpu").is_err());
        assert!(
            parse_limits("memory=1GB")
                .unwrap_err()
                .to_string()
                .contains("not a quantity")
        );
    }
}
