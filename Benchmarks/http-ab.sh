#!/usr/bin/env bash
# Plain-HTTP A/B: two ReadyGate binaries and nginx side by side, in alternating rounds, on the
# same echo backend. For each round and proxy: wrk's requests per second and the proxy's CPU time
# per request (utime+stime of its processes from /proc, over the wrk run).
#
#   Benchmarks/http-ab.sh BEFORE_BIN AFTER_BIN [rounds]
#
# Environment: ECHO_BIN (the ws-echo backend, default Benchmarks/.build/release/ws-echo),
# THREADS (2), DURATION (4s), CONNECTIONS (50).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
before="$1"
after="$2"
rounds="${3:-3}"
ECHO_BIN="${ECHO_BIN:-$here/.build/release/ws-echo}"
THREADS="${THREADS:-2}"
DURATION="${DURATION:-4s}"
CONNECTIONS="${CONNECTIONS:-50}"
WORK="$(mktemp -d)"
NOFILE=4096
ECHO_PORT=19580
PORT=19581
# shellcheck source=Benchmarks/proxy-configs.sh
source "$here/proxy-configs.sh"
write_configs
mkdir -p "$WORK/nginx-body" "$WORK/nginx-proxy"
sed -i "s/PORT;/$PORT;/" "$WORK/nginx.conf"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f "$WORK/nginx.pid" ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
"$ECHO_BIN" --port "$ECHO_PORT" --threads "$THREADS" >"$WORK/echo.log" 2>&1 &
pids+=($!)
sleep 0.5

# CPU ticks (utime+stime) of a process and its children threads.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

wait_port() {
    for _ in $(seq 100); do
        if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# Runs wrk against whatever listens on PORT; prints "req/s us_per_request".
measure() {
    local pid_list="$1"
    local start=0 end=0
    for pid in $pid_list; do start=$((start + $(ticks "$pid"))); done
    local out
    out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$PORT/")
    for pid in $pid_list; do end=$((end + $(ticks "$pid"))); done
    local rps requests
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    local errors
    errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr '\n' ' ' || true)
    awk -v r="$rps" -v t=$((end - start)) -v n="$requests" -v hz="$hz" -v e="$errors" \
        'BEGIN { printf "%8.0f req/s %7.1f us/req %s\n", r, t / hz * 1e6 / n, e }'
}

run_readygate() {
    local bin="$1" label="$2"
    READYGATE_LISTEN="127.0.0.1:$PORT" READYGATE_UPSTREAM="http://127.0.0.1:$ECHO_PORT" READYGATE_ENV=testing \
        READYGATE_THREADS="$THREADS" READYGATE_LOG_LEVEL=warning READYGATE_ADMIN_LISTEN=off \
        "$bin" serve >"$WORK/$label.log" 2>&1 &
    local pid=$!
    wait_port
    wrk -t2 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$PORT/" >/dev/null
    printf "%-8s %s\n" "$label" "$(measure "$pid")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

run_nginx() {
    nginx -c "$WORK/nginx.conf" -g "daemon on;" 2>/dev/null
    wait_port
    sleep 0.2
    local pids
    pids=$(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')
    wrk -t2 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$PORT/" >/dev/null
    printf "%-8s %s\n" "nginx" "$(measure "$(cat "$WORK/nginx.pid") $pids")"
    kill "$(cat "$WORK/nginx.pid")"
    sleep 0.5
}

echo "wrk -t2 -c$CONNECTIONS -d$DURATION, $THREADS proxy threads/workers, $rounds rounds"
for round in $(seq "$rounds"); do
    echo "-- round $round"
    run_readygate "$before" before
    run_readygate "$after" after
    run_nginx
done
