//! Writes the Flynn CRDs as YAML, one file per kind, to `crds/` and `charts/flynn/crds/`.
//!
//! `cargo run -p flynn-crds --bin crdgen` after changing a type in crds/src; commit the result
//! (crds/tests/crd_drift.rs fails while it is stale). With `--stdout`, prints all of them as one
//! multi-document stream instead: `cargo run -p flynn-crds --bin crdgen -- --stdout | kubectl apply -f -`.

use std::{fs, path::Path, process::ExitCode};

use anyhow::Context;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crdgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let files = flynn_crds::crd_files()?;
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--stdout") => {
            let docs: Vec<_> = files.iter().map(|(_, yaml)| yaml.as_str()).collect();
            print!("{}", docs.join("---\n"));
            return Ok(());
        }
        Some(other) => anyhow::bail!("unknown argument {other:?}; usage: crdgen [--stdout]"),
    }

    // The crate's own directory, and the chart beside it in the workspace.
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart_dir = crate_dir.join("../charts/flynn/crds");
    for dir in [crate_dir, chart_dir.as_path()] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, yaml) in &files {
            let path = dir.join(name);
            fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
