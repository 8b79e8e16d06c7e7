//! How Flynn's pods pass the Pod Security Standard "restricted": the security contexts of app
//! processes (the operator's Deployments), one-off pods (`flynn run`) and build Jobs (the git
//! receiver), the user the slug images run as, and what the kubelet's refusal of a root image
//! means for a user.
//!
//! Every pod Flynn makes for an app runs with `runAsNonRoot: true` and the runtime's default
//! seccomp profile; every container with `allowPrivilegeEscalation: false` and no
//! capabilities. Slugs run as [`SLUG_USER`], the slugbuilder's and slugrunner's own user. An
//! image's own user is kept (no uid is forced on it), so an image that runs as root is
//! refused by the kubelet before it starts: [`explain_non_root_refusal`] turns that refusal
//! into what to change.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// The uid and gid slugs are built and run as: the user of the slugbuilder and slugrunner
/// images (builder/image/Containerfile.*), which own `/app` (the slug's directory and
/// `HOME`). Build Jobs and slug processes set it as `runAsUser`, `runAsGroup` and `fsGroup`.
pub const SLUG_USER: i64 = 1000;

/// The namespace label Pod Security admission enforces (value: [`RESTRICTED`], `baseline`
/// or `privileged`).
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The namespace label pinning the version of the enforced profile (`latest`, `v1.34`).
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
/// The strictest Pod Security level, the one every Flynn pod passes.
pub const RESTRICTED: &str = "restricted";

/// The pod-level security context: never root, the runtime's default seccomp profile, and,
/// with `user` (slugs: [`SLUG_USER`]), that uid as user, group and fsGroup. Without `user`
/// the image's own user applies, and the kubelet refuses to start it if that is root.
pub fn pod_security_context(user: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: user,
        run_as_group: user,
        fs_group: user,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container-level security context: no privilege escalation (setuid binaries stay
/// unprivileged), every capability dropped. The root filesystem stays writable: apps write
/// to `/app` and `/tmp` as they did on Flynn and Heroku.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What to tell a user when the kubelet refused to start a container because of
/// `runAsNonRoot` (the message of its `CreateContainerConfigError`), or `None` when
/// `kubelet_message` is about something else.
pub fn explain_non_root_refusal(kubelet_message: &str) -> Option<String> {
    const FIX: &str = "Flynn runs image apps as the image's own user and never as root: \
        set a numeric non-root user in the image (e.g. `USER 10001:10001` in its Containerfile, \
        with the files it writes owned by that user) and deploy it again";
    if kubelet_message.contains("image will run as root") {
        return Some(format!("the image runs as root. {FIX}"));
    }
    if let Some(rest) = kubelet_message.split("image has non-numeric user (").nth(1) {
        let user = rest.split(')').next().unwrap_or_default();
        return Some(format!(
            "the image's user {user:?} is a name, so the kubelet cannot tell it is not root. {FIX}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slugs_run_as_the_slug_user_and_images_as_their_own() {
        let slug = serde_json::to_value(pod_security_context(Some(SLUG_USER))).unwrap();
        assert_eq!(
            slug,
            json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                   "seccompProfile": {"type": "RuntimeDefault"}})
        );
        let image = serde_json::to_value(pod_security_context(None)).unwrap();
        assert_eq!(
            image,
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        let container = serde_json::to_value(container_security_context()).unwrap();
        assert_eq!(
            container,
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
        );
    }

    #[test]
    fn the_kubelets_non_root_refusals_say_what_to_change() {
        // The kubelet's messages (pkg/kubelet/kuberuntime/security_context_others.go).
        let root = explain_non_root_refusal(
            "container has runAsNonRoot and image will run as root (pod: \"shop-web-1_ns(uid)\", container: web)",
        )
        .unwrap();
        assert!(root.starts_with("the image runs as root."), "{root}");
        assert!(root.contains("USER 10001:10001"), "{root}");
        let named = explain_non_root_refusal(
            "container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: \"p\", container: web)",
        )
        .unwrap();
        assert!(
            named.starts_with("the image's user \"app\" is a name"),
            "{named}"
        );
        assert!(named.contains("numeric non-root user"), "{named}");
        assert_eq!(
            explain_non_root_refusal("secret \"db\" not found"),
            None,
            "other config errors are not about the user"
        );
    }
}
