import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ReadyGateCore

/// The first handler of every HTTP/1.1 connection. It reads a request head and routes it:
/// a WebSocket upgrade is validated (RFC 6455 §4.2.1) and handed to a ``WebSocketSession``;
/// any other request is streamed to the backend by the connection's ``HTTPForwarder``.
///
/// One plain request is in flight at a time: parts of requests the client pipelined behind it wait
/// in `queued` (and `read()` is not passed on while any wait), to be taken in order when its
/// response is complete. So a connection can carry plain requests and then an upgrade.
///
/// While it waits for a request head it keeps the connection's ``RequestHeadDeadline``: a connection
/// silent for the idle timeout is closed, one that began a head and did not finish it in the header
/// timeout is answered `408`. One lazily re-armed timer serves every wait, so a keep-alive request
/// costs a clock read, not a scheduled task.
final class HTTPEntryHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        /// A plain request streams to the backend; `requestEnded` once its end was passed on.
        case forwarding(requestEnded: Bool)
        /// A valid upgrade request: the session starts at its end.
        case upgradeRequested(HTTPRequestHead, HTTPHeaderList, ClientUpgradeRequest)
        /// The session owns the connection now.
        case upgrading(WebSocketSession)
        case done
    }

    private let environment: ProxyEnvironment
    private var state = State.idle
    private var context: ChannelHandlerContext?
    /// Created for the first plain request, reused for the next ones.
    private var forwarder: HTTPForwarder?
    /// Parts of pipelined requests read while a plain request was in flight.
    private var queued = CircularBuffer<HTTPServerRequestPart>(initialCapacity: 0)
    private var pendingRead = false
    /// The client half-closed: answer what it sent, then close.
    private var inputClosed = false
    /// Taking queued pipelined parts: no read until they are all routed.
    private var draining = false
    /// A request pipelined behind the one in flight did not parse. It is answered `400` when the
    /// requests before it have been answered (RFC 9112 §9.3.2: responses in request order).
    private var pipelinedError: HTTPParserError?
    private var headTimer: RequestHeadTimer
    /// In `environment.httpConnections`, so that a shutdown can close this connection.
    private var registered = false

    init(environment: ProxyEnvironment) {
        self.environment = environment
        headTimer = RequestHeadTimer(settings: environment.settings)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { connectionOpened(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The forwarder holds this handler's context, which holds this handler: let go of both.
        self.context = nil
        forwarder = nil
        connectionLeft()
    }

    func channelActive(context: ChannelHandlerContext) {
        connectionOpened(context: context)
        context.fireChannelActive()
    }

    private func connectionOpened(context: ChannelHandlerContext) {
        registered = true
        environment.httpConnections.add(self, on: context.eventLoop)
        headTimer.awaitHead(context: context, check: headCheck)
    }

    /// The connection closed, or a WebSocket session took it over (it registers itself).
    private func connectionLeft() {
        headTimer.cancel()
        if registered {
            registered = false
            environment.httpConnections.remove(self)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .forwarding(requestEnded: true) = state {
            queued.append(part)
            return
        }
        route(part, context: context)
    }

    private func route(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            receivedHead(head, context: context)
        case (.forwarding(requestEnded: false), .body):
            forwarder?.clientPart(part)
        case (.forwarding(requestEnded: false), .end):
            state = .forwarding(requestEnded: true)
            forwarder?.clientPart(part)
        case (.upgradeRequested(let head, let headers, let upgrade), .end):
            // A session reaches the backend through NIOPosix sockets. An event loop that cannot make
            // them (an `EmbeddedEventLoop`: handler tests, the HTTP entry fuzz target) gets `502`,
            // as a plain request's failed connect does, where `ClientBootstrap(group:)` would trap.
            guard ClientBootstrap(validatingGroup: context.eventLoop) != nil else {
                state = .done
                respond(context: context, status: .badGateway, body: "upstream unavailable\n", keepAlive: false)
                return
            }
            let session = WebSocketSession(
                environment: environment,
                request: head,
                headers: headers,
                upgrade: upgrade,
                responder: HTTP1ClientResponder(context: context)
            )
            state = .upgrading(session)
            session.start()
        case (.upgrading, .end), (.upgrading, .body), (.upgradeRequested, .body), (.done, _):
            break
        case (.idle, _), (.forwarding, _), (.upgrading, .head), (.upgradeRequested, .head):
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        switch state {
        case .forwarding:
            forwarder?.clientReadComplete()
        case .idle:
            // Bytes were read and no head came of them: a head has begun.
            headTimer.bytesArrived(context: context, check: headCheck)
        case .upgradeRequested, .upgrading, .done:
            break
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        forwarder?.clientWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    /// The client's half-close (remote half-closure is allowed on the listener). A request whose
    /// body was cut off can never complete: the exchange is abandoned. Otherwise the requests already
    /// read are answered, and the connection closes when none is left.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            switch state {
            case .idle:
                context.close(promise: nil)
            case .forwarding(requestEnded: false):
                state = .done
                forwarder?.clientGone()
                context.close(promise: nil)
            case .forwarding(requestEnded: true):
                inputClosed = true
            case .upgradeRequested, .upgrading, .done:
                break
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func read(context: ChannelHandlerContext) {
        guard mayRead else {
            pendingRead = true
            return
        }
        context.read()
    }

    /// Whether `read()` may go on. While a body streams: only into a connected, writable backend
    /// channel. After the request's end: until a pipelined request arrives, as NIO's
    /// `HTTPServerPipelineHandler` does; then no more until the response is complete, so at most one
    /// read batch waits in `queued`. (Withholding the read at every request's end instead would cost
    /// two `epoll_ctl` calls per request, and would not notice a client that leaves.)
    private var mayRead: Bool {
        if draining { return false }
        switch state {
        case .forwarding(requestEnded: false): return forwarder?.canTakeBody ?? true
        case .forwarding(requestEnded: true): return queued.isEmpty
        case .idle, .upgradeRequested, .upgrading, .done: return true
        }
    }

    // MARK: Plain requests

    private func startForwarding(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        if let problem = ForwardedMessage.framingProblem(head) {
            reject(head, status: .badRequest, reason: problem, context: context)
            return
        }
        if head.method == .CONNECT {
            reject(head, status: .notImplemented, reason: "CONNECT is not supported", context: context)
            return
        }
        // NIO's decoder stops parsing after any upgrade request: such a connection cannot carry a
        // next request, so it is closed after the response.
        let keepAlive = head.isKeepAlive && !head.headers.contains(name: "upgrade")
        let forwarder =
            self.forwarder
            ?? HTTPForwarder(
                entry: self,
                context: context,
                pool: environment.httpPools.pool(for: context.eventLoop, settings: environment.settings),
                environment: environment
            )
        self.forwarder = forwarder
        state = .forwarding(requestEnded: false)
        forwarder.start(head, keepAlive: keepAlive)
    }

    /// The forwarder can take more of the request body (a backend connection is attached, or its
    /// channel became writable again).
    func forwarderMayRead() {
        guard pendingRead, mayRead, let context else { return }
        pendingRead = false
        context.read()
    }

    /// The exchange is over. Kept alive: the requests the client pipelined meanwhile are taken in
    /// order, and reading resumes. Otherwise the forwarder is closing the connection.
    func forwardingFinished(keepAlive: Bool) {
        guard keepAlive, let context else {
            state = .done
            queued.removeAll()
            return
        }
        state = .idle
        headTimer.awaitHead(context: context, check: headCheck)
        draining = true
        while let part = queued.popFirst() {
            route(part, context: context)
            if case .forwarding(requestEnded: true) = state { break }
        }
        draining = false
        if let parserError = pipelinedError, queued.isEmpty {
            answerPipelinedError(parserError, context: context)
            if case .done = state { return }
        }
        if case .forwarding = state { forwarder?.clientReadComplete() }
        if inputClosed, case .idle = state {
            context.close(promise: nil)
            return
        }
        if pendingRead, mayRead {
            pendingRead = false
            context.read()
        }
    }

    /// The body of the request in flight did not parse (a bad chunk size, say): `400` while no
    /// response has started (RFC 9112 §7.1), else the connection can only be closed.
    private func requestBroken(_ parserError: HTTPParserError, context: ChannelHandlerContext) {
        let responseStarted = forwarder?.clientRequestBroken() ?? true
        environment.logger.warning(
            "bad_request",
            metadata: [
                "status": "\(responseStarted ? "-" : "400")", "error": "\(parserError)", "during": "forwarding",
                "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
            ]
        )
        state = .done
        queued.removeAll()
        if responseStarted {
            context.close(promise: nil)
        } else {
            respond(
                context: context,
                status: .badRequest,
                body: "malformed HTTP request: \(parserError)\n",
                keepAlive: false
            )
        }
    }

    /// The requests before a pipelined one that did not parse are answered (or the last of them
    /// is in flight, its body cut by the error): the error gets its answer now.
    private func answerPipelinedError(_ parserError: HTTPParserError, context: ChannelHandlerContext) {
        switch state {
        case .idle:
            pipelinedError = nil
            state = .done
            environment.logger.warning(
                "bad_request",
                metadata: [
                    "status": "400", "error": "\(parserError)", "during": "pipelined",
                    "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
                ]
            )
            respond(
                context: context,
                status: .badRequest,
                body: "malformed HTTP request: \(parserError)\n",
                keepAlive: false
            )
        case .forwarding(requestEnded: false):
            pipelinedError = nil
            requestBroken(parserError, context: context)
        case .forwarding(requestEnded: true), .upgradeRequested, .upgrading, .done:
            // Still answering an earlier request, or no longer reading requests.
            break
        }
    }

    private func reject(
        _ head: HTTPRequestHead,
        status: HTTPResponseStatus,
        reason: String,
        context: ChannelHandlerContext
    ) {
        state = .done
        environment.logger.warning(
            "bad_request",
            metadata: [
                "status": "\(status.code)", "reason": "\(reason)", "method": "\(head.method)", "path": "\(head.uri)",
                "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
            ]
        )
        respond(context: context, status: status, body: reason + "\n", keepAlive: false)
    }

    private func receivedHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        headTimer.headReceived()
        if let problem = ForwardedMessage.hostProblem(head) {
            reject(head, status: .badRequest, reason: problem, context: context)
            return
        }
        // Most requests carry no `Upgrade`: they skip the conversion to Core's header list.
        guard head.headers.contains(name: "upgrade") else {
            startForwarding(head, context: context)
            return
        }
        let headers = HTTPHeaderList(head.headers)
        guard WebSocketHandshake.isWebSocketUpgrade(headers) else {
            startForwarding(head, context: context)
            return
        }
        switch WebSocketHandshake.validateUpgrade(
            method: head.method.rawValue,
            versionMajor: head.version.major,
            versionMinor: head.version.minor,
            headers: headers
        ) {
        case .failure(let rejection):
            state = .done
            environment.logger.warning(
                "upgrade_rejected",
                metadata: [
                    "status": "\(rejection.status)", "reason": "\(rejection.reason)", "path": "\(head.uri)",
                    "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
                ]
            )
            var extra = HTTPHeaders()
            if rejection.versionHint { extra.add(name: "Sec-WebSocket-Version", value: "13") }
            respond(
                context: context,
                status: HTTPResponseStatus(statusCode: rejection.status),
                body: rejection.reason + "\n",
                keepAlive: false,
                extraHeaders: extra
            )
        case .success(let upgrade):
            state = .upgradeRequested(head, headers, upgrade)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionLeft()
        if case .upgrading(let session) = state { session.clientInactiveBeforeUpgrade() }
        forwarder?.clientGone()
        queued.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if case .forwarding(let requestEnded) = state {
            // A broken request body or one pipelined behind it, the client leaving mid-body (the
            // decoder's EOF error) or a socket error: the exchange cannot finish cleanly. The
            // forwarder logs the client's leaving; a parse error is logged here.
            if let parserError = error as? HTTPParserError, parserError != .invalidEOFState {
                if requestEnded {
                    // The request in flight is whole: the broken one is pipelined behind it, and
                    // waits for the answers to it and to the requests queued before it.
                    pipelinedError = parserError
                    return
                }
                requestBroken(parserError, context: context)
                return
            }
            state = .done
            forwarder?.clientGone()
            context.close(promise: nil)
            return
        }
        if case .upgrading(let session) = state {
            session.clientInactiveBeforeUpgrade()
            context.close(promise: nil)
            return
        }
        guard case .idle = state, let parserError = error as? HTTPParserError else {
            context.close(promise: nil)
            return
        }
        state = .done
        let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
        environment.logger.warning(
            "bad_request",
            metadata: [
                "status": "\(status.code)", "error": "\(parserError)",
                "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
            ]
        )
        respond(context: context, status: status, body: "malformed HTTP request: \(parserError)\n", keepAlive: false)
    }

    /// Writes a small complete response; closes the connection unless it is kept alive.
    private func respond(
        context: ChannelHandlerContext,
        status: HTTPResponseStatus,
        body: String,
        keepAlive: Bool,
        extraHeaders: HTTPHeaders = HTTPHeaders()
    ) {
        environment.metrics.httpResponse(status, fromBackend: false)
        let done = context.writeHTTPResponse(
            status: status,
            headers: extraHeaders,
            body: context.channel.allocator.buffer(string: body),
            contentType: plainTextContentType,
            keepAlive: keepAlive
        )
        if keepAlive {
            state = .idle
            headTimer.awaitHead(context: context, check: headCheck)
        } else {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

// MARK: Shutdown

extension HTTPEntryHandler: ShutdownParticipant {
    /// The proxy is shutting down: a connection waiting for a request is closed; one with a request
    /// in flight is closed after its response (requests pipelined behind it are not taken). An
    /// upgrade's session is in the session registry.
    func drain() {
        guard let context else { return }
        switch state {
        case .idle:
            state = .done
            context.close(promise: nil)
        case .forwarding:
            forwarder?.closeClientAfterResponse()
        case .upgradeRequested, .upgrading, .done:
            break
        }
    }

    /// The drain time is over: a response still in flight is cut off.
    func endNow() {
        guard let context else { return }
        switch state {
        case .idle, .forwarding:
            state = .done
            closeCutOffByShutdown(context: context, logger: environment.logger)
        case .upgradeRequested, .upgrading, .done:
            break
        }
    }
}

// MARK: Waiting for a request head

extension HTTPEntryHandler {
    /// What the head timer runs when it fires.
    private var headCheck: () -> Void { { [self] in headTimerFired() } }

    private func headTimerFired() {
        headTimer.fired()
        guard let context, case .idle = state,
            let expiry = headTimer.expiry(context: context, logger: environment.logger, check: headCheck)
        else { return }
        state = .done
        switch expiry {
        case .idle:
            context.close(promise: nil)
        case .headTooSlow:
            respond(context: context, status: .requestTimeout, body: headTimer.timeoutMessage, keepAlive: false)
        }
    }
}

@available(*, unavailable)
extension HTTPEntryHandler: Sendable {}
