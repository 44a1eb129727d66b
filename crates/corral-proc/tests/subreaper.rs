//! With the subreaper on, orphans of our children are re-parented to us and reaped.
//!
//! A test binary of its own: being a subreaper is a property of the whole process.

use std::time::{Duration, Instant};

use corral_proc::{read_stat, reaper, Command, Leftovers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_adopted_and_reaped() {
    reaper::enable_subreaper().expect("UNWRAP: prctl works on Linux");
    assert!(reaper::is_subreaper());
    let process = Command::new(["sh", "-c", "sleep 0.3 & echo $!"])
        .leftovers(Leftovers::Leave)
        .drain(Duration::from_millis(50))
        .spawn()
        .expect("UNWRAP: spawn");
    let finished = process.wait().await;
    assert!(finished.is_success());
    let orphan: u32 = process
        .output(corral_proc::Stream::Stdout)
        .expect("UNWRAP: captured")
        .to_string_lossy()
        .trim()
        .parse()
        .expect("UNWRAP: a pid");
    // While it lives, the orphan is our child now, not init's.
    if let Ok(Some(stat)) = read_stat(orphan) {
        if !stat.is_dead() {
            assert_eq!(stat.ppid, std::process::id());
        }
    }
    // Once it exits it is reaped: its pid disappears instead of lingering as a zombie.
    let start = Instant::now();
    while read_stat(orphan).expect("UNWRAP: /proc").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "orphan {orphan} was not reaped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_the_reaper_never_steals_a_tracked_child() {
    // Sweep as often as possible while children of ours exit: none of their exit statuses may be lost.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                reaper::reap_orphans();
            }
        })
    };
    for i in 0..300 {
        let finished = Command::new(["sh", "-c", "exit 7"])
            .spawn()
            .expect("UNWRAP: spawn")
            .wait()
            .await;
        assert_eq!(finished.exit_code(), Some(7), "spawn {i}: {finished:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeper.join().expect("UNWRAP: sweeper");
}
