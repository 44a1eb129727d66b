//! Pipelines in the daemon: `POST /pipelines`, `GET /pipelines/{id}`.
//!
//! A pipeline is a durable task of type `pipeline` (corral-core's `PipelineTask`): the id `POST /pipelines`
//! answers is the task's id, so the pipeline survives a restart of the daemon, a crash included, and goes on
//! where it was (no ended step runs twice). Each step runs as a managed process (source `pipeline`, labels
//! `pipeline=<id>`, `step=<name>` and `task=<id>`), so it has a durable record, shows in `corral ps`, and is
//! stopped with the daemon. `GET /pipelines/{id}` shows the live run while it goes on in this daemon, and
//! otherwise what the task's record says (queued, or its per-step result once finished); `DELETE
//! /pipelines/{id}` cancels it.

use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_core::builtin::PipelineRuns;
use corral_core::pipeline::{Pipeline, PipelineResult, PipelineSpec, StepResult, StepStatus};
use corral_core::tasks::TaskEngine;
use corral_store::{TaskRecord, TaskStatus};
use serde_json::{json, Value};

use crate::daemon::server::{ApiJson, AppError, AppState};

/// The task type pipelines run as.
const TASK_TYPE: &str = "pipeline";

/// The pipelines of this daemon: durable `pipeline` tasks, and their live runs.
pub(crate) struct Pipelines {
    tasks: TaskEngine,
    runs: PipelineRuns,
}

impl Pipelines {
    /// `runs` must be the ones the task engine's `pipeline` handler lists its runs in.
    pub(crate) fn new(tasks: TaskEngine, runs: PipelineRuns) -> Self {
        Pipelines { tasks, runs }
    }

    /// Validates `spec` (a pipeline in its JSON form) and submits it as a task; returns its id.
    pub(crate) fn start(&self, spec: Value) -> Result<String, AppError> {
        let parsed: PipelineSpec = serde_json::from_value(spec.clone())
            .map_err(|err| AppError::bad_request("invalid_pipeline", format!("invalid pipeline: {err}")))?;
        // The error's text already starts with "invalid pipeline".
        Pipeline::new(parsed).map_err(|err| AppError::bad_request("invalid_pipeline", err.to_string()))?;
        Ok(self.tasks.submit(None, TASK_TYPE, spec)?.record().id.clone())
    }

    /// The status of a pipeline as served; `None` if there is no such pipeline.
    pub(crate) fn status(&self, id: &str) -> Result<Option<Value>, AppError> {
        let Some(record) = self.tasks.get(id)?.filter(|record| record.task_type == TASK_TYPE) else {
            return Ok(None);
        };
        let finished = record.status.is_terminal();
        // The task's result once it is recorded; the live run before that.
        let result = match (&record.result, self.runs.get(id)) {
            (Some(result), _) if finished => serde_json::from_value::<PipelineResult>(result.clone()).ok(),
            (_, Some(run)) => {
                let steps = run.snapshot();
                return Ok(Some(status_json(&record, run.name(), &steps, run.result().as_ref())));
            }
            _ => None,
        };
        Ok(Some(match result {
            Some(result) => status_json(&record, result.name.as_deref(), &result.steps, Some(&result)),
            None => recorded_status(&record),
        }))
    }
}

/// A pipeline with no run to show: queued, about to resume after a restart, or ended without a result
/// (cancelled, or its params no longer valid). Steps come from the spec, as the task's status has them.
fn recorded_status(record: &TaskRecord) -> Value {
    let spec: Option<PipelineSpec> = serde_json::from_value(record.params.clone()).ok();
    let (name, mut steps): (_, Vec<StepResult>) = match &spec {
        Some(spec) => (spec.name.clone(), spec.steps.iter().map(StepResult::pending).collect()),
        None => (None, Vec::new()),
    };
    if record.status.is_terminal() {
        for step in &mut steps {
            step.status = StepStatus::Cancelled;
            step.error = record.error.clone();
        }
    }
    let mut status = status_json(record, name.as_deref(), &steps, None);
    if record.status.is_terminal() {
        status["state"] = json!("finished");
        status["success"] = json!(record.status == TaskStatus::Completed);
        status["error"] = json!(record.error);
    }
    status
}

fn status_json(
    record: &TaskRecord,
    name: Option<&str>,
    steps: &[StepResult],
    result: Option<&PipelineResult>,
) -> Value {
    let steps: Vec<Value> = steps.iter().map(step_json).collect();
    let count = |status: &str| steps.iter().filter(|s| s["status"] == status).count();
    json!({
        "id": record.id,
        "name": name,
        "state": if result.is_some() { "finished" } else { "running" },
        "task_status": record.status.as_str(),
        "success": result.map(|r| r.success),
        "passed": count("passed"),
        "failed": count("failed"),
        "skipped": count("skipped"),
        "cancelled": count("cancelled"),
        "duration_ms": result.map(|r| r.duration.as_millis() as u64),
        "created_at": crate::api::rfc3339(record.submitted_at),
        "steps": steps,
    })
}

fn step_json(step: &StepResult) -> Value {
    json!({
        "name": step.name,
        "status": step.status.as_str(),
        "exit_code": step.exit_code,
        "duration_ms": step.duration.map(|d| d.as_millis() as u64),
        "output_tail": step.output_tail,
        "error": step.error,
        "allow_failure": step.allow_failure,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
    })
}

/// Resolves relative step dirs against the pipeline file's folder (the CLI does this before sending).
pub(crate) fn resolve_dirs(mut spec: PipelineSpec, base: &Path) -> PipelineSpec {
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
    spec.resolve_dirs(&base);
    for step in &mut spec.steps {
        if step.dir.is_none() {
            step.dir = Some(base.clone());
        }
    }
    spec
}

/// The pipeline routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/pipelines", post(create))
        .route("/pipelines/{id}", get(status).delete(cancel))
}

/// `DELETE /pipelines/{id}`: cancels it (running steps are stopped, the rest never start); the pipeline
/// stays readable, `cancelled`.
async fn cancel(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, AppError> {
    let pipelines = &state.inner.pipelines;
    if pipelines.status(&id)?.is_none() {
        return Err(AppError::not_found(format!("no pipeline with id {id}")));
    }
    pipelines.tasks.cancel(&id).await?;
    pipelines
        .status(&id)?
        .map(Json)
        .ok_or_else(|| AppError::not_found(format!("no pipeline with id {id}")))
}

async fn create(State(state): State<AppState>, ApiJson(spec): ApiJson<Value>) -> Result<Response, AppError> {
    let id = state.inner.pipelines.start(spec)?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
}

async fn status(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, AppError> {
    state
        .inner
        .pipelines
        .status(&id)?
        .map(Json)
        .ok_or_else(|| AppError::not_found(format!("no pipeline with id {id}")))
}
