import NIOCore
import NIOEmbedded
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

@Suite("Global cap on held bytes on EmbeddedChannels")
struct EmbeddedHeldBytesBudgetTests {
    // MARK: The global cap on held bytes

    /// A hold on `loop` charging `budget`, with a read counter in front and a sink behind.
    func holdChannel(
        loop: EmbeddedEventLoop,
        budget: HeldBytesBudget,
        maxHeldBytes: Int = 1 << 20
    ) throws -> (EmbeddedChannel, ClientHoldHandler, ReadCounter, ByteSink) {
        let hold = ClientHoldHandler(
            scanner: WebSocketFrameScanner(role: .client),
            maxHeldBytes: maxHeldBytes,
            events: RecordingEvents(),
            budget: budget
        )
        let counter = ReadCounter()
        let sink = ByteSink()
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandlers([counter, hold, sink])
        return (channel, hold, counter, sink)
    }

    func budget(cap: Int, metrics: ProxyMetrics = ProxyMetrics(), log: CapturedLog = CapturedLog()) -> HeldBytesBudget {
        HeldBytesBudget(cap: cap, metrics: metrics, logger: log.logger)
    }

    @Test("at the global cap a second session's hold stops reading, is counted, and reads on when the first releases")
    func capPausesAnotherHold() throws {
        let loop = EmbeddedEventLoop()
        let metrics = ProxyMetrics()
        let log = CapturedLog()
        let budget = budget(cap: 64, metrics: metrics, log: log)
        let (first, firstHold, _, firstSink) = try holdChannel(loop: loop, budget: budget)
        let (second, _, secondReads, secondSink) = try holdChannel(loop: loop, budget: budget)
        let frame = masked(.binary, Array(repeating: 1, count: 70))
        try first.writeInbound(ByteBuffer(bytes: frame))
        #expect(budget.heldBytes == frame.count)
        #expect(metricValue(metrics, "readygate_held_bytes") == Double(frame.count))

        second.read()
        second.read()
        #expect(secondReads.reads == 0, "paused by the global cap, not by its own bound")
        #expect(budget.pausedHolds == 1)
        #expect(metricValue(metrics, "readygate_held_bytes_cap_pauses_total") == 1, "one pause, however many reads")
        #expect(log.lines("held_bytes_cap_reached").map { $0["paused"] } == ["1"])

        firstHold.release()
        #expect(firstSink.received == frame)
        #expect(budget.heldBytes == 0)
        #expect(secondReads.reads == 0, "woken on its own event loop")
        loop.run()
        #expect(secondReads.reads == 1)
        #expect(budget.pausedHolds == 0)
        #expect(secondSink.received.isEmpty)
        #expect(metricValue(metrics, "readygate_held_bytes") == 0)
        _ = try first.finish()
        _ = try second.finish()
    }

    @Test("a hold that reached the cap itself stops reading too; below the cap reads pass")
    func capPausesItsOwnHolder() throws {
        let loop = EmbeddedEventLoop()
        let budget = budget(cap: 100)
        let (channel, hold, reads, _) = try holdChannel(loop: loop, budget: budget)
        try channel.writeInbound(ByteBuffer(bytes: masked(.text, Array(repeating: 2, count: 40))))
        channel.read()
        #expect(reads.reads == 1, "46 of 100 bytes held")
        try channel.writeInbound(ByteBuffer(bytes: masked(.text, Array(repeating: 3, count: 60))))
        channel.read()
        #expect(reads.reads == 1)
        hold.release()
        #expect(reads.reads == 2, "release reads on")
        #expect(budget.heldBytes == 0)
        _ = try channel.finish()
    }

    @Test("held bytes go back to the budget at READY")
    func returnedAtReady() throws {
        let budget = budget(cap: 1 << 20)
        let (channel, hold, _, sink) = try holdChannel(loop: EmbeddedEventLoop(), budget: budget)
        let frames = masked(.text, Array("one".utf8)) + masked(.binary, Array(repeating: 5, count: 300))
        try channel.writeInbound(ByteBuffer(bytes: frames))
        #expect(budget.heldBytes == frames.count)
        hold.release()
        #expect(budget.heldBytes == 0)
        #expect(sink.received == frames)
        // Bytes read after READY are relayed, not held or charged.
        try channel.writeInbound(ByteBuffer(bytes: masked(.text, [1])))
        #expect(budget.heldBytes == 0)
        #expect(try channel.finish().isClean)
    }

    @Test("held bytes go back to the budget when the session ends before READY")
    func returnedAtDiscard() throws {
        let budget = budget(cap: 10)
        let (channel, hold, reads, sink) = try holdChannel(loop: EmbeddedEventLoop(), budget: budget)
        try channel.writeInbound(ByteBuffer(bytes: masked(.binary, Array(repeating: 5, count: 50))))
        channel.read()
        #expect(reads.reads == 0)
        hold.discard()
        #expect(budget.heldBytes == 0)
        #expect(budget.pausedHolds == 0)
        #expect(reads.reads == 1, "reads on so the watcher sees the client's close")
        // A discarded hold keeps nothing, so the budget does not stop it.
        try channel.writeInbound(ByteBuffer(bytes: masked(.binary, Array(repeating: 5, count: 50))))
        channel.read()
        #expect(reads.reads == 2)
        #expect(budget.heldBytes == 0)
        #expect(sink.received.isEmpty)
        #expect(try channel.finish().isClean)
    }

    @Test("held bytes go back to the budget when the client is gone with frames held")
    func returnedWhenClientGone() throws {
        let loop = EmbeddedEventLoop()
        let budget = budget(cap: 10)
        let (channel, _, reads, _) = try holdChannel(loop: loop, budget: budget)
        try channel.writeInbound(ByteBuffer(bytes: masked(.binary, Array(repeating: 5, count: 50))))
        channel.read()
        #expect(reads.reads == 0)
        #expect(budget.pausedHolds == 1)
        try channel.close().wait()
        loop.run()
        #expect(budget.heldBytes == 0)
        #expect(budget.pausedHolds == 0, "a gone hold is not woken")
    }

    @Test("with no cap nothing pauses, and held bytes are still counted")
    func noCap() throws {
        let metrics = ProxyMetrics()
        let budget = budget(cap: 0, metrics: metrics)
        let (channel, hold, reads, _) = try holdChannel(loop: EmbeddedEventLoop(), budget: budget)
        try channel.writeInbound(ByteBuffer(bytes: masked(.binary, Array(repeating: 5, count: 5000))))
        channel.read()
        #expect(reads.reads == 1)
        #expect(metricValue(metrics, "readygate_held_bytes") == 5008)
        hold.release()
        #expect(metricValue(metrics, "readygate_held_bytes") == 0)
        #expect(metricValue(metrics, "readygate_held_bytes_cap_pauses_total") == 0)
        _ = try channel.finish()
    }
}
