import Logging
import NIOCore
import NIOHTTP1
import ReadyGateCore

/// The plain-HTTP fast path: the only handler of an HTTP/1.1 client connection while it carries
/// ordinary requests. It parses each request head once (``HTTP1HeadParser``), writes the backend's
/// head (``HTTP1HeadRewriter``) and passes the body bytes through as they came, delimited by a
/// ``HTTP1BodyFramer``; the backend's response comes back the same way over a codec-free pooled
/// connection (``RawUpstreamHandler``). The decisions (retry, pooling, keep-alive, 502/504/408)
/// are ``HTTPExchangeStateMachine``'s, as on the NIO path.
///
/// Fallback: a head it does not take (an upgrade, `Expect`, `CONNECT`, HTTP/1.0, any head its
/// strict parser refuses or that is too large) is handed, at that request boundary, to NIO's
/// codecs and an ``HTTPEntryHandler`` installed behind it, with every byte read since; it then
/// leaves the pipeline. Errors, upgrades and sessions therefore behave exactly as on that path.
final class FastHTTP1Handler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        /// Waiting for (the rest of) a request head.
        case awaitingHead
        /// A request's body is being read.
        case request
        /// The request is read; its response is awaited or streams.
        case awaitingResponse
        /// Closing, or handed to the NIO path.
        case done
    }

    /// The most head bytes the fast path parses; a longer head goes to the NIO path (its limit).
    static let headLimit = 16 * 1024
    static let responseHeadLimit = 64 * 1024
    /// A response body this small that came with its head is copied behind the head: one buffer.
    static let coalescedBodyLimit = 4096

    private let environment: ProxyEnvironment
    private var context: ChannelHandlerContext?
    private var phase = Phase.awaitingHead
    /// Bytes read and not yet used: a head in progress, or requests pipelined behind the one in flight.
    private var inbound: ByteBuffer?
    private var pendingRead = false
    private var inputClosed = false
    private var registered = false
    private var headTimer: RequestHeadTimer

    // The exchange.
    var machine = HTTPExchangeStateMachine()
    private var pool: RawUpstreamPool?
    private(set) var upstream: RawUpstreamHandler?
    private var forwardedIdentity: (forwardedFor: String, forwardedElement: String)?
    /// The backend's head of the request in flight (kept for a retry and for log lines).
    private var upstreamHead: ByteBuffer?
    private var requestFramer = HTTP1BodyFramer(.none)
    private var requestIsHEAD = false
    private var clientKeepAlive = false
    /// Body bytes read while the backend connection was not there yet.
    private var buffered: [ByteBuffer] = []
    private var bufferedBodyBytes = 0
    /// The response head read so far.
    private var responseInbound: ByteBuffer?
    private var responseHeadDone = false
    private var responseFramer = HTTP1BodyFramer(.none)
    private var chunkEncode = false
    private var clientNeedsFlush = false
    var exchangeTimer: ExchangeTimer
    private var lastUpstreamError: (any Error)?

    init(environment: ProxyEnvironment) {
        self.environment = environment
        let settings = environment.settings
        exchangeTimer = ExchangeTimer(limit: .milliseconds(Int64(settings.httpResponseTimeoutMs)))
        headTimer = RequestHeadTimer(settings: settings)
    }

    var clientIsWritable: Bool { context?.channel.isWritable ?? false }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { connectionOpened(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectionLeft()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        connectionOpened(context: context)
        context.fireChannelActive()
    }

    private func connectionOpened(context: ChannelHandlerContext) {
        guard !registered else { return }
        registered = true
        environment.httpConnections.add(self, on: context.eventLoop)
        headTimer.awaitHead(context: context, check: headCheck)
    }

    private func connectionLeft() {
        headTimer.cancel()
        // The exchange timer outlives exchanges (it is re-armed lazily): it must not keep a closed
        // connection's handler alive until it fires.
        cancelExchangeTimer()
        if registered {
            registered = false
            environment.httpConnections.remove(self)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionLeft()
        clientGone()
        phase = .done
        inbound = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        phase = .done
        clientGone()
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            switch phase {
            case .awaitingHead:
                phase = .done
                context.close(promise: nil)
            case .request:
                phase = .done
                clientGone()
                context.close(promise: nil)
            case .awaitingResponse:
                inputClosed = true
            case .done:
                break
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Client reads

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        switch phase {
        case .done:
            return
        case .awaitingHead, .awaitingResponse, .request:
            if inbound == nil || inbound!.readableBytes == 0 {
                inbound = bytes
            } else {
                var bytes = bytes
                inbound!.writeBuffer(&bytes)
            }
        }
        switch phase {
        case .awaitingHead: takeRequests(context: context)
        case .request: feedRequestBody()
        case .awaitingResponse, .done: break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        switch phase {
        case .awaitingHead:
            // Bytes were read and no head came of them: a head has begun. (Also when this handler
            // saw none of them: the HTTP/2 preface sniffer in front holds a partial preface.)
            headTimer.bytesArrived(context: context, check: headCheck)
        case .request, .awaitingResponse:
            upstream?.flush()
        case .done:
            break
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            exchangeTimer.lastProgress = context.eventLoop.now
            upstream?.resumeRead()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        guard mayRead else {
            pendingRead = true
            return
        }
        context.read()
    }

    private var mayRead: Bool {
        switch phase {
        case .awaitingHead, .done: return true
        case .request: return machine.canTakeBody(upstreamWritable: upstream?.isWritable ?? false)
        case .awaitingResponse: return (inbound?.readableBytes ?? 0) == 0
        }
    }

    private func resumeReadIfAllowed() {
        guard pendingRead, mayRead, let context else { return }
        pendingRead = false
        context.read()
    }

    /// Parses heads from `inbound` while no exchange is in flight.
    private func takeRequests(context: ChannelHandlerContext) {
        guard phase == .awaitingHead, let bytes = inbound, bytes.readableBytes > 0 else { return }
        let result = bytes.withUnsafeReadableBytes { HTTP1HeadParser.parseRequest($0, limit: Self.headLimit) }
        switch result {
        case .incomplete:
            return
        case .invalid:
            fallBack(context: context)
        case .complete(let head):
            guard head.isOrdinaryRequest else {
                fallBack(context: context)
                return
            }
            startExchange(head, context: context)
        }
    }

    /// Hands the connection to NIO's codecs and ``HTTPEntryHandler`` at a request boundary, with the
    /// bytes read since, and leaves the pipeline.
    private func fallBack(context: ChannelHandlerContext) {
        phase = .done
        connectionLeft()
        let bytes = inbound
        inbound = nil
        do {
            try ReadyGateServer.configureHTTP1Codec(channel: context.channel, environment: environment)
        } catch {
            context.close(promise: nil)
            return
        }
        if let bytes { context.fireChannelRead(wrapInboundOut(bytes)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }

    // MARK: The exchange

    private func startExchange(_ head: HTTP1Head, context: ChannelHandlerContext) {
        guard var bytes = inbound else { return }
        headTimer.headReceived()
        let identity =
            forwardedIdentity
            ?? ForwardedMessage.forwardedIdentity(
                clientAddress: context.channel.remoteAddress?.ipAddress,
                proto: environment.forwardedProto
            )
        forwardedIdentity = identity
        var out = context.channel.allocator.buffer(capacity: head.length + 256)
        bytes.withUnsafeReadableBytes { p in
            HTTP1HeadRewriter.writeUpstreamRequest(
                head,
                from: p,
                forwardedFor: identity.forwardedFor,
                forwardedElement: identity.forwardedElement,
                proto: environment.forwardedProto,
                into: &out
            )
        }
        bytes.moveReaderIndex(forwardBy: head.length)
        inbound = bytes.readableBytes > 0 ? bytes : nil
        upstreamHead = out
        requestIsHEAD = head.method == .head
        requestFramer = HTTP1BodyFramer(head.framing)
        clientKeepAlive = head.keepAlive
        lastUpstreamError = nil
        responseInbound = nil
        responseHeadDone = false
        chunkEncode = false
        phase = .request
        machine.requestStarted(clientKeepAlive: head.keepAlive)
        let pool = self.pool ?? environment.httpPools.rawPool(for: context.eventLoop, settings: environment.settings)
        self.pool = pool
        if let connection = pool.takeIdle() {
            connected(connection, attempt: nil, reused: true)
        } else {
            connectFresh(attempt: machine.connectStarted())
        }
        feedRequestBody()
    }

    /// Passes the body bytes in `inbound` on, up to the request's end.
    private func feedRequestBody() {
        guard phase == .request else { return }
        if !requestFramer.isComplete, var bytes = inbound, bytes.readableBytes > 0 {
            let taken: Int
            do {
                taken = try bytes.withUnsafeReadableBytes { try requestFramer.consume($0) }
            } catch {
                requestBroken(error)
                return
            }
            let body = bytes.readSlice(length: taken)!
            inbound = bytes.readableBytes > 0 ? bytes : nil
            if taken > 0 { sendBody(body) }
        }
        if requestFramer.isComplete { requestDone() }
    }

    private func sendBody(_ body: ByteBuffer) {
        guard let context else { return }
        exchangeTimer.lastProgress = context.eventLoop.now
        switch machine.requestBody(byteCount: body.readableBytes) {
        case .write: upstream?.write(body)
        case .buffer:
            bufferedBodyBytes += body.readableBytes
            buffered.append(body)
        case .drop: break
        }
    }

    private func requestDone() {
        guard let context else { return }
        phase = .awaitingResponse
        exchangeTimer.lastProgress = context.eventLoop.now
        if case .write = machine.requestEnd() { upstream?.flush() }
    }

    func connected(_ connection: RawUpstreamHandler, attempt: Int?, reused: Bool) {
        let action = machine.connected(attempt: attempt, reused: reused, bufferedBodyBytes: bufferedBodyBytes)
        guard case .sendRequest = action, let upstreamHead, let context else {
            connection.close()
            return
        }
        bufferedBodyBytes = 0
        upstream = connection
        connection.attach(self)
        connection.write(upstreamHead)
        for part in buffered { connection.write(part) }
        buffered.removeAll(keepingCapacity: true)
        if !reused || machine.requestEnded { connection.flush() }
        exchangeTimer.lastProgress = context.eventLoop.now
        armExchangeTimer()
        if !machine.requestEnded { resumeReadIfAllowed() }
    }

    /// The request's body did not frame (a bad chunk): `400` unless the response began, then close.
    private func requestBroken(_ error: any Error) {
        guard let context else { return }
        let responseStarted = machine.responseStarted
        if machine.clientGone() { abandonUpstream() }
        phase = .done
        inbound = nil
        environment.logger.warning(
            "bad_request",
            metadata: [
                "status": "\(responseStarted ? "-" : "400")", "error": "\(error)", "during": "forwarding",
                "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
            ]
        )
        if responseStarted {
            context.close(promise: nil)
        } else {
            respond(status: .badRequest, body: "malformed HTTP request: \(error)\n")
        }
    }

    // MARK: Backend side

    func upstreamRead(_ data: ByteBuffer, from connection: RawUpstreamHandler) {
        guard connection === upstream, machine.state == .exchanging, let context else { return }
        var bytes = data
        // The response head, written with the first body bytes when they are few (one write, not two).
        var headOut: ByteBuffer?
        if !responseHeadDone {
            if var partial = responseInbound {
                partial.writeBuffer(&bytes)
                bytes = partial
            }
            while !responseHeadDone {
                let result = bytes.withUnsafeReadableBytes {
                    HTTP1HeadParser.parseResponse($0, limit: Self.responseHeadLimit)
                }
                switch result {
                case .incomplete:
                    responseInbound = bytes
                    return
                case .invalid(let error):
                    responseInbound = nil
                    lastUpstreamError = error
                    connection.close()
                    return
                case .complete(let head):
                    if head.status == 101 {
                        if case .fail(let failure) = machine.responseHead(
                            upstreamKeepAlive: false,
                            isSwitchingProtocols: true,
                            closeDelimited: false
                        ) {
                            fail(failure, reason: "101 to a request without Upgrade")
                        }
                        return
                    }
                    var out = context.channel.allocator.buffer(capacity: head.length + 64)
                    let interim = head.status < 200
                    let plan = bytes.withUnsafeReadableBytes { p in
                        HTTP1HeadRewriter.writeClientResponse(
                            head,
                            from: p,
                            requestIsHEAD: requestIsHEAD,
                            keepAlive: interim || clientKeepAlive,
                            into: &out
                        )
                    }
                    bytes.moveReaderIndex(forwardBy: head.length)
                    if interim {
                        if takeInterimAnswer() {
                            context.write(wrapOutboundOut(out), promise: nil)
                            clientNeedsFlush = true
                        }
                        if bytes.readableBytes == 0 {
                            responseInbound = nil
                            return
                        }
                        continue
                    }
                    responseInbound = nil
                    guard
                        case .relay = machine.responseHead(
                            upstreamKeepAlive: head.keepAlive && plan.upstreamFraming != .untilClose,
                            isSwitchingProtocols: false,
                            closeDelimited: false
                        )
                    else { return }
                    environment.metrics.httpResponse(HTTPResponseStatus(statusCode: head.status), fromBackend: true)
                    exchangeTimer.lastProgress = context.eventLoop.now
                    responseHeadDone = true
                    responseFramer = HTTP1BodyFramer(plan.upstreamFraming)
                    chunkEncode = plan.chunkEncode
                    headOut = out
                    clientNeedsFlush = true
                }
            }
        }
        guard bytes.readableBytes > 0 || responseFramer.isComplete else {
            if let headOut { context.write(wrapOutboundOut(headOut), promise: nil) }
            return
        }
        let taken: Int
        do {
            taken = try bytes.withUnsafeReadableBytes { try responseFramer.consume($0) }
        } catch {
            lastUpstreamError = error
            connection.close()
            return
        }
        if var head = headOut {
            if taken > 0, taken <= Self.coalescedBodyLimit, !chunkEncode {
                var body = bytes.readSlice(length: taken)!
                head.writeBuffer(&body)
                context.write(wrapOutboundOut(head), promise: nil)
                if responseFramer.isComplete { responseEnded(extraBytes: bytes.readableBytes > 0) }
                return
            }
            context.write(wrapOutboundOut(head), promise: nil)
        }
        if taken > 0 {
            exchangeTimer.lastProgress = context.eventLoop.now
            let body = bytes.readSlice(length: taken)!
            if chunkEncode {
                var size = context.channel.allocator.buffer(capacity: 20)
                size.writeString(String(taken, radix: 16))
                size.writeStaticString("\r\n")
                context.write(wrapOutboundOut(size), promise: nil)
                context.write(wrapOutboundOut(body), promise: nil)
                context.write(wrapOutboundOut(context.channel.allocator.buffer(staticString: "\r\n")), promise: nil)
            } else {
                context.write(wrapOutboundOut(body), promise: nil)
            }
            clientNeedsFlush = true
        }
        if responseFramer.isComplete {
            // Bytes after the response: the backend talks out of turn; it is not reused.
            responseEnded(extraBytes: bytes.readableBytes > 0)
        }
    }

    func upstreamReadComplete() {
        guard clientNeedsFlush, let context else { return }
        clientNeedsFlush = false
        context.flush()
    }

    func upstreamWritabilityChanged(_ isWritable: Bool) {
        guard isWritable, let context else { return }
        exchangeTimer.lastProgress = context.eventLoop.now
        resumeReadIfAllowed()
    }

    func upstreamError(_ error: any Error) {
        lastUpstreamError = error
    }

    func upstreamInactive(_ connection: RawUpstreamHandler) {
        guard connection === upstream, context != nil else { return }
        if responseHeadDone, responseFramer.isUntilClose, machine.state == .exchanging {
            // A body delimited by the close: it is complete.
            upstream = nil
            responseEnded(extraBytes: true)
            return
        }
        upstream = nil
        let error = lastUpstreamError.map { "\($0)" }
        backendClosed(error: error)
    }

    func prepareRetry(resendEnd: Bool) {
        responseInbound = nil
    }

    private func responseEnded(extraBytes: Bool) {
        guard let context, case .finish(let poolConnection, let keepClient) = machine.responseEnd() else { return }
        if let connection = upstream {
            upstream = nil
            connection.detach()
            if poolConnection && !extraBytes {
                pool?.release(connection)
            } else {
                connection.close()
            }
        }
        if chunkEncode {
            context.write(wrapOutboundOut(context.channel.allocator.buffer(staticString: "0\r\n\r\n")), promise: nil)
        }
        clientNeedsFlush = false
        buffered.removeAll(keepingCapacity: true)
        bufferedBodyBytes = 0
        guard keepClient else {
            phase = .done
            inbound = nil
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)))
                .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.flush()
        phase = .awaitingHead
        headTimer.awaitHead(context: context, check: headCheck)
        takeRequests(context: context)
        if phase == .awaitingHead, let inbound, inbound.readableBytes > 0 {
            // The start of a pipelined head was read with the last request: the header timeout runs
            // for it (the NIO path can only give it the idle timeout, docs/fuzzing.md "Open").
            headTimer.bytesArrived(context: context, check: headCheck)
        }
        if phase == .awaitingHead, inputClosed, (inbound?.readableBytes ?? 0) == 0 {
            phase = .done
            context.close(promise: nil)
            return
        }
        if phase == .request || phase == .awaitingResponse { upstream?.flush() }
        resumeReadIfAllowed()
    }

    // MARK: Answers of the proxy's own

    func fail(_ failure: HTTPExchangeStateMachine.Failure, reason: String) {
        let status = logFailureAndAbandon(failure, reason: reason)
        phase = .done
        inbound = nil
        respond(status: status, body: "\(status.code) \(status.reasonPhrase): \(reason)\n")
    }

    /// Writes a complete `text/plain` response with `Connection: close`, then closes (the fields
    /// `writeHTTPResponse` writes on the NIO path).
    private func respond(status: HTTPResponseStatus, body: String) {
        guard let context else { return }
        environment.metrics.httpResponse(status, fromBackend: false)
        var out = context.channel.allocator.buffer(capacity: 160 + body.utf8.count)
        out.writeString("HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n")
        out.writeString("Content-Type: \(plainTextContentType)\r\n")
        out.writeString("Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n")
        out.writeString(body)
        context.writeAndFlush(wrapOutboundOut(out)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func abandonUpstream() {
        cancelExchangeTimer()
        buffered.removeAll()
        bufferedBodyBytes = 0
        responseInbound = nil
        if let connection = upstream {
            upstream = nil
            connection.close()
        }
    }

    func exchangeMetadata(_ extra: Logger.Metadata) -> Logger.Metadata {
        // The method and target of the request in flight.
        let line = upstreamHead?.requestLineForLogs() ?? (method: "-", path: "-")
        var metadata: Logger.Metadata = [
            "method": "\(line.method)", "path": "\(line.path)",
            "client": "\(context?.channel.remoteAddress?.ipAddress ?? "-")",
        ]
        metadata.merge(extra) { _, new in new }
        return metadata
    }
}

// MARK: Shutdown

extension FastHTTP1Handler: ShutdownParticipant {
    func drain() {
        guard let context else { return }
        switch phase {
        case .awaitingHead:
            phase = .done
            context.close(promise: nil)
        case .request, .awaitingResponse:
            clientKeepAlive = false
            machine.clientMustClose()
        case .done:
            break
        }
    }

    func endNow() {
        guard let context else { return }
        switch phase {
        case .awaitingHead, .request, .awaitingResponse:
            phase = .done
            closeCutOffByShutdown(context: context, logger: environment.logger)
        case .done:
            break
        }
    }
}

// MARK: Waiting for a request head

extension FastHTTP1Handler {
    /// What the head timer runs when it fires.
    private var headCheck: () -> Void { { [self] in headTimerFired() } }

    private func headTimerFired() {
        headTimer.fired()
        guard let context, phase == .awaitingHead,
            let expiry = headTimer.expiry(context: context, logger: environment.logger, check: headCheck)
        else { return }
        phase = .done
        switch expiry {
        case .idle: context.close(promise: nil)
        case .headTooSlow: respond(status: .requestTimeout, body: headTimer.timeoutMessage)
        }
    }
}

@available(*, unavailable)
extension FastHTTP1Handler: Sendable {}

extension FastHTTP1Handler: ExchangeDriver {
    typealias Exchange = RawUpstreamExchange

    var exchangeEventLoop: (any EventLoop)? { context?.eventLoop }
    var exchangePool: RawUpstreamPool? { pool }
    var exchangeLogger: Logger { environment.logger }

    func closeStalledExchange() {
        abandonUpstream()
        phase = .done
        context?.close(promise: nil)
    }
}
