//! Giving the App its Resource's URL: the next Release of the App with the config var set
//! (or, removing the Resource, unset), made the way `flynn env set` makes one
//! (`flynn_crds::next_release` and `flynn_crds::config`), so the URL lives only in the
//! Release's config snapshot, a Secret, never in the App, the Release or a Deployment.
//!
//! Before the App's first Release the var goes into the App's initial config Secret
//! (`<app>-initial-env`), which the first push carries into its Release.
//!
//! It converges rather than acting once: every reconcile compares the current Release's
//! config with what it should be, so a `git push` that read the config before the var was
//! added, or a rollback to a Release from before, gets a new Release with it again.

use std::collections::BTreeMap;

use flynn_crds::{App, Release, ReleaseSpec, config, labels, names, next_release};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Error;
use crate::FIELD_MANAGER;

/// The meta key that says why a Release was made (as the CLI's).
pub const CAUSE: &str = "flynn.io/cause";

/// What the App's config should hold for the Resource's var.
#[derive(Clone, Copy, Debug)]
pub enum Want<'a> {
    /// `env` = this URL.
    Set(&'a str),
    /// `env` gone, if it still holds this URL (another Resource's value is left alone).
    UnsetIf(&'a str),
}

/// What converging did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The config already was so; the App's current Release, if any.
    Unchanged(Option<String>),
    /// A new Release was made and the App pointed at it.
    Released(String),
    /// The App has no Release yet: its initial config Secret was written.
    Initial,
}

/// The config `vars` changed as `want` says for `env`, or `None` when nothing changes.
pub fn desired(
    vars: &BTreeMap<String, String>,
    env: &str,
    want: Want<'_>,
) -> Option<BTreeMap<String, String>> {
    let mut next = vars.clone();
    match want {
        Want::Set(url) if vars.get(env).map(String::as_str) != Some(url) => {
            next.insert(env.to_owned(), url.to_owned());
        }
        Want::UnsetIf(url) if vars.get(env).map(String::as_str) == Some(url) => {
            next.remove(env);
        }
        _ => return None,
    }
    Some(next)
}

/// The next Release of `app` after `current`: the same artifact and processes, config
/// `vars` (in its snapshot), `cause` in its meta.
pub fn next(
    app: &App,
    current: &Release,
    vars: &BTreeMap<String, String>,
    cause: &str,
    version: i64,
) -> Release {
    let name = names::release_name(&app.name_any(), version);
    let mut meta = current.spec.meta.clone();
    meta.insert(CAUSE.to_owned(), cause.to_owned());
    let mut r = Release::new(
        &name,
        ReleaseSpec {
            app: app.name_any(),
            version,
            artifact: current.spec.artifact.clone(),
            config_secret: config::snapshot_ref(&name, vars),
            env: BTreeMap::new(),
            processes: current.spec.processes.clone(),
            meta,
        },
    );
    r.metadata.namespace = app.namespace();
    // As the receiver's: owned (not controlled) by the App, so its history goes with it.
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

/// Makes `app`'s config hold what `want` says for `env`.
#[tracing::instrument(skip(client, app, want), fields(app = %app.name_any()))]
pub async fn converge(
    client: &kube::Client,
    app: &App,
    env: &str,
    want: Want<'_>,
    cause: &str,
) -> Result<Outcome, Error> {
    let ns = app.namespace().unwrap_or_default();
    let app_name = app.name_any();
    let current = match &app.spec.release {
        None => None,
        Some(name) => Some(
            Api::<Release>::namespaced(client.clone(), &ns)
                .get_opt(name)
                .await
                .map_err(|source| Error::Kube {
                    action: format!("reading release {name} of app {app_name}"),
                    source,
                })?
                .ok_or_else(|| Error::ReleaseMissing {
                    app: app_name.clone(),
                    release: name.clone(),
                })?,
        ),
    };
    let vars = config::load(client, app, current.as_ref()).await?;
    let Some(next_vars) = desired(&vars, env, want) else {
        return Ok(Outcome::Unchanged(current.map(|r| r.name_any())));
    };
    let Some(current) = current else {
        save_initial(client, app, env, want).await?;
        return Ok(Outcome::Initial);
    };
    let release = match next_release::create(
        client,
        app,
        &next_vars,
        &PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        |version| next(app, &current, &next_vars, cause, version),
    )
    .await
    {
        Ok(r) => r,
        // A Release without its snapshot cannot start: it goes again (as the CLI does).
        Err(next_release::Error::Snapshot { release, source }) => {
            let _ = Api::<Release>::namespaced(client.clone(), &ns)
                .delete(&release, &Default::default())
                .await;
            return Err(Error::Kube {
                action: format!("creating the config Secret of release {release}"),
                source,
            });
        }
        Err(e) => return Err(Error::Release(e)),
    };
    let name = release.name_any();
    Api::<App>::namespaced(client.clone(), &ns)
        .patch(
            &app_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"release": name}})),
        )
        .await
        .map_err(|source| Error::Kube {
            action: format!("pointing app {app_name} at {name}"),
            source,
        })?;
    tracing::info!(release = %name, env, "released");
    Ok(Outcome::Released(name))
}

/// Sets or unsets `env` in the App's initial config Secret, leaving its other keys (the
/// user's `flynn env set`) as they are; a read-modify-replace, so a concurrent change is a
/// conflict retried, not lost.
async fn save_initial(
    client: &kube::Client,
    app: &App,
    env: &str,
    want: Want<'_>,
) -> Result<(), Error> {
    let ns = app.namespace().unwrap_or_default();
    let name = config::initial_name(&app.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let kube_err = |action: &str| {
        let action = format!("{action} config Secret {name}");
        move |source| Error::Kube { action, source }
    };
    match api.get_opt(&name).await.map_err(kube_err("reading"))? {
        None => {
            let Want::Set(url) = want else {
                return Ok(());
            };
            let vars = BTreeMap::from([(env.to_owned(), url.to_owned())]);
            api.create(&PostParams::default(), &config::initial(app, &vars))
                .await
                .map_err(kube_err("creating"))?;
        }
        Some(mut secret) => {
            let vars = config::vars(&secret).map_err(config::LoadError::from)?;
            let Some(next) = desired(&vars, env, want) else {
                return Ok(());
            };
            secret.data = config::initial(app, &next).data;
            secret.string_data = None;
            api.replace(&name, &PostParams::default(), &secret)
                .await
                .map_err(kube_err("updating"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_var_is_set_when_missing_or_different_and_removed_only_when_it_is_ours() {
        let vars = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let set = desired(&vars, "DATABASE_URL", Want::Set("postgres://x")).unwrap();
        assert_eq!(set["DATABASE_URL"], "postgres://x");
        assert_eq!(set["A"], "1");
        assert!(desired(&set, "DATABASE_URL", Want::Set("postgres://x")).is_none());
        let other = desired(&set, "DATABASE_URL", Want::Set("postgres://y")).unwrap();
        assert_eq!(other["DATABASE_URL"], "postgres://y");
        // Removing: only our own value goes (an older Resource's stays).
        assert!(desired(&other, "DATABASE_URL", Want::UnsetIf("postgres://x")).is_none());
        let gone = desired(&set, "DATABASE_URL", Want::UnsetIf("postgres://x")).unwrap();
        assert_eq!(gone, vars);
    }
}
