//! Old database files, checked in under `tests/data/`, still open, migrate and read back.
//!
//! Each schema version gets an artefact `tests/data/v<N>.sqlite`, made by that version's code with
//! [`generate_artefact`] (`cargo test -p corral-store --test tests -- --ignored generate_artefact`), and
//! committed. Artefacts are never regenerated: they stand for databases in the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_store::{
    NewTask, ProcessRecord, ProcessState, SqliteStore, Store, Submitted, TaskEnd, TaskFilter, TaskRecord, TaskStatus,
};
use serde_json::json;

use crate::util::{raw, record, TempDir};

/// The record every artefact holds, as a store of schema `version` wrote it (timeout and grace from 4 on).
fn artefact_record(version: i64) -> ProcessRecord {
    ProcessRecord {
        id: "5d1f1a52-8f6b-4d39-9d3c-0b1f2c3d4e5f".to_owned(),
        source: "exec".to_owned(),
        labels: BTreeMap::from([
            ("job_id".to_owned(), "j-7".to_owned()),
            ("session".to_owned(), "s-'1'".to_owned()),
        ]),
        pid: Some(31337),
        pgid: Some(31337),
        start_ticks: Some(987_654_321),
        boot_id: Some("2b7c4a3e-6f1d-4e8a-9b0c-1d2e3f4a5b6c".to_owned()),
        command: vec!["cargo".to_owned(), "build".to_owned(), "--release".to_owned()],
        dir: Some("/srv/app".to_owned()),
        state: ProcessState::Completed,
        exit_code: Some(0),
        signal: None,
        error: None,
        created_at: 1_767_225_600_000,
        started_at: Some(1_767_225_600_050),
        ended_at: Some(1_767_225_660_000),
        timeout_ms: (version >= 4).then_some(600_000),
        grace_ms: (version >= 4).then_some(5_000),
    }
}

/// The tasks every artefact from version 2 on holds: one of each status, oldest first.
fn artefact_tasks() -> Vec<TaskRecord> {
    let base = 1_767_225_600_000;
    let params = json!({
        "repo": "https://example.invalid/app.git",
        "steps": [["cargo", "build"], ["cargo", "test", "--", "--nocapture"]],
        "limits": { "cpu": 1.5, "retries": 3, "big": 9_007_199_254_740_993_u64, "neg": i64::MIN },
        "note": "ünïcödé 'quotes' \"double\" 🦀",
    });
    let task = |id: &str, task_type: &str, offset: i64| TaskRecord {
        id: id.to_owned(),
        task_type: task_type.to_owned(),
        params: params.clone(),
        status: TaskStatus::Queued,
        attempt: 0,
        result: None,
        error: None,
        progress: None,
        claimed_by: None,
        lease_expires_at: None,
        submitted_at: base + offset,
        started_at: None,
        completed_at: None,
        updated_at: base + offset,
    };
    let queued = task("0d5e2c1a-1111-4c36-9a55-5f1f0f3d2a01", "build", 0);
    let running = TaskRecord {
        status: TaskStatus::Running,
        attempt: 1,
        progress: Some(json!({ "step": 1, "of": 2 })),
        claimed_by: Some("node-a".to_owned()),
        lease_expires_at: Some(base + 31_000),
        started_at: Some(base + 1_000),
        updated_at: base + 2_000,
        ..task("0d5e2c1a-2222-4c36-9a55-5f1f0f3d2a02", "build", 1)
    };
    let completed = TaskRecord {
        status: TaskStatus::Completed,
        attempt: 1,
        result: Some(json!({ "artifacts": ["app"], "ok": true })),
        progress: Some(json!(100)),
        claimed_by: Some("node-a".to_owned()),
        started_at: Some(base + 1_000),
        completed_at: Some(base + 5_000),
        updated_at: base + 5_000,
        ..task("0d5e2c1a-3333-4c36-9a55-5f1f0f3d2a03", "deploy", 2)
    };
    let failed = TaskRecord {
        status: TaskStatus::Failed,
        attempt: 1,
        error: Some("exit status 101".to_owned()),
        claimed_by: Some("node-b".to_owned()),
        started_at: Some(base + 1_000),
        completed_at: Some(base + 6_000),
        updated_at: base + 6_000,
        ..task("0d5e2c1a-4444-4c36-9a55-5f1f0f3d2a04", "deploy", 3)
    };
    let cancelled = TaskRecord {
        status: TaskStatus::Cancelled,
        completed_at: Some(base + 7_000),
        updated_at: base + 7_000,
        ..task("0d5e2c1a-5555-4c36-9a55-5f1f0f3d2a05", "build", 4)
    };
    vec![queued, running, completed, failed, cancelled]
}

