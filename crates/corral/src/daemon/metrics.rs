//! Prometheus metrics, kept as plain counters and rendered as text on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Counters and a latency summary, all behind one lock taken briefly per update.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    starts: u64,
    exits: BTreeMap<String, u64>,
    http: BTreeMap<(String, String, u16), u64>,
    store_ops: u64,
    store_seconds: f64,
    store_max_seconds: f64,
    events: BTreeMap<String, u64>,
    task_events: BTreeMap<(String, String), u64>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one bus event.
    pub(crate) fn on_event(&self, kind: &str, data: &serde_json::Value) {
        let mut inner = self.lock();
        match inner.events.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                inner.events.insert(kind.to_owned(), 1);
            }
        }
        match kind {
            "process.started" => inner.starts += 1,
            kind if kind.starts_with("task.") => {
                let kind = kind.trim_start_matches("task.").to_owned();
                let task_type = data
                    .get("type")
                    .and_then(|s| s.as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                *inner.task_events.entry((task_type, kind)).or_default() += 1;
            }
            "process.exited" => {
                let state = data
                    .get("state")
                    .and_then(|s| s.as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                *inner.exits.entry(state).or_default() += 1;
            }
            _ => {}
        }
    }

    /// Counts one HTTP request.
    pub(crate) fn on_request(&self, route: &str, method: &str, status: u16) {
        *self
            .lock()
            .http
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }

    /// Records the latency of one store operation.
    pub(crate) fn on_store_op(&self, elapsed: Duration) {
        let mut inner = self.lock();
        inner.store_ops += 1;
        let secs = elapsed.as_secs_f64();
        inner.store_seconds += secs;
        if secs > inner.store_max_seconds {
            inner.store_max_seconds = secs;
        }
    }

    /// Renders everything, with the process counts by state read from the store just now.
    pub(crate) fn render(&self, processes_by_state: &BTreeMap<String, u64>, running_children: usize) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP corral_processes Process records by state.");
        let _ = writeln!(out, "# TYPE corral_processes gauge");
        for state in [
            "pending",
            "running",
            "interrupting",
            "interrupted",
            "completed",
            "failed",
            "stale",
        ] {
            let n = processes_by_state.get(state).copied().unwrap_or(0);
            let _ = writeln!(out, "corral_processes{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP corral_supervised_processes Processes this daemon supervises now."
        );
        let _ = writeln!(out, "# TYPE corral_supervised_processes gauge");
        let _ = writeln!(out, "corral_supervised_processes {running_children}");
        let _ = writeln!(out, "# HELP corral_process_starts_total Processes started.");
        let _ = writeln!(out, "# TYPE corral_process_starts_total counter");
        let _ = writeln!(out, "corral_process_starts_total {}", inner.starts);
        let _ = writeln!(
            out,
            "# HELP corral_process_exits_total Processes ended, by final state."
        );
        let _ = writeln!(out, "# TYPE corral_process_exits_total counter");
        for (state, n) in &inner.exits {
            let _ = writeln!(out, "corral_process_exits_total{{state=\"{}\"}} {n}", escape(state));
        }
        let _ = writeln!(
            out,
            "# HELP corral_http_requests_total HTTP requests by route, method and status."
        );
        let _ = writeln!(out, "# TYPE corral_http_requests_total counter");
        for ((route, method, status), n) in &inner.http {
            let _ = writeln!(
                out,
                "corral_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        let _ = writeln!(
            out,
            "# HELP corral_store_operation_seconds Latency of store operations."
        );
        let _ = writeln!(out, "# TYPE corral_store_operation_seconds summary");
        let _ = writeln!(out, "corral_store_operation_seconds_count {}", inner.store_ops);
        let _ = writeln!(out, "corral_store_operation_seconds_sum {:.6}", inner.store_seconds);
        let _ = writeln!(
            out,
            "# HELP corral_store_operation_max_seconds Slowest store operation so far."
        );
        let _ = writeln!(out, "# TYPE corral_store_operation_max_seconds gauge");
        let _ = writeln!(out, "corral_store_operation_max_seconds {:.6}", inner.store_max_seconds);
        let _ = writeln!(
            out,
            "# HELP corral_task_transitions_total Task lifecycle events by type and kind."
        );
        let _ = writeln!(out, "# TYPE corral_task_transitions_total counter");
        for ((task_type, kind), n) in &inner.task_events {
            let _ = writeln!(
                out,
                "corral_task_transitions_total{{type=\"{}\",event=\"{}\"}} {n}",
                escape(task_type),
                escape(kind)
            );
        }
        let _ = writeln!(out, "# HELP corral_events_total Events published on the bus, by kind.");
        let _ = writeln!(out, "# TYPE corral_events_total counter");
        for (kind, n) in &inner.events {
            let _ = writeln!(out, "corral_events_total{{kind=\"{}\"}} {n}", escape(kind));
        }
        out
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Appends task counts by type and status.
pub(crate) fn render_tasks(out: &mut String, counts: &BTreeMap<(String, corral_store::TaskStatus), u64>) {
    let _ = writeln!(out, "# HELP corral_tasks Tasks by type and status.");
    let _ = writeln!(out, "# TYPE corral_tasks gauge");
    for ((task_type, status), n) in counts {
        let _ = writeln!(
            out,
            "corral_tasks{{type=\"{}\",status=\"{}\"}} {n}",
            escape(task_type),
            status.as_str()
        );
    }
}
