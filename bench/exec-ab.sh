#!/usr/bin/env bash
# Paired A/B of two corral builds on exec jobs: throughput and the daemon's syscalls per job.
#
#   bench/exec-ab.sh OLD_CORRAL NEW_CORRAL          # 2 rounds x 6 s, 1 and 8 clients, then strace of each
#   ROUNDS=3 SECS=5 bench/exec-ab.sh a/corral b/corral
#
# Each variant runs a fresh `corral daemon` on a fresh temporary state dir with one tool (`bench/true`, which
# runs /bin/true), and a Python client (stdlib only) that runs `POST /exec/bench/true?wait=30s` in a closed
# loop over the Unix socket, one keep-alive connection per client process. The builds alternate within each
# round: on a shared 2-CPU VM whose speed drifts between runs, only paired numbers compare. Then, per build,
# `strace -f -c` of the daemon over 4 s of one client gives syscalls per job. Needs python3, curl, strace.
# `OLD_CONFIG` / `NEW_CONFIG`: lines appended to that build's config file (e.g. a `[processes]` table with
# `keeper = false`, to compare with a build from before the keeper).
set -euo pipefail

OLD=${1:?usage: bench/exec-ab.sh OLD_CORRAL NEW_CORRAL}
NEW=${2:?usage: bench/exec-ab.sh OLD_CORRAL NEW_CORRAL}
ROUNDS=${ROUNDS:-2}
SECS=${SECS:-6}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

cat > "$TMP/load.py" <<'PY'
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unixhttp import Unix
def run(path, secs):
    conn, n, start = Unix(path), 0, time.time()
    while time.time() - start < secs:
        conn.request("POST", "/exec/bench/true?wait=30s", body=b"{}", headers={"content-type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            sys.exit(f"job failed: {response.status} {body[:200]!r}")
        n += 1
    return n
path, secs, clients = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
pipes = []
for _ in range(clients):
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        os.write(w, str(run(path, secs)).encode())
        os._exit(0)
    os.close(w)
    pipes.append(r)
total = sum(int(os.read(r, 64) or b"0") for r in pipes)
print(total)
PY

echo "| round | build | clients | jobs/s | daemon CPU µs/job | keeper CPU µs/job |"
echo "|---:|---|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then order="old new"; else order="new old"; fi
    for name in $order; do
        binary=$OLD config=${OLD_CONFIG:-}; [[ $name == new ]] && binary=$NEW config=${NEW_CONFIG:-}
        start_daemon "$name" "$binary" "$config"
        daemon=$(cat "$TMP/$name/pid"); keeper=$(keeper_of "$name")
        for clients in 1 8; do
            d0=$(ticks "$daemon"); k0=$(ticks "$keeper")
            jobs=$(python3 "$TMP/load.py" "$TMP/$name/state/corral.sock" "$SECS" "$clients")
            d1=$(ticks "$daemon"); k1=$(ticks "$keeper")
            echo "| $round | $name | $clients | $(( jobs / SECS )) | $(( (d1 - d0) * TICK_US / jobs )) | $(( (k1 - k0) * TICK_US / jobs )) |"
        done
        stop_daemon "$name"
    done
done

echo
echo "| build | syscalls per job (strace -f -c of the daemon, 1 client, 4 s) |"
echo "|---|---|"
for name in old new; do
    binary=$OLD config=${OLD_CONFIG:-}; [[ $name == new ]] && binary=$NEW config=${NEW_CONFIG:-}
    start_daemon "$name" "$binary" "$config"
    python3 "$TMP/load.py" "$TMP/$name/state/corral.sock" 1 1 > /dev/null
    timeout 5 strace -f -c -p "$(cat "$TMP/$name/pid")" -o "$TMP/$name/strace" 2>/dev/null &
    tracer=$!
    sleep 0.5
    jobs=$(python3 "$TMP/load.py" "$TMP/$name/state/corral.sock" 4 1)
    wait "$tracer" || true
    stop_daemon "$name"
    echo "| $name | $(awk -v n="$jobs" '$1 ~ /^[0-9.]+$/ && NF >= 5 {printf "%s %.1f, ", $NF, $4 / n}' "$TMP/$name/strace") |"
done
