//! The slugbuilder Job of one build: built here (pure), created and deleted.
//!
//! **Config vars go in a Secret**, mounted as the slugbuilder's `CONFIG_DIR` (one file per
//! var, the buildpack `ENV_DIR` format), not in the Job's env: config holds database
//! passwords and API keys, and a Job's spec is readable by anyone who may `get jobs` or
//! `get pods` and shows in `kubectl describe`; a Secret needs `get secrets`. The Secret is
//! owned by the Job, so it goes when the Job does (its TTL, or the App's deletion, which
//! takes the Job with it). It is created right after the Job, before the Job controller
//! has even made the pod; if the kubelet were ever faster, it retries the mount.
//!
//! The build pod gets no service account token (it runs the app's own code and needs no
//! API access) and no service links.

use std::collections::BTreeMap;
use std::time::Duration;

use flynn_crds::{App, labels, pod_security};
use k8s_openapi::{
    ByteString,
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Container, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements, Secret,
            SecretVolumeSource, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::OwnerReference},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use rand::Rng;

use super::release::Current;
use super::{Error, FIELD_MANAGER, PipelineSettings, store::BuildUrls};

/// Label on build Jobs and their pods: the build's id (the Job's name).
pub const BUILD_LABEL: &str = flynn_crds::labels::BUILD;
/// Annotation on build Jobs: the commit built.
pub const COMMIT_ANNOTATION: &str = "flynn.io/commit";
/// The build container's name.
pub const CONTAINER: &str = "slugbuilder";
/// Where the config Secret is mounted (`CONFIG_DIR`).
const CONFIG_DIR: &str = "/etc/flynn/config";
/// The user and group builds run as: the slugbuilder image's own
/// (builder/image/Containerfile.slugbuilder), never root, and the one the slug's processes
/// run as. Also the group of the config Secret's files (fsGroup), which are otherwise
/// readable by root only.
pub const BUILD_USER: i64 = pod_security::SLUG_USER;

/// `<app>-build-<short commit>-<5 random>`: at most 30 + 7 + 7 + 6 = 50 characters, a valid
/// DNS label (App names are), unique per build so a rebuild of one commit is a new Job.
pub fn job_name(app: &str, commit: &str, rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    let short = commit.get(..7).unwrap_or(commit);
    format!("{app}-build-{short}-{suffix}")
}

/// What one build Job runs.
#[derive(Debug)]
pub struct BuildJob<'a> {
    pub app: &'a App,
    pub name: &'a str,
    pub commit: &'a str,
    pub urls: &'a BuildUrls,
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn secret_name(job: &str) -> String {
    format!("{job}-config")
}

