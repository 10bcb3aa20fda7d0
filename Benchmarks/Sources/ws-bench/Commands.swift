import ArgumentParser
import Atomics
import Foundation
import Histogram
import NIOCore
import NIOPosix
import WSCore

/// One JSON line on stdout (the machine-readable result), fields in order.
func emit(_ fields: [(String, Any)]) {
    let parts = fields.map { key, value -> String in
        let v: String
        switch value {
        case let s as String: v = "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case let d as Double: v = d.isFinite ? String(format: "%.3f", d) : "null"
        case let b as Bool: v = b ? "true" : "false"
        default: v = "\(value)"
        }
        return "\"\(key)\":\(v)"
    }
    print("{" + parts.joined(separator: ",") + "}")
    fflush(nil)
}

/// A human line on stderr.
func say(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

func sleepSeconds(_ s: Double) {
    if s > 0 { usleep(UInt32(min(s, 4000) * 1_000_000)) }
}

struct Target: ParsableArguments {
    @Option(help: "Host to connect to (loopback only).") var host = "127.0.0.1"
    @Option(help: "Port to connect to.") var port = 9001
    @Option(help: "Event loop threads of the load tool.") var threads = 2
    @Option(help: "A name for the target, copied into the JSON.") var label = "target"
    @Option(help: "Payload bytes per message.") var size = 64

    /// Checks the target is on loopback, then runs `body` with a fresh event loop group (shut down
    /// afterwards), the run's shared counters and the message frame every command sends.
    func withLoad<T>(_ body: (MultiThreadedEventLoopGroup, RunShared, ByteBuffer) throws -> T) throws -> T {
        try validateLoopback()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        defer { try? group.syncShutdownGracefully() }
        return try body(group, RunShared(), WSFrames.maskedBinaryFrame(size: size))
    }

    func validateLoopback() throws {
        guard host == "127.0.0.1" || host == "localhost" || host == "::1" || host.hasPrefix("127.") else {
            throw ValidationError("ws-bench only targets loopback addresses")
        }
    }
}

/// Opens `count` sessions, at most `concurrency` at a time; returns the channels that came up
/// (their first echo arrived) and the number that failed.
func openMany(
    count: Int, concurrency: Int, group: EventLoopGroup, target: Target, mode: ClientMode, frame: ByteBuffer,
    shared: RunShared, waitForEcho: Bool
) -> (channels: [Channel], failed: Int) {
    var channels: [Channel] = []
    channels.reserveCapacity(count)
    var failed = 0
    var firstError: Error?
    var started = 0
    while started < count {
        let n = min(concurrency, count - started)
        let sessions = (0..<n).map { _ in
            openSession(group: group, host: target.host, port: target.port, mode: mode, frame: frame, shared: shared)
        }
        for s in sessions {
            do {
                if waitForEcho { _ = try s.echoed.wait() } else { _ = try s.opened.wait() }
                channels.append(try s.channel.wait())
            } catch {
                failed += 1
                if firstError == nil { firstError = error }
                if let ch = try? s.channel.wait() { ch.close(promise: nil) }
            }
        }
        started += n
    }
    if let firstError { say("  first failure: \(firstError)") }
    return (channels, failed)
}

func closeAll(_ channels: [Channel]) {
    let futures = channels.map { $0.close() }
    for f in futures { _ = try? f.wait() }
}

struct Throughput: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Closed loop: N connections, D messages in flight each; prints msg/s.")
    @OptionGroup var target: Target
    @Option(help: "Connections.") var connections = 50
    @Option(help: "Messages in flight per connection.") var inflight = 8
    @Option(help: "Measured seconds.") var duration = 10.0
    @Option(help: "Seconds before measuring.") var warmup = 1.0

    func run() throws {
        try target.withLoad { group, shared, frame in
            let (channels, failed) = openMany(
                count: connections, concurrency: connections, group: group, target: target,
                mode: .throughput(inflight: inflight), frame: frame, shared: shared, waitForEcho: false)
            guard failed == 0 else { throw ValidationError("\(failed) connections failed") }
            sleepSeconds(warmup)
            let c0 = shared.received.load(ordering: .relaxed)
            let t0 = nowNanos()
            sleepSeconds(duration)
            let c1 = shared.received.load(ordering: .relaxed)
            let t1 = nowNanos()
            shared.stop.store(true, ordering: .relaxed)
            sleepSeconds(0.3)
            let total = shared.received.load(ordering: .relaxed)
            closeAll(channels)
            let seconds = Double(t1 - t0) / 1e9
            let rate = Double(c1 - c0) / seconds
            say(String(format: "[%@] throughput: %.0f msg/s (%d conns x %d in flight, %d B, %.1f s)", target.label, rate, connections, inflight, target.size, seconds))
            emit([
                ("mode", "throughput"), ("label", target.label), ("connections", connections), ("inflight", inflight),
                ("size", target.size), ("seconds", seconds), ("messages", c1 - c0), ("msgs_per_s", rate),
                ("messages_total", total),
            ])
        }
    }
}

