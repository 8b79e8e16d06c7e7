//! Checks on the generated schemas that keep `kubectl explain` and `kubectl apply` errors useful.

use serde_json::Value;

/// Visits every schema node under `node`, with its path.
fn walk(path: &str, node: &Value, visit: &mut impl FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}[*]"), values, visit);
    }
}

fn schemas() -> Vec<(String, Value)> {
    flynn_crds::crds()
        .into_iter()
        .map(|crd| {
            let version = &crd.spec.versions[0];
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap();
            (
                crd.spec.names.kind.clone(),
                serde_json::to_value(schema).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_cel_rule_has_a_message() {
    for (kind, schema) in schemas() {
        walk(&kind, &schema, &mut |path, node| {
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let message = rule
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                assert!(
                    message.len() > 20,
                    "{path}: rule {} has no useful message",
                    rule["rule"]
                );
                assert!(!message.contains('\n'), "{path}: messages must be one line");
            }
        });
    }
}

#[test]
fn every_field_is_documented() {
    for (kind, schema) in schemas() {
        walk(&kind, &schema, &mut |path, node| {
            // Map values and list items are described by their field.
            if path.ends_with("[*]") || path.ends_with("[]") || path == kind {
                return;
            }
            let description = node
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            assert!(
                !description.is_empty(),
                "{path} has no description (add a doc comment)"
            );
        });
    }
}

#[test]
fn every_cel_rule_is_under_a_bounded_collection() {
    // The API server estimates the cost of each rule from maxItems / maxProperties / maxLength
    // and refuses a CRD whose rules could be too expensive. Every list or map a rule iterates
    // must therefore be bounded.
    for (kind, schema) in schemas() {
        walk(&kind, &schema, &mut |path, node| {
            let iterates = node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|r| {
                    r["rule"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("self.all("))
                });
            if iterates {
                assert!(
                    node.get("maxItems").is_some() || node.get("maxProperties").is_some(),
                    "{path}: a rule iterates over an unbounded collection"
                );
            }
        });
    }
}
