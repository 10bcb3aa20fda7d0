// swift-tools-version: 6.2
import PackageDescription

// ReadyGate's allocation microbenchmarks (package-benchmark with its malloc counter): the frame
// scanner, the head rewrites and the spliced relay on EmbeddedChannel. A package of its own so
// that neither the proxy nor the load tools in `Benchmarks/` depend on package-benchmark; it uses
// the root package's library products (internals through `@_spi(Benchmarks)`, see
// `BenchmarkSupport`). Run with `swift package benchmark`; CI runs `../micro-check.sh`.
// The root package is named explicitly: a path dependency's identity is its folder's name,
// which differs between clones. Only the `MallocInterposer` trait: the Swift 6.3 runtime
// interposer (ARC counts, not used here) would need one more package.

let package = Package(
    name: "ReadyGateMicroBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "ReadyGate", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "ReadyGateMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ReadyGateCore", package: "ReadyGate"),
                .product(name: "ReadyGateProxy", package: "ReadyGate"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Benchmarks/ReadyGateMicro",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
