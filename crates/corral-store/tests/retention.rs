//! Counting and deleting old records.

use corral_store::{ProcessFilter, ProcessState, SqliteStore, Store};

use crate::util::{end, raw, record, start, TempDir};

#[test]
fn counts_cover_every_state() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    let counts = store.count_processes_by_state().expect("UNWRAP: count");
    assert_eq!(counts.len(), ProcessState::ALL.len());
    assert!(counts.values().all(|count| *count == 0));

    for (idx, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        store
            .insert_process(&record(id, idx as i64, &[]))
            .expect("UNWRAP: insert");
    }
    store.mark_process_started("b", &start(1)).expect("UNWRAP: start");
    store.mark_process_started("c", &start(2)).expect("UNWRAP: start");
    store
        .finish_process("c", &end(ProcessState::Failed, Some(2), 10))
        .expect("UNWRAP: finish");
    store
        .finish_process("d", &end(ProcessState::Stale, None, 10))
        .expect("UNWRAP: finish");
    let counts = store.count_processes_by_state().expect("UNWRAP: count");
    let nonzero: Vec<_> = counts.into_iter().filter(|(_, count)| *count > 0).collect();
    assert_eq!(
        nonzero,
        [
            (ProcessState::Pending, 1),
            (ProcessState::Running, 1),
            (ProcessState::Failed, 1),
            (ProcessState::Stale, 1)
        ]
    );
}

#[test]
fn only_finished_records_older_than_the_cutoff_are_deleted_with_their_labels() {
    let dir = TempDir::new("retention");
    let store = dir.open();
    // Old and finished: deleted. Recently finished: kept. Old but live: kept, however old.
    store
        .insert_process(&record("old-done", 1, &[("s", "x")]))
        .expect("UNWRAP: insert");
    store
        .finish_process("old-done", &end(ProcessState::Completed, Some(0), 100))
        .expect("UNWRAP: finish");
    store
        .insert_process(&record("new-done", 2, &[("s", "x")]))
        .expect("UNWRAP: insert");
    store
        .finish_process("new-done", &end(ProcessState::Interrupted, None, 500))
        .expect("UNWRAP: finish");
    store
        .insert_process(&record("old-live", 0, &[("s", "x")]))
        .expect("UNWRAP: insert");
    store
        .mark_process_started("old-live", &start(7))
        .expect("UNWRAP: start");

    assert_eq!(store.delete_finished_processes(500).expect("UNWRAP: delete"), 1);
    assert_eq!(store.get_process("old-done").expect("UNWRAP: get"), None);
    let ids: Vec<String> = store
        .list_processes(&ProcessFilter::default())
        .expect("UNWRAP: list")
        .into_iter()
        .map(|rec| rec.id)
        .collect();
    assert_eq!(ids, ["new-done", "old-live"]);
    let labels: i64 = raw(&dir.db())
        .query_row("SELECT count(*) FROM process_label", [], |row| row.get(0))
        .expect("UNWRAP: count labels");
    assert_eq!(labels, 2, "the deleted record's labels went with it");

    assert_eq!(store.delete_finished_processes(i64::MAX).expect("UNWRAP: delete"), 1);
    assert_eq!(
        store.delete_finished_processes(i64::MAX).expect("UNWRAP: delete again"),
        0
    );
    assert!(store.get_process("old-live").expect("UNWRAP: get").is_some());
}
