//! The pre-receive hook and the receiver's side of it.
//!
//! Why a hook: `git receive-pack` copies what its hooks print to side-band 2, which the
//! client shows as `remote:` lines, and a hook that exits non-zero rejects the whole push
//! (`pre-receive hook declined`) before any ref moves. So the build runs while the hook
//! waits: its log reaches the pusher as it happens, and a failed build leaves the deploy
//! branch (and the running release) where they were.
//!
//! Why a socket: the hook is a separate process (this binary, `hook pre-receive`), but the
//! pipeline, the Kubernetes client and the push's identity live in the receiver. The
//! receiver passes the socket path and a random per-push token in the environment of the
//! `receive-pack` it starts; the hook sends its ref updates with the token and copies the
//! answer to its stdout. If the client goes away, the receiver kills receive-pack's process
//! group, the hook dies, the socket closes, and the receiver cancels the build.

pub mod client;
pub mod protocol;
pub mod server;

/// Environment variable: the receiver's hook socket.
pub const SOCKET_ENV: &str = "FLYNN_HOOK_SOCKET";
/// Environment variable: the push's token.
pub const TOKEN_ENV: &str = "FLYNN_HOOK_TOKEN";
