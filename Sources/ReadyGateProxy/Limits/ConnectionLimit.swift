import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// `READYGATE_MAX_CONNECTIONS`: how many client connections the listener serves at once.
///
/// What counts is an accepted TCP client connection of the proxy's listener, from its accept to its
/// close, whatever it carries (plain HTTP requests, a WebSocket session, nothing yet). The backend
/// connections a session or the HTTP pool opens and the admin listener's connections do not count.
/// A connection past the limit is not served: ``ConnectionRefusalHandler`` answers its request `503`
/// and closes it, and it holds no slot meanwhile.
///
/// The count is one lock-protected integer shared by every event loop: taken once when a connection
/// is accepted, given back once, when its channel's close future completes.
public final class ConnectionLimit: Sendable {
    /// The limit; 0 for none (connections are still counted, for the gauge).
    public let limit: Int
    private let active = NIOLockedValueBox(0)
    private let metrics: ProxyMetrics
    private let refusals: RateLimitedLog

    init(limit: Int, metrics: ProxyMetrics, logger: Logger) {
        self.limit = limit
        self.metrics = metrics
        self.refusals = RateLimitedLog { count in
            logger.warning(
                "connections_refused",
                metadata: ["refused": "\(count)", "limit": "\(limit)", "reason": "READYGATE_MAX_CONNECTIONS reached"]
            )
        }
    }

    /// Connections being served now.
    public var activeConnections: Int { active.withLockedValue { $0 } }

    /// Takes a slot for a just-accepted `channel`, given back when the channel closes. Returns false
    /// when every slot is taken: the connection is refused (counted, and logged once a second at most).
    func admit(_ channel: any Channel) -> Bool {
        let admitted = active.withLockedValue { active -> Bool in
            guard limit == 0 || active < limit else { return false }
            active += 1
            return true
        }
        guard admitted else {
            metrics.connectionRefused()
            refusals.record(on: channel.eventLoop)
            return false
        }
        metrics.connectionsChanged(by: 1)
        // The close future completes exactly once, whether the channel closes or never got registered.
        channel.closeFuture.whenComplete { _ in self.release() }
        return true
    }

    private func release() {
        active.withLockedValue { $0 -= 1 }
        metrics.connectionsChanged(by: -1)
    }
}

/// The pipeline of a connection past `READYGATE_MAX_CONNECTIONS`: it reads the request head and
/// answers `503 Service Unavailable` with `Connection: close` and a short body (an upgrade request
/// gets it too, and never a `101`), then closes once the request is read to its end. A connection that
/// sends no complete head within ``timeout`` gets the same answer then.
final class ConnectionRefusalHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// How long a refused connection may take to send its request.
    static let timeout = TimeAmount.seconds(1)
    static let body = "too many connections, try again later\n"

    private let metrics: ProxyMetrics
    private var answered = false
    private var responseWritten = false
    private var requestEnded = false
    private var timer: Scheduled<Void>?

    init(metrics: ProxyMetrics) {
        self.metrics = metrics
    }

    /// Installs the refusal pipeline on a connection that was not admitted.
    static func configure(channel: any Channel, metrics: ProxyMetrics) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        var encoder = HTTPResponseEncoder.Configuration()
        encoder.automaticallySetFramingHeaders = false
        try sync.addHandler(HTTPResponseEncoder(configuration: encoder))
        try sync.addHandler(ConnectionRefusalHandler(metrics: metrics))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func armTimer(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.timeout) { [self] in
            requestEnded = true
            answer(context: context)
            closeIfDone(context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            answer(context: context)
        case .body:
            break
        case .end:
            requestEnded = true
            closeIfDone(context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            requestEnded = true
            if answered { closeIfDone(context: context) } else { context.close(promise: nil) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Bytes that are not HTTP: the answer is the same, and nothing more is read.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        requestEnded = true
        answer(context: context)
        closeIfDone(context: context)
    }

    private func answer(context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        metrics.httpResponse(.serviceUnavailable, fromBackend: false)
        context.writeHTTPResponse(
            status: .serviceUnavailable,
            body: context.channel.allocator.buffer(string: Self.body),
            contentType: plainTextContentType,
            keepAlive: false
        ).assumeIsolated().whenComplete { [self] _ in
            responseWritten = true
            closeIfDone(context: context)
        }
    }

    /// Closes once the answer is out and the request was read to its end (closing with request bytes
    /// unread would reset the connection, and the client could lose the answer).
    private func closeIfDone(context: ChannelHandlerContext) {
        guard responseWritten, requestEnded, context.channel.isActive else { return }
        timer?.cancel()
        timer = nil
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ConnectionRefusalHandler: Sendable {}
