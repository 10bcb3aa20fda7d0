#!/usr/bin/env bash
# A/B of two ReadyGate binaries, nginx beside them, in alternating rounds, on the same echo
# backend. For each round and proxy: the rate and the proxy's CPU time per unit of work
# (utime+stime of its processes from /proc, over the run).
#   MODE=http (default): wrk against `GET /`; requests per second, CPU per request.
#   MODE=sessions: `ws-bench sessions` (loops of connect, upgrade, one echo, close); new sessions
#   per second, CPU per session. ReadyGate runs with its default gate (ping) and
#   READYGATE_BASE_DELAY_MS=0, so the rate is bounded by work, not by a timer.
#   MODE=messages: `ws-bench throughput` (CONNECTIONS sessions, INFLIGHT messages in flight each,
#   SIZE bytes); relayed messages per second, CPU per message.
#
#   Benchmarks/http-ab.sh BEFORE_BIN AFTER_BIN [rounds]
#   MODE=sessions Benchmarks/http-ab.sh BEFORE_BIN AFTER_BIN [rounds]
#   MODE=messages Benchmarks/http-ab.sh BEFORE_BIN AFTER_BIN [rounds]
#
# Environment: ECHO_BIN (the ws-echo backend, default Benchmarks/.build/release/ws-echo), BENCH_BIN
# (ws-bench, default beside it), THREADS (2), DURATION (4s), CONNECTIONS (50; 20 loops for sessions),
# INFLIGHT (8) and SIZE (64) for messages, LOG_LEVEL (ReadyGate's, default warning; `info` logs each
# session's summary, as in production; the log goes to a file in the work directory).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
before="$1"
after="$2"
rounds="${3:-3}"
ECHO_BIN="${ECHO_BIN:-$here/.build/release/ws-echo}"
THREADS="${THREADS:-2}"
DURATION="${DURATION:-4s}"
MODE="${MODE:-http}"
LOG_LEVEL="${LOG_LEVEL:-warning}"
INFLIGHT="${INFLIGHT:-8}"
SIZE="${SIZE:-64}"
BENCH_BIN="${BENCH_BIN:-$(dirname "$ECHO_BIN")/ws-bench}"
if [[ "$MODE" == sessions ]]; then CONNECTIONS="${CONNECTIONS:-20}"; else CONNECTIONS="${CONNECTIONS:-50}"; fi
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

# Loads whatever listens on PORT for DURATION; prints the rate and the CPU per unit of work.
measure() {
    local pid_list="$1"
    local start=0 end=0
    for pid in $pid_list; do start=$((start + $(ticks "$pid"))); done
    local out rate count errors unit
    if [[ "$MODE" == sessions ]]; then
        out=$("$BENCH_BIN" sessions --port "$PORT" --label ab --concurrency "$CONNECTIONS" \
            --duration "${DURATION%s}" 2>/dev/null)
        rate=$(jq -r .sessions_per_s <<<"$out")
        count=$(jq -r .sessions <<<"$out")
        errors="failed $(jq -r .failed <<<"$out")"
        unit=session
    elif [[ "$MODE" == messages ]]; then
        out=$("$BENCH_BIN" throughput --port "$PORT" --label ab --connections "$CONNECTIONS" \
            --inflight "$INFLIGHT" --size "$SIZE" --duration "${DURATION%s}" 2>/dev/null)
        rate=$(jq -r .msgs_per_s <<<"$out")
        count=$(jq -r .messages_total <<<"$out")
        errors=""
        unit=msg
    else
        out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$PORT/")
        rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        count=$(awk '/requests in/ {print $1}' <<<"$out")
        errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr '\n' ' ' || true)
        unit=req
    fi
    for pid in $pid_list; do end=$((end + $(ticks "$pid"))); done
    awk -v r="$rate" -v t=$((end - start)) -v n="$count" -v hz="$hz" -v e="$errors" -v u="$unit" \
        'BEGIN { printf "%8.0f %s/s %7.1f us/%s %s\n", r, u, t / hz * 1e6 / n, u, e }'
}

# A short unmeasured run first, so that the measured one starts warm.
warm_up() {
    if [[ "$MODE" == sessions ]]; then
        "$BENCH_BIN" sessions --port "$PORT" --label warm --concurrency "$CONNECTIONS" --duration 1 >/dev/null 2>&1
    elif [[ "$MODE" == messages ]]; then
        "$BENCH_BIN" throughput --port "$PORT" --label warm --connections "$CONNECTIONS" --inflight "$INFLIGHT" \
            --size "$SIZE" --duration 1 >/dev/null 2>&1
    else
        wrk -t2 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$PORT/" >/dev/null
    fi
}

run_readygate() {
    local bin="$1" label="$2"
    local delay=()
    [[ "$MODE" == sessions ]] && delay=(READYGATE_BASE_DELAY_MS=0 READYGATE_HANDSHAKE_TIMEOUT_MS=5000)
    env "${delay[@]}" READYGATE_LISTEN="127.0.0.1:$PORT" READYGATE_UPSTREAM="http://127.0.0.1:$ECHO_PORT" READYGATE_ENV=testing \
        READYGATE_THREADS="$THREADS" READYGATE_LOG_LEVEL="$LOG_LEVEL" READYGATE_ADMIN_LISTEN=off \
        "$bin" serve >"$WORK/$label.log" 2>&1 &
    local pid=$!
    wait_port
    warm_up
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
    warm_up
    printf "%-8s %s\n" "nginx" "$(measure "$(cat "$WORK/nginx.pid") $pids")"
    kill "$(cat "$WORK/nginx.pid")"
    sleep 0.5
}

echo "$MODE: $CONNECTIONS connections/loops, $DURATION per run, $THREADS proxy threads/workers, $rounds rounds"
for round in $(seq "$rounds"); do
    echo "-- round $round"
    run_readygate "$before" before
    run_readygate "$after" after
    run_nginx
done
