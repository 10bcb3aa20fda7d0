#!/usr/bin/env bash
# HTTP/2 and TLS, ReadyGate side by side with nginx, on loopback (h2load from Debian's
# nghttp2-client).
#
#   Benchmarks/h2.sh                 # uses the release builds run.sh made (or SKIP_BUILD= to build)
#
# Measures, in ROUNDS interleaved rounds (each round runs every target once, so a busy moment of
# the shared machine costs one round of each, not one target's whole measurement):
#   - h2c (prior knowledge) and h2 over TLS: `h2load -c CONNS -m STREAMS -D SECONDS` against
#     `GET /` (the echo backend answers `200 ok` over HTTP/1.1), req/s and the proxy's CPU per request;
#   - new TLS connections per second: `h2load -n N -c N -m 1` (each client makes one TLS handshake,
#     one request), N = HANDSHAKES.
# Results go to Benchmarks/results/h2.jsonl; report.py turns them into the "HTTP/2 and TLS"
# section of docs/benchmarks.md (it is re-run at the end with the last run.sh results).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
COMMAND_LINE="Benchmarks/h2.sh"
for v in THREADS CONNS STREAMS SECONDS_PER_RUN HANDSHAKES ROUNDS TOOL_THREADS; do
    if [[ -n "${!v:-}" ]]; then COMMAND_LINE="$v=${!v} $COMMAND_LINE"; fi
done
THREADS="${THREADS:-2}"
CONNS="${CONNS:-50}"
STREAMS="${STREAMS:-10}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-4}"
HANDSHAKES="${HANDSHAKES:-400}"
ROUNDS="${ROUNDS:-5}"
TOOL_THREADS="${TOOL_THREADS:-2}"

ECHO_PORT=10200
declare -A H2C_PORT=([nginx]=10201 [readygate]=10203)
declare -A TLS_PORT=([nginx]=10211 [readygate]=10213)
RG_SCRATCH="$ROOT/.build-bench"
RG_BIN="$RG_SCRATCH/release/readygate"
TOOLS="$HERE/.build/release"
WORK="$(mktemp -d /tmp/readygate-h2.XXXXXX)"
RESULTS="$WORK/h2.jsonl"
: >"$RESULTS"
CLK_TCK="$(getconf CLK_TCK)"
PIDS=()

log() { printf '== %s\n' "$*" >&2; }
cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

if [[ -n "${BUILD:-}" ]]; then
    (cd "$ROOT" && swift build -c release --product readygate --scratch-path "$RG_SCRATCH")
    (cd "$HERE" && swift build -c release)
fi
if ! command -v nginx >/dev/null || ! command -v h2load >/dev/null || ! command -v jq >/dev/null; then
    log "installing nginx, nghttp2-client (h2load), jq (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx nghttp2-client jq >/dev/null
fi
for bin in "$RG_BIN" "$TOOLS/ws-echo"; do
    [[ -x "$bin" ]] || { log "missing $bin (run Benchmarks/run.sh once, or BUILD=1 $0)"; exit 1; }
done

wait_port() {
    local deadline=$((SECONDS + 15))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        ((SECONDS < deadline)) || { log "port $1 did not open"; return 1; }
        sleep 0.05
    done
}

