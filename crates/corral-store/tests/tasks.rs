//! A task's lifecycle: submit (idempotent), claim with a lease, renew, progress, finish once, requeue,
//! cancel, delete; and its JSON values.

use std::collections::BTreeMap;

use corral_store::{NewTask, SqliteStore, Store, StoreError, Submitted, TaskEnd, TaskFilter, TaskStatus};
use serde_json::json;

use crate::util::{claim, ids, new_task, submit, task, task_end, TempDir};

/// The field an `InvalidInput` error blames, if it is one.
fn invalid_field(err: &StoreError) -> Option<&'static str> {
    match err {
        StoreError::InvalidInput { field, .. } => Some(field),
        _ => None,
    }
}

#[test]
fn submit_creates_then_finds_the_existing_task() {
    let dir = TempDir::new("task-submit");
    let store = dir.open();
    let created = submit(&store, "t1", "build", 1_000);
    assert_eq!(created.id, "t1");
    assert_eq!(created.task_type, "build");
    assert_eq!(created.params, json!({ "name": "t1" }));
    assert_eq!(created.status, TaskStatus::Queued);
    assert_eq!(created.attempt, 0);
    assert_eq!(
        (&created.result, &created.error, &created.progress),
        (&None, &None, &None)
    );
    assert_eq!((&created.claimed_by, created.lease_expires_at), (&None, None));
    assert_eq!(
        (
            created.submitted_at,
            created.started_at,
            created.completed_at,
            created.updated_at
        ),
        (1_000, None, None, 1_000)
    );
    assert_eq!(task(&store, "t1"), created);

    // Same id, other type and params: the stored task is returned unchanged, whatever its status.
    let again = NewTask {
        id: "t1".to_owned(),
        task_type: "deploy".to_owned(),
        params: json!({ "other": true }),
        submitted_at: 2_000,
    };
    assert_eq!(
        store.submit_task(&again).expect("UNWRAP: submit"),
        Submitted::Existing(created.clone())
    );
    let running = claim(&store, "t1", "n1", 3_000);
    assert_eq!(
        store.submit_task(&again).expect("UNWRAP: submit"),
        Submitted::Existing(running)
    );
    assert!(store
        .finish_task("t1", "n1", &task_end(TaskStatus::Completed, 4_000))
        .expect("UNWRAP: finish"));
    let completed = task(&store, "t1");
    assert_eq!(
        store.submit_task(&again).expect("UNWRAP: submit"),
        Submitted::Existing(completed)
    );

    submit(&store, "t2", "build", 5_000);
    assert!(store.cancel_task("t2", 6_000).expect("UNWRAP: cancel"));
    let cancelled = task(&store, "t2");
    assert_eq!(
        store
            .submit_task(&new_task("t2", "build", 7_000))
            .expect("UNWRAP: submit"),
        Submitted::Existing(cancelled)
    );

    // Durable: a new store on the file sees it.
    drop(store);
    assert_eq!(task(&dir.open(), "t1").status, TaskStatus::Completed);
}

