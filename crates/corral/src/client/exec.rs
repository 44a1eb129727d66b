//! `corral tools`, `corral exec`, `corral job`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;

use crate::client::transport::Client;

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `corral tools`: a table of tools and commands, then any file errors.
pub(crate) async fn tools(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let answer: Value = client.call(Method::GET, "/tools", None::<&()>).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let empty = Vec::new();
    let tools = answer.get("tools").and_then(Value::as_array).unwrap_or(&empty);
    if tools.is_empty() {
        outln!("no tools declared");
    } else {
        outln!("{:<16}  {:<16}  {:<8}  ARGS", "TOOL", "COMMAND", "TIMEOUT");
    }
    for tool in tools {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("?");
        for command in tool.get("commands").and_then(Value::as_array).unwrap_or(&empty) {
            let args: Vec<String> = command
                .get("args")
                .and_then(Value::as_array)
                .unwrap_or(&empty)
                .iter()
                .map(|a| {
                    let arg = a.get("name").and_then(Value::as_str).unwrap_or("?");
                    if a.get("required").and_then(Value::as_bool) == Some(true) {
                        arg.to_owned()
                    } else {
                        format!("[{arg}]")
                    }
                })
                .collect();
            outln!(
                "{:<16}  {:<16}  {:<8}  {}",
                name,
                command.get("name").and_then(Value::as_str).unwrap_or("?"),
                command.get("timeout").and_then(Value::as_str).unwrap_or("-"),
                args.join(" ")
            );
        }
    }
    for error in answer.get("errors").and_then(Value::as_array).unwrap_or(&empty) {
        errln!("error: {}", error.get("message").and_then(Value::as_str).unwrap_or("?"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `corral exec TOOL CMD k=v...`. With `--wait`, then long-polls like `corral job --wait`: two requests
/// rather than one (`?wait=` on the submit), so that the job's id is known before the wait and a daemon
/// restart during it loses nothing.
pub(crate) async fn exec(
    client: &Client,
    tool: &str,
    command: &str,
    args: Vec<(String, String)>,
    wait: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let args: BTreeMap<String, String> = args.into_iter().collect();
    let path = format!("/exec/{}/{}", enc(tool), enc(command));
    let answer: Value = client.call(Method::POST, &path, Some(&args)).await?;
    let id = answer
        .get("job_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !wait {
        if json {
            outln!("{answer}");
        } else {
            outln!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    job(client, &id, true, json).await
}

/// The long poll of one request.
const WAIT_QUERY: &str = "?wait=30s";

/// True when the job JSON says the job is over.
fn is_finished(job: &Value) -> bool {
    matches!(
        job.get("status").and_then(Value::as_str),
        Some("completed" | "failed" | "cancelled")
    )
}

/// `corral job ID [--wait]`.
pub(crate) async fn job(client: &Client, id: &str, wait: bool, json: bool) -> anyhow::Result<ExitCode> {
    let job = loop {
        let path = if wait {
            format!("/exec/jobs/{}{WAIT_QUERY}", enc(id))
        } else {
            format!("/exec/jobs/{}", enc(id))
        };
        let job: Value = if wait {
            client
                .get_through_restarts(&path, &format!("job {id}"), &format!("corral job {id} --wait"))
                .await?
        } else {
            client.call(Method::GET, &path, None::<&()>).await?
        };
        if !wait || is_finished(&job) {
            break job;
        }
    };
    report(id, &job, wait, json)
}

/// Prints a job; after a wait, exits with the job's exit code.
fn report(id: &str, job: &Value, wait: bool, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(job)?);
    } else if wait {
        if job.get("truncated").and_then(Value::as_bool) == Some(true) {
            errln!("corral: job {id}: its output was cut to the newest bytes of each stream (the job keeps at most 1 MiB of each)");
        }
        out!("{}", job.get("stdout").and_then(Value::as_str).unwrap_or(""));
        err!("{}", job.get("stderr").and_then(Value::as_str).unwrap_or(""));
        if let Some(error) = job.get("error").and_then(Value::as_str) {
            errln!("corral: job {id}: {error}");
        }
    } else {
        outln!(
            "{} {} {}",
            id,
            job.get("status").and_then(Value::as_str).unwrap_or("?"),
            job.get("error").and_then(Value::as_str).unwrap_or("")
        );
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(match job.get("exit_code").and_then(Value::as_i64) {
        Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
        None if job.get("status").and_then(Value::as_str) == Some("completed") => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    })
}
