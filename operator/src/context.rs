//! What every reconcile gets: the client, settings, metrics, shared caches and the
//! event recorder.

use std::sync::Arc;

use flynn_crds::Route;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use crate::{Settings, metrics::Metrics};

/// Shared state of the operator's controllers.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// Every Route in the cluster (conflicts are cluster-wide): the Route controller's
    /// own cache, filled by the stream that triggers it.
    pub routes: Store<Route>,
    /// Namespace metadata, when `settings.exclude_namespace_label` is set.
    pub excluded_namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
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
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        routes: Store<Route>,
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
            routes,
            excluded_namespaces: None,
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
