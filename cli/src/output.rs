//! How results reach the user: aligned tables, JSON or YAML (`-o`), ages, and colour.
//!
//! Rendering is pure (rows and `now` in, text out), so table layouts have golden tests
//! (`cli/tests/golden/`); printing is the only I/O.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::errors::{Error, Result};

/// `-o`: how lists and objects are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON, for scripts (`jq`).
    Json,
    /// YAML.
    Yaml,
}

/// What the terminal can do: whether stdout/stderr are terminals and colour is wanted.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    pub stdout_tty: bool,
    pub stderr_tty: bool,
    /// Colour on stdout; off when it is not a terminal, `NO_COLOR` is set, or TERM=dumb.
    pub color: bool,
    /// Colour on stderr (errors, progress).
    pub color_err: bool,
}

impl Ui {
    /// Reads the terminal and the environment (<https://no-color.org>: any non-empty `NO_COLOR`).
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        let stdout_tty = std::io::stdout().is_terminal();
        let stderr_tty = std::io::stderr().is_terminal();
        Ui {
            stdout_tty,
            stderr_tty,
            color: stdout_tty && !no_color,
            color_err: stderr_tty && !no_color,
        }
    }
}

/// ANSI styles; every function returns the text unchanged when `on` is false.
pub mod style {
    pub fn bold(on: bool, s: &str) -> String {
        wrap(on, "1", s)
    }
    pub fn dim(on: bool, s: &str) -> String {
        wrap(on, "2", s)
    }
    pub fn red(on: bool, s: &str) -> String {
        wrap(on, "31", s)
    }
    pub fn green(on: bool, s: &str) -> String {
        wrap(on, "32", s)
    }
    pub fn yellow(on: bool, s: &str) -> String {
        wrap(on, "33", s)
    }
    /// One of six distinguishable colours picked by hashing `key` (log prefixes per pod).
    pub fn by_key(on: bool, key: &str, s: &str) -> String {
        const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "31"];
        let hash = key.bytes().fold(5381u32, |h, b| {
            h.wrapping_mul(33).wrapping_add(u32::from(b))
        });
        wrap(on, PALETTE[hash as usize % PALETTE.len()], s)
    }
    fn wrap(on: bool, code: &str, s: &str) -> String {
        if on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

/// Rows under a header, rendered with columns aligned by two spaces.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text; the header in bold when `color`. Trailing spaces are trimmed,
    /// so the last column may be ragged (kubectl does the same).
    pub fn render(&self, color: bool) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let line = |cells: &[String], bold: bool| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate().take(columns) {
                let text = if bold {
                    style::bold(color, cell)
                } else {
                    cell.clone()
                };
                out.push_str(&text);
                if i + 1 < columns {
                    out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&self.header, true);
        for row in &self.rows {
            out.push_str(&line(row, false));
        }
        out
    }
}

/// Display width: characters, not bytes ("✓" is one column). Good enough for the text
/// these tables hold (names, numbers, URLs, a few symbols).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// An age as kubectl prints it: `42s`, `5m`, `3h`, `12d` (`-` when unknown).
pub fn age(since: Option<Timestamp>, now: Timestamp) -> String {
    let Some(since) = since else {
        return "-".into();
    };
    let secs = (now.as_second() - since.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The creation time of an object, for [`age`].
pub fn created(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Timestamp> {
    meta.creation_timestamp.as_ref().map(|t| t.0)
}

/// Prints `value` as JSON or YAML (for `-o json|yaml`).
pub fn print_data<T: Serialize>(format: Format, value: &T) -> Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Io {
                action: "rendering JSON".into(),
                source: std::io::Error::other(e),
            })?,
        Format::Yaml | Format::Table => serde_saphyr::to_string(value).map_err(|e| Error::Io {
            action: "rendering YAML".into(),
            source: std::io::Error::other(e),
        })?,
    };
    print_out(&text)
}

/// Writes to stdout, treating a closed pipe (`flynn apps | head -1`) as success.
pub fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("writing to stdout")(e)),
    }
}

/// A status line on stderr (`Created app shop`), so stdout stays clean for data.
pub fn note(ui: Ui, text: &str) {
    eprintln!("{}", style::dim(ui.color_err, text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_by_the_widest_cell() {
        let mut t = Table::new(["NAME", "RELEASE", "URL"]);
        t.row(vec![
            "shop".into(),
            "v12".into(),
            "http://shop.flynn.local".into(),
        ]);
        t.row(vec!["a-longer-name".into(), "-".into(), "".into()]);
        assert_eq!(
            t.render(false),
            "NAME           RELEASE  URL\n\
             shop           v12      http://shop.flynn.local\n\
             a-longer-name  -\n"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let ago = |s: i64| Some(Timestamp::from_second(1_000_000 - s).unwrap());
        assert_eq!(age(ago(5), now), "5s");
        assert_eq!(age(ago(119), now), "119s");
        assert_eq!(age(ago(600), now), "10m");
        assert_eq!(age(ago(3 * 3600), now), "3h");
        assert_eq!(age(ago(3 * 86400), now), "3d");
        assert_eq!(age(None, now), "-");
    }

    #[test]
    fn styles_are_plain_without_colour() {
        assert_eq!(style::bold(false, "x"), "x");
        assert_eq!(style::bold(true, "x"), "\x1b[1mx\x1b[0m");
        assert_eq!(
            style::by_key(true, "pod-a", "x"),
            style::by_key(true, "pod-a", "x")
        );
    }
}
