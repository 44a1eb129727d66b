//! Tasks under concurrency: many threads on several connections (stores on one file), so that the guarantees
//! are shown to hold in SQLite, not only behind one store's mutex.

use std::sync::{Arc, Barrier};

use corral_store::{SqliteStore, Store, Submitted, TaskEnd, TaskStatus};
use serde_json::json;

use crate::util::{claim, new_task, submit, task, TempDir};

/// `count` stores (connections) on one file.
fn stores(dir: &TempDir, count: usize) -> Vec<Arc<SqliteStore>> {
    (0..count).map(|_| Arc::new(dir.open())).collect()
}

/// Runs `work(thread_idx, store)` on `threads` threads spread over `stores`, all released at once by a
/// barrier, and returns their results in thread order.
fn race<T: Send + 'static>(
    stores: &[Arc<SqliteStore>],
    threads: usize,
    work: impl Fn(usize, &SqliteStore) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(threads));
    let work = Arc::new(work);
    let handles: Vec<_> = (0..threads)
        .map(|thread_idx| {
            let store = Arc::clone(&stores[thread_idx % stores.len()]);
            let barrier = Arc::clone(&barrier);
            let work = Arc::clone(&work);
            std::thread::spawn(move || {
                barrier.wait();
                work(thread_idx, &store)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|handle| handle.join().expect("UNWRAP: thread"))
        .collect()
}

#[test]
fn of_fifty_concurrent_submits_of_one_id_exactly_one_creates_it() {
    let dir = TempDir::new("task-submit-race");
    let stores = stores(&dir, 5);
    const THREADS: usize = 50;
    for round in 0..5 {
        let id = format!("submit-race-{round}");
        let results = {
            let id = id.clone();
            race(&stores, THREADS, move |thread_idx, store| {
                let mut new = new_task(&id, "build", 1_000 + thread_idx as i64);
                new.params = json!({ "submitter": thread_idx });
                store.submit_task(&new).expect("UNWRAP: submit")
            })
        };
        let created: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, submitted)| matches!(submitted, Submitted::Created(_)))
            .map(|(thread_idx, _)| thread_idx)
            .collect();
        assert_eq!(created.len(), 1, "round {round}: created by {created:?}");
        assert!(
            results
                .iter()
                .all(|submitted| matches!(submitted, Submitted::Created(_) | Submitted::Existing(_))),
            "round {round}"
        );
        // Everyone sees the winner's task, exactly as stored.
        let stored = task(stores[0].as_ref(), &id);
        let winner = created[0];
        assert_eq!(stored.params, json!({ "submitter": winner }));
        assert_eq!(stored.submitted_at, 1_000 + winner as i64);
        assert_eq!((stored.status, stored.attempt), (TaskStatus::Queued, 0));
        for submitted in &results {
            assert_eq!(submitted.record(), &stored, "round {round}");
        }
        assert_eq!(stores[1].queued_tasks(100).expect("UNWRAP: queued").len(), round + 1);
    }
}

#[test]
fn of_eight_racing_claimers_exactly_one_gets_the_task() {
    let dir = TempDir::new("task-claim-race");
    let stores = stores(&dir, 2);
    for round in 0..25 {
        let id = format!("claim-race-{round}");
        submit(stores[0].as_ref(), &id, "build", round);
        let results = {
            let id = id.clone();
            race(&stores, 8, move |thread_idx, store| {
                store
                    .claim_task(&id, &format!("node-{thread_idx}"), 10_000, 100)
                    .expect("UNWRAP: claim")
            })
        };
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, claimed)| claimed.is_some())
            .map(|(thread_idx, _)| thread_idx)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = task(stores[1].as_ref(), &id);
        assert_eq!(stored.claimed_by, Some(format!("node-{}", winners[0])));
        assert_eq!(stored.attempt, 1);
        assert_eq!(results[winners[0]].as_ref(), Some(&stored));
    }
}

#[test]
fn racing_claim_next_pollers_share_the_queue_without_overlap() {
    let dir = TempDir::new("task-claim-next-race");
    let stores = stores(&dir, 3);
    const TASKS: usize = 200;
    for idx in 0..TASKS {
        let task_type = if idx % 2 == 0 { "even" } else { "odd" };
        submit(stores[0].as_ref(), &format!("q-{idx:03}"), task_type, idx as i64);
    }
    let results = race(&stores, 9, |thread_idx, store| {
        let node = format!("node-{thread_idx}");
        let types: Vec<String> = match thread_idx % 3 {
            0 => Vec::new(),
            1 => vec!["even".to_owned()],
            _ => vec!["odd".to_owned(), "even".to_owned()],
        };
        let mut claimed = Vec::new();
        while let Some(task) = store
            .claim_next_task(&types, &node, 10_000, 1_000)
            .expect("UNWRAP: claim next")
        {
            assert_eq!(task.claimed_by.as_deref(), Some(node.as_str()));
            claimed.push(task.id);
        }
        claimed
    });
    let mut all: Vec<String> = results.iter().flatten().cloned().collect();
    assert_eq!(all.len(), TASKS, "every task claimed once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), TASKS, "no task claimed twice");
    for claimed in &results {
        let mut sorted = claimed.clone();
        sorted.sort();
        assert_eq!(claimed, &sorted, "each poller sees the queue in FIFO order");
    }
    assert!(stores[0].queued_tasks(10).expect("UNWRAP: queued").is_empty());
}

#[test]
fn of_racing_finishers_only_the_owner_writes_and_only_once() {
    let dir = TempDir::new("task-finish-race");
    let stores = stores(&dir, 2);
    for round in 0..25 {
        let id = format!("finish-race-{round}");
        submit(stores[0].as_ref(), &id, "build", round);
        claim(stores[0].as_ref(), &id, "owner", 100);
        let results = {
            let id = id.clone();
            race(&stores, 8, move |thread_idx, store| {
                // Even threads speak for the owner (say, a handler's end racing a timeout), odd ones for
                // other nodes.
                let node = if thread_idx % 2 == 0 { "owner" } else { "intruder" };
                let status = if thread_idx % 4 < 2 {
                    TaskStatus::Completed
                } else {
                    TaskStatus::Failed
                };
                let end = TaskEnd {
                    status,
                    result: Some(json!({ "thread": thread_idx })),
                    error: None,
                    completed_at: 200 + thread_idx as i64,
                };
                store.finish_task(&id, node, &end).expect("UNWRAP: finish")
            })
        };
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, applied)| **applied)
            .map(|(thread_idx, _)| thread_idx)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let winner = winners[0];
        assert_eq!(winner % 2, 0, "round {round}: only the owner may finish");
        let stored = task(stores[1].as_ref(), &id);
        assert_eq!(stored.result, Some(json!({ "thread": winner })));
        assert_eq!(stored.completed_at, Some(200 + winner as i64));
        assert!(stored.status.is_terminal());
    }
}
