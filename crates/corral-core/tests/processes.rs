//! `ProcessManager` records: the end of a process is written once, after its start, also when the process
//! ends before its start is recorded, and the published `process.exited` record is the stored one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use corral_core::events::EventBus;
use corral_core::processes::{ProcessManager, StartRequest};
use corral_store::{ProcessState, SqliteStore, Store};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

/// Starts `n` `true`s at once, waits until each is recorded, and checks records and events.
async fn short_processes_are_recorded_once_after_their_start(timeout: Option<Duration>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("UNWRAP: in-memory store opens"));
    let bus = EventBus::new();
    let mut events = bus.subscribe();
    let manager = ProcessManager::new(store.clone(), bus);
    let n = 50;
    let starts = (0..n).map(|i| {
        let manager = manager.clone();
        async move {
            manager
                .start(StartRequest {
                    command: vec!["true".into()],
                    labels: BTreeMap::from([("turn".to_owned(), i.to_string())]),
                    timeout,
                    ..StartRequest::default()
                })
                .await
                .expect("UNWRAP: true starts")
        }
    });
    let started: Vec<_> = futures_join_all(starts).await;
    for record in &started {
        tokio::time::timeout(DEADLINE, manager.wait_recorded(&record.id))
            .await
            .expect("UNWRAP: the end is recorded in time");
        let stored = manager.get(&record.id).expect("UNWRAP: the record exists");
        assert_eq!(stored.state, ProcessState::Completed, "{stored:?}");
        assert_eq!(stored.exit_code, Some(0));
        assert!(
            stored.pid.is_some() && stored.start_ticks.is_some(),
            "the start was kept: {stored:?}"
        );
    }
    // Per process: exactly one `process.started`, then exactly one `process.exited`, carrying the stored record.
    let mut seen: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    while seen.values().filter(|kinds| kinds.len() == 2).count() < n {
        let event = tokio::time::timeout(DEADLINE, events.recv())
            .await
            .expect("UNWRAP: events in time")
            .expect("UNWRAP: the bus stays open");
        if let Some(id) = event.data.get("id").and_then(Value::as_str) {
            seen.entry(id.to_owned())
                .or_default()
                .push((event.kind.clone(), event.data.clone()));
        }
    }
    for record in &started {
        let kinds = &seen[&record.id];
        assert_eq!(kinds[0].0, "process.started");
        assert_eq!(kinds[1].0, "process.exited");
        let exited = &kinds[1].1;
        let stored = manager.get(&record.id).expect("UNWRAP: the record exists");
        assert_eq!(exited["state"], "completed");
        assert_eq!(exited["pid"], stored.pid.expect("UNWRAP: checked above"));
        assert_eq!(exited["labels"], serde_json::json!(stored.labels));
        assert_eq!(exited["command"], serde_json::json!(stored.command));
    }
}

/// `futures::future::join_all` without the dependency: one task each.
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("UNWRAP: start task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_are_read_back_for_processes_without_a_timeout() {
    short_processes_are_recorded_once_after_their_start(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_are_built_from_the_kept_start_for_processes_with_a_timeout() {
    short_processes_are_recorded_once_after_their_start(Some(Duration::from_secs(60))).await;
}
