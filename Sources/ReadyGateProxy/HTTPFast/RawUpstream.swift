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
    private(set) var owner: FastHTTP1Handler?
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

    func attach(_ owner: FastHTTP1Handler) { self.owner = owner }

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

/// The fast path's pool: the same rules as ``UpstreamPool`` for connections without a codec.
typealias RawUpstreamPool = BackendPool<RawUpstreamHandler>

extension BackendPool where Connection == RawUpstreamHandler {
    /// TCP to the backend with nothing but the raw handler in the pipeline; with `tls` (an
    /// `https://` upstream) NIOSSL's handler in front of it, and the connection opens only when the
    /// TLS handshake is done, as in ``UpstreamPool/tcpConnector(target:connectTimeout:tls:tlsFailures:)``.
    static func tcpConnector(
        target: UpstreamTarget,
        connectTimeout: TimeAmount,
        tls: UpstreamTLS? = nil,
        tlsFailures: TLSHandshakeFailures? = nil
    ) -> Connector {
        { eventLoop, handler in
            guard let bootstrap = ClientBootstrap(validatingGroup: eventLoop) else {
                return eventLoop.makeFailedFuture(UpstreamConnectError.unsupportedEventLoop)
            }
            let bound = NIOLoopBound(handler, eventLoop: eventLoop)
            let handshake = tls.map { _ in eventLoop.makePromise(of: Void.self) }
            let connect =
                bootstrap
                .connectTimeout(connectTimeout)
                .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
                .channelOption(ChannelOptions.recvAllocator, value: ChannelTuning.receiveAllocator)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try UpstreamTLSHandshakeWatch.addTLS(tls, handshake: handshake, failures: tlsFailures, to: sync)
                        try sync.addHandler(bound.value)
                    }
                }
                .connect(host: target.host, port: target.port)
            guard let handshake else { return connect }
            return UpstreamTLSHandshakeWatch.connected(connect, handshake: handshake)
        }
    }
}
