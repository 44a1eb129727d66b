//! The allowlisted exec API (tailkit compatible): `GET /tools`, `POST /exec/{tool}/{cmd}`,
//! `GET /exec/jobs/{id}` (`?wait=30s`), `DELETE /exec/jobs/{id}`.
//!
//! `POST /exec/{tool}/{cmd}?wait=30s` submits and waits in one request: it answers with the job JSON of
//! `GET /exec/jobs/{id}`, 200 once the job is finished, or 202 (`status` accepted, queued or running) when
//! the wait ran out first; the caller then long-polls `GET /exec/jobs/{id}?wait=` as usual.
//!
//! A job is a durable task of type `exec`: it survives a daemon restart, and a finished one is kept at
//! least `job_ttl`. Args are checked against the command's declaration before anything is stored, and
//! reach the program one value per argv slot, never through a shell.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_core::builtin::ExecParams;
use serde_json::{json, Value};

use crate::daemon::auth::{Scope, Token};
use crate::daemon::server::{wait_param, AppError, AppState, OptionalJson};

/// Longest `?wait=` honoured in one request.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/tools", get(tools))
        .route("/exec/{tool}/{cmd}", post(submit))
        .route("/exec/jobs/{id}", get(job).delete(cancel))
        .route("/exec/jobs/{id}/stream", get(stream))
}

