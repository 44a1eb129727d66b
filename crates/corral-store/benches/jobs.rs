//! The store's share of one exec job: the four writes the daemon makes for a trivial job (submit and claim
//! the task, insert the running process with its four labels, finish the process, finish the task), in a
//! loop, against a fresh SQLite store on disk (WAL, the daemon's settings) in the temp dir. It prints the
//! time per job and per write. Run with `cargo bench -p corral-store --bench jobs`.
//!
//! Settings, from the environment: `CORRAL_BENCH_JOBS` (default 5,000): jobs to run.

use std::collections::BTreeMap;
use std::time::Instant;

use corral_store::{NewTask, ProcessEnd, ProcessRecord, ProcessState, SqliteStore, Store, TaskEnd, TaskStatus};

/// A random-looking id (UUID-shaped), so index inserts land where a UUID's would.
fn id(state: &mut u64) -> String {
    let mut next = || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    let (a, b) = (next(), next());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn main() {
    if let Err(err) = run() {
        eprintln!("jobs benchmark: {err}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: usize = std::env::var("CORRAL_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = std::env::temp_dir().join(format!("corral-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&dir.join("corral.db"))?;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let params = serde_json::json!({"tool": "bench", "command": "true", "args": {}, "labels": {}});
    let mut phases = [0u128; 4];
    let start = Instant::now();
    for _ in 0..jobs {
        let now = 1_700_000_000_000_i64;
        let task = NewTask {
            id: id(&mut seed),
            task_type: "exec".into(),
            params: params.clone(),
            submitted_at: now,
        };
        let t = Instant::now();
        store.submit_claimed_task(&task, "node", now + 30_000)?;
        phases[0] += t.elapsed().as_nanos();
        let mut record = ProcessRecord::new(id(&mut seed), "exec", vec!["/bin/true".into()], now);
        let labels: BTreeMap<String, String> = [
            ("job", task.id.as_str()),
            ("task", task.id.as_str()),
            ("tool", "bench"),
            ("command", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        record.labels = labels;
        record.state = ProcessState::Running;
        record.pid = Some(1234);
        record.pgid = Some(1234);
        record.start_ticks = Some(5678);
        record.boot_id = Some("boot".into());
        record.started_at = Some(now);
        let t = Instant::now();
        store.insert_process(&record)?;
        phases[1] += t.elapsed().as_nanos();
        let t = Instant::now();
        let end = ProcessEnd {
            state: ProcessState::Completed,
            exit_code: Some(0),
            signal: None,
            error: None,
            ended_at: now,
        };
        store.finish_process(&record.id, &end)?;
        phases[2] += t.elapsed().as_nanos();
        let t = Instant::now();
        let result = serde_json::json!({"process_id": record.id, "exit_code": 0, "signal": null, "stdout": "",
            "stderr": "", "truncated": false, "duration_ms": 1});
        let end = TaskEnd {
            status: TaskStatus::Completed,
            result: Some(result),
            error: None,
            completed_at: now,
        };
        store.finish_task(&task.id, "node", &end)?;
        phases[3] += t.elapsed().as_nanos();
    }
    let total = start.elapsed();
    let per = |n: u128| n as f64 / jobs as f64 / 1000.0;
    println!(
        "{jobs} jobs: {:.1} µs per job; submit+claim {:.1}, insert process {:.1}, finish process {:.1}, finish task {:.1}",
        total.as_nanos() as f64 / jobs as f64 / 1000.0,
        per(phases[0]),
        per(phases[1]),
        per(phases[2]),
        per(phases[3])
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
