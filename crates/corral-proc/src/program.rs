//! [`Program`]: find a program in `PATH` and run it to completion with its combined output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::command::{is_executable, Command};
use crate::error::SpawnError;
use crate::event::Stream;
use crate::process::Finished;

/// A program found by name, run for its output. For one-shot helpers (`git rev-parse`, `systemctl
/// is-active`) rather than supervised work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    name: String,
    path: PathBuf,
}

/// The result of [`Program::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOutput {
    /// How it ended.
    pub finished: Finished,
    /// Stdout and stderr interleaved as written, lossily decoded, with surrounding white space trimmed.
    pub output: String,
}

impl ProgramOutput {
    /// True when it exited with code 0.
    pub fn is_success(&self) -> bool {
        self.finished.is_success()
    }
}

/// The program was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("program {name:?} not found in PATH")]
pub struct ProgramNotFound {
    /// The name looked up.
    pub name: String,
}

impl Program {
    /// Finds `name` in `PATH` (or checks it, when it holds a `/`).
    pub fn find(name: &str) -> Result<Program, ProgramNotFound> {
        find_in_path(name, std::env::var_os("PATH").as_deref())
            .map(|path| Program {
                name: name.to_owned(),
                path,
            })
            .ok_or_else(|| ProgramNotFound { name: name.to_owned() })
    }

    /// The name it was looked up by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it was found.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A [`Command`] for this program with these arguments, to adjust before spawning.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = vec![self.path.as_os_str().to_owned()];
        argv.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        Command::new(argv)
    }

    /// Runs it in the current directory and waits; the output is returned also when it fails.
    pub async fn run<I, S>(&self, args: I) -> Result<ProgramOutput, SpawnError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_combined(self.command(args)).await
    }

    /// Runs it in `dir` and waits; the output is returned also when it fails.
    pub async fn run_in<I, S>(&self, dir: impl AsRef<Path>, args: I) -> Result<ProgramOutput, SpawnError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_combined(self.command(args).dir(dir.as_ref())).await
    }
}

async fn run_combined(command: Command) -> Result<ProgramOutput, SpawnError> {
    let process = command.merge_stderr().spawn()?;
    let finished = process.wait().await;
    let output = process
        .output(Stream::Stdout)
        .map(|o| o.to_string_lossy().trim().to_owned())
        .unwrap_or_default();
    Ok(ProgramOutput { finished, output })
}

/// Looks `name` up in a `PATH` value. A name with a `/` is checked as a path. Empty entries mean the
/// current directory, as in POSIX shells.
pub fn find_in_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(path_var?)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(name)
            } else {
                dir.join(name)
            }
        })
        .find(|candidate| is_executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        let path = find_in_path("sh", Some(OsStr::new("/nonexistent:/usr/bin:/bin"))).expect("UNWRAP: sh exists");
        assert!(path.ends_with("sh"));
        assert!(find_in_path("corral-no-such-program", Some(OsStr::new("/usr/bin:/bin"))).is_none());
        assert!(find_in_path("/etc/passwd", None).is_none(), "not executable");
        assert!(find_in_path("", Some(OsStr::new("/bin"))).is_none());
    }
}
