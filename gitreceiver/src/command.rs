//! The one command the receiver runs: `git-receive-pack '<app>.git'` or
//! `git-receive-pack '<namespace>/<app>.git'`, as git sends it over SSH.
//!
//! git builds the command as `prog + " " + sq_quote(path)` (`connect.c`): the path in
//! single quotes, a `'` inside written as `'\''`. App and namespace names are DNS labels,
//! so a legitimate path never contains a quote: anything but one plain single-quoted word
//! is refused rather than dequoted. Nothing is ever passed to a shell.

use flynn_crds::validation::{validate_app_name, validate_dns_label};

/// The repository a push targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPath {
    pub namespace: String,
    pub app: String,
}

/// Why an exec request is refused; `Display` is the one line the client sees.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error(
        "this is Flynn's git receiver: there is no shell; deploy with `git push <remote> main`"
    )]
    Shell,
    #[error("the subsystem `{0}` is not available: this server only takes `git push`")]
    Subsystem(String),
    #[error("fetching and cloning are not supported: this server only takes `git push`")]
    UploadPack,
    #[error("`{0}` is not allowed: this server only takes `git push` (git-receive-pack)")]
    Command(String),
    #[error(
        "invalid repository path {0:?}: use `<app>.git` or `<namespace>/<app>.git`, e.g. `git remote add flynn ssh://git@<host>:2222/default/myapp.git`"
    )]
    Path(String),
    #[error("invalid {what} {name:?} in the repository path: {reason}")]
    Name {
        what: &'static str,
        name: String,
        reason: String,
    },
}

/// Parses an exec request; `default_namespace` is used for `<app>.git`.
pub fn parse(command: &[u8], default_namespace: &str) -> Result<RepoPath, Refusal> {
    let shown = || {
        String::from_utf8_lossy(command)
            .chars()
            .take(100)
            .collect::<String>()
    };
    let command = std::str::from_utf8(command).map_err(|_| Refusal::Command(shown()))?;
    let (program, arg) = command
        .split_once(' ')
        .ok_or_else(|| Refusal::Command(shown()))?;
    match program {
        "git-receive-pack" => {}
        "git-upload-pack" | "git-upload-archive" => return Err(Refusal::UploadPack),
        _ => return Err(Refusal::Command(shown())),
    }
    let path = arg
        .strip_prefix('\'')
        .and_then(|a| a.strip_suffix('\''))
        .filter(|p| !p.contains('\''))
        .ok_or_else(|| Refusal::Path(arg.chars().take(100).collect()))?;
    parse_path(path, default_namespace)
}

/// `[/][<namespace>/]<app>[.git]`, each part a DNS label.
fn parse_path(path: &str, default_namespace: &str) -> Result<RepoPath, Refusal> {
    let bad = || Refusal::Path(path.chars().take(100).collect());
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let mut parts = trimmed.split('/');
    let (namespace, app) = match (parts.next(), parts.next(), parts.next()) {
        (Some(app), None, None) => (default_namespace, app),
        (Some(ns), Some(app), None) => (ns, app),
        _ => return Err(bad()),
    };
    if app.is_empty() || namespace.is_empty() {
        return Err(bad());
    }
    validate_dns_label(namespace).map_err(|e| Refusal::Name {
        what: "namespace",
        name: namespace.into(),
        reason: e.to_string(),
    })?;
    validate_app_name(app).map_err(|e| Refusal::Name {
        what: "app name",
        name: app.into(),
        reason: e.to_string(),
    })?;
    Ok(RepoPath {
        namespace: namespace.into(),
        app: app.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(cmd: &str) -> RepoPath {
        parse(cmd.as_bytes(), "default").unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    fn repo(ns: &str, app: &str) -> RepoPath {
        RepoPath {
            namespace: ns.into(),
            app: app.into(),
        }
    }

    #[test]
    fn accepts_what_git_sends() {
        assert_eq!(ok("git-receive-pack 'shop.git'"), repo("default", "shop"));
        assert_eq!(ok("git-receive-pack '/shop.git'"), repo("default", "shop"));
        assert_eq!(
            ok("git-receive-pack 'team-a/shop.git'"),
            repo("team-a", "shop")
        );
        assert_eq!(
            ok("git-receive-pack '/team-a/shop.git'"),
            repo("team-a", "shop")
        );
        assert_eq!(ok("git-receive-pack 'shop'"), repo("default", "shop"));
    }

    #[test]
    fn refuses_traversal_and_odd_paths() {
        for cmd in [
            "git-receive-pack '../x.git'",
            "git-receive-pack '/../x.git'",
            "git-receive-pack 'a/../x.git'",
            "git-receive-pack '..'",
            "git-receive-pack 'a/b/c.git'",
            "git-receive-pack '//x.git'",
            "git-receive-pack '.git'",
            "git-receive-pack ''",
            "git-receive-pack 'Shop.git'",
            "git-receive-pack '~alice/x.git'",
            "git-receive-pack 'x.git' extra",
            "git-receive-pack x.git",
            "git-receive-pack 'a'\\''b.git'",
            "git-receive-pack 'a\nb.git'",
            "git-receive-pack '1shop.git'",
        ] {
            let err = parse(cmd.as_bytes(), "default").unwrap_err();
            assert!(
                matches!(err, Refusal::Path(_) | Refusal::Name { .. }),
                "{cmd}: {err:?}"
            );
        }
    }

    #[test]
    fn refuses_other_commands() {
        assert_eq!(
            parse(b"git-upload-pack 'shop.git'", "default"),
            Err(Refusal::UploadPack)
        );
        for cmd in [
            "sh -c id",
            "git receive-pack 'shop.git'",
            "git-receive-pack",
            "rm -rf /",
            "git-receive-pack;id 'x.git'",
        ] {
            assert!(
                matches!(parse(cmd.as_bytes(), "default"), Err(Refusal::Command(_))),
                "{cmd}"
            );
        }
        assert!(matches!(
            parse(b"\xff\xfe 'x.git'", "default"),
            Err(Refusal::Command(_))
        ));
    }

    #[test]
    fn refusals_are_one_line() {
        for r in [
            Refusal::Shell,
            Refusal::Subsystem("sftp".into()),
            Refusal::UploadPack,
            Refusal::Command("x".into()),
            Refusal::Path("a\nb".into()),
        ] {
            assert!(!r.to_string().contains('\n'), "{r}");
        }
    }
}