/// The Job (pure).
pub fn build_job(b: &BuildJob<'_>, settings: &PipelineSettings) -> Job {
    let app_name = b.app.name_any();
    let labels = BTreeMap::from([
        (labels::APP.to_owned(), app_name.clone()),
        (BUILD_LABEL.to_owned(), b.name.to_owned()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_FLYNN.to_owned(),
        ),
    ]);
    let owner = OwnerReference {
        api_version: "flynn.io/v1alpha1".into(),
        kind: "App".into(),
        name: app_name.clone(),
        uid: b.app.metadata.uid.clone().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(true),
    };
    let mut env_vars = vec![
        env("SOURCE_URL", &b.urls.source),
        env("SLUG_PUT_URL", &b.urls.slug_put),
        env("SLUG_URL", &b.urls.slug),
        env("CACHE_URL", &b.urls.cache),
        env("SOURCE_VERSION", b.commit),
        env("CONFIG_DIR", CONFIG_DIR),
    ];
    // The platform's buildpack list, replacing the image's (the build fetches them).
    if !settings.buildpack_urls.is_empty() {
        env_vars.push(env("BUILDPACK_URLS", &settings.buildpack_urls.join(",")));
    }
    let container = Container {
        name: CONTAINER.into(),
        image: Some(settings.slugbuilder_image.clone()),
        image_pull_policy: Some(settings.slugbuilder_pull_policy.clone()),
        args: Some(vec!["--app".into(), app_name.clone()]),
        env: Some(env_vars),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: quantities(&settings.build_requests),
            limits: quantities(&settings.build_limits),
            ..Default::default()
        }),
        // The slugbuilder writes its JSON result here: the pod's termination message.
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        // Buildpacks need no privilege: Pod Security's "restricted" profile.
        security_context: Some(pod_security::container_security_context()),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(b.name.to_owned()),
            namespace: b.app.namespace(),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                COMMIT_ANNOTATION.to_owned(),
                b.commit.to_owned(),
            )])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // A failed build is reported, not retried: a retry would build the same
            // source the same way, and the pusher is waiting.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(settings.build_timeout.as_secs() as i64),
            ttl_seconds_after_finished: Some(settings.job_ttl.as_secs().min(i32::MAX as u64) as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    security_context: Some(pod_security::pod_security_context(Some(BUILD_USER))),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(secret_name(b.name)),
                            default_mode: Some(0o400),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The config Secret of a created `job` (pure): the App's config vars, owned by the Job.
pub fn config_secret(job: &Job, config: &BTreeMap<String, String>) -> Secret {
    let name = job.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&name)),
            namespace: job.namespace(),
            labels: job.metadata.labels.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: job.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        data: Some(
            config
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// How long a build waits for the operator to grant the receiver builds in a namespace.
const GRANT_WAIT: Duration = Duration::from_secs(30);

/// Creates the Job and its config Secret; the created Job, and the App's current Release
/// and config as read for it (the pipeline reuses them after the build while the App still
/// names that Release).
pub async fn create(client: &kube::Client, job: &Job, app: &App) -> Result<(Job, Current), Error> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    // The receiver may build only where the operator has bound its build role: in
    // namespaces that hold an App. A push right after `flynn create` can arrive before
    // that binding does, so a refusal is retried for a while before it is an error.
    let mut waited = Duration::ZERO;
    let mut pause = Duration::from_millis(100);
    let created = loop {
        match jobs.create(&pp, job).await {
            Err(kube::Error::Api(s)) if s.code == 403 && waited < GRANT_WAIT => {
                tracing::info!(namespace = %ns, ?waited, "not yet allowed to build here; waiting for the operator's grant");
                tokio::time::sleep(pause).await;
                waited += pause;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(Error::kube(format!(
                    "creating the build Job {name}: the receiver may build only in namespaces the operator has granted it (those holding an App); check that the operator runs and that `kubectl -n {ns} get rolebindings` lists the receiver's build role"
                ))(kube::Error::Api(s)));
            }
            result => {
                break result.map_err(Error::kube(format!("creating the build Job {name}")))?;
            }
        }
    };
    // The config is read once the Job exists: only then has the operator certainly granted
    // this namespace (reading it first could be refused for the same reason as the Job).
    let current = match Current::read(client, app).await {
        Ok(c) => c,
        Err(e) => {
            delete(client, &ns, &name).await;
            return Err(e);
        }
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = secrets
        .create(&pp, &config_secret(&created, &current.config))
        .await
    {
        delete(client, &ns, &name).await;
        return Err(Error::kube(format!(
            "creating the config Secret of the build Job {name}"
        ))(e));
    }
    Ok((created, current))
}

/// Deletes the Job; its pod goes with it (background propagation: the garbage collector
/// deletes the pod, which stops the build). Best effort: a Job left behind still ends at
/// its deadline and is removed after its TTL.
pub async fn delete(client: &kube::Client, namespace: &str, name: &str) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => tracing::info!(job = name, "deleted the build Job"),
        Err(kube::Error::Api(s)) if s.is_not_found() => {}
        Err(e) => tracing::warn!(job = name, error = %e, "could not delete the build Job"),
    }
}

/// Deletes a running build Job if the deploy that created it is dropped before it could
/// decide (the SSH side dropped the future instead of cancelling it): a build nobody waits
/// for must not run to its deadline and upload a slug nobody will use.
pub struct RunningJob {
    client: kube::Client,
    namespace: String,
    name: String,
    armed: bool,
}

