//! The pure half of the App reconciler: the objects an App should own, which Releases
//! history keeps, and the rollout decision (status, rollback) from what the Formation
//! reports. No I/O; unit-tested below.

use std::collections::BTreeMap;

use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::{
    App, AppStatus, Formation, FormationSpec, FormationStatus, ProcessStatus, Release, Rollout,
    Route, RouteSpec, labels, names,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::SignedDuration;
use kube::ResourceExt;

/// How long a rollout runs before the pods of its release are read for a failure (one
/// LIST per pass after that): a process that exits does so within seconds.
const EARLY_DIAGNOSIS: SignedDuration = SignedDuration::from_secs(20);

pub fn owner_reference(app: &App, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: "flynn.io/v1alpha1".into(),
        kind: "App".into(),
        name: app.name_any(),
        uid: app.metadata.uid.clone().unwrap_or_default(),
        controller: Some(controller),
        block_owner_deletion: Some(true),
    }
}

/// The App's one Formation: what should run, copied from the App.
pub fn formation(app: &App, release: &str) -> Formation {
    let mut f = Formation::new(
        &names::formation_name(&app.name_any()),
        FormationSpec {
            app: app.name_any(),
            release: release.to_owned(),
            processes: app.spec.processes.clone(),
            strategy: app.spec.strategy,
        },
    );
    f.metadata.namespace = app.namespace();
    f.metadata.owner_references = Some(vec![owner_reference(app, true)]);
    f.metadata.labels = Some(managed_labels(app));
    f
}

/// The default Route: `<app>.<default_domain>` to the `web` process.
pub fn default_route(app: &App, default_domain: &str) -> Route {
    let domain = format!("{}.{default_domain}", app.name_any());
    let mut r = Route::new(
        &names::default_route_name(&app.name_any()),
        RouteSpec::http(&app.name_any(), &domain),
    );
    r.metadata.namespace = app.namespace();
    r.metadata.owner_references = Some(vec![owner_reference(app, true)]);
    r.metadata.labels = Some(managed_labels(app));
    r
}

fn managed_labels(app: &App) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP.to_owned(), app.name_any()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_FLYNN.to_owned(),
        ),
    ])
}

/// Releases to delete so that at most `keep` remain: the oldest first, never one in
/// `protect` (the target and the running release).
pub fn releases_to_prune(releases: &[&Release], keep: usize, protect: &[&str]) -> Vec<String> {
    let mut sorted: Vec<&&Release> = releases.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.spec.version));
    sorted
        .into_iter()
        .skip(keep)
        .map(|r| r.name_any())
        .filter(|n| !protect.contains(&n.as_str()))
        .collect()
}

/// What the App reconciler observed, for [`decide`].
#[derive(Debug)]
pub struct Observed<'a> {
    pub app: &'a App,
    /// The Formation, if it has been reconciled for its current spec.
    pub formation: Option<&'a Formation>,
    pub now: Time,
    /// Why pods of the target release are not ready, read from them (only looked up
    /// once the deploy timeout has passed).
    pub diagnosis: Option<crate::rollout::Diagnosis>,
    /// URLs from the App's accepted Routes, the default Route's first.
    pub urls: Vec<String>,
}

/// An Event the reconcile records on the App, for `kubectl describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

impl AppEvent {
    fn normal(reason: &'static str, note: String) -> Self {
        Self {
            warning: false,
            reason,
            note,
        }
    }

    fn warning(reason: &'static str, note: String) -> Self {
        Self {
            warning: true,
            reason,
            note,
        }
    }
}

/// The Event of a completed rollout (history is pruned then).
pub const DEPLOYED: &str = "Deployed";

/// What to do about a rollout.
#[derive(Debug, PartialEq)]
pub struct Decision {
    pub status: AppStatus,
    /// Point the App back at this Release (and its env): the rollout failed.
    pub rollback_to: Option<String>,
    pub events: Vec<AppEvent>,
    /// Check again after this long (the deploy timeout is running).
    pub requeue_after: Option<std::time::Duration>,
    /// The deploy timeout passed: the caller should read pods and call again with a diagnosis.
    pub needs_diagnosis: bool,
}

