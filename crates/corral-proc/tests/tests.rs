//! Integration tests of corral-proc against real processes. One test binary, one behaviour per module.

mod util;

mod events;
mod output;
mod registry;
mod spawn;
mod stop;
