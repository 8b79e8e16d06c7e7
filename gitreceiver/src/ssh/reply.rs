//! How the server ends a session channel: exit status, EOF, close; a refusal says why on
//! stderr first. The channel task and the push both end channels this way.

use russh::ChannelWriteHalf;
use russh::server::Msg;

/// One line on stderr, exit status 1, EOF, close.
pub(super) async fn refuse(tx: &ChannelWriteHalf<Msg>, message: &str) {
    let _ = tx
        .extended_data_bytes(1, bytes::Bytes::from(format!("{message}\n")))
        .await;
    finish(tx, 1).await;
}

/// Exit status, then EOF and close (OpenSSH's and gitlab-sshd's order).
pub(super) async fn finish(tx: &ChannelWriteHalf<Msg>, status: u32) {
    let _ = tx.exit_status(status).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}
