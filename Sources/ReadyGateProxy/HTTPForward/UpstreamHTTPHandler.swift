import NIOCore
import NIOHTTP1

/// The last handler of a pooled backend connection, behind NIO's HTTP/1.1 client codec.
///
/// While an exchange runs, it hands the response parts, read-completes, writability changes and
/// the close to its ``HTTPForwarder``, and withholds `read()` while the client cannot take more
/// (the glue pattern of NIO's connect-proxy example). While idle in its ``UpstreamPool`` it keeps
/// reading, so a backend that closes the connection (or sends bytes nobody asked for) takes it out
/// of the pool at once.
final class UpstreamHTTPHandler: ChannelDuplexHandler, PooledBackendConnection {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// Weak: a connection closing after its proxy (and so its pool) went away has no pool to leave.
    private weak var pool: UpstreamPool?
    private var context: ChannelHandlerContext?
    /// The exchange this connection serves; nil while idle in the pool.
    private(set) var forwarder: HTTPForwarder?
    private var pendingRead = false
    private var needsFlush = false
    /// When it went back to the pool.
    var idleSince = NIODeadline.now()

    init(pool: UpstreamPool) {
        self.pool = pool
    }

    var isActive: Bool { context?.channel.isActive ?? false }
    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Exchange

    func attach(_ forwarder: HTTPForwarder) {
        self.forwarder = forwarder
    }

    func detach() {
        forwarder = nil
        resumeRead()
    }

    func write(_ part: HTTPClientRequestPart) {
        guard let context else { return }
        context.write(wrapOutboundOut(part), promise: nil)
        needsFlush = true
    }

    func flush() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    func close() {
        forwarder = nil
        context?.close(promise: nil)
    }

    /// The client can take more: pass on a read withheld while it could not.
    func resumeRead() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    // MARK: Channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let forwarder else {
            // Nothing was asked: a backend that talks out of turn cannot be trusted with the next request.
            context.close(promise: nil)
            return
        }
        forwarder.upstreamRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        forwarder?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        forwarder?.upstreamWritabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let forwarder {
            self.forwarder = nil
            forwarder.upstreamInactive(self)
        } else {
            pool?.remove(self)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A broken response or a socket error: the close that follows tells the exchange.
        forwarder?.upstreamError(error)
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if let forwarder, !forwarder.clientIsWritable {
            pendingRead = true
            return
        }
        context.read()
    }
}

@available(*, unavailable)
extension UpstreamHTTPHandler: Sendable {}
