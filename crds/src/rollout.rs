//! Has the rollout of a Release finished or failed? One judgement, read from the App's
//! status, for everyone who waits on one (`git push` through the receiver, the CLI).
//!
//! The operator owns the rollout (its timeout, `Degraded`, the automatic rollback); a
//! waiter only reads. Conditions carry `observedGeneration`, and only those written for
//! the generation of the waiter's own change (the patch that pointed the App at the
//! Release) or later count, so a `Degraded` left over from an earlier change is not
//! mistaken for this one's. A rollback is read from `status.lastRollback`, never parsed
//! out of a message.
//!
//! A waiter looks at the App more than once (the receiver on each watch event, the CLI on
//! each poll) and one thing depends on time: the App may point at another Release for a
//! moment before its status says why (the operator patches `spec.release` back, then
//! writes `status.lastRollback`). [`Waiter`] holds since when, so both waiters give up on
//! another writer's change after the same [`ROLLBACK_STATUS_GRACE`].

use std::time::{Duration, Instant};

use crate::App;
use crate::conditions::{self, reasons, types};

/// How long the App may point at another Release, without its status saying this one was
/// rolled back, before that counts as another writer's change (the operator points the App
/// back a moment before it writes the status that says why).
pub const ROLLBACK_STATUS_GRACE: Duration = Duration::from_secs(15);

/// Where the rollout of one Release stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Rolled out and ready: the App's URLs.
    Deployed(Vec<String>),
    /// The operator gave up on the Release (and, if it says so, pointed the App back).
    Failed {
        reason: String,
        rolled_back_to: Option<String>,
    },
    /// The App points at another Release and its status does not say this one was
    /// rolled back: another writer's change (or the rollback's status is a moment late).
    PointsElsewhere(String),
    /// The App has pointed at another Release (named) for [`ROLLBACK_STATUS_GRACE`] with no
    /// rollback of this one in its status: another writer replaced it. Only a [`Waiter`]
    /// says so: one look ([`judge`]) cannot tell for how long.
    Superseded(String),
    /// Still going.
    Progressing,
}

/// Judges `app` for the rollout of `release`, counting only conditions observed at
/// `generation` (that of the waiter's change) or later.
pub fn judge(app: &App, release: &str, generation: i64) -> Verdict {
    let status = app.status.clone().unwrap_or_default();
    let fresh = |t: &str| {
        conditions::find(&status.conditions, t)
            .filter(|c| c.observed_generation.unwrap_or(0) >= generation)
            .filter(|c| c.status == conditions::status::TRUE)
    };
    let target = app.spec.release.as_deref().unwrap_or_default();
    if target != release {
        return match &status.last_rollback {
            Some(rb) if rb.from == release && rb.to == target => Verdict::Failed {
                reason: rb.reason.clone(),
                rolled_back_to: Some(rb.to.clone()),
            },
            _ => Verdict::PointsElsewhere(target.to_owned()),
        };
    }
    if status.release.as_deref() == Some(release) && fresh(types::READY).is_some() {
        return Verdict::Deployed(status.urls.clone());
    }
    if let Some(c) = fresh(types::DEGRADED)
        && [
            reasons::DEPLOY_TIMED_OUT,
            reasons::UNKNOWN_PROCESS_TYPE,
            reasons::NO_PROCESSES,
            reasons::RELEASE_NOT_FOUND,
        ]
        .contains(&c.reason.as_str())
    {
        return Verdict::Failed {
            reason: c.message.clone(),
            rolled_back_to: None,
        };
    }
    Verdict::Progressing
}

/// One rollout as a waiter follows it: [`judge`] at each look, and since when the App has
/// pointed elsewhere. How the App is fetched (a watch, polls) is the caller's.
#[derive(Debug, Clone)]
pub struct Waiter {
    release: String,
    generation: i64,
    elsewhere_since: Option<Instant>,
}

impl Waiter {
    /// Follows the rollout of `release`, started by the change that gave the App
    /// `generation` (the patch's answer's `metadata.generation`).
    pub fn new(release: impl Into<String>, generation: i64) -> Self {
        Self {
            release: release.into(),
            generation,
            elsewhere_since: None,
        }
    }

