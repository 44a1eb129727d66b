//! One function per CLI command: call the API, print the answer (text or `--json`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;
use serde_json::Value;

use crate::api::{
    HealthJson, OutputJson, OutputLine, ProcessJson, SignalRequest, SignalValue, StartProcess, StopRequest,
};
use crate::cli::{LogsArgs, PipelineCommand, PsArgs, RunArgs, SignalArgs, StopArgs};
use crate::client::transport::Client;

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Percent-encodes a query value.
fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `corral status`.
pub(crate) async fn status(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    // /health answers 503 with the same body when unhealthy: read it either way.
    let response = client.send(Method::GET, "/health", None).await?;
    let code = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
    let health: HealthJson = serde_json::from_slice(&bytes).context("unexpected answer to /health")?;
    if json {
        print_json(&health)?;
    } else {
        outln!(
            "daemon:    pid {} · version {} · up {}s",
            health.pid,
            health.version,
            health.uptime_ms / 1000
        );
        outln!("health:    {}", health.status);
        for (name, check) in &health.checks {
            match &check.error {
                None => outln!("  {name:<8} ok"),
                Some(err) => outln!("  {name:<8} FAILING: {err}"),
            }
        }
        let counts: Vec<String> = health.processes.iter().map(|(s, n)| format!("{s} {n}")).collect();
        outln!(
            "processes: {}",
            if counts.is_empty() {
                "none".into()
            } else {
                counts.join(", ")
            }
        );
    }
    Ok(if code.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `corral run -- CMD...`: start, stream output, forward Ctrl-C as a stop, exit with the child's code.
pub(crate) async fn run(client: &Client, args: RunArgs, json: bool) -> anyhow::Result<ExitCode> {
    // The daemon (and the keeper, which spawns) run elsewhere: a relative dir is this command's.
    let dir = match args.dir {
        Some(dir) => Some(std::path::absolute(&dir).with_context(|| format!("--dir {}", dir.display()))?),
        None => std::env::current_dir().ok(),
    };
    let request = StartProcess {
        command: args.command,
        dir: dir.map(|d| d.display().to_string()),
        env: args.env.into_iter().collect(),
        labels: args.labels.into_iter().collect(),
        timeout: args.timeout,
        grace: args.grace.clone(),
        stdin: args.stdin,
    };
    // Before the start: a Ctrl-C that comes while the process starts stops it once it runs, instead of
    // killing this CLI and leaving the process behind.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let started: ProcessJson = client.call(Method::POST, "/processes", Some(&request)).await?;
    if args.stdin {
        forward_stdin(client, &started.id);
    }
    let follow_path = format!("/processes/{}/output?follow=true", enc(&started.id));
    // After a crash of the daemon, the next one's output of the process starts with a line saying that the
    // earlier output is not kept: this command printed it already.
    let mut after_crash = false;
    let mut events = match client.events(&follow_path).await {
        Ok(events) => events,
        // No answer: the daemon crashed right after the start. Follow the process once a daemon runs.
        Err(err) if err.downcast_ref::<crate::client::transport::ApiError>().is_none() => {
            after_crash = true;
            follow_again(client, &started.id, &follow_path, &mut interrupt, err).await?
        }
        // Refused (a token that may start but not read, say): nobody would see it or stop it, so undo the start.
        Err(err) => {
            stop_now(client, &started.id, &args.grace).await;
            return Err(err.context(format!("cannot follow process {}, so it was stopped", started.id)));
        }
    };
    let mut stopping = false;
    let mut last: Option<ProcessJson> = None;
    loop {
        tokio::select! {
            event = events.next() => {
                let event = match event {
                    Ok(Some(event)) => event,
                    // The stream ended: the process's exit is next, or the daemon is stopping (and stops it).
                    Ok(None) => break,
                    // The connection broke: the daemon crashed. The process goes on (the keeper holds it);
                    // follow it again once a daemon runs.
                    Err(err) => {
                        events = follow_again(client, &started.id, &follow_path, &mut interrupt, err).await?;
                        after_crash = true;
                        continue;
                    }
                };
                match event.event.as_str() {
                    // One JSON object per line of output ({stream, line, end, bytes?}), as `logs -f --json`.
                    "output" if json => outln!("{}", event.data),
                    "output" => {
                        let line: OutputLine = serde_json::from_str(&event.data)?;
                        if after_crash && line.line == corral_proc::LOST_BEFORE_ADOPTION.trim_end() {
                            continue;
                        }
                        // The reader is gone (`corral run ... | head`): stop the process, as a closed pipe
                        // stops its writer, and end quietly.
                        if crate::client::write_output(&line).is_err() {
                            stop_now(client, &started.id, &args.grace).await;
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                    "lagged" => lagged(&event.data),
                    "truncated" => truncated(&event.data),
                    "exit" => {
                        last = Some(serde_json::from_str(&event.data)?);
                        break;
                    }
                    _ => {}
                }
            }
            // The first Ctrl-C (or SIGTERM) stops gracefully; another one kills at once.
            _ = interrupt.recv() => stop_on_signal(client, &started.id, &args.grace, &mut stopping),
            _ = terminate.recv() => stop_on_signal(client, &started.id, &args.grace, &mut stopping),
        }
    }
    let record = match last {
        Some(record) => record,
        // The stream ended without the exit: ask for the record; no answer means the daemon stopped.
        None => client
            .call::<ProcessJson>(Method::GET, &format!("/processes/{}", enc(&started.id)), None::<&()>)
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "the daemon stopped while following process {} ({err:#}); a daemon that stops stops its \
                     processes: `corral ps` shows how it ended once a daemon runs again",
                    started.id
                )
            })?,
    };
    if json {
        print_json(&record)?;
    } else if let (None, Some(error)) = (record.exit_code, &record.error) {
        // It did not exit by itself (timed out, killed, stopped, lost with a daemon without keeper): say how.
        errln!("corral: process {} {}: {error}", record.id, record.state);
    }
    Ok(exit_code_of(&record))
}

/// Stops process `id` (its own grace unless `--grace` says otherwise) and waits for the answer.
async fn stop_now(client: &Client, id: &str, grace: &Option<String>) {
    let _ = client
        .call::<ProcessJson>(
            Method::POST,
            &format!("/processes/{}/stop", enc(id)),
            Some(&StopRequest { grace: grace.clone() }),
        )
        .await;
}

/// The daemon no longer had the oldest output when this command began to follow (its ring is bounded).
fn truncated(data: &str) {
    let value = serde_json::from_str::<Value>(data).unwrap_or_default();
    let dropped = value["dropped"].as_u64().unwrap_or(0);
    let stream = value["stream"].as_str().unwrap_or("output");
    errln!("corral: the first {dropped} bytes of {stream} are not kept (the daemon keeps the newest only); what follows is the rest");
}

/// A follower fell behind and the daemon dropped output for it (it never blocks the process): say so.
fn lagged(data: &str) {
    let missed = serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v["missed"].as_u64())
        .unwrap_or(0);
    errln!("corral: {missed} batches of output were dropped here: they came faster than this command read them (`corral logs` has what the daemon kept)");
}

