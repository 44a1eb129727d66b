#!/usr/bin/env bash
# Durable task submits through the CLI in a shell loop: `corral task submit` next to `pueue add`, in one run.
#
#   bench/task-submit.sh                      # N=500 submits per loop, 16 parallel loops, 3 rounds
#   N=100 ROUNDS=1 bench/task-submit.sh       # quick check
#
# Environment:
#   N        submits per measurement (default 500); the parallel variant splits them over P loops
#   P        parallel shell loops (default 16)
#   ROUNDS   rounds; the order of the systems alternates from round to round (default 3)
#   CORRAL   the corral binary (default: target/release/corral, built first unless SKIP_BUILD=1)
#   PUEUE, PUEUED   the pueue binaries (default: from PATH; install with `cargo install pueue --locked`)
#
# Every measurement starts a fresh daemon of the system under test on a fresh temporary directory, isolated
# from the user's setup, and stops it afterwards:
#   - corral: `corral daemon --config <tmp>/corral.toml --state-dir <tmp>/state`. It runs every task
#     (`true`) as soon as it is submitted; that is part of what the loop measures.
#   - pueue: `pueued -c <tmp>/pueue.yml`, with the default group paused (`pueue pause`) before the loop, so
#     `pueue add` only queues (and persists) the task and nothing runs.
# After each loop the script checks that the daemon holds exactly N tasks (corral: `GET /metrics` once its
# tasks have ended; pueue: `pueue status --json`), and fails otherwise.
# Results go to stdout as Markdown; progress to stderr. Needs bash, curl, jq, awk, seq.
set -euo pipefail

N=${N:-500}
P=${P:-16}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORRAL=${CORRAL:-$ROOT/target/release/corral}

say() { echo "$*" >&2; }
die() {
    say "task-submit: $*"
    exit 1
}

for tool in curl jq awk seq; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
case "$N$P$ROUNDS" in *[!0-9]*) die "N, P and ROUNDS must be whole numbers" ;; esac
[ "$N" -ge "$P" ] && [ "$P" -ge 1 ] && [ "$ROUNDS" -ge 1 ] || die "need N >= P >= 1 and ROUNDS >= 1"

if [ "${SKIP_BUILD:-0}" != 1 ] && [ "$CORRAL" = "$ROOT/target/release/corral" ]; then
    say "building corral (cargo build --release -p corral) ..."
    (cd "$ROOT" && cargo build --release -p corral >&2)
fi
[ -x "$CORRAL" ] || die "no corral binary at $CORRAL"
PUEUE=${PUEUE:-$(command -v pueue || true)}
PUEUED=${PUEUED:-$(command -v pueued || true)}
[ -n "$PUEUE" ] && [ -n "$PUEUED" ] || die "pueue and pueued not found; install with: cargo install pueue --locked"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/corral-task-submit.XXXXXX")
# Isolation from the user's setup, for both systems and their CLIs.
export XDG_CONFIG_HOME=$TMP/xdg-config XDG_STATE_HOME=$TMP/xdg-state XDG_DATA_HOME=$TMP/xdg-data
export XDG_RUNTIME_DIR=$TMP/xdg-run CORRAL_REGISTRY_DIR=$TMP/registry
unset CORRAL_CONFIG CORRAL_STATE_DIR CORRAL_SOCKET NOTIFY_SOCKET CORRAL_LOG RUST_LOG PUEUE_CONFIG_PATH
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

