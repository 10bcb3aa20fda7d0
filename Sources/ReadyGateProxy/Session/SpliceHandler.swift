import NIOCore
import ReadyGateCore

/// One half of a session's byte relay, in the glue pattern of NIO's connect-proxy example: it
/// forwards what its channel reads to its partner on the other channel, reads only while the
/// partner can take more (backpressure), and passes half-closes on.
///
/// Both halves live on one event loop, so they call each other directly, without locks.
/// The client half starts out holding: it keeps the client's frames in a ``ClientFrameHold``
/// until the session is ready, then flushes them and relays like the upstream half.
/// A ``WebSocketFrameScanner`` watches every byte that passes, for the session's record.
final class SpliceHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Side: String {
        case client
        case upstream
    }

    let side: Side
    private let session: WebSocketSession
    private(set) var partner: SpliceHandler?
    private var context: ChannelHandlerContext?

    /// Watches the bytes passing; nil once it found the stream broken (after READY the proxy keeps relaying).
    private(set) var scanner: WebSocketFrameScanner?
    /// Counters of the scanned direction, kept when the scanner is dropped.
    private(set) var stats = WebSocketTrafficStats()
    /// Client frames held until READY (client half only). Boxed: the hold is a few hundred bytes
    /// that only matter until READY, and a spliced session keeps just the nil pointer.
    private var hold: HoldBox?
    /// Ready-message matching on the backend's frames (upstream half, message gate only).
    var readyMatcher: ReadyMessageMatcher?

    private var pendingRead = false
    /// The hold reached its bound: no reads until READY (DESIGN §2, backpressure).
    private var holdIsFull = false
    private let maxHeldBytes: Int
    /// The client half-closed while its frames were held: pass it on after the flush.
    private var inputClosedWhileHolding = false
    /// A close frame went to this half's peer (see ``closeAfterPeerClose(linger:)``): its bytes are
    /// only watched now, for its own close frame or its end of input.
    private var awaitingPeerClose = false

    init(side: Side, session: WebSocketSession, scanner: WebSocketFrameScanner, holding: Bool, maxHeldBytes: Int) {
        self.side = side
        self.session = session
        self.maxHeldBytes = maxHeldBytes
        if holding {
            self.hold = HoldBox(ClientFrameHold(scanner: scanner))
        } else {
            self.scanner = scanner
        }
    }

    func pair(with other: SpliceHandler) {
        partner = other
        other.partner = self
    }

    var isHolding: Bool { hold != nil }
    var heldBytes: Int { hold?.frames.queuedBytes ?? 0 }
    var heldFrames: Int { hold?.frames.queuedFrames ?? 0 }
    var peakHeldBytes: Int { hold?.frames.peakQueuedBytes ?? peakHeldBytesAfterFlush }
    private var peakHeldBytesAfterFlush = 0

    /// Counters of this half's inbound direction.
    var trafficStats: WebSocketTrafficStats { hold?.frames.scanner.stats ?? scanner?.stats ?? stats }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if awaitingPeerClose {
            observe(buffer)
            if trafficStats.sawClose { context.close(promise: nil) }
            return
        }
        if hold != nil {
            holdClientBytes(buffer, context: context)
            return
        }
        observe(buffer)
        partner?.partnerWrite(buffer)
        if side == .upstream, readyMatcher?.matched == true {
            readyMatcher = nil
            session.readyMessageSeen()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if hold == nil { partner?.partnerFlush() }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.sideInactive(side)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            if awaitingPeerClose {
                context.close(promise: nil)
            } else if hold != nil {
                inputClosedWhileHolding = true
            } else {
                session.sideInputClosed(side)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        session.sideFailed(side, error: error)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if !awaitingPeerClose && (holdIsFull || (hold == nil && !(partner?.isWritable ?? true))) {
            pendingRead = true
        } else {
            context.read()
        }
    }

    // MARK: Holding (client half, before READY)

    private func holdClientBytes(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        guard let hold else { return }
        var controls: [ClientFrameHold.ControlFrame] = []
        var failure: WebSocketProtocolError?
        do {
            try hold.frames.receive(buffer) { controls.append($0) }
        } catch {
            failure = error
        }
        session.clientFramesHeld(frames: hold.frames.queuedFrames, bytes: hold.frames.queuedBytes)
        for control in controls {
            switch control {
            case .ping(let payload):
                writeFrame(WebSocketFrameWriter.frame(opcode: .pong, payload: payload), flush: true)
            case .pong:
                break
            case .close(let code):
                session.clientClosedBeforeReady(code: code)
                return
            }
        }
        if let failure {
            session.clientProtocolError(failure)
            return
        }
        if hold.frames.queuedBytes >= maxHeldBytes && !holdIsFull {
            holdIsFull = true
            session.holdReachedBound(bytes: hold.frames.queuedBytes)
        }
    }

    /// READY: writes every held frame to the upstream in order, then relays.
    func flushHeldFrames() {
        guard let held = hold, let partner else { return }
        hold = nil
        peakHeldBytesAfterFlush = held.frames.peakQueuedBytes
        for bytes in held.frames.drain() { partner.partnerWrite(bytes) }
        partner.partnerFlush()
        scanner = held.frames.scannerForSplice
        holdIsFull = false
        if inputClosedWhileHolding {
            inputClosedWhileHolding = false
            session.sideInputClosed(side)
        }
        if pendingRead && partner.isWritable {
            pendingRead = false
            context?.read()
        }
    }

    /// Held frames that will never be delivered (the session ended before READY).
    func dropHold() -> (frames: Int, bytes: Int) {
        guard let held = hold else { return (0, 0) }
        hold = nil
        peakHeldBytesAfterFlush = held.frames.peakQueuedBytes
        // Keep watching from the same stream position: a close frame may still come.
        scanner = held.frames.scannerForSplice
        let lost = (held.frames.queuedFrames, held.frames.queuedBytes)
        _ = held.frames.drain()
        return lost
    }

    // MARK: Watching

    private func observe(_ buffer: ByteBuffer) {
        guard var watcher = scanner else {
            stats.bytes += UInt64(buffer.readableBytes)
            return
        }
        var failure: WebSocketProtocolError?
        buffer.withUnsafeReadableBytes { bytes in
            do throws(WebSocketProtocolError) {
                if readyMatcher != nil {
                    try watcher.scan(bytes) { event in readyMatcher!.observe(event, in: bytes) }
                } else {
                    try watcher.scan(bytes) { _ in }
                }
            } catch {
                failure = error
            }
        }
        if let failure {
            stats = watcher.stats
            scanner = nil
            session.scannerFailed(side, error: failure)
        } else {
            scanner = watcher
        }
    }

    // MARK: Partner operations

    private func writeFrame(_ bytes: [UInt8], flush: Bool) {
        guard let context else { return }
        let buffer = context.channel.allocator.buffer(bytes: bytes)
        if flush {
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        } else {
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
    }

    /// Writes a frame the proxy made (close, pong) to this half's channel.
    func sendFrame(_ bytes: [UInt8]) -> EventLoopFuture<Void>? {
        guard let context else { return nil }
        let buffer = context.channel.allocator.buffer(bytes: bytes)
        if outboundHeld != nil {
            let promise = context.eventLoop.makePromise(of: Void.self)
            outboundHeld!.append((buffer, promise))
            return promise.futureResult
        }
        return context.writeAndFlush(wrapOutboundOut(buffer))
    }

    private func partnerWrite(_ buffer: ByteBuffer) {
        // After a close frame, no more data goes to the peer (RFC 6455 §5.5.1).
        if awaitingPeerClose { return }
        if outboundHeld != nil {
            outboundHeld!.append((buffer, nil))
            return
        }
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    private func partnerFlush() {
        guard outboundHeld == nil else { return }
        context?.flush()
    }

    // MARK: Pipeline switch

    /// Writes wait here until the HTTP handlers in front of this half are gone: NIO removes a
    /// `ByteToMessageHandler` on the next loop tick, and the client-side HTTP response decoder
    /// observes (and would misread) every write that passes it until then.
    private var outboundHeld: [(ByteBuffer, EventLoopPromise<Void>?)]?

    /// Holds writes until ``pipelineSwitched()``.
    func holdWritesUntilSwitched() {
        outboundHeld = []
    }

    /// The HTTP handlers are gone: writes go out, in order. The bytes the decoder had read past
    /// the 101 were handed over outside a read cycle, so no read-complete flushes them: flush here.
    func pipelineSwitched() {
        partner?.partnerFlush()
        guard let held = outboundHeld else { return }
        outboundHeld = nil
        guard let context else {
            for (_, promise) in held { promise?.fail(ChannelError.ioOnClosedChannel) }
            return
        }
        for (buffer, promise) in held { context.write(wrapOutboundOut(buffer), promise: promise) }
        context.flush()
    }

    private var isWritable: Bool {
        context?.channel.isWritable ?? false
    }

    private func partnerBecameWritable() {
        if pendingRead && !holdIsFull {
            pendingRead = false
            context?.read()
        }
    }

    /// Flushes what is pending, then closes this half's output (`.output`) or the whole channel.
    func close(mode: CloseMode) {
        guard let context else { return }
        context.flush()
        context.close(mode: mode, promise: nil)
    }

    /// The close handshake towards this half's peer, after a close frame was written to it (the
    /// proxy's own, or one relayed from the other side): flushes, then watches the peer's bytes
    /// without relaying them and closes the connection when the peer's close frame or its end of
    /// input arrives, or after `linger` at the latest. Closing at once could reset a peer that is
    /// still sending, and a reset can destroy the close frame before the peer reads it; RFC 6455
    /// §7.1.1 has the server close the TCP connection once the close handshake is done.
    func closeAfterPeerClose(linger: TimeAmount) {
        guard let context, !awaitingPeerClose else { return }
        context.flush()
        awaitingPeerClose = true
        if trafficStats.sawClose {
            context.close(promise: nil)
            return
        }
        let channel = context.channel
        context.eventLoop.assumeIsolated().scheduleTask(in: linger) { channel.close(promise: nil) }
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }
}

@available(*, unavailable)
extension SpliceHandler: Sendable {}

/// The client half's ``ClientFrameHold``, by reference.
final class HoldBox {
    var frames: ClientFrameHold

    init(_ frames: ClientFrameHold) {
        self.frames = frames
    }
}

@available(*, unavailable)
extension HoldBox: Sendable {}

extension ReadyMessageMatcher {
    /// Feeds one scanner event of the backend's stream.
    mutating func observe(_ event: WebSocketScanEvent, in bytes: UnsafeRawBufferPointer) {
        switch event {
        case .header(let header, _):
            current = header
            frameStarted(header)
        case .payload(let range):
            if let current { payload(UnsafeRawBufferPointer(rebasing: bytes[range]), of: current) }
        case .frameEnd(let header, _, _):
            if frameEnded(header) { matched = true }
            current = nil
        }
    }
}
