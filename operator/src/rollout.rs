//! Reading rollouts: whether a Deployment has finished rolling out (kubectl's
//! `rollout status` logic), and why pods are not becoming ready (for `Degraded`).

use flynn_crds::pod_security;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

/// Where a Deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentRollout {
    /// Every replica runs the current template and is available.
    Complete,
    /// Still going; the message says what it waits for.
    Progressing(String),
    /// The Deployment controller gave up (`ProgressDeadlineExceeded`).
    Failed(String),
}

/// What a rollout judgement reads of a Deployment (all the operator's cache keeps of
/// its spec and status besides the replica counts it reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentState {
    pub name: Box<str>,
    /// `spec.replicas` (1 when unset, as the API server defaults it).
    pub desired: i32,
    pub generation: i64,
    /// `None` until the Deployment controller has written a status.
    pub status: Option<ReplicaStatus>,
}

/// The Deployment controller's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub observed_generation: i64,
    /// The `Progressing` condition's message when its reason is
    /// `ProgressDeadlineExceeded`.
    pub deadline_exceeded: Option<Box<str>>,
    pub updated: i32,
    pub total: i32,
    pub available: i32,
}

impl DeploymentState {
    pub fn of(d: &Deployment) -> Self {
        Self {
            name: d.metadata.name.as_deref().unwrap_or("deployment").into(),
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            generation: d.metadata.generation.unwrap_or(0),
            status: d.status.as_ref().map(|status| ReplicaStatus {
                observed_generation: status.observed_generation.unwrap_or(0),
                deadline_exceeded: status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "Progressing")
                    .filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                    .map(|c| {
                        c.message
                            .as_deref()
                            .unwrap_or("progress deadline exceeded")
                            .into()
                    }),
                updated: status.updated_replicas.unwrap_or(0),
                total: status.replicas.unwrap_or(0),
                available: status.available_replicas.unwrap_or(0),
            }),
        }
    }

    /// kubectl's `DeploymentStatusViewer`, ported: observed generation first, then the
    /// progress deadline, then updated / total / available replica counts.
    pub fn rollout(&self) -> DeploymentRollout {
        let name = &self.name;
        let desired = self.desired;
        let Some(status) = &self.status else {
            return DeploymentRollout::Progressing(format!(
                "{name}: waiting for the Deployment controller"
            ));
        };
        if self.generation > status.observed_generation {
            return DeploymentRollout::Progressing(format!(
                "{name}: waiting for the Deployment controller"
            ));
        }
        if let Some(message) = &status.deadline_exceeded {
            return DeploymentRollout::Failed(format!("{name}: {message}"));
        }
        let (updated, total, available) = (status.updated, status.total, status.available);
        if updated < desired {
            return DeploymentRollout::Progressing(format!(
                "{name}: {updated} of {desired} pods updated"
            ));
        }
        if total > updated {
            return DeploymentRollout::Progressing(format!(
                "{name}: {} old pods pending termination",
                total - updated
            ));
        }
        if available < updated {
            return DeploymentRollout::Progressing(format!(
                "{name}: {available} of {updated} updated pods available"
            ));
        }
        DeploymentRollout::Complete
    }
}

/// Where `d`'s rollout stands (see [`DeploymentState::rollout`]).
pub fn deployment_rollout(d: &Deployment) -> DeploymentRollout {
    DeploymentState::of(d).rollout()
}

