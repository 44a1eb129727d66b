//! `corral daemon`: start-up, serving, and graceful shutdown.
//!
//! Start-up order matters: config and tokens are validated first (exit 2, nothing touched), then the
//! state dir is locked (a second daemon exits 1 and touches nothing), then the store is opened and
//! records left by a crashed daemon are reconciled, then the listeners come up and readiness is
//! announced. Shutdown (SIGTERM/SIGINT) runs the other way: not ready, stop accepting, stop every
//! process this daemon runs (recorded `interrupted`), flush and close the store, release the lock.

pub(crate) mod auth;
pub(crate) mod exec;
pub(crate) mod keeper;
pub(crate) mod listen;
pub(crate) mod lock;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod openapi;
pub(crate) mod pipelines;
pub(crate) mod registry;
pub(crate) mod server;
pub(crate) mod tasks;
pub(crate) mod timed_store;

use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_core::builtin::{ExecTask, PipelineRuns, PipelineTask, ProcessTask};
use corral_core::events::EventBus;
use corral_core::processes::ProcessManager;
use corral_core::tasks::TaskEngine;
use corral_core::tools::ToolRegistry;
use corral_store::{SqliteStore, Store};

use crate::config::Config;
use crate::daemon::auth::{Token, Tokens};
use crate::daemon::server::{AppInner, AppState};

