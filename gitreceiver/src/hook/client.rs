//! `flynn-gitreceiver hook pre-receive`: run by `git receive-pack` in the App's repository.
//! Plain blocking I/O and no async runtime: it starts on every push, so it starts fast.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use super::protocol::{RefUpdate, Reply, Request};
use super::{SOCKET_ENV, TOKEN_ENV};

/// Runs the hook: ref updates from stdin, the receiver's output to stdout (which
/// receive-pack sends to the pusher), and the exit code: 0 accepts the push.
pub fn pre_receive() -> i32 {
    match run() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(msg) => {
            println!(" !     {msg}");
            1
        }
    }
}

fn run() -> Result<bool, String> {
    let (Some(socket), Some(token)) = (std::env::var_os(SOCKET_ENV), std::env::var(TOKEN_ENV).ok())
    else {
        return Err("this repository only takes pushes through flynn-gitreceiver".into());
    };
    let mut updates = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading the ref updates: {e}"))?;
        let update = RefUpdate::parse(line.trim_end())
            .ok_or_else(|| format!("unexpected hook input {line:?}"))?;
        updates.push(update);
    }
    let request = Request {
        token,
        updates,
        quarantine: std::env::var("GIT_QUARANTINE_PATH").ok(),
    };
    let mut stream = UnixStream::connect(&socket)
        .map_err(|e| format!("the receiver is not answering ({e}); push again"))?;
    let mut body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    body.push(b'\n');
    stream
        .write_all(&body)
        .map_err(|e| format!("talking to the receiver: {e}"))?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| format!("the receiver went away: {e}"))?;
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Line(text)) => {
                // One write per line, flushed: the pusher sees the build as it happens.
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Ok(Reply::Done { accept }) => return Ok(accept),
            Err(e) => return Err(format!("unexpected answer from the receiver: {e}")),
        }
    }
    Err("the receiver stopped before the push was finished; push again".into())
}