/// After the daemon crashed under `corral run` (`lost`: how that showed): waits for a daemon to answer again
/// about process `id`, then follows its output again. A Ctrl-C meanwhile leaves, saying where the process is.
async fn follow_again(
    client: &Client,
    id: &str,
    follow_path: &str,
    interrupt: &mut tokio::signal::unix::Signal,
    lost: anyhow::Error,
) -> anyhow::Result<crate::client::transport::SseReader> {
    let again = async {
        let _: ProcessJson = client
            .get_through_restarts(
                &format!("/processes/{}", enc(id)),
                &format!("process {id}"),
                &format!("corral logs -f {id}"),
            )
            .await?;
        client.events(follow_path).await
    };
    tokio::select! {
        again = again => again.map_err(|err| lost_daemon(id, err)),
        _ = interrupt.recv() => Err(lost_daemon(id, lost)),
    }
}

/// `corral run` lost its daemon while following: say what became of the process and how to find it again.
fn lost_daemon(id: &str, err: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "lost the daemon while following process {id} ({err:#}); if it crashed, the process goes on \
         (the keeper holds it): once a daemon runs again, `corral logs -f {id}` follows it and `corral ps` shows it"
    )
}

/// The most bytes of stdin `corral run --stdin` sends in one request.
const STDIN_CHUNK: usize = 64 * 1024;

/// `corral run --stdin`: a thread reads this command's stdin and a task sends each chunk to the process in
/// order, as bytes (any bytes, not only text); the end of the input closes the process's stdin. A thread with
/// blocking reads, not tokio's stdin, whose pending read on a terminal would hold up the exit. Stops quietly
/// once the process no longer takes input (it exited, or closed its end).
fn forward_stdin(client: &Client, id: &str) {
    // A small queue: a process that reads slowly slows the reading of stdin, so memory stays bounded.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut chunk = vec![0; STDIN_CHUNK];
            match stdin.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    if sender.blocking_send(chunk).is_err() {
                        return;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    errln!("corral: reading stdin: {err}; closing the process's stdin");
                    break;
                }
            }
        }
    });
    let client = client.clone();
    let path = format!("/processes/{}/stdin", enc(id));
    tokio::spawn(async move {
        let mut delivered = 0usize;
        while let Some(chunk) = receiver.recv().await {
            let len = chunk.len();
            if let Err(err) = client.post_bytes(&path, chunk).await {
                // The process no longer reads (an error answer): nothing to say. No answer at all: the daemon
                // went away, and a process's stdin pipe goes with it (the process reads its end).
                if err.downcast_ref::<crate::client::transport::ApiError>().is_none() {
                    errln!(
                        "corral: lost the daemon, and the process's stdin with it: {delivered} bytes of input are known to have reached the process, what came after may not have"
                    );
                }
                return;
            }
            delivered += len;
        }
        let _ = client.post_bytes(&format!("{path}?close=true"), Vec::new()).await;
    });
}

