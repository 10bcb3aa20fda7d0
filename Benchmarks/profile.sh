#!/usr/bin/env bash
# Where the proxies spend their time in the closed-loop throughput run: syscalls and context
# switches per message (perf tracepoints; this VM has no hardware counters), and a perf profile of
# ReadyGate. Needs the builds of run.sh (run it first) and `perf` (Debian: linux-perf).
#   Benchmarks/profile.sh            # writes Benchmarks/results/profile-*.txt
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
TOOLS="$HERE/.build/release"
RG_BIN="$ROOT/.build-bench/release/readygate"
THREADS="${THREADS:-2}"
SECS="${SECS:-5}"
OUTDIR="$HERE/results"
mkdir -p "$OUTDIR"
WORK="$(mktemp -d /tmp/readygate-prof.XXXXXX)"
PIDS=()
trap 'for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done' EXIT INT TERM
ulimit -n "$(ulimit -Hn)"

wait_port() { until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do sleep 0.05; done; }

"$TOOLS/ws-echo" --port 10201 --threads "$THREADS" --lifetime 600 >/dev/null &
PIDS+=($!)
wait_port 10201

# The same nginx and HAProxy setup as run.sh.
ECHO_PORT=10201
NOFILE="$(ulimit -n)"
source "$HERE/proxy-configs.sh"
write_configs
sed -i "s/PORT/10202/" "$WORK/nginx.conf"
sed -i "s/PORT/10203/" "$WORK/haproxy.cfg"

EVENTS="raw_syscalls:sys_enter,context-switches,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_readv,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl"
SUMMARY="$OUTDIR/profile-syscalls.txt"
: >"$SUMMARY"
for target in nginx haproxy readygate; do
    case $target in
    nginx) nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" -g 'daemon off;' & port=10202 ;;
    haproxy) haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & port=10203 ;;
    readygate)
        READYGATE_LISTEN=127.0.0.1:10204 READYGATE_UPSTREAM=http://127.0.0.1:10201 READYGATE_ENV=testing \
            READYGATE_THREADS="$THREADS" READYGATE_LOG_LEVEL=warning READYGATE_ADMIN_LISTEN=off "$RG_BIN" serve >/dev/null 2>&1 &
        port=10204 ;;
    esac
    pid=$!
    PIDS+=("$pid")
    wait_port "$port"
    pids="$(echo "$pid" $(pgrep -P "$pid" || true) | tr ' ' ',')"
    "$TOOLS/ws-bench" throughput --port "$port" --duration $((SECS + 2)) --warmup 0.5 --label "$target" >"$WORK/tp-$target.json" 2>/dev/null &
    bp=$!
    sleep 1
    perf stat -e "$EVENTS" -p "$pids" -x, -o "$WORK/stat-$target.csv" -- sleep "$SECS"
    if [[ $target == readygate ]]; then
        perf record -e cpu-clock -F 1999 -g -p "$pid" -o "$WORK/rg.perf.data" -- sleep 3 >/dev/null 2>&1 || true
    fi
    wait "$bp"
    rate="$(jq -r .msgs_per_s "$WORK/tp-$target.json")"
    msgs="$(python3 -c "print(int(float('$rate') * $SECS))")"
    {
        echo "## $target: $rate msg/s; per echoed message over ${SECS}s (~$msgs messages):"
        awk -F, -v m="$msgs" '$1 ~ /^[0-9]/ && $1 > 0 { printf "  %-34s %10.3f\n", $3, $1 / m }' "$WORK/stat-$target.csv"
    } >>"$SUMMARY"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
cat "$SUMMARY"
perf report -i "$WORK/rg.perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -8 >"$OUTDIR/profile-readygate.txt" || true
perf report -i "$WORK/rg.perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null | grep '%' | head -60 >>"$OUTDIR/profile-readygate.txt" || true
perf report -i "$WORK/rg.perf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep '%' | grep -E 'ReadyGate|NIO' | head -40 >"$OUTDIR/profile-readygate-children.txt" || true
echo "profile: $OUTDIR/profile-readygate.txt"
