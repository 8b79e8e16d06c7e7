//! `slugrunner`: the entrypoint of app containers. See `flynn_builder::runner`.

use std::path::PathBuf;

use clap::Parser;
use flynn_builder::{
    client::HttpClient,
    runner::{self, SlugSource},
};

/// Fetches a slug into the app directory and runs `start <type>` or a command.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The slug: an http(s) URL, or `-` for stdin. Unset: run what is in the app directory.
    #[arg(long, env = "SLUG_URL")]
    slug_url: Option<String>,
    /// Expected SHA-256 of the slug; a mismatch refuses to start.
    #[arg(long, env = "SLUG_SHA256")]
    slug_sha256: Option<String>,
    /// Where the slug is unpacked; also `HOME`.
    #[arg(long, env = "APP_DIR", default_value = "/app")]
    app_dir: PathBuf,
    /// Replace this process with the app instead of supervising it (not for PID 1).
    #[arg(long)]
    exec: bool,
    /// `start <type>`, or a command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    #[command(flatten)]
    log: flynn_telemetry::LogArgs,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    args.log.log_format.init("info");
    match run(args).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("slugrunner: {}", flynn_builder::output::error_chain(&e));
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> Result<i32, runner::RunError> {
    let source = match args.slug_url.as_deref() {
        None | Some("") => None,
        Some("-") => Some(SlugSource::Stdin),
        Some(url) => Some(SlugSource::Url(url.to_owned())),
    };
    if let Some(source) = source {
        let started = std::time::Instant::now();
        let sha = args.slug_sha256.as_deref().filter(|s| !s.is_empty());
        let info = runner::fetch_slug(&source, &HttpClient::new(None), &args.app_dir, sha).await?;
        tracing::info!(size = info.size, sha256 = %info.sha256, elapsed = ?started.elapsed(), "slug unpacked");
    }
    let (line, ptype) = runner::resolve_command(&args.app_dir, &args.command)?;
    tracing::debug!(command = %line, "starting");
    let cmd = runner::app_command(&args.app_dir, &line, ptype.as_deref());
    if args.exec {
        return Err(runner::exec(cmd));
    }
    runner::supervise(cmd).await
}
