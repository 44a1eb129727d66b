# Shared by bench/exec-ab.sh and bench/request-cost.sh (sourced, not run): a temporary directory, a stdlib-only
# Python HTTP client over a Unix socket, daemons with the one-tool exec setup, and CPU time from /proc.
# shellcheck shell=bash

TMP=$(mktemp -d)
trap 'kill $(cat "$TMP"/*/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$TMP"' EXIT
TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))

# $TMP/unixhttp.py: `Unix(path)`, an http.client connection over a Unix socket (keep-alive).
cat > "$TMP/unixhttp.py" <<'PY'
import http.client, socket
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("corral")
        self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path_)
PY

# start_daemon NAME BINARY EXTRA_CONFIG: a daemon in $TMP/NAME with one tool, `bench/true` (/bin/true), and
# retention raised so that nothing is deleted during a run; its pid in $TMP/NAME/pid. Returns once it is ready.
start_daemon() {
    local dir=$TMP/$1
    rm -rf "$dir" && mkdir -p "$dir/etc/tools.d"
    printf 'tools_dir = "tools.d"\njob_ttl = "1h"\n\n[tasks]\nkeep = 1000000000\nretention = "1000h"\n%b\n' "$3" > "$dir/etc/corral.toml"
    printf 'name = "bench"\n\n[[command]]\nname = "true"\nexec = ["/bin/true"]\ntimeout = "10s"\n' > "$dir/etc/tools.d/bench.toml"
    "$2" daemon --config "$dir/etc/corral.toml" --state-dir "$dir/state" > "$dir/log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 200); do
        curl -sf --unix-socket "$dir/state/corral.sock" http://corral/ready > /dev/null && return 0
        sleep 0.05
    done
    echo "daemon $1 did not get ready; its log:" >&2; tail "$dir/log" >&2; exit 1
}

stop_daemon() { kill "$(cat "$TMP/$1/pid")"; wait "$(cat "$TMP/$1/pid")" 2>/dev/null || true; }

# CPU time (clock ticks) of a process: utime + stime from /proc/<pid>/stat; 0 for pid 0.
ticks() { if [[ $1 == 0 ]]; then echo 0; else awk '{print $14 + $15}' "/proc/$1/stat"; fi; }

# keeper_of NAME: the pid of the keeper of $TMP/NAME's daemon (it holds keeper.sock.lock open), or 0 when there
# is none (keeper off, or a build from before the keeper).
keeper_of() {
    local p
    for p in $(pgrep -f ' keeper$'); do
        if [[ $(readlink "/proc/$p/fd/3" 2>/dev/null) == "$TMP/$1/state/keeper.sock.lock" ]]; then echo "$p"; return; fi
    done
    echo 0
}
