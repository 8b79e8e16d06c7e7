//! Garbage collection: the store removes what no Release or App needs any more.
//!
//! Why: the operator keeps the newest Releases of an App (its release history) and deletes
//! the rest, and deleting an App deletes its Releases; their slugs, the sources they were
//! built from and the App's build cache stayed in the store for ever, so every push grew it.
//! (Flynn's controller deleted a pruned release's artifacts itself.) The store sweeps on its
//! own, from one list of Releases and one of Apps, cluster-wide, so it needs nothing from the
//! operator and catches every way an object loses its last user.
//!
//! What goes (the paths `gitreceiver` writes; anything else is left alone):
//!
//! | object | path | removed when |
//! | --- | --- | --- |
//! | slug | `/slugs/<namespace>/<app>/<build>.tgz` | no Release's slug URL names it |
//! | source | `/sources/<namespace>/<app>/<commit>.tar.gz` | always: only its build reads it |
//! | build cache | `/cache/<namespace>/<app>.tgz` | App `<namespace>/<app>` does not exist |
//!
//! and only once older than the grace period: a build uploads its slug before the Release
//! naming it exists, and reads its source while it runs. A pass whose lists cannot be read
//! deletes nothing.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flynn_crds::{App, Release};

use super::{Store, StoreError};

/// Why a pass did not finish.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Listing Releases or Apps failed: nothing was deleted.
    #[error("listing {what} failed, so nothing was deleted: {source}")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    /// The store failed; what was deleted before stays deleted.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What still needs objects: every Release's slug path and every App, cluster-wide.
#[derive(Debug, Default)]
pub struct InUse {
    /// Store paths of slugs named by Releases (`/slugs/...`).
    pub slugs: HashSet<String>,
    /// Apps, as `<namespace>/<name>`.
    pub apps: HashSet<String>,
}

impl InUse {
    /// Reads every Release and App the client can list.
    pub async fn list(client: &kube::Client) -> Result<Self, GcError> {
        let list_err = |what| move |source| GcError::List { what, source };
        let releases: Vec<Release> = flynn_crds::list::all(client)
            .await
            .map_err(list_err("Releases"))?;
        let apps: Vec<App> = flynn_crds::list::all(client)
            .await
            .map_err(list_err("Apps"))?;
        Ok(Self {
            slugs: releases
                .iter()
                .filter_map(|r| r.spec.artifact.slug.as_ref())
                .filter_map(|slug| url_path(&slug.url))
                .collect(),
            apps: apps
                .iter()
                .map(|a| {
                    let ns = a.metadata.namespace.as_deref().unwrap_or_default();
                    format!("{ns}/{}", a.metadata.name.as_deref().unwrap_or_default())
                })
                .collect(),
        })
    }

    /// Whether the object at `path` is still needed, age aside.
    pub fn needs(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["slugs", ..] => self.slugs.contains(path),
            ["sources", ..] => false,
            ["cache", ns, file] => file
                .strip_suffix(".tgz")
                .is_none_or(|app| self.apps.contains(&format!("{ns}/{app}"))),
            // Not an object the platform's builds make: not ours to judge.
            _ => true,
        }
    }
}

/// The path of a URL (`http://shelf/slugs/a/b.tgz?sig=..` → `/slugs/a/b.tgz`).
fn url_path(url: &str) -> Option<String> {
    url.parse::<http::Uri>().ok().map(|u| u.path().to_owned())
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Objects looked at.
    pub seen: usize,
    /// Paths deleted.
    pub deleted: Vec<String>,
}

/// Deletes, from `store`, the objects `in_use` does not need that are older than `grace`.
pub async fn sweep(store: &Store, in_use: &InUse, grace: Duration) -> Result<Swept, GcError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let cutoff = now.saturating_sub(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
    let mut swept = Swept::default();
    for prefix in ["slugs", "sources", "cache"] {
        for (path, written) in store.list(prefix).await? {
            swept.seen += 1;
            let full = format!("/{}", path.as_str());
            if written > cutoff || in_use.needs(&full) {
                continue;
            }
            if store.delete(&path).await? {
                swept.deleted.push(full);
            }
        }
    }
    Ok(swept)
}

/// One pass: lists what is in use, then sweeps.
pub async fn collect(
    client: &kube::Client,
    store: &Store,
    grace: Duration,
) -> Result<Swept, GcError> {
    let in_use = InUse::list(client).await?;
    sweep(store, &in_use, grace).await
}

/// Runs a pass every `interval` until the process ends; failures are logged and the next
/// pass tries again.
pub async fn run(client: kube::Client, store: Store, interval: Duration, grace: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match collect(&client, &store, grace).await {
            Ok(swept) => tracing::info!(
                seen = swept.seen,
                deleted = swept.deleted.len(),
                "garbage collection pass done"
            ),
            Err(e) => tracing::warn!(error = %e, "garbage collection pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_still_needed() {
        let in_use = InUse {
            slugs: HashSet::from(["/slugs/team/shop/b1.tgz".to_owned()]),
            apps: HashSet::from(["team/shop".to_owned()]),
        };
        assert!(in_use.needs("/slugs/team/shop/b1.tgz"));
        assert!(!in_use.needs("/slugs/team/shop/b0.tgz"));
        assert!(!in_use.needs("/sources/team/shop/abc.tar.gz"));
        assert!(in_use.needs("/cache/team/shop.tgz"));
        assert!(!in_use.needs("/cache/team/gone.tgz"));
        assert!(!in_use.needs("/cache/other/shop.tgz"));
        // Paths the builds do not make are left alone.
        assert!(in_use.needs("/backups/x.tgz"));
        assert!(in_use.needs("/cache/team/shop/extra.tgz"));
    }

    #[test]
    fn slug_urls_name_store_paths() {
        assert_eq!(
            url_path("http://shelf.flynn-system/slugs/team/shop/b1.tgz?sig=abc").as_deref(),
            Some("/slugs/team/shop/b1.tgz")
        );
        assert_eq!(url_path("not a url"), None);
    }
}
