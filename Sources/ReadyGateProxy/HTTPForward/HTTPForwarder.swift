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
/// Failures: no connection → `502`; no response head within `READYGATE_HTTP_RESPONSE_TIMEOUT_MS`
/// of the request's end → `504`; the backend closes before answering → `502`, except that a
/// reused connection that closes before any response byte, when no body byte was sent, is
/// retried once on a fresh connection (the backend closed it while idle); the backend closes
/// mid-response → the client's connection is closed (its head is already out).
final class HTTPForwarder {
    private enum State {
        /// No request.
        case idle
        /// Waiting for a backend connection; the request's parts wait in `buffered`.
        case connecting
        /// The head is on `upstream`; parts are written as they come.
        case exchanging
        /// The exchange failed or the client is closing; later parts are dropped.
        case closed
    }

    private weak var entry: HTTPEntryHandler?
    private let context: ChannelHandlerContext
    private let pool: UpstreamPool
    private let logger: Logger
    private let responseTimeout: TimeAmount
    private let clientAddress: String?
    /// `X-Forwarded-For` and `Forwarded` of this client, computed once per connection.
    private let forwardedFor: String
    private let forwardedElement: String

    private var state = State.idle
    private var upstream: UpstreamHTTPHandler?
    /// Bumped on every connect and on every exchange's end: a connect that completes for an
    /// older one is closed.
    private var attempt = 0
    // The exchange in flight. Plain fields, reset by `start`, so a request allocates nothing here.
    private var upstreamHead: HTTPRequestHead?
    private var buffered = CircularBuffer<HTTPClientRequestPart>(initialCapacity: 4)
    private var requestMethod = HTTPMethod.GET
    private var requestVersion = HTTPVersion.http1_1
    private var clientKeepAlive = false
    private var requestEnded = false
    private var bodyWritten = false
    private var reusedUpstream = false
    private var retried = false
    private var responseStarted = false
    private var upstreamKeepAlive = false
    private var closeDelimited = false
    private var clientNeedsFlush = false
    private var timeout: Scheduled<Void>?
    private var lastUpstreamError: (any Error)?

    init(entry: HTTPEntryHandler, context: ChannelHandlerContext, pool: UpstreamPool, environment: ProxyEnvironment) {
        self.entry = entry
        self.context = context
        self.pool = pool
        self.logger = environment.logger
        self.responseTimeout = .milliseconds(Int64(environment.settings.httpResponseTimeoutMs))
        self.clientAddress = context.channel.remoteAddress?.ipAddress
        (forwardedFor, forwardedElement) = ForwardedMessage.forwardedIdentity(clientAddress: clientAddress)
    }

    /// Whether more of the request body may be read from the client: not while connecting, and
    /// only while the backend channel is writable.
    var canTakeBody: Bool {
        switch state {
        case .idle: true
        case .connecting, .closed: false
        case .exchanging: upstream?.isWritable ?? false
        }
    }

    var clientIsWritable: Bool { context.channel.isWritable }

    // MARK: Client side (called by the entry handler)

