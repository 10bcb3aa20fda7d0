import NIOCore
import ReadyGateCore

/// Holds the client's frames until the session is ready (DESIGN's hold): data frames are kept in
/// order in a ``ClientFrameHold``, pings are answered with pongs, and at the bound the hold stops
/// reading from the client (backpressure, never a drop). At READY ``release()`` passes everything
/// held on to the glue behind it, in order, and takes the hold out of the pipeline.
///
/// Close frames and protocol errors are the ``FrameWatcher``'s to report: after one, the hold
/// keeps nothing more. When the session ends before READY, ``discard()`` lets go of the frames.
final class ClientHoldHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var hold: ClientFrameHold
    private let maxHeldBytes: Int
    private let events: any SessionEvents
    private var context: ChannelHandlerContext?
    /// The client closed, broke the protocol, or the session ended: nothing more is kept.
    private var stopped = false
    private var full = false
    private var pendingRead = false

    init(scanner: WebSocketFrameScanner, maxHeldBytes: Int, events: any SessionEvents) {
        self.hold = ClientFrameHold(scanner: scanner)
        self.maxHeldBytes = maxHeldBytes
        self.events = events
    }

    /// A replay: `bytes` are what the replaced backend connection got; they go first, as they were.
    func prefill(_ bytes: ByteBuffer) throws(WebSocketProtocolError) {
        try hold.prefill(bytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !stopped else { return }
        var pongs = false
        do {
            try hold.receive(unwrapInboundIn(data)) { control in
                switch control {
                case .ping(let payload):
                    let pong = WebSocketFrameWriter.frame(opcode: .pong, payload: payload)
                    context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: pong)), promise: nil)
                    pongs = true
                case .close:
                    stopped = true
                case .pong:
                    break
                }
            }
        } catch {
            stopped = true
        }
        if pongs { context.flush() }
        events.clientFramesHeld(frames: hold.queuedFrames, bytes: hold.queuedBytes)
        if !full && hold.queuedBytes >= maxHeldBytes {
            full = true
            events.holdFull(bytes: hold.queuedBytes)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Nothing to relay yet: the glue's flush waits for READY.
    }

    func read(context: ChannelHandlerContext) {
        if full {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// READY: everything held goes to the glue in order (a frame cut by READY included), and the
    /// hold leaves the pipeline.
    func release() {
        guard let context else { return }
        stopped = true
        let held = hold.drain()
        for bytes in held { context.fireChannelRead(wrapInboundOut(bytes)) }
        context.fireChannelReadComplete()
        if pendingRead || full {
            pendingRead = false
            full = false
            context.read()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// The session ended before READY: the held frames are let go, and later ones are not kept.
    func discard() {
        stopped = true
        hold.discard()
        if pendingRead {
            // Read on so the watcher sees the client's close or its end of input.
            pendingRead = false
            full = false
            context?.read()
        }
    }
}

@available(*, unavailable)
extension ClientHoldHandler: Sendable {}
