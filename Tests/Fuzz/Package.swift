// swift-tools-version: 6.2
// libFuzzer targets for ReadyGate (docs/fuzzing.md). Build with `Tests/Fuzz/run.sh`, or:
//   swift build -c release --sanitize fuzzer --package-path Tests/Fuzz
// With `--sanitize fuzzer` SwiftPM compiles executable targets as libraries and links libFuzzer,
// whose `main` calls each target's `@_cdecl("LLVMFuzzerTestOneInput")`. Built without it, the
// targets have no entry point.
import PackageDescription

// The repository root, depended on by path. A path dependency's identity is its directory's name,
// which depends on where the repository was cloned, so it is read here rather than spelled out.
let root = Context.packageDirectory + "/../.."
let rootIdentity = String(
    Context.packageDirectory.split(separator: "/").dropLast(2).last ?? "ReadyGate"
)

let settings: [SwiftSetting] = [.swiftLanguageMode(.v6)]

/// A fuzz target: an executable of `Sources/<name>` on ReadyGateCore and `dependencies`.
func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency] = []) -> Target {
    .executableTarget(
        name: name,
        dependencies: [.product(name: "ReadyGateCore", package: rootIdentity)] + dependencies,
        swiftSettings: settings
    )
}

func nio(_ products: String...) -> [Target.Dependency] {
    products.map { .product(name: $0, package: "swift-nio") }
}

let package = Package(
    name: "ReadyGateFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: root),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: []),
    ],
    targets: [
        fuzzTarget("FuzzFrameScanner"),
        fuzzTarget("FuzzFrameFilter", nio("NIOCore")),
        fuzzTarget("FuzzUpgradeRequest", nio("NIOCore", "NIOHTTP1")),
        fuzzTarget("FuzzSettings", [.product(name: "Configuration", package: "swift-configuration")]),
        fuzzTarget(
            "FuzzHTTPEntry",
            [.product(name: "ReadyGateProxy", package: rootIdentity)] + nio("NIOCore", "NIOEmbedded", "NIOHTTP1")
                + [.product(name: "Logging", package: "swift-log")]
        ),
        fuzzTarget("FuzzHTTP1Parser", nio("NIOCore", "NIOEmbedded", "NIOHTTP1")),
    ]
)