/// `corral run`'s answer to Ctrl-C: a graceful stop the first time (saying how to hurry it), a stop with no
/// grace (`KILL` now) after that.
fn stop_on_signal(client: &Client, id: &str, grace: &Option<String>, stopping: &mut bool) {
    if *stopping {
        errln!("corral: killing the process now");
        stop_in_background(client, id, Some("0s".to_owned()));
    } else {
        *stopping = true;
        errln!("corral: stopping the process (TERM, then KILL after its grace); Ctrl-C again to kill it now");
        stop_in_background(client, id, grace.clone());
    }
}

fn stop_in_background(client: &Client, id: &str, grace: Option<String>) {
    let (client, id) = (client.clone(), id.to_owned());
    tokio::spawn(async move { stop_now(&client, &id, &grace).await });
}

/// The shell-style exit code for a finished record: its code, 128+signal, or 1.
fn exit_code_of(record: &ProcessJson) -> ExitCode {
    if let Some(code) = record.exit_code {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    if let Some(signal) = record.signal.as_deref().and_then(corral_proc::Signal::from_name) {
        return ExitCode::from((128 + signal.number()).clamp(1, 255) as u8);
    }
    ExitCode::FAILURE
}

/// `corral ps`.
pub(crate) async fn ps(client: &Client, args: PsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut query: Vec<String> = args
        .labels
        .iter()
        .map(|(k, v)| format!("label={}", enc(&format!("{k}={v}"))))
        .collect();
    if let Some(state) = &args.state {
        query.push(format!("state={}", enc(state)));
    }
    if let Some(limit) = args.limit {
        query.push(format!("limit={limit}"));
    }
    let path = if query.is_empty() {
        "/processes".to_owned()
    } else {
        format!("/processes?{}", query.join("&"))
    };
    let records: Vec<ProcessJson> = client.call(Method::GET, &path, None::<&()>).await?;
    if json {
        print_json(&records)?;
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        outln!("no processes");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<36}  {:>7}  {:<11}  {:>4}  {:<20}  COMMAND",
        "ID",
        "PID",
        "STATE",
        "EXIT",
        "LABELS"
    );
    for record in records {
        let labels: Vec<String> = record.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!(
            "{:<36}  {:>7}  {:<11}  {:>4}  {:<20}  {}",
            record.id,
            record.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            record.state,
            record.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            truncate(&labels.join(","), 20),
            record.command.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// `corral logs`.
pub(crate) async fn logs(client: &Client, args: LogsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let id = enc(&args.id);
    if args.follow {
        let mut events = client.events(&format!("/processes/{id}/output?follow=true")).await?;
        while let Some(event) = events.next().await? {
            match event.event.as_str() {
                "output" if json => outln!("{}", event.data),
                "output" => {
                    let line: OutputLine = serde_json::from_str(&event.data)?;
                    if crate::client::write_output(&line).is_err() {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                "lagged" => lagged(&event.data),
                "truncated" => truncated(&event.data),
                "exit" => break,
                _ => {}
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let output: OutputJson = client
        .call(Method::GET, &format!("/processes/{id}/output"), None::<&()>)
        .await?;
    if json {
        print_json(&output)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (stream, cut) in [("stdout", output.stdout_truncated), ("stderr", output.stderr_truncated)] {
        if cut {
            errln!("corral: the start of {stream} is not kept (the daemon keeps the newest bytes only)");
        }
    }
    if !output.kept {
        errln!(
            "corral: the daemon holds no output of process {} ({}): it ended or was found before the daemon's restart",
            output.id,
            output.state
        );
    }
    let tail = |text: &str| -> String {
        match args.tail {
            Some(n) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n") + if lines.is_empty() { "" } else { "\n" }
            }
            None => text.to_owned(),
        }
    };
    out!("{}", tail(&output.stdout));
    err!("{}", tail(&output.stderr));
    Ok(ExitCode::SUCCESS)
}

/// `corral stop`.
pub(crate) async fn stop(client: &Client, args: StopArgs, json: bool) -> anyhow::Result<ExitCode> {
    let record: ProcessJson = client
        .call(
            Method::POST,
            &format!("/processes/{}/stop", enc(&args.id)),
            Some(&StopRequest { grace: args.grace }),
        )
        .await?;
    if json {
        print_json(&record)?;
    } else {
        outln!("{} {}", record.id, record.state);
    }
    Ok(ExitCode::SUCCESS)
}

/// `corral signal`.
pub(crate) async fn signal(client: &Client, args: SignalArgs, json: bool) -> anyhow::Result<ExitCode> {
    let signal = match args.signal.parse::<i32>() {
        Ok(n) => SignalValue::Number(n),
        Err(_) => SignalValue::Name(args.signal.clone()),
    };
    let record: ProcessJson = client
        .call(
            Method::POST,
            &format!("/processes/{}/signal", enc(&args.id)),
            Some(&SignalRequest { signal }),
        )
        .await?;
    if json {
        print_json(&record)?;
    } else {
        outln!("sent {} to {}", args.signal, record.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `corral interrupt`.
pub(crate) async fn interrupt(
    client: &Client,
    args: crate::cli::InterruptArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let request = crate::api::InterruptRequest {
        process_id: args.id,
        labels: args.labels.into_iter().collect(),
        source: args.source,
        reason: args.reason,
        grace: args.grace,
        wait: args.wait,
    };
    let report: crate::api::InterruptJson = client.call(Method::POST, "/interrupt", Some(&request)).await?;
    if json {
        print_json(&report)?;
    } else {
        outln!(
            "matched {}, signaled {}, stale {}, unavailable {}",
            report.matched,
            report.signaled,
            report.stale,
            report.unavailable
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `corral daemons`.
pub(crate) fn daemons(json: bool) -> anyhow::Result<ExitCode> {
    let entries = crate::daemon::registry::list();
    if json {
        print_json(&entries)?;
    } else if entries.is_empty() {
        outln!("no corral daemon is running");
    } else {
        outln!("{:>7}  {:<24}  {:<8}  SOCKET", "PID", "STARTED", "VERSION");
        for entry in entries {
            outln!(
                "{:>7}  {:<24}  {:<8}  {}",
                entry.pid,
                entry.started,
                entry.version,
                entry.socket.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `corral pipeline ...`.
pub(crate) async fn pipeline(client: &Client, command: PipelineCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        PipelineCommand::Get { id } => {
            let status: Value = client
                .call(Method::GET, &format!("/pipelines/{}", enc(&id)), None::<&()>)
                .await?;
            if json {
                print_json(&status)?;
            } else {
                print_pipeline(&status);
            }
            Ok(pipeline_exit(&status))
        }
        PipelineCommand::Run(args) => {
            let text = std::fs::read_to_string(&args.file)
                .with_context(|| format!("cannot read pipeline file {}", args.file.display()))?;
            let spec = corral_core::pipeline::PipelineSpec::from_toml_str(&text)
                .map_err(|err| anyhow::anyhow!("{}: {err}", args.file.display()))?;
            let base = args.file.parent().map(|p| p.to_owned()).unwrap_or_default();
            let spec = crate::daemon::pipelines::resolve_dirs(spec, &base);
            let mut signals = crate::client::progress::Interrupts::install()?;
            let created: crate::api::PipelineCreated = client.call(Method::POST, "/pipelines", Some(&spec)).await?;
            if !json {
                errln!("pipeline {}", created.id);
            }
            let status = crate::client::progress::follow_pipeline(client, &created.id, json, &mut signals).await?;
            if json {
                print_json(&status)?;
            }
            // As a shell reports a command ended by Ctrl-C.
            Ok(if signals.cancelled {
                ExitCode::from(130)
            } else {
                pipeline_exit(&status)
            })
        }
    }
}

fn pipeline_exit(status: &Value) -> ExitCode {
    match status.get("success").and_then(Value::as_bool) {
        Some(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Prints a pipeline status as a table.
pub(crate) fn print_pipeline(status: &Value) {
    let empty = Vec::new();
    let steps = status.get("steps").and_then(Value::as_array).unwrap_or(&empty);
    for step in steps {
        let field = |k: &str| step.get(k).cloned().unwrap_or(Value::Null);
        let name = field("name").as_str().unwrap_or("?").to_owned();
        let state = field("status").as_str().unwrap_or("?").to_owned();
        let code = field("exit_code")
            .as_i64()
            .map(|c| format!("exit {c}"))
            .unwrap_or_default();
        let ms = field("duration_ms")
            .as_u64()
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        outln!("  {name:<24} {state:<10} {code:<8} {ms}");
    }
    let counts: BTreeMap<&str, u64> = ["passed", "failed", "skipped", "cancelled"]
        .iter()
        .map(|k| (*k, status.get(*k).and_then(Value::as_u64).unwrap_or(0)))
        .collect();
    outln!(
        "{} passed, {} failed, {} skipped, {} cancelled",
        counts["passed"],
        counts["failed"],
        counts["skipped"],
        counts["cancelled"]
    );
}
