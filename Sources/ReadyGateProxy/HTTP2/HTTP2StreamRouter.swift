import Logging
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import ReadyGateCore

/// The first handler of every HTTP/2 stream the client opens. It reads the request's HEADERS and
/// routes it:
/// - an extended CONNECT (RFC 8441, `:protocol`) is validated (``ExtendedConnect``) and becomes a
///   ``WebSocketSession`` whose client is this stream (``HTTP2ClientResponder``). The router stays,
///   as the adapter between DATA frames and the WebSocket bytes the relay handlers work on: DATA in
///   is bytes read, END_STREAM in is the client's half-close (`ChannelEvent.inputClosed`); bytes
///   written are DATA out, a close of the output is an empty DATA with END_STREAM.
/// - a plain request without a body that the fast path takes becomes an ``HTTP2FastExchange``: the
///   router stays, the stream's only handler, and hands the exchange the stream's events;
/// - any other request gets NIOHTTP2's HTTP/1 codec and an ``HTTPEntryHandler``, as a request on
///   an HTTP/1.1 connection would (one request per stream), and the router leaves.
///
/// Flow control: the stream's `read()` is what lets NIOHTTP2 open its window (WINDOW_UPDATE), so
/// a session that stops reading its client (until the backend answers, or while the hold is full)
/// stops the client's stream at its window; bytes written wait for the client's window, and the
/// stream's writability tells the relay's glue.
final class HTTP2StreamRouter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    private enum State {
        case awaitingHeaders
        /// A WebSocket session runs and the client has no answer yet: DATA read meanwhile (at most
        /// a window's worth) waits, in order, for the relay handlers.
        case sessionPending(WebSocketSession, early: [ByteBuffer], ended: Bool)
        /// The stream carries WebSocket bytes.
        case bytes
        /// A plain request on the fast path.
        case fast(HTTP2FastExchange)
        /// Answered with an HTTP error, or a plain request's handlers took over.
        case done
    }

    private let environment: ProxyEnvironment
    private var state = State.awaitingHeaders
    /// END_STREAM went out: nothing more may be written.
    private var outputClosed = false
    /// The proxy closes the stream: a reset that follows is its own, not the client's.
    private var closing = false

    init(environment: ProxyEnvironment) {
        self.environment = environment
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A session still waiting for its answer is let go of with the stream.
        if case .fast(let exchange) = state { exchange.clientGone() }
        state = .done
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .fast(let exchange) = state {
            state = .done
            exchange.clientGone()
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .fast(let exchange) = state { exchange.clientWritabilityChanged(context.channel.isWritable) }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        switch (state, payload) {
        case (.awaitingHeaders, .headers(let headers)):
            route(headers, context: context, data: data)
        case (.sessionPending(let session, var early, let ended), .data(let frame)) where !ended:
            if case .byteBuffer(let bytes) = frame.data, bytes.readableBytes > 0 { early.append(bytes) }
            state = .sessionPending(session, early: early, ended: frame.endStream)
        case (.bytes, .data(let frame)):
            if case .byteBuffer(let bytes) = frame.data, bytes.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(bytes))
            }
            if frame.endStream { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        case (.sessionPending, .headers), (.bytes, .headers):
            // Trailers on a WebSocket stream: RFC 8441 gives them no meaning.
            break
        default:
            break
        }
    }

    /// NIOHTTP2 reports a RST_STREAM as this error, before the stream channel goes inactive (the
    /// session then ends as on a client that left). A reset the proxy sent itself (`closing`: it
    /// closed the stream while open) is reported the same way and is not counted.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let closed = error as? NIOHTTP2Errors.StreamClosed, !closing {
            Self.noteClientReset(closed, during: phase, context: context, environment: environment)
        }
        if case .fast(let exchange) = state {
            // The exchange is abandoned; its backend connection closes.
            state = .done
            exchange.clientGone()
            if !(error is NIOHTTP2Errors.StreamClosed) { context.close(promise: nil) }
            return
        }
        context.fireErrorCaught(error)
    }

    /// Counts and logs a RST_STREAM from the client.
    static func noteClientReset(
        _ closed: NIOHTTP2Errors.StreamClosed,
        during phase: String,
        context: ChannelHandlerContext,
        environment: ProxyEnvironment
    ) {
        environment.metrics.http2StreamReset()
        environment.logger.info(
            "http2_stream_reset",
            metadata: [
                "stream": "\(closed.streamID)", "error_code": "\(closed.errorCode)", "during": "\(phase)",
                "client": "\(context.channel.parent?.remoteAddress?.ipAddress ?? "-")",
            ]
        )
    }

    private var phase: String {
        switch state {
        case .awaitingHeaders: return "request"
        case .sessionPending: return "handshake"
        case .bytes: return "websocket"
        case .done, .fast: return "response"
        }
    }

    private func route(_ headers: HTTP2Frame.FramePayload.Headers, context: ChannelHandlerContext, data: NIOAny) {
        guard headers.headers.contains(name: ":protocol") else {
            if let exchange = HTTP2FastExchange(
                headers: headers,
                router: self,
                context: context,
                environment: environment
            ) {
                state = .fast(exchange)
                exchange.start()
            } else {
                startPlainRequest(context: context, data: data)
            }
            return
        }
        let fields = headers.headers.map { (name: $0.name, value: $0.value) }
        switch ExtendedConnect.validate(fields, endStream: headers.endStream) {
        case .failure(let rejection):
            let path = fields.first { $0.name == ":path" }?.value ?? "-"
            environment.logger.warning(
                "upgrade_rejected",
                metadata: [
                    "status": "\(rejection.status)", "reason": "\(rejection.reason)", "path": "\(path)",
                    "transport": "h2", "client": "\(context.channel.parent?.remoteAddress?.ipAddress ?? "-")",
                ]
            )
            var extra = HTTPHeaders()
            if rejection.versionHint { extra.add(name: "sec-websocket-version", value: "13") }
            let status = HTTPResponseStatus(statusCode: rejection.status)
            environment.metrics.httpResponse(status, fromBackend: false)
            respond(
                context: context,
                status: status,
                headers: extra,
                body: context.channel.allocator.buffer(string: rejection.reason + "\n"),
                contentType: plainTextContentType
            )
        case .success(let request):
            startSession(request, context: context)
        }
    }

    private func startSession(_ request: ExtendedConnect.Request, context: ChannelHandlerContext) {
        // As on HTTP/1.1: an event loop that cannot make sockets (an `EmbeddedEventLoop`) gets 502.
        guard ClientBootstrap(validatingGroup: context.eventLoop) != nil else {
            environment.metrics.httpResponse(.badGateway, fromBackend: false)
            respond(
                context: context,
                status: .badGateway,
                headers: HTTPHeaders(),
                body: context.channel.allocator.buffer(string: "upstream unavailable\n"),
                contentType: plainTextContentType
            )
            return
        }
        let session = WebSocketSession(
            environment: environment,
            request: HTTPRequestHead(
                version: HTTPVersion(major: 2, minor: 0),
                method: .GET,
                uri: request.path,
                headers: HTTPHeaders(request.headers)
            ),
            headers: request.headers,
            upgrade: request.upgrade,
            responder: HTTP2ClientResponder(router: self, context: context)
        )
        state = .sessionPending(session, early: [], ended: false)
        session.start()
    }

    /// Not a WebSocket: NIOHTTP2's codec and the HTTP/1.1 entry handler take the stream.
    private func startPlainRequest(context: ChannelHandlerContext, data: NIOAny) {
        state = .done
        do {
            try context.pipeline.syncOperations.addHandlers(
                [
                    HTTP2ResetWatch(environment: environment), HTTP2FramePayloadToHTTP1ServerCodec(),
                    HTTPEntryHandler(environment: environment),
                ],
                position: .after(context.handler)
            )
        } catch {
            environment.logger.error("http2_stream_setup_failed", metadata: ["error": "\(error)"])
            closeStream(context: context)
            return
        }
        // The router leaves first, then the stream's first handler (the codec) gets the HEADERS: an
        // answer written at once (a failed connect on an `EmbeddedEventLoop`) does not pass the router.
        let pipeline = context.pipeline
        pipeline.syncOperations.removeHandler(context: context, promise: nil)
        pipeline.syncOperations.fireChannelRead(data)
    }

    // MARK: Answers (the responder's)

    /// The session accepted the client: the relay handlers go behind the router, which passes on
    /// the bytes that came meanwhile, and then the stream's bytes.
    func switchToBytes(context: ChannelHandlerContext, relay: [any ChannelHandler]) throws {
        guard case .sessionPending(_, let early, let ended) = state else { return }
        try context.pipeline.syncOperations.addHandlers(relay, position: .after(context.handler))
        state = .bytes
        for bytes in early { context.fireChannelRead(wrapInboundOut(bytes)) }
        if !early.isEmpty { context.fireChannelReadComplete() }
        if ended { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
    }

    /// A complete response of the proxy's own (or the backend's refusal, relayed), then the stream
    /// is closed; the client's frames are not read any more.
    func respond(
        context: ChannelHandlerContext,
        status: HTTPResponseStatus,
        headers: HTTPHeaders,
        body: ByteBuffer,
        contentType: String?
    ) {
        state = .done
        var headers = headers
        if let contentType { headers.replaceOrAdd(name: "content-type", value: contentType) }
        headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        let block = HTTP2ClientResponder.responseHeaders(status: status, headers: headers)
        outputClosed = true
        let done = context.eventLoop.makePromise(of: Void.self)
        if body.readableBytes == 0 {
            context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: block, endStream: true))), promise: done)
        } else {
            context.write(wrapOutboundOut(.headers(.init(headers: block))), promise: nil)
            let data = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(body), endStream: true))
            context.writeAndFlush(wrapOutboundOut(data), promise: done)
        }
        done.futureResult.assumeIsolated().whenComplete { [self] _ in closeStream(context: context) }
    }

    /// Closes (resets, while it is open) the stream: the router's own answers, and the fast
    /// exchange's reset when its response cannot be completed.
    func closeStream(context: ChannelHandlerContext) {
        closing = true
        context.close(promise: nil)
    }

    // MARK: Outbound (the relay's bytes)

    /// A stream channel with DATA waiting delivers it within `read()`, where a socket only asks the
    /// kernel. The relay handlers were written for sockets (the hold, releasing, reads on and then
    /// leaves the pipeline): on a WebSocket stream the read is passed on from the event loop, after
    /// the handler that asked has finished, as a socket's would be.
    func read(context: ChannelHandlerContext) {
        switch state {
        case .bytes, .sessionPending:
            context.eventLoop.assumeIsolated().execute { context.read() }
        case .awaitingHeaders, .done, .fast:
            context.read()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        guard !outputClosed else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        // The glue's empty write marks "after what was written before"; the stream keeps order.
        guard bytes.readableBytes > 0 else {
            promise?.succeed()
            return
        }
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes)))), promise: promise)
    }

    /// A half-close is END_STREAM (an empty DATA frame). A full close first ends the stream, so
    /// what was written before goes out (the session's close linger bounds the wait); a second one,
    /// or one before any answer, resets the stream.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch (mode, state) {
        case (.output, .bytes):
            endStream(context: context, promise: promise)
        case (.all, .bytes) where !outputClosed && !closing:
            closing = true
            let ended = context.eventLoop.makePromise(of: Void.self)
            endStream(context: context, promise: ended)
            ended.futureResult.assumeIsolated().whenComplete { _ in context.close(mode: .all, promise: promise) }
        case (.input, _):
            promise?.fail(ChannelError.operationUnsupported)
        default:
            closing = true
            context.close(mode: mode, promise: promise)
        }
    }

    private func endStream(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard !outputClosed else {
            promise?.succeed()
            return
        }
        outputClosed = true
        let end = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))
        context.writeAndFlush(wrapOutboundOut(end), promise: promise)
    }
}

@available(*, unavailable)
extension HTTP2StreamRouter: Sendable {}

/// The first handler of a plain request's stream on the NIO-codec path (the router has left):
/// counts and logs the client's RST_STREAM as the router does, but not the reset NIOHTTP2 sends
/// when the proxy closes the stream while it is open (every close passes this handler, the one
/// nearest the stream's head).
final class HTTP2ResetWatch: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let environment: ProxyEnvironment
    private var closing = false
    private var responseStarted = false

    init(environment: ProxyEnvironment) {
        self.environment = environment
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let closed = error as? NIOHTTP2Errors.StreamClosed, !closing {
            let phase = responseStarted ? "response" : "request"
            HTTP2StreamRouter.noteClientReset(closed, during: phase, context: context, environment: environment)
        }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .headers = unwrapOutboundIn(data) { responseStarted = true }
        context.write(data, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        closing = true
        context.close(mode: mode, promise: promise)
    }
}

@available(*, unavailable)
extension HTTP2ResetWatch: Sendable {}
