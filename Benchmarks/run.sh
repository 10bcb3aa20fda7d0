#!/usr/bin/env bash
# ReadyGate side by side with nginx and HAProxy, on loopback, in one go.
#
#   Benchmarks/run.sh                 # build everything, run all targets, write docs/benchmarks.md
#   SKIP_BUILD=1 Benchmarks/run.sh    # reuse the release builds
#
# Every load run is bounded in time; every process started here is stopped on exit (trap).
# Every measure runs in ROUNDS interleaved rounds (default 5): all targets up at once, taking turns
# in a rotated order; the report gives medians over the rounds.
# Knobs (environment): THREADS (workers per proxy, default 2), DURATION (s per round of throughput,
# latency and sessions per second, default 4), RATE (msg/s for the latency run, default 10000),
# CONNS, INFLIGHT, SIZE, LAT_CONNS, IDLE_SESSIONS (per round, default 4000), IDLE_HOLD,
# FIRST_SESSIONS (per round, default 100), SESSION_CONCURRENCY, WRK_DURATION, TOOL_THREADS, TARGETS,
# OUT (markdown path), ROUNDS.
# H2=0 skips the HTTP/2 and TLS part (Benchmarks/h2.sh, run after the rest).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
COMMAND_LINE="Benchmarks/run.sh${*:+ $*}"
for v in THREADS DURATION RATE CONNS INFLIGHT SIZE LAT_CONNS IDLE_SESSIONS IDLE_HOLD FIRST_SESSIONS SESSION_CONCURRENCY \
    WRK_DURATION TOOL_THREADS TARGETS ROUNDS H2; do
    if [[ -n "${!v:-}" ]]; then COMMAND_LINE="$v=${!v} $COMMAND_LINE"; fi
done

THREADS="${THREADS:-2}"
DURATION="${DURATION:-4}"
RATE="${RATE:-10000}"
CONNS="${CONNS:-50}"
INFLIGHT="${INFLIGHT:-8}"
SIZE="${SIZE:-64}"
LAT_CONNS="${LAT_CONNS:-50}"
IDLE_SESSIONS="${IDLE_SESSIONS:-4000}"
IDLE_HOLD="${IDLE_HOLD:-4}"
FIRST_SESSIONS="${FIRST_SESSIONS:-100}"
SESSION_CONCURRENCY="${SESSION_CONCURRENCY:-20}"
WRK_DURATION="${WRK_DURATION:-4}"
TOOL_THREADS="${TOOL_THREADS:-2}"
TARGETS="${TARGETS:-direct nginx haproxy readygate}"
ROUNDS="${ROUNDS:-5}"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"

# Fixed ports below the ephemeral range (widened to 15000-64999 below), so that no outgoing
# connection can take them.
ECHO_PORT=10001
declare -A PORT=([direct]=$ECHO_PORT [nginx]=10101 [haproxy]=10102 [readygate]=10103 [readygate0]=10104 [readygate0d]=10105)
STARTUP_PORT=10105
HELLO_PORT=10106

RG_SCRATCH="$ROOT/.build-bench"
RG_BIN="$RG_SCRATCH/release/readygate"
TOOLS="$HERE/.build/release"
WORK="$(mktemp -d /tmp/readygate-bench.XXXXXX)"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
CLK_TCK="$(getconf CLK_TCK)"
PIDS=()
OLD_PORT_RANGE="$(sysctl -n net.ipv4.ip_local_port_range 2>/dev/null | tr '\t' ' ' || true)"

