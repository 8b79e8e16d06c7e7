//! Host and path matching: exact hosts, one-label wildcards (`*.example.com`) and the longest
//! path prefix.
//!
//! A lookup is two hash probes (exact host, then the wildcard parent) and a scan of the paths
//! of one host, longest first: its cost does not depend on how many hosts the table holds.

use std::collections::HashMap;

/// Routes by host, then by longest path prefix.
#[derive(Debug, Clone)]
pub struct HostMatcher<T> {
    exact: HashMap<Box<str>, Paths<T>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<Box<str>, Paths<T>>,
}

impl<T> Default for HostMatcher<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

/// The path prefixes of one host, longest first.
#[derive(Debug, Clone)]
struct Paths<T> {
    entries: Vec<(Box<str>, T)>,
    /// The host belongs to another namespace than the wildcard covering it: a path it does
    /// not route is not the wildcard's either.
    sealed: bool,
}

impl<T> HostMatcher<T> {
    /// Adds `value` for `domain` (exact or `*.` wildcard, any case) and path prefix `path`.
    ///
    /// If the same domain + path is already present the table keeps the first and returns the
    /// new value back as `Err` (the caller decides beforehand who is served, with
    /// `flynn_crds::ownership`, so this is a guard, not the rule).
    pub fn insert(&mut self, domain: &str, path: &str, value: T) -> Result<(), T> {
        let domain = normalize_host(domain);
        let (map, key) = match domain.strip_prefix("*.") {
            Some(parent) => (&mut self.wildcard, parent.to_owned()),
            None => (&mut self.exact, domain.clone()),
        };
        let paths = map.entry(key.into_boxed_str()).or_insert_with(|| Paths {
            entries: Vec::new(),
            sealed: false,
        });
        if paths.entries.iter().any(|(p, _)| &**p == path) {
            return Err(value);
        }
        // Keep longest first so the first hit of a lookup is the longest match.
        let at = paths
            .entries
            .partition_point(|(p, _)| p.len() >= path.len());
        paths.entries.insert(at, (path.into(), value));
        Ok(())
    }

    /// Keeps the wildcard covering the exact `host` (normalised) off it: the host belongs to
    /// another namespace than the wildcard, so its unrouted paths are nobody's.
    pub fn seal(&mut self, host: &str) {
        self.exact
            .entry(host.into())
            .or_insert_with(|| Paths {
                entries: Vec::new(),
                sealed: true,
            })
            .sealed = true;
    }

    /// The value for `host` (a Host header: any case, optional `:port`, optional trailing dot)
    /// and request `path` (without the query). An exact host wins over a wildcard (unless
    /// sealed, only for paths it does not route); within a host the longest matching prefix
    /// wins.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        let host = strip_port(host);
        // Most clients send lower-case hosts: only allocate for the rare other case.
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(paths) = self.exact.get(host) {
            let found = paths.lookup(path);
            if found.is_some() || paths.sealed {
                return found;
            }
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent).and_then(|p| p.lookup(path))
    }

    /// Number of (host, path) entries.
    pub fn len(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .map(|p| p.entries.len())
            .sum()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Paths<T> {
    fn lookup(&self, path: &str) -> Option<&T> {
        self.entries
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, v)| v)
    }
}

/// Whether the route prefix `prefix` covers request path `path`, on segment boundaries:
/// `/api` covers `/api` and `/api/users` but not `/apis`; `/api/` covers only `/api/...`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// `Host: example.com:8080` → `example.com`; IPv6 literals keep their brackets.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A client-supplied name (Host, SNI) for lookups: lower case, without a trailing dot. Route
/// hosts are normalised (and checked) by `flynn_crds::host` before they reach the table.
pub fn normalize_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.strip_suffix('.') {
        Some(h) => h.to_owned(),
        None => host,
    }
}

/// A map from server name (exact or wildcard) to a value, for certificates chosen by SNI.
/// An entry without a value ([`NameMap::refuse`]) stops the fallback to the wildcard: the
/// caller's default (the platform's certificate) is all such a name gets.
#[derive(Debug, Clone)]
pub struct NameMap<T> {
    exact: HashMap<Box<str>, Option<T>>,
    wildcard: HashMap<Box<str>, Option<T>>,
}

