#!/usr/bin/env bash
# The release build of `readygate` for the container image, checked.
#
#   deploy/build-release.sh [OUTPUT]     (default OUTPUT: .build-release/dist/readygate)
#
# deploy/Dockerfile's builder stage runs it, and so does CI (.ci/deploy-checks), so the build
# the image ships is checked on machines without a container engine. It:
#   1. builds the `readygate` product with `-c release --static-swift-stdlib` in its own scratch
#      path, .build-release (RELEASE_SCRATCH_PATH overrides), apart from the debug build;
#   2. writes a stripped copy to OUTPUT;
#   3. runs `OUTPUT check-config` (it must start and accept the default configuration);
#   4. checks with ldd that every shared library it needs is one the runtime base provides
#      (deploy/runtime-libs.txt): the Swift runtime and Foundation are linked in statically, what
#      remains is glibc, libgcc_s and libstdc++.
# Exit status: non-zero when any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-.build-release/dist/readygate}"
scratch="${RELEASE_SCRATCH_PATH:-.build-release}"
flags=(-c release --static-swift-stdlib --scratch-path "$scratch")

echo "== release build (${scratch})"
swift build "${flags[@]}" --product readygate
bin="$(swift build "${flags[@]}" --show-bin-path)/readygate"

echo "== strip → ${out}"
mkdir -p "$(dirname "$out")"
strip --strip-all -o "$out" "$bin"
chmod 755 "$out"
echo "unstripped $(stat -c %s "$bin") bytes, stripped $(stat -c %s "$out") bytes"

echo "== ${out} check-config"
# An empty environment but for PATH: the defaults must be valid (the image sets nothing else).
env -i PATH=/usr/bin:/bin "$out" check-config

echo "== shared libraries (ldd) against deploy/runtime-libs.txt"
allowed="$(grep -v '^#' deploy/runtime-libs.txt | sed '/^$/d')"
needed="$(ldd "$out" | awk '{print $1}' | sed 's#.*/##')"
status=0
for lib in $needed; do
    case "$lib" in
        linux-vdso.so.*|statically) continue ;;
    esac
    if grep -qxF "$lib" <<<"$allowed"; then
        echo "ok       $lib"
    else
        echo "MISSING  $lib: the runtime base does not provide it" >&2
        status=1
    fi
done
if ldd "$out" | grep -q "not found"; then
    echo "ldd: a library is not found on this machine either" >&2
    status=1
fi
exit "$status"
