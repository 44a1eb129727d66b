//! corral-proc benchmarks, each measured side by side with a bare `std::process::Command` baseline.
//!
//! Run with `cargo bench -p corral-proc --bench proc`. What each number means, and the targets, are in
//! `bench/README.md` at the repository root. Settings, from the environment:
//!
//! - `CORRAL_BENCH_SECS` (default 3): seconds each spawn variant runs in each round.
//! - `CORRAL_BENCH_ROUNDS` (default 5): rounds; the variants alternate order from round to round and the
//!   median round is reported.
//! - `CORRAL_BENCH_CAPTURE_BYTES` (default 1 GiB): bytes the child writes in the capture benchmark.
//!
//! The results go to stdout as Markdown; progress goes to stderr. Peak memory is measured in fresh child
//! processes of this binary (`__capture_child <mode> <bytes>`), so that nothing else this process did
//! counts towards it.

use std::error::Error;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use corral_proc::{Command, Process, Stream, DEFAULT_RING_SIZE};
use tokio::runtime::Runtime;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// First argument that turns this binary into a one-shot capture child.
const CHILD_ARG: &str = "__capture_child";
/// Read size of the drain baseline: the same chunk corral-proc asks of the kernel.
const DRAIN_BUF: usize = 128 * 1024;
/// Worker threads of the runtime corral-proc runs on.
const WORKERS: usize = 2;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
/// Spawn-rate target: corral-proc at least this fraction of a bare std `Command`.
const SPAWN_TARGET: f64 = 0.8;
/// Capture target: corral-proc at least this fraction of draining the pipe into nothing.
const CAPTURE_TARGET: f64 = 0.8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        capture_child(&args[2..])
    } else {
        run()
    };
    if let Err(err) = result {
        eprintln!("bench failed: {err}");
        std::process::exit(1);
    }
}

struct Settings {
    secs: f64,
    rounds: usize,
    capture_bytes: u64,
}

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a valid number").into()),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(err) => Err(format!("{name}: {err}").into()),
    }
}

impl Settings {
    fn from_env() -> Result<Self> {
        let settings = Settings {
            secs: env_or("CORRAL_BENCH_SECS", 3.0)?,
            rounds: env_or("CORRAL_BENCH_ROUNDS", 5)?,
            capture_bytes: env_or("CORRAL_BENCH_CAPTURE_BYTES", 1u64 << 30)?,
        };
        if !(settings.secs > 0.0 && settings.secs.is_finite()) || settings.rounds == 0 || settings.capture_bytes == 0 {
            return Err(
                "CORRAL_BENCH_SECS, CORRAL_BENCH_ROUNDS and CORRAL_BENCH_CAPTURE_BYTES must be positive".into(),
            );
        }
        Ok(settings)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?)
}

/// Runs `future` as a task on a worker of `rt`, as a supervisor would, and waits for it.
fn on_worker<T: Send + 'static>(
    rt: &Runtime,
    future: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    rt.block_on(rt.spawn(future))?
}

// ---------------------------------------------------------------------------------------------------
// Spawn + wait of /bin/true
// ---------------------------------------------------------------------------------------------------

const TRUE: &str = "/bin/true";

/// Calls `once` back to back for `duration`; returns calls per second.
fn rate(duration: Duration, mut once: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < duration {
        once()?;
        count += 1;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// Baseline A: bare std `status()`, all stdio on /dev/null.
fn spawn_bare_status(duration: Duration) -> Result<f64> {
    rate(duration, || {
        let status = std::process::Command::new(TRUE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        check(status.success(), "bare status: /bin/true failed")
    })
}

/// Baseline B: bare std `output()`, stdout and stderr piped and read: the least capture can cost.
fn spawn_bare_output(duration: Duration) -> Result<f64> {
    rate(duration, || {
        let output = std::process::Command::new(TRUE).stdin(Stdio::null()).output()?;
        check(output.status.success(), "bare output: /bin/true failed")
    })
}

/// corral-proc: spawn + wait, default settings (both streams captured), one after the other.
fn spawn_corral(rt: &Runtime, duration: Duration) -> Result<f64> {
    on_worker(rt, async move {
        let start = Instant::now();
        let mut count = 0u64;
        while start.elapsed() < duration {
            let process = Command::new([TRUE]).spawn()?;
            let finished = process.wait().await;
            check(finished.is_success(), "corral-proc: /bin/true did not complete")?;
            count += 1;
        }
        Ok(count as f64 / start.elapsed().as_secs_f64())
    })
}

fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(what.into())
    }
}

// ---------------------------------------------------------------------------------------------------
// Output capture of `head -c N /dev/zero`
// ---------------------------------------------------------------------------------------------------

fn head_argv(bytes: u64) -> [String; 4] {
    ["head".into(), "-c".into(), bytes.to_string(), "/dev/zero".into()]
}

/// Baseline: std `Command`, stdout piped, read in 128 KiB chunks and thrown away, then waited for.
/// Returns the time from spawn to reaped.
fn capture_drain(bytes: u64) -> Result<Duration> {
    let [program, args @ ..] = head_argv(bytes);
    let start = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or("stdout not piped")?;
    let mut buf = vec![0u8; DRAIN_BUF];
    let mut total = 0u64;
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        }
    }
    drop(stdout);
    let status = child.wait()?;
    let elapsed = start.elapsed();
    check(status.success(), "drain: head failed")?;
    check(total == bytes, "drain: wrong byte count")?;
    Ok(elapsed)
}

