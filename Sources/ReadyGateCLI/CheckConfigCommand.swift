import ArgumentParser
import ReadyGateCore

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// `readygate check-config`: prints the effective settings, or the first error and exits 2.
struct CheckConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Print the effective settings, or the configuration error."
    )

    @OptionGroup var options: SettingsOptions

    func run() async throws {
        let settings = try loadOrExit(options)
        let width = settings.effectiveValues.map(\.variable.count).max() ?? 0
        for (variable, value) in settings.effectiveValues {
            print(variable + String(repeating: " ", count: width - variable.count) + "  " + value)
        }
        for name in ReadyGateConfigKey.unknownVariables(in: ProcessInfo.processInfo.environment.keys) {
            print("warning: \(name) is not a ReadyGate variable and is ignored")
        }
    }
}

/// Writes to file descriptor 2 directly (the C `stderr` global is not concurrency-safe).
func fwriteShim(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
    write(2, bytes.baseAddress, bytes.count)
}
