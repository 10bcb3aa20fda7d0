import NIOCore
import ReadyGateCore

/// Sits between the upstream ``FrameWatcher`` and the glue while the proxy still has a say about
/// the backend's frames (a ``BackendFrameFilter``): it takes out the pong to the proxy's own ping
/// (ping gate) and keeps a close frame back while a replay may follow. Everything else passes as
/// it comes. The session takes it out of the pipeline with ``leave()`` once it has nothing to do.
final class BackendFilterHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var filter: BackendFrameFilter
    private var events: (any SessionEvents)?
    private var context: ChannelHandlerContext?

    init(scanner: WebSocketFrameScanner, events: any SessionEvents) {
        self.filter = BackendFrameFilter(scanner: scanner)
        self.events = events
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Whether a pong to the proxy's ping is still awaited.
    var awaitsPong: Bool { filter.awaitedPong != nil }

    /// The proxy sent the backend a ping with `payload`.
    func awaitPong(payload: [UInt8]) {
        filter.awaitPong(payload: payload)
    }

    /// Keep the backend's close frames back (a replay may follow) or not.
    func keepCloseBack(_ keep: Bool) {
        filter.keepsCloseBack = keep
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var pong = false
        var dataStarted = false
        filter.receive(unwrapInboundIn(data)) { output in
            switch output {
            case .forward(let bytes): context.fireChannelRead(wrapInboundOut(bytes))
            case .ownPong: pong = true
            case .dataStarted: dataStarted = true
            case .closeKeptBack: break  // The watcher reports the close frame; the session decides.
            }
        }
        // Reported after the bytes went on: the session may take this handler out in answer.
        if dataStarted { events?.backendDataStarted() }
        if pong { events?.gatePongReceived() }
    }

    /// Lets what was kept go on to the client, in order, and leaves the pipeline.
    func leave() {
        guard let context else { return }
        if let kept = filter.release() {
            context.fireChannelRead(wrapInboundOut(kept))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// The backend connection is being replaced: what was kept is dropped, nothing more is reported.
    func detach() {
        events = nil
        filter.discardKept()
    }
}

@available(*, unavailable)
extension BackendFilterHandler: Sendable {}
