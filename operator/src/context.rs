//! What every reconcile gets: the client, settings, metrics, shared caches and the
//! event recorder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flynn_crds::Release;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};

use crate::FIELD_MANAGER;
use crate::cache::{Cache, Cached, Caches, Stored};
use crate::error::{KubeResultExt, Result};
use crate::{Settings, metrics::Metrics};

/// The longest an interim status is held back (see [`Context::hold_interim`]).
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// Shared state of the operator's controllers.
pub struct Context {
    pub client: Client,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// What the reconcilers read (see [`crate::cache`]).
    pub caches: Caches,
    /// Namespace metadata, when `settings.exclude_namespace_label` is set.
    pub excluded_namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    /// When each object's interim status was first held back (see [`Context::hold_interim`]).
    held: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Consecutive failures per object, for the error backoff.
    pub failures: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
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
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, caches: Caches) -> Self {
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
            held: Default::default(),
            failures: Arc::default(),
            recorder,
        }
    }

    /// Records an Event on `obj` for `kubectl describe`. Failing to record is logged, not
    /// fatal: an Event is a courtesy, the status conditions are the record.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let reference: ObjectReference = obj.object_ref(&());
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
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }

    /// A Release from the cache, or from the API when the watch has not delivered it yet
    /// (an App is pointed at a Release right after it is created).
    pub async fn release(&self, ns: &str, name: &str) -> Result<Option<Arc<Release>>> {
        if let Some(r) = self.caches.releases.get(&ObjectRef::new(name).within(ns))? {
            return Ok(Some(r));
        }
        let fetched = Api::<Release>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .context(|| format!("reading release {name}"))?;
        Ok(fetched.map(|r| self.caches.releases.remember(r)))
    }

    /// Whether to hold back an interim status ("still rolling out") that a change
    /// already on its way will supersede: a child just written, or one whose own
    /// controller has not reported on its latest spec yet. Its report triggers the next
    /// reconcile, which writes a status with something new in it; each skipped write is
    /// one the API server does not have to make, and a burst of deploys is mostly such
    /// writes. Held for at most [`MAX_HOLD`], so a child that never reports (its
    /// controller is down) cannot keep the status from moving. Returns how long to wait.
    pub fn hold_interim(&self, key: String, superseded_soon: bool) -> Option<Duration> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !superseded_soon {
            held.remove(&key);
            return None;
        }
        let since = *held.entry(key.clone()).or_insert_with(Instant::now);
        match MAX_HOLD.checked_sub(since.elapsed()) {
            Some(left) if !left.is_zero() => Some(left),
            _ => {
                held.remove(&key);
                None
            }
        }
    }

    /// Server-side applies the operator's `status` fields to `obj` and keeps the answer in
    /// `cache`, so the next reconcile sees them before the watch delivers them.
    pub async fn apply_status<K: Cached, S: Stored<K>>(
        &self,
        cache: &Cache<K, S>,
        obj: &K,
        status: serde_json::Value,
    ) -> Result<()> {
        let name = obj.name_any();
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        let written = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .context(|| format!("writing status of {} {name}", K::kind(&())))?;
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