#[test]
fn submitting_a_failed_task_again_queues_it_with_its_original_params_and_attempts() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "t", "build", 1_000);
    claim(&store, "t", "n1", 2_000);
    assert!(store
        .set_task_progress("t", "n1", &json!({ "pct": 40 }), 2_500)
        .expect("UNWRAP: progress"));
    let failed = TaskEnd {
        status: TaskStatus::Failed,
        result: Some(json!({ "exit": 1 })),
        error: Some("exit status 1".to_owned()),
        completed_at: 3_000,
    };
    assert!(store.finish_task("t", "n1", &failed).expect("UNWRAP: finish"));

    let mut resubmit = new_task("t", "other-type", 4_000);
    resubmit.params = json!({ "new": "params" });
    let requeued = match store.submit_task(&resubmit).expect("UNWRAP: submit") {
        Submitted::Requeued(record) => record,
        other => panic!("expected Requeued, got {other:?}"),
    };
    assert_eq!(requeued.status, TaskStatus::Queued);
    assert_eq!(requeued.task_type, "build", "type as first submitted");
    assert_eq!(requeued.params, json!({ "name": "t" }), "params as first submitted");
    assert_eq!(requeued.attempt, 1, "attempt kept until the next claim");
    assert_eq!(
        (&requeued.result, &requeued.error, &requeued.progress),
        (&None, &None, &None)
    );
    assert_eq!((&requeued.claimed_by, requeued.lease_expires_at), (&None, None));
    assert_eq!((requeued.started_at, requeued.completed_at), (None, None));
    assert_eq!((requeued.submitted_at, requeued.updated_at), (1_000, 4_000));
    assert_eq!(task(&store, "t"), requeued);

    // Queued again, so a second submit finds it queued.
    assert!(matches!(
        store.submit_task(&resubmit).expect("UNWRAP: submit"),
        Submitted::Existing(_)
    ));
    let second = claim(&store, "t", "n2", 5_000);
    assert_eq!((second.attempt, second.claimed_by.as_deref()), (2, Some("n2")));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    let err = store
        .submit_task(&new_task("", "build", 1))
        .expect_err("UNWRAP: empty id");
    assert_eq!(invalid_field(&err), Some("id"), "{err:?}");
    assert!(!err.is_unavailable());
    let err = store
        .submit_task(&new_task("t", "", 1))
        .expect_err("UNWRAP: empty type");
    assert_eq!(invalid_field(&err), Some("task_type"), "{err:?}");
    assert!(store.count_tasks().expect("UNWRAP: count").is_empty());

    submit(&store, "t", "build", 1);
    let cases: Vec<(&str, StoreError)> = vec![
        (
            "node",
            store.claim_task("t", "", 10, 5).expect_err("UNWRAP: empty node"),
        ),
        (
            "lease_until",
            store
                .claim_task("t", "n1", 4, 5)
                .expect_err("UNWRAP: lease in the past"),
        ),
        (
            "lease_until",
            store
                .claim_next_task(&[], "n1", 4, 5)
                .expect_err("UNWRAP: lease in the past"),
        ),
        (
            "node",
            store.renew_task_lease("t", "", 10).expect_err("UNWRAP: empty node"),
        ),
        ("node", store.tasks_to_recover("", 10).expect_err("UNWRAP: empty node")),
    ];
    for (field, err) in cases {
        assert_eq!(invalid_field(&err), Some(field), "{err:?}");
    }
    assert_eq!(task(&store, "t").status, TaskStatus::Queued, "nothing claimed");

    claim(&store, "t", "n1", 5);
    let err = store
        .finish_task("t", "n1", &task_end(TaskStatus::Running, 6))
        .expect_err("UNWRAP: not terminal");
    assert_eq!(invalid_field(&err), Some("status"), "{err:?}");
    let err = store
        .finish_task("t", "n1", &task_end(TaskStatus::Queued, 6))
        .expect_err("UNWRAP: not terminal");
    assert_eq!(invalid_field(&err), Some("status"), "{err:?}");
    assert_eq!(task(&store, "t").status, TaskStatus::Running);
}

#[test]
fn a_claim_takes_a_queued_task_once() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "t", "build", 1_000);
    let claimed = store
        .claim_task("t", "n1", 2_500, 2_000)
        .expect("UNWRAP: claim")
        .expect("UNWRAP: claimable");
    assert_eq!(claimed.status, TaskStatus::Running);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.claimed_by.as_deref(), Some("n1"));
    assert_eq!(claimed.lease_expires_at, Some(2_500));
    assert_eq!(
        (claimed.started_at, claimed.updated_at, claimed.completed_at),
        (Some(2_000), 2_000, None)
    );
    assert_eq!(claimed.submitted_at, 1_000);
    assert_eq!(task(&store, "t"), claimed);

    // Held (lease valid until 2,500 inclusive): nobody else gets it, not even the same node.
    for (node, now) in [("n2", 2_100), ("n1", 2_100), ("n2", 2_500)] {
        assert_eq!(
            store.claim_task("t", node, now + 100, now).expect("UNWRAP: claim"),
            None,
            "{node} at {now}"
        );
    }
    assert_eq!(store.claim_task("absent", "n1", 10, 1).expect("UNWRAP: claim"), None);
    assert!(store
        .finish_task("t", "n1", &task_end(TaskStatus::Completed, 2_200))
        .expect("UNWRAP: finish"));
    assert_eq!(
        store.claim_task("t", "n2", 10_000, 9_000).expect("UNWRAP: claim"),
        None,
        "terminal"
    );
    assert_eq!(task(&store, "t").attempt, 1);
}

