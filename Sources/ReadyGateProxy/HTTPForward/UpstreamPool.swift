import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ReadyGateCore

/// A keep-alive backend connection a ``BackendPool`` keeps: the last handler of its channel.
protocol PooledBackendConnection: ChannelHandler, SendableMetatype {
    /// A fresh connection's handler, which leaves `pool` when its channel closes while idle.
    init(pool: BackendPool<Self>)
    var isActive: Bool { get }
    /// When it went back to the pool.
    var idleSince: NIODeadline { get set }
    func close()
}

/// Keep-alive connections to the backend for plain HTTP requests, one pool per event loop: NIO's
/// HTTP/1.1 client codec in front of an ``UpstreamHTTPHandler`` (``UpstreamPool``), or nothing in
/// front of a ``RawUpstreamHandler`` on the fast path (``RawUpstreamPool``).
///
/// A pool belongs to one loop and is only touched there, like the client channels it serves: a
/// request's client and backend channels share a loop, so the hot path takes no lock. Idle
/// connections are reused last-in first-out (the warmest socket first), at most `maxIdle` are
/// kept, and a sweep closes those idle longer than `idleTimeout`.
final class BackendPool<Connection: PooledBackendConnection> {
    /// Opens a backend channel whose pipeline ends in the given handler.
    typealias Connector = (any EventLoop, Connection) -> EventLoopFuture<any Channel>

    let eventLoop: any EventLoop
    let maxIdle: Int
    let idleTimeout: TimeAmount
    private let connector: Connector
    /// Idle connections, the most recently returned last.
    private var idle: [Connection] = []
    private var sweep: RepeatedTask?

    init(eventLoop: any EventLoop, maxIdle: Int, idleTimeout: TimeAmount, connector: @escaping Connector) {
        self.eventLoop = eventLoop
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self.connector = connector
    }

    /// Idle connections right now (tests).
    var idleCount: Int { idle.count }

    /// The most recently returned idle connection that is still open, or nil.
    func takeIdle() -> Connection? {
        while let connection = idle.popLast() {
            if connection.isActive { return connection }
        }
        return nil
    }

    /// Opens a fresh connection to the backend.
    func connect() -> EventLoopFuture<Connection> {
        let handler = Connection(pool: self)
        return connector(eventLoop, handler).assumeIsolated().map { _ in handler }.nonisolated()
    }

    /// Takes back a connection whose exchange completed with keep-alive on both sides; closes it
    /// when the pool is full.
    func release(_ connection: Connection) {
        guard connection.isActive, idle.count < maxIdle else {
            connection.close()
            return
        }
        connection.idleSince = eventLoop.now
        idle.append(connection)
        if sweep == nil { startSweep() }
    }

    /// An idle connection closed (by the backend, or by the sweep).
    func remove(_ connection: Connection) {
        if let index = idle.firstIndex(where: { $0 === connection }) { idle.remove(at: index) }
    }

    /// Closes every idle connection and stops the sweep (shutdown).
    func closeAll() {
        sweep?.cancel()
        sweep = nil
        let closing = idle
        idle.removeAll()
        for connection in closing { connection.close() }
    }

    /// One repeated task per pool (not a timer per connection): every quarter of the idle timeout
    /// it closes the connections idle for longer than the timeout, and stops when none are left.
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
}

@available(*, unavailable)
extension BackendPool: Sendable {}

/// The NIO-codec path's pool.
typealias UpstreamPool = BackendPool<UpstreamHTTPHandler>

extension BackendPool {
    /// TCP to the backend; with `tls` (an `https://` upstream) NIOSSL's handler first, and the
    /// connection opens only when the TLS handshake is done: a handshake that fails is a failed
    /// connect. `codec` adds what goes between TLS and the connection's own handler.
    static func tcpConnector(
        target: UpstreamTarget,
        connectTimeout: TimeAmount,
        tls: UpstreamTLS? = nil,
        tlsFailures: TLSHandshakeFailures? = nil,
        codec: @escaping @Sendable (ChannelPipeline.SynchronousOperations) throws -> Void
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
                        try codec(sync)
                        try sync.addHandler(bound.value)
                    }
                }
                .connect(to: target)
            guard let handshake else { return connect }
            return UpstreamTLSHandshakeWatch.connected(connect, handshake: handshake)
        }
    }
}

extension BackendPool where Connection == UpstreamHTTPHandler {
    /// NIO's HTTP/1.1 client codec, between TLS and the handler. Framing headers are set by
    /// ``ForwardedMessage``, not by the encoder. Interim (`1xx`) answers are passed on, for the
    /// forwarder to relay.
    static func addHTTP1Codec(to sync: ChannelPipeline.SynchronousOperations) throws {
        var configuration = HTTPRequestEncoder.Configuration()
        configuration.automaticallySetFramingHeaders = false
        try sync.addHandler(HTTPRequestEncoder(configuration: configuration))
        try sync.addHandler(
            ByteToMessageHandler(
                HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .forward)
            )
        )
    }
}

