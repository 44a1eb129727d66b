//! Wire types: the JSON both the daemon and the CLI speak. Only this crate chooses wire formats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every error response: `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
    pub(crate) code: String,
}

/// `POST /processes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartProcess {
    pub(crate) command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) grace: Option<String>,
    #[serde(default)]
    pub(crate) stdin: bool,
}

/// A process record as served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProcessJson {
    pub(crate) id: String,
    pub(crate) pid: Option<u32>,
    pub(crate) pgid: Option<u32>,
    pub(crate) source: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) command: Vec<String>,
    pub(crate) dir: Option<String>,
    pub(crate) state: String,
    pub(crate) exit_code: Option<i32>,
    #[serde(default)]
    pub(crate) signal: Option<String>,
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) created_at: Option<String>,
    pub(crate) started_at: Option<String>,
    pub(crate) ended_at: Option<String>,
}

impl From<&corral_store::ProcessRecord> for ProcessJson {
    fn from(record: &corral_store::ProcessRecord) -> Self {
        ProcessJson {
            id: record.id.clone(),
            pid: record.pid,
            pgid: record.pgid,
            source: record.source.clone(),
            labels: record.labels.clone(),
            command: record.command.clone(),
            dir: record.dir.clone(),
            state: record.state.as_str().to_owned(),
            exit_code: record.exit_code,
            signal: record.signal.clone(),
            error: record.error.clone(),
            created_at: Some(rfc3339(record.created_at)),
            started_at: record.started_at.map(rfc3339),
            ended_at: record.ended_at.map(rfc3339),
        }
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// `POST /processes/{id}/signal`: a name (`"TERM"`, `"SIGTERM"`) or a number.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignalRequest {
    pub(crate) signal: SignalValue,
}

/// A signal as a name or a number.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum SignalValue {
    Number(i32),
    Name(String),
}

/// `POST /processes/{id}/stop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopRequest {
    #[serde(default)]
    pub(crate) grace: Option<String>,
}

/// `POST /processes/{id}/stdin`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StdinRequest {
    #[serde(default)]
    pub(crate) data: String,
    #[serde(default)]
    pub(crate) close: bool,
}

/// `GET /processes/{id}/output`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutputJson {
    pub(crate) id: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) stdout_truncated: bool,
    pub(crate) stderr_truncated: bool,
    pub(crate) state: String,
    /// False when this daemon holds no output of the process (it ended, or was found, before the daemon's
    /// restart: output lives in memory, bounded, and only exec jobs and tasks mirror theirs to disk).
    #[serde(default = "kept_by_default")]
    pub(crate) kept: bool,
}

fn kept_by_default() -> bool {
    true
}

/// One line in `GET /processes/{id}/output?follow=true` (SSE event `output`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutputLine {
    pub(crate) stream: String,
    pub(crate) line: String,
    /// `newline`, `split` (continues in the next line) or `eof` (no newline yet: the rest, if any, comes as
    /// a line of its own).
    pub(crate) end: String,
    /// The line's exact bytes, only when they are not UTF-8 (`line` then has U+FFFD in their place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bytes: Option<Vec<u8>>,
}

impl OutputLine {
    /// The bytes as the process wrote them: the line, and its newline if it ended with one.
    pub(crate) fn raw(&self) -> Vec<u8> {
        let mut raw = match &self.bytes {
            Some(bytes) => bytes.clone(),
            None => self.line.as_bytes().to_vec(),
        };
        if self.end == "newline" {
            raw.push(b'\n');
        }
        raw
    }
}

/// `GET /health` and `GET /ready`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HealthJson {
    pub(crate) status: String,
    pub(crate) checks: BTreeMap<String, CheckJson>,
    #[serde(default)]
    pub(crate) version: String,
    #[serde(default)]
    pub(crate) pid: u32,
    #[serde(default)]
    pub(crate) uptime_ms: u64,
    #[serde(default)]
    pub(crate) processes: BTreeMap<String, u64>,
    #[serde(default)]
    pub(crate) reconcile: BTreeMap<String, u64>,
}

/// One health check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckJson {
    pub(crate) ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// `POST /pipelines` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PipelineCreated {
    pub(crate) id: String,
}

/// `POST /tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    #[serde(rename = "type")]
    pub(crate) task_type: String,
    #[serde(default)]
    pub(crate) params: serde_json::Value,
}

/// A task as served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskJson {
    pub(crate) id: String,
    #[serde(rename = "type")]
    pub(crate) task_type: String,
    pub(crate) status: String,
    pub(crate) attempt: u32,
    pub(crate) params: serde_json::Value,
    pub(crate) result: Option<serde_json::Value>,
    pub(crate) error: Option<String>,
    pub(crate) progress: Option<serde_json::Value>,
    pub(crate) submitted_at: Option<String>,
    pub(crate) started_at: Option<String>,
    pub(crate) completed_at: Option<String>,
}

impl From<&corral_store::TaskRecord> for TaskJson {
    fn from(record: &corral_store::TaskRecord) -> Self {
        TaskJson {
            id: record.id.clone(),
            task_type: record.task_type.clone(),
            status: record.status.as_str().to_owned(),
            attempt: record.attempt,
            params: record.params.clone(),
            result: record.result.clone(),
            error: record.error.clone(),
            progress: record.progress.clone(),
            submitted_at: Some(rfc3339(record.submitted_at)),
            started_at: record.started_at.map(rfc3339),
            completed_at: record.completed_at.map(rfc3339),
        }
    }
}

impl TaskJson {
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }
}

/// `POST /interrupt`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InterruptRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) process_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) grace: Option<String>,
    #[serde(default)]
    pub(crate) wait: bool,
}

/// `POST /interrupt` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct InterruptJson {
    pub(crate) matched: usize,
    pub(crate) signaled: usize,
    pub(crate) stale: usize,
    pub(crate) unavailable: usize,
}
