import Logging
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import ReadyGateCore

/// The HTTP/2 fast path: one plain request on one stream, forwarded over a codec-free pooled
/// backend connection (``RawUpstreamHandler``), with no handler of its own in the stream's
/// pipeline — the ``HTTP2StreamRouter`` that read the HEADERS stays and hands it the stream's events.
///
/// It takes a request whose HEADERS end the stream (no body) and that, written as an HTTP/1.1 head
/// (``requestHead(_:allocator:)``), is an ordinary request for Core's ``HTTP1HeadParser``; the
/// backend's head is then written by ``HTTP1HeadRewriter``, so `X-Forwarded-*`, `Forwarded` and the
/// removal of hop-by-hop fields are exactly the HTTP/1.1 fast path's. The response head is parsed by
/// ``HTTP1HeadParser`` and becomes the HEADERS (`:status`, the fields that cross a proxy, names in
/// lower case); the body goes out as DATA, decoded from chunked coding where the backend used it
/// (``HTTP1BodyFramer/consumeDecoding(_:payload:)``), END_STREAM on its last frame. The stream's
/// writability (the client's flow-control window) stops reading the backend. The decisions (a
/// retry on a stale pooled connection, `502`, `504`, pooling) are ``HTTPExchangeStateMachine``'s.
///
/// Anything else (a body, `CONNECT`, `Expect`, a `host` field beside `:authority`, a head the parser
/// refuses or that is too large) takes the NIO path as before.
final class HTTP2FastExchange: RawUpstreamOwner {
    private let environment: ProxyEnvironment
    private let context: ChannelHandlerContext
    private weak var router: HTTP2StreamRouter?
    private let pool: RawUpstreamPool
    /// The backend's head of the request (kept for a retry and for log lines).
    private let upstreamHead: ByteBuffer
    private let requestIsHEAD: Bool

    var machine = HTTPExchangeStateMachine()
    private(set) var upstream: RawUpstreamHandler?
    /// The response head read so far.
    private var responseInbound: ByteBuffer?
    private var responseHeadDone = false
    private var responseFramer = HTTP1BodyFramer(.none)
    private var clientNeedsFlush = false
    var exchangeTimer: ExchangeTimer
    private var lastUpstreamError: (any Error)?

    /// The exchange for a request's HEADERS, or nil when the request takes the NIO path.
    init?(
        headers: HTTP2Frame.FramePayload.Headers,
        router: HTTP2StreamRouter,
        context: ChannelHandlerContext,
        environment: ProxyEnvironment
    ) {
        guard headers.endStream, environment.httpPools.supportsRawForwarding,
            let raw = Self.requestHead(headers.headers, allocator: context.channel.allocator)
        else { return nil }
        let identity = ForwardedMessage.forwardedIdentity(
            clientAddress: context.channel.remoteAddress?.ipAddress,
            proto: environment.forwardedProto
        )
        guard
            let (out, isHEAD) = Self.upstreamRequest(
                raw,
                forwardedFor: identity.forwardedFor,
                forwardedElement: identity.forwardedElement,
                proto: environment.forwardedProto,
                allocator: context.channel.allocator
            )
        else { return nil }
        self.environment = environment
        self.context = context
        self.router = router
        self.upstreamHead = out
        self.requestIsHEAD = isHEAD
        self.exchangeTimer = ExchangeTimer(
            limit: .milliseconds(Int64(environment.settings.httpResponseTimeoutMs)),
            lastProgress: context.eventLoop.now
        )
        self.pool = environment.httpPools.rawPool(for: context.eventLoop, settings: environment.settings)
    }

    // MARK: The request