log() { printf '== %s\n' "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${PIDS[@]:-}"; do
        [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
    done
    if [[ -n "$OLD_PORT_RANGE" ]]; then sysctl -qw net.ipv4.ip_local_port_range="$OLD_PORT_RANGE" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

# --- limits -------------------------------------------------------------------------------
# 10,000 spliced sessions need 20,000+ descriptors in a one-process proxy. Raise what we may.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE="$(ulimit -n)"
if ((2 * IDLE_SESSIONS + 64 > NOFILE)); then
    IDLE_SESSIONS=$(((NOFILE - 64) / 2 / 100 * 100))
    log "RLIMIT_NOFILE is $NOFILE (hard limit): idle sessions lowered to $IDLE_SESSIONS"
fi
# Three sets of 10k connections leave many TIME_WAIT sockets; widen the ephemeral range while we run.
sysctl -qw net.ipv4.ip_local_port_range="15000 64999" 2>/dev/null || true

# --- build --------------------------------------------------------------------------------
if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building ReadyGate (release, scratch $RG_SCRATCH)"
    (cd "$ROOT" && swift build -c release --product readygate --scratch-path "$RG_SCRATCH")
    log "building ws-echo and ws-bench (release)"
    (cd "$HERE" && swift build -c release)
fi
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null || ! command -v wrk >/dev/null; then
    log "installing nginx, haproxy, wrk (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy wrk >/dev/null
fi

# --- helpers ------------------------------------------------------------------------------
# nginx and HAProxy configurations, shared with profile.sh so that both measure the same setup.
source "$HERE/proxy-configs.sh"

wait_port() { # port [timeout-s]
    local port="$1" deadline=$((SECONDS + ${2:-15}))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        ((SECONDS < deadline)) || { log "port $port did not open"; return 1; }
        sleep 0.05
    done
}

proc_tree() { # pid -> the pid and its children (nginx master + workers)
    echo "$1"
    pgrep -P "$1" 2>/dev/null || true
}

cpu_ticks() { # "utime stime" summed over the tree
    local user=0 sys=0 pid stat
    for pid in $(proc_tree "$1"); do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        stat="${stat##*) }"
        # after "pid (comm) ": field 3 is state; utime/stime are fields 14/15 overall = 12/13 here
        read -r -a f <<<"$stat"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user $sys"
}

rss_kib() { # sum of VmRSS over the tree
    local total=0 pid kb
    for pid in $(proc_tree "$1"); do
        kb="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" || continue
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

record() { # append a JSON object to the results
    echo "$1" >>"$RESULTS"
}

jfield() { # json key
    jq -r ".$2" <<<"$1"
}

start_echo() {
    "$TOOLS/ws-echo" --port "$ECHO_PORT" --threads "$THREADS" --lifetime 3600 >"$WORK/echo.log" 2>&1 &
    ECHO_PID=$!
    PIDS+=("$ECHO_PID")
    wait_port "$ECHO_PORT"
}

proxy_cmd() { # target port -> command line (array in PROXY_CMD)
    local target="$1" port="$2"
    case "$target" in
    nginx)
        sed "s/PORT/$port/" "$WORK/nginx.conf" >"$WORK/nginx-$port.conf"
        PROXY_CMD=("$(command -v nginx)" -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx-$port.conf" -g 'daemon off;')
        ;;
    haproxy)
        sed "s/PORT/$port/" "$WORK/haproxy.cfg" >"$WORK/haproxy-$port.cfg"
        PROXY_CMD=("$(command -v haproxy)" -f "$WORK/haproxy-$port.cfg" -db)
        ;;
    readygate | readygate0 | readygate0d)
        PROXY_CMD=("$RG_BIN" serve)
        ;;
    esac
}

proxy_env() { # target port
    export READYGATE_LISTEN="127.0.0.1:$2" READYGATE_UPSTREAM="http://127.0.0.1:$ECHO_PORT" READYGATE_ENV=testing \
        READYGATE_THREADS="$THREADS" READYGATE_LOG_LEVEL=warning READYGATE_ADMIN_LISTEN=off \
        READYGATE_HANDSHAKE_TIMEOUT_MS="${READYGATE_HANDSHAKE_TIMEOUT_MS:-5000}"
    # readygate0: the default (ping) gate with the delay at 0; readygate0d: the delay gate at 0, which
    # releases the held frame on the backend's 101 (no ping round trip). First echo only, both.
    unset READYGATE_BASE_DELAY_MS READYGATE_READY_GATE
    case "$1" in
    readygate0) export READYGATE_BASE_DELAY_MS=0 ;;
    readygate0d) export READYGATE_BASE_DELAY_MS=0 READYGATE_READY_GATE=delay ;;
    esac
}

start_proxy() { # target
    local target="$1" port="${PORT[$1]}"
    PROXY_PID=""
    [[ "$target" == direct ]] && return 0
    proxy_cmd "$target" "$port"
    proxy_env "$target" "$port"
    "${PROXY_CMD[@]}" >"$WORK/$target.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$port"
}

stop_proxy() {
    [[ -z "${PROXY_PID:-}" ]] && return 0
    kill "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
}

bench() { "$TOOLS/ws-bench" "$@" --threads "$TOOL_THREADS" --size "$SIZE"; }

