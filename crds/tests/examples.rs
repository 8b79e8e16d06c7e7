//! The examples in crds/examples/ match the Rust types (no cluster needed; api_server.rs checks
//! that the API server accepts them too).

mod common;

use flynn_crds::{App, Release, Resource, Route, names, validation};
use serde_json::Value;

/// Every key of `expected` appears in `actual` with an equal value (recursively); `actual`
/// may have more (defaults). Catches a misspelt field that serde would silently drop.
fn assert_contains(path: &str, expected: &Value, actual: &Value) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let next = format!("{path}.{k}");
                let got = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{next} is not a field of the Rust type"));
                assert_contains(&next, v, got);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{path}");
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                assert_contains(&format!("{path}[{i}]"), e, a);
            }
        }
        _ => assert_eq!(expected, actual, "{path}"),
    }
}

#[test]
fn every_example_deserializes_into_its_rust_type_without_losing_fields() {
    for (file, docs) in common::examples() {
        for doc in docs {
            let original = serde_json::to_value(&doc).unwrap();
            let kind = common::kind_of(&doc).to_owned();
            let round_trip = match kind.as_str() {
                // Not Flynn's: its config vars.
                "Secret" => continue,
                "App" => {
                    serde_json::to_value(serde_json::from_value::<App>(original.clone()).unwrap())
                }
                "Release" => serde_json::to_value(
                    serde_json::from_value::<Release>(original.clone()).unwrap(),
                ),
                "Route" => {
                    serde_json::to_value(serde_json::from_value::<Route>(original.clone()).unwrap())
                }
                "Resource" => serde_json::to_value(
                    serde_json::from_value::<Resource>(original.clone()).unwrap(),
                ),
                other => panic!("{file}: unexpected kind {other}"),
            }
            .unwrap();
            assert_contains(
                &format!("{file}:{kind}"),
                &original["spec"],
                &round_trip["spec"],
            );
        }
    }
}

#[test]
fn example_names_follow_the_naming_rules() {
    for (file, docs) in common::examples() {
        for doc in docs {
            let name = doc.metadata.name.clone().unwrap();
            assert!(
                doc.metadata.namespace.is_none(),
                "{file}: examples must not set a namespace"
            );
            match common::kind_of(&doc) {
                "App" => {
                    validation::validate_app_name(&name).unwrap();
                    let app: App =
                        serde_json::from_value(serde_json::to_value(&doc).unwrap()).unwrap();
                    for process in app.spec.processes.keys() {
                        validation::validate_process_type(process).unwrap();
                    }
                }
                "Release" => {
                    let release: Release =
                        serde_json::from_value(serde_json::to_value(&doc).unwrap()).unwrap();
                    assert_eq!(
                        name,
                        names::release_name(&release.spec.app, release.spec.version),
                        "{file}"
                    );
                }
                _ => validation::validate_dns_label(&name).unwrap(),
            }
        }
    }
}
