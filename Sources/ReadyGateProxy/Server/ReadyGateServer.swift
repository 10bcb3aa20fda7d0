import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ReadyGateCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The proxy's HTTP/1.1 listener. Every accepted connection gets an HTTP decoder, encoder and an
/// ``HTTPEntryHandler``; WebSocket upgrades become sessions on the connection's event loop. A
/// connection past `READYGATE_MAX_CONNECTIONS` gets a ``ConnectionRefusalHandler`` instead (`503`).
///
/// One listening socket per event loop, all bound to the same address with `SO_REUSEPORT`: the
/// kernel spreads new connections over them, and each loop accepts onto itself. With a single
/// listener, most accepted connections would be handed to another loop (NIO's round robin), which
/// costs a wake-up of that loop's thread before the request is read: about 0.05 ms of a new
/// session's first echo here (docs/benchmarks.md).
public final class ReadyGateServer: Sendable {
    public let environment: ProxyEnvironment
    private let group: any EventLoopGroup
    /// The listening sockets, one per event loop.
    let channels: [any Channel]

    private init(environment: ProxyEnvironment, group: any EventLoopGroup, channels: [any Channel]) {
        self.environment = environment
        self.group = group
        self.channels = channels
    }

    /// The address the listener is bound to (with the real port when 0 was asked for).
    public var localAddress: SocketAddress? { channels[0].localAddress }

    /// The bound port.
    public var port: Int { localAddress?.port ?? 0 }

    /// Binds the listener on `environment.settings.listen`: the first event loop's socket on that
    /// address (a free port when it says 0), every other loop's on the address the first one got.
    ///
    /// `SO_REUSEPORT` would also let this process share a port that another process of the same
    /// user listens on with the option, where the bind should fail. So a fixed port is first bound
    /// once without it: a port in use by anyone fails the start with `EADDRINUSE`, as it would
    /// without the option.
    public static func start(environment: ProxyEnvironment, group: any EventLoopGroup) async throws -> ReadyGateServer {
        TypeMetadataWarmUp.run()
        let listen = environment.settings.listen
        let loops = Array(group.makeIterator())
        if listen.port != 0 {
            // It never accepts: a connection that reaches it in the moment it listens is reset.
            let probe = try await ServerBootstrap(group: loops[0])
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(ChannelOptions.autoRead, value: false)
                .bind(host: listen.host, port: listen.port)
                .get()
            try await probe.close()
        }
        let first = try await bootstrap(on: loops[0], environment: environment)
            .bind(host: listen.host, port: listen.port)
            .get()
        var channels = [first]
        do {
            if loops.count > 1, let address = first.localAddress {
                for loop in loops.dropFirst() {
                    channels.append(try await bootstrap(on: loop, environment: environment).bind(to: address).get())
                }
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        return ReadyGateServer(environment: environment, group: group, channels: channels)
    }

    /// A listener on `loop` whose connections stay on `loop`.
    private static func bootstrap(on loop: any EventLoop, environment: ProxyEnvironment) -> ServerBootstrap {
        ServerBootstrap(group: loop, childGroup: loop)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseport), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try ChannelTuning.applyConnectionOptions(to: channel)
                    if environment.connectionLimit.admit(channel) {
                        try ConnectionPipeline.configure(channel: channel, environment: environment)
                    } else {
                        try ConnectionPipeline.configureRefused(channel: channel, environment: environment)
                    }
                }
            }
    }

    /// Installs the HTTP/1.1 handlers on a fresh connection. Public for the fuzz target that feeds
    /// raw bytes into this pipeline on an `EmbeddedChannel` (`Tests/Fuzz`).
    ///
    /// Plain requests take the fast path (``FastHTTP1Handler``: one handler, bytes forwarded with
    /// only the head rewritten); it falls back to NIO's codecs and ``HTTPEntryHandler``
    /// (``configureHTTP1Codec(channel:environment:)``) at a request boundary for anything else.
    public static func configureHTTP1(channel: any Channel, environment: ProxyEnvironment) throws {
        guard environment.httpPools.supportsRawForwarding else {
            try configureHTTP1Codec(channel: channel, environment: environment)
            return
        }
        try channel.pipeline.syncOperations.addHandler(FastHTTP1Handler(environment: environment))
    }

    /// The NIO-codec path: NIO's request decoder and response encoder and an ``HTTPEntryHandler``,
    /// appended to the pipeline (the fast path's fallback, and the only path when the backend
    /// pools are test doubles on NIO's codecs).
    static func configureHTTP1Codec(channel: any Channel, environment: ProxyEnvironment) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        // Framing headers are set by whoever writes a response (`writeHTTPResponse`, the 101, and
        // `ForwardedMessage` for relayed responses), not guessed by the encoder: it cannot tell a
        // response to HEAD, whose framing headers describe a body that is not sent.
        var encoder = HTTPResponseEncoder.Configuration()
        encoder.automaticallySetFramingHeaders = false
        try sync.addHandler(HTTPResponseEncoder(configuration: encoder))
        try sync.addHandler(HTTPEntryHandler(environment: environment))
    }

    /// Stops accepting and closes idle pooled backend connections; sessions and HTTP exchanges
    /// in flight run on. Closing twice is harmless.
    public func close() async throws {
        environment.httpPools.closeAll()
        for channel in channels {
            do {
                try await channel.close()
            } catch ChannelError.alreadyClosed {
                continue
            }
        }
    }

    /// Shuts down as DESIGN §6 says. The listener closes; plain HTTP connections close when idle
    /// or after their response in flight; WebSocket sessions run on. Whatever is still open after
    /// `drain` is ended: sessions with `1001 going away`, HTTP connections at once. Returns when
    /// nothing is left, or `grace` after the end (the sessions' close handshakes fit in it).
    public func shutdown(drain: Duration, grace: Duration) async throws {
        environment.beginDraining()
        try await close()
        environment.sessions.drainAll()
        environment.httpConnections.drainAll()
        if await waitUntilNothingLeft(timeout: drain) { return }
        environment.logger.info(
            "drain_ended",
            metadata: [
                "sessions": "\(environment.sessions.count)",
                "http_connections": "\(environment.httpConnections.count)",
            ]
        )
        environment.sessions.endAll()
        environment.httpConnections.endAll()
        if await waitUntilNothingLeft(timeout: grace) { return }
        environment.logger.warning(
            "shutdown_timeout",
            metadata: [
                "sessions": "\(environment.sessions.count)",
                "http_connections": "\(environment.httpConnections.count)",
            ]
        )
    }

    /// Waits until both registries are empty at once: a connection whose upgrade was read moves
    /// from one to the other.
    private func waitUntilNothingLeft(timeout: Duration) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            guard await environment.sessions.waitUntilEmpty(timeout: max(deadline - clock.now, .zero)),
                await environment.httpConnections.waitUntilEmpty(timeout: max(deadline - clock.now, .zero))
            else { return false }
            if environment.sessions.count == 0, environment.httpConnections.count == 0 { return true }
        }
    }

    /// Completes when the listener is closed.
    public var closeFuture: EventLoopFuture<Void> {
        EventLoopFuture.andAllComplete(channels.map(\.closeFuture), on: channels[0].eventLoop)
    }
}

extension NIOBSDSocket.Option {
    /// `SO_REUSEPORT`, which NIO does not name: several sockets of this process bound to one address.
    static let so_reuseport = NIOBSDSocket.Option(rawValue: SO_REUSEPORT)
}
