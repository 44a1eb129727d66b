//! A record's lifecycle: insert, start, transition, finish exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use corral_store::{ProcessEnd, ProcessRecord, ProcessState, SqliteStore, Store, StoreError};

use crate::util::{end, record, start, TempDir};

fn full_record() -> ProcessRecord {
    ProcessRecord {
        id: "0b9d6a7e-3f0c-4c36-9a55-5f1f0f3d2a11".to_owned(),
        source: "exec".to_owned(),
        labels: BTreeMap::from([
            ("job_id".to_owned(), "j-1".to_owned()),
            ("note".to_owned(), "quotes ' \" and ünïcödé".to_owned()),
        ]),
        pid: Some(u32::MAX),
        pgid: Some(4242),
        start_ticks: Some(i64::MAX as u64),
        boot_id: Some("8c3f0c1e-boot".to_owned()),
        command: vec!["printf".to_owned(), "%s\n".to_owned(), String::new(), "a b".to_owned()],
        dir: Some("/srv/app".to_owned()),
        state: ProcessState::Failed,
        exit_code: Some(-1),
        signal: Some("KILL".to_owned()),
        error: Some("killed after timeout".to_owned()),
        created_at: -5,
        started_at: Some(i64::MAX),
        ended_at: Some(i64::MIN),
        timeout_ms: Some(i64::MAX as u64),
        grace_ms: Some(0),
    }
}

#[test]
fn every_field_round_trips() {
    let dir = TempDir::new("round-trip");
    let store = dir.open();
    let rec = full_record();
    store.insert_process(&rec).expect("UNWRAP: insert");
    assert_eq!(store.get_process(&rec.id).expect("UNWRAP: get"), Some(rec.clone()));
    let minimal = record("minimal", 7, &[]);
    store.insert_process(&minimal).expect("UNWRAP: insert");
    assert_eq!(store.get_process("minimal").expect("UNWRAP: get"), Some(minimal));
    assert_eq!(store.get_process("absent").expect("UNWRAP: get"), None);
}

#[test]
fn a_duplicate_id_is_a_conflict_and_changes_nothing() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    let first = record("dup", 1, &[("a", "1")]);
    store.insert_process(&first).expect("UNWRAP: insert");
    let second = record("dup", 2, &[("b", "2")]);
    let err = store.insert_process(&second).expect_err("UNWRAP: duplicate");
    assert!(
        matches!(&err, StoreError::Conflict { what: "process", id } if id == "dup"),
        "{err:?}"
    );
    assert!(!err.is_unavailable());
    assert_eq!(store.get_process("dup").expect("UNWRAP: get"), Some(first));
    let by_label = corral_store::ProcessFilter {
        labels: BTreeMap::from([("b".to_owned(), "2".to_owned())]),
        ..Default::default()
    };
    assert!(
        store.list_processes(&by_label).expect("UNWRAP: list").is_empty(),
        "no stray labels"
    );
}

/// The field an `InvalidInput` error blames, if it is one.
fn invalid_field(err: &StoreError) -> Option<&'static str> {
    match err {
        StoreError::InvalidInput { field, .. } => Some(field),
        _ => None,
    }
}

#[test]
fn values_the_store_cannot_hold_are_invalid_input() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    let mut huge_ticks = record("ticks", 1, &[]);
    huge_ticks.start_ticks = Some(u64::MAX);
    let mut live_with_end = record("live-with-end", 1, &[]);
    live_with_end.ended_at = Some(5);
    let mut terminal_without_end = record("terminal-without-end", 1, &[]);
    terminal_without_end.state = ProcessState::Stale;
    let cases = [
        (record("", 1, &[]), "id"),
        (huge_ticks, "start_ticks"),
        (live_with_end, "ended_at"),
        (terminal_without_end, "ended_at"),
    ];
    for (rec, field) in cases {
        let err = store.insert_process(&rec).expect_err("UNWRAP: invalid record");
        assert_eq!(invalid_field(&err), Some(field), "{rec:?}: {err:?}");
    }
    assert_eq!(
        store
            .count_processes_by_state()
            .expect("UNWRAP: count")
            .values()
            .sum::<u64>(),
        0
    );
}

