import ArgumentParser
import ReadyGateCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// `readygate analyze [FILE|-]`: reads ReadyGate's JSON log and prints tables and a recommendation.
struct AnalyzeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "analyze",
        abstract: "Summarise ReadyGate's JSON log: sessions, race patterns, time to READY, replays, the delay.",
        discussion: """
            Reads the log ReadyGate writes on stdout with READYGATE_LOG_FORMAT=json, one object per line, \
            and ends with a recommendation (gate, delay, handshake timeout) and the evidence behind it. \
            Lines that are not ReadyGate JSON lines are counted and skipped.
            """
    )

    @Argument(help: "The log file; '-' or none reads stdin.")
    var file: String?

    func run() throws {
        let path = file ?? "-"
        let bytes: [UInt8]
        do {
            bytes = try Self.readAll(path: path)
        } catch {
            printError("readygate analyze: cannot read \(path): \(error)")
            throw ExitCode(1)
        }
        let analysis = LogAnalysis.analyze(String(decoding: bytes, as: UTF8.self))
        print(AnalysisReport.render(analysis), terminator: "")
    }

    /// The whole file (stdin for `-`).
    static func readAll(path: String) throws(ReadError) -> [UInt8] {
        let fd = path == "-" ? 0 : open(path, O_RDONLY)
        guard fd >= 0 else { throw ReadError(errno: errno) }
        defer { if fd != 0 { close(fd) } }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return bytes }
            if count < 0 {
                if errno == EINTR { continue }
                throw ReadError(errno: errno)
            }
            bytes += chunk[..<count]
        }
    }

    struct ReadError: Error, CustomStringConvertible {
        let errno: Int32
        var description: String { String(cString: strerror(errno)) }
    }
}
