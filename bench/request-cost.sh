#!/usr/bin/env bash
# What one request costs the daemon, by kind: a bare HTTP round trip, an exec job, an exec job without keeper.
#
#   bench/request-cost.sh [CORRAL_BINARY]          # default target/release/corral; SECS=5 per variant
#
# Each variant runs a fresh `corral daemon` on a fresh temporary state dir with one tool (`bench/true`, which runs
# /bin/true) and a Python client (stdlib only) in a closed loop over the Unix socket, one keep-alive connection.
# Prints requests per second and the CPU per request of the daemon and of its keeper (utime + stime from
# /proc/<pid>/stat). Needs python3 and curl. Compare variants of one run only: this VM's speed drifts.
set -euo pipefail

BIN=${1:-target/release/corral}
SECS=${SECS:-5}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

cat > "$TMP/load.py" <<'PY'
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unixhttp import Unix
path, secs, method, url = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
conn, n, start = Unix(path), 0, time.time()
while time.time() - start < secs:
    body = b"{}" if method == "POST" else None
    conn.request(method, url, body=body, headers={"content-type": "application/json"})
    response = conn.getresponse()
    answer = response.read()
    if response.status >= 300:
        sys.exit(f"{method} {url}: {response.status} {answer[:200]!r}")
    n += 1
print(n)
PY

variant() { # variant NAME LABEL EXTRA_CONFIG METHOD URL
    local name=$1 label=$2 config=$3 method=$4 url=$5
    local socket=$TMP/$name/state/corral.sock daemon keeper d0 k0 n d1 k1
    start_daemon "$name" "$BIN" "$config"
    daemon=$(cat "$TMP/$name/pid"); keeper=$(keeper_of "$name")
    python3 "$TMP/load.py" "$socket" 1 "$method" "$url" > /dev/null # warm-up
    d0=$(ticks "$daemon"); k0=$(ticks "$keeper")
    n=$(python3 "$TMP/load.py" "$socket" "$SECS" "$method" "$url")
    d1=$(ticks "$daemon"); k1=$(ticks "$keeper")
    echo "| $label | $(( n / SECS )) | $(( (d1 - d0) * TICK_US / n )) | $(( (k1 - k0) * TICK_US / n )) |"
    stop_daemon "$name"
}

echo "| request | per second | daemon CPU µs/request | keeper CPU µs/request |"
echo "|---|---:|---:|---:|"
variant health "GET /health" "" GET /health
variant exec "exec job (POST ...?wait=30s)" "" POST "/exec/bench/true?wait=30s"
variant nokeeper "exec job, keeper = false" "[processes]\nkeeper = false" POST "/exec/bench/true?wait=30s"
