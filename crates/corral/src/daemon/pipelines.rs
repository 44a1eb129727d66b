//! Pipelines in the daemon: `POST /pipelines`, `GET /pipelines/{id}`.
//!
//! Each step runs as a managed process (source `pipeline`, labels `pipeline=<id>` and `step=<name>`), so
//! it has a durable record, shows in `corral ps`, and is stopped with the daemon. Pipeline runs
//! themselves are kept in memory for now: after a daemon restart `GET /pipelines/{id}` no longer knows
//! them (durable pipelines arrive as the `pipeline` task type).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_core::events::EventBus;
use corral_core::pipeline::{CancelToken, Pipeline, PipelineEvent, PipelineRun, PipelineSpec, Runner, StepResult};
use corral_core::processes::ProcessManager;
use corral_core::steps::ManagedLauncher;
use serde_json::{json, Value};

use crate::daemon::server::{ApiJson, AppError, AppState};

struct Entry {
    run: PipelineRun,
    created_at: i64,
}

/// Running and finished pipelines of this daemon.
pub(crate) struct Pipelines {
    processes: ProcessManager,
    bus: EventBus,
    runs: Mutex<HashMap<String, Entry>>,
}

impl Pipelines {
    pub(crate) fn new(processes: ProcessManager, bus: EventBus) -> Self {
        Pipelines {
            processes,
            bus,
            runs: Mutex::new(HashMap::new()),
        }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates and starts a pipeline; returns its id.
    pub(crate) fn start(&self, spec: PipelineSpec) -> Result<String, AppError> {
        let pipeline = Pipeline::new(spec)
            // The error's text already starts with "invalid pipeline".
            .map_err(|err| AppError::bad_request("invalid_pipeline", err.to_string()))?;
        let id = uuid::Uuid::new_v4().to_string();
        let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
        let launcher = ManagedLauncher::new(self.processes.clone(), id.clone());
        let runner = Runner::new(launcher).events(events_tx).cancel_token(CancelToken::new());
        let run = runner.start(pipeline);
        self.runs().insert(
            id.clone(),
            Entry {
                run,
                created_at: corral_core::events::now_ms(),
            },
        );
        self.bus.publish("pipeline.started", json!({"id": id}));
        let bus = self.bus.clone();
        let pipeline_id = id.clone();
        tokio::spawn(async move {
            while let Some(event) = events_rx.recv().await {
                let kind = match &event {
                    PipelineEvent::StepStarted { .. } => "pipeline.step_started",
                    PipelineEvent::StepFinished { .. } => "pipeline.step_finished",
                    PipelineEvent::StepSkipped { .. } => "pipeline.step_skipped",
                    PipelineEvent::StepCancelled { .. } => "pipeline.step_cancelled",
                    PipelineEvent::Finished { .. } => "pipeline.finished",
                };
                let mut data = serde_json::to_value(&event).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut data {
                    map.insert("pipeline".into(), Value::String(pipeline_id.clone()));
                }
                bus.publish(kind, data);
            }
        });
        Ok(id)
    }

    /// The status of a pipeline as served.
    pub(crate) fn status(&self, id: &str) -> Option<Value> {
        let runs = self.runs();
        let entry = runs.get(id)?;
        let steps: Vec<Value> = entry.run.snapshot().iter().map(step_json).collect();
        let count = |status: &str| steps.iter().filter(|s| s["status"] == status).count();
        let result = entry.run.result();
        Some(json!({
            "id": id,
            "name": entry.run.name(),
            "state": if result.is_some() { "finished" } else { "running" },
            "success": result.as_ref().map(|r| r.success),
            "passed": count("passed"),
            "failed": count("failed"),
            "skipped": count("skipped"),
            "cancelled": count("cancelled"),
            "duration_ms": result.as_ref().map(|r| r.duration.as_millis() as u64),
            "created_at": crate::api::rfc3339(entry.created_at),
            "steps": steps,
        }))
    }

    /// Cancels every running pipeline (daemon shutdown).
    pub(crate) fn cancel_all(&self) {
        for entry in self.runs().values() {
            entry.run.cancel();
        }
    }
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
        .route("/pipelines/{id}", get(status))
}

async fn create(State(state): State<AppState>, ApiJson(spec): ApiJson<PipelineSpec>) -> Result<Response, AppError> {
    let id = state.inner.pipelines.start(spec)?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
}

async fn status(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, AppError> {
    state
        .inner
        .pipelines
        .status(&id)
        .map(Json)
        .ok_or_else(|| AppError::not_found(format!("no pipeline with id {id}")))
}
