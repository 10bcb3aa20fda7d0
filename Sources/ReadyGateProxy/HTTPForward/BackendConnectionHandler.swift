import NIOCore

/// The exchange a pooled backend connection serves while it runs: an ``HTTPForwarder`` behind
/// NIO's HTTP/1.1 client codec, or a ``RawUpstreamExchange`` on raw bytes (an HTTP/1.1 client's
/// ``FastHTTP1Handler`` or an HTTP/2 stream's ``HTTP2FastExchange``).
protocol BackendExchange {
    /// What the backend's channel reads: response parts, or bytes.
    associatedtype Response
    /// What is written to it: request parts, or bytes.
    associatedtype Request

    /// While false, the backend's reads are withheld.
    var clientIsWritable: Bool { get }
    func upstreamRead(_ response: Response, from connection: BackendConnectionHandler<Self>)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(_ isWritable: Bool)
    /// A broken response or a socket error: the close that follows ends the exchange.
    func upstreamError(_ error: any Error)
    func upstreamInactive(_ connection: BackendConnectionHandler<Self>)
}

/// The last handler of a pooled backend connection: behind NIO's HTTP/1.1 client codec
/// (``UpstreamHTTPHandler``, serving an ``HTTPForwarder``), or its only handler on the fast path
/// (``RawUpstreamHandler``, bytes in and out, serving a ``FastHTTP1Handler`` or an
/// ``HTTP2FastExchange``).
///
/// While an exchange runs, it hands the reads, read-completes, writability changes and the close to
/// it, and withholds `read()` while the client cannot take more (the glue pattern of NIO's
/// connect-proxy example). While idle in its ``BackendPool`` it keeps reading, so a backend that
/// closes the connection (or sends bytes nobody asked for) takes it out of the pool at once.
final class BackendConnectionHandler<Exchange: BackendExchange>: ChannelDuplexHandler, PooledBackendConnection {
    typealias InboundIn = Exchange.Response
    typealias OutboundIn = Exchange.Request
    typealias OutboundOut = Exchange.Request

    /// Weak: a connection closing after its proxy (and so its pool) went away has no pool to leave.
    private weak var pool: BackendPool<BackendConnectionHandler>?
    private var context: ChannelHandlerContext?
    /// The exchange this connection serves; nil while idle in the pool.
    private(set) var owner: Exchange?
    private var pendingRead = false
    private var needsFlush = false
    /// When it went back to the pool.
    var idleSince = NIODeadline.now()

    init(pool: BackendPool<BackendConnectionHandler>) {
        self.pool = pool
    }

    var isActive: Bool { context?.channel.isActive ?? false }
    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: Exchange

    func attach(_ owner: Exchange) { self.owner = owner }

    func detach() {
        owner = nil
        resumeRead()
    }

    func write(_ request: Exchange.Request) {
        guard let context else { return }
        context.write(wrapOutboundOut(request), promise: nil)
        needsFlush = true
    }

    func flush() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    func close() {
        owner = nil
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
        guard let owner else {
            // Nothing was asked: a backend that talks out of turn cannot be trusted with the next request.
            context.close(promise: nil)
            return
        }
        owner.upstreamRead(unwrapInboundIn(data), from: self)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let owner {
            self.owner = nil
            owner.upstreamInactive(self)
        } else {
            pool?.remove(self)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        owner?.upstreamError(error)
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.clientIsWritable {
            pendingRead = true
            return
        }
        context.read()
    }
}

@available(*, unavailable)
extension BackendConnectionHandler: Sendable {}