# --- one target, one round -----------------------------------------------------------------
# Every measure runs in rounds: all targets are up at once and take turns (in a rotated order each
# round), so a busy moment of the shared machine costs one round of each target, not one target's
# whole measurement. The report takes the median of the rounds for every number.
measure_round() { # target pid round
    local target="$1" pid="$2" round="$3" port="${PORT[$1]}" line u0 s0 u1 s1
    local tag=(jq -c --argjson round "$round" '. + {round: $round}')
    log "round $round: $target"

    record "$(bench first-echo --port "$port" --label "$target" --sessions "$FIRST_SESSIONS" | "${tag[@]}")"
    [[ "$target" == readygate0* ]] && return 0

    # Closed-loop throughput, with the proxy's CPU before and after.
    read -r u0 s0 <<<"$(cpu_ticks "$pid")"
    line="$(bench throughput --port "$port" --label "$target" --connections "$CONNS" --inflight "$INFLIGHT" --duration "$DURATION")"
    read -r u1 s1 <<<"$(cpu_ticks "$pid")"
    record "$(jq -c --argjson round "$round" --argjson t "$((u1 + s1 - u0 - s0))" --argjson ut "$((u1 - u0))" --argjson st "$((s1 - s0))" --argjson hz "$CLK_TCK" \
        '. + {round: $round, cpu_ticks: $t, user_ticks: $ut, sys_ticks: $st, cpu_us_per_msg: ($t * 1000000 / $hz / .messages_total), user_us_per_msg: ($ut * 1000000 / $hz / .messages_total), sys_us_per_msg: ($st * 1000000 / $hz / .messages_total)}' <<<"$line")"

    # Open-loop latency at a fixed rate.
    record "$(bench latency --port "$port" --label "$target" --rate "$RATE" --duration "$DURATION" --connections "$LAT_CONNS" | "${tag[@]}")"

    # New sessions per second: connect, upgrade, one echo, close, again.
    record "$(bench sessions --port "$port" --label "$target" --concurrency "$SESSION_CONCURRENCY" --duration "$DURATION" | "${tag[@]}")"

    # Plain HTTP through the proxy (wrk), when the target forwards plain HTTP.
    run_wrk "$target" "$port" "$pid" "$round"
}

# Memory per idle session: the target is restarted first, so every round starts from a fresh
# process (RSS does not shrink back after sessions close), then RSS before and after the sessions
# are all up (each did one echo, so it is spliced).
measure_idle() { # target round -> sets RUNNING_PID[target] anew
    local target="$1" round="$2" port="${PORT[$1]}" pid r0 r1 idle_out="$WORK/idle-$1-$2.jsonl" ipid up
    if [[ "$target" != direct ]]; then
        PROXY_PID="${RUNNING_PID[$target]}"
        stop_proxy
        start_proxy "$target"
        RUNNING_PID[$target]="$PROXY_PID"
        PROXY_PID=""
    fi
    pid="${RUNNING_PID[$target]}"
    r0="$(rss_kib "$pid")"
    bench idle --port "$port" --label "$target" --sessions "$IDLE_SESSIONS" --hold "$IDLE_HOLD" --concurrency 200 >"$idle_out" &
    ipid=$!
    PIDS+=("$ipid")
    for _ in $(seq 1200); do grep -q all_up "$idle_out" 2>/dev/null && break; kill -0 "$ipid" 2>/dev/null || break; sleep 0.1; done
    sleep 2
    r1="$(rss_kib "$pid")"
    wait "$ipid" || true
    up="$(grep all_up "$idle_out" | jq -r .sessions)"
    record "$(grep all_up "$idle_out" | jq -c --argjson round "$round" --argjson r0 "$r0" --argjson r1 "$r1" \
        '. + {round: $round, rss_before_kib: $r0, rss_after_kib: $r1, kib_per_session: (if .sessions > 0 then ($r1 - $r0) / .sessions else null end)}')"
    log "  idle $target: $up sessions, RSS $r0 -> $r1 KiB"
    sleep 1
}

run_wrk() { # label port pid [round]: wrk req/s, and the CPU per request of pid's process tree
    local label="$1" port="$2" pid="$3" round="${4:-1}" status out rps reqs u0 s0 u1 s1
    status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)"
    if [[ "$status" != 200 ]]; then
        record "$(jq -nc --arg l "$label" --arg s "$status" --argjson round "$round" '{mode: "wrk", label: $l, round: $round, requests_per_s: null, status: $s}')"
        return 0
    fi
    read -r u0 s0 <<<"$(cpu_ticks "$pid")"
    out="$(wrk -t "$TOOL_THREADS" -c 50 -d "${WRK_DURATION}s" "http://127.0.0.1:$port/" 2>&1)"
    read -r u1 s1 <<<"$(cpu_ticks "$pid")"
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
    record "$(jq -nc --arg l "$label" --argjson round "$round" --argjson r "${rps:-0}" --argjson n "${reqs:-0}" --argjson t "$((u1 + s1 - u0 - s0))" \
        --argjson hz "$CLK_TCK" '{mode: "wrk", label: $l, round: $round, requests_per_s: $r, requests: $n,
        cpu_us_per_request: (if $n > 0 then $t * 1000000 / $hz / $n else null end)}')"
}

# One NIO HTTP/1 hop alone (http-hello: NIO's codecs, answers 200): what a request costs a server
# on NIO's codecs; a proxy on them makes two such hops per request.
run_hello() {
    local pid
    "$TOOLS/http-hello" --port "$HELLO_PORT" --threads "$THREADS" --lifetime 600 >"$WORK/hello.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$HELLO_PORT"
    run_wrk nio-http-hop "$HELLO_PORT" "$pid"
    kill "$pid" 2>/dev/null || true
}

