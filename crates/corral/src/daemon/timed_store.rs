//! A `Store` wrapper that records the latency of every operation in the metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use corral_store::{
    NewTask, ProcessEnd, ProcessFilter, ProcessRecord, ProcessStart, ProcessState, Store, StoreError, Submitted,
    TaskEnd, TaskFilter, TaskRecord, TaskStatus,
};
use serde_json::Value;

use crate::daemon::metrics::Metrics;

/// Delegates to the inner store, timing each call.
pub(crate) struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    pub(crate) fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        TimedStore { inner, metrics }
    }

    fn timed<T>(&self, op: impl FnOnce(&dyn Store) -> T) -> T {
        let started = Instant::now();
        let result = op(self.inner.as_ref());
        self.metrics.on_store_op(started.elapsed());
        result
    }
}

impl Store for TimedStore {
    fn insert_process(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        self.timed(|s| s.insert_process(record))
    }
    fn mark_process_started(&self, id: &str, start: &ProcessStart) -> Result<bool, StoreError> {
        self.timed(|s| s.mark_process_started(id, start))
    }
    fn transition_process(&self, id: &str, from: &[ProcessState], to: ProcessState) -> Result<bool, StoreError> {
        self.timed(|s| s.transition_process(id, from, to))
    }
    fn finish_process(&self, id: &str, end: &ProcessEnd) -> Result<bool, StoreError> {
        self.timed(|s| s.finish_process(id, end))
    }
    fn get_process(&self, id: &str) -> Result<Option<ProcessRecord>, StoreError> {
        self.timed(|s| s.get_process(id))
    }
    fn list_processes(&self, filter: &ProcessFilter) -> Result<Vec<ProcessRecord>, StoreError> {
        self.timed(|s| s.list_processes(filter))
    }
    fn count_processes_by_state(&self) -> Result<BTreeMap<ProcessState, u64>, StoreError> {
        self.timed(|s| s.count_processes_by_state())
    }
    fn delete_finished_processes(&self, ended_before: i64) -> Result<u64, StoreError> {
        self.timed(|s| s.delete_finished_processes(ended_before))
    }
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.timed(|s| s.get_meta(key))
    }
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.timed(|s| s.set_meta(key, value))
    }
    fn health_check(&self) -> Result<(), StoreError> {
        self.timed(|s| s.health_check())
    }
    fn submit_task(&self, new: &NewTask) -> Result<Submitted, StoreError> {
        self.timed(|s| s.submit_task(new))
    }
    fn submit_claimed_task(&self, new: &NewTask, node: &str, lease_until: i64) -> Result<Submitted, StoreError> {
        self.timed(|s| s.submit_claimed_task(new, node, lease_until))
    }
    fn claim_task(&self, id: &str, node: &str, lease_until: i64, now: i64) -> Result<Option<TaskRecord>, StoreError> {
        self.timed(|s| s.claim_task(id, node, lease_until, now))
    }
    fn claim_next_task(
        &self,
        task_types: &[String],
        node: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<TaskRecord>, StoreError> {
        self.timed(|s| s.claim_next_task(task_types, node, lease_until, now))
    }
    fn renew_task_lease(&self, id: &str, node: &str, lease_until: i64) -> Result<bool, StoreError> {
        self.timed(|s| s.renew_task_lease(id, node, lease_until))
    }
    fn set_task_progress(&self, id: &str, node: &str, progress: &Value, now: i64) -> Result<bool, StoreError> {
        self.timed(|s| s.set_task_progress(id, node, progress, now))
    }
    fn finish_task(&self, id: &str, node: &str, end: &TaskEnd) -> Result<bool, StoreError> {
        self.timed(|s| s.finish_task(id, node, end))
    }
    fn requeue_task(&self, id: &str, node: &str, now: i64) -> Result<bool, StoreError> {
        self.timed(|s| s.requeue_task(id, node, now))
    }
    fn cancel_task(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.timed(|s| s.cancel_task(id, now))
    }
    fn delete_task(&self, id: &str) -> Result<bool, StoreError> {
        self.timed(|s| s.delete_task(id))
    }
    fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.timed(|s| s.get_task(id))
    }
    fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        self.timed(|s| s.list_tasks(filter))
    }
    fn count_tasks(&self) -> Result<BTreeMap<(String, TaskStatus), u64>, StoreError> {
        self.timed(|s| s.count_tasks())
    }
    fn tasks_to_recover(&self, node: &str, now: i64) -> Result<Vec<TaskRecord>, StoreError> {
        self.timed(|s| s.tasks_to_recover(node, now))
    }
    fn queued_tasks(&self, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
        self.timed(|s| s.queued_tasks(limit))
    }
    fn delete_finished_tasks(&self, completed_before: i64, keep_newest: usize) -> Result<u64, StoreError> {
        self.timed(|s| s.delete_finished_tasks(completed_before, keep_newest))
    }
}
