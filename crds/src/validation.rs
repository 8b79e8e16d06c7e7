//! Name rules, shared by the CRD schema (as regular expressions the API server checks) and by
//! Rust code that builds names before they reach the API server (the CLI, gitreceiver).
//!
//! Why these limits:
//!
//! - An **App name** prefixes the names of the Services the operator creates (`<app>-<process>`),
//!   and Service names are RFC 1035 labels: lower-case letters, digits and `-`, starting with a
//!   letter, at most 63 characters. An App name is therefore an RFC 1035 label of at most
//!   [`MAX_APP_NAME_LEN`] (30) characters.
//! - A **process type** (`web`, `worker`, ...) is the other half of that name, so it is an
//!   RFC 1123 label of at most [`MAX_PROCESS_TYPE_LEN`] (32) characters: 30 + `-` + 32 = 63, which
//!   also keeps `<app>-<process>` usable as a label value.
//! - An **environment variable name** is a C identifier (`[A-Za-z_][A-Za-z0-9_]*`), the names a
//!   shell can `export` and every buildpack can read. Kubernetes itself accepts more; we don't,
//!   because `flynn env set` must round-trip through `sh`.

use std::fmt;

/// RFC 1123 label: lower-case alphanumerics and `-`, starting and ending with an alphanumeric.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// RFC 1035 label: an RFC 1123 label that starts with a letter. App names follow it.
pub const APP_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// Environment variable names: C identifiers.
pub const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// RFC 1123 subdomain (object names such as Secrets and Releases).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";
/// A route domain: a lower-case DNS name, optionally with one leading wildcard label (`*.example.com`).
///
/// Each label is at most 63 characters (RFC 1035), as [`crate::host::Host::parse`] checks:
/// the API server must refuse what the operator and the router would refuse.
pub const DOMAIN_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";
/// An IANA service name as Kubernetes uses for port names: an RFC 1123 label with at least one letter.
pub const PORT_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A hex-encoded SHA-256 digest, lower case.
pub const SHA256_PATTERN: &str = "^[a-f0-9]{64}$";

/// Longest App name: `<app>-<process>` must fit in a 63-character label.
pub const MAX_APP_NAME_LEN: usize = 30;
/// Longest process type name: `<app>-<process>` must fit in a 63-character label.
pub const MAX_PROCESS_TYPE_LEN: usize = 32;
/// Longest RFC 1123 label.
pub const MAX_DNS_LABEL_LEN: usize = 63;
/// Longest port name (IANA service name).
pub const MAX_PORT_NAME_LEN: usize = 15;

/// What kind of name was checked; decides the rule and the wording of the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// A plain RFC 1123 label.
    DnsLabel,
    /// An App name (RFC 1035 label, at most [`MAX_APP_NAME_LEN`]).
    App,
    /// A process type (RFC 1123 label, at most [`MAX_PROCESS_TYPE_LEN`]).
    ProcessType,
    /// An environment variable name (C identifier).
    EnvVar,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::DnsLabel => "DNS label",
            NameKind::App => "app name",
            NameKind::ProcessType => "process type",
            NameKind::EnvVar => "environment variable name",
        })
    }
}

/// What is wrong with a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The name is empty.
    Empty,
    /// The name is longer than `max` characters.
    TooLong {
        /// The limit for this kind of name.
        max: usize,
    },
    /// The first character is not allowed there.
    BadStart(char),
    /// The last character is not allowed there.
    BadEnd(char),
    /// A character is not allowed anywhere in this kind of name.
    BadChar(char),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("it is empty"),
            Problem::TooLong { max } => write!(f, "it is longer than {max} characters"),
            Problem::BadStart(c) => write!(f, "it starts with {c:?}"),
            Problem::BadEnd(c) => write!(f, "it ends with {c:?}"),
            Problem::BadChar(c) => write!(f, "it contains {c:?}"),
        }
    }
}

/// A name that breaks the rule for its [`NameKind`]; the message says which rule and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {problem}; {}", rule(*.kind))]
pub struct InvalidName {
    /// Which rule was checked.
    pub kind: NameKind,
    /// The offending name.
    pub value: String,
    /// The first problem found.
    pub problem: Problem,
}

/// The rule for a kind of name, phrased as the fix.
fn rule(kind: NameKind) -> String {
    match kind {
        NameKind::DnsLabel => format!(
            "use at most {MAX_DNS_LABEL_LEN} lower-case letters, digits and '-', starting and ending with a letter or digit"
        ),
        NameKind::App => format!(
            "use at most {MAX_APP_NAME_LEN} lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
        ),
        NameKind::ProcessType => format!(
            "use at most {MAX_PROCESS_TYPE_LEN} lower-case letters, digits and '-', starting and ending with a letter or digit (e.g. web, worker)"
        ),
        NameKind::EnvVar => {
            "use letters, digits and '_', not starting with a digit (e.g. DATABASE_URL)".to_owned()
        }
    }
}