/// Writes [`artefact_tasks`] through the API of this version.
fn write_artefact_tasks(store: &dyn Store) {
    for expected in artefact_tasks() {
        let new = NewTask {
            id: expected.id.clone(),
            task_type: expected.task_type.clone(),
            params: expected.params.clone(),
            submitted_at: expected.submitted_at,
        };
        assert!(matches!(
            store.submit_task(&new).expect("UNWRAP: submit"),
            Submitted::Created(_)
        ));
        let id = expected.id.as_str();
        if let (Some(node), Some(started_at)) = (expected.claimed_by.as_deref(), expected.started_at) {
            let lease_until = expected.lease_expires_at.unwrap_or(started_at + 30_000);
            store
                .claim_task(id, node, lease_until, started_at)
                .expect("UNWRAP: claim")
                .expect("UNWRAP: claimable");
            if let Some(progress) = &expected.progress {
                let at = expected.completed_at.map_or(expected.updated_at, |done| done - 500);
                assert!(store
                    .set_task_progress(id, node, progress, at)
                    .expect("UNWRAP: progress"));
            }
        }
        if let Some(completed_at) = expected.completed_at {
            if expected.claimed_by.is_some() {
                let end = TaskEnd {
                    status: expected.status,
                    result: expected.result.clone(),
                    error: expected.error.clone(),
                    completed_at,
                };
                let node = expected.claimed_by.as_deref().expect("UNWRAP: claimed");
                assert!(store.finish_task(id, node, &end).expect("UNWRAP: finish"));
            } else {
                assert!(store.cancel_task(id, completed_at).expect("UNWRAP: cancel"));
            }
        }
        assert_eq!(store.get_task(id).expect("UNWRAP: get").as_ref(), Some(&expected));
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Writes the artefact content with this version's code into a new database in `dir`.
fn build_artefact(dir: &TempDir) {
    {
        let store = dir.open();
        store
            .insert_process(&artefact_record(SqliteStore::SCHEMA_VERSION))
            .expect("UNWRAP: insert");
        write_artefact_tasks(&store);
        store
            .set_meta("boot_id", "2b7c4a3e-6f1d-4e8a-9b0c-1d2e3f4a5b6c")
            .expect("UNWRAP: set meta");
    }
    // The last connection closed: the WAL was checkpointed into the main file and removed.
    assert!(!dir.path().join("corral.db-wal").exists(), "WAL checkpointed");
}

/// Ignored because it writes into the source tree: run by hand once when a migration is added, then the
/// file is committed. CI runs the same generator through `the_generator_builds_what_the_check_reads`.
#[test]
#[ignore = "writes tests/data/v<SCHEMA_VERSION>.sqlite; run once when a migration is added, then commit the file"]
fn generate_artefact() {
    let dir = TempDir::new("artefact");
    build_artefact(&dir);
    let target = data_dir().join(format!("v{}.sqlite", SqliteStore::SCHEMA_VERSION));
    std::fs::create_dir_all(data_dir()).expect("UNWRAP: create tests/data");
    std::fs::copy(dir.db(), &target).expect("UNWRAP: copy artefact");
    eprintln!("wrote {}", target.display());
}

/// The generator, run into a temporary directory, makes a file the compatibility check accepts: the next
/// artefact someone generates will be a valid one.
#[test]
fn the_generator_builds_what_the_check_reads() {
    let built = TempDir::new("artefact-built");
    build_artefact(&built);
    check_artefact(SqliteStore::SCHEMA_VERSION, &built.db());
}

/// Every `tests/data/v<N>.sqlite`, with its version.
fn artefacts() -> Vec<(i64, PathBuf)> {
    let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(data_dir())
        .expect("UNWRAP: tests/data exists")
        .map(|entry| entry.expect("UNWRAP: directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let version = name.strip_prefix('v')?.strip_suffix(".sqlite")?.parse().ok()?;
            Some((version, path))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn every_old_database_opens_migrates_and_reads_back() {
    let artefacts = artefacts();
    assert!(
        artefacts.iter().any(|(version, _)| *version == 1),
        "tests/data/v1.sqlite is missing"
    );
    assert!(
        artefacts
            .iter()
            .any(|(version, _)| *version == SqliteStore::SCHEMA_VERSION),
        "no artefact for schema version {}: run the ignored test generate_artefact and commit the file",
        SqliteStore::SCHEMA_VERSION
    );
    for (version, artefact) in artefacts {
        check_artefact(version, &artefact);
    }
}

/// Opens a copy of `artefact` (schema `version`): it migrates, reads back what the generator wrote, and
/// takes new writes.
fn check_artefact(version: i64, artefact: &Path) {
    // Work on a copy: the checked-in file must never be migrated.
    let dir = TempDir::new(&format!("compat-v{version}"));
    std::fs::copy(artefact, dir.db()).expect("UNWRAP: copy artefact");
    let found: i64 = raw(&dir.db())
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("UNWRAP: version");
    assert_eq!(found, version, "{} has the version its name says", artefact.display());

    let store = dir.open();
    let expected = artefact_record(version);
    assert_eq!(
        store.get_process(&expected.id).expect("UNWRAP: get"),
        Some(expected.clone()),
        "v{version}"
    );
    let mut by_label = corral_store::ProcessFilter::default();
    by_label.labels.insert("session".to_owned(), "s-'1'".to_owned());
    assert_eq!(
        store.list_processes(&by_label).expect("UNWRAP: list"),
        [expected],
        "v{version}"
    );
    assert_eq!(
        store.get_meta("boot_id").expect("UNWRAP: meta").as_deref(),
        Some("2b7c4a3e-6f1d-4e8a-9b0c-1d2e3f4a5b6c")
    );
    // Tasks exist from version 2 on; older files get an empty task table.
    let tasks = store.list_tasks(&TaskFilter::default()).expect("UNWRAP: list tasks");
    if version >= 2 {
        let mut expected = artefact_tasks();
        expected.reverse();
        assert_eq!(tasks, expected, "v{version}");
    } else {
        assert!(tasks.is_empty(), "v{version}");
    }
    // Migrated and writable.
    store
        .insert_process(&record("after-migration", 1, &[("session", "s-'1'")]))
        .expect("UNWRAP: insert");
    let new = NewTask {
        id: "after-migration".to_owned(),
        task_type: "build".to_owned(),
        params: json!({}),
        submitted_at: 1,
    };
    assert!(matches!(
        store.submit_task(&new).expect("UNWRAP: submit"),
        Submitted::Created(_)
    ));
    let claimed = store
        .claim_next_task(&[], "node-c", i64::MAX, 1_767_225_700_000)
        .expect("UNWRAP: claim next")
        .expect("UNWRAP: something to claim");
    if version >= 2 {
        assert_eq!(claimed.id, artefact_tasks()[1].id, "the expired claim first");
    } else {
        assert_eq!(claimed.id, "after-migration");
    }
    store.health_check().expect("UNWRAP: healthy");
    drop(store);
    let migrated: i64 = raw(&dir.db())
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("UNWRAP: version");
    assert_eq!(migrated, SqliteStore::SCHEMA_VERSION);
}
