//! May this key's user push to this App? A SubjectAccessReview (create `releases.flynn.io`
//! in the App's namespace, as the user with their groups), then the App must exist. The
//! review's answer is looked at first so that someone without access learns nothing about
//! which Apps exist.

use flynn_crds::App;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::command::RepoPath;
use crate::keys::Identity;
use crate::outcome::PushOutcome;

/// Why a push is not allowed; `Display` is the one line the pusher reads.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error(
        "user {user:?} may not push to {namespace}/{app}: it needs `create` on releases.flynn.io in namespace {namespace:?}{reason}; an admin can grant it with `kubectl create role flynn-deployer -n {namespace} --verb=create,get,list --resource=releases.flynn.io,apps.flynn.io` and `kubectl create rolebinding {user_slug}-deploys -n {namespace} --role=flynn-deployer --user={user}`"
    )]
    Forbidden {
        user: String,
        user_slug: String,
        namespace: String,
        app: String,
        reason: String,
    },
    #[error(
        "there is no app {app:?} in namespace {namespace:?}: create it first (`flynn create {app}`, or `kubectl apply` an App), or check the remote's URL"
    )]
    UnknownApp { namespace: String, app: String },
    #[error("could not check access with the Kubernetes API (try again): {0}")]
    Api(#[source] kube::Error),
}

impl Denied {
    /// How the push it stops ended.
    pub fn outcome(&self) -> PushOutcome {
        match self {
            Denied::Forbidden { .. } => PushOutcome::Forbidden,
            Denied::UnknownApp { .. } => PushOutcome::UnknownApp,
            Denied::Api(_) => PushOutcome::Error,
        }
    }
}

/// Checks pushes against the API server.
#[derive(Clone)]
pub struct Authorizer {
    client: Client,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Allows the push, or says why not.
    pub async fn authorize(&self, who: &Identity, repo: &RepoPath) -> Result<(), Denied> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(repo.namespace.clone()),
                    verb: Some("create".into()),
                    group: Some(flynn_crds::GROUP.into()),
                    resource: Some("releases".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        // Both questions at once (one round trip less per push); the review's answer is
        // looked at first, so a denied user learns nothing about the App.
        let reviews = Api::<SubjectAccessReview>::all(self.client.clone());
        let apps: Api<App> = Api::namespaced(self.client.clone(), &repo.namespace);
        let post = PostParams::default();
        let (answer, app) = tokio::join!(reviews.create(&post, &review), apps.get_opt(&repo.app));
        let status = answer.map_err(Denied::Api)?.status.unwrap_or_default();
        if !status.allowed {
            let reason = status
                .reason
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(Denied::Forbidden {
                user: who.user.clone(),
                user_slug: slug(&who.user),
                namespace: repo.namespace.clone(),
                app: repo.app.clone(),
                reason,
            });
        }
        match app.map_err(Denied::Api)? {
            Some(_) => Ok(()),
            None => Err(Denied::UnknownApp {
                namespace: repo.namespace.clone(),
                app: repo.app.clone(),
            }),
        }
    }
}

/// A user name as a piece of an object name (`alice@example.com` → `alice-example-com`).
fn slug(user: &str) -> String {
    let mut s = String::new();
    for c in user.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-');
    if s.is_empty() {
        "user".into()
    } else {
        s.chars().take(40).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_fix_on_one_line() {
        let e = Denied::Forbidden {
            user: "alice@example.com".into(),
            user_slug: slug("alice@example.com"),
            namespace: "shop".into(),
            app: "web".into(),
            reason: String::new(),
        }
        .to_string();
        assert!(!e.contains('\n'));
        assert!(
            e.contains("kubectl create rolebinding alice-example-com-deploys -n shop"),
            "{e}"
        );
        assert!(e.contains("--user=alice@example.com"), "{e}");
    }
}
