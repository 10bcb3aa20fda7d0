import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// What the relay handlers report, in order (stands in for the session).
final class RecordingEvents: SessionEvents {
    enum Event: Equatable {
        case close(SessionStateMachine.Side, UInt16?)
        case protocolError(SessionStateMachine.Side, UInt16)
        case inputClosed(SessionStateMachine.Side, gone: Bool)
        case ready
        case held(frames: Int, bytes: Int)
        case full(bytes: Int)
        case pong
        case backendData
    }
    var events: [Event] = []
    /// Bytes the next handler had received when each event came (the watcher reports after passing them on).
    var bytesPassedAtEvent: [Int] = []
    var passed: () -> Int = { 0 }

    private func record(_ event: Event) {
        events.append(event)
        bytesPassedAtEvent.append(passed())
    }

    func closeFrame(from side: SessionStateMachine.Side, code: UInt16?) { record(.close(side, code)) }
    func protocolError(from side: SessionStateMachine.Side, _ error: WebSocketProtocolError) {
        record(.protocolError(side, error.closeCode))
    }
    func inputClosed(_ side: SessionStateMachine.Side, gone: Bool) { record(.inputClosed(side, gone: gone)) }
    func readyMessageSeen() { record(.ready) }
    func clientFramesHeld(frames: Int, bytes: Int) { record(.held(frames: frames, bytes: bytes)) }
    func holdFull(bytes: Int) { record(.full(bytes: bytes)) }
    func ownPongReceived(from side: SessionStateMachine.Side) { record(.pong) }
    func backendDataStarted() { record(.backendData) }
}

/// Keeps the bytes that reach the end of the pipeline.
final class ByteSink: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var received: [UInt8] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += Array(buffer: unwrapInboundIn(data))
    }
}

func masked(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
    WebSocketFrameWriter.frame(opcode: opcode, payload: payload, fin: fin, maskingKey: 0x0A0B_0C0D)
}

@Suite("Relay handlers on an EmbeddedChannel")
struct EmbeddedRelayHandlerTests {
    // MARK: FrameWatcher

    func watcherChannel(
        side: SessionStateMachine.Side,
        readyMessage: String? = nil
    ) throws -> (EmbeddedChannel, RecordingEvents, ByteSink) {
        let events = RecordingEvents()
        let role: WebSocketPeerRole = side == .client ? .client : .server
        let watcher = FrameWatcher(side: side, scanner: WebSocketFrameScanner(role: role), events: events)
        if let readyMessage { watcher.watchForReadyMessage(readyMessage) }
        let sink = ByteSink()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([watcher, sink])
        events.passed = { sink.received.count }
        return (channel, events, sink)
    }

