import NIOCore
import ReadyGateCore

/// Holds the client's frames until the session is ready (DESIGN's hold): data frames are kept in
/// order in a ``ClientFrameHold``, pings are answered with pongs, and at the bound the hold stops
/// reading from the client (backpressure, never a drop). At READY ``release()`` passes everything
/// held on to the glue behind it, in order, and takes the hold out of the pipeline.
///
/// What it keeps is charged to the proxy's ``HeldBytesBudget`` (`READYGATE_MAX_HELD_BYTES_TOTAL`)
/// and given back on every way out (release, discard, removal); while the budget is spent the hold
/// stops reading too.
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
    /// The global cap's budget (the session's, unless given) and the bytes charged to it.
    private let budget: HeldBytesBudget?
    private var charged = 0

    init(scanner: WebSocketFrameScanner, maxHeldBytes: Int, events: any SessionEvents, budget: HeldBytesBudget? = nil) {
        self.hold = ClientFrameHold(scanner: scanner)
        self.maxHeldBytes = maxHeldBytes
        self.events = events
        self.budget = budget ?? (events as? any HeldBytesBudgetSource)?.heldBytesBudget
    }

    /// A replay: `bytes` are what the replaced backend connection got; they go first, as they were.
    func prefill(_ bytes: ByteBuffer) throws(WebSocketProtocolError) {
        try hold.prefill(bytes)
        chargeBudget()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        // Released, or the channel closed with frames still held (the client is gone).
        returnBudget()
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
        chargeBudget()
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
        if full || !(stopped || budget?.mayRead(self, on: context.eventLoop) ?? true) {
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
        returnBudget()
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
        returnBudget()
        if pendingRead {
            // Read on so the watcher sees the client's close or its end of input.
            pendingRead = false
            full = false
            context?.read()
        }
    }

    /// Charges the budget with what the hold keeps now.
    private func chargeBudget() {
        guard let budget, hold.queuedBytes != charged else { return }
        budget.add(hold.queuedBytes - charged)
        charged = hold.queuedBytes
    }

    /// Gives back everything charged; the budget no longer wakes this hold.
    private func returnBudget() {
        guard let budget else { return }
        budget.forget(self)
        budget.add(-charged)
        charged = 0
    }
}

extension ClientHoldHandler: HeldBytesWaiter {
    /// The global cap has room again: a read the budget withheld goes on.
    func heldBytesBudgetFreed() {
        guard pendingRead, let context else { return }
        pendingRead = false
        read(context: context)
    }
}

@available(*, unavailable)
extension ClientHoldHandler: Sendable {}
