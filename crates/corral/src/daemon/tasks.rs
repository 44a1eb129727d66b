//! Task routes: `POST /tasks`, `GET /tasks`, `GET /tasks/{id}` (`?wait=30s`), `DELETE /tasks/{id}`.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use corral_core::tasks::{EngineError, SubmitResult};
use corral_store::{TaskFilter, TaskStatus};
use serde_json::json;

use crate::api::{SubmitTask, TaskJson};
use crate::daemon::server::{wait_param, ApiJson, AppError, AppState};

/// Longest `?wait=` honoured in one request.
const MAX_WAIT: Duration = Duration::from_secs(300);

impl From<EngineError> for AppError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidId(_) => AppError::bad_request("invalid_id", err.to_string()),
            EngineError::UnknownType(..) => AppError::bad_request("unknown_type", err.to_string()),
            EngineError::InvalidParams { .. } => AppError::bad_request("invalid_params", err.to_string()),
            EngineError::DuplicateType(_) => {
                AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string())
            }
            EngineError::Store(store) => store.into(),
        }
    }
}

/// A task as API callers see it: secret params hidden (`TaskEngine::shown_params`).
fn shown(state: &AppState, record: &corral_store::TaskRecord) -> TaskJson {
    let mut json = TaskJson::from(record);
    json.params = state.inner.tasks.shown_params(record);
    json
}

/// The routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks", get(list).post(submit))
        .route("/tasks/{id}", get(get_one).delete(remove))
}

async fn submit(State(state): State<AppState>, ApiJson(body): ApiJson<SubmitTask>) -> Result<Response, AppError> {
    let result = state
        .inner
        .tasks
        .submit(body.id.as_deref(), &body.task_type, body.params)?;
    let status = match result {
        SubmitResult::Existing(_) => StatusCode::OK,
        SubmitResult::Created(_) => StatusCode::CREATED,
        // A failed id queued again is not a new task: 200, with the task now queued.
        SubmitResult::Requeued(_) => StatusCode::OK,
    };
    Ok((status, Json(shown(&state, result.record()))).into_response())
}

async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Vec<TaskJson>>, AppError> {
    let mut filter = TaskFilter::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "status" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    filter.statuses.push(
                        part.parse::<TaskStatus>()
                            .map_err(|_| AppError::bad_request("invalid_query", format!("unknown status {part:?}")))?,
                    );
                }
            }
            "type" => filter.task_type = Some(value.into_owned()),
            "limit" => {
                filter.limit = Some(
                    value
                        .parse()
                        .map_err(|_| AppError::bad_request("invalid_query", "limit must be a whole number"))?,
                )
            }
            other => {
                return Err(AppError::bad_request(
                    "invalid_query",
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    filter.limit = Some(filter.limit.unwrap_or(1000).min(10_000));
    let tasks = state.inner.tasks.list(&filter)?;
    Ok(Json(tasks.iter().map(|record| shown(&state, record)).collect()))
}

async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<TaskJson>, AppError> {
    let wait = wait_param(query.as_deref(), MAX_WAIT)?;
    let record = match wait {
        Some(wait) => state.inner.tasks.wait(&id, wait).await?,
        None => state.inner.tasks.get(&id)?,
    };
    record
        .map(|r| Json(shown(&state, &r)))
        .ok_or_else(|| AppError::not_found(format!("no task with id {id}")))
}

async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, AppError> {
    if state.inner.tasks.remove(&id).await? {
        Ok(Json(json!({"id": id, "removed": true})))
    } else {
        Err(AppError::not_found(format!("no task with id {id}")))
    }
}