#[test]
fn start_applies_only_to_a_pending_record() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    store.insert_process(&record("p", 1, &[])).expect("UNWRAP: insert");
    assert!(store.mark_process_started("p", &start(100)).expect("UNWRAP: start"));
    let rec = store.get_process("p").expect("UNWRAP: get").expect("UNWRAP: exists");
    assert_eq!(rec.state, ProcessState::Running);
    assert_eq!(
        (rec.pid, rec.pgid, rec.start_ticks),
        (Some(100), Some(100), Some(123_456))
    );
    assert_eq!((rec.boot_id.as_deref(), rec.started_at), (Some("boot-1"), Some(2_000)));

    assert!(!store
        .mark_process_started("p", &start(200))
        .expect("UNWRAP: second start"));
    assert_eq!(
        store
            .get_process("p")
            .expect("UNWRAP: get")
            .expect("UNWRAP: exists")
            .pid,
        Some(100)
    );

    let err = store
        .mark_process_started("absent", &start(1))
        .expect_err("UNWRAP: missing");
    assert!(
        matches!(&err, StoreError::NotFound { what: "process", id } if id == "absent"),
        "{err:?}"
    );

    // Finished before it was spawned (interrupted while pending): a late start changes nothing.
    store.insert_process(&record("q", 1, &[])).expect("UNWRAP: insert");
    assert!(store
        .finish_process("q", &end(ProcessState::Interrupted, None, 5))
        .expect("UNWRAP: finish"));
    assert!(!store
        .mark_process_started("q", &start(300))
        .expect("UNWRAP: late start"));
    let rec = store.get_process("q").expect("UNWRAP: get").expect("UNWRAP: exists");
    assert_eq!((rec.state, rec.pid), (ProcessState::Interrupted, None));
}

#[test]
fn transition_is_a_compare_and_set_between_live_states() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    store.insert_process(&record("p", 1, &[])).expect("UNWRAP: insert");
    let running = [ProcessState::Running];
    assert!(!store
        .transition_process("p", &running, ProcessState::Interrupting)
        .expect("UNWRAP: still pending"));
    store.mark_process_started("p", &start(100)).expect("UNWRAP: start");
    assert!(store
        .transition_process("p", &running, ProcessState::Interrupting)
        .expect("UNWRAP: transition"));
    assert!(!store
        .transition_process("p", &running, ProcessState::Interrupting)
        .expect("UNWRAP: again"));
    let state = store
        .get_process("p")
        .expect("UNWRAP: get")
        .expect("UNWRAP: exists")
        .state;
    assert_eq!(state, ProcessState::Interrupting);

    let invalid = [
        (&[][..], ProcessState::Running, "from"),
        (&[ProcessState::Completed][..], ProcessState::Running, "from"),
        (&[ProcessState::Running][..], ProcessState::Interrupted, "to"),
    ];
    for (from, to, field) in invalid {
        let err = store
            .transition_process("p", from, to)
            .expect_err("UNWRAP: invalid transition");
        assert_eq!(invalid_field(&err), Some(field), "{from:?} → {to}: {err:?}");
    }
    let err = store
        .transition_process("absent", &running, ProcessState::Interrupting)
        .expect_err("UNWRAP: missing");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