cpu_ticks() { # pid -> utime+stime summed over the pid and its children
    local total=0 pid stat
    for pid in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        stat="${stat##*) }"
        read -r -a f <<<"$stat"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# --- peers ------------------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

"$TOOLS/ws-echo" --port "$ECHO_PORT" --threads "$THREADS" --lifetime 3600 >"$WORK/echo.log" 2>&1 &
PIDS+=($!)
wait_port "$ECHO_PORT"

cat >"$WORK/nginx.conf" <<EOF
worker_processes $THREADS;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # nginx closes a connection after 1,000 requests by default, and h2load does not reconnect.
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx-body;
    proxy_temp_path $WORK/nginx-proxy;
    upstream echo { server 127.0.0.1:$ECHO_PORT; keepalive 64; }
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen 127.0.0.1:${H2C_PORT[nginx]} http2;
        listen 127.0.0.1:${TLS_PORT[nginx]} ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
declare -A PID=([nginx]=$!)
PIDS+=("${PID[nginx]}")

rg_env=(READYGATE_UPSTREAM="http://127.0.0.1:$ECHO_PORT" READYGATE_ENV=testing READYGATE_THREADS="$THREADS"
    READYGATE_LOG_LEVEL=warning READYGATE_ADMIN_LISTEN=off)
env "${rg_env[@]}" READYGATE_LISTEN="127.0.0.1:${H2C_PORT[readygate]}" "$RG_BIN" serve >"$WORK/rg-h2c.log" 2>&1 &
PID[readygate]=$!
PIDS+=("${PID[readygate]}")
env "${rg_env[@]}" READYGATE_LISTEN="127.0.0.1:${TLS_PORT[readygate]}" READYGATE_TLS_CERT="$WORK/cert.pem" \
    READYGATE_TLS_KEY="$WORK/key.pem" "$RG_BIN" serve >"$WORK/rg-tls.log" 2>&1 &
PID[readygate_tls]=$!
PIDS+=("${PID[readygate_tls]}")
for p in "${H2C_PORT[@]}" "${TLS_PORT[@]}"; do wait_port "$p"; done

# The pid whose CPU a target's TLS runs cost: nginx serves both ports from one tree.
tls_pid() { [[ "$1" == readygate ]] && echo "${PID[readygate_tls]}" || echo "${PID[$1]}"; }

# --- runs ---------------------------------------------------------------------------------------
h2load_run() { # label kind pid url args... -> one JSON line
    local label="$1" kind="$2" pid="$3" url="$4" t0 t1 out rps done_ok failed secs
    shift 4
    t0="$(cpu_ticks "$pid")"
    out="$(h2load "$@" "$url" 2>&1 || true)"
    t1="$(cpu_ticks "$pid")"
    secs="$(awk '/^finished in/ { v = $3; sub(/,$/, "", v)
        if (v ~ /ms$/) { sub(/ms$/, "", v); v = v / 1000 } else if (v ~ /us$/) { sub(/us$/, "", v); v = v / 1000000 } else sub(/s$/, "", v)
        print v }' <<<"$out")"
    rps="$(awk '/^finished in/ {print $4}' <<<"$out")"
    done_ok="$(awk '/^requests:/ {print $8}' <<<"$out")"
    failed="$(awk '/^requests:/ {print $10}' <<<"$out")"
    jq -nc --arg l "$label" --arg k "$kind" --argjson s "${secs:-0}" --argjson r "${rps:-0}" --argjson n "${done_ok:-0}" \
        --argjson f "${failed:-0}" --argjson t "$((t1 - t0))" --argjson hz "$CLK_TCK" \
        '{label: $l, kind: $k, seconds: $s, requests_per_s: $r, succeeded: $n, failed: $f,
          cpu_us_per_request: (if $n > 0 then $t * 1000000 / $hz / $n else null end)}'
}

# Every target must answer before anything is measured.
for t in nginx readygate; do
    curl -sf --http2-prior-knowledge -o /dev/null "http://127.0.0.1:${H2C_PORT[$t]}/" || { log "$t h2c: no 200"; exit 1; }
    curl -sf --http2 -k -o /dev/null "https://127.0.0.1:${TLS_PORT[$t]}/" || { log "$t TLS: no 200"; exit 1; }
done

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    log "round $r of $ROUNDS"
    for t in nginx readygate; do
        h2load_run "$t" h2c "${PID[$t]}" "http://127.0.0.1:${H2C_PORT[$t]}/" \
            -c "$CONNS" -m "$STREAMS" -t "$TOOL_THREADS" -D "$SECONDS_PER_RUN" | jq -c --argjson r "$r" '. + {round: $r}' >>"$RESULTS"
        h2load_run "$t" h2_tls "$(tls_pid "$t")" "https://127.0.0.1:${TLS_PORT[$t]}/" \
            -c "$CONNS" -m "$STREAMS" -t "$TOOL_THREADS" -D "$SECONDS_PER_RUN" | jq -c --argjson r "$r" '. + {round: $r}' >>"$RESULTS"
        h2load_run "$t" tls_handshake "$(tls_pid "$t")" "https://127.0.0.1:${TLS_PORT[$t]}/" \
            -n "$HANDSHAKES" -c "$HANDSHAKES" -m 1 -t "$TOOL_THREADS" |
            jq -c --argjson r "$r" '. + {round: $r, handshakes_per_s: (if .seconds > 0 then .succeeded / .seconds else null end)}' >>"$RESULTS"
    done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

jq -nc --arg c "$COMMAND_LINE" --arg lb "$LOAD_BEFORE" --arg la "$LOAD_AFTER" --arg d "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --arg h2load "$(h2load --version 2>&1 | awk 'NR == 1')" --argjson conns "$CONNS" --argjson streams "$STREAMS" \
    --argjson secs "$SECONDS_PER_RUN" --argjson hs "$HANDSHAKES" --argjson rounds "$ROUNDS" --argjson threads "$THREADS" \
    '{kind: "meta", command: $c, load_before: $lb, load_after: $la, date: $d, h2load: $h2load, conns: $conns,
      streams: $streams, seconds: $secs, handshakes: $hs, rounds: $rounds, threads: $threads}' >>"$RESULTS"
mkdir -p "$HERE/results"
cp "$RESULTS" "$HERE/results/h2.jsonl"
if [[ -f "$HERE/results/latest.jsonl" && -f "$HERE/results/latest.args" ]]; then
    python3 "$HERE/report.py" "$HERE/results/latest.jsonl" "$ROOT/docs/benchmarks.md" --args-file "$HERE/results/latest.args"
fi
log "results: $HERE/results/h2.jsonl"
