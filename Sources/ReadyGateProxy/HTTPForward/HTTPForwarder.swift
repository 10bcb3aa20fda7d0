import Logging
import NIOCore
import NIOHTTP1

/// Streams plain HTTP/1.1 exchanges of one client connection to the backend, one at a time.
///
/// Created by ``HTTPEntryHandler`` for the first request that is not an upgrade, and reused for
/// every later one on the connection (no per-request object). For each request it takes a
/// connection from the loop's ``UpstreamPool`` (or opens one), writes the rewritten head
/// (``ForwardedMessage``), streams the body parts as they are decoded, and streams the
/// response back. It writes through the entry handler's context, so the response goes out
/// through the connection's `HTTPResponseEncoder`.
///
/// Backpressure both ways: while a body streams, the entry handler asks ``canTakeBody`` before
/// passing `read()` on (false while connecting and while the backend's channel is not writable),
/// and ``UpstreamHTTPHandler`` withholds the backend's reads while the client's channel is not
/// writable.
///
/// The decisions are ``HTTPExchangeStateMachine``'s; this class carries them out and logs.
/// Failures: no connection → `502`; no response head within `READYGATE_HTTP_RESPONSE_TIMEOUT_MS`
/// of the request's end → `504`; the backend closes before answering → `502`, except that a
/// reused connection that closes before any response byte, when no body byte was sent, is
/// retried once on a fresh connection (the backend closed it while idle); the backend closes
/// mid-response → the client's connection is closed (its head is already out).
final class HTTPForwarder {
    private weak var entry: HTTPEntryHandler?
    private let context: ChannelHandlerContext
    private let pool: UpstreamPool
    private let logger: Logger
    private let metrics: ProxyMetrics
    private let clientAddress: String?
    /// `X-Forwarded-For` and `Forwarded` of this client, computed once per connection.
    private let forwardedFor: String
    private let forwardedElement: String
    /// `X-Forwarded-Proto`: `https` behind the TLS listener.
    private let forwardedProto: String

    /// Every decision: when parts go out, retries, pooling, keep-alive.
    var machine = HTTPExchangeStateMachine()
    private(set) var upstream: UpstreamHTTPHandler?
    // The exchange in flight. Plain fields, reset by `start`, so a request allocates nothing here.
    private var upstreamHead: HTTPRequestHead?
    /// Request parts read before the backend connection was there.
    private var buffered = CircularBuffer<HTTPClientRequestPart>(initialCapacity: 4)
    private var bufferedBodyBytes = 0
    private var requestMethod = HTTPMethod.GET
    private var requestVersion = HTTPVersion.http1_1
    private var clientKeepAlive = false
    /// The proxy answered the request's `Expect: 100-continue` itself.
    private var answeredContinue = false
    private var clientNeedsFlush = false
    /// The exchange's timer, armed when its backend connection is there: it bounds the time without
    /// progress (a request body part or its end, the response head or a body part, or either side
    /// becoming writable again): while the request body streams (408, or 504 if the backend takes no
    /// more), from the request's end to the response head (504), and during the response body (both
    /// sides closed).
    var exchangeTimer: ExchangeTimer
    private var lastUpstreamError: (any Error)?

    init(entry: HTTPEntryHandler, context: ChannelHandlerContext, pool: UpstreamPool, environment: ProxyEnvironment) {
        self.entry = entry
        self.context = context
        self.pool = pool
        self.logger = environment.logger
        self.metrics = environment.metrics
        self.exchangeTimer = ExchangeTimer(limit: .milliseconds(Int64(environment.settings.httpResponseTimeoutMs)))
        self.clientAddress = context.channel.remoteAddress?.ipAddress
        forwardedProto = environment.forwardedProto
        (forwardedFor, forwardedElement) = ForwardedMessage.forwardedIdentity(
            clientAddress: clientAddress,
            proto: forwardedProto
        )
    }

    /// Whether more of the request body may be read from the client: not while connecting, and
    /// only while the backend channel is writable.
    var canTakeBody: Bool { machine.canTakeBody(upstreamWritable: upstream?.isWritable ?? false) }

    var clientIsWritable: Bool { context.channel.isWritable }

    // MARK: Client side (called by the entry handler)

