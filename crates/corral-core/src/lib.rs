//! corral-core: corral's domain.
//!
//! This crate turns *what to run* into supervised work, on top of the process core (`corral-proc`) and the
//! store (`corral-store`). Today it holds:
//!
//! - [`units`]: durations and sizes as corral's files and APIs write them (`"30s"`, `"50MB"`), with serde
//!   helpers.
//! - [`pipeline`]: a DAG of commands with `after` dependencies, `allow_failure`, a parallelism cap,
//!   timeouts, cancellation, live progress events and a snapshot of every step.
//!
//! It knows nothing about HTTP or the CLI: it never imports axum or clap, and leaves wire formats to the
//! `corral` binary. Results are `serde`-serializable data, not a wire contract.

pub mod builtin;
pub mod events;
pub mod pipeline;
pub mod processes;
pub mod redact;
pub mod steps;
pub mod tasks;
pub mod tools;
pub mod units;
