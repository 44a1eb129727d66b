//! The CLI side: finds the daemon, sends requests, prints answers.

pub(crate) mod commands;
pub(crate) mod exec;
pub(crate) mod progress;
pub(crate) mod tasks;
pub(crate) mod transport;
