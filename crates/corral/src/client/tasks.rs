//! `corral task submit|ls|get|rm`.

use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;

use crate::api::{SubmitTask, TaskJson};
use crate::cli::TaskCommand;
use crate::client::transport::Client;

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Runs one `task` subcommand.
pub(crate) async fn task(client: &Client, command: TaskCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        TaskCommand::Submit {
            task_type,
            id,
            params,
            wait,
        } => {
            let text = match params.strip_prefix('@') {
                Some(path) => {
                    std::fs::read_to_string(path).with_context(|| format!("cannot read params file {path}"))?
                }
                None => params,
            };
            let params: serde_json::Value = serde_json::from_str(&text).context("--params is not valid JSON")?;
            let body = SubmitTask { id, task_type, params };
            let task: TaskJson = client.call(Method::POST, "/tasks", Some(&body)).await?;
            if wait {
                let done = wait_for(client, &task.id).await?;
                print_task(&done, json)?;
                return Ok(exit_of(&done));
            }
            print_task(&task, json)?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Get { id, wait } => {
            let task = if wait {
                wait_for(client, &id).await?
            } else {
                client
                    .call(Method::GET, &format!("/tasks/{}", enc(&id)), None::<&()>)
                    .await?
            };
            print_task(&task, json)?;
            Ok(if wait { exit_of(&task) } else { ExitCode::SUCCESS })
        }
        TaskCommand::Ls {
            status,
            task_type,
            limit,
        } => {
            let mut query = Vec::new();
            if let Some(status) = status {
                query.push(format!("status={}", enc(&status)));
            }
            if let Some(task_type) = task_type {
                query.push(format!("type={}", enc(&task_type)));
            }
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            let path = if query.is_empty() {
                "/tasks".to_owned()
            } else {
                format!("/tasks?{}", query.join("&"))
            };
            let tasks: Vec<TaskJson> = client.call(Method::GET, &path, None::<&()>).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&tasks)?);
            } else if tasks.is_empty() {
                outln!("no tasks");
            } else {
                outln!(
                    "{:<36}  {:<10}  {:<10}  {:>7}  ERROR",
                    "ID",
                    "TYPE",
                    "STATUS",
                    "ATTEMPT"
                );
                for task in tasks {
                    outln!(
                        "{:<36}  {:<10}  {:<10}  {:>7}  {}",
                        task.id,
                        task.task_type,
                        task.status,
                        task.attempt,
                        task.error.unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Rm { id } => {
            let answer: serde_json::Value = client
                .call(Method::DELETE, &format!("/tasks/{}", enc(&id)), None::<&()>)
                .await?;
            if json {
                outln!("{answer}");
            } else {
                outln!("removed {id}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Long-polls until the task is finished.
async fn wait_for(client: &Client, id: &str) -> anyhow::Result<TaskJson> {
    loop {
        let task: TaskJson = client
            .get_through_restarts(
                &format!("/tasks/{}?wait=30s", enc(id)),
                &format!("task {id}"),
                &format!("corral task get {id} --wait"),
            )
            .await?;
        if task.is_terminal() {
            return Ok(task);
        }
    }
}

fn exit_of(task: &TaskJson) -> ExitCode {
    if task.status == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_task(task: &TaskJson, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(task)?);
        return Ok(());
    }
    outln!("id:       {}", task.id);
    outln!("type:     {}", task.task_type);
    outln!("status:   {} (attempt {})", task.status, task.attempt);
    if let Some(error) = &task.error {
        outln!("error:    {error}");
    }
    if let Some(result) = &task.result {
        if let Some(tail) = result
            .get("output_tail")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        {
            outln!("output:\n{}", tail.trim_end());
        } else {
            outln!("result:   {result}");
        }
    }
    Ok(())
}