/// The rollout state machine. `status.release` is the Release last fully rolled out;
/// `spec.release` the one wanted. While they differ a rollout runs, timed from when it was
/// first seen (`status.rollout.startedAt`); past `deployTimeoutSeconds` the App becomes
/// `Degraded` with the reason read from its pods and, with `autoRollback` and an earlier
/// release to go back to, returns to it.
pub fn decide(o: &Observed<'_>) -> Decision {
    let mut d = Draft::new(o);
    let Some(target) = o.app.spec.release.clone() else {
        d.no_release();
        return d.finish();
    };
    let formation = current_formation(o, &target);
    d.status.processes = process_counts(o.app, formation, &d.old);
    d.status.process_summary = Some(ProcessStatus::summary(&d.status.processes));
    let problem = formation_problem(formation);
    d.names_taken(problem.as_ref());
    let waiting_for = formation
        .and_then(|fs| conditions::find(&fs.conditions, types::READY))
        .map(|c| c.message.clone())
        .unwrap_or_else(|| "waiting for the formation to be updated".into());

    if formation.is_some_and(|fs| fs.release.as_deref() == Some(target.as_str())) {
        d.rolled_out(&target);
    } else if let Some(problem) = problem {
        d.blocked(problem);
    } else if d.old.release.as_deref() == Some(target.as_str()) {
        d.scaling(&target, &waiting_for);
    } else if let Err(NeedsDiagnosis) = d.rolling_out(&target, waiting_for) {
        // Reading pods costs a LIST: the caller does it only now, and calls again.
        let mut decision = d.finish();
        decision.needs_diagnosis = true;
        return decision;
    }
    d.ready(&target);
    d.finish()
}

/// The deploy timeout (or the early check) passed and no diagnosis was given.
struct NeedsDiagnosis;

/// The Formation's status, if the Formation runs `target` and has been reconciled for its
/// current spec.
fn current_formation<'a>(o: &Observed<'a>, target: &str) -> Option<&'a FormationStatus> {
    o.formation
        .filter(|f| f.spec.release == target)
        .filter(|f| f.status.as_ref().and_then(|s| s.observed_generation) == f.metadata.generation)
        .and_then(|f| f.status.as_ref())
}

/// Per-process counts: the Formation's, or, until it has observed the spec, the desired
/// counts with nothing ready rather than stale numbers.
fn process_counts(
    app: &App,
    formation: Option<&FormationStatus>,
    old: &AppStatus,
) -> BTreeMap<String, ProcessStatus> {
    if let Some(fs) = formation {
        return fs.processes.clone();
    }
    app.spec
        .processes
        .iter()
        .map(|(p, &n)| {
            (
                p.clone(),
                ProcessStatus {
                    desired: n,
                    ..old.processes.get(p).copied().unwrap_or_default()
                },
            )
        })
        .collect()
}