    /// A request head that is not an upgrade, its framing already checked.
    ///
    /// - Parameter keepAlive: whether the client's connection may carry a next request.
    func start(_ head: HTTPRequestHead, keepAlive: Bool) {
        assert(isIdle, "a plain request started while another is in flight")
        if !isIdle { abandonUpstream() }
        requestMethod = head.method
        requestVersion = head.version
        clientKeepAlive = keepAlive
        requestEnded = false
        bodyWritten = false
        retried = false
        responseStarted = false
        upstreamKeepAlive = false
        closeDelimited = false
        lastUpstreamError = nil
        upstreamHead = ForwardedMessage.upstreamRequestHead(
            head,
            forwardedFor: forwardedFor,
            forwardedElement: forwardedElement
        )
        if ForwardedMessage.expectsContinue(head) {
            context.writeAndFlush(
                NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .continue))),
                promise: nil
            )
        }
        if let connection = pool.takeIdle() {
            // Within the client's read: its read-complete flushes the head with what follows it.
            attach(connection, reused: true, flush: false)
        } else {
            connectFresh()
        }
    }

    var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    /// A body part or the end of the request in flight.
    func clientPart(_ part: HTTPServerRequestPart) {
        switch (state, part) {
        case (.exchanging, .body(let bytes)):
            if bytes.readableBytes > 0 { bodyWritten = true }
            upstream?.write(.body(.byteBuffer(bytes)))
        case (.exchanging, .end(let trailers)):
            requestEnded = true
            upstream?.write(.end(trailers))
            upstream?.flush()
            armTimeout()
        case (.connecting, .body(let bytes)):
            buffered.append(.body(.byteBuffer(bytes)))
        case (.connecting, .end(let trailers)):
            requestEnded = true
            buffered.append(.end(trailers))
        case (.idle, _), (.closed, _), (_, .head):
            break
        }
    }

    func clientReadComplete() {
        upstream?.flush()
    }

    func clientWritabilityChanged() {
        if context.channel.isWritable { upstream?.resumeRead() }
    }

    /// The client's connection closed: the backend connection cannot be reused mid-exchange.
    func clientInactive() {
        switch state {
        case .connecting, .exchanging:
            logger.info(
                "http_client_gone",
                metadata: [
                    "method": "\(requestMethod)", "path": "\(upstreamHead?.uri ?? "-")",
                    "response_started": "\(responseStarted)", "client": "\(clientAddress ?? "-")",
                ]
            )
            abandonUpstream()
        case .idle, .closed:
            break
        }
        state = .closed
    }

    // MARK: Backend side (called by the upstream handler)

    func upstreamRead(_ part: HTTPClientResponsePart) {
        guard case .exchanging = state else { return }
        switch part {
        case .head(let head):
            if head.status == .switchingProtocols {
                fail(.badGateway, event: "http_upstream_bad_response", reason: "101 to a request without Upgrade")
                return
            }
            responseStarted = true
            timeout?.cancel()
            timeout = nil
            upstreamKeepAlive = head.isKeepAlive
            let answer = ForwardedMessage.clientResponseHead(
                head,
                requestMethod: requestMethod,
                requestVersion: requestVersion,
                keepAlive: clientKeepAlive
            )
            closeDelimited = answer.closeDelimited
            context.write(NIOAny(HTTPServerResponsePart.head(answer.head)), promise: nil)
            clientNeedsFlush = true
        case .body(let bytes):
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(bytes))), promise: nil)
            clientNeedsFlush = true
        case .end(let trailers):
            finish(trailers: trailers)
        }
    }

    func upstreamReadComplete() {
        guard clientNeedsFlush else { return }
        clientNeedsFlush = false
        context.flush()
    }

    func upstreamWritabilityChanged(_ isWritable: Bool) {
        if isWritable { entry?.forwarderMayRead() }
    }

    func upstreamError(_ error: any Error) {
        lastUpstreamError = error
    }

    /// The backend connection closed while serving this exchange.
    func upstreamInactive(_ connection: UpstreamHTTPHandler) {
        guard case .exchanging = state, connection === upstream else { return }
        upstream = nil
        if responseStarted {
            logger.warning(
                "http_upstream_closed_mid_response",
                metadata: [
                    "method": "\(requestMethod)", "path": "\(upstreamHead?.uri ?? "-")",
                    "error": "\(lastUpstreamError.map { "\($0)" } ?? "closed")",
                    "client": "\(clientAddress ?? "-")",
                ]
            )
            cancelTimeout()
            state = .closed
            context.close(promise: nil)
            return
        }
        if reusedUpstream && !bodyWritten && !retried {
            // The backend closed the idle connection as it was being reused: nothing of this
            // request reached it, so it is sent again on a fresh connection (RFC 9112 §9.3.1).
            retried = true
            cancelTimeout()
            logger.debug("http_upstream_stale_retry", metadata: ["path": "\(upstreamHead?.uri ?? "-")"])
            if requestEnded { buffered.append(.end(nil)) }
            connectFresh()
            return
        }
        fail(
            .badGateway,
            event: "http_upstream_closed",
            reason: "backend closed the connection before answering: \(lastUpstreamError.map { "\($0)" } ?? "EOF")"
        )
    }

    // MARK: Steps

    private func connectFresh() {
        state = .connecting
        attempt += 1
        let thisAttempt = attempt
        pool.connect().assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let connection):
                guard thisAttempt == attempt, case .connecting = state else {
                    connection.close()
                    return
                }
                attach(connection, reused: false, flush: true)
            case .failure(let error):
                guard thisAttempt == attempt, case .connecting = state else { return }
                fail(.badGateway, event: "http_upstream_unreachable", reason: "\(error)")
            }
        }
    }

    private func attach(_ connection: UpstreamHTTPHandler, reused: Bool, flush: Bool) {
        guard let upstreamHead else { return }
        state = .exchanging
        upstream = connection
        reusedUpstream = reused
        connection.attach(self)
        connection.write(.head(upstreamHead))
        while let part = buffered.popFirst() {
            if case .body(.byteBuffer(let bytes)) = part, bytes.readableBytes > 0 { bodyWritten = true }
            connection.write(part)
        }
        if flush { connection.flush() }
        if requestEnded {
            armTimeout()
        } else {
            entry?.forwarderMayRead()
        }
    }

    private func armTimeout() {
        guard timeout == nil, !responseStarted else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let attemptAtArming = attempt
        timeout = context.eventLoop.scheduleTask(in: responseTimeout) {
            let forwarder = bound.value
            guard forwarder.attempt == attemptAtArming else { return }
            forwarder.responseTimedOut()
        }
    }

    private func cancelTimeout() {
        timeout?.cancel()
        timeout = nil
    }

    private func responseTimedOut() {
        timeout = nil
        guard case .exchanging = state, !responseStarted else { return }
        fail(.gatewayTimeout, event: "http_upstream_timeout", reason: "no response head in time")
    }

    /// The response is complete: the backend connection goes back to the pool when both sides
    /// allow it, and the client's connection takes its next request or closes.
    private func finish(trailers: HTTPHeaders?) {
        cancelTimeout()
        attempt += 1
        if let connection = upstream {
            upstream = nil
            connection.detach()
            if upstreamKeepAlive && requestEnded {
                pool.release(connection)
            } else {
                connection.close()
            }
        }
        let keepClient = clientKeepAlive && requestEnded && !closeDelimited
        let written = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(trailers)))
        clientNeedsFlush = false
        buffered.removeAll(keepingCapacity: true)
        if keepClient {
            state = .idle
            entry?.forwardingFinished(keepAlive: true)
        } else {
            state = .closed
            let context = self.context
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            entry?.forwardingFinished(keepAlive: false)
        }
    }

    /// Answers the client with an error before any response byte went out, and closes.
    private func fail(_ status: HTTPResponseStatus, event: Logger.Message, reason: String) {
        logger.warning(
            event,
            metadata: [
                "status": "\(status.code)", "reason": "\(reason)", "method": "\(requestMethod)",
                "path": "\(upstreamHead?.uri ?? "-")", "client": "\(clientAddress ?? "-")",
            ]
        )
        abandonUpstream()
        state = .closed
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
    private func abandonUpstream() {
        cancelTimeout()
        attempt += 1
        buffered.removeAll()
        if let connection = upstream {
            upstream = nil
            connection.close()
        }
    }
}

@available(*, unavailable)
extension HTTPForwarder: Sendable {}
