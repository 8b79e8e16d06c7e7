//! CEL rules and schema fragments shared by several kinds.
//!
//! Every rule carries a message that names the field and says how to fix it: it is what a user
//! sees from `kubectl apply`, after the API server's own `<field path>: Invalid value: ...`.

use kube::core::{Message, Reason, Rule};

use crate::validation::{
    APP_NAME_PATTERN, DNS_LABEL_PATTERN, ENV_NAME_PATTERN, MAX_APP_NAME_LEN, MAX_PROCESS_TYPE_LEN,
};

/// Most entries in a map of environment variables. Bounds the CEL cost of checking the keys.
pub(crate) const MAX_ENV_VARS: u32 = 1000;
/// Most process types in one App or Release.
pub(crate) const MAX_PROCESS_TYPES: u32 = 32;
/// Most entries in a `meta` map.
pub(crate) const MAX_META_ENTRIES: u32 = 256;

/// Keys of an environment map (`spec.env`) must be C identifiers.
pub(crate) fn env_keys(field: &str) -> Rule {
    Rule::new(format!("self.all(k, k.matches('{ENV_NAME_PATTERN}'))"))
        .message(Message::Message(format!(
            "{field}: every key must be an environment variable name: letters, digits and '_', \
             not starting with a digit (e.g. DATABASE_URL)"
        )))
        .reason(Reason::FieldValueInvalid)
}

/// Config vars are never kept in plain text in an App or a Release: anyone with the `view`
/// role reads those. Objects stored before the rule keep theirs (the API server ratchets
/// rules over unchanged fields), so an upgrade refuses nothing that was already there.
pub(crate) fn no_plain_config(field: &str, instead: &str) -> Rule {
    Rule::new("size(self) == 0")
        .message(Message::Message(format!(
            "{field}: config vars are not kept in plain text here (anyone who may read it would \
             read them): set them with `flynn env set K=V`, or put them in a Secret and name it \
             in {instead}"
        )))
        .reason(Reason::FieldValueForbidden)
}

/// Keys of a map by process type (`spec.processes`) must be short RFC 1123 labels.
pub(crate) fn process_type_keys(field: &str) -> Rule {
    Rule::new(format!(
        "self.all(k, k.size() <= {MAX_PROCESS_TYPE_LEN} && k.matches('{DNS_LABEL_PATTERN}'))"
    ))
    .message(Message::Message(format!(
        "{field}: every key must be a process type of at most {MAX_PROCESS_TYPE_LEN} lower-case \
         letters, digits and '-', starting and ending with a letter or digit (e.g. web, worker)"
    )))
    .reason(Reason::FieldValueInvalid)
}

/// `metadata.name` of an App is at most 30 characters, because it prefixes `<app>-<process>`
/// Service names (63 at most).
pub(crate) fn app_name_length() -> Rule {
    Rule::new(format!("self.metadata.name.size() <= {MAX_APP_NAME_LEN}")).message(Message::Message(
        format!(
            "metadata.name: an App name must be at most {MAX_APP_NAME_LEN} characters, so that \
         `<app>-<process>` Deployment and Service names fit in 63"
        ),
    ))
}

/// `metadata.name` of an App is an RFC 1035 label, because it starts Service names.
pub(crate) fn app_name_format() -> Rule {
    Rule::new(format!("self.metadata.name.matches('{APP_NAME_PATTERN}')")).message(
        Message::Message(
            "metadata.name: an App name must consist of lower-case letters, digits and '-', \
         start with a letter and end with a letter or digit"
                .into(),
        ),
    )
}

/// Reflows every description in a schema: doc comments are wrapped at ~100 columns, and
/// schemars keeps those line breaks, which `kubectl explain` then prints mid-sentence. Single
/// newlines become spaces; blank lines (paragraphs) stay.
///
/// Used as `#[schemars(transform = schema::reflow_descriptions)]` on the spec and status types;
/// nested types are inlined into them, so one transform covers the whole tree.
pub(crate) fn reflow_descriptions(schema: &mut schemars::Schema) {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = reflow(text)
                        }
                        _ => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(object) = schema.as_object_mut() {
        object.values_mut().for_each(walk);
        if let Some(serde_json::Value::String(text)) = object.get_mut("description") {
            *text = reflow(text);
        }
    }
}

fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflow_joins_lines_and_keeps_paragraphs() {
        assert_eq!(reflow("one\ntwo\n\nthree\n four"), "one two\n\nthree four");
        let mut schema = schemars::json_schema!({
            "description": "a\nb",
            "properties": {"description": {"description": "c\nd", "type": "string"}},
        });
        reflow_descriptions(&mut schema);
        assert_eq!(schema.get("description").unwrap(), "a b");
        assert_eq!(
            schema.get("properties").unwrap()["description"]["description"],
            "c d"
        );
    }
}