#[test]
fn the_terminal_state_is_written_exactly_once() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    store.insert_process(&record("p", 1, &[])).expect("UNWRAP: insert");
    store.mark_process_started("p", &start(100)).expect("UNWRAP: start");
    store
        .transition_process("p", &[ProcessState::Running], ProcessState::Interrupting)
        .expect("UNWRAP: interrupt");

    let natural = ProcessEnd {
        state: ProcessState::Completed,
        exit_code: Some(0),
        signal: None,
        error: None,
        ended_at: 3_000,
    };
    assert!(store.finish_process("p", &natural).expect("UNWRAP: first finish"));
    let after_first = store.get_process("p").expect("UNWRAP: get").expect("UNWRAP: exists");

    let interrupted = ProcessEnd {
        state: ProcessState::Interrupted,
        exit_code: None,
        signal: Some("TERM".to_owned()),
        error: Some("stopped".to_owned()),
        ended_at: 4_000,
    };
    assert!(!store.finish_process("p", &interrupted).expect("UNWRAP: second finish"));
    assert!(!store
        .transition_process("p", &ProcessState::LIVE, ProcessState::Running)
        .expect("UNWRAP: revive"));
    let after_second = store.get_process("p").expect("UNWRAP: get").expect("UNWRAP: exists");
    assert_eq!(after_second, after_first);
    assert_eq!(after_second.state, ProcessState::Completed);
    assert_eq!((after_second.exit_code, after_second.ended_at), (Some(0), Some(3_000)));
    assert_eq!(after_second.signal, None);
}

#[test]
fn finish_checks_its_input() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    store.insert_process(&record("p", 1, &[])).expect("UNWRAP: insert");
    let err = store
        .finish_process("p", &end(ProcessState::Running, None, 1))
        .expect_err("UNWRAP: not terminal");
    assert_eq!(invalid_field(&err), Some("state"), "{err:?}");
    let err = store
        .finish_process("absent", &end(ProcessState::Failed, None, 1))
        .expect_err("UNWRAP: missing");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    // A process that never started can fail (spawn failure).
    let mut failed = end(ProcessState::Failed, None, 9);
    failed.error = Some("no such file".to_owned());
    assert!(store.finish_process("p", &failed).expect("UNWRAP: finish pending"));
    let rec = store.get_process("p").expect("UNWRAP: get").expect("UNWRAP: exists");
    assert_eq!(
        (rec.state, rec.started_at, rec.error.as_deref()),
        (ProcessState::Failed, None, Some("no such file"))
    );
}

#[test]
fn of_eight_racing_finishes_exactly_one_wins() {
    // Two stores on one file (two connections), four threads each: the guarantee must hold in SQLite,
    // not only behind one store's mutex.
    let dir = TempDir::new("race");
    let stores = [Arc::new(dir.open()), Arc::new(dir.open())];
    const THREADS: usize = 8;
    const ROUNDS: usize = 25;
    for round in 0..ROUNDS {
        let id = format!("race-{round}");
        stores[0]
            .insert_process(&record(&id, round as i64, &[]))
            .expect("UNWRAP: insert");
        stores[0]
            .mark_process_started(&id, &start(1000))
            .expect("UNWRAP: start");
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|thread_idx| {
                let store = Arc::clone(&stores[thread_idx % 2]);
                let barrier = Arc::clone(&barrier);
                let id = id.clone();
                std::thread::spawn(move || {
                    let state = if thread_idx % 2 == 0 {
                        ProcessState::Completed
                    } else {
                        ProcessState::Interrupted
                    };
                    let end = end(state, Some(thread_idx as i32), thread_idx as i64);
                    barrier.wait();
                    (thread_idx, store.finish_process(&id, &end).expect("UNWRAP: finish"))
                })
            })
            .collect();
        let winners: Vec<usize> = handles
            .into_iter()
            .map(|handle| handle.join().expect("UNWRAP: thread"))
            .filter(|(_, applied)| *applied)
            .map(|(thread_idx, _)| thread_idx)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let rec = stores[1]
            .get_process(&id)
            .expect("UNWRAP: get")
            .expect("UNWRAP: exists");
        assert_eq!(
            rec.exit_code,
            Some(winners[0] as i32),
            "the record holds the winner's end"
        );
        assert_eq!(rec.ended_at, Some(winners[0] as i64));
    }
}