#[test]
fn an_expired_lease_lets_another_node_take_the_task_over() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "t", "build", 1);
    store
        .claim_task("t", "n1", 100, 10)
        .expect("UNWRAP: claim")
        .expect("UNWRAP: claimable");
    assert!(store
        .set_task_progress("t", "n1", &json!("half"), 50)
        .expect("UNWRAP: progress"));
    // Expired but not taken over yet: its node may still renew it.
    assert!(store.renew_task_lease("t", "n1", 150).expect("UNWRAP: renew"));
    assert_eq!(
        store.claim_task("t", "n2", 300, 150).expect("UNWRAP: claim"),
        None,
        "renewed until 150"
    );

    let taken = store
        .claim_task("t", "n2", 300, 151)
        .expect("UNWRAP: claim")
        .expect("UNWRAP: expired, so claimable");
    assert_eq!(
        (taken.attempt, taken.claimed_by.as_deref(), taken.lease_expires_at),
        (2, Some("n2"), Some(300))
    );
    assert_eq!(
        (taken.started_at, taken.progress.as_ref()),
        (Some(151), None),
        "a new attempt starts without progress"
    );

    // The old node lost it: every write it tries is refused and changes nothing.
    assert!(!store.renew_task_lease("t", "n1", 1_000).expect("UNWRAP: renew"));
    assert!(!store
        .set_task_progress("t", "n1", &json!("stale"), 160)
        .expect("UNWRAP: progress"));
    assert!(!store
        .finish_task("t", "n1", &task_end(TaskStatus::Failed, 170))
        .expect("UNWRAP: finish"));
    assert!(!store.requeue_task("t", "n1", 170).expect("UNWRAP: requeue"));
    assert_eq!(task(&store, "t"), taken);

    assert!(store
        .finish_task("t", "n2", &task_end(TaskStatus::Completed, 200))
        .expect("UNWRAP: finish"));
    let done = task(&store, "t");
    assert_eq!(
        (done.status, done.claimed_by.as_deref(), done.lease_expires_at),
        (TaskStatus::Completed, Some("n2"), None)
    );
}

#[test]
fn only_the_owner_renews_the_lease_while_it_runs() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "t", "build", 1);
    assert!(
        !store.renew_task_lease("t", "n1", 500).expect("UNWRAP: renew"),
        "queued: nobody holds it"
    );
    let claimed = claim(&store, "t", "n1", 10);
    assert!(!store.renew_task_lease("t", "n2", 5_000).expect("UNWRAP: renew"));
    assert_eq!(task(&store, "t"), claimed);
    assert!(store.renew_task_lease("t", "n1", 5_000).expect("UNWRAP: renew"));
    let renewed = task(&store, "t");
    assert_eq!(renewed.lease_expires_at, Some(5_000));
    assert_eq!(renewed.updated_at, claimed.updated_at, "a renewal is not a change");
    assert!(!store.renew_task_lease("absent", "n1", 5_000).expect("UNWRAP: renew"));
    assert!(store
        .finish_task("t", "n1", &task_end(TaskStatus::Completed, 20))
        .expect("UNWRAP: finish"));
    assert!(!store.renew_task_lease("t", "n1", 6_000).expect("UNWRAP: renew"));
    assert_eq!(task(&store, "t").lease_expires_at, None);
}

