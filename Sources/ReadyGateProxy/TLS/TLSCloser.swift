import NIOCore

/// Right behind NIOSSL's handler on a connection that allows half-closure (the client connections
/// of the TLS listener, the WebSocket backend connections: the relay and the EOF gate take a
/// peer's end of output as an event). NIOSSL 2.37 with half-closure allowed does not finish a close
/// it started when the peer answers its close_notify: it waits for its 5 s shutdown timeout, and a
/// session waits for its channels. So when the proxy closes the connection, half-closure is turned
/// off first: the peer's close_notify (or FIN) then ends the connection at once.
final class TLSCloser: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = Any
    typealias OutboundOut = Any

    init() {}

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all {
            try? context.channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: false)
        }
        context.close(mode: mode, promise: promise)
    }
}

@available(*, unavailable)
extension TLSCloser: Sendable {}
