//! The router's HTTP/1.1 wire code, apart from its routing policy, so that it can be read,
//! tested and fuzzed on its own (`tests/differential.rs` runs it against hyper on generated
//! input).
//!
//! - [`server`]: the router's own HTTP/1.1 server for the request almost every client
//!   sends (HTTP/1.1, no body, no upgrade); anything else is handed, with the bytes
//!   already read, to hyper's server. What to answer is the caller's ([`server::Respond`]).
//! - [`client`]: the router's own HTTP/1.1 backend client for requests without a body:
//!   keep-alive connection pools, response heads parsed with `httparse`, bodies streamed
//!   or copied with their framing as received.
//! - [`host`] (which `Host` values are accepted), [`hop`] (hop-by-hop headers),
//!   [`method`] (which methods a proxy may repeat): the one table of each, used by the
//!   router's paths through hyper too.
//! - [`head_timer`]: one timer per connection for request-head deadlines.
//!
//! This crate knows nothing of routes, endpoints or metrics: it must not depend on the
//! router.

pub mod client;
pub mod head_timer;
pub mod hop;
pub mod host;
pub mod method;
pub mod server;
