import NIOCore
import ReadyGateCore

/// Sits between a side's ``FrameWatcher`` and its glue while the proxy has a say about that peer's
/// frames (a ``FrameFilter``): it takes out the pong to the proxy's own ping (the ping gate's or a
/// keepalive's) and, on the backend's side, keeps a close frame back while a replay may follow.
/// Everything else passes as it comes. The session takes it out of the pipeline with ``leave()``
/// once it has nothing to do.
final class FrameFilterHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let side: SessionStateMachine.Side
    private var filter: FrameFilter
    private var events: (any SessionEvents)?
    private var context: ChannelHandlerContext?

    init(side: SessionStateMachine.Side, scanner: WebSocketFrameScanner, events: any SessionEvents) {
        self.side = side
        self.filter = FrameFilter(scanner: scanner)
        self.events = events
    }

    /// Keepalive rounds in a row at which the proxy's previous ping was still unanswered.
    var unansweredRounds = 0

    /// Wire bytes of the proxy's own pongs taken out.
    var ownPongBytes: Int { filter.ownPongBytes }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Whether a pong to the proxy's ping is still awaited.
    var awaitsPong: Bool { filter.awaitsPong }

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
        if dataStarted && side == .upstream { events?.backendDataStarted() }
        if pong { events?.ownPongReceived(from: side) }
    }

    /// Stops keeping closes back and lets what was kept go on, in order.
    func releaseKept() {
        guard let context else { return }
        if let kept = filter.release() {
            context.fireChannelRead(wrapInboundOut(kept))
            context.fireChannelReadComplete()
        }
    }

    /// Lets what was kept go on, in order, and leaves the pipeline.
    func leave() {
        guard let context else { return }
        releaseKept()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// The backend connection is being replaced: what was kept is dropped, nothing more is reported.
    func detach() {
        events = nil
        filter.discardKept()
    }
}

@available(*, unavailable)
extension FrameFilterHandler: Sendable {}
