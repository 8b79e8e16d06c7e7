//! Following the operator's rollout of a new Release, from the App's status.
//!
//! The operator owns the rollout (its timeout, `Degraded`, auto-rollback); the receiver
//! only watches the App and reports, judging it as the CLI does (`flynn_crds::rollout::Waiter`:
//! the CLI polls, this watches).

use std::{collections::BTreeMap, time::Duration};

use flynn_crds::{
    App, labels,
    rollout::{Verdict, Waiter},
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
    let mut waiter = Waiter::new(release, app.metadata.generation.unwrap_or(0));
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
            // Also without news of the App: the waiter's grace for an App pointing
            // elsewhere runs out on a look.
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => {
                let state = if shown.is_empty() { "no progress reported".to_owned() } else { shown };
                return Err(Error::RolloutTimedOut { release: release.to_owned(), waited, state });
            }
        }
        let Some(current) = &last else { continue };
        match waiter.look(current, std::time::Instant::now()) {
            Verdict::Deployed(urls) => return Ok(urls),
            Verdict::Failed {
                reason,
                rolled_back_to,
            } => {
                return Err(Error::RolloutFailed {
                    release: release.to_owned(),
                    reason,
                    rolled_back_to,
                });
            }
            Verdict::Superseded(now) => {
                return Err(Error::Superseded {
                    release: release.to_owned(),
                    now,
                });
            }
            Verdict::PointsElsewhere(_) => {}
            Verdict::Progressing => {
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

    #[test]
    fn progress_counts_ready_pods_of_the_new_release() {
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
}
