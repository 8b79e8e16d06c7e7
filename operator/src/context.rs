//! What every reconcile gets: the client, settings, metrics, shared caches and the
//! event recorder.

use std::sync::Arc;

use flynn_crds::Release;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use crate::FIELD_MANAGER;
use crate::cache::{Cache, Caches, Projection};
use crate::error::{KubeResultExt, Result};
use crate::per_object::PerObject;
use crate::{Settings, metrics::Metrics};

/// Shared state of the operator's controllers.
pub struct Context {
    pub client: Client,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// What the reconcilers read (see [`crate::cache`]).
    pub caches: Caches,
    /// Namespace metadata, when `settings.exclude_namespace_label` is set.
    pub excluded_namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    /// Failures and held statuses per object, pruned by the watches on deletion.
    pub per_object: Arc<PerObject>,
    recorder: Recorder,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        caches: Caches,
        per_object: Arc<PerObject>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "flynn-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Self {
            client,
            settings: Arc::new(settings),
            metrics,
            caches,
            excluded_namespaces: None,
            per_object,
            recorder,
        }
    }

    /// Records an Event on `obj` for `kubectl describe`. Failing to record is logged, not
    /// fatal: an Event is a courtesy, the status conditions are the record.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.event_on(&obj.object_ref(&()), warning, reason, note)
            .await;
    }

    /// Records an Event on the object `reference` names (see [`Context::event`]).
    pub async fn event_on(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }

    /// A Release from the cache, or from the API when the watch has not delivered it yet
    /// (an App is pointed at a Release right after it is created).
    pub async fn release(&self, ns: &str, name: &str) -> Result<Option<Arc<Release>>> {
        if let Some(r) = self.caches.releases.get(ns, name) {
            return Ok(Some(Arc::new(r.to_release())));
        }
        let fetched = Api::<Release>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .context(|| format!("reading release {name}"))?;
        Ok(fetched.map(|r| {
            self.caches.releases.remember(r.clone());
            Arc::new(r)
        }))
    }

    /// Server-side applies the operator's `status` fields to `obj` and keeps the answer in
    /// `cache`, so the next reconcile sees them before the watch delivers them.
    pub async fn apply_status<P: Projection>(
        &self,
        cache: &Cache<P>,
        obj: &P::Kind,
        status: serde_json::Value,
    ) -> Result<()> {
        type K<P> = <P as Projection>::Kind;
        let name = obj.meta().name.clone().unwrap_or_default();
        let namespace = obj.meta().namespace.clone().unwrap_or_default();
        let api: Api<K<P>> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": <K<P> as Resource>::api_version(&()),
            "kind": <K<P> as Resource>::kind(&()),
            "status": status,
        });
        let written = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .context(|| format!("writing status of {} {name}", <K<P> as Resource>::kind(&())))?;
        cache.remember(written);
        Ok(())
    }

    /// Whether objects in `namespace` are this operator's to reconcile.
    pub fn scope(&self, namespace: Option<&str>) -> Scope {
        if let Some(scope) = &self.settings.namespace
            && namespace != Some(scope.as_str())
        {
            return Scope::Out;
        }
        let (Some(store), Some(label), Some(ns)) = (
            &self.excluded_namespaces,
            &self.settings.exclude_namespace_label,
            namespace,
        ) else {
            return Scope::In;
        };
        match store.get(&kube::runtime::reflector::ObjectRef::new(ns)) {
            Some(meta) if meta.labels().contains_key(label) => Scope::Out,
            Some(_) => Scope::In,
            // Objects can arrive before their namespace does (a test creates both at
            // once): don't act on them until the label can be checked.
            None => Scope::Unknown,
        }
    }

    /// The early return of a reconcile for an object outside this operator's scope.
    pub fn out_of_scope(
        &self,
        namespace: Option<&str>,
    ) -> Option<kube::runtime::controller::Action> {
        match self.scope(namespace) {
            Scope::In => None,
            Scope::Out => Some(kube::runtime::controller::Action::await_change()),
            Scope::Unknown => Some(kube::runtime::controller::Action::requeue(
                std::time::Duration::from_millis(500),
            )),
        }
    }
}

/// Whether an object is this operator's to reconcile (see [`Context::scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    In,
    Out,
    /// Its namespace is not in the namespace cache yet.
    Unknown,
}

/// Whether a child's controller has reported on its latest spec (its status's
/// `observedGeneration` against its `metadata.generation`).
pub fn observed_current(observed: Option<i64>, generation: Option<i64>) -> bool {
    observed.is_some() && observed >= generation
}
