import ArgumentParser
import ReadyGateCore
import ReadyGateProxy

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// `readygate check-config`: prints the effective settings, or the first error and exits 2. The
/// TLS files are read too: a bad one is an error here as it is for `serve`.
struct CheckConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Print the effective settings, or the configuration error."
    )

    @OptionGroup var options: SettingsOptions

    func run() async throws {
        let settings = try loadOrExit(options)
        do {
            try ProxyEnvironment.checkTLSFiles(settings)
        } catch {
            printError("readygate: \(error)")
            throw ExitCode(2)
        }
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
