import NIOCore
import NIOHTTP1

/// Turns a client connection from HTTP/1.1 into WebSocket bytes once its 101 is written.
///
/// The relay handlers are added behind the entry handler first; then the HTTP handlers go, the
/// request decoder last, so the bytes it read past the request head (frames the client sent at
/// once) reach the relay, in order (`leftOverBytesStrategy: .forwardBytes`). The socket reads once
/// per read event from then on (``ChannelTuning/relayMessagesPerRead``).
enum ClientPipeline {
    static func switchToWebSocket(context: ChannelHandlerContext, relay: [any ChannelHandler]) throws {
        try ChannelTuning.tuneForRelay(context.channel)
        let sync = context.pipeline.syncOperations
        try sync.addHandlers(relay, position: .after(context.handler))
        let encoder = try sync.handler(type: HTTPResponseEncoder.self)
        let decoder = try sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        sync.removeHandler(encoder, promise: nil)
        sync.removeHandler(context: context, promise: nil)
        sync.removeHandler(decoder, promise: nil)
    }
}

/// The same switch for the upstream connection after the backend's verified 101. The glue holds
/// its writes, and the ``UpstreamEOFGate`` the backend's end of output, until the response decoder
/// is gone and has passed on the bytes it read past the `101`.
enum UpstreamPipeline {
    static func switchToWebSocket(
        context: ChannelHandlerContext,
        watcher: FrameWatcher,
        filter: FrameFilterHandler?,
        glue: GlueHandler
    ) throws {
        let sync = context.pipeline.syncOperations
        let eofGate = try sync.handler(type: UpstreamEOFGate.self)
        eofGate.hold()
        glue.holdWritesUntilSwitched()
        let relay: [any ChannelHandler] = filter.map { [watcher, $0, glue] } ?? [watcher, glue]
        try sync.addHandlers(relay, position: .after(context.handler))
        let encoder = try sync.handler(type: HTTPRequestEncoder.self)
        let decoder = try sync.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self)
        sync.removeHandler(encoder, promise: nil)
        sync.removeHandler(context: context, promise: nil)
        sync.removeHandler(decoder).assumeIsolated().whenComplete { _ in
            glue.pipelineSwitched()
            eofGate.release()
        }
    }
}

/// The first handler of an upstream connection. NIO's HTTP decoder drops the bytes it read past a
/// `101` when it sees the end of input before it is removed (it forwards them only on removal), so
/// a backend that sends its first frames and a FIN right after the `101` would lose them. From the
/// switch on, the gate holds a FIN until the decoder is gone, then passes it on, and leaves.
final class UpstreamEOFGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var holding = false
    private var heldEOF = false

    init() {}

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if holding, let event = event as? ChannelEvent, case .inputClosed = event {
            heldEOF = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The pipeline switch began: a FIN waits.
    func hold() {
        holding = true
    }

    /// The decoder is gone: a FIN that came meanwhile goes on, after the bytes it held.
    func release() {
        guard let context else { return }
        holding = false
        if heldEOF { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension UpstreamEOFGate: Sendable {}
