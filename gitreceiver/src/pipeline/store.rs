//! Where a build's objects live in the slug store, and the capability URLs the build Job
//! gets for them.
//!
//! Paths (every segment is a DNS label or hex, so always a valid store path):
//!
//! | object | path | who writes | URL the Job gets |
//! | --- | --- | --- | --- |
//! | source | `/sources/<namespace>/<app>/<commit>.tar.gz` | the receiver (token) | read, expires |
//! | slug | `/slugs/<namespace>/<app>/<build id>.tgz` | the Job | read+write, expires |
//! | slug, for the Release | same | nobody | read, no expiry |
//! | cache | `/cache/<namespace>/<app>.tgz` | the Job | read+write, expires |
//!
//! The namespace is in every path because App names are only unique per namespace. A slug
//! is named by its build, not its commit: rebuilding a commit must not overwrite the slug
//! an existing Release names (its sha256 would no longer match, and rollback would break).
//! A source is named by its commit: the same commit is the same source.

use flynn_builder::signing::{Access, SigningKey, unix_now};

/// The store paths of one build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildPaths {
    pub source: String,
    pub slug: String,
    pub cache: String,
}

impl BuildPaths {
    pub fn new(namespace: &str, app: &str, commit: &str, build_id: &str) -> Self {
        Self {
            source: format!("/sources/{namespace}/{app}/{commit}.tar.gz"),
            slug: format!("/slugs/{namespace}/{app}/{build_id}.tgz"),
            cache: format!("/cache/{namespace}/{app}.tgz"),
        }
    }
}

/// The URLs a build Job is given, all as pods reach the store.
#[derive(Clone, Debug)]
pub struct BuildUrls {
    /// `SOURCE_URL`: read the source, until the build's deadline.
    pub source: String,
    /// `SLUG_PUT_URL`: write the slug, until the build's deadline.
    pub slug_put: String,
    /// `SLUG_URL`: read the slug, forever (the Release's URL: a rollback a year later must
    /// still start).
    pub slug: String,
    /// `CACHE_URL`: read and write the App's build cache, until the build's deadline.
    pub cache: String,
}

impl BuildUrls {
    /// Signs the URLs of `paths` under `pod_base`; the expiring ones last `valid_for`.
    pub fn sign(
        key: &SigningKey,
        pod_base: &str,
        paths: &BuildPaths,
        valid_for: std::time::Duration,
    ) -> Self {
        let expires = Some(unix_now() + valid_for.as_secs());
        Self {
            source: key.signed_url(pod_base, &paths.source, Access::Read, expires),
            slug_put: key.signed_url(pod_base, &paths.slug, Access::ReadWrite, expires),
            slug: key.signed_url(pod_base, &paths.slug, Access::Read, None),
            cache: key.signed_url(pod_base, &paths.cache, Access::ReadWrite, expires),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flynn_builder::signing::Capability;

    #[test]
    fn paths_are_per_namespace_and_slugs_per_build() {
        let p = BuildPaths::new("team", "shop", "abc123", "shop-build-abc1234-x1y2z");
        assert_eq!(p.source, "/sources/team/shop/abc123.tar.gz");
        assert_eq!(p.slug, "/slugs/team/shop/shop-build-abc1234-x1y2z.tgz");
        assert_eq!(p.cache, "/cache/team/shop.tgz");
        for path in [&p.source, &p.slug, &p.cache] {
            flynn_builder::store::ObjectPath::parse(path).unwrap();
        }
    }

    fn cap(url: &str) -> Capability<'_> {
        Capability::from_query(url.split_once('?').unwrap().1)
    }

    #[test]
    fn urls_grant_only_what_the_job_needs() {
        let key = SigningKey::new(b"0123456789abcdef0123");
        let p = BuildPaths::new("ns", "app", "c0ffee", "b1");
        let u = BuildUrls::sign(
            &key,
            "http://shelf:8080/",
            &p,
            std::time::Duration::from_secs(60),
        );
        assert!(
            u.source
                .starts_with("http://shelf:8080/sources/ns/app/c0ffee.tar.gz?")
        );
        assert!(key.verify(&p.source, Access::Read, &cap(&u.source)));
        assert!(!key.verify(&p.source, Access::ReadWrite, &cap(&u.source)));
        assert!(key.verify(&p.slug, Access::ReadWrite, &cap(&u.slug_put)));
        assert!(key.verify(&p.cache, Access::ReadWrite, &cap(&u.cache)));
        // The Release's URL: read-only, no expiry.
        assert!(!u.slug.contains("expires="), "{}", u.slug);
        assert!(key.verify(&p.slug, Access::Read, &cap(&u.slug)));
        assert!(!key.verify(&p.slug, Access::ReadWrite, &cap(&u.slug)));
    }
}
