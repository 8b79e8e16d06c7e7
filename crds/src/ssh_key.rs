//! The SSH key registry's Secret format (gitreceiver/README.md, "The SSH key registry"),
//! shared by `flynn key add` (which writes it), the git receiver (which reads it) and the
//! chart's admission policy (which checks it with the same rules, in CEL).
//!
//! Groups are a list, one group per line of the [`GROUPS`] annotation, exactly as the API
//! server lists them. The comma-joined [`OLD_GROUPS`] of the first format was ambiguous: a
//! group named `devs,system:masters` read back as two groups, the second one the cluster's
//! admins. A group that cannot be written one per line (a newline or another control
//! character in its name) is refused, by [`encode_groups`], by [`decode_groups`] and by the
//! admission policy.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The Secret type of a registered key.
pub const SECRET_TYPE: &str = "flynn.io/ssh-public-key";
/// The label the receiver watches (`"true"`).
pub const LABEL: &str = "flynn.io/ssh-key";
/// Annotation: the Kubernetes user name the key belongs to.
pub const USER: &str = "flynn.io/user";
/// Annotation: the user's groups, one per line, in the API server's order.
pub const GROUPS: &str = "flynn.io/group-list";
/// Annotation of the first format (groups comma-joined): no longer read, and refused by the
/// admission policy.
pub const OLD_GROUPS: &str = "flynn.io/groups";
/// Annotation, optional: when the key stops working, RFC 3339 (`2027-03-01T00:00:00Z`).
pub const EXPIRES: &str = "flynn.io/expires";
/// Annotation: the key's fingerprint as `ssh-keygen -lf` prints it (`SHA256:...`).
pub const FINGERPRINT: &str = "flynn.io/fingerprint";
/// Data key: the `authorized_keys` line.
pub const PUBLIC_KEY: &str = "publicKey";

/// A group name that cannot be stored on a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("an empty group name cannot be registered on an SSH key")]
    Empty,
    #[error(
        "group {0:?} has a newline or another control character in its name, so it cannot be registered on an SSH key (one group per line): ask the cluster admin to rename it"
    )]
    ControlCharacter(String),
}

fn check_group(group: &str) -> Result<(), GroupError> {
    if group.is_empty() {
        Err(GroupError::Empty)
    } else if group.chars().any(char::is_control) {
        Err(GroupError::ControlCharacter(group.to_owned()))
    } else {
        Ok(())
    }
}

/// The [`GROUPS`] annotation's value for `groups`: one per line, in order.
pub fn encode_groups<S: AsRef<str>>(groups: &[S]) -> Result<String, GroupError> {
    for g in groups {
        check_group(g.as_ref())?;
    }
    Ok(groups
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The groups of a [`GROUPS`] annotation: exactly its lines (no trimming, no splitting on
/// anything else); the empty string is no groups.
pub fn decode_groups(value: &str) -> Result<Vec<String>, GroupError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split('\n')
        .map(|g| check_group(g).map(|()| g.to_owned()))
        .collect()
}

/// The [`EXPIRES`] annotation's value: an RFC 3339 timestamp.
pub fn parse_expires(value: &str) -> Result<Timestamp, String> {
    value.trim().parse::<Timestamp>().map_err(|e| {
        format!("{EXPIRES} {value:?} is not an RFC 3339 time (like 2027-03-01T00:00:00Z): {e}")
    })
}

/// `flynn key add --expires`: a duration from `now` (`90d`, `12h`, `30m`) or an RFC 3339
/// time; it must be in the future.
pub fn expiry_from(value: &str, now: Timestamp) -> Result<Timestamp, String> {
    let v = value.trim();
    let unit = |suffix: char, secs: i64| -> Option<Result<i64, String>> {
        v.strip_suffix(suffix).map(|n| {
            n.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .and_then(|n| n.checked_mul(secs))
                .ok_or_else(|| format!("{v:?}: expected a positive whole number before {suffix}"))
        })
    };
    let at = match unit('d', 86_400)
        .or_else(|| unit('h', 3_600))
        .or_else(|| unit('m', 60))
    {
        Some(secs) => now
            .checked_add(SignedDuration::from_secs(secs?))
            .map_err(|e| format!("{v:?}: {e}"))?,
        None => v.parse::<Timestamp>().map_err(|_| {
            format!("--expires {v:?}: write a duration (90d, 12h, 30m) or an RFC 3339 time (2027-03-01T00:00:00Z)")
        })?,
    };
    if at <= now {
        return Err(format!("--expires {v:?} is in the past"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip_as_a_list_and_a_comma_is_part_of_a_name() {
        let groups = ["devs,system:masters", "system:authenticated"];
        let encoded = encode_groups(&groups).unwrap();
        assert_eq!(encoded, "devs,system:masters\nsystem:authenticated");
        assert_eq!(decode_groups(&encoded).unwrap(), groups);
        assert_eq!(decode_groups("").unwrap(), Vec::<String>::new());
        assert_eq!(encode_groups::<&str>(&[]).unwrap(), "");
    }

    #[test]
    fn a_group_that_would_split_into_two_lines_is_refused() {
        let err = encode_groups(&["devs\nsystem:masters"]).unwrap_err();
        assert!(matches!(err, GroupError::ControlCharacter(_)));
        assert!(err.to_string().contains("newline"), "{err}");
        assert!(encode_groups(&["a\rb"]).is_err());
        assert_eq!(encode_groups(&[""]), Err(GroupError::Empty));
        // An empty line (a trailing newline) is not a group of its own.
        assert_eq!(decode_groups("devs\n"), Err(GroupError::Empty));
        assert!(decode_groups("devs\tx").is_err());
    }

    #[test]
    fn expiry_is_a_duration_or_a_time_in_the_future() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        assert_eq!(
            expiry_from("90d", now).unwrap().to_string(),
            "2027-03-07T12:00:00Z"
        );
        assert_eq!(
            expiry_from("12h", now).unwrap().to_string(),
            "2026-12-08T00:00:00Z"
        );
        assert_eq!(
            expiry_from("2027-01-01T00:00:00Z", now)
                .unwrap()
                .to_string(),
            "2027-01-01T00:00:00Z"
        );
        assert!(
            expiry_from("2026-01-01T00:00:00Z", now)
                .unwrap_err()
                .contains("in the past")
        );
        for bad in ["0d", "-1d", "soon", "1.5d", "90"] {
            assert!(expiry_from(bad, now).is_err(), "{bad}");
        }
        assert!(parse_expires("2027-01-01T00:00:00Z").is_ok());
        assert!(parse_expires("next week").is_err());
    }
}
