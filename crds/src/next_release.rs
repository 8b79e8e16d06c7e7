//! Making the next Release of an App: its version, and the Release with its config snapshot.
//!
//! Every writer of Releases (`git push` through the receiver, `flynn env set`, `flynn limit
//! set`, `flynn deploy`) makes them the same way, here:
//! - the version is one more than the highest of the App's Releases and the one the App
//!   points at (a Release pruned from history still counts while the App names it);
//! - the API server refuses a second Release of one name (`<app>-v<N>`), so when another
//!   writer takes N first this one gets AlreadyExists and tries N+1, a few times;
//! - the config snapshot is made after the Release, which owns it (see [`crate::config`]).

use std::collections::BTreeMap;

use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};

use crate::{App, Release, config, names};

/// How many versions are tried before a race is reported.
const ATTEMPTS: i64 = 5;

/// The next version: one more than the highest of `versions` (0 when there are none).
pub fn next_version(versions: impl IntoIterator<Item = i64>) -> i64 {
    versions.into_iter().max().unwrap_or(0) + 1
}

/// Why the next Release could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// Other writers took every version tried.
    #[error(
        "other releases of app {app} were being made at the same time (last tried v{version}); try again"
    )]
    Race { app: String, version: i64 },
    /// The Release was made but its config snapshot was not: it cannot start. The caller
    /// decides what becomes of it (the CLI deletes it; the receiver may not).
    #[error("creating the config Secret of release {release}: {source}")]
    Snapshot {
        release: String,
        #[source]
        source: kube::Error,
    },
}

/// Creates the next Release of `app` from `make(version)` and its snapshot of `vars`;
/// the Release as created.
pub async fn create(
    client: &kube::Client,
    app: &App,
    vars: &BTreeMap<String, String>,
    params: &PostParams,
    make: impl Fn(i64) -> Release,
) -> Result<Release, Error> {
    let name = app.name_any();
    let releases: Api<Release> =
        Api::namespaced(client.clone(), &app.namespace().unwrap_or_default());
    let pointed = app
        .spec
        .release
        .as_deref()
        .and_then(names::parse_release_name)
        .map(|(_, v)| v);
    let next = || async {
        let existing = releases
            .list(&ListParams::default().fields(&format!("spec.app={name}")))
            .await
            .map_err(|source| Error::Kube {
                action: format!("listing the releases of app {name}"),
                source,
            })?;
        Ok::<_, Error>(next_version(
            existing.items.iter().map(|r| r.spec.version).chain(pointed),
        ))
    };
    let first = next().await?;
    let mut version = first;
    while version < first + ATTEMPTS {
        match releases.create(params, &make(version)).await {
            Ok(release) => {
                config::save(client, &release, vars, params)
                    .await
                    .map_err(|source| Error::Snapshot {
                        release: release.name_any(),
                        source,
                    })?;
                return Ok(release);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::info!(
                    version,
                    "release version taken by another writer; trying the next"
                );
                version = next().await?.max(version + 1);
            }
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("creating release {}", names::release_name(&name, version)),
                    source,
                });
            }
        }
    }
    Err(Error::Race { app: name, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_version_follows_the_highest() {
        assert_eq!(next_version([]), 1);
        assert_eq!(next_version([3, 1, 2]), 4);
        // The App may point at a Release already pruned.
        assert_eq!(next_version([1, 2].into_iter().chain(Some(7))), 8);
    }
}