/// corral-proc: default capture (1 MiB ring per stream), spawn + wait, verified.
/// Returns the time from spawn to `wait` returning.
async fn capture_corral(bytes: u64) -> Result<Duration> {
    let (elapsed, process) = spawn_capture(bytes).await?;
    verify_capture(&process, bytes)?;
    Ok(elapsed)
}

/// Spawns `head` with default capture and waits for it; returns the time taken and the process, whose
/// rings stay alive as long as it does.
async fn spawn_capture(bytes: u64) -> Result<(Duration, Process)> {
    let start = Instant::now();
    let process = Command::new(head_argv(bytes)).spawn()?;
    let finished = process.wait().await;
    let elapsed = start.elapsed();
    check(finished.is_success(), "corral-proc: head did not complete")?;
    Ok((elapsed, process))
}

/// Checks that every byte went through the ring and that the ring kept the newest ones. The snapshot
/// this takes is a copy of the ring: take it after measuring memory.
fn verify_capture(process: &Process, bytes: u64) -> Result<()> {
    let stdout = process.output(Stream::Stdout).ok_or("stdout not captured")?;
    if stdout.total != bytes {
        return Err(format!("corral-proc captured {} bytes, expected {bytes}", stdout.total).into());
    }
    let kept = bytes.min(DEFAULT_RING_SIZE as u64);
    check(
        stdout.bytes.len() as u64 == kept,
        "corral-proc: ring holds the wrong number of bytes",
    )?;
    check(
        stdout.bytes.iter().all(|b| *b == 0),
        "corral-proc: ring holds bytes head never wrote",
    )
}

fn gib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / GIB / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------------
// Peak RSS, in a fresh child process of this binary
// ---------------------------------------------------------------------------------------------------

/// Child modes, as passed after [`CHILD_ARG`].
const MODE_DRAIN: &str = "drain";
const MODE_CORRAL: &str = "corral";

/// The child side: does one capture and prints its own peak RSS, read from `/proc/self/status` at the
/// very end, while everything the capture used is still alive.
fn capture_child(args: &[String]) -> Result<()> {
    let [mode, bytes] = args else {
        return Err(format!("usage: {CHILD_ARG} <{MODE_DRAIN}|{MODE_CORRAL}> <bytes>").into());
    };
    let bytes: u64 = bytes.parse().map_err(|_| format!("bad byte count {bytes:?}"))?;
    let (elapsed, status) = match mode.as_str() {
        MODE_DRAIN => {
            let elapsed = capture_drain(bytes)?;
            (elapsed, std::fs::read_to_string("/proc/self/status")?)
        }
        MODE_CORRAL => {
            let rt = runtime()?;
            on_worker(&rt, async move {
                let (elapsed, process) = spawn_capture(bytes).await?;
                // Measure while the process handle (and so its rings) is alive, but before the
                // verification's snapshot, which is a copy of the ring made by this benchmark.
                let status = std::fs::read_to_string("/proc/self/status")?;
                verify_capture(&process, bytes)?;
                Ok((elapsed, status))
            })?
        }
        other => return Err(format!("unknown child mode {other:?}").into()),
    };
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/self/status").into())
    };
    println!(
        "vmhwm_kib={} vmrss_kib={} secs={:.6}",
        field("VmHWM")?,
        field("VmRSS")?,
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// What a capture child reported.
struct ChildReport {
    vmhwm_kib: u64,
    secs: f64,
}

/// Re-executes this binary as a capture child and reads its report.
fn run_child(mode: &str, bytes: u64) -> Result<ChildReport> {
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .args([CHILD_ARG, mode, &bytes.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("capture child ({mode}) failed: {}", output.status).into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let value = |key: &str| -> Result<&str> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("capture child ({mode}) printed no {key}: {text:?}").into())
    };
    Ok(ChildReport {
        vmhwm_kib: value("vmhwm_kib")?.parse()?,
        secs: value("secs")?.parse()?,
    })
}

// ---------------------------------------------------------------------------------------------------
// The raw spawn rate of the machine, from ../shared/bench/spawn-rate
// ---------------------------------------------------------------------------------------------------

/// Runs `sh ../shared/bench/spawn-rate 1 <secs>` from the repository root. `Err` says why it was skipped.
fn raw_spawn_rate(secs: f64) -> Result<(f64, String), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = "../shared/bench/spawn-rate";
    if !root.join(script).is_file() {
        return Err(format!("{script} not found next to the repository"));
    }
    let output = std::process::Command::new("sh")
        .args([script, "1", &format!("{secs}")])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run sh: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{script} failed ({}): {}", output.status, stderr.trim()));
    }
    let rate = stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| format!("{script} printed no rate: {stdout:?}"))?;
    Ok((rate, stdout))
}

