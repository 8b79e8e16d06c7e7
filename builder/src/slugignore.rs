//! `.slugignore`: paths the app wants kept out of its slug, removed before the build as
//! Heroku does (so buildpacks never see them either).
//!
//! The gitignore-like subset Heroku documents: one pattern per line, `#` comments, `*` and
//! `?` within a path segment; a pattern with a `/` (other than a trailing one) is relative to
//! the app's root, one without matches at any depth; a trailing `/` matches directories only.
//! Negation (`!`) is not supported (Heroku does not support it either).

use std::{
    io,
    path::{Path, PathBuf},
};

/// The file's name in the app.
pub const FILE: &str = ".slugignore";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    glob: String,
    anchored: bool,
    dir_only: bool,
}

/// Parsed `.slugignore` patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlugIgnore {
    patterns: Vec<Pattern>,
}

impl SlugIgnore {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let dir_only = l.ends_with('/');
                let l = l.trim_end_matches('/');
                let anchored = l.contains('/');
                Pattern {
                    glob: l.trim_start_matches('/').to_owned(),
                    anchored,
                    dir_only,
                }
            })
            .filter(|p| !p.glob.is_empty())
            .collect();
        Self { patterns }
    }

    /// Whether `rel` (a `/`-separated path relative to the app root) is ignored.
    pub fn matches(&self, rel: &str, is_dir: bool) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.patterns.iter().any(|p| {
            (!p.dir_only || is_dir)
                && if p.anchored {
                    glob(&p.glob, rel)
                } else {
                    glob(&p.glob, name)
                }
        })
    }

    /// Removes the ignored paths under `root`; returns them (relative).
    pub fn apply(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        if !self.patterns.is_empty() {
            self.walk(root, Path::new(""), &mut removed)?;
        }
        Ok(removed)
    }

    fn walk(&self, root: &Path, rel: &Path, removed: &mut Vec<PathBuf>) -> io::Result<()> {
        for entry in std::fs::read_dir(root.join(rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let is_dir = entry.file_type()?.is_dir();
            if self.matches(&rel.to_string_lossy(), is_dir) {
                if is_dir {
                    std::fs::remove_dir_all(root.join(&rel))?;
                } else {
                    std::fs::remove_file(root.join(&rel))?;
                }
                removed.push(rel);
            } else if is_dir {
                self.walk(root, &rel, removed)?;
            }
        }
        Ok(())
    }
}

/// `*` and `?` wildcard match where neither crosses a `/`.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == t[ti] && p[pi] != '*' || p[pi] == '?' && t[ti] != '/') {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star
            && t[st] != '/'
        {
            // Let the last `*` swallow one more character, never a `/`.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_stay_within_a_segment() {
        assert!(glob("*.psd", "logo.psd"));
        assert!(glob("test?", "test1"));
        assert!(!glob("*.psd", "art/logo.psd"));
        assert!(glob("art/*.psd", "art/logo.psd"));
        assert!(!glob("art/*", "art/x/logo.psd"));
        assert!(glob("*", ""));
    }

    #[test]
    fn unanchored_patterns_match_at_any_depth_and_anchored_from_the_root() {
        let s = SlugIgnore::parse("# big files\n*.psd\n/spec\ndocs/build\ntmp/\n");
        assert!(s.matches("design/logo.psd", false));
        assert!(s.matches("spec", true));
        assert!(!s.matches("lib/spec", true));
        assert!(s.matches("docs/build", true));
        assert!(s.matches("tmp", true));
        assert!(
            !s.matches("tmp", false),
            "a trailing / matches directories only"
        );
        assert!(!s.matches("app.py", false));
    }

    #[test]
    fn apply_removes_what_matches() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("spec/unit")).unwrap();
        std::fs::create_dir_all(d.path().join("art")).unwrap();
        std::fs::write(d.path().join("spec/unit/a_test.py"), "").unwrap();
        std::fs::write(d.path().join("art/logo.psd"), "").unwrap();
        std::fs::write(d.path().join("app.py"), "").unwrap();
        let mut removed = SlugIgnore::parse("spec\n*.psd\n").apply(d.path()).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [PathBuf::from("art/logo.psd"), PathBuf::from("spec")]
        );
        assert!(d.path().join("app.py").exists() && d.path().join("art").exists());
    }
}