/// The most telling reason the given pods (of one release) are not ready, for a user:
/// an image that cannot be pulled or that runs as root (refused under `runAsNonRoot`), a
/// crash loop with the last exit code, a failing readiness check, or a pod that cannot be
/// scheduled. `None` if nothing stands out.
///
/// Read from each container's whole state, not only the kubelet's current one: a process
/// that exited and was started again (by its restart policy, or killed by its liveness
/// check) is running now, but its `lastState` and restart count say it failed.
pub fn diagnose(pods: &[Pod]) -> Option<Diagnosis> {
    let mut findings: Vec<(u8, String)> = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or("pod");
        let Some(status) = &pod.status else { continue };
        for c in status.container_statuses.iter().flatten() {
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            let last_exit = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| (t.exit_code, t.reason.clone().unwrap_or_default()));
            match waiting.and_then(|w| w.reason.as_deref()) {
                Some(
                    r @ ("ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull"
                    | "InvalidImageName"),
                ) => {
                    let msg = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
                    findings.push((
                        0,
                        format!("pod {name}: image cannot be pulled ({r}): {msg}")
                            .trim_end_matches(": ")
                            .to_owned(),
                    ));
                }
                Some("CrashLoopBackOff") => {
                    let exit = last_exit
                        .map(|(code, reason)| {
                            format!(
                                " with exit code {code}{}",
                                if reason.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({reason})")
                                }
                            )
                        })
                        .unwrap_or_default();
                    findings.push((
                        1,
                        format!(
                            "pod {name}: process {} is crash-looping: it exited{exit} {} times",
                            c.name, c.restart_count
                        ),
                    ));
                }
                Some(
                    r @ ("CreateContainerConfigError"
                    | "CreateContainerError"
                    | "RunContainerError"),
                ) => {
                    let msg = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
                    match pod_security::explain_non_root_refusal(&msg) {
                        // The image's user is root (or a name): it will never start, as an
                        // image that cannot be pulled never will.
                        Some(why) => findings.push((
                            0,
                            format!("pod {name}: process {} cannot start: {why}", c.name),
                        )),
                        None => findings.push((
                            1,
                            format!("pod {name}: container cannot start ({r}): {msg}"),
                        )),
                    }
                }
                Some(r @ ("ContainerCreating" | "PodInitializing")) => {
                    // Not a fault yet, but when a deploy times out on it the user should
                    // hear that the process never got to run (slow node, huge image).
                    findings.push((
                        3,
                        format!("pod {name}: process {} has not started yet ({r})", c.name),
                    ));
                }
                _ => {
                    let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
                    let terminated = c.state.as_ref().and_then(|s| s.terminated.as_ref());
                    if let Some(t) = terminated {
                        // Between its first exit and the kubelet's CrashLoopBackOff a
                        // crashing process sits here, with restart count 0.
                        findings.push((
                            1,
                            format!(
                                "pod {name}: process {} exited with exit code {}{}",
                                c.name,
                                t.exit_code,
                                t.reason
                                    .as_deref()
                                    .map(|r| format!(" ({r})"))
                                    .unwrap_or_default()
                            ),
                        ));
                    } else if let Some((code, reason)) = last_exit.filter(|_| c.restart_count > 0) {
                        findings.push((
                            1,
                            format!(
                                "pod {name}: process {} exited and was restarted {} times (last exit code {code}{})",
                                c.name,
                                c.restart_count,
                                exit_hint(code, &reason)
                            ),
                        ));
                    } else if running && !c.ready {
                        findings.push((
                            2,
                            format!(
                                "pod {name}: process {} is running but failing its readiness check",
                                c.name
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(c) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        {
            findings.push((
                1,
                format!(
                    "pod {name} cannot be scheduled: {}",
                    c.message.as_deref().unwrap_or("no reason given")
                ),
            ));
        }
    }
    findings.sort();
    findings
        .into_iter()
        .next()
        .map(|(rank, message)| Diagnosis {
            message,
            failing: rank <= FAILING,
        })
}

/// Findings ranked at most this are failures, not slowness: an image that cannot run, a
/// process that exits, a container that cannot be created, a pod that cannot be placed.
const FAILING: u8 = 1;

/// What [`diagnose`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// For a user: which pod, which process, what happened.
    pub message: String,
    /// A failure (the release cannot come up as it is), not slowness (still starting, not
    /// ready yet): said at once during a rollout, without waiting for its timeout.
    pub failing: bool,
}

/// What an exit code says beyond its number.
fn exit_hint(code: i32, reason: &str) -> String {
    match (code, reason) {
        (_, "OOMKilled") => ", killed: out of memory".into(),
        (137, _) => ", killed by SIGKILL: out of memory, or a failing liveness check".into(),
        (143, _) => ", stopped by SIGTERM, e.g. for a failing liveness check".into(),
        (_, "" | "Error" | "Completed") => String::new(),
        (_, r) => format!(", {r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "shop-web", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn rollout_follows_kubectl() {
        let d = deployment(2, json!({"observedGeneration": 1}));
        assert!(matches!(
            deployment_rollout(&d),
            DeploymentRollout::Progressing(_)
        ));
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
        );
        assert_eq!(
            deployment_rollout(&d),
            DeploymentRollout::Progressing("shop-web: 1 of 2 pods updated".into())
        );
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(
            deployment_rollout(&d),
            DeploymentRollout::Progressing("shop-web: 1 old pods pending termination".into())
        );
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
        );
        assert_eq!(
            deployment_rollout(&d),
            DeploymentRollout::Progressing("shop-web: 1 of 2 updated pods available".into())
        );
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(deployment_rollout(&d), DeploymentRollout::Complete);
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}),
        );
        assert_eq!(
            deployment_rollout(&d),
            DeploymentRollout::Failed("shop-web: too slow".into())
        );
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "shop-web-1"}, "status": status}))
            .unwrap()
    }

    #[test]
    fn diagnoses_image_pull_first() {
        let pods = [
            pod(
                json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
            ),
            pod(
                json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}}}]}),
            ),
        ];
        let msg = diagnose(&pods).unwrap().message;
        assert!(
            msg.contains("image cannot be pulled (ErrImageNeverPull): image not present"),
            "{msg}"
        );
    }

    #[test]
    fn diagnoses_an_image_that_runs_as_root() {
        // The kubelet refuses such a container before it starts (runAsNonRoot); the pod
        // beside it merely crash-loops, which says less.
        let pods = [
            pod(
                json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
            ),
            pod(
                json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError",
                    "message": "container has runAsNonRoot and image will run as root (pod: \"shop-web-1_ns(1)\", container: web)"}}}]}),
            ),
        ];
        let msg = diagnose(&pods).unwrap().message;
        assert!(
            msg.starts_with("pod shop-web-1: process web cannot start: the image runs as root."),
            "{msg}"
        );
        assert!(msg.contains("USER 10001:10001"), "{msg}");
        // Other config errors keep the kubelet's words.
        let pods = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"db\" not found"}}}]}),
        )];
        assert_eq!(
            diagnose(&pods).unwrap().message,
            "pod shop-web-1: container cannot start (CreateContainerConfigError): secret \"db\" not found"
        );
    }

    #[test]
    fn diagnoses_crash_loops_with_exit_code() {
        let pods = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
        )];
        assert_eq!(
            diagnose(&pods).unwrap().message,
            "pod shop-web-1: process web is crash-looping: it exited with exit code 3 (Error) 4 times"
        );
    }

    #[test]
    fn diagnoses_a_first_exit_and_a_pod_still_starting() {
        let pods = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
        )];
        assert_eq!(
            diagnose(&pods).unwrap().message,
            "pod shop-web-1: process web exited with exit code 3 (Error)"
        );
        let pods = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        )];
        assert_eq!(
            diagnose(&pods).unwrap().message,
            "pod shop-web-1: process web has not started yet (ContainerCreating)"
        );
    }

    #[test]
    fn diagnoses_failing_readiness_and_scheduling() {
        let pods = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"running": {}}}]}),
        )];
        assert!(
            diagnose(&pods)
                .unwrap()
                .message
                .contains("failing its readiness check")
        );
        let pods = [pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False", "message": "0/1 nodes: insufficient cpu"}]}),
        )];
        assert!(
            diagnose(&pods)
                .unwrap()
                .message
                .contains("insufficient cpu")
        );
        assert_eq!(diagnose(&[pod(json!({}))]), None);
    }

    #[test]
    fn a_process_running_again_after_exits_is_failing_whatever_its_current_state() {
        // The slug example of issue 18: the process exits 1, the kubelet starts it again;
        // between crashes it is Running (and not ready), which once read as "slow".
        let pods = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 6,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        )];
        let d = diagnose(&pods).unwrap();
        assert_eq!(
            d.message,
            "pod shop-web-1: process web exited and was restarted 6 times (last exit code 1)"
        );
        assert!(d.failing);
        // Killed by its liveness check (SIGKILL after the grace period).
        let pods = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}}}]}),
        )];
        assert!(
            diagnose(&pods)
                .unwrap()
                .message
                .contains("failing liveness check")
        );
        // The twins: slowness is not failure.
        let ready_later = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"running": {}}}]}),
        )];
        assert!(!diagnose(&ready_later).unwrap().failing);
        let starting = [pod(
            json!({"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        )];
        assert!(!diagnose(&starting).unwrap().failing);
    }
}
