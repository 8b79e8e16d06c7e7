//! A buildpack's `bin/release` output: YAML with `default_process_types`, `config_vars` and
//! `addons`. The slugbuilder keeps it in the slug as `.release` (as Flynn and Deis do), so the
//! slugrunner can fall back to its process types when the app has no Procfile.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::procfile::Procfile;

/// File name of the release output inside a slug.
pub const RELEASE_FILE: &str = ".release";

/// The parsed `bin/release` output.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct BuildpackRelease {
    /// Process types the buildpack suggests, under the app's Procfile.
    #[serde(default)]
    pub default_process_types: Option<BTreeMap<String, String>>,
    /// Config vars the buildpack sets unless the app sets them.
    #[serde(default)]
    pub config_vars: Option<BTreeMap<String, ScalarValue>>,
    /// Add-ons Heroku would provision; shown, not acted on.
    #[serde(default)]
    pub addons: Option<Vec<String>>,
}

/// A YAML scalar as a string: buildpacks write `WEB_CONCURRENCY: 2` as often as `"2"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ScalarValue {
    /// A string.
    String(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Display for ScalarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::String(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `bin/release` printed something that is not the YAML the buildpack API describes.
#[derive(Debug, thiserror::Error)]
#[error(
    "bin/release printed invalid YAML ({0}); it must print a mapping with `default_process_types`, `config_vars` and/or `addons`"
)]
pub struct ReleaseError(String);

impl BuildpackRelease {
    /// Parses `bin/release` output; an empty output is an empty release.
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let meaningful = text.lines().any(|l| {
            let l = l.trim();
            !(l.is_empty() || l.starts_with('#') || l == "---")
        });
        if !meaningful {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ReleaseError(e.to_string()))
    }

    /// The default process types as a Procfile (in name order).
    pub fn default_procfile(&self) -> Procfile {
        Procfile::from_entries(self.default_process_types.clone().unwrap_or_default())
    }

    /// The config vars as strings.
    pub fn config_vars(&self) -> BTreeMap<String, String> {
        self.config_vars
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_heroku_shape() {
        let r = BuildpackRelease::parse(
            "---\naddons:\n  - heroku-postgresql\ndefault_process_types:\n  web: python app.py\nconfig_vars:\n  WEB_CONCURRENCY: 2\n  LANG: en_US.UTF-8\n",
        )
        .unwrap();
        assert_eq!(r.default_procfile().get("web"), Some("python app.py"));
        assert_eq!(r.config_vars()["WEB_CONCURRENCY"], "2");
        assert_eq!(
            r.addons.as_deref(),
            Some(&["heroku-postgresql".to_owned()][..])
        );
    }

    #[test]
    fn empty_output_is_an_empty_release() {
        assert_eq!(
            BuildpackRelease::parse("").unwrap(),
            BuildpackRelease::default()
        );
        assert_eq!(
            BuildpackRelease::parse("---\n").unwrap(),
            BuildpackRelease::default()
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(BuildpackRelease::parse("- a\n- b\n").is_err());
    }
}