    /// The Release being waited for.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// Judges `app` as seen at `now`: [`judge`]'s verdict, except that pointing elsewhere
    /// for [`ROLLBACK_STATUS_GRACE`] (without a look in between that saw this Release
    /// again) is [`Verdict::Superseded`]. Look again at least every few seconds while it
    /// points elsewhere, even without news of the App, or the grace never runs out.
    pub fn look(&mut self, app: &App, now: Instant) -> Verdict {
        match judge(app, &self.release, self.generation) {
            Verdict::PointsElsewhere(target) => {
                let since = *self.elsewhere_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= ROLLBACK_STATUS_GRACE {
                    Verdict::Superseded(target)
                } else {
                    Verdict::PointsElsewhere(target)
                }
            }
            verdict => {
                self.elsewhere_since = None;
                verdict
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
            Verdict::Deployed(vec!["http://shop.example".into()])
        );
        // Ready for an older generation (still the old release's pods): not yet.
        let a = app(
            "shop-v2",
            json!({"release": "shop-v1", "rollout": {"release": "shop-v2", "startedAt": "2026-11-26T00:00:00Z"},
                   "conditions": [cond("Ready", "True", "Available", "", 4)]}),
        );
        assert_eq!(judge(&a, "shop-v2", 5), Verdict::Progressing);
    }

    #[test]
    fn a_rollback_is_read_from_the_status_not_from_a_message() {
        let rollback = json!({"from": "shop-v2", "to": "shop-v1", "at": "2026-11-26T00:00:00Z",
            "reason": "release shop-v2 did not become available within 20s: pod x: process web is crash-looping"});
        let a = app(
            "shop-v1",
            json!({"release": "shop-v1", "lastRollback": rollback,
                   "conditions": [cond("Degraded", "True", "RolledBack", "anything at all", 5)]}),
        );
        assert_eq!(
            judge(&a, "shop-v2", 5),
            Verdict::Failed {
                reason: "release shop-v2 did not become available within 20s: pod x: process web is crash-looping".into(),
                rolled_back_to: Some("shop-v1".into()),
            }
        );
        // The twin: a rollback of another release says nothing about this one.
        assert_eq!(
            judge(&a, "shop-v3", 5),
            Verdict::PointsElsewhere("shop-v1".into())
        );
    }

    #[test]
    fn stale_conditions_do_not_count() {
        // A Degraded of an earlier push (generation 3) while this rollout (5) starts.
        let a = app(
            "shop-v3",
            json!({"release": "shop-v1", "conditions": [cond("Degraded", "True", "DeployTimedOut", "old", 3)]}),
        );
        assert_eq!(judge(&a, "shop-v3", 5), Verdict::Progressing);
        let a = app("shop-v9", json!({}));
        assert_eq!(
            judge(&a, "shop-v3", 5),
            Verdict::PointsElsewhere("shop-v9".into())
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
            Verdict::Failed {
                rolled_back_to: None,
                ..
            }
        ));
        let a = app(
            "shop-v2",
            json!({"conditions": [cond("Degraded", "True", "UnknownProcessType", "process type \"worker\" is not in release shop-v2", 6)]}),
        );
        assert!(matches!(judge(&a, "shop-v2", 5), Verdict::Failed { .. }));
    }

    #[test]
    fn a_waiter_calls_the_app_pointing_elsewhere_superseded_after_the_grace() {
        let t0 = Instant::now();
        let elsewhere = app("shop-v9", json!({"release": "shop-v2"}));
        let mut w = Waiter::new("shop-v3", 5);
        assert_eq!(w.release(), "shop-v3");
        assert_eq!(
            w.look(&elsewhere, t0),
            Verdict::PointsElsewhere("shop-v9".into())
        );
        let almost = t0 + ROLLBACK_STATUS_GRACE - Duration::from_millis(1);
        assert_eq!(
            w.look(&elsewhere, almost),
            Verdict::PointsElsewhere("shop-v9".into())
        );
        assert_eq!(
            w.look(&elsewhere, t0 + ROLLBACK_STATUS_GRACE),
            Verdict::Superseded("shop-v9".into())
        );
    }

    #[test]
    fn a_rollback_status_arriving_within_the_grace_is_a_failure_not_a_supersede() {
        let t0 = Instant::now();
        let mut w = Waiter::new("shop-v2", 5);
        // The operator has pointed the App back; its status does not say why yet.
        let pointed_back = app("shop-v1", json!({"release": "shop-v1"}));
        assert_eq!(
            w.look(&pointed_back, t0),
            Verdict::PointsElsewhere("shop-v1".into())
        );
        // Then it does, after the grace has run out: the rollback is still what is said.
        let rollback = json!({"from": "shop-v2", "to": "shop-v1", "at": "2026-11-26T00:00:00Z",
            "reason": "release shop-v2 did not become available within 20s"});
        let said = app(
            "shop-v1",
            json!({"release": "shop-v1", "lastRollback": rollback}),
        );
        assert_eq!(
            w.look(&said, t0 + ROLLBACK_STATUS_GRACE * 2),
            Verdict::Failed {
                reason: "release shop-v2 did not become available within 20s".into(),
                rolled_back_to: Some("shop-v1".into()),
            }
        );
    }

    #[test]
    fn the_grace_starts_again_when_the_app_points_back_at_the_release() {
        let t0 = Instant::now();
        let elsewhere = app("shop-v9", json!({}));
        let back = app("shop-v3", json!({}));
        let mut w = Waiter::new("shop-v3", 5);
        assert!(matches!(
            w.look(&elsewhere, t0),
            Verdict::PointsElsewhere(_)
        ));
        assert_eq!(
            w.look(&back, t0 + Duration::from_secs(10)),
            Verdict::Progressing
        );
        // 20 s after the first time it pointed elsewhere, 0 s after the second.
        let again = t0 + Duration::from_secs(20);
        assert!(matches!(
            w.look(&elsewhere, again),
            Verdict::PointsElsewhere(_)
        ));
        assert_eq!(
            w.look(&elsewhere, again + ROLLBACK_STATUS_GRACE),
            Verdict::Superseded("shop-v9".into())
        );
    }
}
