//! Listing by labels, states and source: checked against a plain Rust filter over the same records.

use std::collections::BTreeMap;

use corral_store::{ProcessFilter, ProcessRecord, ProcessState, SqliteStore, Store};

use crate::util::{end, record, start};

/// The filter, applied in Rust: what `list_processes` must return. `records` is in insertion order.
fn expected(records: &[ProcessRecord], filter: &ProcessFilter) -> Vec<String> {
    let mut matching: Vec<(usize, &ProcessRecord)> = records
        .iter()
        .enumerate()
        .filter(|(_, rec)| {
            filter
                .labels
                .iter()
                .all(|(key, value)| rec.labels.get(key) == Some(value))
        })
        .filter(|(_, rec)| filter.states.is_empty() || filter.states.contains(&rec.state))
        .filter(|(_, rec)| filter.source.as_ref().is_none_or(|source| &rec.source == source))
        .collect();
    matching.sort_by(|(a_idx, a), (b_idx, b)| b.created_at.cmp(&a.created_at).then(b_idx.cmp(a_idx)));
    matching
        .into_iter()
        .take(filter.limit.unwrap_or(usize::MAX))
        .map(|(_, rec)| rec.id.clone())
        .collect()
}

/// Asserts that the store lists exactly what the Rust filter selects, in the same order.
fn check(store: &SqliteStore, records: &[ProcessRecord], filter: &ProcessFilter) {
    let got: Vec<String> = store
        .list_processes(filter)
        .expect("UNWRAP: list")
        .into_iter()
        .map(|rec| rec.id)
        .collect();
    assert_eq!(got, expected(records, filter), "filter {filter:?}");
}

fn filter(
    labels: &[(&str, &str)],
    states: &[ProcessState],
    source: Option<&str>,
    limit: Option<usize>,
) -> ProcessFilter {
    ProcessFilter {
        labels: labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        states: states.to_vec(),
        source: source.map(str::to_owned),
        limit,
    }
}

/// Inserts the records, then starts or finishes some, and returns them as stored.
fn populate(store: &SqliteStore, records: Vec<ProcessRecord>) -> Vec<ProcessRecord> {
    for rec in &records {
        store.insert_process(rec).expect("UNWRAP: insert");
    }
    for (idx, rec) in records.iter().enumerate() {
        match idx % 4 {
            0 => {}
            1 => assert!(store
                .mark_process_started(&rec.id, &start(idx as u32))
                .expect("UNWRAP: start")),
            2 => assert!(store
                .finish_process(&rec.id, &end(ProcessState::Completed, Some(0), 1))
                .expect("UNWRAP: end")),
            _ => assert!(store
                .finish_process(&rec.id, &end(ProcessState::Failed, Some(1), 1))
                .expect("UNWRAP: end")),
        }
    }
    records
        .iter()
        .map(|rec| {
            store
                .get_process(&rec.id)
                .expect("UNWRAP: get")
                .expect("UNWRAP: exists")
        })
        .collect()
}

#[test]
fn rare_common_and_absent_labels_combine_correctly() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    // 3,000 records: `host` is on all of them (a common label), `tool` on a fifth each, `session` on ten;
    // `created_at` repeats, so ties fall back to insertion order.
    let records: Vec<ProcessRecord> = (0..3_000)
        .map(|i| {
            let session = format!("s{}", i / 10);
            let tool = format!("t{}", i % 5);
            let mut rec = record(
                &format!("p{i:05}"),
                i / 3,
                &[("host", "h1"), ("session", &session), ("tool", &tool)],
            );
            rec.source = if i % 7 == 0 {
                "service".to_owned()
            } else {
                "exec".to_owned()
            };
            rec
        })
        .collect();
    let records = populate(&store, records);

    let live = &ProcessState::LIVE[..];
    let cases = [
        filter(&[], &[], None, None),
        filter(&[], &[], None, Some(0)),
        filter(&[], &[], None, Some(25)),
        filter(&[("session", "s42")], &[], None, None),
        filter(&[("host", "h1"), ("session", "s42")], &[], None, None),
        filter(&[("host", "h1"), ("session", "s42"), ("tool", "t3")], &[], None, None),
        filter(
            &[("host", "h1"), ("session", "s42"), ("tool", "t1")],
            &[],
            None,
            Some(1),
        ),
        filter(&[("host", "h1")], &[], None, Some(100)),
        filter(&[("host", "h1")], &[], None, None),
        filter(&[("host", "h1"), ("tool", "t2")], &[], None, Some(50)),
        filter(&[("host", "h1"), ("tool", "t2")], live, None, Some(50)),
        filter(&[("tool", "t4")], &[ProcessState::Failed], Some("service"), None),
        filter(
            &[("host", "h1")],
            &[ProcessState::Running, ProcessState::Pending],
            Some("exec"),
            Some(10),
        ),
        filter(&[("host", "h2")], &[], None, None),
        filter(&[("host", "h1"), ("session", "nope")], &[], None, Some(10)),
        filter(&[("session", "s1"), ("session2", "s1")], &[], None, None),
        filter(&[("Host", "h1")], &[], None, None),
        filter(&[], &[ProcessState::Interrupting, ProcessState::Stale], None, None),
        filter(&[], live, None, None),
        filter(&[], &[], Some("service"), Some(3)),
    ];
    for case in &cases {
        check(&store, &records, case);
    }
}

#[test]
fn hostile_label_keys_and_values_match_only_themselves() {
    let store = SqliteStore::open_in_memory().expect("UNWRAP: open");
    let values = [
        "'",
        "''",
        "\"",
        "%",
        "_",
        "a%",
        "a_",
        "ab",
        "abc",
        "'; DROP TABLE process; --",
        "x' OR '1'='1",
        "\\",
        "",
        " ",
        "ü",
        "a\0b",
    ];
    let mut records = Vec::new();
    for (idx, value) in values.iter().enumerate() {
        records.push(record(&format!("v{idx}"), idx as i64, &[("k", value)]));
        records.push(record(&format!("k{idx}"), idx as i64, &[(value, "v")]));
        records.push(record(
            &format!("kv{idx}"),
            idx as i64,
            &[(value, value), ("k", "both")],
        ));
    }
    let records = populate(&store, records);

    for value in values {
        check(&store, &records, &filter(&[("k", value)], &[], None, None));
        check(&store, &records, &filter(&[(value, "v")], &[], None, None));
        check(
            &store,
            &records,
            &filter(&[(value, value), ("k", "both")], &[], None, None),
        );
        check(&store, &records, &filter(&[(value, value)], &[], Some(value), Some(5)));
        let exact = store
            .list_processes(&filter(&[("k", value)], &[], None, None))
            .expect("UNWRAP: list");
        assert_eq!(exact.len(), 1, "value {value:?} matches itself only");
    }
    // Still all there.
    let total: u64 = store.count_processes_by_state().expect("UNWRAP: count").values().sum();
    assert_eq!(total, records.len() as u64);
    let all = store.list_processes(&ProcessFilter::default()).expect("UNWRAP: list");
    let stored: BTreeMap<_, _> = all.into_iter().map(|rec| (rec.id.clone(), rec)).collect();
    for rec in &records {
        assert_eq!(stored.get(&rec.id), Some(rec), "record {} round-trips", rec.id);
    }
}
