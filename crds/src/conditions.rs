//! Status condition types and reasons, and the one way to update a condition list.
//!
//! Conditions follow the Kubernetes API conventions (`metav1.Condition`): one entry per type,
//! `lastTransitionTime` changes only when `status` changes, and `observedGeneration` says which
//! spec the condition describes. The condition lists are `x-kubernetes-list-type: map` keyed by
//! `type`, so the operator and the router can each server-side apply their own conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// App / Formation: every desired process is running the current release and ready.
    pub const READY: &str = "Ready";
    /// App / Formation: a rollout is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// App: the last rollout failed (and was rolled back if `autoRollback`).
    pub const DEGRADED: &str = "Degraded";
    /// Route: the router accepted the route (it is valid and does not conflict).
    pub const ACCEPTED: &str = "Accepted";
    /// Route: another Route owns the same domain and path, or the same TCP port.
    pub const CONFLICT: &str = "Conflict";
    /// Route: the router is serving the route.
    pub const PROGRAMMED: &str = "Programmed";
    /// Route (written by the router): the certificate of `spec.http.tlsSecretName` is used
    /// for the Route's host (from the Route's own namespace, covering the host, its key
    /// matching).
    pub const CERTIFICATE_READY: &str = "CertificateReady";
    /// App: its default Route (`<app>.<defaultDomain>`) is accepted; false when another
    /// namespace owns that host (an App of the same name elsewhere).
    pub const DEFAULT_ROUTE_ACCEPTED: &str = "DefaultRouteAccepted";
}

/// Condition reasons (CamelCase, as the API conventions require).
pub mod reasons {
    /// Everything desired is running and ready.
    pub const AVAILABLE: &str = "Available";
    /// A new release is being rolled out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Pods are being added or removed for a scale change.
    pub const SCALING: &str = "Scaling";
    /// The rollout did not become ready within `deployTimeoutSeconds`.
    pub const DEPLOY_TIMED_OUT: &str = "DeployTimedOut";
    /// Degraded during a rollout: the new release's processes fail (exit, cannot start or
    /// cannot be placed); the rollout goes on until its timeout, then rolls back.
    pub const PROCESS_FAILING: &str = "ProcessFailing";
    /// The rollout failed and the previous release was restored.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// `spec.release` names a Release that does not exist.
    pub const RELEASE_NOT_FOUND: &str = "ReleaseNotFound";
    /// The App has no release yet (nothing has been pushed).
    pub const NO_RELEASE: &str = "NoRelease";
    /// The Formation (or App) asks for a process type its Release does not define.
    pub const UNKNOWN_PROCESS_TYPE: &str = "UnknownProcessType";
    /// The Release defines no process types.
    pub const NO_PROCESSES: &str = "NoProcesses";
    /// The rollout is waiting for pods to become ready.
    pub const WAITING_FOR_PODS: &str = "WaitingForPods";
    /// Nothing is being rolled out.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// A Deployment or Service of the App's name exists and was not made by Flynn.
    pub const NOT_OWNED: &str = "NotOwned";
    /// Every name the App's processes use is the platform's again.
    pub const NAMES_FREE: &str = "NamesFree";
    /// The Route is valid and unique.
    pub const ACCEPTED: &str = "Accepted";
    /// Another Route claims the same domain + path or TCP port.
    pub const CONFLICTING_ROUTE: &str = "ConflictingRoute";
    /// The Route's TLS Secret is missing or invalid.
    pub const INVALID_CERTIFICATE: &str = "InvalidCertificate";
    /// The Route targets an App or process with no Service.
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    /// The router serves the Route.
    pub const PROGRAMMED: &str = "Programmed";
    /// The router cannot open the TCP Route's port (another process holds it).
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    /// Another namespace's Route claimed the host first (any path of it is that namespace's).
    pub const HOST_OWNED_BY_NAMESPACE: &str = "HostOwnedByNamespace";
    /// A wildcard covering the platform's default domain, which the platform does not allow.
    pub const WILDCARD_NOT_ALLOWED: &str = "WildcardNotAllowed";
    /// The TCP port is outside the range the platform allows.
    pub const PORT_OUT_OF_RANGE: &str = "PortOutOfRange";
    /// Another namespace's Route has the TCP port, and is older.
    pub const PORT_OWNED_BY_NAMESPACE: &str = "PortOwnedByNamespace";
    /// `spec.http.domain` is not a host name.
    pub const INVALID_HOST: &str = "InvalidHost";
    /// The Route is being deleted.
    pub const DELETING: &str = "Deleting";
    /// CertificateReady: the certificate is valid for the host and used.
    pub const CERTIFICATE_VALID: &str = "Valid";
    /// CertificateReady: no `kubernetes.io/tls` Secret of that name in the Route's namespace.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// CertificateReady: the router may not read Secrets in the namespace (yet); it retries.
    pub const SECRET_ACCESS_PENDING: &str = "SecretAccessPending";
    /// CertificateReady: the certificate's names (SAN dNSName) do not cover the host.
    pub const HOST_NOT_COVERED: &str = "HostNotCovered";
    /// CertificateReady: the private key is not the certificate's.
    pub const KEY_MISMATCH: &str = "KeyMismatch";
    /// CertificateReady: `tls.crt` or `tls.key` cannot be read as PEM.
    pub const MALFORMED: &str = "Malformed";
    /// Resource: the provider has made the store and the App's Release carries its URL.
    pub const PROVISIONED: &str = "Provisioned";
    /// Resource: the provider is making the store, or the Release with its URL.
    pub const PROVISIONING: &str = "Provisioning";
    /// Resource: the provider's service (the platform's Postgres) cannot be reached or
    /// refused; the operator retries.
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
    /// Resource: `spec.app` names no App in the namespace.
    pub const APP_NOT_FOUND: &str = "AppNotFound";
    /// Resource: an older Resource of the App gives its URL under the same config var.
    pub const ENV_CONFLICT: &str = "EnvConflict";
    /// Resource: `spec.plan` is not one of the provider's plans.
    pub const UNKNOWN_PLAN: &str = "UnknownPlan";
    /// Resource: the provider is not enabled on this platform.
    pub const PROVIDER_DISABLED: &str = "ProviderDisabled";
}

