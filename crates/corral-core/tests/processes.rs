//! `ProcessManager` records: the end of a process is written once, after its start, also when the process
//! ends before its start is recorded, and the published `process.exited` record is the stored one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use corral_core::events::EventBus;
use corral_core::processes::{ProcessManager, ProcessesError, StartRequest};
use corral_store::{ProcessFilter, ProcessState, SqliteStore, Store, StoreError};
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

/// A start writes its record once: running, with its identity, or failed when the spawn fails; never a
/// `pending` record left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_writes_one_record_running_or_failed() {
    let (store, manager) = in_memory_manager();
    let running = manager
        .start(StartRequest {
            command: vec!["sleep".into(), "60".into()],
            ..StartRequest::default()
        })
        .await
        .expect("UNWRAP: sleep starts");
    assert_eq!(running.state, ProcessState::Running);
    assert_eq!(
        store.get_process(&running.id).expect("UNWRAP: read"),
        Some(running.clone())
    );

    let failed = manager
        .start(StartRequest {
            command: vec!["/nonexistent/corral-test-program".into()],
            ..StartRequest::default()
        })
        .await;
    let Err(ProcessesError::Spawn { record, error }) = failed else {
        panic!("a missing program is a spawn error: {failed:?}");
    };
    assert_eq!(record.state, ProcessState::Failed);
    assert!(record.ended_at.is_some() && record.pid.is_none(), "{record:?}");
    assert!(error.contains("nonexistent"), "{error}");
    assert_eq!(store.get_process(&record.id).expect("UNWRAP: read"), Some(*record));

    let all = store.list_processes(&ProcessFilter::default()).expect("UNWRAP: list");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|r| r.state != ProcessState::Pending), "{all:?}");
    manager
        .stop(&running.id, Some(Duration::from_secs(5)))
        .await
        .expect("UNWRAP: stops");
}

/// A caller-chosen id that is already recorded is refused before anything runs: nothing is spawned and the
/// existing record is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_id_is_refused_before_anything_runs() {
    let (store, manager) = in_memory_manager();
    let first = manager
        .start(StartRequest {
            command: vec!["true".into()],
            id: Some("step-1".into()),
            ..StartRequest::default()
        })
        .await
        .expect("UNWRAP: true starts");
    tokio::time::timeout(DEADLINE, manager.wait_recorded(&first.id))
        .await
        .expect("UNWRAP: the end is recorded in time");
    let before = store.get_process("step-1").expect("UNWRAP: read");
    let dir = tempfile_dir();
    let marker = dir.join("ran");
    let again = manager
        .start(StartRequest {
            command: vec!["touch".into(), marker.display().to_string()],
            id: Some("step-1".into()),
            ..StartRequest::default()
        })
        .await;
    assert!(
        matches!(again, Err(ProcessesError::Store(StoreError::Conflict { .. }))),
        "{again:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marker.exists(), "the second command ran");
    assert_eq!(store.get_process("step-1").expect("UNWRAP: read"), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system's temp dir.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-core-test-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("UNWRAP: temp dir");
    dir
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// A manager over a fresh in-memory store.
fn in_memory_manager() -> (Arc<dyn Store>, ProcessManager) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("UNWRAP: in-memory store opens"));
    let manager = ProcessManager::new(store.clone(), EventBus::new());
    (store, manager)
}

/// A process whose record cannot be written is stopped, not left running where nothing could find it: the
/// store is read-only, so the spawn succeeds and the write after it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_record_cannot_be_written_stops_its_process() {
    let dir = tempfile_dir();
    let path = dir.join("corral.db");
    drop(SqliteStore::open(&path).expect("UNWRAP: the store is created"));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_read_only(&path).expect("UNWRAP: opens read-only"));
    let manager = ProcessManager::new(store.clone(), EventBus::new());
    let pid_file = dir.join("pid");
    let started = manager
        .start(StartRequest {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!("echo $$ > {}; exec sleep 600", pid_file.display()),
            ],
            ..StartRequest::default()
        })
        .await;
    assert!(
        matches!(started, Err(ProcessesError::Store(StoreError::ReadOnly { .. }))),
        "{started:?}"
    );
    // The stop may come before the shell has written its pid (then it never does); a process left running
    // would write it and live on. So: once a pid is written, it must go away (stopped and reaped, not just
    // signalled); if none is written for a while, the child was stopped before it got that far.
    let started_waiting = std::time::Instant::now();
    loop {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        match pid {
            Some(pid) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => break,
            Some(pid) => assert!(started_waiting.elapsed() < DEADLINE, "process {pid} is still there"),
            None if started_waiting.elapsed() > Duration::from_secs(3) => break,
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store
        .list_processes(&ProcessFilter::default())
        .expect("UNWRAP: list")
        .is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
