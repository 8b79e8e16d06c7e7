//! Procfile parsing.
//!
//! The classic Procfile has no formal specification; this parser takes the common ground of
//! foreman, Heroku's regex and dokku's procfile-util: `type: command` lines, blank lines and
//! `#` comments. Unlike foreman it does not silently skip lines it does not understand: a
//! merge-conflict marker or a typo would otherwise lose a process type without a word, so
//! the build fails and names the line.

use std::{collections::BTreeMap, fmt};

/// Longest process type name: it becomes part of Kubernetes object names (a DNS label).
pub const MAX_TYPE_LEN: usize = 63;

/// A parsed Procfile: process types and their commands, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Procfile {
    entries: Vec<(String, String)>,
}

/// What is wrong with a Procfile line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Procfile line {line}: {problem}")]
pub struct ProcfileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, and how to fix it.
    pub problem: String,
}

impl Procfile {
    /// Parses Procfile text.
    pub fn parse(text: &str) -> Result<Self, ProcfileError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |problem: String| ProcfileError {
                line: line_no,
                problem,
            };
            let line = raw.trim_end_matches('\r').trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, command)) = line.split_once(':') else {
                return Err(err(format!(
                    "expected `<type>: <command>`, e.g. `web: ./server --port $PORT`, got `{line}`"
                )));
            };
            let (name, command) = (name.trim(), command.trim());
            validate_type(name).map_err(err)?;
            if command.is_empty() {
                return Err(err(format!(
                    "process type `{name}` has no command after the colon"
                )));
            }
            if let Some(first) = first_line.get(name) {
                return Err(err(format!(
                    "process type `{name}` is already defined on line {first}; keep one of them"
                )));
            }
            first_line.insert(name.to_owned(), line_no);
            entries.push((name.to_owned(), command.to_owned()));
        }
        Ok(Self { entries })
    }

    /// Builds a Procfile from `(type, command)` pairs (e.g. a buildpack's defaults).
    pub fn from_entries(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            entries: entries.into_iter().collect(),
        }
    }

    /// The command of process type `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_str())
    }

    /// Process type names, in file order.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(type, command)` pairs, in file order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// Whether there are no process types.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// This Procfile with the types of `defaults` it lacks added: Heroku merges a buildpack's
    /// `default_process_types` under the app's Procfile, the Procfile winning.
    pub fn merged_over(mut self, defaults: &Procfile) -> Self {
        for (n, c) in &defaults.entries {
            if self.get(n).is_none() {
                self.entries.push((n.clone(), c.clone()));
            }
        }
        self
    }

    /// As a map, for JSON results.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.entries.iter().cloned().collect()
    }
}

impl fmt::Display for Procfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, c) in &self.entries {
            writeln!(f, "{n}: {c}")?;
        }
        Ok(())
    }
}

/// Checks a process type name: lower-case letters, digits and `-`/`_`, at most 63 characters.
/// Upper case is refused rather than converted, because the name becomes part of Deployment
/// and Service names, which must be DNS labels.
pub fn validate_type(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a line starts with `:`; write the process type before it, e.g. `web:`".into());
    }
    if name.len() > MAX_TYPE_LEN {
        return Err(format!(
            "process type `{name}` is longer than {MAX_TYPE_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "process type `{name}` contains `{c}`; use lower-case letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_in_order_with_comments_and_blank_lines() {
        let p = Procfile::parse(
            "# the app\nweb: ./server --port $PORT\r\n\n worker : ./work && echo done\n",
        )
        .unwrap();
        assert_eq!(p.types().collect::<Vec<_>>(), ["web", "worker"]);
        assert_eq!(p.get("web"), Some("./server --port $PORT"));
        assert_eq!(p.get("worker"), Some("./work && echo done"));
        assert_eq!(p.get("clock"), None);
    }

    #[test]
    fn keeps_colons_in_the_command() {
        let p = Procfile::parse("web: python -c 'print(1)' --bind 0.0.0.0:$PORT").unwrap();
        assert_eq!(
            p.get("web"),
            Some("python -c 'print(1)' --bind 0.0.0.0:$PORT")
        );
    }

    #[test]
    fn names_the_line_of_a_merge_conflict_marker() {
        let err = Procfile::parse("web: a\n<<<<<<< HEAD\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.to_string().contains("expected `<type>: <command>`"),
            "{err}"
        );
    }

    #[test]
    fn refuses_duplicates_bad_names_and_empty_commands() {
        let dup = Procfile::parse("web: a\nweb: b").unwrap_err();
        assert_eq!(
            (dup.line, dup.problem.contains("already defined on line 1")),
            (2, true)
        );
        assert_eq!(Procfile::parse("Web: a").unwrap_err().line, 1);
        assert!(
            Procfile::parse("we b: a")
                .unwrap_err()
                .problem
                .contains("contains ` `")
        );
        assert!(
            Procfile::parse("web:")
                .unwrap_err()
                .problem
                .contains("no command")
        );
        assert!(Procfile::parse(&format!("{}: a", "x".repeat(64))).is_err());
    }

    #[test]
    fn procfile_wins_over_buildpack_defaults() {
        let p = Procfile::parse("web: mine").unwrap();
        let d = Procfile::from_entries([
            ("web".into(), "theirs".into()),
            ("console".into(), "sh".into()),
        ]);
        let m = p.merged_over(&d);
        assert_eq!(m.get("web"), Some("mine"));
        assert_eq!(m.get("console"), Some("sh"));
        assert_eq!(m.to_string(), "web: mine\nconsole: sh\n");
    }
}
