//! The HTTP API: one router, served on the Unix socket as is and on TCP behind token auth.
//!
//! Handlers are thin: extract, call corral-core, map the result. Errors are always
//! `{"error": "...", "code": "..."}` through [`AppError`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_core::events::EventBus;
use corral_core::processes::{ProcessManager, ProcessesError, ReconcileReport, StartRequest};
use corral_proc::{EventKind, LineEnd, Received, Signal};
use corral_store::{ProcessFilter, ProcessState, StoreError};
use futures_util::stream::{self, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::{
    CheckJson, ErrorBody, HealthJson, OutputJson, OutputLine, ProcessJson, SignalRequest, SignalValue, StartProcess,
    StdinRequest, StopRequest,
};
use crate::daemon::auth::{required_scope, Required, Scope, Tokens};
use crate::daemon::metrics::Metrics;
use crate::daemon::pipelines::Pipelines;

/// Records `GET /processes` returns when no `limit` is given.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// The most records one `GET /processes` returns.
const MAX_LIST_LIMIT: usize = 10_000;

/// Largest request body accepted.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) inner: Arc<AppInner>,
}

pub(crate) struct AppInner {
    pub(crate) processes: ProcessManager,
    pub(crate) tasks: corral_core::tasks::TaskEngine,
    pub(crate) tools: std::sync::Arc<corral_core::tools::ToolRegistry>,
    pub(crate) pipelines: Pipelines,
    pub(crate) bus: EventBus,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tokens: Tokens,
    pub(crate) started: Instant,
    pub(crate) state_dir: PathBuf,
    /// The folder of the store's file (often the state dir; may be another filesystem).
    pub(crate) store_dir: PathBuf,
    pub(crate) ready: AtomicBool,
    pub(crate) reconcile: ReconcileReport,
    /// Flips to true at shutdown; long-lived streams end on it.
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Resolves once the daemon is shutting down.
pub(crate) fn shutting_down(state: &AppState) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut shutdown = state.inner.shutdown.clone();
    async move {
        let _ = shutdown.wait_for(|s| *s).await;
    }
}

/// An error response.
#[derive(Debug)]
pub(crate) struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AppError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Names the offending argument (already in the message; kept for logs).
    pub(crate) fn with_arg(self, arg: &str) -> Self {
        tracing::debug!(arg, code = self.code, "request refused");
        self
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        // 503s are answers (not ready yet, store unavailable), not daemon bugs: only 500s are errors.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(code = self.code, error = %self.message, "request failed");
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE && self.code != "not_ready" {
            tracing::warn!(code = self.code, error = %self.message, "request refused");
        }
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("store unavailable: {err}"),
            )
        } else {
            AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                format!("store error: {err}"),
            )
        }
    }
}

impl From<ProcessesError> for AppError {
    fn from(err: ProcessesError) -> Self {
        match err {
            ProcessesError::Invalid(msg) => AppError::bad_request("invalid_request", msg),
            ProcessesError::NotFound(id) => AppError::not_found(format!("no process with id {id}")),
            ProcessesError::NotRunning(id) => AppError::new(
                StatusCode::CONFLICT,
                "not_running",
                format!("process {id} is not running"),
            ),
            ProcessesError::Spawn { error, .. } => AppError::bad_request("spawn_failed", error),
            ProcessesError::Unsupported(msg) => AppError::new(StatusCode::CONFLICT, "unsupported", msg),
            ProcessesError::Store(err) => err.into(),
            ProcessesError::Os(msg) => AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "os_error", msg),
        }
    }
}

/// JSON body extractor whose rejections come out in our error shape.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A body that could not be read, in our error shape; one over the limit says the limit.
fn body_rejection(rejection: axum::extract::rejection::BytesRejection) -> AppError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return AppError::new(
            status,
            "body_too_large",
            format!("the request body is larger than the limit of {} bytes", BODY_LIMIT),
        );
    }
    AppError::new(status, "bad_body", rejection.body_text())
}

/// Parses a JSON body; an empty body means the type's default (for optional bodies).
pub(crate) struct OptionalJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes)
        .map_err(|err| AppError::bad_request("invalid_json", format!("invalid JSON body: {err}")))
}

