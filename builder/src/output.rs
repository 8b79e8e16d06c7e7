//! What the user sees of a build, formatted as Heroku does: `-----> ` headers, and
//! everything else indented by seven spaces so it lines up under the header text.

/// Prefix of a step header.
pub const HEADER: &str = "-----> ";
/// Indentation of everything under a header.
pub const INDENT: &str = "       ";

/// A header line: `-----> Building app...`.
pub fn header(text: &str) -> String {
    format!("{HEADER}{text}")
}

/// A buildpack's output line as shown: headers and lines the buildpack already indented
/// (Heroku buildpacks print `-----> ` and seven spaces themselves) pass unchanged; anything
/// else is indented so it reads as belonging to the step above.
pub fn indent_line(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty()
        || line.starts_with(HEADER)
        || line.starts_with(INDENT)
        || line.starts_with(" !")
    {
        line.to_owned()
    } else {
        format!("{INDENT}{line}")
    }
}

/// A size as Heroku prints it: `5.2M`, `812K`, `12 B`.
pub fn human_size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b >= K * K * K {
        format!("{:.1}G", b / (K * K * K))
    } else if b >= K * K {
        format!("{:.1}M", b / (K * K))
    } else if b >= K {
        format!("{:.0}K", b / K)
    } else {
        format!("{bytes} B")
    }
}

/// An error and its causes on one line, each cause once: several of our errors quote their
/// source in their message and also expose it as `source()`, and hyper's hide the useful
/// part ("Connection refused") in theirs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = c.source();
    }
    out
}

/// Where the build's user-facing output goes (stdout in the slugbuilder, a buffer in
/// tests), one flushed line at a time so it streams through `kubectl logs` and SSH.
pub struct Log {
    sink: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Log")
    }
}

impl Log {
    /// A log writing to `sink`.
    pub fn new(sink: impl std::io::Write + Send + 'static) -> Self {
        Self {
            sink: std::sync::Mutex::new(Box::new(sink)),
        }
    }

    /// A log writing to stdout.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }

    /// Writes one line. A closed stdout (the user hung up) must not fail the build.
    pub fn line(&self, line: &str) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(sink, "{line}");
        let _ = sink.flush();
    }

    /// Writes a `-----> ` header.
    pub fn header(&self, text: &str) {
        self.line(&header(text));
    }

    /// Writes an indented line.
    pub fn info(&self, text: &str) {
        self.line(&format!("{INDENT}{text}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_like_heroku() {
        assert_eq!(
            indent_line("-----> Installing python"),
            "-----> Installing python"
        );
        assert_eq!(indent_line("       Collecting x"), "       Collecting x");
        assert_eq!(indent_line("plain\n"), "       plain");
        assert_eq!(indent_line(" !     Push rejected"), " !     Push rejected");
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "outer: refused");
    }

    #[test]
    fn sizes_read_like_heroku() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(5 * 1024 * 1024 + 210_000), "5.2M");
        assert_eq!(human_size(812 * 1024), "812K");
    }
}