DAEMON_PID=
STOP_DAEMON=
cleanup() {
    if [ -n "$DAEMON_PID" ]; then
        $STOP_DAEMON || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# Waits up to 30 s for "$@" to succeed.
wait_for() {
    local i
    for i in $(seq 600); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        kill -0 "$DAEMON_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
# Waits for the daemon process we started to exit (SIGKILL after 30 s).
reap() {
    local i
    for i in $(seq 600); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$DAEMON_PID" 2>/dev/null && kill -KILL "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
}

# --- corral ---------------------------------------------------------------------------------------------
start_corral() {
    DIR=$1
    mkdir -p "$DIR"
    # Keep every finished task, so that the rows can be counted.
    printf '[tasks]\nkeep = 1000000000\nretention = "1000h"\n' >"$DIR/corral.toml"
    SOCK=$DIR/state/corral.sock
    "$CORRAL" daemon --config "$DIR/corral.toml" --state-dir "$DIR/state" </dev/null >"$DIR/daemon.log" 2>&1 &
    DAEMON_PID=$!
    STOP_DAEMON=stop_corral
    wait_for curl -sf --unix-socket "$SOCK" http://corral/ready || die "corral daemon not ready: $(tail -5 "$DIR/daemon.log")"
}
stop_corral() {
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    reap
}
corral_metric() { # queued|running|all
    curl -sf --unix-socket "$SOCK" http://corral/metrics |
        awk -v want="$1" '/^corral_tasks\{/ { if (want == "all" || index($0, "status=\"" want "\"")) s += $NF } END { print s + 0 }'
}
corral_drain() {
    local i
    for i in $(seq 2400); do
        [ "$(($(corral_metric queued) + $(corral_metric running)))" -eq 0 ] && return 0
        sleep 0.05
    done
    die "corral tasks still queued or running 120 s after the loop"
}
corral_submits() {
    local i
    for i in $(seq "$1"); do
        "$CORRAL" --socket "$SOCK" task submit process --params '{"command":["true"]}' >/dev/null
    done
}
corral_check() {
    local drain_start rows
    drain_start=$(now)
    corral_drain
    DRAIN=$(awk -v a="$drain_start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    rows=$(corral_metric all)
    [ "$rows" -eq "$N" ] || die "corral holds $rows tasks after $N submits"
    CHECK="$rows tasks, $(corral_metric completed) completed; tasks ended ${DRAIN} s after the loop"
}

# --- pueue ----------------------------------------------------------------------------------------------
start_pueue() {
    DIR=$1
    mkdir -p "$DIR/data" "$DIR/run"
    PCFG=$DIR/pueue.yml
    cat >"$PCFG" <<EOF
shared:
  pueue_directory: $DIR/data
  runtime_directory: $DIR/run
  use_unix_socket: true
  unix_socket_path: $DIR/run/pueue.sock
  pid_path: $DIR/run/pueue.pid
  shared_secret_path: $DIR/data/secret
  alias_file: $DIR/data/pueue_aliases.yml
EOF
    "$PUEUED" -c "$PCFG" </dev/null >"$DIR/daemon.log" 2>&1 &
    DAEMON_PID=$!
    STOP_DAEMON=stop_pueue
    wait_for "$PUEUE" -c "$PCFG" status || die "pueued not ready: $(tail -5 "$DIR/daemon.log")"
    # Paused: `pueue add` only queues and persists; nothing runs.
    "$PUEUE" -c "$PCFG" pause >/dev/null
    [ "$("$PUEUE" -c "$PCFG" status --json | jq -r '.groups.default.status')" = Paused ] || die "pueue default group not paused"
}
stop_pueue() {
    "$PUEUE" -c "$PCFG" shutdown >/dev/null 2>&1 || kill -TERM "$DAEMON_PID" 2>/dev/null || true
    reap
}
pueue_submits() {
    local i
    for i in $(seq "$1"); do
        "$PUEUE" -c "$PCFG" add -- true >/dev/null
    done
}
pueue_check() {
    local tasks queued size
    tasks=$("$PUEUE" -c "$PCFG" status --json | jq '.tasks | length')
    queued=$("$PUEUE" -c "$PCFG" status --json | jq '[.tasks[] | select(.status | has("Queued"))] | length')
    [ "$tasks" -eq "$N" ] || die "pueue holds $tasks tasks after $N adds"
    size=$(wc -c <"$DIR/data/state.json")
    CHECK="$tasks tasks, $queued queued; state.json $((size / 1024)) KiB (rewritten whole on every add)"
}

# --- one measurement -------------------------------------------------------------------------------------
# measure SYSTEM MODE ROUND: fresh daemon, N submits (MODE seq: one loop; par: P loops), check, stop.
# Sets RATE.
measure() {
    local system=$1 mode=$2 round=$3 start end pids pid j share failed=0
    "start_$system" "$TMP/r$round-$mode-$system"
    start=$(now)
    if [ "$mode" = seq ]; then
        "${system}_submits" "$N"
    else
        pids=
        for j in $(seq "$P"); do
            share=$((N / P + (j <= N % P ? 1 : 0)))
            "${system}_submits" "$share" &
            pids="$pids $!"
        done
        for pid in $pids; do
            wait "$pid" || failed=1
        done
        [ "$failed" -eq 0 ] || die "a $system submit loop failed"
    fi
    end=$(now)
    RATE=$(awk -v n="$N" -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", n / (b - a) }')
    "${system}_check"
    say "  round $round, $system, $mode: $RATE/s ($CHECK)"
    CHECKS+=("| $round | $system | $mode | $CHECK |")
    "stop_$system"
}

# CLI start-up alone: N runs of `--version`, one at a time (no daemon involved).
startup_rate() {
    local start i
    start=$(now)
    for i in $(seq "$N"); do "$@" >/dev/null; done
    awk -v n="$N" -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", n / (b - a) }'
}

commas() { sed 's/^ *//; s/ *$//; s/  */, /g'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A RATES RATIOS
CHECKS=()
STARTUP_CORRAL=
STARTUP_PUEUE=
say "N=$N P=$P ROUNDS=$ROUNDS; corral: $CORRAL; pueue: $PUEUE ($("$PUEUE" --version))"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="corral pueue"; else order="pueue corral"; fi
    say "round $round/$ROUNDS ($order) ..."
    for mode in seq par; do
        for system in $order; do
            measure "$system" "$mode" "$round"
            RATES[$system-$mode]="${RATES[$system-$mode]:-} $RATE"
            eval "last_$system=\$RATE"
        done
        # shellcheck disable=SC2154  # set by eval above
        RATIOS[$mode]="${RATIOS[$mode]:-} $(awk -v c="$last_corral" -v p="$last_pueue" 'BEGIN { printf "%.2f", c / p }')"
    done
    for system in $order; do
        if [ "$system" = corral ]; then
            STARTUP_CORRAL="$STARTUP_CORRAL $(startup_rate "$CORRAL" --version)"
        else
            STARTUP_PUEUE="$STARTUP_PUEUE $(startup_rate "$PUEUE" --version)"
        fi
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

echo "# Task submits through the CLI: corral vs pueue"
echo
echo "- machine: $(nproc) CPUs, Linux $(uname -r); load average $LOAD_START at start, $LOAD_END at end"
echo "- N=$N submits per measurement, P=$P parallel loops for \"par\", $ROUNDS rounds (order alternates); a fresh daemon per measurement"
echo "- corral: \`$CORRAL --socket S task submit process --params '{\"command\":[\"true\"]}'\`; the daemon commits each task (201) and runs \`true\` at once"
echo "- pueue $("$PUEUE" --version | awk '{ print $2 }'): \`pueue -c CFG add -- true\`, default group paused: queued and persisted, never run"
echo
echo "| loop | corral submits/s (median) | pueue adds/s (median) | corral / pueue (median of per-round ratios) | corral per round | pueue per round | ratio per round |"
echo "|---|---:|---:|---:|---|---|---|"
for mode in seq par; do
    if [ "$mode" = seq ]; then name="1 loop"; else name="$P parallel loops"; fi
    echo "| $name | **$(echo "${RATES[corral-$mode]}" | median)** | **$(echo "${RATES[pueue-$mode]}" | median)** | **$(echo "${RATIOS[$mode]}" | median)x** | $(echo "${RATES[corral-$mode]}" | commas) | $(echo "${RATES[pueue-$mode]}" | commas) | $(echo "${RATIOS[$mode]}" | commas) |"
done
echo "| CLI start-up only (\`--version\`, 1 loop) | $(echo "$STARTUP_CORRAL" | median) | $(echo "$STARTUP_PUEUE" | median) | $(awk -v c="$(echo "$STARTUP_CORRAL" | median)" -v p="$(echo "$STARTUP_PUEUE" | median)" 'BEGIN { printf "%.2fx", c / p }') | $(echo "$STARTUP_CORRAL" | commas) | $(echo "$STARTUP_PUEUE" | commas) | |"
echo
echo "| round | system | loop | check after the loop |"
echo "|---|---|---|---|"
printf '%s\n' "${CHECKS[@]}"
echo
echo "corral CLI / pueue add: 1 loop $(echo "${RATIOS[seq]}" | median)x, $P loops $(echo "${RATIOS[par]}" | median)x; load average $LOAD_START -> $LOAD_END"