impl<T> Default for NameMap<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> NameMap<T> {
    fn slot(&mut self, name: &str) -> &mut Option<T> {
        let name = normalize_host(name);
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.entry(parent.into()).or_default(),
            None => self.exact.entry(name.into_boxed_str()).or_default(),
        }
    }

    /// Adds `value` for `name` unless the name has one (the first value wins over later
    /// ones, and over a refusal).
    pub fn insert(&mut self, name: &str, value: T) {
        self.slot(name).get_or_insert(value);
    }

    /// Marks `name` as having no value, unless it has one: lookups of it find nothing and
    /// do not fall back to the wildcard covering it.
    pub fn refuse(&mut self, name: &str) {
        self.slot(name);
    }

    /// The value for an exact name, else (unless the name is refused) for the wildcard
    /// covering it.
    pub fn get(&self, name: &str) -> Option<&T> {
        let name = normalize_host(name);
        match self.exact.get(name.as_str()) {
            Some(v) => v.as_ref(),
            None => {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)?.as_ref()
            }
        }
    }

    /// Number of names with a value.
    pub fn len(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .filter(|v| v.is_some())
            .count()
    }

    /// Whether there are no names.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HostMatcher<&'static str> {
        let mut t = HostMatcher::default();
        t.insert("example.com", "/", "root").unwrap();
        t.insert("example.com", "/api", "api").unwrap();
        t.insert("example.com", "/api/v2", "api-v2").unwrap();
        t.insert("*.example.com", "/", "wild").unwrap();
        t.insert("*.example.com", "/static/", "wild-static")
            .unwrap();
        t.insert("Other.Example.ORG", "/", "other").unwrap();
        t
    }

    #[test]
    fn exact_host_and_longest_prefix() {
        let t = table();
        assert_eq!(t.lookup("example.com", "/"), Some(&"root"));
        assert_eq!(t.lookup("example.com", "/index.html"), Some(&"root"));
        assert_eq!(t.lookup("example.com", "/api"), Some(&"api"));
        assert_eq!(t.lookup("example.com", "/api/users"), Some(&"api"));
        assert_eq!(t.lookup("example.com", "/api/v2/users"), Some(&"api-v2"));
        assert_eq!(t.lookup("example.com", "/api/v20"), Some(&"api"));
        // Segment boundaries: /apis is not under /api.
        assert_eq!(t.lookup("example.com", "/apis"), Some(&"root"));
    }

    #[test]
    fn hosts_ignore_case_port_and_trailing_dot() {
        let t = table();
        assert_eq!(t.lookup("EXAMPLE.com:8080", "/api"), Some(&"api"));
        assert_eq!(t.lookup("example.com.", "/"), Some(&"root"));
        assert_eq!(t.lookup("other.example.org", "/x"), Some(&"other"));
    }

    #[test]
    fn wildcards_cover_one_label() {
        let t = table();
        assert_eq!(t.lookup("a.example.com", "/"), Some(&"wild"));
        assert_eq!(
            t.lookup("b.example.com", "/static/x.css"),
            Some(&"wild-static")
        );
        // `/static/` ends with a slash: it covers only what is below it.
        assert_eq!(t.lookup("b.example.com", "/static"), Some(&"wild"));
        // Two labels deep is not covered by `*.example.com`.
        assert_eq!(t.lookup("a.b.example.com", "/"), None);
        assert_eq!(t.lookup("nope.org", "/"), None);
    }

    #[test]
    fn exact_host_without_a_matching_path_falls_back_to_the_wildcard() {
        let mut t = HostMatcher::default();
        t.insert("a.example.com", "/only", 1).unwrap();
        t.insert("*.example.com", "/", 2).unwrap();
        assert_eq!(t.lookup("a.example.com", "/only/x"), Some(&1));
        assert_eq!(t.lookup("a.example.com", "/else"), Some(&2));
    }

    #[test]
    fn conflicts_keep_the_first_owner() {
        let mut t = HostMatcher::default();
        t.insert("example.com", "/", "old").unwrap();
        assert_eq!(t.insert("EXAMPLE.COM", "/", "new"), Err("new"));
        assert_eq!(t.lookup("example.com", "/"), Some(&"old"));
        // Same path on a wildcard is a different key.
        t.insert("*.example.com", "/", "wild").unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn name_map_prefers_exact_names() {
        let mut m = NameMap::default();
        m.insert("*.example.com", "wild");
        m.insert("a.example.com", "a");
        assert_eq!(m.get("a.example.com"), Some(&"a"));
        assert_eq!(m.get("B.example.com"), Some(&"wild"));
        assert_eq!(m.get("example.com"), None);
    }

    #[test]
    fn a_refused_name_does_not_fall_back_to_its_wildcard() {
        let mut m = NameMap::default();
        m.insert("*.example.com", "wild");
        m.refuse("shop.example.com");
        assert_eq!(m.get("shop.example.com"), None);
        // Twin: a name not refused still gets the wildcard's.
        assert_eq!(m.get("blog.example.com"), Some(&"wild"));
        // A value beats a refusal, whichever came first.
        m.insert("shop.example.com", "own");
        assert_eq!(m.get("shop.example.com"), Some(&"own"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn a_sealed_host_keeps_its_other_paths_from_the_wildcard() {
        let mut t = HostMatcher::default();
        t.insert("shop.example.com", "/login", "a-login").unwrap();
        t.insert("*.example.com", "/", "b-wild").unwrap();
        t.seal("shop.example.com");
        assert_eq!(t.lookup("shop.example.com", "/login"), Some(&"a-login"));
        assert_eq!(t.lookup("shop.example.com", "/"), None);
        // Twin: an unsealed name under the wildcard is the wildcard's.
        assert_eq!(t.lookup("blog.example.com", "/"), Some(&"b-wild"));
    }

    #[test]
    fn lookup_cost_is_independent_of_the_number_of_hosts() {
        // Not a timing test: a lookup touches one host's paths, however many hosts exist.
        let mut t = HostMatcher::default();
        for i in 0..10_000 {
            t.insert(&format!("app{i}.example.com"), "/", i).unwrap();
        }
        assert_eq!(t.lookup("app9999.example.com", "/x"), Some(&9999));
        assert_eq!(t.len(), 10_000);
    }
}
