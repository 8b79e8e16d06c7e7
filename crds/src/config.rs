//! Config vars: where an App's environment is kept, and how a Release snapshots it.
//!
//! Config vars are secrets (`DATABASE_URL` carries a password), so they are never written
//! into an App, a Release or a Deployment, which anyone with the `view` role reads. Each
//! Release names one immutable Secret in its namespace, its *snapshot*
//! (`spec.configSecret`, `<release>-env` when Flynn makes it); processes get it with
//! `envFrom`. Because a Release never changes and its snapshot never changes, rolling back
//! to a Release restores the config it ran with, and deleting a Release (history pruning)
//! deletes its snapshot (it is owned by the Release).
//!
//! The App's config *now* is its current Release's snapshot; before the first Release, it
//! is the Secret `<app>-initial-env` (set by `flynn env set` before the first push). Whoever makes
//! the next Release (`flynn env set`, `flynn limit set`, `git push`) reads that and writes
//! the next snapshot: the rules are here so the CLI and the git receiver agree.
//!
//! Releases made before config moved to Secrets carry a plain `spec.env`; it is still read
//! (so an upgrade loses nothing) and copied into the next snapshot, which ends it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvFromSource, Secret, SecretEnvSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::{Release, labels};

/// The Secret type of Flynn's config snapshots (a free-form type: `kubectl get secrets`
/// shows what they are, and nothing mistakes them for another kind).
pub const SECRET_TYPE: &str = "flynn.io/config";

/// The snapshot Flynn makes for a Release: `<release>-env`, e.g. `shop-v4-env`.
pub fn snapshot_name(release: &str) -> String {
    format!("{release}-env")
}

/// The Secret that holds an App's config before its first Release: `<app>-initial-env`.
///
/// Never another App's snapshot: snapshots are `<release>-env` and Release names end in
/// `-v<N>`, never in `-initial`.
pub fn initial_name(app: &str) -> String {
    format!("{app}-initial-env")
}

/// Where the config of an App whose current Release is `current` is read from: that
/// Release's snapshot, or (no Release yet) the App's initial Secret. `None` when the
/// current Release has no snapshot (its config, if any, is its legacy `spec.env`).
pub fn source(app: &str, current: Option<&Release>) -> Option<String> {
    match current {
        Some(r) => r.spec.config_secret.clone(),
        None => Some(initial_name(app)),
    }
}

/// Why a Secret could not be read as config vars.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "Secret {secret} is not a config Secret (its type is {found:?}, not {SECRET_TYPE:?}): \
         Flynn copies config only from those, so that a Release naming another Secret of the \
         namespace (a TLS key, a token) cannot have it copied into builds and new releases; \
         recreate it with `type: {SECRET_TYPE}`"
    )]
    NotConfig { secret: String, found: String },
    #[error(
        "config var {key} in Secret {secret} is not UTF-8 text; environment variables are text: \
         replace it (flynn env set {key}=...)"
    )]
    NotText { secret: String, key: String },
}

/// The config vars of a Release: its snapshot's (`snapshot` is the Secret its
/// `spec.configSecret` names, as read), else its legacy `spec.env`.
pub fn of_release(
    release: &Release,
    snapshot: Option<&Secret>,
) -> Result<BTreeMap<String, String>, Error> {
    match snapshot {
        Some(s) => vars(s),
        None => Ok(release.spec.env.clone()),
    }
}

/// The config vars in a config Secret (its `data`, and any `stringData` not yet folded
/// in). A Secret of another type is refused: see [`Error::NotConfig`].
pub fn vars(secret: &Secret) -> Result<BTreeMap<String, String>, Error> {
    let found = secret.type_.clone().unwrap_or_default();
    if found != SECRET_TYPE {
        return Err(Error::NotConfig {
            secret: secret.name_any(),
            found,
        });
    }
    let mut out = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        let text = String::from_utf8(v.0.clone()).map_err(|_| Error::NotText {
            secret: secret.name_any(),
            key: k.clone(),
        })?;
        out.insert(k.clone(), text);
    }
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// The snapshot of `vars` for `release` (as created, so with its uid), named as its
/// `spec.configSecret` says: immutable, owned by the Release, labelled with its App and
/// Release.
pub fn snapshot(release: &Release, vars: &BTreeMap<String, String>) -> Secret {
    let name = release.name_any();
    let mut secret = config_secret(
        release
            .spec
            .config_secret
            .clone()
            .unwrap_or_else(|| snapshot_name(&name)),
        &release.spec.app,
        owner("Release", &name, release.metadata.uid.as_deref(), true),
        vars,
    );
    secret.metadata.namespace = release.namespace();
    secret
        .metadata
        .labels
        .get_or_insert_default()
        .insert(labels::RELEASE.to_owned(), name);
    secret.immutable = Some(true);
    secret
}

