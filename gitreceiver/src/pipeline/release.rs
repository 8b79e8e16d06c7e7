//! The Release a build makes, and pointing the App at it.
//!
//! Version N+1 and the race with other writers (a concurrent push, `flynn env set`) are
//! `flynn_crds::next_release`'s, shared with the CLI.
//!
//! The App is pointed at the Release with a merge patch, as the operator and the CLI do:
//! `spec.release` belongs to whoever last set it (user, CLI, rollback), and a server-side
//! apply would make the receiver its owner and fight them.

use std::collections::BTreeMap;

use flynn_builder::build::BuildResult;
use flynn_crds::{
    App, ProcessPort, ProcessSpec, Protocol, Release, ReleaseSpec, Slug, labels, names,
    next_release,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};

use super::{Error, FIELD_MANAGER};
use crate::Push;

/// Meta keys on a pushed Release.
pub mod meta {
    pub const COMMIT: &str = "git.commit";
    pub const USER: &str = "git.user";
    pub const FINGERPRINT: &str = "git.fingerprint";
    pub const REF: &str = "git.ref";
    /// The build Job that made the slug.
    pub const BUILD: &str = "flynn.io/build";
    /// The buildpack(s) that built it.
    pub const BUILDPACK: &str = "flynn.io/buildpack";
}

/// The Release of a build (pure).
///
/// Process types come from the build (the Procfile over the buildpack's defaults). They get
/// no command: the operator then runs the slugrunner's `start <type>`, which reads the
/// Procfile from the slug and runs it with `bash -c` after `.profile.d`, as Heroku does;
/// splitting a Procfile line into argv here would break `$PORT` and `&&`. `web` listens on
/// `web_port` (passed as `$PORT`; the operator's `<app>-web` Service exposes it).
///
/// What the App's current release (`previous`) set on a process type that the build still
/// has, its resources (`flynn limit`) and health check, carries over: a push changes the
/// code, not how it runs, as a config change keeps the code. So does the config: `config`
/// (the App's config vars now) becomes the new Release's own snapshot.
#[allow(clippy::too_many_arguments)]
pub fn build_release(
    app: &App,
    previous: Option<&Release>,
    config: &BTreeMap<String, String>,
    version: i64,
    result: &BuildResult,
    push: &Push,
    build: &str,
    web_port: i32,
) -> Release {
    let processes = result
        .process_types
        .keys()
        .map(|process| {
            let before = previous.and_then(|r| r.spec.processes.get(process));
            let ports = if process == names::WEB_PROCESS {
                vec![ProcessPort {
                    port: web_port,
                    name: Some("http".into()),
                    protocol: Protocol::Tcp,
                    service: true,
                }]
            } else {
                vec![]
            };
            (
                process.clone(),
                ProcessSpec {
                    ports,
                    resources: before.and_then(|p| p.resources.clone()),
                    health_check: before.and_then(|p| p.health_check.clone()),
                    ..Default::default()
                },
            )
        })
        .collect();
    let meta = BTreeMap::from([
        (meta::COMMIT.to_owned(), push.commit.clone()),
        (meta::USER.to_owned(), push.user.clone()),
        (meta::FINGERPRINT.to_owned(), push.fingerprint.clone()),
        (meta::REF.to_owned(), push.ref_name.clone()),
        (meta::BUILD.to_owned(), build.to_owned()),
        (meta::BUILDPACK.to_owned(), result.buildpack.clone()),
    ]);
    let mut r = Release::new(
        &names::release_name(&app.name_any(), version),
        ReleaseSpec {
            app: app.name_any(),
            version,
            artifact: flynn_crds::Artifact {
                slug: Some(Slug {
                    url: result.url.clone(),
                    sha256: result.sha256.clone(),
                    size: i64::try_from(result.size).unwrap_or(i64::MAX),
                }),
                image: None,
            },
            config_secret: flynn_crds::config::snapshot_ref(
                &names::release_name(&app.name_any(), version),
                config,
            ),
            env: BTreeMap::new(),
            processes,
            meta,
        },
    );
    r.metadata.namespace = app.namespace();
    // As the operator's own Releases: owned (not controlled) by the App, so deleting the
    // App deletes its history.
    r.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "flynn.io/v1alpha1".into(),
        kind: "App".into(),
        name: app.name_any(),
        uid: app.metadata.uid.clone().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(true),
    }]);
    r.metadata.labels = Some(BTreeMap::from([
        (labels::APP.to_owned(), app.name_any()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_FLYNN.to_owned(),
        ),
    ]));
    r
}