impl std::fmt::Debug for RunningJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningJob")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl RunningJob {
    pub fn new(client: &kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            armed: true,
        }
    }

    /// The build ended: keep the Job (for `kubectl logs`, until its TTL).
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// Stops the build now.
    pub async fn delete(mut self) {
        self.armed = false;
        delete(&self.client, &self.namespace, &self.name).await;
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, ns, name) = (
                self.client.clone(),
                std::mem::take(&mut self.namespace),
                std::mem::take(&mut self.name),
            );
            rt.spawn(async move { delete(&client, &ns, &name).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app() -> App {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "App",
            "metadata": {"name": "shop", "namespace": "team", "uid": "app-uid"},
            "spec": {},
        }))
        .unwrap()
    }

    fn urls() -> BuildUrls {
        BuildUrls {
            source: "http://s/src?sig=1".into(),
            slug_put: "http://s/slug?access=rw&sig=2".into(),
            slug: "http://s/slug?sig=3".into(),
            cache: "http://s/cache?access=rw&sig=4".into(),
        }
    }

    #[test]
    fn job_names_are_short_unique_dns_labels() {
        let mut rng = rand::rng();
        let a = job_name(&"a".repeat(30), &"f".repeat(40), &mut rng);
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.starts_with(&format!("{}-build-fffffff-", "a".repeat(30))),
            "{a}"
        );
        flynn_crds::validation::validate_dns_label(&a).unwrap();
        assert_ne!(a, job_name(&"a".repeat(30), &"f".repeat(40), &mut rng));
    }

    #[test]
    fn the_job_runs_the_slugbuilder_once_with_a_deadline_and_no_secrets_in_its_spec() {
        let settings = PipelineSettings::default();
        let app = app();
        let urls = urls();
        let job = build_job(
            &BuildJob {
                app: &app,
                name: "shop-build-abc1234-xyz12",
                commit: "abc1234def",
                urls: &urls,
            },
            &settings,
        );
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["metadata"]["namespace"], "team");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "app-uid");
        assert_eq!(v["metadata"]["labels"]["flynn.io/app"], "shop");
        assert_eq!(
            v["metadata"]["labels"][BUILD_LABEL],
            "shop-build-abc1234-xyz12"
        );
        assert_eq!(v["spec"]["backoffLimit"], 0);
        assert_eq!(v["spec"]["activeDeadlineSeconds"], 900);
        assert_eq!(v["spec"]["ttlSecondsAfterFinished"], 3600);
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["automountServiceAccountToken"], false);
        // Not root, and the config Secret's files readable by the build's group.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], BUILD_USER);
        assert_eq!(pod["securityContext"]["fsGroup"], BUILD_USER);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            pod["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(
            pod["volumes"][0]["secret"]["secretName"],
            "shop-build-abc1234-xyz12-config"
        );
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "localhost/flynn-slugbuilder:dev");
        assert_eq!(c["args"], json!(["--app", "shop"]));
        let env: BTreeMap<String, String> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(env["SOURCE_URL"], urls.source);
        assert_eq!(env["SLUG_PUT_URL"], urls.slug_put);
        assert_eq!(env["SLUG_URL"], urls.slug);
        assert_eq!(env["CACHE_URL"], urls.cache);
        assert_eq!(env["SOURCE_VERSION"], "abc1234def");
        assert_eq!(env["CONFIG_DIR"], CONFIG_DIR);
        assert!(
            !env.contains_key("BUILDPACK_URLS"),
            "no list: the image's buildpacks"
        );
        assert!(
            !v.to_string().contains("s3cret"),
            "config vars must not be in the Job"
        );
        assert_eq!(c["resources"]["limits"]["memory"], "2Gi");
    }

    #[test]
    fn a_buildpack_list_becomes_the_jobs_buildpack_urls() {
        let settings = PipelineSettings {
            buildpack_urls: vec![
                "https://github.com/heroku/heroku-buildpack-nodejs#v363".into(),
                "https://github.com/heroku/heroku-buildpack-python#v351".into(),
            ],
            ..PipelineSettings::default()
        };
        let (app, urls) = (app(), urls());
        let job = build_job(
            &BuildJob {
                app: &app,
                name: "shop-build-abc1234-xyz12",
                commit: "abc1234def",
                urls: &urls,
            },
            &settings,
        );
        let v = serde_json::to_value(&job).unwrap();
        let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
        let list: Vec<_> = env
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "BUILDPACK_URLS")
            .collect();
        assert_eq!(
            list,
            [&json!({
                "name": "BUILDPACK_URLS",
                "value": "https://github.com/heroku/heroku-buildpack-nodejs#v363,https://github.com/heroku/heroku-buildpack-python#v351"
            })]
        );
    }

    #[test]
    fn the_config_secret_is_owned_by_the_job() {
        let mut job = Job::default();
        job.metadata.name = Some("shop-build-1".into());
        job.metadata.namespace = Some("team".into());
        job.metadata.uid = Some("job-uid".into());
        let config = BTreeMap::from([("SECRET_KEY".to_owned(), "s3cret".to_owned())]);
        let s = config_secret(&job, &config);
        assert_eq!(s.metadata.name.as_deref(), Some("shop-build-1-config"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Job", "job-uid")
        );
        assert_eq!(s.data.unwrap()["SECRET_KEY"].0, b"s3cret");
    }
}
