import Logging
import NIOCore
import NIOHTTP2
import ReadyGateCore

/// HTTP/2 on a client connection: h2c with prior knowledge (``HTTP2PrefaceSniffer``) or h2 by ALPN
/// (the TLS listener). NIOHTTP2 speaks the protocol; every stream the client opens gets an
/// ``HTTP2StreamRouter``, which makes it a plain request to the backend pool or, for an extended
/// CONNECT (RFC 8441), a ``WebSocketSession``.
enum HTTP2Pipeline {
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`, as NIOHTTP2's default.
    static let maxHeaderListSize = 16 << 10

    /// What the proxy announces: `SETTINGS_ENABLE_CONNECT_PROTOCOL` lets clients open WebSockets
    /// with an extended CONNECT (RFC 8441 §3). Stream windows are NIOHTTP2's 64 KiB default, so a
    /// stream the proxy does not read (a held or back-pressured WebSocket) costs at most that.
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` is `READYGATE_HTTP2_MAX_STREAMS`.
    static func initialSettings(_ settings: ReadyGateSettings) -> HTTP2Settings {
        [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: settings.http2MaxStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: maxHeaderListSize),
            HTTP2Setting(parameter: .enableConnectProtocol, value: 1),
        ]
    }

    /// Installs HTTP/2 on `channel`, whose next inbound bytes are the client's connection preface.
    static func configure(channel: any Channel, environment: ProxyEnvironment) throws {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = initialSettings(environment.settings)
        let observer = HTTP2ConnectionObserver(environment: environment)
        let sync = channel.pipeline.syncOperations
        _ = try sync.configureHTTP2Pipeline(
            mode: .server,
            connectionConfiguration: connection,
            streamConfiguration: NIOHTTP2Handler.StreamConfiguration(),
            streamDelegate: StreamCounter(
                metrics: environment.metrics,
                observer: NIOLoopBound(observer, eventLoop: channel.eventLoop)
            )
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2StreamRouter(environment: environment))
            }
        }
        try sync.addHandler(observer)
        environment.metrics.http2ConnectionOpened()
    }

    /// Keeps `readygate_http2_streams_active`, and the connection's own count of open streams.
    private struct StreamCounter: NIOHTTP2StreamDelegate {
        let metrics: ProxyMetrics
        let observer: NIOLoopBound<HTTP2ConnectionObserver>

        func streamCreated(_ id: HTTP2StreamID, channel: any Channel) {
            metrics.http2StreamsChanged(by: 1)
            observer.value.streamOpened(id)
        }

        func streamClosed(_ id: HTTP2StreamID, channel: any Channel) {
            metrics.http2StreamsChanged(by: -1)
            observer.value.streamClosed()
        }
    }
}

/// Behind the HTTP/2 handler of a connection: sees the connection-level frames (stream 0) and
/// errors. A client's GOAWAY is logged and counted; NIOHTTP2 closes the streams it names, and the
/// sessions on them end as on a reset. Protocol errors are logged: NIOHTTP2 has answered them (a
/// stream error resets that stream only, a connection error sends GOAWAY).
///
/// It is the connection's shutdown participant (`environment.httpConnections`): a drain sends
/// GOAWAY (no new streams; the streams open run on, their requests and sessions draining as on
/// HTTP/1.1) and closes the connection when its last stream has closed; the drain deadline closes it.
/// A connection without any stream for `READYGATE_HTTP_IDLE_TIMEOUT_MS` gets GOAWAY and is closed,
/// as an idle HTTP/1.1 connection is.
final class HTTP2ConnectionObserver: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let environment: ProxyEnvironment
    private var context: ChannelHandlerContext?
    private var openStreams = 0
    private var lastStreamID = HTTP2StreamID.rootStream
    private var draining = false
    private var registered = false
    /// Closes the connection when it has had no stream for `READYGATE_HTTP_IDLE_TIMEOUT_MS`.
    private var idleTimer: Scheduled<Void>?

    init(environment: ProxyEnvironment) {
        self.environment = environment
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        registered = true
        environment.httpConnections.add(self, on: context.eventLoop)
        armIdleTimer()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        leave()
    }

    func channelInactive(context: ChannelHandlerContext) {
        leave()
        context.fireChannelInactive()
    }

    private func leave() {
        idleTimer?.cancel()
        idleTimer = nil
        guard registered else { return }
        registered = false
        environment.httpConnections.remove(self)
    }

    func streamOpened(_ id: HTTP2StreamID) {
        openStreams += 1
        lastStreamID = max(lastStreamID, id)
        idleTimer?.cancel()
        idleTimer = nil
    }

    func streamClosed() {
        openStreams -= 1
        guard openStreams == 0 else { return }
        if draining {
            context?.close(promise: nil)
        } else {
            armIdleTimer()
        }
    }

    /// No stream open: as an HTTP/1.1 connection waiting for its next request, the connection may
    /// stay for the idle timeout, then it gets GOAWAY and is closed.
    private func armIdleTimer() {
        guard let context, idleTimer == nil else { return }
        let timeout = TimeAmount.milliseconds(Int64(environment.settings.httpIdleTimeoutMs))
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            idleTimer = nil
            guard openStreams == 0, let context = self.context else { return }
            environment.logger.debug(
                "client_idle_timeout",
                metadata: ["client": "\(context.channel.remoteAddress?.ipAddress ?? "-")", "transport": "h2"]
            )
            sendGoAway(context: context)
            context.close(promise: nil)
        }
    }

    private func sendGoAway(context: ChannelHandlerContext) {
        let goAway = HTTP2Frame(
            streamID: .rootStream,
            payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil)
        )
        context.writeAndFlush(wrapOutboundOut(goAway), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if case .goAway(let lastStreamID, let errorCode, _) = frame.payload {
            environment.metrics.http2GoAwayReceived()
            environment.logger.info(
                "http2_goaway_received",
                metadata: [
                    "last_stream_id": "\(lastStreamID)", "error_code": "\(errorCode)",
                    "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
                ]
            )
        }
    }

    /// The listener allows half-closure (for HTTP/1.1); an HTTP/2 client that ends its output has
    /// left: the connection is closed, and its streams with it.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        environment.logger.notice(
            "http2_protocol_error",
            metadata: [
                "error": "\(error)", "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
            ]
        )
        if error is NIOHTTP2Errors.StreamError { return }
        // A connection error (NIOHTTP2 sent GOAWAY) or a socket error: this connection is done.
        context.close(promise: nil)
    }
}

extension HTTP2ConnectionObserver: ShutdownParticipant {
    func drain() {
        guard let context, !draining else { return }
        draining = true
        sendGoAway(context: context)
        if openStreams == 0 { context.close(promise: nil) }
    }

    func endNow() {
        context?.close(promise: nil)
    }
}

@available(*, unavailable)
extension HTTP2ConnectionObserver: Sendable {}
