import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// Log lines kept for a test to look at, and to wait for.
final class CapturedLog: Sendable {
    private struct State {
        var lines: [(message: String, metadata: Logger.Metadata)] = []
        var waiters: [(message: String, count: Int, id: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = NIOLockedValueBox(State())

    var logger: Logger {
        Logger(label: "captured") { _ in CapturingLogHandler(log: self) }
    }

    func lines(_ message: String) -> [Logger.Metadata] {
        state.withLockedValue { $0.lines.filter { $0.message == message }.map(\.metadata) }
    }

    fileprivate func append(_ message: String, _ metadata: Logger.Metadata) {
        let ready = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.lines.append((message, metadata))
            var ready: [CheckedContinuation<Void, Never>] = []
            state.waiters.removeAll { waiter in
                guard state.lines.count(where: { $0.message == waiter.message }) >= waiter.count else { return false }
                ready.append(waiter.continuation)
                return true
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }

    /// Waits until `count` lines say `message`; fails with ``TimedOut`` after 20 s.
    func waitFor(_ message: String, count: Int = 1) async throws {
        try await withTimeout(seconds: 20) { await self.waitForever(message, count: count) }
    }

    private func waitForever(_ message: String, count: Int) async {
        let id = UInt64.random(in: 0...UInt64.max)
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let done = state.withLockedValue { state -> Bool in
                    if state.lines.count(where: { $0.message == message }) >= count || Task.isCancelled { return true }
                    state.waiters.append((message, count, id, continuation))
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            let cancelled = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            cancelled?.resume()
        }
    }
}

private struct CapturingLogHandler: LogHandler {
    let log: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        log.append(event.message.description, metadata.merging(event.metadata ?? [:]) { _, new in new })
    }
}

/// `/metrics`' text.
func metricsText(_ metrics: ProxyMetrics) -> String {
    String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
}

/// The value of an unlabelled metric in `/metrics`' text.
func metricValue(_ metrics: ProxyMetrics, _ name: String) -> Double? {
    let text = metricsText(metrics)
    for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.split(separator: " ")[1])
    }
    return nil
}

@Suite("Connection limit on EmbeddedChannels")
struct EmbeddedConnectionLimitTests {
    // MARK: Logging at most once a second

    @Test("the first occurrence is logged at once, the next ones together a second later, then quiet")
    func rateLimitedLog() {
        let loop = EmbeddedEventLoop()
        let lines = NIOLockedValueBox<[Int]>([])
        let log = RateLimitedLog { count in lines.withLockedValue { $0.append(count) } }
        log.record(on: loop)
        for _ in 0..<99 { log.record(on: loop) }
        #expect(lines.withLockedValue { $0 } == [1])
        loop.advanceTime(by: .milliseconds(999))
        #expect(lines.withLockedValue { $0 } == [1])
        loop.advanceTime(by: .milliseconds(1))
        #expect(lines.withLockedValue { $0 } == [1, 99])
        log.record(on: loop)
        loop.advanceTime(by: .seconds(1))
        #expect(lines.withLockedValue { $0 } == [1, 99, 1])
        loop.advanceTime(by: .seconds(1))
        #expect(lines.withLockedValue { $0 } == [1, 99, 1], "nothing new: no line")
        log.record(on: loop)
        #expect(lines.withLockedValue { $0 } == [1, 99, 1, 1], "a quiet second passed: logged at once")
    }

    // MARK: READYGATE_MAX_CONNECTIONS

    @Test("slots are taken at accept and given back once, when the channel closes")
    func connectionSlots() throws {
        let loop = EmbeddedEventLoop()
        let metrics = ProxyMetrics()
        let log = CapturedLog()
        let limit = ConnectionLimit(limit: 2, metrics: metrics, logger: log.logger)
        let channels = (0..<4).map { _ in EmbeddedChannel(loop: loop) }
        #expect(limit.admit(channels[0]))
        #expect(limit.admit(channels[1]))
        #expect(!limit.admit(channels[2]))
        #expect(!limit.admit(channels[3]))
        #expect(limit.activeConnections == 2)
        #expect(metricValue(metrics, "readygate_connections_active") == 2)
        #expect(metricValue(metrics, "readygate_connections_refused_total") == 2)
        #expect(log.lines("connections_refused").map { $0["refused"] } == ["1"])
        loop.advanceTime(by: .seconds(1))
        #expect(log.lines("connections_refused").map { $0["refused"] } == ["1", "1"])

        try channels[0].close().wait()
        _ = try? channels[0].close().wait()
        loop.run()
        #expect(limit.activeConnections == 1, "closing twice gives the slot back once")
        #expect(limit.admit(channels[2]))
        #expect(limit.activeConnections == 2)
        for channel in channels { _ = try? channel.finish() }
        #expect(limit.activeConnections == 0)
        #expect(metricValue(metrics, "readygate_connections_active") == 0)
    }

    @Test("no limit: every connection is admitted and counted")
    func noConnectionLimit() throws {
        let loop = EmbeddedEventLoop()
        let limit = ConnectionLimit(limit: 0, metrics: ProxyMetrics(), logger: CapturedLog().logger)
        let channels = (0..<100).map { _ in EmbeddedChannel(loop: loop) }
        for channel in channels { #expect(limit.admit(channel)) }
        #expect(limit.activeConnections == 100)
        for channel in channels { _ = try? channel.finish() }
        #expect(limit.activeConnections == 0)
    }

    /// A refused connection's pipeline on an active `EmbeddedChannel`.
    func refusedChannel(metrics: ProxyMetrics = ProxyMetrics()) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try ConnectionRefusalHandler.configure(channel: channel, metrics: metrics)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
        return channel
    }

    func written(_ channel: EmbeddedChannel) throws -> String {
        var all = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&chunk) }
        return String(buffer: all)
    }

    @Test(
        "a refused request gets 503 with Connection: close, an upgrade no 101, and the connection closes",
        arguments: [
            "GET /api HTTP/1.1\r\nHost: a\r\n\r\n",
            upgradeRequest(),
            "POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        ]
    )
    func refusal(request: String) throws {
        let metrics = ProxyMetrics()
        let channel = try refusedChannel(metrics: metrics)
        try channel.writeInbound(ByteBuffer(string: request))
        let response = try written(channel)
        #expect(response.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(response.lowercased().contains("\r\nconnection: close\r\n"))
        #expect(response.hasSuffix("\r\n\r\n" + ConnectionRefusalHandler.body))
        #expect(!response.contains("101"))
        #expect(!channel.isActive)
        #expect(metricsText(metrics).contains(#"readygate_http_responses_total{source="proxy",code="5xx"} 1"#))
    }

    @Test("the answer waits for the end of the request body before the connection closes")
    func refusalReadsTheBody() throws {
        let channel = try refusedChannel()
        try channel.writeInbound(ByteBuffer(string: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhalf"))
        #expect(try written(channel).hasPrefix("HTTP/1.1 503"))
        #expect(channel.isActive, "closing with the body unread could reset the connection")
        try channel.writeInbound(ByteBuffer(string: "-done!"))
        #expect(!channel.isActive)
    }

    @Test("a refused connection that sends no request gets its 503 after the timeout")
    func refusalTimeout() throws {
        let channel = try refusedChannel()
        try channel.writeInbound(ByteBuffer(string: "GET / HT"))
        channel.embeddedEventLoop.advanceTime(by: ConnectionRefusalHandler.timeout - .milliseconds(1))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(try written(channel).hasPrefix("HTTP/1.1 503"))
        #expect(!channel.isActive)
    }
}
