//! What a starting node finds (its own running tasks, expired claims, the queue), and retention.

use corral_store::{SqliteStore, Store, TaskFilter, TaskStatus};

use crate::util::{claim, ids, submit, task, task_end, TempDir};

#[test]
fn recovery_finds_the_nodes_own_running_tasks_and_expired_claims() {
    let dir = TempDir::new("task-recover");
    let store = dir.open();
    // Submission order a..g; claims at 10 with these leases.
    submit(&store, "mine-valid", "x", 1);
    submit(&store, "theirs-expired", "x", 2);
    submit(&store, "theirs-valid", "x", 3);
    submit(&store, "mine-expired", "x", 4);
    submit(&store, "queued", "x", 5);
    submit(&store, "mine-done", "x", 6);
    submit(&store, "theirs-at-limit", "x", 7);
    let claims = [
        ("mine-valid", "me", 5_000),
        ("theirs-expired", "them", 100),
        ("theirs-valid", "them", 5_000),
        ("mine-expired", "me", 100),
        ("mine-done", "me", 5_000),
        ("theirs-at-limit", "them", 1_000),
    ];
    for (id, node, lease) in claims {
        store
            .claim_task(id, node, lease, 10)
            .expect("UNWRAP: claim")
            .expect("UNWRAP: claimable");
    }
    assert!(store
        .finish_task("mine-done", "me", &task_end(TaskStatus::Completed, 20))
        .expect("UNWRAP: finish"));
    drop(store);

    // The node restarts at 1,000.
    let store = dir.open();
    let found = store.tasks_to_recover("me", 1_000).expect("UNWRAP: recover");
    assert_eq!(ids(&found), ["mine-valid", "theirs-expired", "mine-expired"]);
    assert!(found.iter().all(|task| task.status == TaskStatus::Running));
    let theirs = store.tasks_to_recover("them", 1_000).expect("UNWRAP: recover");
    assert_eq!(
        ids(&theirs),
        ["theirs-expired", "theirs-valid", "mine-expired", "theirs-at-limit"]
    );

    // The recipe: requeue our own, take over expired ones of other nodes.
    for task in &found {
        if task.claimed_by.as_deref() == Some("me") {
            assert!(store.requeue_task(&task.id, "me", 1_000).expect("UNWRAP: requeue"));
        } else {
            let taken = store
                .claim_task(&task.id, "me", 2_000, 1_000)
                .expect("UNWRAP: claim")
                .expect("UNWRAP: expired, so claimable");
            assert_eq!(taken.attempt, 2);
        }
    }
    assert_eq!(
        ids(&store.queued_tasks(10).expect("UNWRAP: queued")),
        ["mine-valid", "mine-expired", "queued"]
    );
    assert_eq!(
        ids(&store.tasks_to_recover("me", 1_000).expect("UNWRAP: recover")),
        ["theirs-expired"],
        "now ours, running under a valid lease"
    );
}

#[test]
fn queued_tasks_are_oldest_first_up_to_the_limit() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "c", "x", 3);
    submit(&store, "a", "y", 1);
    submit(&store, "b1", "x", 2);
    submit(&store, "b2", "z", 2);
    submit(&store, "running", "x", 0);
    claim(&store, "running", "n1", 10);
    assert_eq!(
        ids(&store.queued_tasks(100).expect("UNWRAP: queued")),
        ["a", "b1", "b2", "c"]
    );
    assert_eq!(ids(&store.queued_tasks(2).expect("UNWRAP: queued")), ["a", "b1"]);
    assert!(store.queued_tasks(0).expect("UNWRAP: queued").is_empty());
    assert_eq!(store.queued_tasks(usize::MAX).expect("UNWRAP: queued").len(), 4);
}

/// Submits, claims and finishes `id` with `status` at `completed_at`.
fn finished(store: &dyn Store, id: &str, submitted_at: i64, status: TaskStatus, completed_at: i64) {
    submit(store, id, "x", submitted_at);
    if status == TaskStatus::Cancelled {
        assert!(store.cancel_task(id, completed_at).expect("UNWRAP: cancel"));
    } else {
        claim(store, id, "n1", submitted_at);
        assert!(store
            .finish_task(id, "n1", &task_end(status, completed_at))
            .expect("UNWRAP: finish"));
    }
}

fn all_ids(store: &dyn Store) -> Vec<String> {
    let mut all: Vec<String> = store
        .list_tasks(&TaskFilter::default())
        .expect("UNWRAP: list")
        .into_iter()
        .map(|task| task.id)
        .collect();
    all.sort();
    all
}

#[test]
fn retention_deletes_terminal_tasks_older_than_the_cutoff_or_beyond_the_newest_n() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    // Terminal tasks, by completion: t100 < t200 < t300a = t300b (tie: submission order) < t400.
    finished(&store, "t300a", 1, TaskStatus::Completed, 300);
    finished(&store, "t100", 2, TaskStatus::Failed, 100);
    finished(&store, "t400", 3, TaskStatus::Cancelled, 400);
    finished(&store, "t200", 4, TaskStatus::Completed, 200);
    finished(&store, "t300b", 5, TaskStatus::Failed, 300);
    // Live tasks, however old, are never deleted.
    submit(&store, "old-queued", "x", -10);
    submit(&store, "old-running", "x", -5);
    claim(&store, "old-running", "n1", 0);
    assert_eq!(task(&store, "t300b").completed_at, Some(300));

    // Nothing is older than 100, and up to 10 may stay.
    assert_eq!(store.delete_finished_tasks(100, 10).expect("UNWRAP: retention"), 0);
    // Age only: completed before 200.
    assert_eq!(
        store.delete_finished_tasks(200, usize::MAX).expect("UNWRAP: retention"),
        1
    );
    assert_eq!(store.get_task("t100").expect("UNWRAP: get"), None);
    // Count only: keep the newest 3 of t200, t300a, t300b, t400 → t200 goes.
    assert_eq!(store.delete_finished_tasks(i64::MIN, 3).expect("UNWRAP: retention"), 1);
    assert_eq!(all_ids(&store), ["old-queued", "old-running", "t300a", "t300b", "t400"]);
    // Count with a tie at the boundary: t300a and t300b completed together; t300b was submitted later, so
    // it is the newer one and stays.
    assert_eq!(store.delete_finished_tasks(i64::MIN, 2).expect("UNWRAP: retention"), 1);
    assert_eq!(all_ids(&store), ["old-queued", "old-running", "t300b", "t400"]);
    // Either rule deletes: 2 may stay, but t300b is older than the cutoff.
    assert_eq!(store.delete_finished_tasks(301, 2).expect("UNWRAP: retention"), 1);
    assert_eq!(all_ids(&store), ["old-queued", "old-running", "t400"]);
    // keep_newest 0: every terminal task goes.
    assert_eq!(store.delete_finished_tasks(i64::MIN, 0).expect("UNWRAP: retention"), 1);
    assert_eq!(store.delete_finished_tasks(i64::MAX, 0).expect("UNWRAP: retention"), 0);
    assert_eq!(all_ids(&store), ["old-queued", "old-running"]);
}
