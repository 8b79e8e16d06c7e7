//! The chart's SSH key registry (gitreceiver/README.md): its admission policy lets a user
//! register, change and remove only keys in their own name. Rendered from the chart with
//! the cluster's own helm and checked with impersonated users against the real API server.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use flynn_e2e::{LOCAL_CLUSTER_KUBECONFIG, TestNamespace, helm};

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", LOCAL_CLUSTER_KUBECONFIG)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl (install it: it comes with the cluster's prerequisites)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// The cluster-scoped policy and binding this test installed, removed when it ends.
struct Installed(String);

impl Drop for Installed {
    fn drop(&mut self) {
        kubectl(
            &["delete", "--ignore-not-found", "-f", "-"],
            Some(self.0.as_str()),
        );
    }
}

/// A key Secret; `groups` are one per line (as `flynn key add` writes them), `extra` more
/// annotations (`key: "value", ` each).
fn key_secret(ns: &str, name: &str, user: &str, groups: &[&str]) -> String {
    key_secret_with(ns, name, user, groups, "")
}

fn key_secret_with(ns: &str, name: &str, user: &str, groups: &[&str], extra: &str) -> String {
    // A YAML double-quoted scalar: `\n` is a newline.
    let groups = groups.join("\\n");
    format!(
        r#"apiVersion: v1
kind: Secret
type: flynn.io/ssh-public-key
metadata:
  name: {name}
  namespace: {ns}
  labels: {{flynn.io/ssh-key: "true"}}
  annotations: {{{extra}flynn.io/user: "{user}", flynn.io/group-list: "{groups}"}}
stringData: {{publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDPeQvZ3cG9wbW3e0q0h7Gq1n4m3qUjPp0Jc8n1m2lZ3 test"}}
"#
    )
}

fn as_user<'a>(user: &'a str, group: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--as", user, "--as-group", group]);
    v
}

#[tokio::test]
async fn users_register_and_remove_only_their_own_keys() {
    let ns = TestNamespace::create("ssh-key-policy").await;
    let release = ns.name().to_owned();
    let rendered = helm()
        .args(["template", &release, "charts/flynn", "-n", "flynn-system"])
        .args(["--set", &format!("gitreceiver.keysNamespace={release}")])
        .args(["--show-only", "templates/keys.yaml"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    // The test namespace stands in for the chart's keys namespace.
    let docs: Vec<&str> = std::str::from_utf8(&rendered.stdout)
        .unwrap()
        .split("\n---")
        .filter(|d| d.contains("kind:") && !d.contains("kind: Namespace"))
        .collect();
    let manifest = docs.join("\n---\n");
    let cluster_scoped: String = docs
        .iter()
        .filter(|d| d.contains("kind: ValidatingAdmissionPolicy"))
        .copied()
        .collect::<Vec<_>>()
        .join("\n---\n");
    let _installed = Installed(cluster_scoped);
    let out = kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let alice = key_secret(
        &release,
        "key-alice",
        "alice",
        &["dev", "system:authenticated"],
    );
    // A new policy takes a moment to reach the admission chain: until then creates pass
    // unchecked, so wait until someone else's key is refused.
    let forged = key_secret(
        &release,
        "key-forged",
        "bob",
        &["dev", "system:authenticated"],
    );
    let mut refused = None;
    for _ in 0..60 {
        let out = kubectl(
            &as_user("alice", "dev", &["create", "-f", "-"]),
            Some(&forged),
        );
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
        kubectl(&["delete", "secret", "-n", &release, "key-forged"], None);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let refused = refused.expect("a key in someone else's name was admitted for 30 s");
    assert!(
        refused.contains(
            "must be your own (user alice; groups, one per line: [dev, system:authenticated])"
        ),
        "{refused}"
    );

    // A Secret of another type in one's own name is refused: a service-account token
    // here would be readable by every user. (Its twin, a key of the key type, is
    // admitted below.)
    let token = key_secret(
        &release,
        "key-token",
        "alice",
        &["dev", "system:authenticated"],
    )
    .replace(
        "type: flynn.io/ssh-public-key",
        "type: kubernetes.io/service-account-token",
    )
    .replace(
        "annotations: {",
        "annotations: {kubernetes.io/service-account.name: default, ",
    );
    let out = kubectl(
        &as_user("alice", "dev", &["create", "-f", "-"]),
        Some(&token),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a service-account-token Secret was admitted"
    );
    assert!(
        err.contains("not kubernetes.io/service-account-token"),
        "{err}"
    );

    // Claiming a group one is not in is refused too: as a group of its own, or a line
    // added to one's own list.
    for groups in [
        &["system:masters", "system:authenticated"][..],
        &["dev", "system:masters", "system:authenticated"][..],
    ] {
        let out = kubectl(
            &as_user("alice", "dev", &["create", "-f", "-"]),
            Some(&key_secret(&release, "key-admin", "alice", groups)),
        );
        assert!(
            !out.status.success(),
            "a forged group was admitted: {groups:?}"
        );
    }

    // A comma is part of a group's name: alice, whose one group is `devs,system:masters`,
    // registers exactly that list (the receiver reads it back as that one group;
    // gitreceiver/tests/keys.rs shows the SubjectAccessReview), and her twin in group
    // `devs` cannot claim it.
    let comma = ["devs,system:masters", "system:authenticated"];
    let out = kubectl(
        &as_user("alice", "devs", &["create", "-f", "-"]),
        Some(&key_secret(&release, "key-comma", "alice", &comma)),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("must be your own"),
        "a list with someone else's group was admitted: {err}"
    );
    let out = kubectl(
        &as_user("alice", "devs,system:masters", &["create", "-f", "-"]),
        Some(&key_secret(&release, "key-comma", "alice", &comma)),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl(&["delete", "secret", "-n", &release, "key-comma"], None);

    // The first format's comma-joined flynn.io/groups is refused, even beside a right list.
    let out = kubectl(
        &as_user("alice", "dev", &["create", "-f", "-"]),
        Some(&key_secret_with(
            &release,
            "key-old",
            "alice",
            &["dev", "system:authenticated"],
            r#"flynn.io/groups: "dev,system:authenticated", "#,
        )),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the old format"),
        "{err}"
    );

    // An expiry must be an RFC 3339 time; its twin with one is admitted.
    let out = kubectl(
        &as_user("alice", "dev", &["create", "-f", "-"]),
        Some(&key_secret_with(
            &release,
            "key-expiring",
            "alice",
            &["dev", "system:authenticated"],
            r#"flynn.io/expires: "in 90 days", "#,
        )),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("RFC 3339"), "{err}");
    let out = kubectl(
        &as_user("alice", "dev", &["create", "-f", "-"]),
        Some(&key_secret_with(
            &release,
            "key-expiring",
            "alice",
            &["dev", "system:authenticated"],
            r#"flynn.io/expires: "2027-03-01T00:00:00Z", "#,
        )),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One's own key: created; another user can neither change nor remove it; its owner can.
    let out = kubectl(
        &as_user("alice", "dev", &["create", "-f", "-"]),
        Some(&alice),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        &as_user(
            "bob",
            "dev",
            &["delete", "secret", "-n", &release, "key-alice"],
        ),
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("belongs to another user"),
        "{err}"
    );
    let out = kubectl(
        &as_user(
            "bob",
            "dev",
            &[
                "annotate",
                "secret",
                "-n",
                &release,
                "key-alice",
                "--overwrite",
                "flynn.io/user=bob",
            ],
        ),
        None,
    );
    assert!(!out.status.success(), "bob took over alice's key");
    // Users may update keys (`flynn key add` again refreshes the groups and expiry), so
    // the policy, not RBAC, stops bob replacing alice's key with one in his name...
    let out = kubectl(
        &as_user("bob", "dev", &["replace", "-f", "-"]),
        Some(&key_secret(
            &release,
            "key-alice",
            "bob",
            &["dev", "system:authenticated"],
        )),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("belongs to another user"),
        "bob replaced alice's key: {err}"
    );
    // ...while alice refreshes her own, with an expiry.
    let out = kubectl(
        &as_user("alice", "dev", &["replace", "-f", "-"]),
        Some(&key_secret_with(
            &release,
            "key-alice",
            "alice",
            &["dev", "system:authenticated"],
            r#"flynn.io/expires: "2027-03-01T00:00:00Z", "#,
        )),
    );
    assert!(
        out.status.success(),
        "alice could not update her key: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Anything but a labelled key is refused in the keys namespace.
    let out = kubectl(
        &as_user(
            "alice",
            "dev",
            &[
                "create",
                "secret",
                "generic",
                "-n",
                &release,
                "other",
                "--from-literal=a=b",
            ],
        ),
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("only SSH keys live here"),
        "{err}"
    );

    let out = kubectl(
        &as_user(
            "alice",
            "dev",
            &["delete", "secret", "-n", &release, "key-alice"],
        ),
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