    /// The request as an HTTP/1.1 client would have sent it: `:method :path HTTP/1.1`, `host` from
    /// `:authority`, then the header fields in order. Nil for what the fast path leaves to the NIO
    /// path: a missing `:method`, `:path` or `:authority`, `CONNECT`, an unknown pseudo-header, a
    /// `host` field.
    static func requestHead(_ headers: HPACKHeaders, allocator: ByteBufferAllocator) -> ByteBuffer? {
        var method: String?
        var path: String?
        var authority: String?
        var regular = 0
        for (name, value, _) in headers {
            guard name.utf8.first == UInt8(ascii: ":") else {
                if name == "host" { return nil }
                regular += name.utf8.count + value.utf8.count + 4
                continue
            }
            switch name {
            case ":method": method = value
            case ":path": path = value
            case ":authority": authority = value
            case ":scheme": break
            default: return nil
            }
        }
        guard let method, let path, let authority, !authority.isEmpty, method != "CONNECT" else { return nil }
        var out = allocator.buffer(capacity: method.utf8.count + path.utf8.count + authority.utf8.count + regular + 32)
        out.writeString(method)
        out.writeInteger(HTTP1HeadParser.sp)
        out.writeString(path)
        out.writeStaticString(" HTTP/1.1\r\nhost: ")
        out.writeString(authority)
        out.writeStaticString("\r\n")
        for (name, value, _) in headers where name.utf8.first != UInt8(ascii: ":") {
            out.writeString(name)
            out.writeStaticString(": ")
            out.writeString(value)
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("\r\n")
        return out
    }

    /// The backend's head for `raw` (``requestHead(_:allocator:)``), by the HTTP/1.1 fast path's
    /// rules, and whether it is a `HEAD`; nil unless the parser takes it as an ordinary request
    /// without a body, within the fast path's head limit.
    static func upstreamRequest(
        _ raw: ByteBuffer,
        forwardedFor: String,
        forwardedElement: String,
        proto: String,
        allocator: ByteBufferAllocator
    ) -> (ByteBuffer, isHEAD: Bool)? {
        raw.withUnsafeReadableBytes { p -> (ByteBuffer, isHEAD: Bool)? in
            guard case .complete(let head) = HTTP1HeadParser.parseRequest(p, limit: FastHTTP1Handler.headLimit),
                head.length == p.count, head.isOrdinaryRequest
            else { return nil }
            switch head.framing {
            case .none, .length(0): break
            default: return nil
            }
            var out = allocator.buffer(capacity: head.length + 256)
            HTTP1HeadRewriter.writeUpstreamRequest(
                head,
                from: p,
                forwardedFor: forwardedFor,
                forwardedElement: forwardedElement,
                proto: proto,
                into: &out
            )
            return (out, head.method == .head)
        }
    }

    func start() {
        machine.requestStarted(clientKeepAlive: true)
        if let connection = pool.takeIdle() {
            connected(connection, attempt: nil, reused: true)
        } else {
            connectFresh(attempt: machine.connectStarted())
        }
        if case .write = machine.requestEnd() { upstream?.flush() }
    }

    func connected(_ connection: RawUpstreamHandler, attempt: Int?, reused: Bool) {
        guard case .sendRequest = machine.connected(attempt: attempt, reused: reused, bufferedBodyBytes: 0) else {
            connection.close()
            return
        }
        upstream = connection
        connection.attach(self)
        connection.write(upstreamHead)
        if !reused || machine.requestEnded { connection.flush() }
        exchangeTimer.lastProgress = context.eventLoop.now
        armExchangeTimer()
    }

    // MARK: The stream (from the router)

    var clientIsWritable: Bool { context.channel.isWritable }

    func clientWritabilityChanged(_ isWritable: Bool) {
        guard isWritable else { return }
        exchangeTimer.lastProgress = context.eventLoop.now
        upstream?.resumeRead()
    }

    // MARK: Backend side

    func upstreamRead(_ data: ByteBuffer, from connection: RawUpstreamHandler) {
        guard connection === upstream, machine.state == .exchanging else { return }
        var bytes = data
        if !responseHeadDone {
            if var partial = responseInbound {
                partial.writeBuffer(&bytes)
                bytes = partial
            }
            guard readResponseHead(&bytes, connection: connection) else { return }
        }
        var last: ByteBuffer?
        let taken: Int
        do {
            taken = try bytes.withUnsafeReadableBytes { p in
                try responseFramer.consumeDecoding(p) { range in
                    if let previous = last { writeData(previous, endStream: false) }
                    last = bytes.getSlice(at: bytes.readerIndex + range.lowerBound, length: range.count)
                }
            }
        } catch {
            lastUpstreamError = error
            connection.close()
            return
        }
        if responseFramer.isComplete {
            writeData(last ?? ByteBuffer(), endStream: true)
            responseEnded(extraBytes: bytes.readableBytes > taken)
        } else if let last {
            exchangeTimer.lastProgress = context.eventLoop.now
            writeData(last, endStream: false)
        }
    }

    /// Parses the response head from `bytes` (interim `1xx` heads are written as HEADERS of their own
    /// first) and writes the HEADERS; false when the head is not complete yet, or the exchange ended
    /// with it.
    private func readResponseHead(_ bytes: inout ByteBuffer, connection: RawUpstreamHandler) -> Bool {
        while true {
            let result = bytes.withUnsafeReadableBytes {
                HTTP1HeadParser.parseResponse($0, limit: FastHTTP1Handler.responseHeadLimit)
            }
            switch result {
            case .incomplete:
                responseInbound = bytes
                return false
            case .invalid(let error):
                responseInbound = nil
                lastUpstreamError = error
                connection.close()
                return false
            case .complete(let head):
                if head.status == 101 {
                    responseInbound = nil
                    if case .fail(let failure) = machine.responseHead(
                        upstreamKeepAlive: false,
                        isSwitchingProtocols: true,
                        closeDelimited: false
                    ) {
                        fail(failure, reason: "101 to a request without Upgrade")
                    }
                    return false
                }
                if head.status < 200 {
                    // An interim answer (`103 Early Hints`, say) goes on as a HEADERS frame of its own
                    // without END_STREAM (RFC 9113 §8.1, RFC 9110 §15.2: a proxy forwards 1xx).
                    if takeInterimAnswer() {
                        let block = bytes.withUnsafeReadableBytes { Self.responseHeaders(head, from: $0) }
                        context.write(NIOAny(HTTP2Frame.FramePayload.headers(.init(headers: block))), promise: nil)
                        clientNeedsFlush = true
                    }
                    bytes.moveReaderIndex(forwardBy: head.length)
                    if bytes.readableBytes == 0 {
                        responseInbound = nil
                        return false
                    }
                    continue
                }
                let framing = HTTP1HeadParser.responseFraming(head, requestIsHEAD: requestIsHEAD)
                let block = bytes.withUnsafeReadableBytes { Self.responseHeaders(head, from: $0) }
                bytes.moveReaderIndex(forwardBy: head.length)
                responseInbound = nil
                guard
                    case .relay = machine.responseHead(
                        upstreamKeepAlive: head.keepAlive && framing != .untilClose,
                        isSwitchingProtocols: false,
                        closeDelimited: false
                    )
                else { return false }
                environment.metrics.httpResponse(HTTPResponseStatus(statusCode: head.status), fromBackend: true)
                exchangeTimer.lastProgress = context.eventLoop.now
                responseHeadDone = true
                responseFramer = HTTP1BodyFramer(framing)
                clientNeedsFlush = true
                if responseFramer.isComplete {
                    context.write(
                        NIOAny(HTTP2Frame.FramePayload.headers(.init(headers: block, endStream: true))),
                        promise: nil
                    )
                    responseEnded(extraBytes: bytes.readableBytes > 0)
                    return false
                }
                context.write(NIOAny(HTTP2Frame.FramePayload.headers(.init(headers: block))), promise: nil)
                return true
            }
        }
    }

    /// The HEADERS for a backend's response head parsed from `p`: `:status`, then the fields that
    /// cross a proxy (``HTTP1HeadRewriter/isRemoved(_:in:_:)``), names in lower case.
    static func responseHeaders(_ head: HTTP1Head, from p: UnsafeRawBufferPointer) -> HPACKHeaders {
        var block = HPACKHeaders()
        block.reserveCapacity(head.fields.count + 1)
        block.add(
            name: ":status",
            value: String(decoding: UnsafeRawBufferPointer(rebasing: p[head.first]), as: UTF8.self)
        )
        for field in head.fields where !HTTP1HeadRewriter.isRemoved(field, in: head, p) {
            let nameBytes = UnsafeRawBufferPointer(rebasing: p[field.name])
            let name: String
            if nameBytes.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
                name = String(decoding: nameBytes.lazy.map { $0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0 }, as: UTF8.self)
            } else {
                name = String(decoding: nameBytes, as: UTF8.self)
            }
            block.add(
                name: name,
                value: String(decoding: UnsafeRawBufferPointer(rebasing: p[field.value]), as: UTF8.self)
            )
        }
        return block
    }

