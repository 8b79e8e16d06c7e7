//! What every command works with: the Kubernetes client, the namespace, the app, the
//! output format and the terminal.

use std::collections::BTreeMap;
use std::path::PathBuf;

use flynn_crds::{App, Release, names};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};

use crate::app_ref::{self, RemoteApp};
use crate::cli::Global;
use crate::errors::{Error, Result};
use crate::output::{Format, Ui};
use crate::platform::Platform;

/// The resolved global flags and a connected client.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    /// Namespace: `-n`, else the git remote's (when it names the app), else the context's.
    pub namespace: String,
    app_flag: Option<String>,
    remote: Option<RemoteApp>,
    pub output: Format,
    pub ui: Ui,
    pub cwd: PathBuf,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespace)
            .field("app_flag", &self.app_flag)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// Loads the kubeconfig (`--context`), builds the client and resolves the namespace.
    /// Does not talk to the API server yet.
    pub async fn new(global: &Global, ui: Ui) -> Result<Self> {
        let config = kube_config(global.context.as_deref()).await?;
        let cwd = std::env::current_dir().map_err(Error::io("reading the current directory"))?;
        // The remote names the app *and* its namespace; with -a it only gives the namespace
        // when -a names the same app.
        let remote =
            app_ref::from_git(&cwd).filter(|r| global.app.as_ref().is_none_or(|app| *app == r.app));
        let namespace = global
            .namespace
            .clone()
            .or_else(|| remote.as_ref().map(|r| r.namespace.clone()))
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(Ctx {
            client,
            namespace,
            app_flag: global.app.clone(),
            remote,
            output: global.output,
            ui,
            cwd,
        })
    }

    /// The app's name: `-a`, else the `flynn` git remote's, else [`Error::NoApp`].
    pub fn app_name(&self) -> Result<String> {
        if let Some(app) = &self.app_flag {
            return Ok(app.clone());
        }
        self.remote
            .as_ref()
            .map(|r| r.app.clone())
            .ok_or(Error::NoApp)
    }

    /// An `Api` for a namespaced kind in the app's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The app, or [`Error::AppNotFound`].
    pub async fn app(&self) -> Result<App> {
        let name = self.app_name()?;
        self.api::<App>()
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("getting app {name}")))?
            .ok_or_else(|| Error::AppNotFound {
                app: name,
                namespace: self.namespace.clone(),
            })
    }

    /// The release `spec.release` names, or [`Error::NoRelease`] if there is none yet.
    pub async fn current_release(&self, app: &App) -> Result<Release> {
        let app_name = app.metadata.name.clone().unwrap_or_default();
        let Some(name) = app.spec.release.clone() else {
            return Err(Error::NoRelease { app: app_name });
        };
        let version = names::parse_release_name(&name).map_or(0, |(_, v)| v);
        self.api::<Release>()
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("getting release {name}")))?
            .ok_or(Error::ReleaseNotFound {
                app: app_name,
                version,
            })
    }

    /// The App's config vars now, `current` its current Release (see `flynn_crds::config`).
    pub async fn config(
        &self,
        app: &App,
        current: Option<&Release>,
    ) -> Result<BTreeMap<String, String>> {
        use flynn_crds::config::{LoadError, load};
        load(&self.client, app, current).await.map_err(|e| match e {
            LoadError::Kube { secret, source } => {
                Error::kube(format!("reading config Secret {secret}"))(source)
            }
            other => Error::Config(other),
        })
    }

    /// The current Release of `app`, or `None` before its first.
    pub async fn current_release_opt(&self, app: &App) -> Result<Option<Release>> {
        match self.current_release(app).await {
            Ok(r) => Ok(Some(r)),
            Err(Error::NoRelease { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The platform ConfigMap (see [`Platform`]).
    pub async fn platform(&self) -> Platform {
        Platform::load(&self.client).await
    }
}

/// The kubeconfig's client configuration (`KUBECONFIG` or ~/.kube/config, `--context`),
/// else the in-cluster one when running in a pod.
async fn kube_config(context: Option<&str>) -> Result<Config> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    match Kubeconfig::read() {
        Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string())),
        Err(read_error) if context.is_none() => {
            Config::incluster().map_err(|_| Error::Kubeconfig(read_error.to_string()))
        }
        Err(read_error) => Err(Error::Kubeconfig(read_error.to_string())),
    }
}