/// The App's initial config Secret (before its first Release): mutable (`flynn env set`
/// rewrites it), owned by the App so it goes with it.
pub fn initial(app: &crate::App, vars: &BTreeMap<String, String>) -> Secret {
    let name = app.name_any();
    let mut secret = config_secret(
        initial_name(&name),
        &name,
        owner("App", &name, app.metadata.uid.as_deref(), false),
        vars,
    );
    secret.metadata.namespace = app.namespace();
    secret
}

fn owner(kind: &str, name: &str, uid: Option<&str>, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: "flynn.io/v1alpha1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.unwrap_or_default().into(),
        controller: Some(controller),
        block_owner_deletion: Some(true),
    }
}

/// A config Secret named `name` of App `app`, owned by `owner`, holding `vars`.
fn config_secret(
    name: String,
    app: &str,
    owner: OwnerReference,
    vars: &BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([
                (labels::APP.to_owned(), app.to_owned()),
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_FLYNN.to_owned(),
                ),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(
            vars.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// What the next Release's `spec.configSecret` is: its snapshot's name, or nothing when
/// there are no config vars (no empty Secret is made).
pub fn snapshot_ref(release: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    (!vars.is_empty()).then(|| snapshot_name(release))
}

/// Why the App's config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "release {release} names config Secret {secret}, which does not exist: recreate it or \
         roll back to a release that has its config (flynn release rollback)"
    )]
    SnapshotMissing { release: String, secret: String },
    #[error("reading config Secret {secret}: {source}")]
    Kube {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotText(#[from] Error),
}

impl LoadError {
    /// The API server's status code, when it refused the read (403: no grant yet).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Kube {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }
}

/// Reads the config of `app` whose current Release is `current` (see [`source`]). Before
/// the first Release, a missing initial Secret means no config.
pub async fn load(
    client: &kube::Client,
    app: &crate::App,
    current: Option<&Release>,
) -> Result<BTreeMap<String, String>, LoadError> {
    let Some(name) = source(&app.name_any(), current) else {
        return Ok(current.map(|r| r.spec.env.clone()).unwrap_or_default());
    };
    let secrets: kube::Api<Secret> =
        kube::Api::namespaced(client.clone(), &app.namespace().unwrap_or_default());
    let found = secrets
        .get_opt(&name)
        .await
        .map_err(|source| LoadError::Kube {
            secret: name.clone(),
            source,
        })?;
    match (found, current) {
        (Some(secret), Some(r)) => Ok(of_release(r, Some(&secret))?),
        (Some(secret), None) => Ok(vars(&secret)?),
        (None, None) => Ok(BTreeMap::new()),
        (None, Some(r)) => Err(LoadError::SnapshotMissing {
            release: r.name_any(),
            secret: name,
        }),
    }
}

/// Creates `release`'s snapshot of `vars` (the Release as created, so it can own it), if
/// it names one. The caller deletes the Release when this fails: a Release whose snapshot
/// does not exist cannot start.
pub async fn save(
    client: &kube::Client,
    release: &Release,
    vars: &BTreeMap<String, String>,
    params: &kube::api::PostParams,
) -> Result<(), kube::Error> {
    if release.spec.config_secret.is_none() {
        return Ok(());
    }
    let secrets: kube::Api<Secret> =
        kube::Api::namespaced(client.clone(), &release.namespace().unwrap_or_default());
    secrets.create(params, &snapshot(release, vars)).await?;
    Ok(())
}

/// How a process of `release` gets its config vars: all keys of its snapshot Secret as
/// environment variables (`envFrom`), so no value is written into a Deployment or Pod.
/// Not optional: a missing snapshot keeps the pod from starting with a reason the kubelet
/// states (`CreateContainerConfigError`), rather than running with no config. `None` for a
/// Release made before snapshots (its values are in `spec.env`).
pub fn env_from(release: &Release) -> Option<Vec<EnvFromSource>> {
    release.spec.config_secret.as_ref().map(|name| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Artifact, ReleaseSpec};

    #[test]
    fn only_config_secrets_are_read_as_config() {
        let r = release(&[], Some("shop-tls"));
        let mut tls = snapshot(
            &r,
            &BTreeMap::from([("tls.key".to_owned(), "KEY".to_owned())]),
        );
        tls.type_ = Some("kubernetes.io/tls".into());
        assert!(matches!(vars(&tls), Err(Error::NotConfig { .. })));
        tls.type_ = None;
        assert!(
            matches!(vars(&tls), Err(Error::NotConfig { .. })),
            "Opaque neither"
        );
        tls.type_ = Some(SECRET_TYPE.into());
        assert_eq!(vars(&tls).unwrap()["tls.key"], "KEY");
    }

    fn release(env: &[(&str, &str)], config_secret: Option<&str>) -> Release {
        let mut r = Release::new(
            "shop-v4",
            ReleaseSpec {
                app: "shop".into(),
                version: 4,
                artifact: Artifact {
                    image: Some("img".into()),
                    slug: None,
                },
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                config_secret: config_secret.map(Into::into),
                processes: BTreeMap::new(),
                meta: BTreeMap::new(),
            },
        );
        r.metadata.namespace = Some("team".into());
        r.metadata.uid = Some("uid-4".into());
        r
    }

    #[test]
    fn processes_get_the_snapshot_by_env_from_and_must_have_it() {
        let from = env_from(&release(&[], Some("shop-v4-env"))).unwrap();
        let secret = from[0].secret_ref.as_ref().unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.optional),
            ("shop-v4-env", Some(false))
        );
        // A Release made before snapshots has nothing to name.
        assert!(env_from(&release(&[("A", "1")], None)).is_none());
    }

    #[test]
    fn a_snapshot_is_immutable_owned_by_its_release_and_round_trips() {
        let r = release(&[], None);
        let config = BTreeMap::from([
            ("DATABASE_URL".to_owned(), "postgres://u:p@db/x".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]);
        let s = snapshot(&r, &config);
        assert_eq!(s.metadata.name.as_deref(), Some("shop-v4-env"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(s.immutable, Some(true));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Release", "uid-4")
        );
        assert_eq!(vars(&s).unwrap(), config);
    }

    #[test]
    fn a_release_without_a_snapshot_has_its_legacy_env() {
        let r = release(&[("A", "1")], None);
        assert_eq!(of_release(&r, None).unwrap()["A"], "1");
        let s = snapshot(&r, &BTreeMap::from([("B".to_owned(), "2".to_owned())]));
        assert_eq!(
            of_release(&r, Some(&s)).unwrap().keys().collect::<Vec<_>>(),
            ["B"]
        );
    }

    #[test]
    fn config_comes_from_the_current_snapshot_or_before_any_release_the_initial_secret() {
        assert_eq!(source("shop", None).as_deref(), Some("shop-initial-env"));
        let r = release(&[], Some("shop-v4-env"));
        assert_eq!(source("shop", Some(&r)).as_deref(), Some("shop-v4-env"));
        assert_eq!(source("shop", Some(&release(&[("A", "1")], None))), None);
    }

    #[test]
    fn a_value_that_is_not_text_is_refused_with_its_key() {
        let mut s = Secret::default();
        s.metadata.name = Some("x".into());
        s.type_ = Some(SECRET_TYPE.into());
        s.data = Some(BTreeMap::from([(
            "BIN".to_owned(),
            ByteString(vec![0xff, 0xfe]),
        )]));
        assert_eq!(
            vars(&s),
            Err(Error::NotText {
                secret: "x".into(),
                key: "BIN".into()
            })
        );
    }
}
