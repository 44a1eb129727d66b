//! `GET /openapi.json`: a hand-kept OpenAPI description of the routes this daemon serves.

use serde_json::{json, Value};

/// The OpenAPI 3.1 document.
pub(crate) fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let op = |summary: &str| json!({"summary": summary, "responses": {"default": {"description": "error", "content": {"application/json": {"schema": error}}}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "corral", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/health": {"get": op("Health with checks: 200, or 503 naming the failing check")},
            "/ready": {"get": op("Readiness: 200 once serving, 503 while starting or stopping")},
            "/metrics": {"get": op("Prometheus metrics")},
            "/events": {"get": op("Server-sent events: process.started, process.exited, process.killed, pipeline.*")},
            "/processes": {
                "get": op("List process records (?label=k=v repeatable, state=, source=, limit=)"),
                "post": op("Start a process: {command: [argv], dir?, env?, labels?, timeout?, grace?, stdin?}")
            },
            "/processes/{id}": {"get": op("One process record")},
            "/processes/{id}/signal": {"post": op("Send a signal: {signal: \"TERM\" | 15}")},
            "/processes/{id}/stop": {"post": op("Stop the whole group: {grace?}; answers when it is gone")},
            "/processes/{id}/stdin": {"post": op("Write to stdin: {data, close?} as JSON, or the raw body with Content-Type: application/octet-stream (?close=true closes after it)")},
            "/processes/{id}/output": {"get": op("Captured output; ?follow=true streams lines as SSE until exit")},
            "/interrupt": {"post": op("Interrupt live processes in a scope: {process_id?, labels?, source?, reason?, grace?, wait?} → {matched, signaled, stale, unavailable}")},
            "/tasks": {
                "get": op("List tasks (?status=, type=, limit=)"),
                "post": op("Submit a task: {id?, type, params} → 201 new, 200 known")
            },
            "/tasks/{id}": {"get": op("One task (?wait=30s long-polls until finished)"), "delete": op("Cancel a running task and remove it")},
            "/tools": {"get": op("Declared tools and their commands, and the tool files skipped with their errors")},
            "/exec/{tool}/{cmd}": {"post": op("Run a declared command with a JSON object of string args → 202 {job_id, status: accepted}. With ?wait=30s (at most 5m) the same request waits for the job: 200 with the job JSON of GET /exec/jobs/{id} once it finished, else 202 with the job JSON so far (status accepted, queued or running)")},
            "/exec/jobs/{id}": {"get": op("One job: {job_id, tool, command, status, exit_code, stdout, stderr, truncated, duration_ms, error}; ?wait=30s long-polls until finished"), "delete": op("Cancel a job (its process tree is stopped)")},
            "/exec/jobs/{id}/stream": {"get": op("Server-sent events of a job: status changes and output lines, until it is finished")},
            "/pipelines": {"post": op("Run a pipeline spec (JSON form of the TOML file) as a durable task → {id}")},
            "/pipelines/{id}": {"get": op("Per-step status of a pipeline"), "delete": op("Cancel a pipeline (it stays readable)")}
        },
        "components": {"schemas": {"Error": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {"error": {"type": "string"}, "code": {"type": "string"}}
        }}}
    })
}
