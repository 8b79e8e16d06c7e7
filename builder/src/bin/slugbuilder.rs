//! `slugbuilder`: app source in, slug out. See `flynn_builder::build`.
//!
//! `slugbuilder fetch-buildpacks --list FILE --out DIR [--cache DIR]` fetches a pinned
//! buildpack list into a buildpacks directory when an image is built (see
//! `flynn_builder::buildpack::fetch`).

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use flynn_builder::{
    build::{self, BuildOptions, DEFAULT_STACK, Source},
    buildpack::fetch,
    output::{Log, error_chain},
    slug::DEFAULT_MAX_SIZE,
};

/// Where Kubernetes reads a container's termination message from.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Builds an app's source into a slug with Heroku buildpacks.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The app's name (for the output).
    #[arg(long, env = "APP_NAME", default_value = "app")]
    app: String,
    /// The source tarball (.tar.gz or .tar): a file, an http(s) URL, or `-` for stdin.
    #[arg(long, env = "SOURCE_URL", default_value = "-")]
    source: String,
    /// Scratch directory.
    #[arg(long, env = "BUILD_WORK_DIR", default_value = "/tmp/slugbuilder")]
    work_dir: PathBuf,
    /// The builtin buildpacks, tried in order (an `order` file, else sorted names).
    #[arg(long, env = "BUILDPACKS_DIR", default_value = "/buildpacks")]
    buildpacks_dir: PathBuf,
    /// Buildpacks that replace the builtin ones: `URL#REF` items separated by commas or
    /// newlines, fetched (git) on first use and tried in order.
    #[arg(long, env = "BUILDPACK_URLS", value_name = "URL#REF,...")]
    buildpack_urls: Option<String>,
    /// Cache of fetched --buildpack-urls buildpacks, keyed by URL and ref.
    #[arg(long, env = "BUILDPACK_CACHE_DIR")]
    buildpack_cache: Option<PathBuf>,
    /// A config var, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A directory of config vars, one file per var (a mounted Secret).
    #[arg(long, env = "CONFIG_DIR")]
    env_dir: Option<PathBuf>,
    /// Where to PUT the slug (a signed `access=rw` store URL, or with --token).
    #[arg(long, env = "SLUG_PUT_URL")]
    slug_put_url: Option<String>,
    /// The slug URL to report in the result (default: the PUT URL without its query).
    #[arg(long, env = "SLUG_URL")]
    slug_url: Option<String>,
    /// Also write the slug to this file.
    #[arg(long)]
    slug_file: Option<PathBuf>,
    /// The app's build cache in the store (GET and PUT).
    #[arg(long, env = "CACHE_URL")]
    cache_url: Option<String>,
    /// The store's bearer token, when the URLs are not signed.
    #[arg(long, env = "SHELF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Largest slug accepted, in bytes (or with a K, M or G suffix).
    #[arg(long, env = "MAX_SLUG_SIZE", value_parser = parse_size, default_value_t = DEFAULT_MAX_SIZE)]
    max_slug_size: u64,
    /// STACK given to buildpacks.
    #[arg(long, env = "STACK", default_value = DEFAULT_STACK)]
    stack: String,
    /// The commit being built (SOURCE_VERSION for buildpacks).
    #[arg(long, env = "SOURCE_VERSION")]
    source_version: Option<String>,
    /// Write the JSON result here (default: /dev/termination-log when it exists, else the
    /// last line of stdout).
    #[arg(long, env = "RESULT_PATH")]
    result: Option<PathBuf>,
    #[command(flatten)]
    log: flynn_telemetry::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetches a pinned buildpack list into a buildpacks directory (for --buildpacks-dir):
    /// one directory per buildpack, an `order` file and `buildpacks.lock` (the commits).
    FetchBuildpacks(FetchArgs),
}

#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// The list: one `NAME URL#REF` per line, `#` comments (builder/buildpacks/heroku.list).
    #[arg(long, value_name = "FILE")]
    list: PathBuf,
    /// The buildpacks directory to write (created; listed buildpacks in it are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Cache of fetched buildpacks, keyed by URL and ref: a second fetch of the same pins
    /// makes no network request (e.g. ~/.cache/flynn/buildpacks). Default: no cache.
    #[arg(long, env = "BUILDPACK_CACHE_DIR", value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Buildpacks fetched at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
}

