//! The CLI side: finds the daemon, sends requests, prints answers.

/// `print!` for command output. A reader that went away (`corral ps | head -1`) ends the command quietly
/// with exit code 0, as it ends ripgrep, instead of the panic `print!` gives on a closed pipe; so does any
/// other write error, since there is nowhere left to report it.
macro_rules! out {
    ($($arg:tt)*) => { $crate::client::write_or_exit(&mut std::io::stdout().lock(), format_args!($($arg)*)) };
}

/// `println!` for command output (see [`out!`]).
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => { out!("{}\n", format_args!($($arg)*)) };
}

/// `eprint!` for what the command passes on from stderr (see [`out!`]).
macro_rules! err {
    ($($arg:tt)*) => { $crate::client::write_or_exit(&mut std::io::stderr().lock(), format_args!($($arg)*)) };
}

/// `eprintln!` for the CLI's own messages (see [`out!`]).
macro_rules! errln {
    ($($arg:tt)*) => { err!("{}\n", format_args!($($arg)*)) };
}

/// Writes and flushes; on failure the reader is gone: exit quietly.
pub(crate) fn write_or_exit(to: &mut dyn std::io::Write, args: std::fmt::Arguments<'_>) {
    if to.write_fmt(args).and_then(|()| to.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Writes a line of a process's output to stdout or stderr (as its stream was) exactly as the process wrote
/// it. An error means the reader is gone.
pub(crate) fn write_output(line: &crate::api::OutputLine) -> std::io::Result<()> {
    use std::io::Write as _;
    let raw = line.raw();
    if line.stream == "stderr" {
        let mut err = std::io::stderr().lock();
        err.write_all(&raw).and_then(|()| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&raw).and_then(|()| out.flush())
    }
}

pub(crate) mod commands;
pub(crate) mod exec;
pub(crate) mod progress;
pub(crate) mod tasks;
pub(crate) mod transport;
