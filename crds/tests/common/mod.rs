//! Shared by the integration tests: the example manifests, and kind → API resource.

#![allow(dead_code)] // each test binary uses a different part

use std::{fs, path::PathBuf};

use flynn_crds::{App, Formation, Release, Resource, Route};
use kube::{CustomResourceExt, api::DynamicObject, core::ApiResource};

/// Every file in crds/examples/, sorted, with its documents.
pub fn examples() -> Vec<(String, Vec<DynamicObject>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no examples in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let docs: Vec<DynamicObject> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: not YAML Kubernetes objects: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                docs,
            )
        })
        .collect()
}

/// The API resource of a Flynn kind.
pub fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "App" => App::api_resource(),
        "Release" => Release::api_resource(),
        "Formation" => Formation::api_resource(),
        "Route" => Route::api_resource(),
        "Resource" => Resource::api_resource(),
        // The examples' config vars.
        "Secret" => ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
        other => panic!("not a Flynn kind: {other}"),
    }
}

/// The kind of a document (`kind:`), or a panic naming the object.
pub fn kind_of(obj: &DynamicObject) -> &str {
    obj.types
        .as_ref()
        .map(|t| t.kind.as_str())
        .unwrap_or_else(|| panic!("{:?} has no kind", obj.metadata.name))
}
