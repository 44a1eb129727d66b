//! Live progress of a pipeline: a line per step with a timer on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::transport::Client;

/// Polls the pipeline until it finishes, showing progress on stderr; returns the final status.
pub(crate) async fn follow_pipeline(client: &Client, id: &str, quiet: bool) -> anyhow::Result<Value> {
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
        tokio::time::sleep(Duration::from_millis(if terminal { 100 } else { 200 })).await;
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
