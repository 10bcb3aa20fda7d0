#!/usr/bin/env bash
# Allocation-count check of the microbenchmarks in Benchmarks/Micro (package-benchmark with its
# malloc counter): runs them (release build) and compares each benchmark's malloc count, the p90
# of its iterations, with the one recorded in Benchmarks/Micro/Thresholds/. Counts are stable from
# run to run, so the tolerance is zero: one allocation more than recorded fails. Times are measured
# but not checked (they vary with the machine and its load).
#
#   bash Benchmarks/micro-check.sh            # the check (builds in Benchmarks/Micro/.build)
#   MICRO_SCRATCH_PATH=.build-release bash Benchmarks/micro-check.sh
#                                             # builds in that folder (relative to the repository) instead:
#                                             # .ci/run points it at deploy/build-release.sh's release build,
#                                             # so NIO, BoringSSL and ReadyGate's own modules are not compiled
#                                             # a second time (a clean check: about 6 min; after that build: 4)
#
# Fewer allocations than recorded fail too, so that the recorded counts stay the real ones (a stale,
# higher count would let a regression back in unnoticed, up to it). Record the new counts then, and
# review and commit the diff of Thresholds/:
#   cd Benchmarks/Micro && swift package --allow-writing-to-package-directory \
#       benchmark thresholds update --metric mallocCountTotal
# MICRO_ALLOW_FEWER=1 lets fewer pass (with that note), e.g. while working on a change.
set -euo pipefail
cd "$(dirname "$0")/Micro"
scratch=()
if [[ -n "${MICRO_SCRATCH_PATH:-}" ]]; then
    # A path relative to the repository's root, as the caller gave it; this script runs in Micro/.
    case "$MICRO_SCRATCH_PATH" in
        /*) scratch=(--scratch-path "$MICRO_SCRATCH_PATH") ;;
        *) scratch=(--scratch-path "../../$MICRO_SCRATCH_PATH") ;;
    esac
fi

if [[ "${READYGATE_SKIP_MICROBENCH:-0}" != 0 ]]; then
    echo "microbenchmarks skipped (READYGATE_SKIP_MICROBENCH=${READYGATE_SKIP_MICROBENCH})"
    exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift package "${scratch[@]}" benchmark thresholds check --metric mallocCountTotal --no-progress >"$log" 2>&1
status=$?
set -e
# The build's progress lines are noise; the tables and the verdict are what a reader needs.
grep -v -E '^\[[0-9]+/[0-9]+\]|^(Compiling|Building|Write|Emitting|Linking) ' "$log" || true

echo "micro-check: recorded allocation counts (per batch of 1,000):"
for file in Thresholds/*.p90.json; do
    name=${file#Thresholds/ReadyGateMicro.}
    printf '  %-50s %s\n' "${name%.p90.json}" "$(tr -dc '0-9' <"$file")"
done
# The plugin exits 1 for a regression and for an improvement alike; its last words tell them apart.
if [[ $status == 0 ]]; then
    echo "micro-check: allocation counts equal to Benchmarks/Micro/Thresholds"
elif grep -q 'error: benchmarkThresholdRegression' "$log"; then
    echo "micro-check: FAILED: more allocations than Benchmarks/Micro/Thresholds records (or none recorded)" >&2
    exit 1
elif grep -q 'error: benchmarkThresholdImprovement' "$log"; then
    echo "micro-check: fewer allocations than Benchmarks/Micro/Thresholds records:"
    echo "micro-check: record the new counts with 'benchmark thresholds update' (see this script's header)"
    if [[ "${MICRO_ALLOW_FEWER:-0}" != 1 ]]; then
        echo "micro-check: FAILED: the recorded counts are out of date (MICRO_ALLOW_FEWER=1 lets this pass)" >&2
        exit 1
    fi
else
    echo "micro-check: FAILED: the benchmark run ended with status $status" >&2
    exit 1
fi
