//! The chart's values are checked before anything is applied: `values.schema.json` refuses
//! a value of the wrong type, an unknown key and a malformed digest with a message naming
//! the value, each beside the valid twin; images are pinned by digest when one is given.

use std::process::Output;

use flynn_e2e::helm;

fn template(sets: &[&str]) -> Output {
    let mut cmd = helm();
    cmd.args(["template", "flynn", "charts/flynn", "-n", "flynn-system"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.output().expect("running helm")
}

#[track_caller]
fn renders(sets: &[&str]) -> String {
    let out = template(sets);
    assert!(
        out.status.success(),
        "helm template {sets:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[track_caller]
fn refused(sets: &[&str], names: &[&str]) {
    let out = template(sets);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "helm template {sets:?} was accepted");
    for n in names {
        assert!(
            err.contains(n),
            "the error for {sets:?} does not name {n:?}: {err}"
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_is_refused_naming_it() {
    renders(&["router.httpPort=8080"]);
    refused(
        &["router.httpPort=eighty"],
        &["/router/httpPort", "integer"],
    );
    renders(&["gitreceiver.hostNetwork=false"]);
    refused(
        &["gitreceiver.hostNetwork=maybe"],
        &["/gitreceiver/hostNetwork", "boolean"],
    );
    renders(&["shelf.backend=s3", "shelf.bucket=b"]);
    refused(&["shelf.backend=ftp"], &["/shelf/backend"]);
    renders(&["postgres.enabled=false"]);
    refused(
        &["postgres.enabled=sometimes"],
        &["/postgres/enabled", "boolean"],
    );
}

#[test]
fn postgres_settings_and_storage_classes_are_checked_before_they_reach_a_command_line() {
    // A server setting's name goes on postgres' command line (-c NAME=VALUE, one argument:
    // a value with spaces stays the value); a name is a name.
    renders(&["postgres.parameters.shared_buffers=256MB"]);
    refused(
        &["postgres.parameters.ssl off -c hba_file=1"],
        &["ssl off -c hba_file", "pattern"],
    );
    renders(&["resources.storageClass=flynn-local-pool"]);
    refused(
        &["resources.storageClass=Fast SSD"],
        &["/resources/storageClass"],
    );
    renders(&["postgres.admin.existingSecret=team-pg"]);
    refused(
        &["postgres.admin.existingSecret=team pg"],
        &["/postgres/admin/existingSecret"],
    );
}

#[test]
fn an_unknown_key_is_refused_naming_it() {
    renders(&["operator.drainSeconds=3"]);
    refused(&["operator.drainSecond=3"], &["drainSecond"]);
    refused(&["routr.enabled=false"], &["routr"]);
}

#[test]
fn images_are_pinned_by_digest_when_one_is_given() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let out = renders(&[
        "image.registry=registry.example.com/team",
        &format!("router.image.digest={digest}"),
        "router.image.tag=1.2.3",
    ]);
    assert!(
        out.contains(&format!(
            "image: registry.example.com/team/flynn-router:1.2.3@{digest}"
        )),
        "{out}"
    );
    // The others: the registry, and the chart's appVersion as the tag.
    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/flynn/Chart.yaml"
    ))
    .unwrap();
    let app_version = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .expect("Chart.yaml has an appVersion")
        .trim()
        .trim_matches('"');
    assert!(
        out.contains(&format!(
            "image: registry.example.com/team/flynn-operator:{app_version}\n"
        )),
        "{out}"
    );
    refused(&["router.image.digest=latest"], &["/router/image/digest"]);
    // A tag that would end the YAML scalar early ("v1 # x" renders a comment).
    renders(&["router.image.tag=v1.2_rc-3"]);
    refused(&["router.image.tag=v1 # x"], &["/router/image/tag"]);
    renders(&["operator.resources.requests.cpu=.5"]);
}

#[test]
fn pull_secrets_and_placement_reach_every_platform_pod() {
    let out = renders(&[
        "imagePullSecrets[0].name=team-registry",
        "operator.nodeSelector.pool=system",
        "router.tolerations[0].key=edge",
        "router.tolerations[0].operator=Exists",
        "gitreceiver.priorityClassName=platform",
    ]);
    // Every pod template of the chart (operator, router, shelf, git receiver, postgres and
    // its admin-secret hook).
    let pods = out.matches("serviceAccountName: flynn-").count();
    assert_eq!(pods, 6, "{out}");
    assert_eq!(
        out.matches("imagePullSecrets:\n        - name: team-registry")
            .count(),
        pods,
        "{out}"
    );
    assert!(out.contains("nodeSelector:\n        pool: system"), "{out}");
    assert!(out.contains("tolerations:\n        - key: edge"), "{out}");
    assert!(out.contains("priorityClassName: platform"), "{out}");
    // Without them, nothing is rendered (not even an empty key).
    let plain = renders(&[]);
    for key in [
        "imagePullSecrets:",
        "nodeSelector:",
        "tolerations:",
        "priorityClassName:",
    ] {
        assert!(!plain.contains(key), "{key} rendered without a value");
    }
    refused(
        &["operator.nodeSelector=system"],
        &["/operator/nodeSelector"],
    );
    refused(&["imagePullSecrets[0].nam=x"], &["imagePullSecrets"]);
}