/// Checks an RFC 1123 label (at most 63 characters).
pub fn validate_dns_label(name: &str) -> Result<(), InvalidName> {
    check_label(name, NameKind::DnsLabel, MAX_DNS_LABEL_LEN, false)
}

/// Checks an App name: an RFC 1035 label of at most [`MAX_APP_NAME_LEN`] characters.
pub fn validate_app_name(name: &str) -> Result<(), InvalidName> {
    check_label(name, NameKind::App, MAX_APP_NAME_LEN, true)
}

/// Checks a process type: an RFC 1123 label of at most [`MAX_PROCESS_TYPE_LEN`] characters.
pub fn validate_process_type(name: &str) -> Result<(), InvalidName> {
    check_label(name, NameKind::ProcessType, MAX_PROCESS_TYPE_LEN, false)
}

/// Checks an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn validate_env_name(name: &str) -> Result<(), InvalidName> {
    let fail = |problem| {
        Err(InvalidName {
            kind: NameKind::EnvVar,
            value: name.to_owned(),
            problem,
        })
    };
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return fail(Problem::Empty);
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return fail(Problem::BadStart(first));
    }
    match chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        Some(bad) => fail(Problem::BadChar(bad)),
        None => Ok(()),
    }
}

fn check_label(
    name: &str,
    kind: NameKind,
    max: usize,
    letter_first: bool,
) -> Result<(), InvalidName> {
    let fail = |problem| {
        Err(InvalidName {
            kind,
            value: name.to_owned(),
            problem,
        })
    };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let (Some(first), Some(last)) = (name.chars().next(), name.chars().last()) else {
        return fail(Problem::Empty);
    };
    // Report a wrong character before a wrong length: "contains 'A'" is the more useful hint.
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return fail(Problem::BadChar(bad));
    }
    if first == '-' || (letter_first && !first.is_ascii_lowercase()) {
        return fail(Problem::BadStart(first));
    }
    if last == '-' {
        return fail(Problem::BadEnd(last));
    }
    if name.len() > max {
        return fail(Problem::TooLong { max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_follow_rfc_1123() {
        for ok in ["a", "web", "0", "9lives", "a-b", "a--b", &"x".repeat(63)] {
            assert_eq!(validate_dns_label(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("", Problem::Empty),
            ("-a", Problem::BadStart('-')),
            ("a-", Problem::BadEnd('-')),
            ("Web", Problem::BadChar('W')),
            ("a_b", Problem::BadChar('_')),
            ("a.b", Problem::BadChar('.')),
            ("ü", Problem::BadChar('ü')),
        ];
        for (bad, problem) in cases {
            assert_eq!(
                validate_dns_label(bad).unwrap_err().problem,
                problem,
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_dns_label(&"x".repeat(64)).unwrap_err().problem,
            Problem::TooLong { max: 63 }
        );
    }

    #[test]
    fn app_names_start_with_a_letter_and_fit_in_30() {
        assert_eq!(validate_app_name("node-demo"), Ok(()));
        assert_eq!(validate_app_name(&"a".repeat(30)), Ok(()));
        assert_eq!(
            validate_app_name(&"a".repeat(31)).unwrap_err().problem,
            Problem::TooLong { max: 30 }
        );
        assert_eq!(
            validate_app_name("1app").unwrap_err().problem,
            Problem::BadStart('1')
        );
    }

    #[test]
    fn process_types_fit_in_32() {
        assert_eq!(validate_process_type("web"), Ok(()));
        assert_eq!(validate_process_type("2nd"), Ok(()));
        assert_eq!(
            validate_process_type(&"p".repeat(33)).unwrap_err().problem,
            Problem::TooLong { max: 32 }
        );
        // The longest app and the longest process type still make a valid label.
        let name = crate::names::deployment_name(
            &"a".repeat(MAX_APP_NAME_LEN),
            &"p".repeat(MAX_PROCESS_TYPE_LEN),
        );
        assert_eq!(validate_dns_label(&name), Ok(()));
    }

    #[test]
    fn env_names_are_c_identifiers() {
        for ok in ["PORT", "_", "_x1", "database_url", "A1_B2"] {
            assert_eq!(validate_env_name(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("", Problem::Empty),
            ("1X", Problem::BadStart('1')),
            ("A-B", Problem::BadChar('-')),
            ("A B", Problem::BadChar(' ')),
            ("A=B", Problem::BadChar('=')),
        ];
        for (bad, problem) in cases {
            assert_eq!(
                validate_env_name(bad).unwrap_err().problem,
                problem,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong_and_how_to_fix_it() {
        let err = validate_app_name("My_App").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid app name \"My_App\": it contains 'M'; use at most 30 lower-case letters, digits and '-', \
             starting with a letter and ending with a letter or digit"
        );
        let err = validate_env_name("1X").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid environment variable name \"1X\": it starts with '1'; "),
            "{err}"
        );
    }
}
