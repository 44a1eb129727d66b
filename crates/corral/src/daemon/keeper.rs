//! The daemon's keeper: found or started at start-up, told to exit at a clean stop.
//!
//! The keeper (`corral keeper`, see `corral_proc::keeper`) parents every child, so children outlive a
//! crash of the daemon. One keeper serves one state directory: its socket is `<state_dir>/keeper.sock`,
//! its spool `<state_dir>/keeper-spool/`. A daemon that starts finds the keeper a crashed daemon left
//! (and re-attaches its children), or starts a new one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use corral_proc::keeper::{self, Client, KeeperError, State};
use std::io::Write as _;

/// The hidden subcommand that runs the keeper.
pub(crate) const SUBCOMMAND: &str = "keeper";

fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("keeper.sock")
}

fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("keeper-spool")
}

/// Connects to the state directory's keeper, starting one first if none runs. Returns the connection
/// and what the keeper holds (children left by an earlier daemon, with their output and exits).
pub(crate) async fn attach(state_dir: &Path) -> anyhow::Result<(Arc<Client>, State)> {
    let socket = socket_path(state_dir);
    match Client::connect(&socket).await {
        Ok((client, state)) => {
            tracing::info!(children = state.children.len(), socket = %socket.display(), "attached to the running keeper");
            return Ok((Arc::new(client), state));
        }
        Err(KeeperError::Connect { .. }) => {} // none runs: start one
        Err(err) => return Err(err).context("the keeper refused us"),
    }
    let program = std::env::current_exe().context("cannot find our own executable to run the keeper")?;
    let spool = spool_dir(state_dir);
    let started = {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || keeper::start(&socket, &spool, &program, &[SUBCOMMAND]))
            .await
            .context("the keeper start task failed")?
    };
    match started {
        Ok(pid) => tracing::info!(pid, socket = %socket.display(), "keeper started"),
        // Another one came up meanwhile: use it.
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(err) => return Err(err).context("cannot start the keeper"),
    }
    let (client, state) = Client::connect(&socket)
        .await
        .with_context(|| format!("cannot connect to the keeper at {}", socket.display()))?;
    Ok((Arc::new(client), state))
}

/// Tells the keeper to exit (a clean daemon stop, every child already stopped and recorded).
pub(crate) async fn stop(client: &Client) {
    let stop = tokio::time::timeout(std::time::Duration::from_secs(5), client.shutdown());
    match stop.await {
        Ok(Ok(())) => tracing::info!("keeper stopped"),
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot stop the keeper"),
        Err(_) => tracing::warn!("the keeper did not stop within 5 s"),
    }
}

/// `corral keeper`: runs the keeper in this process (started by [`attach`] with its paths in the
/// environment). Not for users: it exits with an error when started by hand without them.
pub(crate) fn run() -> std::process::ExitCode {
    match keeper::run_from_env() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "corral keeper: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