#[test]
fn progress_is_written_by_the_owner_and_kept_when_it_ends() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "t", "build", 1);
    assert!(!store
        .set_task_progress("t", "n1", &json!(1), 5)
        .expect("UNWRAP: progress"));
    claim(&store, "t", "n1", 10);
    assert!(store
        .set_task_progress("t", "n1", &json!({ "step": 1 }), 11)
        .expect("UNWRAP: progress"));
    assert!(!store
        .set_task_progress("t", "n2", &json!({ "step": 9 }), 12)
        .expect("UNWRAP: progress"));
    assert!(store
        .set_task_progress("t", "n1", &json!({ "step": 2 }), 13)
        .expect("UNWRAP: progress"));
    let running = task(&store, "t");
    assert_eq!((running.progress, running.updated_at), (Some(json!({ "step": 2 })), 13));
    assert!(store
        .finish_task("t", "n1", &task_end(TaskStatus::Completed, 20))
        .expect("UNWRAP: finish"));
    assert_eq!(task(&store, "t").progress, Some(json!({ "step": 2 })));
    assert!(!store
        .set_task_progress("t", "n1", &json!({ "step": 3 }), 21)
        .expect("UNWRAP: progress"));
}

#[test]
fn the_end_is_written_once_and_only_by_the_owner() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "t", "build", 1);
    assert!(
        !store
            .finish_task("t", "n1", &task_end(TaskStatus::Completed, 5))
            .expect("UNWRAP: finish"),
        "queued: not claimed"
    );
    claim(&store, "t", "n1", 10);
    assert!(!store
        .finish_task("t", "n2", &task_end(TaskStatus::Completed, 15))
        .expect("UNWRAP: finish"));
    assert_eq!(task(&store, "t").status, TaskStatus::Running);

    let end = TaskEnd {
        status: TaskStatus::Completed,
        result: Some(json!({ "artifacts": ["a", "b"] })),
        error: None,
        completed_at: 20,
    };
    assert!(store.finish_task("t", "n1", &end).expect("UNWRAP: finish"));
    let first = task(&store, "t");
    assert_eq!(first.status, TaskStatus::Completed);
    assert_eq!(first.result, end.result);
    assert_eq!((first.completed_at, first.updated_at), (Some(20), 20));
    assert_eq!(
        (first.claimed_by.as_deref(), first.lease_expires_at),
        (Some("n1"), None)
    );
    assert_eq!(first.started_at, Some(10));

    let second = TaskEnd {
        status: TaskStatus::Failed,
        result: None,
        error: Some("late".to_owned()),
        completed_at: 30,
    };
    assert!(!store.finish_task("t", "n1", &second).expect("UNWRAP: finish"));
    assert!(!store.cancel_task("t", 40).expect("UNWRAP: cancel"));
    assert_eq!(task(&store, "t"), first);
    assert!(!store.finish_task("absent", "n1", &second).expect("UNWRAP: finish"));

    // A node may end its task as cancelled (its handler saw a cancellation).
    submit(&store, "c", "build", 2);
    claim(&store, "c", "n1", 10);
    assert!(store
        .finish_task("c", "n1", &task_end(TaskStatus::Cancelled, 11))
        .expect("UNWRAP: finish"));
    assert_eq!(task(&store, "c").status, TaskStatus::Cancelled);
}

#[test]
fn requeue_gives_a_running_task_back_to_the_queue() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "t", "build", 1);
    assert!(
        !store.requeue_task("t", "n1", 5).expect("UNWRAP: requeue"),
        "queued already"
    );
    claim(&store, "t", "n1", 10);
    assert!(store
        .set_task_progress("t", "n1", &json!(50), 11)
        .expect("UNWRAP: progress"));
    assert!(!store.requeue_task("t", "n2", 12).expect("UNWRAP: requeue"));
    assert!(store.requeue_task("t", "n1", 13).expect("UNWRAP: requeue"));
    let queued = task(&store, "t");
    assert_eq!(queued.status, TaskStatus::Queued);
    assert_eq!(queued.attempt, 1, "the interrupted attempt still counts");
    assert_eq!((&queued.claimed_by, queued.lease_expires_at), (&None, None));
    assert_eq!(
        (queued.started_at, queued.completed_at, &queued.progress),
        (None, None, &None)
    );
    assert_eq!(queued.updated_at, 13);
    assert!(!store.requeue_task("t", "n1", 14).expect("UNWRAP: requeue"));
    assert_eq!(store.queued_tasks(10).expect("UNWRAP: queued"), [queued]);

    let again = claim(&store, "t", "n1", 20);
    assert_eq!(again.attempt, 2);
}

