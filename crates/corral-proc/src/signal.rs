//! Signals by name or number, without exposing the OS crate's signal type.

use std::fmt;
use std::str::FromStr;

/// A Unix signal that corral can send.
///
/// Only the named signals of the platform are representable: an arbitrary integer is checked when parsed,
/// so a `Signal` always names a signal the kernel knows.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

/// Names (without the `SIG` prefix) and numbers of the signals we accept, in the order `kill -l` lists them.
const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

impl Signal {
    /// `SIGHUP`: hang up; many daemons reload their configuration on it.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGINT`: interrupt, as Ctrl-C sends.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGQUIT`: quit with a core dump.
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// `SIGKILL`: cannot be caught or ignored.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGUSR1`: user-defined.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2`: user-defined.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// `SIGTERM`: the polite request to stop, sent first by a graceful shutdown.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGCONT`: continue a stopped process.
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// `SIGSTOP`: stop (pause) a process; cannot be caught.
    pub const STOP: Signal = Signal(libc::SIGSTOP);

    /// The signal with this number, if the platform names one.
    pub fn from_number(number: i32) -> Option<Signal> {
        NAMES.iter().find(|(_, n)| *n == number).map(|(_, n)| Signal(*n))
    }

    /// The signal with this name: `TERM`, `SIGTERM` and `sigterm` all work.
    pub fn from_name(name: &str) -> Option<Signal> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        let bare = match bare {
            "IOT" => "ABRT",
            "CLD" => "CHLD",
            "POLL" => "IO",
            other => other,
        };
        NAMES.iter().find(|(n, _)| *n == bare).map(|(_, n)| Signal(*n))
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The name without the `SIG` prefix, e.g. `TERM`.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
            .unwrap_or("?")
    }

    pub(crate) fn to_rustix(self) -> rustix::process::Signal {
        // Every `Signal` is built from `NAMES`, all of which rustix names too.
        rustix::process::Signal::from_named_raw(self.0).unwrap_or(rustix::process::Signal::KILL)
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

/// The text given to [`Signal::from_str`] names no signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {0:?} (use a name such as TERM or a number such as 15)")]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;

    /// Parses `TERM`, `SIGTERM`, `term` or `15`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let found = match text.parse::<i32>() {
            Ok(number) => Signal::from_number(number),
            Err(_) => Signal::from_name(text),
        };
        found.ok_or_else(|| UnknownSignal(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        for text in ["TERM", "SIGTERM", "sigterm", "15", " term "] {
            assert_eq!(text.parse::<Signal>(), Ok(Signal::TERM), "{text}");
        }
        assert_eq!("9".parse::<Signal>(), Ok(Signal::KILL));
        assert_eq!("IOT".parse::<Signal>().map(Signal::name), Ok("ABRT"));
        assert!("NOPE".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
        assert!("99".parse::<Signal>().is_err());
        assert!("-15".parse::<Signal>().is_err());
    }

    #[test]
    fn names_round_trip() {
        for (name, number) in NAMES {
            let signal = Signal::from_number(*number).expect("UNWRAP: listed");
            assert_eq!(signal.name(), *name);
            assert_eq!(signal.to_rustix().as_raw(), *number);
            assert_eq!(signal.to_string(), format!("SIG{name}"));
        }
    }
}
