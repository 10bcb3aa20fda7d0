import NIOCore
import NIOPosix
import ReadyGateCore

/// The only handler of a pooled backend connection on the plain-HTTP fast path: bytes in, bytes
/// out, no codec. While an exchange runs it hands what it reads to its ``FastHTTP1Handler``; while
/// idle in its ``RawUpstreamPool`` it keeps reading, so a backend that closes (or talks out of turn)
/// leaves the pool at once.
final class RawUpstreamHandler: ChannelDuplexHandler {
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

/// Keep-alive backend connections of the fast path, one pool per event loop: the same rules as
/// ``UpstreamPool`` (LIFO reuse, at most `maxIdle`, a sweep of those idle past `idleTimeout`) for
/// connections without a codec.
final class RawUpstreamPool {
    typealias Connector = (any EventLoop, RawUpstreamHandler) -> EventLoopFuture<any Channel>

    let eventLoop: any EventLoop
    let maxIdle: Int
    let idleTimeout: TimeAmount
    private let connector: Connector
    private var idle: [RawUpstreamHandler] = []
    private var sweep: RepeatedTask?

    init(eventLoop: any EventLoop, maxIdle: Int, idleTimeout: TimeAmount, connector: @escaping Connector) {
        self.eventLoop = eventLoop
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self.connector = connector
    }

    var idleCount: Int { idle.count }

    func takeIdle() -> RawUpstreamHandler? {
        while let connection = idle.popLast() {
            if connection.isActive { return connection }
        }
        return nil
    }

    func connect() -> EventLoopFuture<RawUpstreamHandler> {
        let handler = RawUpstreamHandler(pool: self)
        return connector(eventLoop, handler).assumeIsolated().map { _ in handler }.nonisolated()
    }

    func release(_ connection: RawUpstreamHandler) {
        guard connection.isActive, idle.count < maxIdle else {
            connection.close()
            return
        }
        connection.idleSince = eventLoop.now
        idle.append(connection)
        if sweep == nil { startSweep() }
    }

    func remove(_ connection: RawUpstreamHandler) {
        if let index = idle.firstIndex(where: { $0 === connection }) { idle.remove(at: index) }
    }

    func closeAll() {
        sweep?.cancel()
        sweep = nil
        let closing = idle
        idle.removeAll()
        for connection in closing { connection.close() }
    }

    private func startSweep() {
        let interval = TimeAmount.nanoseconds(max(idleTimeout.nanoseconds / 4, 1_000_000))
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        sweep = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
            bound.value.sweepIdle(task: task)
        }
    }

    private func sweepIdle(task: RepeatedTask) {
        let cutoff = eventLoop.now - idleTimeout
        let expired = idle.filter { $0.idleSince <= cutoff }
        if !expired.isEmpty {
            idle.removeAll { $0.idleSince <= cutoff }
            for connection in expired { connection.close() }
        }
        if idle.isEmpty {
            task.cancel()
            sweep = nil
        }
    }

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

@available(*, unavailable)
extension RawUpstreamPool: Sendable {}
