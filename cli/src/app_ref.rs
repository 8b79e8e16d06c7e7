//! Which app a command is about: `-a APP`, else the `flynn` git remote of the current
//! directory, whose URL `<gitURL>/<namespace>/<app>.git` also names the namespace.

use std::path::Path;
use std::process::Command;

use flynn_crds::validation::{validate_app_name, validate_dns_label};

use crate::errors::{Error, Result};

/// The git remote `flynn create` adds and commands read (`--remote` picks another name).
pub const DEFAULT_REMOTE: &str = "flynn";

/// An app named by a git remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteApp {
    pub namespace: String,
    pub app: String,
}

/// The git remote URL of an app: `<gitURL>/<namespace>/<app>.git`.
pub fn remote_url(git_url: &str, namespace: &str, app: &str) -> String {
    format!("{}/{namespace}/{app}.git", git_url.trim_end_matches('/'))
}

/// Reads namespace and app back from a remote URL. Accepts `ssh://git@host:2222/ns/app.git`
/// and the scp form `git@host:ns/app.git`; `None` if the last two path segments are not a
/// namespace and an app name.
pub fn parse_remote_url(url: &str) -> Option<RemoteApp> {
    let path = url.trim().strip_suffix(".git")?;
    let (rest, app) = path.rsplit_once('/')?;
    // The namespace is the segment before the app; in the scp form it follows the ':'.
    let namespace = rest.rsplit(['/', ':']).next()?;
    validate_app_name(app).ok()?;
    validate_dns_label(namespace).ok()?;
    Some(RemoteApp {
        namespace: namespace.to_owned(),
        app: app.to_owned(),
    })
}

/// The URL of `remote` in the git repository at `dir`, if there is one.
pub fn git_remote_url(dir: &Path, remote: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["config", "--get", &format!("remote.{remote}.url")])
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|url| !url.is_empty())
}

/// The app the `flynn` remote of `dir` names, if any.
pub fn from_git(dir: &Path) -> Option<RemoteApp> {
    parse_remote_url(&git_remote_url(dir, DEFAULT_REMOTE)?)
}

/// Whether `dir` is inside a git work tree.
pub fn in_git_repo(dir: &Path) -> bool {
    Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `git remote add NAME URL` in `dir`.
pub fn add_remote(dir: &Path, remote: &str, url: &str) -> Result<()> {
    git(
        dir,
        &["remote", "add", remote, url],
        &format!("adding git remote {remote}"),
    )
}

/// `git remote remove NAME` in `dir`.
pub fn remove_remote(dir: &Path, remote: &str) -> Result<()> {
    git(
        dir,
        &["remote", "remove", remote],
        &format!("removing git remote {remote}"),
    )
}

fn git(dir: &Path, args: &[&str], action: &str) -> Result<()> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(Error::io(format!("{action} (is git installed?)")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Git {
            action: action.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// An app name from a directory name: lower case, other characters to '-', trimmed to a
/// valid app name (`My_Shop` → `my-shop`); `None` if nothing usable is left.
pub fn app_name_from_dir(dir: &Path) -> Option<String> {
    let base = dir.file_name()?.to_string_lossy().to_lowercase();
    let mut name = String::new();
    for c in base.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    name.truncate(flynn_crds::validation::MAX_APP_NAME_LEN);
    let name = name.trim_matches('-').to_owned();
    validate_app_name(&name).ok().map(|()| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_round_trip() {
        let url = remote_url("ssh://git@flynn.local:2222/", "team-a", "shop");
        assert_eq!(url, "ssh://git@flynn.local:2222/team-a/shop.git");
        assert_eq!(
            parse_remote_url(&url),
            Some(RemoteApp {
                namespace: "team-a".into(),
                app: "shop".into()
            })
        );
    }

    #[test]
    fn scp_style_and_bad_urls() {
        assert_eq!(
            parse_remote_url("git@flynn.local:prod/api.git").map(|r| (r.namespace, r.app)),
            Some(("prod".into(), "api".into()))
        );
        assert_eq!(parse_remote_url("https://github.com/Org/Repo.git"), None);
        assert_eq!(parse_remote_url("ssh://host/ns/app"), None);
        assert_eq!(parse_remote_url("app.git"), None);
    }

    #[test]
    fn app_names_from_directories() {
        assert_eq!(
            app_name_from_dir(Path::new("/src/My_Shop")),
            Some("my-shop".into())
        );
        assert_eq!(
            app_name_from_dir(Path::new("/src/node-demo")),
            Some("node-demo".into())
        );
        assert_eq!(app_name_from_dir(Path::new("/src/42")), None);
        assert_eq!(app_name_from_dir(Path::new("/")), None);
    }
}