/// A reason the Formation cannot progress that the user must fix: (reason, message).
fn formation_problem(formation: Option<&FormationStatus>) -> Option<(String, String)> {
    formation
        .and_then(|fs| conditions::find(&fs.conditions, types::READY))
        .filter(|c| {
            c.reason == reasons::RELEASE_NOT_FOUND
                || c.reason == reasons::UNKNOWN_PROCESS_TYPE
                || c.reason == reasons::NO_PROCESSES
                || c.reason == reasons::NOT_OWNED
        })
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// The decision being made: the new status, built from the old one, and what to do.
struct Draft<'o, 'a> {
    o: &'o Observed<'a>,
    old: AppStatus,
    status: AppStatus,
    events: Vec<AppEvent>,
    rollback_to: Option<String>,
    requeue_after: Option<std::time::Duration>,
}

impl<'o, 'a> Draft<'o, 'a> {
    fn new(o: &'o Observed<'a>) -> Self {
        let old = o.app.status.clone().unwrap_or_default();
        let status = AppStatus {
            release: old.release.clone(),
            release_version: old.release_version,
            urls: o.urls.clone(),
            conditions: old.conditions.clone(),
            rollout: old.rollout.clone(),
            observed_generation: o.app.metadata.generation,
            ..Default::default()
        };
        Self {
            o,
            old,
            status,
            events: vec![],
            rollback_to: None,
            requeue_after: None,
        }
    }

    fn finish(self) -> Decision {
        Decision {
            status: self.status,
            rollback_to: self.rollback_to,
            events: self.events,
            requeue_after: self.requeue_after,
            needs_diagnosis: false,
        }
    }

    /// Sets condition `type_` for the App's current generation.
    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: String) {
        let c = conditions::new(
            type_,
            ok,
            reason,
            message,
            self.o.app.metadata.generation,
            self.o.now.clone(),
        );
        conditions::set(&mut self.status.conditions, c);
    }

    fn was(
        &self,
        type_: &str,
    ) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        conditions::find(&self.old.conditions, type_)
    }

    /// No `spec.release`: nothing to run yet, and what to do about it.
    fn no_release(&mut self) {
        self.status.rollout = None;
        self.set(
            types::READY,
            false,
            reasons::NO_RELEASE,
            "no release yet: `git push` to the app, or create a Release and set spec.release"
                .into(),
        );
        self.set(
            types::PROGRESSING,
            false,
            reasons::NO_RELEASE,
            String::new(),
        );
    }

    /// A child's name taken by an object Flynn did not make: a `Conflict` of its own, so
    /// `kubectl wait --for=condition=Conflict` and dashboards see it; cleared once resolved.
    fn names_taken(&mut self, problem: Option<&(String, String)>) {
        let taken = problem.filter(|(reason, _)| reason == reasons::NOT_OWNED);
        if let Some((_, msg)) = taken {
            self.set(types::CONFLICT, true, reasons::NOT_OWNED, msg.clone());
        } else if self.was(types::CONFLICT).is_some() {
            self.set(types::CONFLICT, false, reasons::NAMES_FREE, String::new());
        }
    }

    /// Every process runs `target`.
    fn rolled_out(&mut self, target: &str) {
        let was_rolling_out = self
            .old
            .rollout
            .as_ref()
            .is_some_and(|r| r.release == target)
            || self.old.release.as_deref() != Some(target);
        self.status.release = Some(target.to_owned());
        self.status.release_version = flynn_crds::names::parse_release_name(target).map(|(_, v)| v);
        self.status.rollout = None;
        if was_rolling_out {
            self.set(types::DEGRADED, false, reasons::AVAILABLE, String::new());
            if self.old.release.as_deref() != Some(target) {
                self.events.push(AppEvent::normal(
                    DEPLOYED,
                    format!("release {target} is running"),
                ));
            }
        }
        self.set(
            types::PROGRESSING,
            false,
            reasons::ROLLOUT_COMPLETE,
            format!("release {target} is rolled out"),
        );
    }

    /// Nothing will progress until the user fixes the input: say what to fix.
    fn blocked(&mut self, (reason, msg): (String, String)) {
        self.status.rollout = None;
        self.set(types::PROGRESSING, false, &reason, msg.clone());
        self.set(types::DEGRADED, true, &reason, msg);
    }

    /// The running release stays: a scale change, or settling back after a rollback.
    /// Not a rollout, so no timer, and Degraded keeps saying what happened last.
    fn scaling(&mut self, target: &str, waiting_for: &str) {
        self.status.rollout = None;
        self.set(
            types::PROGRESSING,
            true,
            reasons::SCALING,
            format!("scaling {target}: {waiting_for}"),
        );
    }

    /// A new release is on its way: timed from when it was first seen, judged at the
    /// deploy timeout (and, for a release that fails outright, earlier).
    fn rolling_out(&mut self, target: &str, waiting_for: String) -> Result<(), NeedsDiagnosis> {
        let rollout = match self.old.rollout.as_ref() {
            Some(r) if r.release == target => r.clone(),
            _ => {
                // No Event for the start: the Progressing condition says it, and the
                // outcome gets one (Deployed, DeployTimedOut, RolledBack). An Event per
                // deploy start is a write per deploy that nobody reads.
                self.set(types::DEGRADED, false, reasons::ROLLING_OUT, String::new());
                Rollout {
                    release: target.to_owned(),
                    started_at: self.o.now.clone(),
                }
            }
        };
        let timeout_secs = self.o.app.spec.deploy_timeout_seconds;
        let timeout = SignedDuration::from_secs(i64::from(timeout_secs.max(1)));
        let elapsed = self.o.now.0.duration_since(rollout.started_at.0);
        if elapsed >= timeout {
            let diagnosis = self.o.diagnosis.clone().ok_or(NeedsDiagnosis)?;
            let diagnosis = if diagnosis.message.is_empty() {
                waiting_for
            } else {
                diagnosis.message
            };
            let failure = format!(
                "release {target} did not become available within {timeout_secs}s: {diagnosis}"
            );
            self.timed_out(target, rollout, failure);
            return Ok(());
        }
        // A release that fails (exits, cannot start, cannot be placed) is said to at
        // once, not only at the deploy timeout; it still has until then to recover.
        let mut progress = waiting_for;
        if elapsed >= EARLY_DIAGNOSIS {
            let diagnosis = self.o.diagnosis.clone().ok_or(NeedsDiagnosis)?;
            if diagnosis.failing {
                let msg = format!(
                    "release {target} is failing: {}; it is rolled back if not available within {timeout_secs}s",
                    diagnosis.message
                );
                self.set(types::DEGRADED, true, reasons::PROCESS_FAILING, msg);
                progress = diagnosis.message;
            }
        }
        self.set(
            types::PROGRESSING,
            true,
            reasons::ROLLING_OUT,
            format!("rolling out {target}: {progress}"),
        );
        let remaining = (timeout - elapsed).unsigned_abs();
        self.requeue_after = Some(remaining.min(std::time::Duration::from_secs(15)));
        self.status.rollout = Some(rollout);
        Ok(())
    }

    /// The deploy timeout passed: roll back if allowed and possible, else say why not.
    fn timed_out(&mut self, target: &str, rollout: Rollout, failure: String) {
        let previous = self.old.release.clone().filter(|r| r != target);
        match previous {
            Some(previous) if self.o.app.spec.auto_rollback => {
                let msg = format!("{failure}; rolled back to {previous}");
                self.set(types::DEGRADED, true, reasons::ROLLED_BACK, msg.clone());
                self.set(types::PROGRESSING, false, reasons::ROLLED_BACK, msg.clone());
                self.events
                    .push(AppEvent::warning(reasons::ROLLED_BACK, msg));
                self.status.last_rollback = Some(flynn_crds::Rollback {
                    from: target.to_owned(),
                    to: previous.clone(),
                    reason: failure,
                    at: self.o.now.clone(),
                });
                self.rollback_to = Some(previous);
                self.status.rollout = None;
            }
            previous => {
                let why_not = if previous.is_none() {
                    "no earlier release to roll back to"
                } else {
                    "autoRollback is off"
                };
                let msg = format!("{failure} ({why_not})");
                if self
                    .was(types::DEGRADED)
                    .is_none_or(|c| c.status != conditions::status::TRUE)
                {
                    self.events
                        .push(AppEvent::warning(reasons::DEPLOY_TIMED_OUT, msg.clone()));
                }
                self.set(
                    types::DEGRADED,
                    true,
                    reasons::DEPLOY_TIMED_OUT,
                    msg.clone(),
                );
                self.set(types::PROGRESSING, false, reasons::DEPLOY_TIMED_OUT, msg);
                self.status.rollout = Some(rollout);
            }
        }
    }

    /// Ready: the running release serves every desired process.
    fn ready(&mut self, target: &str) {
        let status = &self.status;
        let serving =
            status.release.is_some() && status.processes.values().all(|p| p.ready >= p.desired);
        let message = if serving {
            format!("{} is serving", status.release.clone().unwrap_or_default())
        } else if status.release.is_none() {
            format!("no release has rolled out yet; rolling out {target}")
        } else {
            format!(
                "pods ready: {}",
                status.process_summary.clone().unwrap_or_default()
            )
        };
        let reason = if serving {
            reasons::AVAILABLE
        } else {
            reasons::WAITING_FOR_PODS
        };
        self.set(types::READY, serving, reason, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + secs).unwrap())
    }

    fn app(release: Option<&str>, status: serde_json::Value) -> App {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "App",
            "metadata": {"name": "shop", "namespace": "ns", "uid": "a-uid", "generation": 4},
            "spec": {"release": release, "processes": {"web": 2}, "deployTimeoutSeconds": 60},
            "status": status,
        }))
        .unwrap()
    }

    fn formation(release: &str, rolled_out: Option<&str>, ready_msg: &str) -> Formation {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Formation",
            "metadata": {"name": "shop", "namespace": "ns", "generation": 7},
            "spec": {"app": "shop", "release": release, "processes": {"web": 2}},
            "status": {
                "observedGeneration": 7, "release": rolled_out,
                "processes": {"web": {"desired": 2, "ready": if rolled_out.is_some() {2} else {1}, "available": 1}},
                "conditions": [{"type": "Ready", "status": "False", "reason": "WaitingForPods", "message": ready_msg,
                                "lastTransitionTime": "2027-01-15T08:00:00Z"}]
            }
        }))
        .unwrap()
    }

    fn observed<'a>(
        app: &'a App,
        f: Option<&'a Formation>,
        now: i64,
        diagnosis: Option<&str>,
    ) -> Observed<'a> {
        Observed {
            app,
            formation: f,
            now: at(now),
            diagnosis: diagnosis.map(|m| crate::rollout::Diagnosis {
                message: m.to_owned(),
                failing: !m.is_empty(),
            }),
            urls: vec!["http://shop.flynn.local".into()],
        }
    }

    fn cond<'a>(
        s: &'a AppStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        conditions::find(&s.conditions, t).unwrap()
    }

    #[test]
    fn no_release_yet() {
        let a = app(None, json!({}));
        let d = decide(&observed(&a, None, 0, None));
        assert_eq!(cond(&d.status, "Ready").reason, reasons::NO_RELEASE);
    }

    #[test]
    fn a_new_release_starts_a_rollout_then_completes() {
        let a = app(
            Some("shop-v2"),
            json!({"release": "shop-v1", "releaseVersion": 1}),
        );
        let f = formation("shop-v2", None, "shop-web: 1 of 2 updated pods available");
        let d = decide(&observed(&a, Some(&f), 0, None));
        assert_eq!(d.status.rollout.as_ref().unwrap().release, "shop-v2");
        assert_eq!(
            d.status.release.as_deref(),
            Some("shop-v1"),
            "still running v1"
        );
        let p = cond(&d.status, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", reasons::ROLLING_OUT)
        );
        assert!(
            p.message.contains("1 of 2 updated pods available"),
            "{}",
            p.message
        );
        assert_eq!(d.requeue_after, Some(std::time::Duration::from_secs(15)));
        assert!(d.events.is_empty(), "{:?}", d.events);

        // Ten seconds later the formation reports v2 rolled out.
        let mut a2 = a.clone();
        a2.status = Some(d.status.clone());
        let f = formation("shop-v2", Some("shop-v2"), "");
        let d = decide(&observed(&a2, Some(&f), 10, None));
        assert_eq!(d.status.release.as_deref(), Some("shop-v2"));
        assert_eq!(d.status.release_version, Some(2));
        assert!(d.status.rollout.is_none());
        assert_eq!(cond(&d.status, "Ready").status, "True");
        assert_eq!(cond(&d.status, "Progressing").status, "False");
        assert_eq!(cond(&d.status, "Degraded").status, "False");
        assert_eq!(d.status.urls, ["http://shop.flynn.local"]);
    }

    #[test]
    fn a_failing_release_is_degraded_at_once_and_a_slow_one_is_not() {
        let a = app(
            Some("shop-v2"),
            json!({"release": "shop-v1", "rollout": {"release": "shop-v2", "startedAt": at(0)}}),
        );
        let f = formation("shop-v2", None, "shop-web: 0 of 2 updated pods available");
        // Before 20 s: no pod reads.
        assert!(!decide(&observed(&a, Some(&f), 10, None)).needs_diagnosis);
        let d = decide(&observed(&a, Some(&f), 25, None));
        assert!(d.needs_diagnosis);
        let exits =
            "pod shop-web-x: process web exited and was restarted 6 times (last exit code 1)";
        let d = decide(&observed(&a, Some(&f), 25, Some(exits)));
        let deg = cond(&d.status, "Degraded");
        assert_eq!(
            (deg.status.as_str(), deg.reason.as_str()),
            ("True", reasons::PROCESS_FAILING)
        );
        assert!(
            deg.message.contains(exits)
                && deg
                    .message
                    .contains("rolled back if not available within 60s"),
            "{}",
            deg.message
        );
        assert!(cond(&d.status, "Progressing").message.contains(exits));
        // Not rolled back yet: it has until the timeout to recover.
        assert_eq!(d.rollback_to, None);
        assert!(d.status.rollout.is_some());
        // The twin: a slow start is not a failure.
        let slow = crate::rollout::Diagnosis {
            message: "pod shop-web-x: process web has not started yet (ContainerCreating)".into(),
            failing: false,
        };
        let mut o = observed(&a, Some(&f), 25, None);
        o.diagnosis = Some(slow);
        let d = decide(&o);
        assert!(
            conditions::find(&d.status.conditions, "Degraded").is_none_or(|c| c.status != "True")
        );
    }

    #[test]
    fn a_timed_out_rollout_asks_for_a_diagnosis_then_rolls_back() {
        let a = app(
            Some("shop-v2"),
            json!({"release": "shop-v1", "rollout": {"release": "shop-v2", "startedAt": at(0)}}),
        );
        let f = formation("shop-v2", None, "shop-web: 0 of 2 updated pods available");
        let d = decide(&observed(&a, Some(&f), 61, None));
        assert!(d.needs_diagnosis);
        let d = decide(&observed(
            &a,
            Some(&f),
            61,
            Some(
                "pod shop-web-x: process web is crash-looping: it exited with exit code 3 2 times",
            ),
        ));
        assert_eq!(d.rollback_to.as_deref(), Some("shop-v1"));
        // The rollback, structured: no one parses it out of a message.
        let rb = d.status.last_rollback.as_ref().expect("lastRollback");
        assert_eq!((rb.from.as_str(), rb.to.as_str()), ("shop-v2", "shop-v1"));
        assert!(
            rb.reason
                .starts_with("release shop-v2 did not become available within")
        );
        assert!(!rb.reason.contains("rolled back"), "{}", rb.reason);
        let deg = cond(&d.status, "Degraded");
        assert_eq!(
            (deg.status.as_str(), deg.reason.as_str()),
            ("True", reasons::ROLLED_BACK)
        );
        assert!(
            deg.message.contains("exit code 3") && deg.message.contains("rolled back to shop-v1"),
            "{}",
            deg.message
        );
        assert!(
            d.events
                .iter()
                .any(|e| e.warning && e.reason == reasons::ROLLED_BACK)
        );
    }

    #[test]
    fn without_an_earlier_release_a_timeout_only_degrades() {
        let a = app(
            Some("shop-v1"),
            json!({"rollout": {"release": "shop-v1", "startedAt": at(0)}}),
        );
        let d = decide(&observed(
            &a,
            None,
            120,
            Some("pod x: image cannot be pulled (ErrImageNeverPull)"),
        ));
        assert_eq!(d.rollback_to, None);
        let deg = cond(&d.status, "Degraded");
        assert_eq!(deg.reason, reasons::DEPLOY_TIMED_OUT);
        assert!(
            deg.message.contains("no earlier release to roll back to"),
            "{}",
            deg.message
        );
    }

    #[test]
    fn after_a_rollback_degraded_stays_until_a_new_rollout() {
        // The App points at v1 again (rolled back); v1 is what runs.
        let a = app(
            Some("shop-v1"),
            json!({"release": "shop-v1", "conditions": [
            {"type": "Degraded", "status": "True", "reason": "RolledBack", "message": "v2 failed", "lastTransitionTime": at(0)}]}),
        );
        let f = formation("shop-v1", Some("shop-v1"), "");
        let d = decide(&observed(&a, Some(&f), 70, None));
        assert_eq!(cond(&d.status, "Degraded").status, "True");
        assert_eq!(cond(&d.status, "Ready").status, "True");
    }

    #[test]
    fn scaling_the_running_release_is_not_a_rollout() {
        let a = app(Some("shop-v1"), json!({"release": "shop-v1"}));
        let f = formation("shop-v1", None, "shop-web: 1 of 2 updated pods available");
        let d = decide(&observed(&a, Some(&f), 500, None));
        assert!(d.status.rollout.is_none() && d.rollback_to.is_none() && !d.needs_diagnosis);
        let p = cond(&d.status, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", reasons::SCALING)
        );
        assert!(d.events.is_empty());
    }

    #[test]
    fn formation_input_errors_surface_on_the_app() {
        let a = app(Some("shop-v2"), json!({"release": "shop-v1"}));
        let mut f = formation("shop-v2", None, "");
        f.status.as_mut().unwrap().conditions[0].reason = reasons::UNKNOWN_PROCESS_TYPE.into();
        f.status.as_mut().unwrap().conditions[0].message =
            "process type \"wrker\" is not in release shop-v2".into();
        let d = decide(&observed(&a, Some(&f), 0, None));
        let deg = cond(&d.status, "Degraded");
        assert_eq!(deg.reason, reasons::UNKNOWN_PROCESS_TYPE);
        assert!(deg.message.contains("wrker"));
    }

    fn release(version: i64) -> Release {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
            "metadata": {"name": format!("shop-v{version}"), "namespace": "ns"},
            "spec": {"app": "shop", "version": version, "artifact": {"image": "x"},
                     "processes": {"web": {}}, "meta": {"git.commit": "abc"}}
        }))
        .unwrap()
    }

    #[test]
    fn history_keeps_the_newest_and_never_the_protected() {
        let rs: Vec<Release> = (1..=6).map(release).collect();
        let refs: Vec<&Release> = rs.iter().collect();
        assert_eq!(
            releases_to_prune(&refs, 3, &[]),
            ["shop-v3", "shop-v2", "shop-v1"]
        );
        assert_eq!(
            releases_to_prune(&refs, 3, &["shop-v2"]),
            ["shop-v3", "shop-v1"]
        );
        assert!(releases_to_prune(&refs, 10, &[]).is_empty());
    }

    #[test]
    fn owned_objects_point_at_the_app() {
        let a = app(Some("shop-v2"), json!({}));
        let f = formation_of(&a);
        assert_eq!(f.spec.release, "shop-v2");
        assert_eq!(f.spec.processes["web"], 2);
        let r = default_route(&a, "flynn.local");
        assert_eq!(r.metadata.name.as_deref(), Some("shop-default"));
        assert_eq!(r.spec.http.as_ref().unwrap().domain, "shop.flynn.local");
        assert_eq!(
            r.metadata.owner_references.as_ref().unwrap()[0].uid,
            "a-uid"
        );
    }

    fn formation_of(a: &App) -> Formation {
        super::formation(a, a.spec.release.as_deref().unwrap())
    }
}
