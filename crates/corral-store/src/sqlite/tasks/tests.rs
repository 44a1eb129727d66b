//! Unit tests of the task queries that need the store's private connection: damaged rows, and the query
//! plans of the queries that must stay cheap however many tasks there are.

use super::*;
use crate::sqlite::SqliteStore;
use crate::store::Store;

fn new_task(id: &str, task_type: &str, submitted_at: i64) -> NewTask {
    NewTask {
        id: id.to_owned(),
        task_type: task_type.to_owned(),
        params: serde_json::json!({ "id": id }),
        submitted_at,
    }
}

#[test]
fn damaged_rows_are_decode_errors() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    let damage = [
        ("status", "UPDATE task SET status = 'paused'"),
        ("params", "UPDATE task SET params = '{not json'"),
        ("result", "UPDATE task SET result = 'nope'"),
        ("progress", "UPDATE task SET progress = '['"),
        ("attempt", "UPDATE task SET attempt = -1"),
        ("submitted_at", "UPDATE task SET submitted_at = 'yesterday'"),
        ("status", "UPDATE task SET status = 'paused'"),
    ];
    for (column, statement) in damage {
        store.delete_task("t").expect("UNWRAP: delete");
        store.submit_task(&new_task("t", "x", 1)).expect("UNWRAP: submit");
        store.lock().execute(statement, []).expect("UNWRAP: damage the row");
        let err = store.get_task("t").expect_err("UNWRAP: undecodable");
        assert!(
            matches!(err, StoreError::Decode { table: "task", column: c, .. } if c == column),
            "{column}: {err:?}"
        );
        assert!(!err.is_unavailable());
        let err = store
            .list_tasks(&TaskFilter::default())
            .expect_err("UNWRAP: undecodable");
        assert!(matches!(err, StoreError::Decode { .. }), "{column}: {err:?}");
    }
    let err = store.count_tasks().expect_err("UNWRAP: unknown status");
    assert!(matches!(err, StoreError::Decode { .. }), "{err:?}");
}

#[test]
fn filter_values_never_reach_the_sql_text() {
    let hostile = "x'); DROP TABLE task; --";
    let filter = TaskFilter {
        statuses: vec![TaskStatus::Running, TaskStatus::Failed],
        task_type: Some(hostile.to_owned()),
        limit: Some(7),
    };
    let (sql_text, values) = list_query(&filter);
    assert!(!sql_text.contains("DROP"), "{sql_text}");
    assert_eq!(values, ["running", "failed", hostile]);
    assert!(sql_text.contains("?3") && !sql_text.contains("?4"), "{sql_text}");
    assert!(sql_text.contains(" LIMIT 7)"), "{sql_text}");
    let everything = TaskFilter::default();
    let (sql_text, values) = list_query(&everything);
    assert!(values.is_empty());
    assert!(!sql_text.contains("WHERE") && !sql_text.contains("LIMIT"), "{sql_text}");
}

/// The query plan of `sql_text`, one line per step.
fn plan(conn: &Connection, sql_text: &str) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql_text}"))
        .expect("UNWRAP: explain");
    let mut rows = stmt.raw_query();
    let mut lines = Vec::new();
    while let Some(row) = rows.next().expect("UNWRAP: plan row") {
        lines.push(row.get::<_, String>(3).expect("UNWRAP: detail"));
    }
    lines.join("\n")
}

/// Fails unless the plan of `sql_text` uses `index`, and neither scans the table in rowid order nor sorts.
/// (A `SCAN … USING INDEX` walks an index in the order the query wants and stops at its `LIMIT`.)
fn assert_indexed(conn: &Connection, sql_text: &str, index: &str) {
    let plan = plan(conn, sql_text);
    if std::env::var_os("CORRAL_PRINT_PLANS").is_some() {
        eprintln!("{sql_text}\n{plan}\n");
    }
    assert!(plan.contains(index), "expected {index}:\n{plan}\nfor {sql_text}");
    assert!(!plan.contains("TEMP B-TREE"), "sorts:\n{plan}\nfor {sql_text}");
    let full_scan = plan.lines().any(|line| line.trim() == "SCAN task");
    assert!(!full_scan, "scans the table:\n{plan}\nfor {sql_text}");
}