// ---------------------------------------------------------------------------------------------------
// Statistics and report
// ---------------------------------------------------------------------------------------------------

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.is_empty() {
        f64::NAN
    } else if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(*v), hi.max(*v))
    })
}

/// Per-round ratios `num[i] / den[i]`: paired within a round, so drift between rounds cancels.
fn ratios(num: &[f64], den: &[f64]) -> Vec<f64> {
    num.iter().zip(den).map(|(n, d)| n / d).collect()
}

fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row(out: &mut String, name: &str, values: &[f64], decimals: usize) -> std::fmt::Result {
    let (lo, hi) = min_max(values);
    writeln!(
        out,
        "| {name} | **{:.decimals$}** | {lo:.decimals$} | {hi:.decimals$} | {} |",
        median(values),
        list(values, decimals)
    )
}

fn ratio_row(out: &mut String, name: &str, values: &[f64], target: Option<f64>) -> std::fmt::Result {
    let (lo, hi) = min_max(values);
    let verdict = match target {
        Some(t) if median(values) >= t => format!("≥ {t:.2}x: met"),
        Some(t) => format!("≥ {t:.2}x: **missed**"),
        None => "(reference)".to_owned(),
    };
    writeln!(
        out,
        "| {name} | **{:.2}x** | {lo:.2}x | {hi:.2}x | {verdict} |",
        median(values)
    )
}

fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.is_empty() {
        "?".to_owned()
    } else {
        fields.join(" ")
    }
}

fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    let duration = settings.duration();
    let bytes = settings.capture_bytes;
    let rt = runtime()?;
    let load_start = loadavg();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();

    eprintln!("raw spawn rate reference ...");
    let raw = raw_spawn_rate(settings.secs);

    // Warm-up: page cache, the dynamic loader's caches, the runtime's threads.
    eprintln!("warm-up ...");
    let warm = Duration::from_millis(200);
    spawn_bare_status(warm)?;
    spawn_bare_output(warm)?;
    spawn_corral(&rt, warm)?;
    let warm_bytes = bytes.min(64 << 20);
    capture_drain(warm_bytes)?;
    on_worker(&rt, capture_corral(warm_bytes))?;

    let rounds = settings.rounds;
    let (mut status_rates, mut output_rates, mut corral_rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut drain_speeds, mut corral_speeds) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate the order (A B C, then C B A) so slow drift of the machine hits every variant alike.
        let forward = round % 2 == 0;
        eprintln!(
            "round {}/{rounds} (spawn {}) ...",
            round + 1,
            if forward { "A B C" } else { "C B A" }
        );
        let mut spawn_order = ['A', 'B', 'C'];
        if !forward {
            spawn_order.reverse();
        }
        for variant in spawn_order {
            match variant {
                'A' => status_rates.push(spawn_bare_status(duration)?),
                'B' => output_rates.push(spawn_bare_output(duration)?),
                _ => corral_rates.push(spawn_corral(&rt, duration)?),
            }
        }
        let capture_order = if forward { [false, true] } else { [true, false] };
        for corral in capture_order {
            if corral {
                corral_speeds.push(gib_per_s(bytes, on_worker(&rt, capture_corral(bytes))?));
            } else {
                drain_speeds.push(gib_per_s(bytes, capture_drain(bytes)?));
            }
        }
    }

    eprintln!("peak RSS children ...");
    let rss_drain = run_child(MODE_DRAIN, bytes)?;
    let rss_corral = run_child(MODE_CORRAL, bytes)?;
    let rss_empty = run_child(MODE_CORRAL, 0)?;
    let load_end = loadavg();

    let spawn_vs_status = ratios(&corral_rates, &status_rates);
    let spawn_vs_output = ratios(&corral_rates, &output_rates);
    let output_vs_status = ratios(&output_rates, &status_rates);
    let capture_ratio = ratios(&corral_speeds, &drain_speeds);

    let mut out = String::new();
    writeln!(out, "# corral-proc benchmarks\n")?;
    writeln!(
        out,
        "- machine: {cpus} CPUs, Linux {}; load average {load_start} at start, {load_end} at end",
        kernel.trim()
    )?;
    writeln!(
        out,
        "- settings: {} s per spawn variant per round, {rounds} rounds (order alternates), capture of {bytes} bytes \
         ({:.2} GiB), ring {} KiB per stream, tokio multi-thread runtime with {WORKERS} workers",
        settings.secs,
        bytes as f64 / GIB,
        DEFAULT_RING_SIZE / 1024
    )?;
    writeln!(
        out,
        "- bold = median over rounds; ratios are per round (paired), then the median"
    )?;
    match &raw {
        Ok((_, line)) => {
            writeln!(
                out,
                "- raw posix_spawn + waitpid rate of this machine (C, `spawn-rate 1 {}`): {line}",
                settings.secs
            )?;
        }
        Err(why) => {
            writeln!(out, "- raw posix_spawn reference skipped: {why}")?;
        }
    }

    writeln!(out, "\n## Spawn + wait of `{TRUE}`, one at a time\n")?;
    writeln!(out, "| variant | spawns/s | min | max | rounds |")?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    row(&mut out, "A: bare std `status()`, stdio null", &status_rates, 0)?;
    row(
        &mut out,
        "B: bare std `output()`, stdout+stderr piped",
        &output_rates,
        0,
    )?;
    row(
        &mut out,
        "C: corral-proc `spawn()` + `wait()`, capture on",
        &corral_rates,
        0,
    )?;
    writeln!(out, "\n| ratio | median | min | max | target |")?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    ratio_row(
        &mut out,
        "C/A corral / bare status",
        &spawn_vs_status,
        Some(SPAWN_TARGET),
    )?;
    ratio_row(&mut out, "C/B corral / bare output", &spawn_vs_output, None)?;
    ratio_row(&mut out, "B/A cost of piping at all", &output_vs_status, None)?;
    if let Ok((raw_rate, _)) = &raw {
        let to_raw = |rates: &[f64]| rates.iter().map(|r| r / raw_rate).collect::<Vec<_>>();
        ratio_row(
            &mut out,
            "A/raw bare status / C posix_spawn",
            &to_raw(&status_rates),
            None,
        )?;
        ratio_row(&mut out, "C/raw corral / C posix_spawn", &to_raw(&corral_rates), None)?;
    }

    writeln!(out, "\n## Output capture of `head -c {bytes} /dev/zero`\n")?;
    writeln!(out, "| variant | GiB/s | min | max | rounds |")?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    row(
        &mut out,
        "a: bare std, stdout piped, drained (128 KiB reads)",
        &drain_speeds,
        2,
    )?;
    row(
        &mut out,
        "b: corral-proc, default capture (1 MiB ring)",
        &corral_speeds,
        2,
    )?;
    writeln!(out, "\n| ratio | median | min | max | target |")?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    ratio_row(
        &mut out,
        "b/a corral capture / drain",
        &capture_ratio,
        Some(CAPTURE_TARGET),
    )?;

    writeln!(
        out,
        "\n## Peak RSS (VmHWM of a fresh child process of the bench binary)\n"
    )?;
    writeln!(out, "| child process | peak RSS (MiB) | its own GiB/s |")?;
    writeln!(out, "|---|---:|---:|")?;
    let mib = |kib: u64| kib as f64 * 1024.0 / MIB;
    let child_speed = |r: &ChildReport| {
        if r.secs > 0.0 {
            format!("{:.2}", bytes as f64 / GIB / r.secs)
        } else {
            "-".to_owned()
        }
    };
    writeln!(
        out,
        "| drain baseline (a), {bytes} bytes | {:.1} | {} |",
        mib(rss_drain.vmhwm_kib),
        child_speed(&rss_drain)
    )?;
    writeln!(
        out,
        "| corral-proc capture (b), {bytes} bytes | **{:.1}** | {} |",
        mib(rss_corral.vmhwm_kib),
        child_speed(&rss_corral)
    )?;
    writeln!(
        out,
        "| corral-proc capture of 0 bytes (same code path, empty ring) | {:.1} | - |",
        mib(rss_empty.vmhwm_kib)
    )?;
    writeln!(
        out,
        "\nWhat {bytes} bytes add over 0 bytes: {:.1} MiB (ring size {:.1} MiB per stream)",
        mib(rss_corral.vmhwm_kib.saturating_sub(rss_empty.vmhwm_kib)),
        DEFAULT_RING_SIZE as f64 / MIB
    )?;

    writeln!(
        out,
        "\nspawn ratio (corral/bare status) = {:.2}x; capture ratio = {:.2}x; capture peak RSS = {:.1} MiB",
        median(&spawn_vs_status),
        median(&capture_ratio),
        mib(rss_corral.vmhwm_kib)
    )?;
    print!("{out}");
    Ok(())
}