/// A backend connection could not be opened.
enum UpstreamConnectError: Error {
    /// The client's event loop cannot open sockets (an `EmbeddedEventLoop` in tests).
    case unsupportedEventLoop
}

/// The per-loop pools of one proxy instance. Looked up once per client connection (the one lock
/// here); every request after that goes straight to its loop's pool.
final class UpstreamPools: Sendable {
    private let pools = NIOLockedValueBox([ObjectIdentifier: NIOLoopBound<UpstreamPool>]())
    /// Makes each pool's connector from the settings; TCP (TLS with `upstreamTLS`) to `settings.upstream` unless a test
    /// injects in-memory channels.
    private let makeConnector: @Sendable (ReadyGateSettings) -> UpstreamPool.Connector
    /// The fast path's pools (codec-free connections), and their connector: TCP by default, none
    /// when a test injected only codec connections (the connection then takes the NIO path).
    private let rawPools = NIOLockedValueBox([ObjectIdentifier: NIOLoopBound<RawUpstreamPool>]())
    private let makeRawConnector: (@Sendable (ReadyGateSettings) -> RawUpstreamPool.Connector)?

    init(
        upstreamTLS: UpstreamTLS? = nil,
        upstreamFailures: TLSHandshakeFailures? = nil,
        makeConnector: (@Sendable (ReadyGateSettings) -> UpstreamPool.Connector)? = nil,
        makeRawConnector: (@Sendable (ReadyGateSettings) -> RawUpstreamPool.Connector)? = nil
    ) {
        if makeConnector == nil && makeRawConnector == nil {
            self.makeRawConnector = { settings in
                // Nothing but the raw handler after TLS.
                RawUpstreamPool.tcpConnector(
                    target: settings.upstream,
                    connectTimeout: .milliseconds(Int64(settings.httpResponseTimeoutMs)),
                    tls: upstreamTLS,
                    tlsFailures: upstreamFailures
                ) { _ in }
            }
        } else {
            self.makeRawConnector = makeRawConnector
        }
        self.makeConnector =
            makeConnector ?? { settings in
                UpstreamPool.tcpConnector(
                    target: settings.upstream,
                    connectTimeout: .milliseconds(Int64(settings.httpResponseTimeoutMs)),
                    tls: upstreamTLS,
                    tlsFailures: upstreamFailures,
                    codec: { try UpstreamPool.addHTTP1Codec(to: $0) }
                )
            }
    }

    /// The pool of `eventLoop`, created on first use. Call on `eventLoop`.
    func pool(for eventLoop: any EventLoop, settings: ReadyGateSettings) -> UpstreamPool {
        let key = ObjectIdentifier(eventLoop)
        let bound = pools.withLockedValue { pools in
            if let existing = pools[key] { return existing }
            let pool = UpstreamPool(
                eventLoop: eventLoop,
                maxIdle: settings.httpPoolIdleMax,
                idleTimeout: Self.idleTimeout,
                connector: makeConnector(settings)
            )
            let bound = NIOLoopBound(pool, eventLoop: eventLoop)
            pools[key] = bound
            return bound
        }
        return bound.value
    }

    /// Whether plain requests may take the fast path (``FastHTTP1Handler``).
    var supportsRawForwarding: Bool { makeRawConnector != nil }

    /// The fast path's pool of `eventLoop`, created on first use. Call on `eventLoop`, and only when
    /// ``supportsRawForwarding``.
    func rawPool(for eventLoop: any EventLoop, settings: ReadyGateSettings) -> RawUpstreamPool {
        let key = ObjectIdentifier(eventLoop)
        let bound = rawPools.withLockedValue { pools in
            if let existing = pools[key] { return existing }
            let connector =
                makeRawConnector?(settings) ?? { eventLoop, _ in
                    eventLoop.makeFailedFuture(UpstreamConnectError.unsupportedEventLoop)
                }
            let pool = RawUpstreamPool(
                eventLoop: eventLoop,
                maxIdle: settings.httpPoolIdleMax,
                idleTimeout: Self.idleTimeout,
                connector: connector
            )
            let bound = NIOLoopBound(pool, eventLoop: eventLoop)
            pools[key] = bound
            return bound
        }
        return bound.value
    }

    /// Closes every pool's idle connections, each on its own loop.
    func closeAll() {
        let all = pools.withLockedValue { Array($0.values) }
        for bound in all {
            bound.eventLoop.execute { bound.value.closeAll() }
        }
        let raw = rawPools.withLockedValue { Array($0.values) }
        for bound in raw {
            bound.eventLoop.execute { bound.value.closeAll() }
        }
    }

    /// How long an unused backend connection is kept.
    static let idleTimeout = TimeAmount.seconds(60)
}
