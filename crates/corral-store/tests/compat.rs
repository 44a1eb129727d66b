//! Old database files, checked in under `tests/data/`, still open, migrate and read back.
//!
//! Each schema version gets an artefact `tests/data/v<N>.sqlite`, made by that version's code with
//! [`generate_artefact`] (`cargo test -p corral-store --test tests -- --ignored generate_artefact`), and
//! committed. Artefacts are never regenerated: they stand for databases in the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_store::{ProcessRecord, ProcessState, SqliteStore, Store};

use crate::util::{raw, record, TempDir};

/// The record every artefact holds.
fn artefact_record() -> ProcessRecord {
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
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[test]
#[ignore = "writes tests/data/v<SCHEMA_VERSION>.sqlite; run once when a migration is added, then commit the file"]
fn generate_artefact() {
    let dir = TempDir::new("artefact");
    {
        let store = dir.open();
        store.insert_process(&artefact_record()).expect("UNWRAP: insert");
        store
            .set_meta("boot_id", "2b7c4a3e-6f1d-4e8a-9b0c-1d2e3f4a5b6c")
            .expect("UNWRAP: set meta");
    }
    // The last connection closed: the WAL was checkpointed into the main file and removed.
    assert!(!dir.path().join("corral.db-wal").exists(), "WAL checkpointed");
    let target = data_dir().join(format!("v{}.sqlite", SqliteStore::SCHEMA_VERSION));
    std::fs::create_dir_all(data_dir()).expect("UNWRAP: create tests/data");
    std::fs::copy(dir.db(), &target).expect("UNWRAP: copy artefact");
    eprintln!("wrote {}", target.display());
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
        // Work on a copy: the checked-in file must never be migrated.
        let dir = TempDir::new(&format!("compat-v{version}"));
        std::fs::copy(&artefact, dir.db()).expect("UNWRAP: copy artefact");
        let found: i64 = raw(&dir.db())
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("UNWRAP: version");
        assert_eq!(found, version, "{} has the version its name says", artefact.display());

        let store = dir.open();
        let expected = artefact_record();
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
        // Migrated and writable.
        store
            .insert_process(&record("after-migration", 1, &[("session", "s-'1'")]))
            .expect("UNWRAP: insert");
        store.health_check().expect("UNWRAP: healthy");
        drop(store);
        let migrated: i64 = raw(&dir.db())
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("UNWRAP: version");
        assert_eq!(migrated, SqliteStore::SCHEMA_VERSION);
    }
}
