//! The router's own HTTP/1.1 client for requests without a body (the common case: GET,
//! HEAD, ...): per-endpoint pools of idle keep-alive connections, the request head written
//! with one call from a buffer the connection keeps, the response head parsed with
//! `httparse` and the body streamed from the connection's read buffer by the task that
//! serves the client.
//!
//! Why not hyper's client here: it runs each backend connection as a task of its own and
//! hands every request and response across two channels, plus a fresh read buffer per
//! response; for a proxy that is most of its per-request overhead. Requests with a body
//! and upgrades still go through hyper's client (`http_proxy`).

mod body;
mod chunked;
mod conn;
mod exchange;
pub mod hop;
mod pool;
mod response;

pub use body::{BodyError, ResponseBody};
pub use conn::{BackendConn, ConnectError};
pub use exchange::{ExchangeError, MAX_HEAD_BYTES, exchange};
pub use pool::ConnPool;
pub use response::{Framing, HeadError, ResponseHead};
