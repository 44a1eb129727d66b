//! The meta table and the health check.

use corral_store::{SqliteStore, Store};

use crate::util::TempDir;

#[test]
fn meta_values_are_set_replaced_and_kept() {
    let dir = TempDir::new("meta");
    {
        let store = dir.open();
        assert_eq!(store.get_meta("boot_id").expect("UNWRAP: get"), None);
        store.set_meta("boot_id", "first").expect("UNWRAP: set");
        store.set_meta("boot_id", "second").expect("UNWRAP: replace");
        store
            .set_meta("'; DROP TABLE meta; --", "")
            .expect("UNWRAP: odd key, empty value");
    }
    let store = dir.open();
    assert_eq!(
        store.get_meta("boot_id").expect("UNWRAP: get").as_deref(),
        Some("second")
    );
    assert_eq!(
        store
            .get_meta("'; DROP TABLE meta; --")
            .expect("UNWRAP: get")
            .as_deref(),
        Some("")
    );
    assert_eq!(
        store.get_meta("BOOT_ID").expect("UNWRAP: keys are case-sensitive"),
        None
    );
}

#[test]
fn health_check_passes_on_a_writable_store_again_and_again() {
    let dir = TempDir::new("health");
    let store = dir.open();
    for _ in 0..3 {
        store.health_check().expect("UNWRAP: healthy");
    }
    let beats: i64 = crate::util::raw(&dir.db())
        .query_row("SELECT beats FROM heartbeat", [], |row| row.get(0))
        .expect("UNWRAP: heartbeat row");
    assert_eq!(beats, 3, "each check commits a write");
    SqliteStore::open_in_memory()
        .expect("UNWRAP: open")
        .health_check()
        .expect("UNWRAP: healthy in memory");
}
