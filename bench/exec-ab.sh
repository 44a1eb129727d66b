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
TMP=$(mktemp -d)
trap 'kill $(cat "$TMP"/*/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$TMP"' EXIT

cat > "$TMP/load.py" <<'PY'
import http.client, os, socket, sys, time
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("corral")
        self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path_)
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

start() { # start NAME BINARY EXTRA_CONFIG -> a daemon in $TMP/NAME
    local dir=$TMP/$1
    rm -rf "$dir" && mkdir -p "$dir/etc/tools.d"
    printf 'tools_dir = "tools.d"\njob_ttl = "1h"\n\n[tasks]\nkeep = 1000000000\nretention = "1000h"\n%s\n' "$3" > "$dir/etc/corral.toml"
    printf 'name = "bench"\n\n[[command]]\nname = "true"\nexec = ["/bin/true"]\ntimeout = "10s"\n' > "$dir/etc/tools.d/bench.toml"
    "$2" daemon --config "$dir/etc/corral.toml" --state-dir "$dir/state" > "$dir/log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 200); do
        curl -sf --unix-socket "$dir/state/corral.sock" http://corral/ready > /dev/null && return 0
        sleep 0.05
    done
    echo "daemon $1 did not get ready; its log:" >&2; tail "$dir/log" >&2; exit 1
}
# CPU time (clock ticks) of the daemon and of its keeper: utime + stime from /proc/<pid>/stat.
ticks() { if [[ $1 == 0 ]]; then echo 0; else awk '{print $14 + $15}' "/proc/$1/stat"; fi; }
# The keeper holds its state dir's keeper.sock.lock open.
keeper_of() {
    local p
    for p in $(pgrep -f ' keeper$'); do
        if [[ $(readlink "/proc/$p/fd/3" 2>/dev/null) == "$TMP/$1/state/keeper.sock.lock" ]]; then echo "$p"; return; fi
    done
    echo 0 # none: keeper off, or a build from before the keeper
}
stop() { kill "$(cat "$TMP/$1/pid")"; wait "$(cat "$TMP/$1/pid")" 2>/dev/null || true; }

TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))
echo "| round | build | clients | jobs/s | daemon CPU µs/job | keeper CPU µs/job |"
echo "|---:|---|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then order="old new"; else order="new old"; fi
    for name in $order; do
        binary=$OLD config=${OLD_CONFIG:-}; [[ $name == new ]] && binary=$NEW config=${NEW_CONFIG:-}
        start "$name" "$binary" "$config"
        daemon=$(cat "$TMP/$name/pid"); keeper=$(keeper_of "$name")
        for clients in 1 8; do
            d0=$(ticks "$daemon"); k0=$(ticks "$keeper")
            jobs=$(python3 "$TMP/load.py" "$TMP/$name/state/corral.sock" "$SECS" "$clients")
            d1=$(ticks "$daemon"); k1=$(ticks "$keeper")
            echo "| $round | $name | $clients | $(( jobs / SECS )) | $(( (d1 - d0) * TICK_US / jobs )) | $(( (k1 - k0) * TICK_US / jobs )) |"
        done
        stop "$name"
    done
done

echo
echo "| build | syscalls per job (strace -f -c of the daemon, 1 client, 4 s) |"
echo "|---|---|"
for name in old new; do
    binary=$OLD config=${OLD_CONFIG:-}; [[ $name == new ]] && binary=$NEW config=${NEW_CONFIG:-}
    start "$name" "$binary" "$config"
    python3 "$TMP/load.py" "$TMP/$name/state/corral.sock" 1 1 > /dev/null
    timeout 5 strace -f -c -p "$(cat "$TMP/$name/pid")" -o "$TMP/$name/strace" 2>/dev/null &
    tracer=$!
    sleep 0.5
    jobs=$(python3 "$TMP/load.py" "$TMP/$name/state/corral.sock" 4 1)
    wait "$tracer" || true
    stop "$name"
    echo "| $name | $(awk -v n="$jobs" '$1 ~ /^[0-9.]+$/ && NF >= 5 {printf "%s %.1f, ", $NF, $4 / n}' "$TMP/$name/strace") |"
done