struct Latency: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open loop at a fixed rate; latency from each message's scheduled send time to its echo (HDR).")
    @OptionGroup var target: Target
    @Option(help: "Messages per second, over all connections.") var rate = 10_000
    @Option(help: "Measured seconds.") var duration = 10.0
    @Option(help: "Seconds of the schedule that are not recorded.") var warmup = 2.0
    @Option(help: "Connections.") var connections = 50

    func run() throws {
        try target.withLoad { group, shared, frame in
            let (channels, failed) = openMany(
                count: connections, concurrency: connections, group: group, target: target, mode: .latency,
                frame: frame, shared: shared, waitForEcho: false)
            guard failed == 0 else { throw ValidationError("\(failed) connections failed") }
            let interval = UInt64(Double(connections) * 1e9 / Double(rate))
            let t0 = nowNanos() + 50_000_000
            let warmupEnd = t0 + UInt64(warmup * 1e9)
            let end = warmupEnd + UInt64(duration * 1e9)
            for (i, ch) in channels.enumerated() {
                let start = StartSchedule(
                    first: t0 + UInt64(i) * interval / UInt64(connections), interval: interval, end: end,
                    warmupEnd: warmupEnd)
                ch.pipeline.fireUserInboundEventTriggered(start)
            }
            sleepSeconds(Double(end - nowNanos()) / 1e9 + 1.0)
            for ch in channels { ch.pipeline.fireUserInboundEventTriggered(ReportNow()) }
            let deadline = nowNanos() + 5_000_000_000
            while shared.histograms.withLockedValue({ $0.count }) < channels.count, nowNanos() < deadline { usleep(10_000) }
            closeAll(channels)
            var h = Histogram<UInt64>(
                lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            for part in shared.histograms.withLockedValue({ $0 }) { h.add(part) }
            func us(_ p: Double) -> Double { Double(h.valueAtPercentile(p)) / 1000 }
            let achieved = Double(h.totalCount) / duration
            say(String(format: "[%@] latency @ %d msg/s (achieved %.0f): p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us", target.label, rate, achieved, us(50), us(99), us(99.9), Double(h.max) / 1000))
            emit([
                ("mode", "latency"), ("label", target.label), ("rate", rate), ("connections", connections),
                ("size", target.size), ("seconds", duration), ("count", Int(h.totalCount)), ("achieved_rate", achieved),
                ("p50_us", us(50)), ("p90_us", us(90)), ("p99_us", us(99)), ("p999_us", us(99.9)),
                ("max_us", Double(h.max) / 1000), ("outstanding", shared.outstanding.load(ordering: .relaxed)),
            ])
        }
    }
}

struct Idle: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Opens idle sessions (one echo each, so they are spliced), reports when all are up, holds them.")
    @OptionGroup var target: Target
    @Option(help: "Sessions.") var sessions = 10_000
    @Option(help: "Seconds to hold them once all are up.") var hold = 20.0
    @Option(help: "Sessions opened at a time.") var concurrency = 200

    func run() throws {
        try target.withLoad { group, shared, frame in
            let t0 = nowNanos()
            let (channels, failed) = openMany(
                count: sessions, concurrency: concurrency, group: group, target: target, mode: .single, frame: frame,
                shared: shared, waitForEcho: true)
            let seconds = Double(nowNanos() - t0) / 1e9
            say(String(format: "[%@] idle: %d sessions up (%d failed) in %.1f s; holding %.0f s", target.label, channels.count, failed, seconds, hold))
            emit([
                ("mode", "idle"), ("event", "all_up"), ("label", target.label), ("sessions", channels.count),
                ("failed", failed), ("open_seconds", seconds), ("hold_seconds", hold),
            ])
            sleepSeconds(hold)
            let alive = channels.filter { $0.isActive }.count
            closeAll(channels)
            emit([("mode", "idle"), ("event", "closed"), ("label", target.label), ("alive_at_end", alive)])
        }
    }
}

