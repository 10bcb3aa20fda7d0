#!/usr/bin/env bash
# Builds the libFuzzer targets (Tests/Fuzz/Package.swift) and runs each for a bounded time.
#
#   Tests/Fuzz/run.sh [seconds]        seconds per target: argument, else FUZZ_SECONDS, else 60
#
# Environment:
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated targets to run (default: all six)
#   FUZZ_BUILD     how the targets are built:
#                  package (default): `swift build -c release --sanitize fuzzer` of the package in
#                    Tests/Fuzz, which depends on the repository by path. Everything is instrumented
#                    (NIO's HTTP parser too); a clean build compiles every dependency (~11 min on 2 cores).
#                  reuse: Tests/Fuzz/build-reusing.py; only ReadyGateCore and ReadyGateProxy are compiled
#                    again (with -sanitize=fuzzer), linked with the dependencies of an existing build
#                    of the repository ($FUZZ_REUSE_SCRATCH, default .build, configuration
#                    $FUZZ_REUSE_CONFIG, default debug, as `swift build --build-tests` leaves it).
#                    About a minute; what CI uses.
#   FUZZ_SCRATCH   scratch path (default: Tests/Fuzz/.build)
#   FUZZ_OUT       where crash inputs and logs are kept (default: $FUZZ_SCRATCH/findings)
#
# Each target starts from a copy of its seed corpus (Tests/Fuzz/corpus/<target>) in a temporary
# directory, so the checked-in corpus never grows. Exits non-zero when a target crashes or breaks
# one of its invariants; the input that did it is kept in $FUZZ_OUT and named in the output.
# Reproduce one with: <binary directory printed below>/<target> <crash file>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds="${1:-${FUZZ_SECONDS:-60}}"
targets="${FUZZ_TARGETS:-FuzzFrameScanner FuzzFrameFilter FuzzUpgradeRequest FuzzSettings FuzzHTTPEntry FuzzHTTP1Parser}"
scratch="${FUZZ_SCRATCH:-$here/.build}"
out="${FUZZ_OUT:-$scratch/findings}"
mkdir -p "$out"

max_len() {
    case "$1" in
        FuzzFrameScanner) echo 4096 ;;
        FuzzFrameFilter) echo 4096 ;;
        FuzzUpgradeRequest) echo 2048 ;;
        FuzzSettings) echo 1024 ;;
        FuzzHTTPEntry) echo 4096 ;;
        FuzzHTTP1Parser) echo 4096 ;;
        *) echo 4096 ;;
    esac
}

dict_args() {
    case "$1" in
        FuzzUpgradeRequest | FuzzHTTPEntry | FuzzHTTP1Parser) echo "-dict=$here/dict/http.dict" ;;
    esac
}

# The fuzz package depends on the root package by path; reuse the root's pins when there are some.
if [[ -f "$root/Package.resolved" && ! -f "$here/Package.resolved" ]]; then
    cp "$root/Package.resolved" "$here/Package.resolved"
fi

build="${FUZZ_BUILD:-package}"
echo "== fuzz: build ($build: $targets)"
build_start=$SECONDS
case "$build" in
    package)
        bin="$scratch/release"
        for target in $targets; do
            rm -f "$bin/$target"
            # -enable-testing: FuzzHTTPEntry imports ReadyGateProxy @testable, for its fake backend.
            swift build -c release --sanitize fuzzer -Xswiftc -enable-testing \
                --package-path "$here" --scratch-path "$scratch" \
                --product "$target" 2>&1 | grep -E "error|warning:|Compiling Fuzz|complete!" || true
        done
        ;;
    reuse)
        bin="$scratch/reuse"
        for target in $targets; do rm -f "$bin/$target"; done
        python3 "$here/build-reusing.py" "${FUZZ_REUSE_SCRATCH:-$root/.build}" "${FUZZ_REUSE_CONFIG:-debug}" \
            "$bin" $targets
        ;;
    *)
        echo "fuzz: FUZZ_BUILD must be package or reuse, not $build" >&2
        exit 2
        ;;
esac
for target in $targets; do
    [[ -x "$bin/$target" ]] || { echo "fuzz: $target did not build" >&2; exit 1; }
done
echo "fuzz: built in $((SECONDS - build_start)) s; binaries in $bin"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for target in $targets; do
    corpus="$work/$target"
    mkdir -p "$corpus"
    cp "$here/corpus/$target/"* "$corpus/"
    log="$out/$target.log"
    echo "== fuzz: $target for $seconds s (max_len $(max_len "$target"))"
    status=0
    # The Swift runtime's backtracer would catch the trap before libFuzzer writes the crash input.
    SWIFT_BACKTRACE=enable=no "$bin/$target" "$corpus" \
        -max_total_time="$seconds" -max_len="$(max_len "$target")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/$target-" $(dict_args "$target") >"$log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    corpus_size="$(ls "$corpus" | wc -l)"
    if [[ $status -ne 0 ]]; then
        failed+=("$target")
        echo "fuzz: $target FAILED (exit $status); log: $log"
        grep -E "invariant violated|Fatal error|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -n 20 || true
        summary+=("$target: FAILED after ${execs:-?} executions")
    else
        tail -n 3 "$log" | grep -E "^Done|^#" || true
        summary+=("$target: ${execs:-?} executions in $seconds s, corpus $corpus_size inputs, no crash")
    fi
done

echo "== fuzz: summary"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -ne 0 ]]; then
    echo "fuzz: failures in ${failed[*]}; inputs in $out" >&2
    exit 1
fi