#[test]
fn cancel_ends_a_queued_or_running_task_whoever_holds_it() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "q", "build", 1);
    submit(&store, "r", "build", 2);
    claim(&store, "r", "n1", 10);

    assert!(store.cancel_task("q", 20).expect("UNWRAP: cancel"));
    assert!(store.cancel_task("r", 21).expect("UNWRAP: cancel"));
    let q = task(&store, "q");
    assert_eq!(
        (q.status, q.completed_at, q.updated_at, q.claimed_by.as_deref()),
        (TaskStatus::Cancelled, Some(20), 20, None)
    );
    let r = task(&store, "r");
    assert_eq!(
        (r.status, r.completed_at, r.lease_expires_at, r.claimed_by.as_deref()),
        (TaskStatus::Cancelled, Some(21), None, Some("n1"))
    );
    // Its node finds out at its next write.
    assert!(!store.renew_task_lease("r", "n1", 5_000).expect("UNWRAP: renew"));
    assert!(!store
        .finish_task("r", "n1", &task_end(TaskStatus::Completed, 30))
        .expect("UNWRAP: finish"));
    assert_eq!(task(&store, "r"), r);

    assert!(!store.cancel_task("q", 40).expect("UNWRAP: cancel"), "terminal");
    assert!(!store.cancel_task("absent", 40).expect("UNWRAP: cancel"));
    assert_eq!(store.claim_task("q", "n1", 100, 50).expect("UNWRAP: claim"), None);
}

#[test]
fn a_deleted_task_is_gone_and_its_id_may_be_reused() {
    let dir = TempDir::new("task-delete");
    let store = dir.open();
    submit(&store, "t", "build", 1);
    claim(&store, "t", "n1", 10);
    assert!(store.delete_task("t").expect("UNWRAP: delete"));
    assert_eq!(store.get_task("t").expect("UNWRAP: get"), None);
    // The node running it finds out; nothing brings it back.
    assert!(!store.renew_task_lease("t", "n1", 100).expect("UNWRAP: renew"));
    assert!(!store
        .finish_task("t", "n1", &task_end(TaskStatus::Completed, 20))
        .expect("UNWRAP: finish"));
    assert!(!store.requeue_task("t", "n1", 20).expect("UNWRAP: requeue"));
    assert_eq!(store.claim_task("t", "n2", 100, 20).expect("UNWRAP: claim"), None);
    assert_eq!(store.get_task("t").expect("UNWRAP: get"), None);
    assert!(!store.delete_task("t").expect("UNWRAP: delete again"));
    drop(store);
    let store = dir.open();
    assert_eq!(store.get_task("t").expect("UNWRAP: get"), None, "durable");

    // Submitting the id again deliberately creates a fresh task.
    let mut fresh = new_task("t", "deploy", 50);
    fresh.params = json!(["new"]);
    let created = match store.submit_task(&fresh).expect("UNWRAP: submit") {
        Submitted::Created(record) => record,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(
        (
            created.attempt,
            created.task_type.as_str(),
            &created.params,
            created.submitted_at
        ),
        (0, "deploy", &json!(["new"]), 50)
    );
}

#[test]
fn claim_next_takes_the_oldest_queued_task_of_the_given_types() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    let any: Vec<String> = Vec::new();
    let types = |names: &[&str]| -> Vec<String> { names.iter().map(|name| (*name).to_owned()).collect() };
    assert_eq!(
        store.claim_next_task(&any, "n1", 100, 1).expect("UNWRAP: claim next"),
        None,
        "empty queue"
    );
    // Submission order: late-x (t=10), y1 (t=5), x1 (t=5), x2 (t=5), z (t=7). Equal times keep submission order.
    submit(&store, "late-x", "x", 10);
    submit(&store, "y1", "y", 5);
    submit(&store, "x1", "x", 5);
    submit(&store, "x2", "x", 5);
    submit(&store, "z", "z", 7);

    let next = |task_types: &[String]| -> Option<String> {
        store
            .claim_next_task(task_types, "n1", 1_000, 100)
            .expect("UNWRAP: claim next")
            .map(|task| {
                assert_eq!(
                    (task.status, task.claimed_by.as_deref(), task.attempt),
                    (TaskStatus::Running, Some("n1"), 1)
                );
                task.id
            })
    };
    assert_eq!(next(&types(&["x"])).as_deref(), Some("x1"));
    assert_eq!(next(&types(&["nope"])), None);
    assert_eq!(
        next(&types(&["z", "x", "z"])).as_deref(),
        Some("x2"),
        "duplicates are harmless"
    );
    assert_eq!(next(&any).as_deref(), Some("y1"));
    assert_eq!(next(&types(&["x", "z"])).as_deref(), Some("z"));
    assert_eq!(next(&any).as_deref(), Some("late-x"));
    assert_eq!(next(&any), None);
    assert!(store.queued_tasks(10).expect("UNWRAP: queued").is_empty());
}

