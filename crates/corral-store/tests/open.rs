//! Opening: creation, pragmas, migrations, refusal of what the store cannot use.

use std::time::Duration;

use corral_store::{SqliteStore, Store, StoreError, StoreOptions};

use crate::util::{raw, record, TempDir};

#[test]
fn open_creates_parent_directories_and_a_migrated_wal_database() {
    let dir = TempDir::new("create");
    let path = dir.path().join("state/nested/corral.db");
    let store = SqliteStore::open(&path).expect("UNWRAP: open");
    assert_eq!(store.path(), Some(path.as_path()));
    assert!(path.is_file());

    let conn = raw(&path);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("UNWRAP: journal_mode");
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("UNWRAP: user_version");
    assert_eq!(version, SqliteStore::SCHEMA_VERSION);
    store.health_check().expect("UNWRAP: a fresh store is healthy");
}

#[test]
fn reopening_an_existing_file_keeps_its_data() {
    let dir = TempDir::new("reopen");
    let rec = record("keep-me", 1, &[("session", "s1")]);
    {
        let store = dir.open();
        store.insert_process(&rec).expect("UNWRAP: insert");
        store.set_meta("boot_id", "b-1").expect("UNWRAP: set meta");
    }
    let store = dir.open();
    assert_eq!(store.get_process("keep-me").expect("UNWRAP: get"), Some(rec));
    assert_eq!(
        store.get_meta("boot_id").expect("UNWRAP: get meta").as_deref(),
        Some("b-1")
    );
    let version: i64 = raw(&dir.db())
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("UNWRAP: user_version");
    assert_eq!(version, SqliteStore::SCHEMA_VERSION);
}

#[test]
fn a_schema_newer_than_the_code_is_refused_and_left_alone() {
    let dir = TempDir::new("too-new");
    let newer = SqliteStore::SCHEMA_VERSION + 1;
    {
        let conn = raw(&dir.db());
        conn.execute_batch("CREATE TABLE from_the_future (x INTEGER)")
            .expect("UNWRAP: create");
        conn.pragma_update(None, "user_version", newer)
            .expect("UNWRAP: set user_version");
    }
    for result in [SqliteStore::open(&dir.db()), SqliteStore::open_read_only(&dir.db())] {
        let err = result.expect_err("UNWRAP: too new");
        match &err {
            StoreError::TooNew { found, supported } => {
                assert_eq!(*found, newer);
                assert_eq!(*supported, SqliteStore::SCHEMA_VERSION);
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("newer") && message.contains("upgrade corral"),
            "{message}"
        );
        assert!(!err.is_unavailable());
    }
    let conn = raw(&dir.db());
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("UNWRAP: version");
    assert_eq!(version, newer);
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .expect("UNWRAP: count tables");
    assert_eq!(tables, 1, "no migration ran");
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_corrupt_error() {
    let dir = TempDir::new("not-a-db");
    let garbage = "this is not an SQLite database\n".repeat(200);
    std::fs::write(dir.db(), &garbage).expect("UNWRAP: write garbage");

    let err = SqliteStore::open(&dir.db()).expect_err("UNWRAP: not a database");
    assert!(matches!(err, StoreError::Corrupt { op: "open", .. }), "{err:?}");
    assert!(err.is_unavailable());
    assert!(err.to_string().contains("corrupt or not a database"), "{err}");
    let err = SqliteStore::open_read_only(&dir.db()).expect_err("UNWRAP: not a database");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(dir.db()).expect("UNWRAP: read back"),
        garbage,
        "file untouched"
    );
}

#[test]
fn a_read_only_store_reads_and_refuses_writes_as_unavailable() {
    let dir = TempDir::new("read-only");
    let rec = record("old", 1, &[]);
    dir.open().insert_process(&rec).expect("UNWRAP: insert");

    let store = SqliteStore::open_read_only(&dir.db()).expect("UNWRAP: open read-only");
    assert_eq!(store.get_process("old").expect("UNWRAP: read"), Some(rec));
    let err = store
        .insert_process(&record("new", 2, &[]))
        .expect_err("UNWRAP: read-only");
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
    let err = store.health_check().expect_err("UNWRAP: read-only");
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    let err = store.set_meta("k", "v").expect_err("UNWRAP: read-only");
    assert!(err.is_unavailable(), "{err:?}");
}

#[test]
fn read_only_open_of_an_unmigrated_file_is_too_old() {
    let dir = TempDir::new("too-old");
    raw(&dir.db())
        .execute_batch("CREATE TABLE unrelated (x INTEGER)")
        .expect("UNWRAP: create");
    let err = SqliteStore::open_read_only(&dir.db()).expect_err("UNWRAP: too old");
    assert!(
        matches!(err, StoreError::TooOld { found: 0, supported } if supported == SqliteStore::SCHEMA_VERSION),
        "{err:?}"
    );
}

#[test]
fn read_only_open_of_a_missing_file_is_an_io_error() {
    let dir = TempDir::new("missing");
    let err = SqliteStore::open_read_only(&dir.db()).expect_err("UNWRAP: missing");
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(!dir.db().exists(), "nothing created");
}

#[test]
fn a_lock_held_past_the_busy_timeout_is_busy() {
    let dir = TempDir::new("busy");
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(50),
        ..StoreOptions::default()
    };
    let store = SqliteStore::open_with(&dir.db(), &options).expect("UNWRAP: open");

    let mut other = raw(&dir.db());
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("UNWRAP: lock");
    let err = store
        .insert_process(&record("blocked", 1, &[]))
        .expect_err("UNWRAP: busy");
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    assert!(err.is_unavailable());
    let err = store.health_check().expect_err("UNWRAP: busy");
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    // Readers are not blocked by a writer in WAL mode.
    assert_eq!(store.get_process("blocked").expect("UNWRAP: read while locked"), None);

    drop(tx);
    store
        .insert_process(&record("blocked", 1, &[]))
        .expect("UNWRAP: insert once the lock is gone");
}

