//! Host names as Routes claim them: one normal form, so the operator and the router compare the
//! same strings (`Shop.Example.com.` and `shop.example.com` are one host), and a refusal for
//! anything that is not a DNS name or a one-label wildcard.
//!
//! The CRD's schema already refuses most malformed domains; this is the same rule for objects
//! that predate the schema and for code that builds hosts itself.

use std::fmt;

/// Longest DNS name, without the trailing dot (RFC 1035 section 2.3.4).
pub const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a domain is not a host a Route may claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing (or only a dot) was given.
    #[error("the domain is empty")]
    Empty,
    /// Over 253 characters.
    #[error("the domain is {0} characters long; at most {MAX_HOST_LEN} are allowed")]
    TooLong(usize),
    /// An empty label (`a..b`, a leading dot, two trailing dots).
    #[error("the domain has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    /// A label over 63 characters.
    #[error("the label {0:?} is longer than {MAX_LABEL_LEN} characters")]
    LabelTooLong(String),
    /// A character other than a-z, 0-9 and `-`, or a `-` at a label's start or end.
    #[error(
        "the label {0:?} is not a DNS label (letters, digits and '-', not at the start or end)"
    )]
    BadLabel(String),
    /// `*` other than as the whole left-most label (`a*.x`, `a.*.x`).
    #[error("'*' is allowed only as the whole left-most label, as in *.example.com")]
    MisplacedWildcard,
    /// `*` alone, or `*.` followed by nothing.
    #[error("a wildcard needs a domain after '*.', as in *.example.com")]
    BareWildcard,
    /// `*.com`: a wildcard over a top-level domain would claim every name under it that
    /// no one holds yet (and every such name's traffic once its owner points DNS here).
    #[error(
        "a wildcard must cover a domain of at least two labels, as in *.example.com: *.{0} would claim every unclaimed name under .{0}"
    )]
    WildcardTooBroad(String),
}

/// A normalised host: lower case, no trailing dot, every label valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// One name, e.g. `shop.example.com`.
    Exact(String),
    /// `*.<suffix>`: every name of exactly one more label, e.g. `a.example.com` for
    /// suffix `example.com` (not `a.b.example.com`, not `example.com` itself).
    Wildcard(String),
}

impl Host {
    /// Parses a Route's domain: ASCII case folded, one trailing dot dropped, then checked.
    pub fn parse(domain: &str) -> Result<Self, HostError> {
        let lowered = domain.to_ascii_lowercase();
        let name = lowered.strip_suffix('.').unwrap_or(&lowered);
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        if name.len() > MAX_HOST_LEN {
            return Err(HostError::TooLong(name.len()));
        }
        let (wildcard, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None if name == "*" => return Err(HostError::BareWildcard),
            None => (false, name),
        };
        if wildcard && rest.is_empty() {
            return Err(HostError::BareWildcard);
        }
        for label in rest.split('.') {
            check_label(label)?;
        }
        if wildcard && !rest.contains('.') {
            return Err(HostError::WildcardTooBroad(rest.to_owned()));
        }
        Ok(if wildcard {
            Self::Wildcard(rest.to_owned())
        } else {
            Self::Exact(rest.to_owned())
        })
    }

    /// Whether this is a `*.` wildcard.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Self::Wildcard(_))
    }

    /// For an exact host, the suffix a wildcard covering it would have (`a.example.com` →
    /// `example.com`); `None` for a single-label host. For a wildcard, its suffix.
    pub fn wildcard_suffix(&self) -> Option<&str> {
        match self {
            Self::Exact(name) => name.split_once('.').map(|(_, parent)| parent),
            Self::Wildcard(suffix) => Some(suffix),
        }
    }

    /// Whether this host (exact or wildcard) matches the exact name `name` (normalised).
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Self::Exact(own) => own == name,
            Self::Wildcard(suffix) => name
                .split_once('.')
                .is_some_and(|(label, parent)| !label.is_empty() && parent == suffix),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// A host for comparisons, or `None` if malformed: what lookups of client-supplied names use.
pub fn normalize(domain: &str) -> Option<String> {
    Host::parse(domain).ok().map(|h| h.to_string())
}

fn check_label(label: &str) -> Result<(), HostError> {
    if label.is_empty() {
        return Err(HostError::EmptyLabel);
    }
    if label == "*" {
        return Err(HostError::MisplacedWildcard);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(HostError::LabelTooLong(label.to_owned()));
    }
    let ok = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if ok {
        Ok(())
    } else if label.contains('*') {
        Err(HostError::MisplacedWildcard)
    } else {
        Err(HostError::BadLabel(label.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_one_trailing_dot_are_normalised() {
        let want = Host::Exact("shop.example.com".into());
        assert_eq!(Host::parse("shop.example.com"), Ok(want.clone()));
        assert_eq!(Host::parse("Shop.EXAMPLE.com."), Ok(want));
        assert_eq!(
            Host::parse("*.Example.com."),
            Ok(Host::Wildcard("example.com".into()))
        );
        // Two trailing dots are not a name.
        assert_eq!(
            Host::parse("shop.example.com.."),
            Err(HostError::EmptyLabel)
        );
    }

    #[test]
    fn malformed_domains_are_refused_beside_valid_twins() {
        let refused = [
            ("", HostError::Empty),
            (".", HostError::Empty),
            ("*", HostError::BareWildcard),
            ("*.", HostError::BareWildcard),
            ("a..b", HostError::EmptyLabel),
            (".a.b", HostError::EmptyLabel),
            ("a.*.b", HostError::MisplacedWildcard),
            ("a*.b", HostError::MisplacedWildcard),
            ("**.b", HostError::MisplacedWildcard),
            ("-a.b", HostError::BadLabel("-a".into())),
            ("a_b.c", HostError::BadLabel("a_b".into())),
            ("shöp.example", HostError::BadLabel("shöp".into())),
            ("*.com", HostError::WildcardTooBroad("com".into())),
            ("*.COM.", HostError::WildcardTooBroad("com".into())),
        ];
        for (domain, err) in refused {
            assert_eq!(Host::parse(domain), Err(err), "{domain:?}");
        }
        for twin in ["a", "a.b", "*.a.b", "a-b.c", "x1.b", "a.b.", "com"] {
            assert!(Host::parse(twin).is_ok(), "{twin:?}");
        }
        let long_label = "a".repeat(64);
        assert!(matches!(
            Host::parse(&format!("{long_label}.x")),
            Err(HostError::LabelTooLong(_))
        ));
        assert!(Host::parse(&format!("{}.x", &long_label[1..])).is_ok());
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert_eq!(Host::parse(&long), Err(HostError::TooLong(255)));
        assert!(Host::parse(&long[2..]).is_ok());
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        let w = Host::parse("*.example.com").unwrap();
        assert!(w.covers("a.example.com"));
        assert!(!w.covers("a.b.example.com"));
        assert!(!w.covers("example.com"));
        assert!(!w.covers("aexample.com"));
        let e = Host::parse("a.example.com").unwrap();
        assert_eq!(e.wildcard_suffix(), Some("example.com"));
        assert_eq!(Host::parse("localhost").unwrap().wildcard_suffix(), None);
    }
}
