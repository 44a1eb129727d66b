//! Runs one command under corral-proc supervision, the way `corral run` will: output streamed live,
//! Ctrl-C (or SIGTERM) stops the whole tree gracefully, and the exit code is the child's.
//!
//! ```text
//! cargo run -p corral-proc --example run -- [--timeout SECS] [--grace SECS] CMD ARG...
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use corral_proc::{Command, EventKind, Outcome, Received, Registry, Stream};

fn usage() -> ExitCode {
    eprintln!("usage: run [--timeout SECS] [--grace SECS] CMD ARG...");
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut timeout = None;
    let mut grace = Duration::from_secs(10);
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        if flag == "--" {
            break;
        }
        let Some(value) = (!args.is_empty())
            .then(|| args.remove(0))
            .and_then(|v| v.parse::<f64>().ok())
        else {
            return usage();
        };
        match flag.as_str() {
            "--timeout" => timeout = Some(Duration::from_secs_f64(value)),
            "--grace" => grace = Duration::from_secs_f64(value),
            _ => return usage(),
        }
    }
    if args.is_empty() {
        return usage();
    }
    if let Err(err) = corral_proc::reaper::enable_subreaper() {
        eprintln!("run: warning: cannot become a subreaper: {err}");
    }
    let registry = Registry::new();
    let mut events = registry.subscribe();
    let mut command = Command::new(&args).grace(grace);
    if let Some(timeout) = timeout {
        command = command.timeout(timeout);
    }
    let process = match registry.spawn(command) {
        Ok(process) => process,
        Err(err) => {
            eprintln!("run: {err}");
            return ExitCode::from(127);
        }
    };
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
    ) else {
        eprintln!("run: cannot install signal handlers");
        return ExitCode::from(1);
    };
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Some(Received::Event(event)) => match event.kind {
                    EventKind::Output { stream, lines } => {
                        for line in lines.iter() {
                            let newline = if line.end == corral_proc::LineEnd::Split { "" } else { "\n" };
                            let text = line.to_string_lossy();
                            let _ = match stream {
                                Stream::Stdout => write!(std::io::stdout(), "{text}{newline}"),
                                Stream::Stderr => write!(std::io::stderr(), "{text}{newline}"),
                            };
                        }
                    }
                    EventKind::Signaled { signal } => eprintln!("run: sent {signal} to the process group"),
                    EventKind::Exited(_) => break,
                    EventKind::Started { .. } => {}
                },
                Some(Received::Missed(n)) => eprintln!("run: ... {n} output events dropped ..."),
                None => break,
            },
            _ = interrupt.recv() => process.start_shutdown(grace),
            _ = terminate.recv() => process.start_shutdown(grace),
        }
    }
    let finished = process.wait().await;
    match (&finished.outcome, finished.exit_code(), finished.signal()) {
        (Outcome::Completed, _, _) => ExitCode::SUCCESS,
        (_, Some(code), _) => ExitCode::from(code.clamp(1, 255) as u8),
        (_, None, Some(signal)) => ExitCode::from((128 + signal.number()).clamp(1, 255) as u8),
        _ => ExitCode::from(1),
    }
}