async fn tools(State(state): State<AppState>) -> Json<Value> {
    let index = state.inner.tools.current();
    let tools: Vec<Value> = index
        .tools()
        .into_iter()
        .map(|tool| {
            json!({
                "name": tool.name,
                "description": tool.description,
                "version": tool.version,
                "file": tool.file,
                "commands": tool.commands.iter().map(|c| json!({
                    "name": c.name,
                    "description": c.description,
                    "exec": c.exec,
                    "timeout": corral_core::units::format_duration(c.timeout),
                    "concurrency": c.concurrency,
                    "acl_cap": c.acl_cap,
                    "args": c.args.iter().map(|a| json!({
                        "name": a.name,
                        "description": a.description,
                        "required": a.required,
                        "pattern": a.pattern,
                        "default": a.default,
                        "secret": a.secret,
                        "max_len": a.max_len,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let errors: Vec<Value> = index
        .errors()
        .iter()
        .map(|e| json!({"file": e.file, "line": e.line, "error": e.message, "message": e.to_string()}))
        .collect();
    Json(json!({"tools": tools, "errors": errors, "generation": state.inner.tools.generation()}))
}

/// `X-Corral-Labels: session=abc,turn=7`.
fn labels_from(headers: &HeaderMap) -> Result<BTreeMap<String, String>, AppError> {
    let mut labels = BTreeMap::new();
    if let Some(value) = headers.get("x-corral-labels") {
        let text = value
            .to_str()
            .map_err(|_| AppError::bad_request("invalid_labels", "X-Corral-Labels must be ASCII"))?;
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| AppError::bad_request("invalid_labels", format!("label {pair:?}: use key=value")))?;
            crate::daemon::server::validate_label(key.trim(), value.trim())?;
            labels.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    Ok(labels)
}

async fn submit(
    State(state): State<AppState>,
    Path((tool, cmd)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    token: Option<Extension<Token>>,
    headers: HeaderMap,
    OptionalJson(args): OptionalJson<BTreeMap<String, String>>,
) -> Result<Response, AppError> {
    // Checked before anything is stored: a bad query changes nothing.
    let wait = wait_param(query.as_deref(), MAX_WAIT)?;
    let index = state.inner.tools.current();
    let spec = index
        .lookup(&tool, &cmd)
        .ok_or_else(|| AppError::not_found(format!("no command {tool}/{cmd} is declared")))?;
    // tailkit's acl_cap, enforced: over TCP the token must also hold cap:<acl_cap>.
    if let (Some(Extension(token)), Some(cap)) = (&token, spec.acl_cap()) {
        if !token.allows(&Scope::Cap(cap.to_owned())) {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token {:?} lacks cap:{cap}, which {tool}/{cmd} requires", token.name),
            ));
        }
    }
    let invocation = spec
        .invocation(&args)
        .map_err(|err| AppError::bad_request("invalid_arg", format!("{tool}/{cmd}: {err}")).with_arg(err.arg()))?;
    let labels = labels_from(&headers)?;
    let who = token
        .as_ref()
        .map(|Extension(t)| t.name.clone())
        .unwrap_or_else(|| "local socket".into());
    let params = ExecParams {
        tool: tool.clone(),
        command: cmd.clone(),
        args,
        labels,
    };
    let params = serde_json::to_value(&params).map_err(|e| AppError::bad_request("invalid_args", e.to_string()))?;
    let submitted = state.inner.tasks.submit(None, "exec", params)?;
    let job_id = submitted.record().id.clone();
    tracing::info!(
        who = %who,
        tool = %tool,
        command = %cmd,
        args = ?invocation.redacted_args.keys().collect::<Vec<_>>(),
        job_id = %job_id,
        "exec job accepted"
    );
    let Some(wait) = wait else {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"job_id": job_id, "status": "accepted"})),
        )
            .into_response());
    };
    // Submit and wait: the job JSON, 200 once finished, else 202 with the status so far.
    let record = state
        .inner
        .tasks
        .wait(&job_id, wait)
        .await?
        .ok_or_else(|| AppError::not_found(format!("job {job_id} was removed while waited for")))?;
    let status = if record.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(job_json(&record))).into_response())
}

/// The job JSON of SPEC.md from the task record.
fn job_json(record: &corral_store::TaskRecord) -> Value {
    let params = &record.params;
    let result = record.result.clone().unwrap_or(Value::Null);
    let status = match record.status {
        corral_store::TaskStatus::Queued => "accepted",
        corral_store::TaskStatus::Running => {
            if record
                .progress
                .as_ref()
                .and_then(|p| p.get("state"))
                .and_then(Value::as_str)
                == Some("queued")
            {
                "queued"
            } else {
                "running"
            }
        }
        other => other.as_str(),
    };
    json!({
        "job_id": record.id,
        "tool": params.get("tool"),
        "command": params.get("command"),
        "status": status,
        "exit_code": result.get("exit_code"),
        "stdout": result.get("stdout").and_then(Value::as_str).unwrap_or(""),
        "stderr": result.get("stderr").and_then(Value::as_str).unwrap_or(""),
        "truncated": result.get("truncated").and_then(Value::as_bool).unwrap_or(false),
        "duration_ms": result.get("duration_ms"),
        "error": record.error,
    })
}

async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, AppError> {
    let wait = wait_param(query.as_deref(), MAX_WAIT)?;
    let record = match wait {
        Some(wait) => state.inner.tasks.wait(&id, wait).await?,
        None => state.inner.tasks.get(&id)?,
    };
    match record {
        Some(record) if record.task_type == "exec" => Ok(Json(job_json(&record))),
        _ => Err(AppError::not_found(format!("no job with id {id}"))),
    }
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, AppError> {
    match state.inner.tasks.get(&id)? {
        Some(record) if record.task_type == "exec" => {}
        _ => return Err(AppError::not_found(format!("no job with id {id}"))),
    }
    state.inner.tasks.cancel(&id).await?;
    let record = state
        .inner
        .tasks
        .get(&id)?
        .ok_or_else(|| AppError::not_found(format!("no job with id {id}")))?;
    Ok(Json(job_json(&record)))
}

/// SSE: `status` events as the job moves (accepted → running), `output` lines while its process runs,
/// and a final `status` event with the finished job; the stream then ends.
async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<
    axum::response::sse::Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>>,
    AppError,
> {
    match state.inner.tasks.get(&id)? {
        Some(record) if record.task_type == "exec" => {}
        _ => return Err(AppError::not_found(format!("no job with id {id}"))),
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<SseEvent>(256);
    let shutdown = crate::daemon::server::shutting_down(&state);
    tokio::spawn(async move {
        tokio::select! {
            _ = feed_job(&state, &id, &sender) => {}
            _ = shutdown => {}
        }
    });
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Ok(axum::response::sse::Sse::new(events).keep_alive(axum::response::sse::KeepAlive::default()))
}

use axum::response::sse::Event as SseEvent;

fn status_event(record: &corral_store::TaskRecord) -> SseEvent {
    SseEvent::default().event("status").data(job_json(record).to_string())
}

/// Sends the job's events until it is finished (or the client is gone).
async fn feed_job(state: &AppState, id: &str, sender: &tokio::sync::mpsc::Sender<SseEvent>) {
    let mut last_status = String::new();
    let mut streamed_process = None;
    loop {
        let Ok(Some(record)) = state.inner.tasks.get(id) else {
            return;
        };
        let status = job_json(&record)["status"].as_str().unwrap_or("").to_owned();
        if record.status.is_terminal() {
            let _ = sender.send(status_event(&record)).await;
            return;
        }
        if status != last_status {
            if sender.send(status_event(&record)).await.is_err() {
                return;
            }
            last_status = status;
        }
        // Once its process runs, stream its lines live until it exits.
        let filter = corral_store::ProcessFilter {
            labels: BTreeMap::from([("job".to_owned(), id.to_owned())]),
            states: vec![corral_store::ProcessState::Running],
            ..corral_store::ProcessFilter::default()
        };
        let process_id = state
            .inner
            .processes
            .list(&filter)
            .ok()
            .and_then(|l| l.first().map(|r| r.id.clone()));
        if let Some(process_id) = process_id.filter(|p| streamed_process.as_ref() != Some(p)) {
            streamed_process = Some(process_id.clone());
            if let Some(mut follow) = state.inner.processes.follow(&process_id) {
                // What it wrote before we subscribed, then live lines.
                for event in crate::daemon::server::backlog_events(&mut follow) {
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                let mut events = follow.events;
                while let Some(received) = events.recv().await {
                    if let corral_proc::Received::Event(event) = received {
                        if let corral_proc::EventKind::Output { stream, lines } = event.kind {
                            for line in lines.iter() {
                                let event = crate::daemon::server::output_event(stream, line);
                                if sender.send(event).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
            continue;
        }
        // Waiting to start, or between the process's end and the job's record: re-check soon.
        let _ = state.inner.tasks.wait(id, Duration::from_millis(200)).await;
    }
}