    /// A request head that is not an upgrade, its framing already checked.
    ///
    /// - Parameter keepAlive: whether the client's connection may carry a next request.
    func start(_ head: HTTPRequestHead, keepAlive: Bool) {
        assert(machine.state == .idle, "a plain request started while another is in flight")
        if machine.state != .idle { abandonUpstream() }
        requestMethod = head.method
        requestVersion = head.version
        clientKeepAlive = keepAlive
        lastUpstreamError = nil
        upstreamHead = ForwardedMessage.upstreamRequestHead(
            head,
            forwardedFor: forwardedFor,
            forwardedElement: forwardedElement,
            proto: forwardedProto
        )
        machine.requestStarted(clientKeepAlive: keepAlive)
        answeredContinue = ForwardedMessage.expectsContinue(head)
        if answeredContinue {
            context.writeAndFlush(
                NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .continue))),
                promise: nil
            )
        }
        if let connection = pool.takeIdle() {
            // Within the client's read: its read-complete flushes the head with what follows it.
            connected(connection, attempt: nil, reused: true)
        } else {
            connectFresh(attempt: machine.connectStarted())
        }
    }

    /// A body part or the end of the request in flight.
    func clientPart(_ part: HTTPServerRequestPart) {
        switch part {
        case .body(let bytes):
            exchangeTimer.lastProgress = context.eventLoop.now
            switch machine.requestBody(byteCount: bytes.readableBytes) {
            case .write: upstream?.write(.body(.byteBuffer(bytes)))
            case .buffer:
                bufferedBodyBytes += bytes.readableBytes
                buffered.append(.body(.byteBuffer(bytes)))
            case .drop: break
            }
        case .end(let trailers):
            exchangeTimer.lastProgress = context.eventLoop.now
            switch machine.requestEnd() {
            case .write:
                upstream?.write(.end(trailers))
                upstream?.flush()
            case .buffer: buffered.append(.end(trailers))
            case .drop: break
            }
        case .head:
            break
        }
    }

    func clientReadComplete() {
        upstream?.flush()
    }

    func clientWritabilityChanged() {
        guard context.channel.isWritable else { return }
        exchangeTimer.lastProgress = context.eventLoop.now
        upstream?.resumeRead()
    }

    /// The proxy is shutting down: the response in flight is the connection's last. Its head says
    /// `Connection: close` unless it is already out.
    func closeClientAfterResponse() {
        clientKeepAlive = false
        machine.clientMustClose()
    }

    /// The client's request broke HTTP/1.1 mid-exchange (a bad chunk size, say): the exchange is
    /// abandoned and its backend connection closed, never reused. Returns whether the response had
    /// started, in which case the client can only be closed, not answered.
    func clientRequestBroken() -> Bool {
        let responseStarted = machine.responseStarted
        if machine.clientGone() { abandonUpstream() }
        return responseStarted
    }

    // MARK: Backend side (called by the upstream handler)

    /// An interim answer (`103 Early Hints`, say) goes to the client before the final one, its
    /// hop-by-hop fields removed. Not to an HTTP/1.0 client (RFC 9110 §15.2), and not a `100
    /// Continue` when the proxy answered the client's `Expect` itself (it asked for none).
    private func relayInterim(_ head: HTTPResponseHead) {
        guard takeInterimAnswer(), requestVersion.isAtLeastHTTP11, !(head.status == .continue && answeredContinue)
        else { return }
        var headers = head.headers
        ForwardedMessage.stripHopByHop(&headers)
        let interim = HTTPResponseHead(version: .http1_1, status: head.status, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(interim)), promise: nil)
        clientNeedsFlush = true
    }

    func upstreamRead(_ part: HTTPClientResponsePart, from _: UpstreamHTTPHandler) {
        switch part {
        case .head(let head) where head.status.code / 100 == 1 && head.status != .switchingProtocols:
            relayInterim(head)
        case .head(let head):
            let answer = ForwardedMessage.clientResponseHead(
                head,
                requestMethod: requestMethod,
                requestVersion: requestVersion,
                keepAlive: clientKeepAlive
            )
            switch machine.responseHead(
                upstreamKeepAlive: head.isKeepAlive,
                isSwitchingProtocols: head.status == .switchingProtocols,
                closeDelimited: answer.closeDelimited
            ) {
            case .relay:
                metrics.httpResponse(head.status, fromBackend: true)
                exchangeTimer.lastProgress = context.eventLoop.now
                context.write(NIOAny(HTTPServerResponsePart.head(answer.head)), promise: nil)
                clientNeedsFlush = true
            case .fail(let failure):
                fail(failure, reason: "101 to a request without Upgrade")
            case .ignore:
                break
            }
        case .body(let bytes):
            guard machine.state == .exchanging else { return }
            exchangeTimer.lastProgress = context.eventLoop.now
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(bytes))), promise: nil)
            clientNeedsFlush = true
        case .end(let trailers):
            if case .finish(let poolConnection, let keepClient) = machine.responseEnd() {
                finish(trailers: trailers, poolConnection: poolConnection, keepClient: keepClient)
            }
        }
    }

    func upstreamReadComplete() {
        guard clientNeedsFlush else { return }
        clientNeedsFlush = false
        context.flush()
    }

    func upstreamWritabilityChanged(_ isWritable: Bool) {
        guard isWritable else { return }
        exchangeTimer.lastProgress = context.eventLoop.now
        entry?.forwarderMayRead()
    }

    func upstreamError(_ error: any Error) {
        lastUpstreamError = error
    }

    /// The backend connection closed while serving this exchange.
    func upstreamInactive(_ connection: UpstreamHTTPHandler) {
        guard connection === upstream else { return }
        upstream = nil
        let error = lastUpstreamError.map { "\($0)" }
        backendClosed(error: error)
    }

    func prepareRetry(resendEnd: Bool) {
        if resendEnd { buffered.append(.end(nil)) }
    }

    // MARK: Steps

    /// A backend connection for the exchange: the head and the buffered parts go out, or, for an
    /// abandoned attempt, it is closed.
    func connected(_ connection: UpstreamHTTPHandler, attempt: Int?, reused: Bool) {
        let action = machine.connected(attempt: attempt, reused: reused, bufferedBodyBytes: bufferedBodyBytes)
        guard case .sendRequest = action, let upstreamHead else {
            connection.close()
            return
        }
        bufferedBodyBytes = 0
        upstream = connection
        connection.attach(self)
        connection.write(.head(upstreamHead))
        while let part = buffered.popFirst() { connection.write(part) }
        // From a pool, within the client's read: its read-complete flushes the head with what
        // follows it. A fresh connection comes later, on its own.
        if !reused { connection.flush() }
        exchangeTimer.lastProgress = context.eventLoop.now
        armExchangeTimer()
        if !machine.requestEnded { entry?.forwarderMayRead() }
    }

    /// The response is complete: the backend connection goes back to the pool or is closed, and
    /// the client's connection takes its next request or closes.
    private func finish(trailers: HTTPHeaders?, poolConnection: Bool, keepClient: Bool) {
        cancelExchangeTimer()
        if let connection = upstream {
            upstream = nil
            connection.detach()
            if poolConnection {
                pool.release(connection)
            } else {
                connection.close()
            }
        }
        let written = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(trailers)))
        clientNeedsFlush = false
        buffered.removeAll(keepingCapacity: true)
        bufferedBodyBytes = 0
        if !keepClient {
            let context = self.context
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
        entry?.forwardingFinished(keepAlive: keepClient)
    }

    /// The fields of every exchange's log line (method, path, client), with `extra`.
    func exchangeMetadata(_ extra: Logger.Metadata) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            "method": "\(requestMethod)", "path": "\(upstreamHead?.uri ?? "-")", "client": "\(clientAddress ?? "-")",
        ]
        metadata.merge(extra) { _, new in new }
        return metadata
    }

    /// Answers the client with an error before any response byte went out, and closes.
    func fail(_ failure: HTTPExchangeStateMachine.Failure, reason: String) {
        let status = logFailureAndAbandon(failure, reason: reason)
        metrics.httpResponse(status, fromBackend: false)
        let context = self.context
        context.writeHTTPResponse(
            status: status,
            body: context.channel.allocator.buffer(string: "\(status.code) \(status.reasonPhrase): \(reason)\n"),
            contentType: plainTextContentType,
            keepAlive: false
        )
        .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        entry?.forwardingFinished(keepAlive: false)
    }

    /// Closes the backend connection of an unfinished exchange (it is never pooled).
    func abandonUpstream() {
        cancelExchangeTimer()
        buffered.removeAll()
        bufferedBodyBytes = 0
        if let connection = upstream {
            upstream = nil
            connection.close()
        }
    }
}

extension HTTPExchangeStateMachine.Failure {
    /// The log event of each failure.
    var logEvent: Logger.Message {
        switch self {
        case .unreachable: "http_upstream_unreachable"
        case .closedBeforeAnswer: "http_upstream_closed"
        case .unexpectedSwitch: "http_upstream_bad_response"
        case .timedOut: "http_upstream_timeout"
        case .requestTimedOut: "http_request_timeout"
        }
    }
}

/// The last handler of a pooled backend connection behind NIO's HTTP/1.1 client codec, serving an
/// ``HTTPForwarder``.
typealias UpstreamHTTPHandler = BackendConnectionHandler<HTTPForwarder>

extension HTTPForwarder: BackendExchange {
    typealias Response = HTTPClientResponsePart
    typealias Request = HTTPClientRequestPart
}

@available(*, unavailable)
extension HTTPForwarder: Sendable {}

extension HTTPForwarder: ExchangeDriver {
    typealias Exchange = HTTPForwarder

    var exchangeEventLoop: (any EventLoop)? { context.eventLoop }
    var exchangePool: UpstreamPool? { pool }
    var exchangeLogger: Logger { logger }

    func closeStalledExchange() {
        abandonUpstream()
        context.close(promise: nil)
    }
}
