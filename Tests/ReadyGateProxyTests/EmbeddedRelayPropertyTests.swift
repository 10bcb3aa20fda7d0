import NIOCore
import NIOEmbedded
import ReadyGateCore
import ReadyGateTestSupport
import Testing

@testable import ReadyGateProxy

/// The relay handlers composed as a session composes them — client: watcher, hold, glue;
/// upstream: watcher, glue — fed random streams cut into random chunks, with READY (the hold's
/// release) at a random byte.
@Suite("Relay properties on EmbeddedChannels")
struct EmbeddedRelayPropertyTests {
    /// Cut points: random ones below `count`, and `mustCut` among them.
    static func cuts(count: Int, mustCut: Int, using random: inout SplitMix64) -> [Int] {
        var cuts = (0..<Int.random(in: 0...20, using: &random)).map { _ in Int.random(in: 0...count, using: &random) }
        cuts += [mustCut, count]
        return Array(Set(cuts)).sorted()
    }

    static func drain(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var bytes: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += Array(buffer: buffer) }
        return bytes
    }

    @Test(
        "the backend gets the client's stream minus the pings answered before READY; each ping one pong",
        arguments: UInt64(1)...150
    )
    func clientStreamAcrossReady(_ seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let (stream, frames) = GeneratedClientStream.make(using: &random)
        let readyAt = Int.random(in: 0...stream.count, using: &random)

        let loop = EmbeddedEventLoop()
        let client = EmbeddedChannel(loop: loop)
        let upstream = EmbeddedChannel(loop: loop)
        let events = RecordingEvents()
        let hold = ClientHoldHandler(
            scanner: WebSocketFrameScanner(role: .client),
            maxHeldBytes: 1 << 20,
            events: events
        )
        let clientGlue = GlueHandler()
        let upstreamGlue = GlueHandler()
        GlueHandler.pair(clientGlue, upstreamGlue)
        try client.pipeline.syncOperations.addHandlers([
            FrameWatcher(side: .client, scanner: WebSocketFrameScanner(role: .client), events: events), hold,
            clientGlue,
        ])
        try upstream.pipeline.syncOperations.addHandlers([
            FrameWatcher(side: .upstream, scanner: WebSocketFrameScanner(role: .server), events: events),
            upstreamGlue,
        ])

        var start = 0
        for cut in Self.cuts(count: stream.count, mustCut: readyAt, using: &random) {
            if cut > start {
                client.pipeline.fireChannelRead(ByteBuffer(bytes: stream[start..<cut]))
                client.pipeline.fireChannelReadComplete()
            }
            if cut == readyAt { hold.release() }
            start = cut
        }

        let answered = frames.filter { $0.opcode.isControl && $0.range.upperBound <= readyAt }
        var expected: [UInt8] = []
        for frame in frames where !(frame.opcode.isControl && frame.range.upperBound <= readyAt) {
            expected += stream[frame.range]
        }
        #expect(try Self.drain(upstream) == expected, "seed \(seed), READY at \(readyAt)")
        let pongs = answered.filter { $0.opcode == .ping }.flatMap {
            WebSocketFrameWriter.frame(opcode: .pong, payload: $0.payload)
        }
        #expect(try Self.drain(client) == pongs, "seed \(seed)")
        #expect(!events.events.contains { if case .protocolError = $0 { true } else { false } }, "seed \(seed)")
        _ = try client.finish()
        _ = try upstream.finish()
    }

    @Test("the backend's stream reaches the client unchanged, however it is cut", arguments: UInt64(1)...100)
    func backendStreamUnchanged(_ seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let frames = GeneratedClientStream.make(using: &random).frames
        let stream = frames.flatMap { WebSocketFrameWriter.frame(opcode: $0.opcode, payload: $0.payload, fin: $0.fin) }

        let loop = EmbeddedEventLoop()
        let client = EmbeddedChannel(loop: loop)
        let upstream = EmbeddedChannel(loop: loop)
        let events = RecordingEvents()
        let clientGlue = GlueHandler()
        let upstreamGlue = GlueHandler()
        GlueHandler.pair(clientGlue, upstreamGlue)
        try client.pipeline.syncOperations.addHandler(clientGlue)
        let watcher = FrameWatcher(side: .upstream, scanner: WebSocketFrameScanner(role: .server), events: events)
        try upstream.pipeline.syncOperations.addHandlers([watcher, upstreamGlue])

        var start = 0
        for cut in Self.cuts(count: stream.count, mustCut: 0, using: &random) where cut > start {
            upstream.pipeline.fireChannelRead(ByteBuffer(bytes: stream[start..<cut]))
            upstream.pipeline.fireChannelReadComplete()
            start = cut
        }
        #expect(try Self.drain(client) == stream, "seed \(seed)")
        #expect(events.events.isEmpty, "seed \(seed): \(events.events)")
        #expect(watcher.stats.frames == UInt64(frames.count))
        _ = try client.finish()
        _ = try upstream.finish()
    }
}
