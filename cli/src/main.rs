//! `flynn` (and `kubectl-flynn`): parse, run, print the error with its fix, exit.

use clap::Parser;
use flynn_cli::cli::Cli;
use flynn_cli::errors::Error;
use flynn_cli::output::{Ui, style};

fn main() {
    let cli = Cli::parse();
    let ui = Ui::detect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(flynn_cli::run(cli, ui)) {
        Ok(code) => code,
        // Ctrl-C is how `log -f` ends: no message, just the shell's code for SIGINT.
        Err(e @ Error::Interrupted) => e.exit_code(),
        Err(e) => {
            eprintln!("{} {e}", style::red(ui.color_err, "error:"));
            if let Some(hint) = e.hint() {
                eprintln!("{} {hint}", style::bold(ui.color_err, "hint:"));
            }
            e.exit_code()
        }
    };
    // Exit without waiting for the runtime: a task blocked reading stdin (`flynn run`)
    // would otherwise keep the process alive.
    std::process::exit(i32::from(code));
}
