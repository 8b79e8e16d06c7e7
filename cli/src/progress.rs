//! Waiting where the user can see it: a spinner on a terminal, plain lines otherwise.
//!
//! On a terminal the spinner redraws one stderr line in place; in a pipe or a CI log a
//! spinner is noise, so each *new* message is printed once, as a line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::output::{Ui, style};

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// A running wait; [`Progress::set`] changes its message, [`Progress::done`] ends it.
#[derive(Debug)]
pub struct Progress {
    ui: Ui,
    message: Arc<Mutex<String>>,
    spinner: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(ui: Ui, message: impl Into<String>) -> Self {
        let message = Arc::new(Mutex::new(message.into()));
        let spinner = if ui.stderr_tty {
            let message = message.clone();
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                for frame in FRAMES.iter().cycle() {
                    tick.tick().await;
                    let text = message.lock().map(|m| m.clone()).unwrap_or_default();
                    eprint!("\r\x1b[2K{} {text}", style::yellow(ui.color_err, frame));
                }
            }))
        } else {
            eprintln!("{}", message.lock().map(|m| m.clone()).unwrap_or_default());
            None
        };
        Progress {
            ui,
            message,
            spinner,
        }
    }

    /// Changes the message (printed as a new line off a terminal, if it changed).
    pub fn set(&self, text: impl Into<String>) {
        let text = text.into();
        let Ok(mut message) = self.message.lock() else {
            return;
        };
        if *message != text {
            if self.spinner.is_none() {
                eprintln!("{text}");
            }
            *message = text;
        }
    }

    /// Ends the wait with a final line (`✓ web=3/3 ready`), or none.
    pub fn done(mut self, final_line: Option<&str>) {
        self.stop();
        if let Some(line) = final_line {
            eprintln!("{}", style::green(self.ui.color_err, line));
        }
    }

    fn stop(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

impl Drop for Progress {
    /// An error or Ctrl-C mid-wait must not leave a half-drawn spinner line behind.
    fn drop(&mut self) {
        self.stop();
    }
}