/// Fails unless the plan of `sql_text` looks rows up through an index (`SEARCH`), not by scanning the table;
/// it may sort what it found. For queries over a set of tasks that stays small (the running ones).
fn assert_searched(conn: &Connection, sql_text: &str, index: &str) {
    let plan = plan(conn, sql_text);
    if std::env::var_os("CORRAL_PRINT_PLANS").is_some() {
        eprintln!("{sql_text}\n{plan}\n");
    }
    assert!(
        plan.contains(&format!("SEARCH task USING INDEX {index}"))
            || plan.contains(&format!("SEARCH task USING COVERING INDEX {index}")),
        "expected a search of {index}:\n{plan}\nfor {sql_text}"
    );
}

fn check_plans(conn: &Connection) {
    assert_indexed(conn, &OLDEST_QUEUED, "task_queue");
    assert_indexed(conn, OLDEST_QUEUED_OF_TYPE, "task_claim");
    assert_indexed(conn, &expired_claim_query(0), "task_lease");
    assert_indexed(conn, &expired_claim_query(3), "task_lease");
    assert_indexed(conn, &claim_query("id = :id"), "(id=?)");
    assert_indexed(conn, &claim_query("seq = :seq"), "INTEGER PRIMARY KEY");
    // Recovery (at start) sorts the running tasks: schema v3 keeps only queued tasks in `task_queue`.
    assert_searched(conn, &recover_query(), "task_");
    assert_indexed(conn, &queued_query(), "task_queue");
    assert_indexed(conn, COUNT, "COVERING INDEX task_claim");
    assert_indexed(conn, DELETE_FINISHED, "task_completed");
    let limited = TaskFilter {
        limit: Some(50),
        ..TaskFilter::default()
    };
    let page = |filter: &TaskFilter| list_page(filter).expect("UNWRAP: limited");
    assert_indexed(conn, &page(&limited), "COVERING INDEX task_submitted");
    let by_status = TaskFilter {
        statuses: vec![TaskStatus::Running],
        limit: Some(50),
        ..TaskFilter::default()
    };
    // A status alone: the page is sorted from `task_claim`'s entries, without reading a row.
    let by_status_plan = plan(conn, &page(&by_status));
    assert!(by_status_plan.contains("COVERING INDEX task_claim"), "{by_status_plan}");
    assert!(
        !by_status_plan.lines().any(|line| line.trim() == "SCAN task"),
        "{by_status_plan}"
    );
    let by_status_and_type = TaskFilter {
        statuses: vec![TaskStatus::Queued],
        task_type: Some("x".to_owned()),
        limit: Some(50),
    };
    assert_indexed(conn, &page(&by_status_and_type), "COVERING INDEX task_claim");
    // The rows of a page: looked up by `seq`, then the page (at most its limit) sorted.
    let rows = plan(conn, &list_query(&by_status_and_type).0);
    assert!(rows.contains("INTEGER PRIMARY KEY (rowid=?)"), "{rows}");
}

#[test]
fn the_hot_queries_use_their_indexes() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    check_plans(&store.lock());

    // Again with statistics from a realistic table: mostly finished tasks, a short queue, a few running.
    for idx in 0..3_000_i64 {
        let task_type = ["build", "deploy", "backup"][(idx % 3) as usize];
        store
            .submit_task(&new_task(&format!("t-{idx}"), task_type, idx))
            .expect("UNWRAP: submit");
    }
    for idx in 0..2_900_i64 {
        let id = format!("t-{idx}");
        store
            .claim_task(&id, "n1", 10_000, 5_000)
            .expect("UNWRAP: claim")
            .expect("UNWRAP: claimable");
        if idx >= 10 {
            let end = TaskEnd {
                status: TaskStatus::Completed,
                result: None,
                error: None,
                completed_at: 6_000 + idx,
            };
            assert!(store.finish_task(&id, "n1", &end).expect("UNWRAP: finish"));
        }
    }
    let conn = store.lock();
    conn.execute_batch("ANALYZE").expect("UNWRAP: analyze");
    check_plans(&conn);
}
