//! Integration tests: the real `corral` binary on temp state dirs, used as a user would.

mod util;

mod api;
mod auth;
mod exec;
mod interrupt;
mod lifecycle;
mod pipelines;
mod processes;
mod tasks;
