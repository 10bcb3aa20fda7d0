import NIOConcurrencyHelpers
import NIOCore
import ReadyGateDemo

#if canImport(Glibc)
    import Glibc
#endif

/// One run of the demo: `clients` early-sending sessions against one port, all at once.
struct DemoRun: Sendable {
    enum Outcome: Sendable {
        /// The message came back after this many microseconds (from the start of the connect).
        case echoed(microseconds: Int64)
        case closed(UInt16?)
        case failed
    }

    var name: String
    var sessions: Int
    var ok: Int
    var closed1011: Int
    var other: Int
    /// Times to first echo, sorted, in microseconds.
    var echoTimes: [Int64]

    static func run(name: String, clients: Int, port: Int, group: any EventLoopGroup) async -> DemoRun {
        let done = NIOLockedValueBox(0)
        let progress = Progress(name: name, total: clients, done: done)
        let ticker = Task { await progress.tick() }
        let outcomes = await withTaskGroup(of: Outcome.self) { tasks in
            for index in 0..<clients {
                tasks.addTask {
                    let outcome = await session(index: index, port: port, group: group)
                    done.withLockedValue { $0 += 1 }
                    return outcome
                }
            }
            var all: [Outcome] = []
            for await outcome in tasks { all.append(outcome) }
            return all
        }
        ticker.cancel()
        progress.finish()
        var run = DemoRun(name: name, sessions: clients, ok: 0, closed1011: 0, other: 0, echoTimes: [])
        for outcome in outcomes {
            switch outcome {
            case .echoed(let micros):
                run.ok += 1
                run.echoTimes.append(micros)
            case .closed(1011): run.closed1011 += 1
            case .closed, .failed: run.other += 1
            }
        }
        run.echoTimes.sort()
        return run
    }

    /// Connects, sends one text message the moment the upgrade completes, waits for its echo.
    static func session(index: Int, port: Int, group: any EventLoopGroup) async -> Outcome {
        let message = "hello from client \(index)"
        let start = NIODeadline.now()
        return await withTaskGroup(of: Outcome?.self) { race in
            race.addTask { await exchange(message: message, start: start, port: port, group: group) }
            race.addTask {
                try? await Task.sleep(for: .seconds(10))
                return nil
            }
            let first = await race.next() ?? nil
            race.cancelAll()
            return first ?? .failed
        }
    }

    private static func exchange(message: String, start: NIODeadline, port: Int, group: any EventLoopGroup) async
        -> Outcome
    {
        do {
            return try await DemoWebSocketClient.withConnection(
                group: group,
                port: port,
                path: "/chat",
                firstFrames: [DemoWebSocketClient.text(message)]
            ) { connection in
                while let received = try await connection.next() {
                    switch received {
                    case .text(let text) where text == message:
                        let elapsed = (NIODeadline.now() - start).nanoseconds / 1000
                        try? await connection.close()
                        return .echoed(microseconds: elapsed)
                    case .close(let code, _):
                        return .closed(code)
                    default:
                        continue
                    }
                }
                return .failed
            }
        } catch {
            return .failed
        }
    }

    func percentile(_ fraction: Double) -> String {
        guard !echoTimes.isEmpty else { return "-" }
        let index = min(echoTimes.count - 1, Int((Double(echoTimes.count) * fraction).rounded(.up)) - 1)
        let millis = Double(echoTimes[max(0, index)]) / 1000
        return String(Int(millis.rounded())) + " ms"
    }
}

/// Live progress on the terminal (standard error), when it is one.
struct Progress: Sendable {
    let name: String
    let total: Int
    let done: NIOLockedValueBox<Int>
    private let isTerminal = isatty(2) == 1

    init(name: String, total: Int, done: NIOLockedValueBox<Int>) {
        self.name = name
        self.total = total
        self.done = done
    }

    func tick() async {
        while !Task.isCancelled {
            draw()
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    func finish() {
        if isTerminal {
            draw()
            write(2, "\n", 1)
        } else {
            printError("  \(name): \(done.withLockedValue { $0 })/\(total) sessions done")
        }
    }

    private func draw() {
        guard isTerminal else { return }
        let count = done.withLockedValue { $0 }
        let width = 30
        let filled = total == 0 ? width : count * width / total
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        var line = "\r  \(name.padding(24)) [\(bar)] \(count)/\(total)"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}

/// The results table.
enum DemoReport {
    static func table(_ runs: [DemoRun]) -> String {
        let header = ["run", "sessions", "ok", "closed 1011", "other", "p50 first echo", "p99 first echo"]
        let rows = runs.map {
            [
                $0.name, "\($0.sessions)", "\($0.ok)", "\($0.closed1011)", "\($0.other)", $0.percentile(0.5),
                $0.percentile(0.99),
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == 0 ? cell.padding(widths[index]) : cell.leftPadding(widths[index])
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
    }
}

extension String {
    func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
    func leftPadding(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
