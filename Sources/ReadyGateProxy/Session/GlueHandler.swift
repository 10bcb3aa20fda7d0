import NIOCore

/// One half of a session's byte relay, after NIO's connect-proxy example: what its channel reads
/// goes to its partner on the other channel, flushed at the end of each read burst, and it reads
/// only while the partner's channel is writable (backpressure). Both halves run on one event loop
/// and call each other directly.
///
/// The glue moves bytes and nothing else: the ``FrameWatcher`` in front of it watches them, and
/// the session decides about close frames, half-closes and the end.
final class GlueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Writes wait here until the HTTP handlers in front are gone (see ``holdWritesUntilSwitched()``).
    private var heldWrites: [(ByteBuffer, EventLoopPromise<Void>?)]?
    /// The proxy wrote a close frame of its own to this peer: nothing more is relayed to it
    /// (RFC 6455 §5.5.1).
    private(set) var relayStopped = false
    /// Replay: a copy of what this glue sent its partner (client side, during the replay window).
    private var recording: ByteBuffer?
    private var recordingLimit = 0
    /// Called once when the copy would outgrow its limit (the copy is dropped then).
    private var onRecordingOverflow: (() -> Void)?

    init() {}

    /// Makes `a` and `b` each other's partner.
    static func pair(_ a: GlueHandler, _ b: GlueHandler) {
        a.partner = b
        b.partner = a
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner?.partnerGone()
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if recording != nil { record(buffer) }
        partner?.relay(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flushRelayed()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, !partner.isWritable {
            pendingRead = true
        } else {
            context.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A reset or a failed write: the connection is done. The watcher reports it going.
        context.close(promise: nil)
    }

    // MARK: What the session does

    /// Writes and flushes bytes the proxy made (a close frame).
    func send(_ buffer: ByteBuffer) {
        write(buffer, promise: nil)
        flush()
    }

    /// No longer relays to or from its partner: the partner's connection is being replaced.
    func detach() {
        partner?.partner = nil
        partner = nil
        partnerBecameWritable()
    }

    /// Keeps a copy of everything sent to the partner from now on, up to `limit` bytes; past it the
    /// copy is dropped and `onOverflow` called.
    func startRecording(limit: Int, onOverflow: @escaping () -> Void) {
        recording = context?.channel.allocator.buffer(capacity: 0) ?? ByteBuffer()
        recordingLimit = limit
        onRecordingOverflow = onOverflow
    }

    /// Stops copying and hands over the copy (nil: there was none, or it overflowed).
    func stopRecording() -> ByteBuffer? {
        defer {
            recording = nil
            onRecordingOverflow = nil
        }
        return recording
    }

    private func record(_ buffer: ByteBuffer) {
        guard recording!.readableBytes + buffer.readableBytes <= recordingLimit else {
            let overflow = onRecordingOverflow
            recording = nil
            onRecordingOverflow = nil
            overflow?()
            return
        }
        recording!.writeImmutableBuffer(buffer)
    }

    /// Nothing more from the partner is relayed to this peer: the proxy closed the WebSocket towards it.
    func stopRelaying() {
        relayStopped = true
    }

    /// Closes the connection (`.all`) or its output (`.output`, a TCP half-close) once what was
    /// written before is flushed, or after `deadline` if the peer does not read. The deadline's
    /// timer is only armed when the flush did not finish at once (the usual case has nothing
    /// waiting, and a session ends without scheduling and cancelling a task per side).
    func close(mode: CloseMode, afterFlushWithin deadline: TimeAmount) {
        guard let context else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        write(context.channel.allocator.buffer(capacity: 0), promise: promise)
        flush()
        let channel = context.channel
        let flushed = promise.futureResult.assumeIsolated()
        var timeout: Scheduled<Void>?
        var closed = false
        flushed.whenComplete { _ in
            closed = true
            timeout?.cancel()
            channel.close(mode: mode, promise: nil)
        }
        if !closed {
            timeout = context.eventLoop.assumeIsolated().scheduleTask(in: deadline) { channel.close(promise: nil) }
        }
    }

    // MARK: Pipeline switch

    /// Holds writes until ``pipelineSwitched()``: NIO removes a `ByteToMessageHandler` on a later
    /// loop tick, and the upstream HTTP response decoder observes every write that passes it.
    func holdWritesUntilSwitched() {
        heldWrites = []
    }

    /// The HTTP handlers are gone: held writes go out, in order. The bytes the decoder had read
    /// past the `101` came outside a read cycle, so no read-complete flushed them: flush here.
    func pipelineSwitched() {
        partner?.flush()
        guard let held = heldWrites else { return }
        heldWrites = nil
        guard let context else {
            for (_, promise) in held { promise?.fail(ChannelError.ioOnClosedChannel) }
            return
        }
        for (buffer, promise) in held { context.write(wrapOutboundOut(buffer), promise: promise) }
        context.flush()
    }

    // MARK: Partner operations

    private func relay(_ buffer: ByteBuffer) {
        guard !relayStopped else { return }
        write(buffer, promise: nil)
    }

    private func flushRelayed() {
        guard !relayStopped else { return }
        flush()
    }

    private func write(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) {
        if heldWrites != nil {
            heldWrites!.append((buffer, promise))
        } else if let context {
            context.write(wrapOutboundOut(buffer), promise: promise)
        } else {
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    private func flush() {
        guard heldWrites == nil else { return }
        context?.flush()
    }

    private var isWritable: Bool {
        context?.channel.isWritable ?? true
    }

    private func partnerBecameWritable() {
        guard pendingRead else { return }
        pendingRead = false
        context?.read()
    }

    /// The partner's channel is gone: reading on is only for the watcher, which sees the close.
    private func partnerGone() {
        partner = nil
        partnerBecameWritable()
    }
}

@available(*, unavailable)
extension GlueHandler: Sendable {}
