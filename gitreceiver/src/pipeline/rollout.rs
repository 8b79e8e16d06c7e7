//! Following the operator's rollout of a new Release, from the App's status.
//!
//! The operator owns the rollout (its timeout, `Degraded`, auto-rollback); the receiver
//! only watches the App and reports. Conditions carry `observedGeneration`, and only those
//! written for the generation of the receiver's own patch or later count, so a `Degraded`
//! left over from an earlier push is not mistaken for this one's.

use std::{collections::BTreeMap, time::Duration};

use flynn_crds::{
    App,
    conditions::{self, reasons, types},
    labels,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use tokio::time::Instant;

use super::{Error, Progress};

/// How long the App may point elsewhere without the status saying it was rolled back
/// before that counts as another writer's change (the operator patches `spec.release`
/// back a moment before it writes the status that says why).
const ROLLBACK_STATUS_GRACE: Duration = Duration::from_secs(15);

/// Where a rollout stands, judged from one App (pure).
#[derive(Debug, PartialEq)]
pub enum Judgement {
    /// Rolled out and every desired process is ready: the App's URLs.
    Deployed(Vec<String>),
    /// The operator gave up on the release.
    Failed {
        reason: String,
        rolled_back_to: Option<String>,
    },
    /// The App points at another release and its status does not say it was rolled back.
    PointsElsewhere(String),
    /// Still going.
    Progressing,
}

/// Judges `app` for the rollout of `release`, counting only conditions observed at
/// `generation` (that of the receiver's patch) or later.
pub fn judge(app: &App, release: &str, generation: i64) -> Judgement {
    let status = app.status.clone().unwrap_or_default();
    let fresh = |t: &str| {
        conditions::find(&status.conditions, t)
            .filter(|c| c.observed_generation.unwrap_or(0) >= generation)
            .filter(|c| c.status == conditions::status::TRUE)
    };
    let degraded = fresh(types::DEGRADED);
    let target = app.spec.release.as_deref().unwrap_or_default();
    if target != release {
        return match degraded {
            Some(c) if c.reason == reasons::ROLLED_BACK && c.message.contains(release) => {
                Judgement::Failed {
                    reason: c
                        .message
                        .split_once("; rolled back to")
                        .map_or(c.message.as_str(), |(why, _)| why)
                        .to_owned(),
                    rolled_back_to: Some(target.to_owned()),
                }
            }
            _ => Judgement::PointsElsewhere(target.to_owned()),
        };
    }
    if status.release.as_deref() == Some(release) && fresh(types::READY).is_some() {
        return Judgement::Deployed(status.urls.clone());
    }
    if let Some(c) = degraded
        && [
            reasons::DEPLOY_TIMED_OUT,
            reasons::UNKNOWN_PROCESS_TYPE,
            reasons::NO_PROCESSES,
            reasons::RELEASE_NOT_FOUND,
        ]
        .contains(&c.reason.as_str())
    {
        return Judgement::Failed {
            reason: c.message.clone(),
            rolled_back_to: None,
        };
    }
    Judgement::Progressing
}

/// The progress line of a rollout (pure): per process type of the App, how many pods of
/// the new release are ready out of the desired count. Counted from the release's own
/// pods, because a Deployment's ready count also includes the old release's pods, which
/// keep serving until the new ones are ready.
pub fn progress_line(
    desired: &BTreeMap<String, i32>,
    ready: &BTreeMap<String, i32>,
    release: &str,
) -> String {
    let waiting: Vec<String> = desired
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| format!("{p}: {}/{n} ready", ready.get(p).copied().unwrap_or(0)))
        .collect();
    if waiting.is_empty() {
        format!("Rolling out {release}")
    } else {
        format!("Waiting for {}", waiting.join(", "))
    }
}

/// Ready pods of `release` per process type.
async fn ready_pods(pods: &Api<Pod>, app: &str, release: &str) -> Option<BTreeMap<String, i32>> {
    let selector = format!("{}={app},{}={release}", labels::APP, labels::RELEASE);
    let list = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "listing the new release's pods");
            return None;
        }
    };
    let mut ready = BTreeMap::new();
    for pod in list.items {
        let is_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if let Some(process) = pod.labels().get(labels::PROCESS) {
            *ready.entry(process.clone()).or_insert(0) += i32::from(is_ready);
        }
    }
    Some(ready)
}