/// The longest grace a process gets when the daemon shuts down (its own, if shorter): a stop must not wait
/// on a process that asked for an hour, and service managers kill a daemon that takes too long.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A usage problem found at start (exit code 2), e.g. TCP without tokens.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// Logs to stderr; `RUST_LOG`/`CORRAL_LOG` set the filter (default `info`). A stderr that can no longer be
/// written (its reader gone: a closed pipe, `| head`) loses the log lines, never the daemon: by default
/// tracing-subscriber reports a failed write with `eprintln!`, which panics on that same stderr.
pub(crate) fn init_logging() {
    let filter = std::env::var("CORRAL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .log_internal_errors(false)
        .try_init();
}

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!("{}", config.summary());
    for line in config.not_served() {
        tracing::warn!("{line}");
    }
    // Installed before anything else: a SIGTERM during start-up is handled (as a graceful stop once
    // started), never the default instant death.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let tokens = Tokens::new(
        config
            .tokens
            .iter()
            .map(Token::from_config)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| UsageError(format!("{}: {err}", config_name(&config))))?,
    );
    if config.listen.is_some() && tokens.is_empty() {
        return Err(UsageError(format!(
            "{}: `listen` is set but no [[token]] is configured; refusing to serve TCP without authentication",
            config_name(&config)
        ))
        .into());
    }

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state_dir)
        .with_context(|| format!("cannot create state dir {}", config.state_dir.display()))?;
    let lock = lock::StateLock::acquire(&config.state_dir)?;
    tracing::info!(state_dir = %config.state_dir.display(), lock = %lock.path().display(), "state dir locked");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(config.state_dir.join("logs"))
        .context("cannot create the logs dir")?;

    if let Some(parent) = config.store_path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&config.store_path)
            .with_context(|| format!("cannot open the store {}", config.store_path.display()))?,
    );
    // Each supervised process costs about three descriptors; the usual soft limit (1,024) would stop us
    // near 330 processes with "Too many open files".
    match corral_proc::raise_open_files_limit() {
        Some(limit) if limit < 4096 => tracing::warn!(
            limit,
            "open files limited to {limit} (hard limit): at most about {} processes; raise LimitNOFILE",
            limit / 3
        ),
        Some(limit) => tracing::debug!(limit, "open files limit"),
        None => {}
    }
    if let Err(err) = corral_proc::reaper::enable_subreaper() {
        tracing::warn!(error = %err, "cannot become a child subreaper; orphans go to init");
    }

    let bus = EventBus::new();
    let metrics = Arc::new(metrics::Metrics::default());
    let store: Arc<dyn Store> = Arc::new(timed_store::TimedStore::new(store, metrics.clone()));
    {
        // Counted inline: a subscriber task would copy every event and be woken for each.
        let metrics = metrics.clone();
        bus.observe(move |kind, data| metrics.on_event(kind, data));
    }
    let keeper = if config.keeper {
        match keeper::attach(&config.state_dir).await {
            Ok(attached) => Some(attached),
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "cannot run the keeper; children will not survive a crash of the daemon");
                None
            }
        }
    } else {
        tracing::info!("keeper off ([processes] keeper = false): children die with the daemon");
        None
    };
    let (keeper_client, kept_state) = keeper.unzip();
    let processes = match &keeper_client {
        Some(client) => ProcessManager::with_keeper(store.clone(), bus.clone(), client.clone()),
        None => ProcessManager::new(store.clone(), bus.clone()),
    };
    if keeper_client.is_some() {
        // Exec jobs' output, mirrored while they run, so that a crash loses none of it (only a kept
        // process outlives the daemon and needs it).
        let mirror = config.state_dir.join("output");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&mirror)
            .context("cannot create the output mirror dir")?;
        processes.set_output_mirror(mirror);
    }
    let reconcile_started = Instant::now();
    let reconcile = processes.reconcile(kept_state).context("reconciling process records")?;
    tracing::info!(
        elapsed_ms = reconcile_started.elapsed().as_secs_f64() * 1000.0,
        recovered = reconcile.recovered,
        reattached = reconcile.reattached,
        exited_while_down = reconcile.exited_while_down,
        stale = reconcile.stale,
        unowned = reconcile.unowned,
        "process records reconciled"
    );
    let tools = Arc::new(
        tokio::task::spawn_blocking({
            let dir = config.tools_dir.clone();
            move || ToolRegistry::load(dir)
        })
        .await
        .context("loading tools")?,
    );
    let tools_watch = match tools.watch() {
        Ok(handle) => Some(handle),
        Err(err) => {
            tracing::warn!(error = %err, dir = %config.tools_dir.display(), "cannot watch the tools dir; reloads need a restart");
            None
        }
    };
    {
        let index = tools.current();
        tracing::info!(tools = index.len(), errors = index.errors().len(), dir = %config.tools_dir.display(), "tools loaded");
        for error in index.errors() {
            tracing::warn!("tool file skipped: {error}");
        }
    }
    // Shared by the `pipeline` task handler, which lists its runs there, and `GET /pipelines/{id}`.
    let pipeline_runs = PipelineRuns::new(bus.clone());
    let tasks = TaskEngine::builder()
        .handler("process", ProcessTask::new(processes.clone()))
        .handler("exec", ExecTask::new(processes.clone(), tools.clone()))
        .handler(
            "pipeline",
            PipelineTask::new(processes.clone()).runs(pipeline_runs.clone()),
        )
        .build(store.clone(), bus.clone(), Some(processes.clone()))
        .context("starting the task engine")?;
    let recovery = tasks.recover().await.context("recovering tasks")?;
    tracing::info!(
        rerun = recovery.rerun,
        failed = recovery.failed,
        queued = recovery.queued,
        stopped_leftovers = recovery.stopped_processes,
        node = tasks.node(),
        "tasks recovered"
    );
    {
        // Retention of finished tasks: once now, then hourly.
        let tasks = tasks.clone();
        let (max_age, keep, job_ttl) = (config.task_retention, config.task_keep, config.job_ttl);
        let processes_for_retention = processes.clone();
        tokio::spawn(async move {
            loop {
                match tasks.apply_retention(max_age, keep) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "finished tasks past retention deleted"),
                    Err(err) => tracing::warn!(error = %err, "task retention failed"),
                }
                // Finished process records follow the same age limit as finished tasks.
                match processes_for_retention.apply_retention(max_age) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "finished process records past retention deleted"),
                    Err(err) => tracing::warn!(error = %err, "process record retention failed"),
                }
                // Finished exec jobs live at least job_ttl, then go.
                match tasks.expire_finished("exec", job_ttl) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "finished exec jobs past job_ttl deleted"),
                    Err(err) => tracing::warn!(error = %err, "exec job expiry failed"),
                }
                tokio::time::sleep((job_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))).await;
            }
        });
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        inner: Arc::new(AppInner {
            pipelines: pipelines::Pipelines::new(tasks.clone(), pipeline_runs),
            processes: processes.clone(),
            tasks: tasks.clone(),
            tools: tools.clone(),
            bus,
            metrics,
            tokens,
            started: Instant::now(),
            state_dir: config.state_dir.clone(),
            store_dir: config
                .store_path
                .parent()
                .map(|p| p.to_owned())
                .unwrap_or_else(|| config.state_dir.clone()),
            ready: AtomicBool::new(false),
            reconcile,
            shutdown: shutdown_rx.clone(),
        }),
    };

    let socket_path = config.state_dir.join("corral.sock");
    let unix = listen::PeerCheckedUnixListener::bind(&socket_path)
        .with_context(|| format!("cannot listen on {}", socket_path.display()))?;
    let mut servers = tokio::task::JoinSet::new();
    {
        let app = server::app(state.clone());
        let mut stop = shutdown_rx.clone();
        servers.spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
    }
    if let Some(listen) = &config.listen {
        let tcp = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let app = server::tcp_app(state.clone());
        let mut stop = shutdown_rx.clone();
        tracing::info!(address = %listen, "listening on TCP (token required)");
        servers.spawn(async move {
            axum::serve(tcp, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
    }

    let entry = registry::DaemonEntry {
        pid: std::process::id(),
        start_ticks: corral_proc::ProcessIdentity::of(std::process::id())
            .map(|i| i.start_ticks)
            .unwrap_or(0),
        boot_id: corral_proc::boot_id().map(str::to_owned).unwrap_or_default(),
        socket: socket_path.clone(),
        state_dir: config.state_dir.clone(),
        listen: config.listen.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let registered = registry::register(&entry)
        .map_err(|err| tracing::warn!(error = %err, "cannot write the daemon registry entry"))
        .ok();

    state.inner.ready.store(true, Ordering::SeqCst);
    notify::notify("READY=1");
    tracing::info!(socket = %socket_path.display(), pid = std::process::id(), "corral daemon ready");

    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        Some(result) = servers.join_next() => {
            tracing::error!(?result, "a listener stopped unexpectedly; shutting down");
        }
    }

    state.inner.ready.store(false, Ordering::SeqCst);
    notify::notify("STOPPING=1");
    let _ = shutdown_tx.send(true);
    // Stop accepting; streams end on the shutdown signal, so this does not wait on open SSE clients.
    let drain = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
        tracing::warn!("listeners did not close within 5 s; closing anyway");
    }
    // Tasks first: they go back to `queued` (to resume at the next start) as their processes stop.
    tasks.shutdown().await;
    processes.shutdown_all(SHUTDOWN_GRACE).await;
    if let Some(client) = &keeper_client {
        // A clean stop: every child is stopped and recorded, so the keeper has nothing left to keep.
        keeper::stop(client).await;
    }
    let _ = std::fs::remove_file(&socket_path);
    if let Some(path) = registered {
        let _ = std::fs::remove_file(path);
    }
    drop(tools_watch);
    drop(state);
    drop(processes);
    drop(store);
    drop(lock);
    tracing::info!("corral daemon stopped");
    Ok(())
}

fn config_name(config: &Config) -> String {
    config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "config".into())
}