/// The App's current Release and its config vars, as read at one moment.
#[derive(Clone, Debug)]
pub struct Current {
    /// `None` before the first Release (or when the one the App names is gone).
    pub release: Option<Release>,
    /// The Release's snapshot; before the first Release, `<app>-initial-env`.
    pub config: BTreeMap<String, String>,
}

impl Current {
    /// Reads the Release `app` names and its config.
    pub async fn read(client: &kube::Client, app: &App) -> Result<Self, Error> {
        let release = current(client, app).await?;
        let config = config(client, app, release.as_ref()).await?;
        Ok(Self { release, config })
    }

    /// Is this still what [`read`](Self::read) would return for `app` (read again)? Yes
    /// while `app` names the same Release: its spec is immutable (CEL) and so is the
    /// snapshot it names, so a config change (`flynn env set`) shows as the App naming a
    /// new Release. Never before the first Release: `flynn env set` rewrites
    /// `<app>-initial-env` in place.
    pub fn still_current(&self, app: &App) -> bool {
        match (&self.release, app.spec.release.as_deref()) {
            (Some(r), Some(name)) => r.name_any() == name,
            _ => false,
        }
    }

    /// `self` if [`still_current`](Self::still_current), else read again.
    pub async fn refresh(self, client: &kube::Client, app: &App) -> Result<Self, Error> {
        if self.still_current(app) {
            return Ok(self);
        }
        Self::read(client, app).await
    }
}

/// The Release the App runs now, if any (a first push has none; one the App names but that
/// is gone counts as none).
pub async fn current(client: &kube::Client, app: &App) -> Result<Option<Release>, Error> {
    let Some(name) = app.spec.release.as_deref() else {
        return Ok(None);
    };
    let releases: Api<Release> =
        Api::namespaced(client.clone(), &app.namespace().unwrap_or_default());
    releases
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading release {name}")))
}

/// The App's config vars now, `current` its current Release: that Release's snapshot (or, before the first,
/// its initial config Secret).
pub async fn config(
    client: &kube::Client,
    app: &App,
    current: Option<&Release>,
) -> Result<BTreeMap<String, String>, Error> {
    flynn_crds::config::load(client, app, current)
        .await
        .map_err(|source| Error::Config {
            app: app.name_any(),
            source,
        })
}

/// Creates the next Release of `app` from `make(version)`, and its snapshot of `config`
/// (versions and races as every writer of Releases does: `flynn_crds::next_release`); the
/// created Release.
pub async fn create_next(
    client: &kube::Client,
    app: &App,
    config: &BTreeMap<String, String>,
    make: impl Fn(i64) -> Release,
) -> Result<Release, Error> {
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    next_release::create(client, app, config, &pp, make)
        .await
        .map_err(|e| match e {
            next_release::Error::Kube { action, source } => Error::Kube { action, source },
            next_release::Error::Race { app, version } => Error::ReleaseRace { app, version },
            // Left unused: the App is not pointed at it, and the receiver may not delete
            // Releases. The push fails saying so.
            next_release::Error::Snapshot { release, source } => Error::kube(format!(
                "creating the config Secret of release {release} (the release is left unused; push again)"
            ))(source),
        })
}

