//! The registry: list, get, running, remove, clear, shutdown of all.

use std::time::Duration;

use corral_proc::{Command, Outcome, Registry, RegistryError};

use crate::util::{group_members, wait_for_members};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_lifecycle() {
    let registry = Registry::new();
    let quick = registry
        .spawn(Command::new(["true"]).id("quick"))
        .expect("UNWRAP: spawn");
    let slow = registry
        .spawn(Command::new(["sh", "-c", "sleep 300 & wait"]).id("slow"))
        .expect("UNWRAP: spawn");
    assert!(matches!(
        registry.spawn(Command::new(["true"]).id("quick")),
        Err(RegistryError::DuplicateId(_))
    ));
    quick.wait().await;
    wait_for_members(slow.pgid(), 2).await;

    let ids: Vec<String> = registry.list().iter().map(|p| p.id().to_string()).collect();
    assert_eq!(ids, ["quick", "slow"], "spawn order");
    let running: Vec<String> = registry.running().iter().map(|p| p.id().to_string()).collect();
    assert_eq!(running, ["slow"]);
    assert_eq!(registry.get("slow").map(|p| p.pid()), Some(slow.pid()));
    assert!(registry.get("nope").is_none());

    assert!(matches!(registry.remove("slow"), Err(RegistryError::StillRunning(_))));
    assert!(matches!(registry.remove("nope"), Err(RegistryError::NotFound(_))));
    assert_eq!(registry.clear_finished(), 1);
    assert_eq!(registry.len(), 1);

    let finished = registry.shutdown_all(Duration::from_secs(10)).await;
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].outcome, Outcome::Interrupted);
    assert!(group_members(slow.pgid()).is_empty());
    assert!(registry.remove("slow").is_ok());
    assert!(registry.is_empty());
}
