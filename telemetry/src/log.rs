//! `--log-format text|json`, and the subscriber behind it.
//!
//! Every binary logs with `tracing` to stderr (stdout is the builder's build output and the
//! CLI's answer), filtered by `RUST_LOG`. `text` is for people at a terminal; `json` is one
//! object per line, with the current span's fields, for a log collector.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// The flag, to `#[command(flatten)]` into a binary's arguments. Its environment variable
/// is `FLYNN_LOG_FORMAT` in every component: prefixed, because the slugrunner and the
/// slugbuilder run with an app's config vars, and `LOG_FORMAT` is a common one of theirs
/// (an app's `LOG_FORMAT=logfmt` must not stop its own runner).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, env = "FLYNN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogFormat {
    /// Installs the global subscriber: `RUST_LOG` filters (default `default_filter`, e.g.
    /// `info,kube=warn`). A second call does nothing: tests may each ask for logs.
    pub fn init(self, default_filter: &str) {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match self {
            Self::Text => builder.try_init(),
            Self::Json => builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .try_init(),
        };
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn the_flag_takes_text_or_json_and_refuses_anything_else() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.log.log_format);
        assert_eq!(parse(&["x"]).unwrap(), LogFormat::Text);
        assert_eq!(
            parse(&["x", "--log-format", "json"]).unwrap(),
            LogFormat::Json
        );
        assert_eq!(parse(&["x", "--log-format=text"]).unwrap(), LogFormat::Text);
        // A typo is an error that names the choices, not a silent fallback to text.
        let err = parse(&["x", "--log-format", "jsno"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("jsno") && err.contains("text") && err.contains("json"),
            "{err}"
        );
    }
}
