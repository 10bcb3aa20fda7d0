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
        .executableTarget(
            name: "FuzzFrameScanner",
            dependencies: [.product(name: "ReadyGateCore", package: rootIdentity)],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "FuzzFrameFilter",
            dependencies: [
                .product(name: "ReadyGateCore", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "FuzzUpgradeRequest",
            dependencies: [
                .product(name: "ReadyGateCore", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "FuzzSettings",
            dependencies: [
                .product(name: "ReadyGateCore", package: rootIdentity),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "FuzzHTTPEntry",
            dependencies: [
                .product(name: "ReadyGateCore", package: rootIdentity),
                .product(name: "ReadyGateProxy", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "FuzzHTTP1Parser",
            dependencies: [
                .product(name: "ReadyGateCore", package: rootIdentity),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: settings
        ),
    ]
)
