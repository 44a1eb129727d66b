//! Unit tests of the SQLite store that need its private connection. Behaviour through the public API is
//! tested in `tests/`.

use super::*;

fn record(id: &str) -> ProcessRecord {
    ProcessRecord::new(id, "adhoc", vec!["true".to_owned()], 1_000)
}

#[test]
fn a_store_that_turns_read_only_fails_writes_as_unavailable() {
    // What a remount read-only looks like to SQLite: SQLITE_READONLY on the next write.
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    store
        .insert_process(&record("before"))
        .expect("UNWRAP: insert while writable");
    store
        .lock()
        .pragma_update(None, "query_only", true)
        .expect("UNWRAP: query_only");

    let err = store.insert_process(&record("after")).expect_err("UNWRAP: read-only");
    assert!(
        matches!(
            err,
            StoreError::ReadOnly {
                op: "insert process",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_unavailable());
    let err = store.health_check().expect_err("UNWRAP: health fails");
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    // Reads still work.
    assert!(store.get_process("before").expect("UNWRAP: read").is_some());
}

#[test]
fn a_full_database_fails_writes_as_unavailable() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    {
        let conn = store.lock();
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |row| row.get(0))
            .expect("UNWRAP: page_count");
        conn.pragma_update(None, "max_page_count", pages)
            .expect("UNWRAP: max_page_count");
    }
    let mut big = record("big");
    big.command = vec!["x".repeat(64 * 1024)];
    let err = store.insert_process(&big).expect_err("UNWRAP: full");
    assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
    assert!(err.is_unavailable());
    assert_eq!(
        store.get_process("big").expect("UNWRAP: read"),
        None,
        "nothing half-written"
    );
}

#[test]
fn a_row_with_an_unknown_state_is_a_decode_error() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    store.insert_process(&record("odd")).expect("UNWRAP: insert");
    store
        .lock()
        .execute("UPDATE process SET state = 'hibernating'", [])
        .expect("UNWRAP: damage the row");
    let err = store.get_process("odd").expect_err("UNWRAP: undecodable");
    assert!(matches!(err, StoreError::Decode { column: "state", .. }), "{err:?}");
    assert!(!err.is_unavailable());
    let err = store.count_processes_by_state().expect_err("UNWRAP: undecodable");
    assert!(matches!(err, StoreError::Decode { column: "state", .. }), "{err:?}");
}

#[test]
fn filter_values_never_reach_the_sql_text() {
    let hostile = "x'); DROP TABLE process; --";
    let mut filter = ProcessFilter {
        states: vec![ProcessState::Running, ProcessState::Pending],
        source: Some(hostile.to_owned()),
        limit: Some(10),
        ..ProcessFilter::default()
    };
    filter.labels.insert(hostile.to_owned(), hostile.to_owned());
    filter.labels.insert("b".to_owned(), "%".to_owned());
    let (sql_text, values) = list_query(&filter, Drive::Label(1));
    assert!(!sql_text.contains("DROP"), "{sql_text}");
    assert!(!sql_text.contains('%'), "{sql_text}");
    // Labels come in key order.
    assert_eq!(values, ["b", "%", hostile, hostile, "running", "pending", hostile]);
    assert!(sql_text.contains("?7"), "every value has a placeholder: {sql_text}");
    assert!(!sql_text.contains("?8"), "{sql_text}");
    assert!(sql_text.ends_with(" LIMIT 10"), "{sql_text}");
}

#[test]
fn a_poisoned_lock_is_taken_over() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    std::thread::scope(|scope| {
        let _ = scope
            .spawn(|| {
                let mut conn = store.lock();
                let tx = conn.transaction().expect("UNWRAP: begin");
                tx.execute("INSERT INTO meta (key, value) VALUES ('k', 'half')", [])
                    .expect("UNWRAP: write");
                panic!("poison the store's mutex mid-transaction");
            })
            .join();
    });
    assert!(store.conn.is_poisoned());
    assert_eq!(
        store.get_meta("k").expect("UNWRAP: read after poison"),
        None,
        "the transaction rolled back"
    );
    store.set_meta("k", "v").expect("UNWRAP: write after poison");
    assert_eq!(store.get_meta("k").expect("UNWRAP: read"), Some("v".to_owned()));
}

#[test]
fn options_become_pragmas() {
    let dir = std::env::temp_dir().join(format!("corral-store-unit-pragmas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pragma = |store: &SqliteStore, name: &str| -> i64 {
        store
            .lock()
            .pragma_query_value(None, name, |row| row.get(0))
            .expect("UNWRAP: read pragma")
    };
    let store = SqliteStore::open(&dir.join("a.db")).expect("UNWRAP: open");
    assert_eq!(pragma(&store, "synchronous"), 1, "NORMAL");
    assert_eq!(pragma(&store, "foreign_keys"), 1);
    assert_eq!(pragma(&store, "busy_timeout"), 5_000);
    let options = StoreOptions {
        synchronous_full: true,
        busy_timeout: Duration::from_millis(250),
    };
    let store = SqliteStore::open_with(&dir.join("b.db"), &options).expect("UNWRAP: open");
    assert_eq!(pragma(&store, "synchronous"), 2, "FULL");
    assert_eq!(pragma(&store, "busy_timeout"), 250);
    let mode: String = store
        .lock()
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("UNWRAP: mode");
    assert_eq!(mode, "wal");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