/// Points the App at `release`; on a first deploy (no process counts yet) also starts one
/// `web`, as Heroku does, so the first push serves. The App as patched.
pub async fn point_app(client: &kube::Client, app: &App, release: &Release) -> Result<App, Error> {
    let ns = app.namespace().unwrap_or_default();
    let apps: Api<App> = Api::namespaced(client.clone(), &ns);
    let release_name = release.name_any();
    let mut spec = serde_json::json!({"release": release_name});
    if app.spec.processes.is_empty() && release.spec.processes.contains_key(names::WEB_PROCESS) {
        spec["processes"] = serde_json::json!({names::WEB_PROCESS: 1});
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    apps.patch(
        &app.name_any(),
        &params,
        &Patch::Merge(&serde_json::json!({"spec": spec})),
    )
    .await
    .map_err(Error::kube(format!(
        "pointing app {} at {release_name}",
        app.name_any()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_release_carries_the_slug_the_processes_and_who_pushed() {
        let app: App = serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "App",
            "metadata": {"name": "shop", "namespace": "team", "uid": "u1"},
            "spec": {},
        }))
        .unwrap();
        let config = BTreeMap::from([("K".to_owned(), "v".to_owned())]);
        let result: BuildResult = serde_json::from_value(json!({
            "url": "http://shelf/slugs/team/shop/b.tgz?sig=1", "sha256": "a".repeat(64), "size": 42,
            "process_types": {"web": "bin/web", "worker": "bin/work"},
            "buildpack": "Procfile", "duration_seconds": 2.0,
        }))
        .unwrap();
        let push = Push {
            namespace: "team".into(),
            app: "shop".into(),
            repo: "/r".into(),
            quarantine: None,
            commit: "c".repeat(40),
            ref_name: "refs/heads/main".into(),
            user: "alice".into(),
            fingerprint: "SHA256:xyz".into(),
        };
        let r = build_release(&app, None, &config, 3, &result, &push, "shop-build-1", 8080);
        assert_eq!(r.name_any(), "shop-v3");
        assert_eq!(r.namespace().as_deref(), Some("team"));
        let slug = r.spec.artifact.slug.as_ref().unwrap();
        assert_eq!(
            (slug.url.as_str(), slug.size),
            ("http://shelf/slugs/team/shop/b.tgz?sig=1", 42)
        );
        // The config is named, never copied in: it goes into the Release's own snapshot.
        assert!(r.spec.env.is_empty());
        assert_eq!(r.spec.config_secret.as_deref(), Some("shop-v3-env"));
        assert_eq!(r.spec.processes["web"].ports[0].port, 8080);
        assert!(r.spec.processes["web"].command.is_empty());
        assert!(r.spec.processes["worker"].ports.is_empty());
        assert_eq!(r.spec.meta[meta::COMMIT], "c".repeat(40));
        assert_eq!(r.spec.meta[meta::USER], "alice");
        assert_eq!(r.spec.meta[meta::FINGERPRINT], "SHA256:xyz");
        assert_eq!(r.spec.meta[meta::REF], "refs/heads/main");
        assert_eq!(r.owner_references()[0].uid, "u1");
        assert_eq!(r.labels()[labels::APP], "shop");

        // What the current release set on a process type stays; a type the build no
        // longer has is gone, and commands come from the new build.
        let previous: Release = serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
            "metadata": {"name": "shop-v2"},
            "spec": {"app": "shop", "version": 2, "artifact": {"image": "x"},
                "processes": {
                    "web": {"command": ["old"], "ports": [{"port": 5000}],
                        "resources": {"limits": {"memory": "512Mi"}},
                        "healthCheck": {"type": "http", "path": "/health"}},
                    "clock": {"resources": {"limits": {"cpu": "1"}}},
                }},
        }))
        .unwrap();
        let r = build_release(
            &app,
            Some(&previous),
            &BTreeMap::new(),
            3,
            &result,
            &push,
            "b",
            8080,
        );
        assert_eq!(r.spec.config_secret, None, "no config vars: no snapshot");
        let web = &r.spec.processes["web"];
        assert_eq!(web.resources.as_ref().unwrap().limits["memory"].0, "512Mi");
        assert_eq!(
            web.health_check.as_ref().unwrap().path.as_deref(),
            Some("/health")
        );
        assert!(web.command.is_empty());
        assert_eq!(web.ports[0].port, 8080);
        assert!(r.spec.processes["worker"].resources.is_none());
        assert!(!r.spec.processes.contains_key("clock"));
    }

    fn app_naming(release: Option<&str>) -> App {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "App",
            "metadata": {"name": "shop", "namespace": "team"},
            "spec": {"release": release},
        }))
        .unwrap()
    }

    fn release_named(name: &str) -> Release {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"app": "shop", "version": 4, "artifact": {"image": "shop:4"}, "processes": {}},
        }))
        .unwrap()
    }

    #[test]
    fn what_the_build_read_is_reused_only_while_the_app_names_the_same_release() {
        let read = Current {
            release: Some(release_named("shop-v4")),
            config: BTreeMap::from([("K".to_owned(), "old".to_owned())]),
        };
        assert!(read.still_current(&app_naming(Some("shop-v4"))));
        // `flynn env set` during the build made shop-v5 and pointed the App at it.
        assert!(!read.still_current(&app_naming(Some("shop-v5"))));
        // Before the first Release the config is a Secret rewritten in place: read again.
        let first = Current {
            release: None,
            config: BTreeMap::new(),
        };
        assert!(!first.still_current(&app_naming(None)));
        assert!(!first.still_current(&app_naming(Some("shop-v1"))));
    }
}
