//! How every Flynn component runs, written once: the `--log-format text|json` flag and the
//! tracing setup behind it ([`log`]), and the admin server ([`admin`]): `/metrics` (the
//! component's families, its `<component>_build_info` and the standard `process_*`
//! metrics), `/healthz` and `/readyz`.
//!
//! This crate owns exactly that. What a component measures, and what makes it ready, stay
//! in the component ([`admin::Component`]).

pub mod admin;
pub mod log;
mod process;

pub use admin::{Admin, Component};
pub use log::{LogArgs, LogFormat};