    @Test("the watcher reports a close frame cut across reads once, after passing its bytes on")
    func watcherCloseAcrossReads() throws {
        let (channel, events, sink) = try watcherChannel(side: .client)
        let close = masked(.close, WebSocketFrameWriter.closePayload(code: 4001, reason: "bye"))
        for byte in close { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        #expect(sink.received == close)
        #expect(events.events == [.close(.client, 4001)])
        #expect(events.bytesPassedAtEvent == [close.count])
        #expect(try channel.finish().isClean)
    }

    @Test("the watcher reports the ready message, then stops looking; counters count both directions' frames")
    func watcherReadyMessage() throws {
        let (channel, events, sink) = try watcherChannel(side: .upstream, readyMessage: "ready")
        let hello = WebSocketFrameWriter.frame(opcode: .text, payload: Array("hello".utf8))
        let ready = WebSocketFrameWriter.frame(opcode: .text, payload: Array(#"{"state":"ready"}"#.utf8))
        try channel.writeInbound(ByteBuffer(bytes: hello + ready + ready))
        #expect(events.events == [.ready])
        #expect(sink.received.count == hello.count + 2 * ready.count)
        let watcher = try channel.pipeline.syncOperations.handler(type: FrameWatcher.self)
        #expect(watcher.stats.messages == 3)
        #expect(try channel.finish().isClean)
    }

    @Test("a protocol error is reported once; later bytes still pass, counted")
    func watcherProtocolError() throws {
        let (channel, events, sink) = try watcherChannel(side: .client)
        let unmasked = WebSocketFrameWriter.frame(opcode: .text, payload: [1, 2, 3])
        try channel.writeInbound(ByteBuffer(bytes: unmasked))
        try channel.writeInbound(ByteBuffer(bytes: unmasked))
        #expect(events.events == [.protocolError(.client, 1002)])
        #expect(sink.received == unmasked + unmasked)
        let watcher = try channel.pipeline.syncOperations.handler(type: FrameWatcher.self)
        #expect(watcher.stats.bytes == UInt64(2 * unmasked.count))
        #expect(try channel.finish().isClean)
    }

    @Test("a FIN is reported as input closed, the connection's end as gone")
    func watcherEnds() throws {
        let (channel, events, _) = try watcherChannel(side: .upstream)
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        _ = try channel.finish()
        #expect(events.events == [.inputClosed(.upstream, gone: false), .inputClosed(.upstream, gone: true)])
    }

    // MARK: ClientHoldHandler

    func holdChannel(maxHeldBytes: Int = 1 << 20) throws -> (
        EmbeddedChannel, ClientHoldHandler, RecordingEvents, ByteSink
    ) {
        let events = RecordingEvents()
        let hold = ClientHoldHandler(
            scanner: WebSocketFrameScanner(role: .client),
            maxHeldBytes: maxHeldBytes,
            events: events
        )
        let sink = ByteSink()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([hold, sink])
        return (channel, hold, events, sink)
    }

    @Test("held data waits; a ping is answered at once; release passes everything on in order and leaves")
    func holdAndRelease() throws {
        let (channel, hold, events, sink) = try holdChannel()
        let first = masked(.text, Array("one".utf8))
        let ping = masked(.ping, [7, 7])
        let second = masked(.binary, [1, 2, 3, 4])
        try channel.writeInbound(ByteBuffer(bytes: first + ping + second))
        #expect(sink.received.isEmpty)
        let pong = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(buffer: pong) == WebSocketFrameWriter.frame(opcode: .pong, payload: [7, 7]))
        #expect(events.events.last == .held(frames: 2, bytes: first.count + second.count))

        hold.release()
        #expect(sink.received == first + second)
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: ClientHoldHandler.self) }
        let later = masked(.text, Array("after".utf8))
        try channel.writeInbound(ByteBuffer(bytes: later))
        #expect(sink.received == first + second + later)
        #expect(try channel.finish().isClean)
    }

    @Test("a ping cut by release reaches the next handler whole and is not answered by the hold")
    func releaseMidPing() throws {
        let (channel, hold, _, sink) = try holdChannel()
        let ping = masked(.ping, Array(0..<20))
        try channel.writeInbound(ByteBuffer(bytes: Array(ping.prefix(9))))
        hold.release()
        try channel.writeInbound(ByteBuffer(bytes: Array(ping.dropFirst(9))))
        #expect(sink.received == ping)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        #expect(try channel.finish().isClean)
    }

    @Test("at the bound the hold stops reading, reports once, and reads again at release")
    func holdBound() throws {
        let (channel, hold, events, _) = try holdChannel(maxHeldBytes: 16)
        let counter = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(counter, position: .first)
        let frame = masked(.binary, Array(repeating: 9, count: 32))
        try channel.writeInbound(ByteBuffer(bytes: frame))
        channel.read()
        channel.read()
        #expect(counter.reads == 0)
        #expect(events.events.filter { if case .full = $0 { true } else { false } } == [.full(bytes: frame.count)])
        hold.release()
        #expect(counter.reads == 1)
        #expect(try channel.finish().isClean)
    }

    @Test("discard lets go of what was held and keeps nothing after")
    func holdDiscard() throws {
        let (channel, hold, _, sink) = try holdChannel()
        try channel.writeInbound(ByteBuffer(bytes: masked(.text, [1])))
        hold.discard()
        try channel.writeInbound(ByteBuffer(bytes: masked(.text, [2])))
        #expect(sink.received.isEmpty)
        #expect(try channel.finish().isClean)
    }

    // MARK: GlueHandler

