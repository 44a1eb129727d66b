//! Integration tests of corral-store through its public API, on real database files.
//! One test binary, one behaviour per module.

mod util;

mod compat;
mod labels;
mod lifecycle;
mod meta;
mod open;
mod retention;
mod task_races;
mod task_recovery;
mod tasks;
