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
TMP=$(mktemp -d)
trap 'kill $(cat "$TMP"/*/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$TMP"' EXIT

cat > "$TMP/load.py" <<'PY'
import http.client, socket, sys, time
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("corral")
        self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path_)
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

ticks() { if [[ $1 == 0 ]]; then echo 0; else awk '{print $14 + $15}' "/proc/$1/stat"; fi; }
keeper_of() { # the keeper holds its state dir's keeper.sock.lock open
    local p
    for p in $(pgrep -f ' keeper$'); do
        if [[ $(readlink "/proc/$p/fd/3" 2>/dev/null) == "$1/state/keeper.sock.lock" ]]; then echo "$p"; return; fi
    done
    echo 0
}
TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))

variant() { # variant NAME EXTRA_CONFIG METHOD URL
    local dir=$TMP/$1
    mkdir -p "$dir/etc/tools.d"
    printf 'tools_dir = "tools.d"\njob_ttl = "1h"\n\n[tasks]\nkeep = 1000000000\nretention = "1000h"\n%b\n' "$2" > "$dir/etc/corral.toml"
    printf 'name = "bench"\n\n[[command]]\nname = "true"\nexec = ["/bin/true"]\ntimeout = "10s"\n' > "$dir/etc/tools.d/bench.toml"
    "$BIN" daemon --config "$dir/etc/corral.toml" --state-dir "$dir/state" > "$dir/log" 2>&1 &
    local daemon=$!
    echo "$daemon" > "$dir/pid"
    for _ in $(seq 200); do
        curl -sf --unix-socket "$dir/state/corral.sock" http://corral/ready > /dev/null && break
        sleep 0.05
    done
    python3 "$TMP/load.py" "$dir/state/corral.sock" 1 "$3" "$4" > /dev/null # warm-up
    local keeper d0 k0 n d1 k1
    keeper=$(keeper_of "$dir"); d0=$(ticks "$daemon"); k0=$(ticks "$keeper")
    n=$(python3 "$TMP/load.py" "$dir/state/corral.sock" "$SECS" "$3" "$4")
    d1=$(ticks "$daemon"); k1=$(ticks "$keeper")
    echo "| $1 | $(( n / SECS )) | $(( (d1 - d0) * TICK_US / n )) | $(( (k1 - k0) * TICK_US / n )) |"
    kill "$daemon"; wait "$daemon" 2>/dev/null || true
}

echo "| request | per second | daemon CPU µs/request | keeper CPU µs/request |"
echo "|---|---:|---:|---:|"
variant "GET /health" "" GET /health
variant "exec job (POST ...?wait=30s)" "" POST "/exec/bench/true?wait=30s"
variant "exec job, keeper = false" "[processes]\nkeeper = false" POST "/exec/bench/true?wait=30s"