    private func writeData(_ bytes: ByteBuffer, endStream: Bool) {
        let frame = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(bytes), endStream: endStream))
        context.write(NIOAny(frame), promise: nil)
        clientNeedsFlush = true
    }

    func upstreamReadComplete() {
        guard clientNeedsFlush else { return }
        clientNeedsFlush = false
        context.flush()
    }

    func upstreamWritabilityChanged(_ isWritable: Bool) {}

    func upstreamError(_ error: any Error) {
        lastUpstreamError = error
    }

    func upstreamInactive(_ connection: RawUpstreamHandler) {
        guard connection === upstream else { return }
        upstream = nil
        if responseHeadDone, responseFramer.isUntilClose, machine.state == .exchanging {
            // A body delimited by the close: it is complete.
            writeData(ByteBuffer(), endStream: true)
            responseEnded(extraBytes: true)
            return
        }
        let error = lastUpstreamError.map { "\($0)" }
        backendClosed(error: error)
    }

    func prepareRetry(resendEnd: Bool) {
        responseInbound = nil
    }

    private func responseEnded(extraBytes: Bool) {
        guard case .finish(let poolConnection, _) = machine.responseEnd() else { return }
        cancelExchangeTimer()
        if let connection = upstream {
            upstream = nil
            connection.detach()
            if poolConnection && !extraBytes {
                pool.release(connection)
            } else {
                connection.close()
            }
        }
        clientNeedsFlush = false
        context.flush()
    }

    // MARK: Ends

    /// A `502`/`504` of the proxy's own on this stream, as the NIO path writes it.
    func fail(_ failure: HTTPExchangeStateMachine.Failure, reason: String) {
        let status = logFailureAndAbandon(failure, reason: reason)
        environment.metrics.httpResponse(status, fromBackend: false)
        guard let router else { return }
        router.respond(
            context: context,
            status: status,
            headers: HTTPHeaders(),
            body: context.channel.allocator.buffer(string: "\(status.code) \(status.reasonPhrase): \(reason)\n"),
            contentType: plainTextContentType
        )
    }

    /// The response cannot be completed: the stream is reset (a client on HTTP/1.1 would see the
    /// connection close).
    private func resetStream() {
        if let router {
            router.closeStream(context: context)
        } else {
            context.close(promise: nil)
        }
    }

    func abandonUpstream() {
        cancelExchangeTimer()
        responseInbound = nil
        if let connection = upstream {
            upstream = nil
            connection.close()
        }
    }

    func exchangeMetadata(_ extra: Logger.Metadata) -> Logger.Metadata {
        let line = upstreamHead.requestLineForLogs()
        var metadata: Logger.Metadata = [
            "method": "\(line.method)", "path": "\(line.path)",
            "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")", "transport": "h2",
        ]
        metadata.merge(extra) { _, new in new }
        return metadata
    }
}

@available(*, unavailable)
extension HTTP2FastExchange: Sendable {}

extension HTTP2FastExchange: ExchangeDriver {
    typealias Exchange = RawUpstreamExchange

    var exchangeEventLoop: (any EventLoop)? { context.eventLoop }
    var exchangePool: RawUpstreamPool? { pool }
    var exchangeLogger: Logger { environment.logger }

    func closeStalledExchange() {
        abandonUpstream()
        resetStream()
    }
}