/// Watches the App (as returned by the patch that pointed it at `release`) until the
/// operator reports the rollout's end, or `app.spec.deployTimeoutSeconds + margin` passes.
/// The App's URLs.
pub async fn wait(
    client: &kube::Client,
    app: &App,
    release: &str,
    margin: Duration,
    out: &Progress<'_>,
) -> Result<Vec<String>, Error> {
    let ns = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let generation = app.metadata.generation.unwrap_or(0);
    let waited = Duration::from_secs(app.spec.deploy_timeout_seconds.max(1) as u64) + margin;
    let deadline = Instant::now() + waited;
    let apps: Api<App> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut stream = watcher(
        apps,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<App> = None;
    let mut shown = String::new();
    let mut elsewhere_since: Option<Instant> = None;
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(a)) => last = Some(a),
                Some(Err(e)) => tracing::debug!(error = %e, "watching the app; retrying"),
                None => return Err(Error::RolloutTimedOut {
                    release: release.to_owned(),
                    waited,
                    state: "the watch of the app ended".into(),
                }),
            },
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => {
                let state = if shown.is_empty() { "no progress reported".to_owned() } else { shown };
                return Err(Error::RolloutTimedOut { release: release.to_owned(), waited, state });
            }
        }
        let Some(current) = &last else { continue };
        match judge(current, release, generation) {
            Judgement::Deployed(urls) => return Ok(urls),
            Judgement::Failed {
                reason,
                rolled_back_to,
            } => {
                return Err(Error::RolloutFailed {
                    release: release.to_owned(),
                    reason,
                    rolled_back_to,
                });
            }
            Judgement::PointsElsewhere(now) => {
                let since = *elsewhere_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ROLLBACK_STATUS_GRACE {
                    return Err(Error::Superseded {
                        release: release.to_owned(),
                        now,
                    });
                }
            }
            Judgement::Progressing => {
                elsewhere_since = None;
                let Some(ready) = ready_pods(&pods, &name, release).await else {
                    continue;
                };
                let line = progress_line(&current.spec.processes, &ready, release);
                if line != shown {
                    out.line(format!("-----> {line}")).await;
                    shown = line;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(spec_release: &str, status: serde_json::Value) -> App {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "App",
            "metadata": {"name": "shop", "namespace": "team", "generation": 5},
            "spec": {"release": spec_release},
            "status": status,
        }))
        .unwrap()
    }

    fn cond(t: &str, s: &str, reason: &str, msg: &str, gen_: i64) -> serde_json::Value {
        json!({"type": t, "status": s, "reason": reason, "message": msg, "observedGeneration": gen_,
               "lastTransitionTime": "2026-11-26T00:00:00Z"})
    }

    #[test]
    fn ready_on_the_new_release_is_deployed() {
        let a = app(
            "shop-v2",
            json!({"release": "shop-v2", "urls": ["http://shop.example"],
                   "conditions": [cond("Ready", "True", "Available", "", 5)]}),
        );
        assert_eq!(
            judge(&a, "shop-v2", 5),
            Judgement::Deployed(vec!["http://shop.example".into()])
        );
    }

    #[test]
    fn progress_counts_ready_pods_of_the_new_release() {
        let a = app(
            "shop-v2",
            json!({"release": "shop-v1", "rollout": {"release": "shop-v2", "startedAt": "2026-11-26T00:00:00Z"},
                   "processes": {"web": {"desired": 2, "ready": 2, "available": 2}},
                   "conditions": [cond("Ready", "True", "Available", "", 4)]}),
        );
        assert_eq!(judge(&a, "shop-v2", 5), Judgement::Progressing);
        let desired =
            BTreeMap::from([("web".into(), 2), ("worker".into(), 1), ("clock".into(), 0)]);
        let ready = BTreeMap::from([("web".into(), 1)]);
        assert_eq!(
            progress_line(&desired, &ready, "shop-v2"),
            "Waiting for web: 1/2 ready, worker: 0/1 ready"
        );
        assert_eq!(
            progress_line(&BTreeMap::new(), &ready, "shop-v2"),
            "Rolling out shop-v2"
        );
    }

    #[test]
    fn a_rollback_is_a_failure_naming_what_serves() {
        let a = app(
            "shop-v1",
            json!({"release": "shop-v1", "conditions": [cond("Degraded", "True", "RolledBack",
                "release shop-v2 did not become available within 20s: pod x: process web is crash-looping; rolled back to shop-v1", 5)]}),
        );
        assert_eq!(
            judge(&a, "shop-v2", 5),
            Judgement::Failed {
                reason: "release shop-v2 did not become available within 20s: pod x: process web is crash-looping".into(),
                rolled_back_to: Some("shop-v1".into()),
            }
        );
    }

    #[test]
    fn stale_conditions_do_not_count() {
        // A Degraded of an earlier push (generation 3) while this rollout (5) starts.
        let a = app(
            "shop-v3",
            json!({"release": "shop-v1", "conditions": [cond("Degraded", "True", "DeployTimedOut", "old", 3)]}),
        );
        assert_eq!(judge(&a, "shop-v3", 5), Judgement::Progressing);
        let a = app("shop-v9", json!({}));
        assert_eq!(
            judge(&a, "shop-v3", 5),
            Judgement::PointsElsewhere("shop-v9".into())
        );
    }

    #[test]
    fn a_timeout_without_rollback_and_bad_process_types_fail() {
        let a = app(
            "shop-v1",
            json!({"conditions": [cond("Degraded", "True", "DeployTimedOut", "release shop-v1 did not become available within 20s: x (no earlier release to roll back to)", 5)]}),
        );
        assert!(matches!(
            judge(&a, "shop-v1", 5),
            Judgement::Failed {
                rolled_back_to: None,
                ..
            }
        ));
        let a = app(
            "shop-v2",
            json!({"conditions": [cond("Degraded", "True", "UnknownProcessType", "process type \"worker\" is not in release shop-v2", 6)]}),
        );
        assert!(matches!(judge(&a, "shop-v2", 5), Judgement::Failed { .. }));
    }
}
