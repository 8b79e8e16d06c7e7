//! The builder half of `git push`: Heroku buildpacks turn an app's source into a *slug* (a
//! gzip'd tarball of the built app), the slug store ("shelf") keeps it, and slugrunner runs
//! it as an app container's entrypoint.
//!
//! The three binaries (`slugbuilder`, `slugrunner`, `shelf`) are thin wrappers around
//! [`build`], [`runner`] and [`store`]; everything they do is testable from here.

pub mod build;
pub mod buildpack;
pub mod client;
pub mod digest;
pub mod output;
pub mod procfile;
pub mod release;
pub mod runner;
pub mod shell;
pub mod signing;
pub mod slug;
pub mod slugignore;
pub mod store;