struct FirstEcho: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "first-echo",
        abstract: "New sessions one after another: time from connect start to 101 and to the first echo.")
    @OptionGroup var target: Target
    @Option(help: "Sessions.") var sessions = 200

    func run() throws {
        try target.withLoad { group, shared, frame in
            func makeHistogram() -> Histogram<UInt64> {
                Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            }
            var toEcho = makeHistogram()
            var toUpgrade = makeHistogram()
            var failed = 0
            for _ in 0..<sessions {
                let start = nowNanos()
                let s = openSession(group: group, host: target.host, port: target.port, mode: .single, frame: frame, shared: shared)
                do {
                    let opened = try s.opened.wait()
                    let echoed = try s.echoed.wait()
                    _ = toUpgrade.record(opened - start)
                    _ = toEcho.record(echoed - start)
                } catch {
                    failed += 1
                }
                if let ch = try? s.channel.wait() { _ = try? ch.close().wait() }
            }
            func us(_ h: Histogram<UInt64>, _ p: Double) -> Double { Double(h.valueAtPercentile(p)) / 1000 }
            say(String(format: "[%@] first echo: p50 %.0f us, p99 %.0f us, max %.0f us (101: p50 %.0f us); %d failed", target.label, us(toEcho, 50), us(toEcho, 99), Double(toEcho.max) / 1000, us(toUpgrade, 50), failed))
            emit([
                ("mode", "first_echo"), ("label", target.label), ("sessions", sessions), ("failed", failed),
                ("p50_us", us(toEcho, 50)), ("p90_us", us(toEcho, 90)), ("p99_us", us(toEcho, 99)),
                ("max_us", Double(toEcho.max) / 1000), ("upgrade_p50_us", us(toUpgrade, 50)),
                ("upgrade_p99_us", us(toUpgrade, 99)),
            ])
        }
    }
}

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "New sessions per second: C loops, each connect, upgrade, one echo, close, then again.")
    @OptionGroup var target: Target
    @Option(help: "Sessions in progress at once.") var concurrency = 20
    @Option(help: "Measured seconds.") var duration = 5.0

    func run() throws {
        try target.withLoad { group, shared, frame in
            let done = ManagedAtomic<Int>(0)
            let failed = ManagedAtomic<Int>(0)
            let stop = ManagedAtomic<Bool>(false)
            let loops = DispatchGroup()
            let host = target.host
            let port = target.port
            @Sendable func next() {
                if stop.load(ordering: .relaxed) {
                    loops.leave()
                    return
                }
                let s = openSession(group: group, host: host, port: port, mode: .single, frame: frame, shared: shared)
                s.echoed.whenComplete { result in
                    switch result {
                    case .success: done.wrappingIncrement(ordering: .relaxed)
                    case .failure: failed.wrappingIncrement(ordering: .relaxed)
                    }
                    // The next session starts once this one's connection is closed.
                    s.channel.flatMap { $0.close() }.whenComplete { _ in next() }
                }
            }
            let start = nowNanos()
            for _ in 0..<concurrency {
                loops.enter()
                next()
            }
            sleepSeconds(duration)
            stop.store(true, ordering: .relaxed)
            let elapsed = Double(nowNanos() - start) / 1e9
            let completed = done.load(ordering: .relaxed)
            _ = loops.wait(timeout: .now() + 30)
            let rate = Double(completed) / elapsed
            say(String(format: "[%@] sessions: %.0f/s (%d in %.1f s, %d failed)", target.label, rate, completed, elapsed, failed.load(ordering: .relaxed)))
            emit([
                ("mode", "sessions"), ("label", target.label), ("concurrency", concurrency), ("seconds", elapsed),
                ("sessions", completed), ("failed", failed.load(ordering: .relaxed)), ("sessions_per_s", rate),
            ])
        }
    }
}

struct Startup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Spawns a server command and measures exec-to-accepting on a port (polling connect every 100 us).")
    @Option(help: "Port the command listens on (127.0.0.1).") var port: Int
    @Option(help: "Runs.") var runs = 5
    @Option(help: "A name, copied into the JSON.") var label = "target"
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).") var command: [String]

    func run() throws {
        var cmd = command
        if cmd.first == "--" { cmd.removeFirst() }
        guard let exe = cmd.first else { throw ValidationError("no command") }
        var samples: [Double] = []
        for _ in 0..<runs {
            guard !canConnect(port: port) else { throw ValidationError("port \(port) is already taken") }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: exe)
            process.arguments = Array(cmd.dropFirst())
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            let start = nowNanos()
            try process.run()
            var elapsed: Double?
            while nowNanos() - start < 10_000_000_000 {
                if canConnect(port: port) {
                    elapsed = Double(nowNanos() - start) / 1e6
                    break
                }
                usleep(100)
            }
            process.terminate()
            process.waitUntilExit()
            while canConnect(port: port) { usleep(1000) }
            guard let elapsed else { throw ValidationError("\(exe) did not listen on \(port) within 10 s") }
            samples.append(elapsed)
        }
        let sorted = samples.sorted()
        let median = sorted[sorted.count / 2]
        say(String(format: "[%@] exec -> accepting: median %.1f ms (min %.1f, max %.1f, %d runs)", label, median, sorted.first!, sorted.last!, runs))
        emit([
            ("mode", "startup"), ("label", label), ("runs", runs), ("median_ms", median), ("min_ms", sorted.first!),
            ("max_ms", sorted.last!),
        ])
    }

    func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return r == 0
    }
}

@main
struct WSBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws-bench",
        abstract: "ReadyGate's WebSocket load tool (loopback only). One JSON line per result on stdout.",
        subcommands: [Throughput.self, Latency.self, Idle.self, FirstEcho.self, Sessions.self, Startup.self])
}