#[test]
fn claim_next_takes_over_expired_claims_first() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "queued-old", "x", 1);
    submit(&store, "dead-x", "x", 2);
    submit(&store, "dead-y", "y", 3);
    submit(&store, "alive", "x", 4);
    claim(&store, "dead-x", "dead-node", 10); // lease until 1,010
    store
        .claim_task("dead-y", "dead-node", 900, 10)
        .expect("UNWRAP: claim")
        .expect("UNWRAP: claimable");
    store
        .claim_task("alive", "live-node", 5_000, 10)
        .expect("UNWRAP: claim")
        .expect("UNWRAP: claimable");

    let now = 2_000;
    let x = vec!["x".to_owned()];
    let taken = store
        .claim_next_task(&x, "n2", now + 500, now)
        .expect("UNWRAP: claim next")
        .expect("UNWRAP: something to claim");
    assert_eq!(
        (taken.id.as_str(), taken.attempt, taken.claimed_by.as_deref()),
        ("dead-x", 2, Some("n2"))
    );
    let taken = store
        .claim_next_task(&[], "n2", now + 500, now)
        .expect("UNWRAP: claim next")
        .expect("UNWRAP: something to claim");
    assert_eq!(taken.id, "dead-y", "expired claims before the queue");
    let taken = store
        .claim_next_task(&[], "n2", now + 500, now)
        .expect("UNWRAP: claim next")
        .expect("UNWRAP: something to claim");
    assert_eq!(taken.id, "queued-old");
    assert_eq!(
        store
            .claim_next_task(&[], "n2", now + 500, now)
            .expect("UNWRAP: claim next"),
        None,
        "a valid lease is never taken"
    );
    assert_eq!(task(&store, "alive").claimed_by.as_deref(), Some("live-node"));
}

