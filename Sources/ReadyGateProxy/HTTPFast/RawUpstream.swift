import NIOCore
import NIOPosix
import ReadyGateCore

/// The only handler of a pooled backend connection on the plain-HTTP fast path: bytes in, bytes
/// out, no codec. While an exchange runs it hands what it reads to its ``FastHTTP1Handler``; while
/// idle in its ``RawUpstreamPool`` it keeps reading, so a backend that closes (or talks out of turn)
/// leaves the pool at once.
final class RawUpstreamHandler: ChannelDuplexHandler, PooledBackendConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private weak var pool: RawUpstreamPool?
    private var context: ChannelHandlerContext?
    private(set) var owner: (any RawUpstreamOwner)?
    private var pendingRead = false
    private var needsFlush = false
    var idleSince = NIODeadline.now()

    init(pool: RawUpstreamPool) {
        self.pool = pool
    }

    var isActive: Bool { context?.channel.isActive ?? false }
    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func attach(_ owner: any RawUpstreamOwner) { self.owner = owner }

    func detach() {
        owner = nil
        resumeRead()
    }

    func write(_ bytes: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(bytes), promise: nil)
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

    func resumeRead() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let owner else {
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
extension RawUpstreamHandler: Sendable {}

/// What a ``RawUpstreamHandler`` hands its reads and events to while an exchange runs: an HTTP/1.1
/// client's ``FastHTTP1Handler``, or an HTTP/2 stream's ``HTTP2FastExchange``.
protocol RawUpstreamOwner: AnyObject {
    /// Whether the client side takes more bytes now (the backend is not read while it does not).
    var clientIsWritable: Bool { get }
    func upstreamRead(_ data: ByteBuffer, from connection: RawUpstreamHandler)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(_ isWritable: Bool)
    func upstreamError(_ error: any Error)
    func upstreamInactive(_ connection: RawUpstreamHandler)
}

extension FastHTTP1Handler: RawUpstreamOwner {}

/// The fast path's pool: the same rules as ``UpstreamPool`` for connections without a codec.
typealias RawUpstreamPool = BackendPool<RawUpstreamHandler>

extension BackendPool where Connection == RawUpstreamHandler {
    /// TCP (or TLS) to the backend with nothing but the raw handler after TLS.
    static func tcpConnector(
        target: UpstreamTarget,
        connectTimeout: TimeAmount,
        tls: UpstreamTLS? = nil,
        tlsFailures: TLSHandshakeFailures? = nil
    ) -> Connector {
        tcpConnector(target: target, connectTimeout: connectTimeout, tls: tls, tlsFailures: tlsFailures) { _ in }
    }
}