/// The flag `name` of a query string: `true`/`1` or `false`/`0`, absent is false; anything else is a 400
/// rather than a silent false.
fn query_flag(query: Option<&str>, name: &str) -> Result<bool, AppError> {
    let mut set = false;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == name {
            set = match value.as_ref() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(AppError::bad_request(
                        "invalid_query",
                        format!("{name} must be true or false (got {other:?})"),
                    ))
                }
            };
        }
    }
    Ok(set)
}

/// Parses an optional duration field of a request, naming the field in the error.
pub(crate) fn duration_field(name: &str, value: Option<&str>) -> Result<Option<Duration>, AppError> {
    value
        .map(|text| {
            corral_core::units::parse_duration(text)
                .map_err(|err| AppError::bad_request("invalid_duration", format!("{name}: {err}")))
        })
        .transpose()
}

/// Parses a query that may only hold `wait=<duration>` (long-poll), capped at `max`.
pub(crate) fn wait_param(query: Option<&str>, max: Duration) -> Result<Option<Duration>, AppError> {
    let mut wait = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "wait" => wait = duration_field("wait", Some(&value))?.map(|w| w.min(max)),
            other => {
                return Err(AppError::bad_request(
                    "invalid_query",
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    Ok(wait)
}

/// The router (no auth: the Unix socket is trusted by peer credentials).
pub(crate) fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route("/openapi.json", get(openapi))
        .route("/processes", get(list_processes).post(start_process))
        .route("/processes/{id}", get(get_process))
        .route("/processes/{id}/signal", post(signal_process))
        .route("/processes/{id}/stop", post(stop_process))
        .route("/processes/{id}/stdin", post(stdin_process))
        .route("/processes/{id}/output", get(process_output))
        .route("/interrupt", post(interrupt))
        .merge(crate::daemon::pipelines::router())
        .merge(crate::daemon::tasks::router())
        .merge(crate::daemon::exec::router())
        .fallback(|| async { AppError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            AppError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// The router for TCP: the same routes behind bearer-token auth.
pub(crate) fn tcp_app(state: AppState) -> Router {
    app(state.clone()).layer(middleware::from_fn_with_state(state, authenticate))
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    state
        .inner
        .metrics
        .on_request(&route, &method, response.status().as_u16());
    response
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let required = required_scope(request.method(), request.uri().path());
    if required == Required::Nothing {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(token) = presented.and_then(|secret| state.inner.tokens.find(secret)) else {
        let mut response = AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    };
    let denied = match &required {
        Required::Nothing => None,
        Required::Scope(scope) => (!token.allows(scope)).then(|| scope.to_string()),
        Required::Job { id, read } => {
            let record = state
                .inner
                .tasks
                .get(id)
                .ok()
                .flatten()
                .filter(|r| r.task_type == "exec");
            let command = record.as_ref().and_then(|record| {
                let field = |name: &str| record.params.get(name).and_then(serde_json::Value::as_str);
                field("tool").zip(field("command"))
            });
            let scope = Required::job_scope(command);
            let allowed = (*read && token.allows(&Scope::Read))
                || scope
                    .as_ref()
                    .map_or(token.may_exec_something(), |scope| token.allows(scope));
            let wanted = scope.map_or("exec:<tool>/<cmd>".to_owned(), |scope| scope.to_string());
            (!allowed).then(|| if *read { format!("{wanted} or read") } else { wanted })
        }
    };
    if let Some(wanted) = denied {
        return AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {:?} lacks the scope this route needs ({wanted})", token.name),
        )
        .into_response();
    }
    // Handlers that need finer checks (exec's acl_cap) see who is calling.
    let token = token.clone();
    let mut request = request;
    request.extensions_mut().insert(token);
    next.run(request).await
}

async fn health(State(state): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    let store_check = state.inner.processes.store().health_check();
    checks.insert(
        "store".to_owned(),
        CheckJson {
            ok: store_check.is_ok(),
            error: store_check.err().map(|e| e.to_string()),
        },
    );
    let disk = disk_check(&state.inner.state_dir).and_then(|()| disk_check(&state.inner.store_dir));
    checks.insert(
        "disk".to_owned(),
        CheckJson {
            ok: disk.is_ok(),
            error: disk.err(),
        },
    );
    if let Some(connected) = state.inner.processes.keeper_connected() {
        checks.insert(
            "keeper".to_owned(),
            CheckJson {
                ok: connected,
                error: (!connected).then(|| {
                    "the keeper is gone: new processes are the daemon's own children and will not survive a \
                     crash of the daemon; restart the daemon"
                        .to_owned()
                }),
            },
        );
    }
    let ok = checks.values().all(|c| c.ok);
    let processes = state
        .inner
        .processes
        .store()
        .count_processes_by_state()
        .map(|counts| counts.into_iter().map(|(s, n)| (s.as_str().to_owned(), n)).collect())
        .unwrap_or_default();
    let body = HealthJson {
        status: if ok { "ok".into() } else { "unhealthy".into() },
        checks,
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_ms: state.inner.started.elapsed().as_millis() as u64,
        processes,
        reconcile: BTreeMap::from([
            ("recovered".to_owned(), state.inner.reconcile.recovered as u64),
            ("stale".to_owned(), state.inner.reconcile.stale as u64),
            ("reattached".to_owned(), state.inner.reconcile.reattached as u64),
            (
                "exited_while_down".to_owned(),
                state.inner.reconcile.exited_while_down as u64,
            ),
            ("unowned".to_owned(), state.inner.reconcile.unowned as u64),
        ]),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Free space where we write: unhealthy below 64 MiB, or below 5 % on a filesystem smaller than 1.25 GiB.
fn disk_check(dir: &std::path::Path) -> Result<(), String> {
    let stat = rustix::fs::statvfs(dir).map_err(|err| format!("cannot stat {}: {err}", dir.display()))?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let total = stat.f_blocks.saturating_mul(stat.f_frsize);
    let threshold = (64 * 1024 * 1024).min(total / 20);
    if free < threshold || free == 0 {
        return Err(format!("only {} MiB free in {}", free / (1024 * 1024), dir.display()));
    }
    Ok(())
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.inner.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the daemon is starting or stopping",
        )
        .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let counts = state.inner.processes.store().count_processes_by_state();
    let counts: BTreeMap<String, u64> = counts
        .unwrap_or_default()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect();
    let mut text = state
        .inner
        .metrics
        .render(&counts, state.inner.processes.running_count());
    let tasks = state.inner.tasks.counts().unwrap_or_default();
    crate::daemon::metrics::render_tasks(&mut text, &tasks);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn events(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = state.inner.bus.subscribe();
    let stream = stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(event) => SseEvent::default()
                .event(event.kind.clone())
                .data(json!({"kind": event.kind, "at": event.at, "data": event.data}).to_string()),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(json!({"missed": n}).to_string()),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    // A first event at once, so a client knows its subscription is live before it acts.
    let hello = stream::once(async { Ok(SseEvent::default().event("ready").data("{}")) });
    Sse::new(hello.chain(stream).take_until(shutting_down(&state))).keep_alive(KeepAlive::default())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::daemon::openapi::document())
}

async fn start_process(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StartProcess>,
) -> Result<Response, AppError> {
    let request = StartRequest {
        command: body.command,
        dir: body.dir.map(PathBuf::from),
        env: body.env,
        labels: body.labels,
        source: "adhoc".into(),
        timeout: duration_field("timeout", body.timeout.as_deref())?,
        grace: duration_field("grace", body.grace.as_deref())?,
        stdin: body.stdin,
        id: None,
        record_command: None,
        durable_output: false,
    };
    for (key, value) in &request.labels {
        validate_label(key, value)?;
    }
    let record = state.inner.processes.start(request).await?;
    Ok((StatusCode::CREATED, Json(ProcessJson::from(&record))).into_response())
}

pub(crate) fn validate_label(key: &str, value: &str) -> Result<(), AppError> {
    let ok_key =
        !key.is_empty() && key.len() <= 128 && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
    if !ok_key {
        return Err(AppError::bad_request(
            "invalid_label",
            format!("label key {key:?}: use 1-128 characters of letters, digits, _ . - /"),
        ));
    }
    if value.len() > 1024 || value.contains('\0') {
        return Err(AppError::bad_request(
            "invalid_label",
            format!("label {key}: value too long or has a NUL byte"),
        ));
    }
    Ok(())
}

/// Parses `label=k=v` (repeatable), `state=S`, `source=`, `limit=N`.
fn process_filter(query: Option<&str>) -> Result<ProcessFilter, AppError> {
    let mut filter = ProcessFilter::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "label" => {
                let (k, v) = value.split_once('=').ok_or_else(|| {
                    AppError::bad_request("invalid_query", format!("label {value:?}: use label=key=value"))
                })?;
                filter.labels.insert(k.to_owned(), v.to_owned());
            }
            "state" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let state: ProcessState = part
                        .parse()
                        .map_err(|_| AppError::bad_request("invalid_query", format!("unknown state {part:?}")))?;
                    filter.states.push(state);
                }
            }
            "source" => filter.source = Some(value.into_owned()),
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
    Ok(filter)
}

async fn interrupt(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<crate::api::InterruptRequest>,
) -> Result<Json<crate::api::InterruptJson>, AppError> {
    // An empty string narrows nothing: it is no scope (400), not a scope that matches nothing (404).
    let given = |value: Option<String>| value.filter(|value| !value.is_empty());
    let scope = corral_core::processes::InterruptScope {
        process_id: given(body.process_id),
        labels: body.labels,
        source: given(body.source),
    };
    if scope.is_empty() {
        return Err(AppError::bad_request(
            "empty_scope",
            "an interrupt needs a scope: process_id, labels or source",
        ));
    }
    let grace = duration_field("grace", body.grace.as_deref())?;
    let report = state
        .inner
        .processes
        .interrupt(&scope, body.reason.as_deref(), grace, body.wait)
        .await?;
    if report.matched == 0 {
        return Err(AppError::not_found("no live process matches this scope"));
    }
    Ok(Json(crate::api::InterruptJson {
        matched: report.matched,
        signaled: report.signaled,
        stale: report.stale,
        unavailable: report.unavailable,
    }))
}

async fn list_processes(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ProcessJson>>, AppError> {
    let mut filter = process_filter(query.as_deref())?;
    // Listing holds the store's writer lock while rows decode: never list everything by accident.
    filter.limit = Some(filter.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT));
    let records = state.inner.processes.list(&filter)?;
    Ok(Json(records.iter().map(ProcessJson::from).collect()))
}

async fn get_process(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ProcessJson>, AppError> {
    Ok(Json(ProcessJson::from(&state.inner.processes.get(&id)?)))
}

async fn signal_process(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SignalRequest>,
) -> Result<Json<ProcessJson>, AppError> {
    let signal = match &body.signal {
        SignalValue::Number(n) => Signal::from_number(*n),
        SignalValue::Name(name) => name.parse().ok(),
    }
    .ok_or_else(|| {
        let given = match &body.signal {
            SignalValue::Number(n) => n.to_string(),
            SignalValue::Name(name) => format!("{name:?}"),
        };
        AppError::bad_request(
            "invalid_signal",
            format!("unknown signal {given} (use a name such as TERM or a number such as 15)"),
        )
    })?;
    state.inner.processes.signal(&id, signal).await?;
    Ok(Json(ProcessJson::from(&state.inner.processes.get(&id)?)))
}

async fn stop_process(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<StopRequest>,
) -> Result<Json<ProcessJson>, AppError> {
    let grace = duration_field("grace", body.grace.as_deref())?;
    Ok(Json(ProcessJson::from(&state.inner.processes.stop(&id, grace).await?)))
}

/// `POST /processes/{id}/stdin`: `{data, close?}` as JSON, or with `Content-Type: application/octet-stream`
/// the body's bytes as they are (any bytes, not only UTF-8 text) and `?close=true` to close after them.
async fn stdin_process(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Json<serde_json::Value>, AppError> {
    let raw = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/octet-stream"));
    let (data, close) = if raw {
        let close = query_flag(query.as_deref(), "close")?;
        let bytes = Bytes::from_request(request, &state).await.map_err(body_rejection)?;
        (bytes, close)
    } else {
        let ApiJson(body) = ApiJson::<StdinRequest>::from_request(request, &state).await?;
        (Bytes::from(body.data), body.close)
    };
    state.inner.processes.write_stdin(&id, &data, close).await?;
    Ok(Json(json!({"written": data.len(), "closed": close})))
}

async fn process_output(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let follow = query_flag(query.as_deref(), "follow")?;
    let record = state.inner.processes.get(&id)?;
    let _ = headers;
    if follow {
        return Ok(follow_output(state, id).await.into_response());
    }
    let held = state.inner.processes.output(&id);
    let kept = held.is_some();
    let (stdout, stderr) = held.unwrap_or((None, None));
    let text = |o: &Option<corral_proc::CapturedOutput>| o.as_ref().map(|o| o.to_string_lossy()).unwrap_or_default();
    let cut = |o: &Option<corral_proc::CapturedOutput>| o.as_ref().is_some_and(|o| o.is_truncated());
    Ok(Json(OutputJson {
        id,
        stdout: text(&stdout),
        stderr: text(&stderr),
        stdout_truncated: cut(&stdout),
        stderr_truncated: cut(&stderr),
        state: record.state.as_str().to_owned(),
        kept,
    })
    .into_response())
}

/// SSE: what was captured so far (as lines), then live lines, then an `exit` event with the record.
async fn follow_output(state: AppState, id: String) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut subscription = state.inner.processes.follow(&id);
    let backlog = subscription.as_mut().map(backlog_events).unwrap_or_default();
    let events = subscription.map(|follow| follow.events);
    let processes = state.inner.processes.clone();
    let live = stream::unfold(
        (events, processes, id, false),
        |(mut events, processes, id, done)| async move {
            if done {
                return None;
            }
            loop {
                let Some(subscription) = events.as_mut() else {
                    processes.wait_recorded(&id).await;
                    let exit = exit_event(&processes, &id);
                    return Some((vec![exit], (None, processes, id, true)));
                };
                match subscription.recv().await {
                    Some(Received::Event(event)) => match event.kind {
                        EventKind::Output { stream, lines } => {
                            let batch = lines.iter().map(|line| output_event(stream, line)).collect();
                            return Some((batch, (events, processes, id, false)));
                        }
                        EventKind::Exited(_) => {
                            processes.wait_recorded(&id).await;
                            let exit = exit_event(&processes, &id);
                            return Some((vec![exit], (None, processes, id, true)));
                        }
                        _ => continue,
                    },
                    Some(Received::Missed(n)) => {
                        let lagged = SseEvent::default()
                            .event("lagged")
                            .data(json!({"missed": n}).to_string());
                        return Some((vec![lagged], (events, processes, id, false)));
                    }
                    None => events = None,
                }
            }
        },
    )
    .flat_map(|batch| stream::iter(batch.into_iter().map(Ok)));
    let stream = stream::iter(backlog.into_iter().map(Ok))
        .chain(live)
        .take_until(shutting_down(&state));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The output events of what a follower's snapshot holds, stdout then stderr, taken out of `follow`; a
/// `truncated` event `{stream, dropped}` first when the ring no longer holds the oldest bytes. A last
/// line without its newline comes too (marked `eof`) when nobody was listening as it began: the process
/// then keeps no partial line, so the rest of it comes live as a line of its own, and dropping it here
/// lost the start of that line. When another follower was listening, the process holds that partial line
/// and its next event carries it whole: those bytes are left out here, or they would come twice.
pub(crate) fn backlog_events(follow: &mut corral_proc::Follow) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for stream in [corral_proc::Stream::Stdout, corral_proc::Stream::Stderr] {
        let held = follow.partial_line(stream);
        if let Some(out) = follow.take_output(stream) {
            if out.dropped > 0 {
                // The oldest output is gone from the ring (it is bounded): say so before what is left.
                events.push(
                    SseEvent::default()
                        .event("truncated")
                        .data(json!({"stream": stream.as_str(), "dropped": out.dropped}).to_string()),
                );
            }
            let mut bytes = out.bytes;
            bytes.truncate(bytes.len().saturating_sub(held));
            let mut splitter = corral_proc::LineSplitter::new(corral_proc::DEFAULT_LINE_MAX);
            let mut lines = Vec::new();
            splitter.push(&Bytes::from(bytes), &mut lines);
            lines.extend(splitter.finish());
            events.extend(lines.iter().map(|line| output_event(stream, line)));
        }
    }
    events
}

pub(crate) fn output_event(stream: corral_proc::Stream, line: &corral_proc::Line) -> SseEvent {
    let end = match line.end {
        LineEnd::Newline => "newline",
        LineEnd::Split => "split",
        LineEnd::Eof => "eof",
    };
    let body = OutputLine {
        stream: stream.as_str().to_owned(),
        line: line.to_string_lossy(),
        end: end.to_owned(),
        bytes: std::str::from_utf8(&line.text).is_err().then(|| line.text.to_vec()),
    };
    SseEvent::default()
        .event("output")
        .data(serde_json::to_string(&body).unwrap_or_default())
}

fn exit_event(processes: &ProcessManager, id: &str) -> SseEvent {
    let data = processes
        .get(id)
        .map(|record| serde_json::to_string(&ProcessJson::from(&record)).unwrap_or_default())
        .unwrap_or_else(|err| json!({"error": err.to_string()}).to_string());
    SseEvent::default().event("exit").data(data)
}
