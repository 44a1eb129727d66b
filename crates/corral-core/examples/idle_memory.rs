//! Heap bytes that one idle supervised process costs, counted by the allocator itself, at two layers:
//! a bare `corral_proc::Process`, and a process of the daemon's `ProcessManager` (record in a SQLite
//! store, children parented by a keeper, as `corral daemon` runs them).
//!
//! Starts N (default 1,000) `sleep 100000` children per layer, lets every task settle, and prints the
//! heap bytes and allocations still live per child, with the sizes that make them up. The children are
//! stopped before it exits. The daemon's end-to-end number (PSS of daemon and keeper) is part 4 of
//! `cargo bench -p corral --bench reattach`; this finds where it goes.
//!
//! ```text
//! cargo run --release -p corral-core --example idle_memory -- [N]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_core::events::EventBus;
use corral_core::processes::{ProcessManager, StartRequest};
use corral_proc::{keeper, Command};
use corral_store::SqliteStore;

/// Live allocations by size, in 16-byte classes up to 4 KiB; larger ones share the last class.
const CLASSES: usize = 257;

struct Counting;

static BYTES: AtomicI64 = AtomicI64::new(0);
static COUNT: AtomicI64 = AtomicI64::new(0);
static BY_SIZE: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];

fn class(size: usize) -> usize {
    (size.div_ceil(16)).min(CLASSES - 1)
}

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        BY_SIZE[class(layout.size())].fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        BY_SIZE[class(layout.size())].fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn snapshot() -> (i64, i64, Vec<i64>) {
    (
        BYTES.load(Ordering::Relaxed),
        COUNT.load(Ordering::Relaxed),
        BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
    )
}

type Snapshot = (i64, i64, Vec<i64>);

fn report(what: &str, n: usize, before: &Snapshot, after: &Snapshot) {
    let per = |d: i64| d as f64 / n as f64;
    println!(
        "{what}: {:.0} heap bytes and {:.1} allocations per idle process",
        per(after.0 - before.0),
        per(after.1 - before.1)
    );
    for (i, (a, b)) in after.2.iter().zip(&before.2).enumerate() {
        let d = per(a - b);
        if d.abs() >= 0.5 {
            let hi = if i == CLASSES - 1 {
                "..".to_owned()
            } else {
                (i * 16).to_string()
            };
            println!("  {:>5}-{:<5} B: {d:.1}", (i.max(1) - 1) * 16 + 1, hi);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("keeper") {
        return Ok(keeper::run_from_env()?);
    }
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    corral_proc::raise_open_files_limit();
    let dir = std::env::temp_dir().join(format!("corral-idle-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(n, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(n: usize, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let settle = Duration::from_secs(1);
    // corral_proc alone. A warm-up process first: the runtime's and the reactor's first allocations are
    // not per process.
    let warm = Command::new(["sleep", "100000"]).spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = snapshot();
    let mut processes = Vec::with_capacity(n);
    for _ in 0..n {
        processes.push(Command::new(["sleep", "100000"]).spawn()?);
    }
    tokio::time::sleep(settle).await;
    report("corral_proc::Process", n, &before, &snapshot());
    for process in processes.iter().chain([&warm]) {
        process.start_shutdown(Duration::ZERO);
    }
    for process in processes.iter().chain([&warm]) {
        process.wait().await;
    }
    drop(processes);

    // The daemon's ProcessManager, with a keeper.
    let socket = dir.join("keeper.sock");
    keeper::start(&socket, &dir.join("spool"), &std::env::current_exe()?, &["keeper"])?;
    let (client, _) = keeper::Client::connect(&socket).await?;
    let client = Arc::new(client);
    let store = Arc::new(SqliteStore::open(&dir.join("corral.db"))?);
    let manager = ProcessManager::with_keeper(store, EventBus::new(), client.clone());
    let request = || StartRequest {
        command: vec!["sleep".into(), "100000".into()],
        labels: BTreeMap::from([("session".to_owned(), "bench".to_owned())]),
        source: "adhoc".into(),
        ..StartRequest::default()
    };
    manager.start(request()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = snapshot();
    for _ in 0..n {
        manager.start(request()).await?;
    }
    tokio::time::sleep(settle).await;
    report("ProcessManager with a keeper", n, &before, &snapshot());
    manager.shutdown_all(Duration::ZERO).await;
    client.shutdown().await?;
    Ok(())
}
