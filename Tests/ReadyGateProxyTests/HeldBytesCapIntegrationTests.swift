import NIOConcurrencyHelpers
import NIOCore
import ReadyGateCore
import ReadyGateDemo
import ReadyGateTestSupport
import Testing

@testable import ReadyGateProxy

/// `READYGATE_MAX_HELD_BYTES_TOTAL` over loopback.
@Suite("Global cap on held bytes over loopback", .serialized)
struct HeldBytesCapIntegrationTests {
    static let readyMessage = #"{"type":"connection_ready"}"#

    @Test("the global cap pauses a second session's client; after READY nothing is lost")
    func heldBytesCap() async throws {
        let cap = 64 * 1024
        let go = Gate()
        // Each connection: 101, then, at `go`, the ready message; then every data frame echoed.
        let backend = try await ScriptedBackend { _, connection in
            try await connection.acceptUpgrade()
            await go.wait()
            try await connection.write(serverFrame(.text, Array(Self.readyMessage.utf8)))
            while let frame = try await connection.readFrame() {
                if frame.opcode == 0x8 {
                    try await connection.write(serverFrame(.close, frame.payload))
                    return
                }
                try await connection.write(serverFrame(.binary, frame.payload))
            }
        }
        defer {
            Task {
                await go.open()
                await backend.close()
            }
        }
        let log = CapturedLog()
        var settings = ReadyGateSettings()
        settings.environment = .testing
        settings.timing = DeploymentEnvironment.testing.profile
        settings.timing.handshakeTimeoutMs = 30_000
        settings.listen = HostAndPort(host: "127.0.0.1", port: 0)
        settings.upstream = UpstreamTarget(host: "127.0.0.1", port: backend.port, usesTLS: false)
        settings.readyGate = .message
        settings.maxHeldBytesTotal = cap
        let records = SessionRecords()
        let environment = ProxyEnvironment(settings: settings, logger: log.logger) { records.append($0) }
        let server = try await ReadyGateServer.start(environment: environment, group: testGroup)
        defer { Task { try? await server.close() } }
        let budget = environment.heldBytesBudget

        // The first session holds more than the cap: its own next read is withheld (a pause, logged at once).
        let first = Self.payloads(count: 5, seed: 1)
        async let firstEcho = Self.session(port: server.port, payloads: first)
        try await log.waitFor("held_bytes_cap_reached")
        #expect(budget.heldBytes >= cap)

        // The second session's hold is paused at its first read: a second pause, in the next line a second later.
        let second = Self.payloads(count: 32, seed: 2)
        async let secondEcho = Self.session(port: server.port, payloads: second)
        try await log.waitFor("held_bytes_cap_reached", count: 2)
        #expect(budget.pausedHolds == 2)
        #expect(budget.heldBytes < first.joined().count + second.joined().count)

        await go.open()
        #expect(try await firstEcho == first.flatMap { $0 })
        #expect(try await secondEcho == second.flatMap { $0 })

        let ended = try await records.waitFor(2)
        #expect(ended.allSatisfy { $0.undeliveredFrames == 0 && $0.endReason == nil })
        #expect(
            ended.allSatisfy { !$0.patterns.contains(.bufferBackpressure) },
            "the per-session bound never took part"
        )
        // The second session was paused before its client's bytes came in: it never held more than the
        // cap plus one read batch (4 reads of at most 64 KiB), well short of the 512 KiB its client sent.
        let secondRecord = try #require(ended.first { $0.clientToUpstream.messages == UInt64(second.count) })
        #expect(secondRecord.peakHeldBytes <= cap + 4 * 65_536, "peak \(secondRecord.peakHeldBytes)")
        #expect(budget.heldBytes == 0)
        #expect(metricValue(environment.metrics, "readygate_held_bytes") == 0)
        #expect((metricValue(environment.metrics, "readygate_held_bytes_cap_pauses_total") ?? 0) >= 2)
        try await server.close()
        await backend.close()
    }

    /// `count` binary payloads of 16 KiB each.
    static func payloads(count: Int, seed: UInt64) -> [[UInt8]] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { _ in (0..<16_384).map { _ in UInt8.random(in: 0...255, using: &generator) } }
    }

    /// Upgrades, sends `payloads` as binary frames at once (without waiting for the writes: the proxy may
    /// not be reading), reads the echoes after the backend's ready message, closes; returns what came back.
    static func session(port: Int, payloads: [[UInt8]]) async throws -> [UInt8] {
        try await withTimeout(seconds: 60) {
            try await RawClient.session(port: port) { connection in
                let bytes = payloads.flatMap { clientFrame(.binary, $0) }
                let channel = connection.channel.channel
                let written = channel.eventLoop.makePromise(of: Void.self)
                channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: written)
                let expected = payloads.reduce(0) { $0 + $1.count }
                var echoed: [UInt8] = []
                while echoed.count < expected {
                    let frame = try await connection.expectFrame()
                    if frame.opcode == 0x2 { echoed += frame.payload }
                }
                try await written.futureResult.get()
                try await connection.write(clientFrame(.close, closePayload(1000)))
                #expect(try await connection.expectFrame().closeCode == 1000)
                return echoed
            }
        }
    }
}

/// A one-way gate tasks wait at until it opens.
actor Gate {
    private var isOpen = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters = []
    }
}
