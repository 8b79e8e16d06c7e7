//! Has the rollout of a Release finished or failed? One judgement, read from the App's
//! status, for everyone who waits on one (`git push` through the receiver, the CLI).
//!
//! The operator owns the rollout (its timeout, `Degraded`, the automatic rollback); a
//! waiter only reads. Conditions carry `observedGeneration`, and only those written for
//! the generation of the waiter's own change (the patch that pointed the App at the
//! Release) or later count, so a `Degraded` left over from an earlier change is not
//! mistaken for this one's. A rollback is read from `status.lastRollback`, never parsed
//! out of a message.

use crate::App;
use crate::conditions::{self, reasons, types};

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
}