    func gluedPair() throws -> (EmbeddedChannel, EmbeddedChannel, GlueHandler, GlueHandler) {
        let loop = EmbeddedEventLoop()
        let a = EmbeddedChannel(loop: loop)
        let b = EmbeddedChannel(loop: loop)
        let glueA = GlueHandler()
        let glueB = GlueHandler()
        try a.pipeline.syncOperations.addHandler(glueA)
        try b.pipeline.syncOperations.addHandler(glueB)
        GlueHandler.pair(glueA, glueB)
        return (a, b, glueA, glueB)
    }

    @Test("the glue relays to its partner, flushed at read-complete")
    func glueRelays() throws {
        let (a, b, _, _) = try gluedPair()
        a.pipeline.fireChannelRead(ByteBuffer(bytes: [1, 2, 3]))
        #expect(try b.readOutbound(as: ByteBuffer.self) == nil, "not flushed before read-complete")
        a.pipeline.fireChannelReadComplete()
        #expect(try b.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [1, 2, 3]))
        _ = try a.finish()
        _ = try b.finish()
    }

    @Test("the glue reads only while its partner is writable, and resumes when it is again")
    func glueBackpressure() throws {
        let (a, b, _, _) = try gluedPair()
        let counter = ReadCounter()
        try a.pipeline.syncOperations.addHandler(counter, position: .first)
        b.isWritable = false
        a.read()
        #expect(counter.reads == 0)
        b.isWritable = true
        b.pipeline.fireChannelWritabilityChanged()
        #expect(counter.reads == 1)
        _ = try a.finish()
        _ = try b.finish()
    }

    @Test("after the proxy's own close frame nothing more is relayed to that peer")
    func glueStopsAfterClose() throws {
        let (a, b, _, glueB) = try gluedPair()
        glueB.stopRelaying()
        glueB.send(ByteBuffer(bytes: [0x88, 0x00]))
        a.pipeline.fireChannelRead(ByteBuffer(bytes: [1]))
        a.pipeline.fireChannelReadComplete()
        #expect(try b.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [0x88, 0x00]))
        #expect(try b.readOutbound(as: ByteBuffer.self) == nil)
        _ = try a.finish()
        _ = try b.finish()
    }

    @Test("writes held until the switch go out in order, then the relay writes directly")
    func glueHoldsWritesUntilSwitched() throws {
        let (a, b, _, glueB) = try gluedPair()
        glueB.holdWritesUntilSwitched()
        a.pipeline.fireChannelRead(ByteBuffer(bytes: [1]))
        a.pipeline.fireChannelReadComplete()
        #expect(try b.readOutbound(as: ByteBuffer.self) == nil)
        glueB.pipelineSwitched()
        #expect(try b.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [1]))
        a.pipeline.fireChannelRead(ByteBuffer(bytes: [2]))
        a.pipeline.fireChannelReadComplete()
        #expect(try b.readOutbound(as: ByteBuffer.self) == ByteBuffer(bytes: [2]))
        _ = try a.finish()
        _ = try b.finish()
    }

    // MARK: The client's pipeline switch

    /// The relay half reads once per read event, so its glue is asked about the partner's
    /// writability between any two reads (what bounds the bytes a slow reader makes the proxy hold).
    @Test func clientSwitchReadsOncePerReadEvent() throws {
        final class Entry: ChannelInboundHandler {
            typealias InboundIn = HTTPServerRequestPart
        }
        let channel = EmbeddedChannel()
        let entry = Entry()
        let sink = ByteSink()
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        try sync.addHandler(HTTPResponseEncoder())
        try sync.addHandler(entry)
        #expect(!channel.options.contains { $0.option is ChannelOptions.Types.MaxMessagesPerReadOption })

        try ClientPipeline.switchToWebSocket(context: try sync.context(handler: entry), relay: [sink])
        channel.embeddedEventLoop.run()

        let perRead = channel.options.last { $0.option is ChannelOptions.Types.MaxMessagesPerReadOption }
        #expect(perRead?.value as? UInt == 1)
        #expect(ChannelTuning.relayMessagesPerRead == 1)
        try channel.writeInbound(ByteBuffer(bytes: [0x81, 0x80]))
        #expect(sink.received == [0x81, 0x80])
        _ = try channel.finish()
    }
}
