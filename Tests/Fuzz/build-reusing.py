#!/usr/bin/env python3
"""Builds the fuzz targets against an existing SwiftPM build of the repository, for CI.

    Tests/Fuzz/build-reusing.py <scratch> <configuration> <out> <target>...

`<scratch>` is the scratch path of a `swift build --build-tests` of the root package (`.build`;
`<configuration>` is `debug` or `release`), which already holds every dependency compiled. Only
ReadyGateCore and ReadyGateProxy are compiled again, from this checkout's sources, with
`-sanitize=fuzzer` (libFuzzer's coverage instrumentation), then each target is linked with the
dependencies' objects. So the step costs a minute instead of a sanitized release build of NIO,
swift-crypto and swift-configuration (docs/fuzzing.md). Coverage comes from ReadyGate's own code
only: the dependencies are not instrumented (`run.sh`'s default build instruments everything).

The compiler flags (module maps, include paths) are read from SwiftPM's build manifest
(`<scratch>/<configuration>.yaml`), and the objects from the `readygate` product's link list.
"""
import glob
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OWN_MODULES = ["ReadyGateCore", "ReadyGateProxy"]
# Objects of these targets are not linked: ours are compiled again, the CLI has a `main`.
SKIPPED_OBJECTS = ["ReadyGateCore", "ReadyGateProxy", "ReadyGateCLI", "ReadyGateDemo"]
# Modules a fuzz target imports that `readygate` does not link.
EXTRA_MODULES = ["NIOEmbedded"]

# Flags (with their argument) that say where things are; everything else SwiftPM passed is dropped.
KEPT_WITH_VALUE = {"-I", "-Xcc", "-module-cache-path", "-package-name", "-target", "-swift-version", "-F"}


def manifest_args(lines, key):
    """The `args:` list of the manifest command named `key`."""
    start = lines.index(f'  "{key}":')
    for line in lines[start + 1 : start + 16]:
        if line.strip().startswith("args:"):
            return json.loads(line.strip()[len("args:") :])
    sys.exit(f"no args for {key}")


def search_flags(args):
    kept = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in KEPT_WITH_VALUE and index + 1 < len(args):
            kept += [arg, args[index + 1]]
            index += 2
            continue
        if arg.startswith("-D"):
            kept.append(arg)
        index += 1
    return kept


def run(command):
    print("+", " ".join(command[:8]), "…" if len(command) > 8 else "", flush=True)
    subprocess.run(command, check=True)


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    scratch, configuration, out, targets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    manifest_path = os.path.join(scratch, f"{configuration}.yaml")
    lines = open(manifest_path).read().split("\n")
    triple = re.search(r'"C\.ReadyGateCore-(.+)-' + configuration + r'\.module":', "\n".join(lines)).group(1)
    build_dir = os.path.join(scratch, triple, configuration)
    modules_out = os.path.join(out, "Modules")
    os.makedirs(modules_out, exist_ok=True)

    flags = {
        name: search_flags(manifest_args(lines, f"C.{name}-{triple}-{configuration}.module")) for name in OWN_MODULES
    }
    common = ["-parse-as-library", "-O", "-sanitize=fuzzer", "-I", modules_out]

    objects = []
    for name in OWN_MODULES:
        sources = sorted(glob.glob(os.path.join(ROOT, "Sources", name, "**", "*.swift"), recursive=True))
        obj = os.path.join(out, f"{name}.o")
        # Compiled again only when a source (or a module it imports) is newer than the object.
        newest = max(os.path.getmtime(path) for path in sources + objects)
        objects.append(obj)
        if os.path.exists(obj) and os.path.getmtime(obj) > newest:
            continue
        run(
            # -enable-testing: FuzzHTTPEntry imports ReadyGateProxy @testable, for its fake backend.
            ["swiftc", "-module-name", name, "-emit-module", "-emit-module-path",
             os.path.join(modules_out, f"{name}.swiftmodule"), "-wmo", "-enable-testing", "-c", "-o", obj]
            + common + flags[name] + sources
        )

    link_list = os.path.join(build_dir, "readygate.product", "Objects.LinkFileList")
    # One path a line, single-quoted when it holds a space: kept as written (response-file syntax).
    dependency_objects = [
        line.strip()
        for line in open(link_list)
        if line.strip() and not any(f"/{skip}.build/" in line for skip in SKIPPED_OBJECTS)
    ]
    for module in EXTRA_MODULES:
        if any(f"/{module}.build/" in line for line in dependency_objects):
            continue
        for path in sorted(glob.glob(os.path.join(build_dir, f"{module}.build", "*.o"))):
            dependency_objects.append(f"'{path}'" if " " in path else path)
    objects_file = os.path.join(out, "dependencies.LinkFileList")
    with open(objects_file, "w") as f:
        f.write("\n".join(dependency_objects) + "\n")

    for target in targets:
        source_dir = os.path.join(HERE, "Sources", target)
        sources = sorted(glob.glob(os.path.join(source_dir, "*.swift")))
        binary = os.path.join(out, target)
        run(
            ["swiftc", "-module-name", target, "-o", binary, "-lstdc++"]
            + common + flags["ReadyGateProxy"] + sources + objects + [f"@{objects_file}"]
        )


if __name__ == "__main__":
    main()