/// `status` values of a condition.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known (yet).
    pub const UNKNOWN: &str = "Unknown";
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status::TRUE)
}

/// Sets a condition the way `meta.SetStatusCondition` does in Go: replaces the entry of the
/// same type, keeping its `lastTransitionTime` unless `status` changed; appends a new type.
/// Returns whether anything changed, so callers can skip a no-op status write.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
    }
}

/// Builds a condition; `now` is only used as `lastTransitionTime` if [`set`] sees a change.
pub fn new(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { status::TRUE } else { status::FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn set_appends_new_types() {
        let mut conds = vec![];
        assert!(set(
            &mut conds,
            new(
                types::READY,
                false,
                reasons::NO_RELEASE,
                "nothing pushed",
                Some(1),
                at(1)
            )
        ));
        assert!(set(
            &mut conds,
            new(
                types::PROGRESSING,
                false,
                reasons::NO_RELEASE,
                "",
                Some(1),
                at(1)
            )
        ));
        assert_eq!(conds.len(), 2);
        assert!(!is_true(&conds, types::READY));
        assert!(find(&conds, types::DEGRADED).is_none());
    }

    #[test]
    fn set_keeps_transition_time_while_status_is_unchanged() {
        let mut conds = vec![new(
            types::READY,
            true,
            reasons::AVAILABLE,
            "web=1/1",
            Some(1),
            at(1),
        )];
        // Same status, new message and generation: updated, but the transition time stays.
        assert!(set(
            &mut conds,
            new(
                types::READY,
                true,
                reasons::AVAILABLE,
                "web=2/2",
                Some(2),
                at(5)
            )
        ));
        assert_eq!(conds[0].last_transition_time, at(1));
        assert_eq!(conds[0].message, "web=2/2");
        // Nothing new at all: no change reported.
        assert!(!set(
            &mut conds,
            new(
                types::READY,
                true,
                reasons::AVAILABLE,
                "web=2/2",
                Some(2),
                at(9)
            )
        ));
        // Status flips: the transition time moves.
        assert!(set(
            &mut conds,
            new(
                types::READY,
                false,
                reasons::ROLLING_OUT,
                "web=1/2",
                Some(3),
                at(10)
            )
        ));
        assert_eq!(conds[0].last_transition_time, at(10));
        assert!(!is_true(&conds, types::READY));
    }
}