/// `fetch-buildpacks`: a line per buildpack on stdout, the errors on stderr.
async fn fetch_buildpacks(args: &FetchArgs) -> anyhow::Result<()> {
    let text = tokio::fs::read_to_string(&args.list)
        .await
        .with_context(|| format!("reading {}", args.list.display()))?;
    let list = fetch::parse_list(&text).with_context(|| format!("{}", args.list.display()))?;
    anyhow::ensure!(
        !list.is_empty(),
        "{} lists no buildpacks",
        args.list.display()
    );
    match fetch::fetch_list(&list, &args.out, args.cache.as_deref(), args.jobs).await {
        Ok(fetched) => {
            for f in fetched {
                println!(
                    "{} {} {}{}",
                    f.buildpack.name,
                    f.buildpack.spec(),
                    f.commit,
                    if f.cached { " (cached)" } else { "" }
                );
            }
            Ok(())
        }
        Err(fetch::FetchErrors(errors)) => {
            for e in &errors {
                eprintln!("slugbuilder fetch-buildpacks: {e}");
            }
            anyhow::bail!(
                "{} of {} buildpacks could not be fetched into {}",
                errors.len(),
                list.len(),
                args.out.display()
            )
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mul)
        .map_err(|_| format!("`{s}` is not a size like 500M"))
}

async fn config_vars(args: &Args) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    if let Some(dir) = &args.env_dir {
        let mut rd = tokio::fs::read_dir(dir)
            .await
            .with_context(|| format!("reading {}", dir.display()))?;
        while let Some(e) = rd.next_entry().await? {
            let name = e.file_name().to_string_lossy().into_owned();
            // A mounted Secret also holds `..data` and timestamped dirs: skip dot names.
            if name.starts_with('.') || !e.path().is_file() {
                continue;
            }
            env.insert(name, tokio::fs::read_to_string(e.path()).await?);
        }
    }
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv}: expected KEY=VALUE"))?;
        env.insert(k.to_owned(), v.to_owned());
    }
    Ok(env)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    args.log.log_format.init("warn");
    if let Some(Command::FetchBuildpacks(fetch_args)) = &args.command {
        if let Err(e) = fetch_buildpacks(fetch_args).await {
            eprintln!("slugbuilder fetch-buildpacks: {}", error_chain(e.as_ref()));
            std::process::exit(1);
        }
        return;
    }
    let log = Log::stdout();
    let result_path = args.result.clone().or_else(|| {
        std::path::Path::new(TERMINATION_LOG)
            .exists()
            .then(|| TERMINATION_LOG.into())
    });
    let outcome = async {
        let opts = BuildOptions {
            app: args.app.clone(),
            source: Source::parse(&args.source),
            work_dir: args.work_dir.clone(),
            buildpacks_dir: args.buildpacks_dir.clone(),
            buildpack_urls: args
                .buildpack_urls
                .as_deref()
                .map(fetch::parse_urls)
                .unwrap_or_default(),
            buildpack_cache: args.buildpack_cache.clone(),
            env: config_vars(&args).await?,
            slug_put_url: args.slug_put_url.clone(),
            slug_file: args.slug_file.clone(),
            slug_url: args.slug_url.clone(),
            cache_url: args.cache_url.clone(),
            token: args.token.clone(),
            max_slug_size: args.max_slug_size,
            stack: args.stack.clone(),
            source_version: args.source_version.clone(),
        };
        anyhow::Ok(build::build(&opts, &log).await?)
    }
    .await;
    let (json, code) = match outcome {
        Ok(result) => (serde_json::to_string(&result).unwrap_or_default(), 0),
        Err(e) => {
            let msg = error_chain(e.as_ref());
            log.line(&format!(" !     {msg}"));
            (serde_json::json!({ "error": msg }).to_string(), 1)
        }
    };
    match result_path {
        Some(p) => {
            if let Err(e) = std::fs::write(&p, format!("{json}\n")) {
                log.line(&format!(
                    " !     could not write the result to {}: {e}",
                    p.display()
                ));
                std::process::exit(1);
            }
        }
        None => log.line(&json),
    }
    std::process::exit(code);
}
