//! `completion bash|zsh|fish`: shell completion scripts, generated from the clap definition.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionArgs};
use crate::errors::{Error, Result};

pub fn completion(args: &CompletionArgs) -> Result<()> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "flynn", &mut out);
    crate::output::print_out(&String::from_utf8(out).map_err(|e| Error::Io {
        action: "generating the completion script".into(),
        source: std::io::Error::other(e),
    })?)
}