# --- rounds ---------------------------------------------------------------------------------
rotate() { # n words... -> the words rotated left by n
    local n="$1"
    shift
    local words=("$@") i
    for ((i = 0; i < ${#words[@]}; i++)); do printf '%s ' "${words[$(((i + n) % ${#words[@]}))]}"; done
}

run_rounds() {
    local t r order
    declare -gA RUNNING_PID=()
    log "$ROUNDS interleaved rounds over: $TARGETS${RG0:+ $RG0}"
    for t in $TARGETS $RG0; do
        start_proxy "$t"
        RUNNING_PID[$t]="${PROXY_PID:-$ECHO_PID}"
    done
    PROXY_PID=""
    for r in $(seq "$ROUNDS"); do
        order="$(rotate "$((r - 1))" $TARGETS $RG0)"
        for t in $order; do measure_round "$t" "${RUNNING_PID[$t]}" "$r"; done
        for t in $order; do [[ "$t" == readygate0* ]] || measure_idle "$t" "$r"; done
    done
    for t in $TARGETS $RG0; do
        [[ "$t" == direct ]] || kill "${RUNNING_PID[$t]}" 2>/dev/null || true
    done
}

# --- run ----------------------------------------------------------------------------------
for bin in "$RG_BIN" "$TOOLS/ws-echo" "$TOOLS/ws-bench" "$TOOLS/http-hello"; do
    [[ -x "$bin" ]] || { log "missing $bin (run without SKIP_BUILD)"; exit 1; }
done
write_configs
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
START_TIME="$(date -u '+%Y-%m-%d %H:%M UTC')"

# exec -> accepting, before the echo backend carries load (ReadyGate needs no backend to listen).
proxy_env readygate "$STARTUP_PORT"
# Interleaved like everything else: 7 rounds of one start per target.
for r in $(seq 7); do
    for t in readygate nginx haproxy; do
        if [[ "$t" == readygate ]]; then PROXY_CMD=("$RG_BIN" serve); else proxy_cmd "$t" "$STARTUP_PORT"; fi
        record "$("$TOOLS/ws-bench" startup --port "$STARTUP_PORT" --runs 1 --label "$t" -- "${PROXY_CMD[@]}" |
            jq -c --argjson round "$r" '. + {round: $round}')"
    done
done

start_echo
RG0=""
[[ " $TARGETS " == *" readygate "* ]] && RG0="readygate0 readygate0d"
run_rounds
run_hello
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$HERE/results"
cp "$RESULTS" "$HERE/results/latest.jsonl"

# --- report -------------------------------------------------------------------------------
SWIFT_VERSION="$(swift --version 2>&1 | awk 'NR == 1')"
NGINX_VERSION="$(nginx -v 2>&1 | sed 's/.*: //')"
HAPROXY_VERSION="$(haproxy -v | awk 'NR == 1 {print $3}')"
CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
REPORT_ARGS=(--command "$COMMAND_LINE" --nproc "$(nproc)" --cpu "$CPU_MODEL" --kernel "$(uname -r)"
    --swift "$SWIFT_VERSION" --nginx "$NGINX_VERSION" --haproxy "$HAPROXY_VERSION" --threads "$THREADS"
    --duration "$DURATION" --rate "$RATE" --conns "$CONNS" --inflight "$INFLIGHT" --size "$SIZE"
    --lat-conns "$LAT_CONNS" --idle "$IDLE_SESSIONS" --first "$FIRST_SESSIONS" --nofile "$NOFILE"
    --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER" --date "$START_TIME" --tool-threads "$TOOL_THREADS"
    --rounds "$ROUNDS" --idle-hold "$IDLE_HOLD" --session-concurrency "$SESSION_CONCURRENCY" --wrk-duration "$WRK_DURATION")
# Kept so that `Benchmarks/report.py` can be re-run on these results (e.g. after editing notes.md):
#   python3 Benchmarks/report.py Benchmarks/results/latest.jsonl docs/benchmarks.md --args-file Benchmarks/results/latest.args
printf '%s\n' "${REPORT_ARGS[@]}" >"$HERE/results/latest.args"
python3 "$HERE/report.py" "$RESULTS" "$OUT" "${REPORT_ARGS[@]}"
log "results: $HERE/results/latest.jsonl; report: $OUT"

# --- HTTP/2 and TLS (h2load) ----------------------------------------------------------------
# A run of its own (Benchmarks/h2.sh, own ports and echo backend); it re-writes the report with an
# "HTTP/2 and TLS" section. H2=0 skips it.
if [[ "${H2:-1}" == 1 ]]; then
    bash "$HERE/h2.sh"
fi