#[test]
fn a_directory_that_cannot_be_created_is_reported_with_its_path() {
    let dir = TempDir::new("no-dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("UNWRAP: write");
    let err = SqliteStore::open(&file.join("sub/corral.db")).expect_err("UNWRAP: parent is a file");
    match &err {
        StoreError::CreateDir { path, .. } => assert_eq!(path, &file.join("sub")),
        other => panic!("expected CreateDir, got {other:?}"),
    }
    assert!(err.to_string().contains("a-file/sub"), "{err}");
}

#[test]
fn stores_are_usable_as_trait_objects_across_threads() {
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(SqliteStore::open_in_memory().expect("UNWRAP: open in memory"));
    let writer = std::sync::Arc::clone(&store);
    std::thread::spawn(move || writer.insert_process(&record("t", 1, &[])).expect("UNWRAP: insert"))
        .join()
        .expect("UNWRAP: thread");
    assert!(store.get_process("t").expect("UNWRAP: get").is_some());
}

/// Commits go to the WAL; a thread of the store copies them into the database file in the background, long
/// before SQLite's own checkpoint (inside a commit, at ~8,000 WAL pages) would.
#[test]
fn the_wal_is_checkpointed_in_the_background() {
    let dir = TempDir::new("checkpoint");
    let store = dir.open();
    let db_size = || std::fs::metadata(dir.db()).map(|m| m.len()).unwrap_or(0);
    let before = db_size();
    // More calls than the store makes between two background checkpoints (256), and fewer WAL pages than
    // SQLite's own checkpoint waits for (about 6 pages per submit).
    for i in 0..280 {
        crate::util::submit(&store, &format!("t{i}"), "build", i);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while db_size() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file did not grow from {before} bytes: nothing was checkpointed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The data is all there, whatever was checkpointed when.
    assert_eq!(
        store
            .list_tasks(&corral_store::TaskFilter::default())
            .expect("UNWRAP: list")
            .len(),
        280
    );
}