#[test]
fn listings_are_newest_first_and_counts_are_by_type_and_status() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    submit(&store, "a", "build", 1);
    submit(&store, "b", "build", 3);
    submit(&store, "c", "deploy", 2);
    submit(&store, "d", "deploy", 3);
    claim(&store, "a", "n1", 10);
    claim(&store, "c", "n1", 10);
    assert!(store
        .finish_task("c", "n1", &task_end(TaskStatus::Failed, 11))
        .expect("UNWRAP: finish"));

    let list = |filter: TaskFilter| store.list_tasks(&filter).expect("UNWRAP: list");
    assert_eq!(ids(&list(TaskFilter::default())), ["d", "b", "c", "a"]);
    assert_eq!(
        ids(&list(TaskFilter {
            limit: Some(2),
            ..TaskFilter::default()
        })),
        ["d", "b"]
    );
    assert_eq!(
        ids(&list(TaskFilter {
            limit: Some(0),
            ..TaskFilter::default()
        })),
        Vec::<&str>::new()
    );
    assert_eq!(
        ids(&list(TaskFilter {
            statuses: vec![TaskStatus::Running, TaskStatus::Failed],
            ..TaskFilter::default()
        })),
        ["c", "a"]
    );
    assert_eq!(
        ids(&list(TaskFilter {
            task_type: Some("deploy".to_owned()),
            ..TaskFilter::default()
        })),
        ["d", "c"]
    );
    assert_eq!(
        ids(&list(TaskFilter {
            statuses: vec![TaskStatus::Queued],
            task_type: Some("build".to_owned()),
            limit: Some(5),
        })),
        ["b"]
    );
    assert!(list(TaskFilter {
        task_type: Some("'; DROP TABLE task; --".to_owned()),
        ..TaskFilter::default()
    })
    .is_empty());

    let counts = store.count_tasks().expect("UNWRAP: count");
    let expected: BTreeMap<(String, TaskStatus), u64> = BTreeMap::from([
        (("build".to_owned(), TaskStatus::Queued), 1),
        (("build".to_owned(), TaskStatus::Running), 1),
        (("deploy".to_owned(), TaskStatus::Queued), 1),
        (("deploy".to_owned(), TaskStatus::Failed), 1),
    ]);
    assert_eq!(counts, expected);
}

#[test]
fn json_values_round_trip_exactly() {
    let dir = TempDir::new("task-json");
    let values = [
        json!(null),
        json!({}),
        json!([]),
        json!(""),
        json!({
            "nested": { "deeper": { "list": [1, [2, [3, {"k": null}]]], "empty": {} } },
            "unicode": "ünïcödé — 日本語 — 🦀 — \u{0}\u{1f}",
            "escapes": "quote \" backslash \\ newline \n tab \t",
            "key with spaces and 'quotes'": true,
        }),
        json!({
            "i64_min": i64::MIN,
            "i64_max": i64::MAX,
            "u64_max": u64::MAX,
            "zero": 0,
            "neg": -1,
        }),
        json!([
            0.1,
            0.2,
            1.0 / 3.0,
            -2.5e-300,
            1.7976931348623157e308,
            5e-324,
            2.2250738585072014e-308,
            1e21,
            123456789.12345678,
            -0.0
        ]),
        // Floats that serde_json parses 1 ULP off unless its `float_roundtrip` feature is on.
        json!([
            1.0715660391465826e-75,
            -1.81996730402717e-179,
            -1.603964615428183e143,
            -9.643915712060552e-234
        ]),
        json!(9007199254740993_u64),
    ];
    {
        let store = dir.open();
        for (idx, value) in values.iter().enumerate() {
            let id = format!("json-{idx}");
            let new = NewTask {
                id: id.clone(),
                task_type: "json".to_owned(),
                params: value.clone(),
                submitted_at: idx as i64,
            };
            let created = store.submit_task(&new).expect("UNWRAP: submit").into_record();
            assert_eq!(&created.params, value, "returned by submit");
            claim(&store, &id, "n1", 10);
            assert!(store.set_task_progress(&id, "n1", value, 11).expect("UNWRAP: progress"));
            let end = TaskEnd {
                status: TaskStatus::Completed,
                result: Some(value.clone()),
                error: Some("ünïcödé error".to_owned()),
                completed_at: 12,
            };
            assert!(store.finish_task(&id, "n1", &end).expect("UNWRAP: finish"));
        }
    }
    let store = dir.open();
    for (idx, value) in values.iter().enumerate() {
        let stored = task(&store, &format!("json-{idx}"));
        assert_eq!(&stored.params, value, "params {idx}");
        assert_eq!(stored.progress.as_ref(), Some(value), "progress {idx}");
        assert_eq!(stored.result.as_ref(), Some(value), "result {idx}");
        assert_eq!(stored.error.as_deref(), Some("ünïcödé error"));
    }
    // A JSON null result is a value, distinct from no result.
    let null_result = task(&store, "json-0");
    assert_eq!(null_result.result, Some(serde_json::Value::Null));
    submit(&store, "no-result", "json", 100);
    claim(&store, "no-result", "n1", 101);
    assert!(store
        .finish_task("no-result", "n1", &task_end(TaskStatus::Completed, 102))
        .expect("UNWRAP: finish"));
    assert_eq!(task(&store, "no-result").result, None);
}

