//! The repository's `kind-config.yaml` (README.md, "On kind"), checked with kind's own Go
//! config types by `e2e/kindcheck`: kind itself needs Docker, which these machines lack.
//! Beside the real file, broken copies of it must be refused with a message naming the
//! cause, so the check is known to bite.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds `e2e/kindcheck` once per test binary and returns the binary's path.
fn checker() -> &'static Path {
    static CHECKER: OnceLock<PathBuf> = OnceLock::new();
    CHECKER.get_or_init(|| {
        let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kindcheck");
        // As e2e/cluster/lib/common.sh builds the repository's Go modules: no VCS stamp.
        let goflags = format!(
            "{} -buildvcs=false",
            std::env::var("GOFLAGS").unwrap_or_default()
        );
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .env("GOFLAGS", goflags.trim())
            .current_dir(repo().join("e2e/kindcheck"))
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running `go build` in e2e/kindcheck: {e}\n`go` is needed to check \
                     kind-config.yaml: install Go 1.22 or newer (https://go.dev/dl/, or the \
                     distribution's golang package) and put it on PATH"
                )
            });
        assert!(
            out.status.success(),
            "go build in e2e/kindcheck failed (its modules come from the Go module proxy, \
             pinned by e2e/kindcheck/go.sum):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

fn check(file: &Path) -> Output {
    Command::new(checker()).arg(file).output().unwrap()
}

fn kind_config() -> String {
    std::fs::read_to_string(repo().join("kind-config.yaml")).unwrap()
}

/// Writes a copy of kind-config.yaml with `from` replaced by `to` (which must change it).
fn twin(name: &str, from: &str, to: &str) -> PathBuf {
    let config = kind_config();
    assert!(
        config.contains(from),
        "kind-config.yaml no longer contains {from:?}: update this test's twin {name}"
    );
    write_twin(name, &config.replacen(from, to, 1))
}

fn write_twin(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kind-config-{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the checker on `file`, asserts it fails, and returns its message.
fn refused(file: &Path) -> String {
    let out = check(file);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "kindcheck accepted {} (or crashed):\nstdout: {}\nstderr: {stderr}",
        file.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn assert_names(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "the message should name {needle:?}:\n{message}"
        );
    }
}

#[test]
fn the_repositorys_kind_config_passes() {
    let file = repo().join("kind-config.yaml");
    let out = check(&file);
    assert!(
        out.status.success(),
        "kind-config.yaml is refused:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_names(
        &stdout,
        &[
            "ok: kind.x-k8s.io/v1alpha4 Cluster",
            "80, 443, 2222",
            "/etc/containerd/certs.d",
        ],
    );
}

#[test]
fn a_misspelt_field_is_refused() {
    let file = twin("typo", "extraPortMappings:", "extraPortMapping:");
    let message = refused(&file);
    assert_names(
        &message,
        &["field extraPortMapping not found in type v1alpha4.Node"],
    );
}

#[test]
fn a_missing_ssh_mapping_is_refused() {
    // The whole list entry goes: its first line and the lines indented under it.
    let config = kind_config();
    let mut kept = Vec::new();
    let mut entry_indent = None;
    for line in config.lines() {
        let indent = line.len() - line.trim_start().len();
        match entry_indent {
            Some(i) if indent > i && !line.trim().is_empty() => continue,
            _ => entry_indent = None,
        }
        if line.trim_start() == "- containerPort: 2222" {
            entry_indent = Some(indent);
            continue;
        }
        kept.push(line);
    }
    let text = kept.join("\n") + "\n";
    assert!(
        !text.contains(": 2222") && text.contains("containerPort: 443"),
        "kind-config.yaml's 2222 mapping is not where this test looks for it:\n{text}"
    );
    let message = refused(&write_twin("no-ssh", &text));
    assert_names(&message, &["hostPort 2222", "git receiver's SSH port"]);
}

#[test]
fn a_port_of_the_wrong_type_is_refused() {
    let file = twin(
        "wrong-type",
        "containerPort: 80\n",
        "containerPort: \"eighty\"\n",
    );
    let message = refused(&file);
    assert_names(
        &message,
        &[
            "cannot unmarshal !!str `eighty` into int32",
            "containerPort",
        ],
    );
}

#[test]
fn the_registry_config_path_is_required() {
    let file = twin(
        "config-path",
        r#"config_path = "/etc/containerd/certs.d""#,
        r#"config_path = "/etc/containerd/registries""#,
    );
    let message = refused(&file);
    assert_names(&message, &["config_path", "/etc/containerd/registries"]);
}
