//! Live progress of a pipeline: a line per step with a timer on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::transport::Client;

/// `SIGINT` and `SIGTERM`, installed before the pipeline is submitted: a Ctrl-C then cancels it instead of
/// killing the command and leaving it to run unseen.
pub(crate) struct Interrupts {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    /// Set once a signal came and the pipeline was cancelled.
    pub(crate) cancelled: bool,
}

impl Interrupts {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupts {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            cancelled: false,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Polls the pipeline until it finishes, showing progress on stderr; returns the final status. A Ctrl-C (or
/// `SIGTERM`) cancels the pipeline (`DELETE /pipelines/{id}`: running steps are stopped, the rest never
/// start); the status then comes once it has stopped.
pub(crate) async fn follow_pipeline(
    client: &Client,
    id: &str,
    quiet: bool,
    signals: &mut Interrupts,
) -> anyhow::Result<Value> {
    let path = format!("/pipelines/{id}");
    let terminal = std::io::stderr().is_terminal() && !quiet;
    let started = Instant::now();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut drawn_lines = 0usize;
    loop {
        let status: Value = client
            .get_through_restarts(&path, &format!("pipeline {id}"), &format!("corral pipeline get {id}"))
            .await?;
        let finished = status.get("state").and_then(Value::as_str) == Some("finished");
        let steps = status
            .get("steps")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if terminal {
            let mut err = std::io::stderr().lock();
            if drawn_lines > 0 {
                let _ = write!(err, "\x1b[{drawn_lines}A");
            }
            for step in &steps {
                let _ = writeln!(err, "\x1b[2K{}", step_line(step, started));
            }
            drawn_lines = steps.len();
        } else if !quiet {
            for step in &steps {
                let name = step.get("name").and_then(Value::as_str).unwrap_or("?").to_owned();
                let state = step.get("status").and_then(Value::as_str).unwrap_or("?").to_owned();
                if state != "pending" && seen.get(&name) != Some(&state) {
                    errln!("{}", step_line(step, started));
                    seen.insert(name, state);
                }
            }
        }
        if finished {
            if !quiet {
                crate::client::commands::print_pipeline(&status);
            }
            return Ok(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(if terminal { 100 } else { 200 })) => {}
            _ = signals.recv() => {
                if !signals.cancelled {
                    signals.cancelled = true;
                    errln!("corral: cancelling pipeline {id}: its running steps are stopped");
                    let client = client.clone();
                    let path = path.clone();
                    tokio::spawn(async move {
                        if let Err(err) = client.send(hyper::Method::DELETE, &path, None).await {
                            errln!("corral: cannot cancel the pipeline: {err:#}");
                        }
                    });
                }
            }
        }
    }
}

fn step_line(step: &Value, started: Instant) -> String {
    let name = step.get("name").and_then(Value::as_str).unwrap_or("?");
    let state = step.get("status").and_then(Value::as_str).unwrap_or("?");
    let mark = match state {
        "passed" => "✓",
        "failed" => "✗",
        "skipped" => "-",
        "cancelled" => "!",
        "running" => "…",
        _ => " ",
    };
    let seconds = match (state, step.get("duration_ms").and_then(Value::as_u64)) {
        (_, Some(ms)) => ms as f64 / 1000.0,
        ("running", None) => {
            let since = step.get("started_at").and_then(Value::as_i64).unwrap_or(0);
            let now = corral_core::events::now_ms();
            if since > 0 {
                (now - since).max(0) as f64 / 1000.0
            } else {
                started.elapsed().as_secs_f64()
            }
        }
        _ => 0.0,
    };
    let detail = match state {
        "failed" => step
            .get("error")
            .and_then(Value::as_str)
            .map(|e| format!("  ({e})"))
            .unwrap_or_default(),
        "skipped" => step
            .get("error")
            .and_then(Value::as_str)
            .map(|e| format!("  ({e})"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    format!("{mark} {name:<24} {state:<10} {seconds:>6.1}s{detail}")
}