/// `submit_claimed_task` leaves exactly what `submit_task` then `claim_task` leave, in one transaction.
#[test]
fn submit_claimed_is_submit_then_claim_in_one_step() {
    let dir = TempDir::new("task-submit-claimed");
    let one_step = dir.open();
    let two_dir = TempDir::new("task-submit-claimed-two");
    let two_steps = two_dir.open();
    let both = |new: &NewTask| -> (Submitted, Submitted) {
        let one = one_step
            .submit_claimed_task(new, "n1", new.submitted_at + 1_000)
            .expect("UNWRAP: submit claimed");
        let two = match two_steps.submit_task(new).expect("UNWRAP: submit") {
            Submitted::Created(record) => Submitted::Created(claim(&two_steps, &record.id, "n1", new.submitted_at)),
            Submitted::Requeued(record) => Submitted::Requeued(claim(&two_steps, &record.id, "n1", new.submitted_at)),
            existing => existing,
        };
        (one, two)
    };

    // New: running, attempt 1, claimed with a lease, started when submitted.
    let (one, two) = both(&new_task("t1", "build", 1_000));
    assert_eq!(one, two);
    let Submitted::Created(created) = one else {
        panic!("expected Created, got {one:?}")
    };
    assert_eq!(created.status, TaskStatus::Running);
    assert_eq!(created.attempt, 1);
    assert_eq!(created.claimed_by.as_deref(), Some("n1"));
    assert_eq!(created.lease_expires_at, Some(2_000));
    assert_eq!((created.started_at, created.updated_at), (Some(1_000), 1_000));
    assert_eq!(task(&one_step, "t1"), created, "what it returns is what it stored");

    // Known and running (or finished): unchanged, not claimed again.
    let (one, two) = both(&new_task("t1", "build", 1_500));
    assert_eq!(one, two);
    assert_eq!(one, Submitted::Existing(created.clone()));

    // The claim is a real one: only n1 may finish it.
    let end = TaskEnd {
        error: Some("boom".to_owned()),
        ..task_end(TaskStatus::Failed, 1_800)
    };
    assert!(!one_step.finish_task("t1", "n2", &end).expect("UNWRAP: finish"));
    for store in [&one_step, &two_steps] {
        assert!(store.finish_task("t1", "n1", &end).expect("UNWRAP: finish"));
    }

    // Failed, submitted again: queued afresh and claimed, attempt 2, the old end cleared.
    let (one, two) = both(&new_task("t1", "build", 3_000));
    assert_eq!(one, two);
    let Submitted::Requeued(again) = one else {
        panic!("expected Requeued, got {one:?}")
    };
    assert_eq!(again.status, TaskStatus::Running);
    assert_eq!(again.attempt, 2);
    assert_eq!((again.error.as_deref(), again.completed_at), (None, None));
    assert_eq!((again.started_at, again.lease_expires_at), (Some(3_000), Some(4_000)));
    assert_eq!(task(&one_step, "t1"), again);

    // Bad claims are refused before anything is written.
    let err = one_step
        .submit_claimed_task(&new_task("t2", "build", 5_000), "", 6_000)
        .expect_err("UNWRAP: empty node refused");
    assert_eq!(invalid_field(&err), Some("node"));
    let err = one_step
        .submit_claimed_task(&new_task("t2", "build", 5_000), "n1", 4_000)
        .expect_err("UNWRAP: expired lease refused");
    assert_eq!(invalid_field(&err), Some("lease_until"));
    assert_eq!(one_step.get_task("t2").expect("UNWRAP: get"), None);
}
