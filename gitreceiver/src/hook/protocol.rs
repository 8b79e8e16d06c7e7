//! What the hook and the receiver say to each other: newline-delimited JSON. The hook sends
//! one [`Request`]; the receiver answers with [`Reply::Line`]s and ends with one
//! [`Reply::Done`]. A connection that closes without `Done` is a failure.

use serde::{Deserialize, Serialize};

/// One line of the hook's stdin: `<old> <new> <ref>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
}

/// The object id git uses for "no object" (ref created or deleted).
pub const ZERO_ID: &str = "0000000000000000000000000000000000000000";

impl RefUpdate {
    /// Parses a line of the pre-receive hook's input.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split(' ');
        let (old, new, ref_name) = (parts.next()?, parts.next()?, parts.next()?);
        let is_id = |s: &str| s.len() >= 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
        (parts.next().is_none() && is_id(old) && is_id(new) && !ref_name.is_empty()).then(|| Self {
            old: old.into(),
            new: new.into(),
            ref_name: ref_name.into(),
        })
    }

    /// Whether the update deletes the ref.
    pub fn is_delete(&self) -> bool {
        self.new.bytes().all(|b| b == b'0')
    }
}

/// The hook's request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub token: String,
    pub updates: Vec<RefUpdate>,
    /// `GIT_QUARANTINE_PATH`: where the pushed objects wait until the hook accepts.
    pub quarantine: Option<String>,
}

/// The receiver's answers.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A line for the pusher's terminal.
    Line(String),
    /// The verdict: accept the push or reject it.
    Done { accept: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hook_input() {
        let a = "a".repeat(40);
        let u = RefUpdate::parse(&format!("{ZERO_ID} {a} refs/heads/main")).unwrap();
        assert_eq!(u.ref_name, "refs/heads/main");
        assert!(!u.is_delete());
        assert!(
            RefUpdate::parse(&format!("{a} {ZERO_ID} refs/heads/x"))
                .unwrap()
                .is_delete()
        );
        assert_eq!(RefUpdate::parse("x y z"), None);
        assert_eq!(RefUpdate::parse(&format!("{a} {a}")), None);
    }

    #[test]
    fn replies_are_one_json_line() {
        let s = serde_json::to_string(&Reply::Line("a\nb".into())).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Reply>(&s).unwrap(),
            Reply::Line("a\nb".into())
        );
        assert_eq!(
            serde_json::to_string(&Reply::Done { accept: true }).unwrap(),
            r#"{"done":{"accept":true}}"#
        );
    }
}
