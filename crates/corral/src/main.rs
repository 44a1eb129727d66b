//! `corral`: the one binary. `corral daemon` runs the daemon; every other subcommand is a client of it.
//!
//! This crate is the only one that speaks HTTP or chooses wire formats (`api`); the domain lives in
//! corral-core, processes in corral-proc, records in corral-store. Exit codes are decided here, in
//! one place: 0 success, 1 failure, 2 bad usage or bad configuration, and for `run` the child's code.

mod api;
mod cli;
mod client;
mod config;
mod daemon;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::transport::Client;
use std::io::Write as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Keeper = cli.command {
        // The keeper runs no tokio: it must not start a runtime's threads.
        return daemon::keeper::run();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "corral: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            // Not `eprintln!`: it panics when stderr is a closed pipe.
            let message = if json {
                serde_json::json!({"error": format!("{err:#}")}).to_string()
            } else {
                format!("corral: {err:#}")
            };
            let _ = writeln!(std::io::stderr(), "{message}");
            if err.downcast_ref::<config::ConfigError>().is_some() || err.downcast_ref::<daemon::UsageError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = || Client::new(cli.socket.clone(), cli.url.clone(), cli.token.clone());
    match cli.command {
        Command::Daemon(args) => {
            daemon::init_logging();
            let config = config::Config::load(args.config.as_deref(), args.state_dir.as_deref())?;
            daemon::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => client::commands::status(&client()?, cli.json).await,
        Command::Run(args) => client::commands::run(&client()?, args, cli.json).await,
        Command::Ps(args) => client::commands::ps(&client()?, args, cli.json).await,
        Command::Logs(args) => client::commands::logs(&client()?, args, cli.json).await,
        Command::Stop(args) => client::commands::stop(&client()?, args, cli.json).await,
        Command::Signal(args) => client::commands::signal(&client()?, args, cli.json).await,
        Command::Interrupt(args) => client::commands::interrupt(&client()?, args, cli.json).await,
        Command::Daemons => client::commands::daemons(cli.json),
        Command::Pipeline(command) => client::commands::pipeline(&client()?, command, cli.json).await,
        Command::Task(command) => client::tasks::task(&client()?, command, cli.json).await,
        Command::Tools => client::exec::tools(&client()?, cli.json).await,
        Command::Exec {
            tool,
            command,
            args,
            wait,
        } => client::exec::exec(&client()?, &tool, &command, args, wait, cli.json).await,
        Command::Job { id, wait } => client::exec::job(&client()?, &id, wait, cli.json).await,
        Command::Keeper => Ok(daemon::keeper::run()),
    }
}
