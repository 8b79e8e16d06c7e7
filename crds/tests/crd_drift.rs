//! The committed CRD YAML must be what the Rust types generate: a change to a type without
//! `crdgen` would otherwise ship a schema the code doesn't match.

use std::{fs, path::Path};

const STALE: &str = "CRD YAML is stale: run `cargo run -p flynn-crds --bin crdgen`";

#[test]
fn committed_crd_yaml_matches_the_rust_types() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = flynn_crds::crd_files().expect("CRDs render as YAML");
    assert_eq!(files.len(), 5);
    for dir in [
        crate_dir.to_path_buf(),
        crate_dir.join("../charts/flynn/crds"),
    ] {
        for (name, generated) in &files {
            let path = dir.join(name);
            let committed = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{STALE} ({}: {e})", path.display()));
            assert!(
                committed == *generated,
                "{STALE} ({} differs)",
                path.display()
            );
        }
    }
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(
        flynn_crds::crd_files().unwrap(),
        flynn_crds::crd_files().unwrap()
    );
}

#[test]
fn every_crd_is_namespaced_in_the_flynn_category_with_a_short_name() {
    for crd in flynn_crds::crds() {
        let names = &crd.spec.names;
        assert_eq!(crd.spec.group, flynn_crds::GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            names.categories.as_deref(),
            Some(&[flynn_crds::CATEGORY.to_owned()][..]),
            "{}",
            names.kind
        );
        let short = names.short_names.as_deref().unwrap_or_default();
        assert!(
            short.len() == 1 && short[0].starts_with("fl"),
            "{}: {short:?}",
            names.kind
        );
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, flynn_crds::VERSION);
    }
}
