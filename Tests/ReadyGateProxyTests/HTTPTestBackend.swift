import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ReadyGateDemo

/// What ``HTTPTestBackend`` saw.
struct HTTPTestBackendCounters: Sendable {
    var connections = 0
    /// Connections that have closed.
    var closed = 0
    var requests = 0
    /// Request heads, in arrival order.
    var heads: [HTTPRequestHead] = []
}

/// A plain HTTP/1.1 backend on 127.0.0.1 for the forwarding tests, on NIO's server pipeline.
///
/// Routes:
/// - `/sum`: reads the whole body, answers `bytes=<count> sum=<SHA-256 of the bytes, hex>`.
/// - `/echo`: answers at once with a chunked response and echoes each body part as it arrives.
/// - `/stream/<n>`: a chunked response of `n` bytes (the pattern `0…250` repeated), 16 KiB a part.
/// - `/headers`: the request's header fields, one `name: value` line each; its response carries
///   hop-by-hop fields (`Keep-Alive`, a field named by `Connection`) the proxy must remove.
/// - `/never`: never answers.
/// - anything else: `hello` with `Content-Length`.
///
/// With `dropSecondRequest`, the second request on each connection is answered by closing the
/// connection, as a backend does that closes an idle keep-alive connection just as a request
/// is sent on it.
final class HTTPTestBackend: Sendable {
    private let channel: any Channel
    let counters: Observed<HTTPTestBackendCounters>

    private init(channel: any Channel, counters: Observed<HTTPTestBackendCounters>) {
        self.channel = channel
        self.counters = counters
    }

    var port: Int { channel.localAddress?.port ?? 0 }
    var snapshot: HTTPTestBackendCounters { counters.value }

    /// Waits until `condition` holds; fails with ``TimedOut`` after 20 s rather than hang.
    func waitUntil(_ condition: @escaping @Sendable (HTTPTestBackendCounters) -> Bool) async throws {
        try await withTimeout(seconds: 20) { await self.counters.wait(until: condition) }
    }

    static func start(dropSecondRequest: Bool = false) async throws -> HTTPTestBackend {
        let counters = Observed(HTTPTestBackendCounters())
        let channel = try await ServerBootstrap(group: testGroup)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                counters.update { $0.connections += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                    try sync.addHandler(
                        HTTPTestBackendHandler(counters: counters, dropSecondRequest: dropSecondRequest)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return HTTPTestBackend(channel: channel, counters: counters)
    }

    func close() async throws {
        try await channel.close()
    }

    /// The body of `/stream/<count>`: the bytes `0…250`, repeated.
    static func streamBytes(_ count: Int) -> ByteBuffer {
        let period = ByteBuffer(bytes: (0..<251).map { UInt8($0) })
        var bytes = ByteBuffer()
        bytes.reserveCapacity(count)
        while bytes.readableBytes < count {
            var next = period.getSlice(at: 0, length: min(251, count - bytes.readableBytes))!
            bytes.writeBuffer(&next)
        }
        return bytes
    }
}

/// SHA-256 over streamed parts, as hex: the checksum the test and the backend compute the same
/// way (swift-crypto's, fast even in a debug build, so the backend does not hog a shared loop).
struct BodyDigest {
    private var hasher = SHA256()

    mutating func update(_ bytes: ByteBuffer) {
        bytes.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
    }

    var value: String { hasher.finalize().map { String(format: "%02x", $0) }.joined() }
}

final class HTTPTestBackendHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let counters: Observed<HTTPTestBackendCounters>
    private let dropSecondRequest: Bool
    private var requestsOnConnection = 0
    private var head: HTTPRequestHead?
    private var bytes = 0
    private var checksum = BodyDigest()

    init(counters: Observed<HTTPTestBackendCounters>, dropSecondRequest: Bool) {
        self.counters = counters
        self.dropSecondRequest = dropSecondRequest
    }

    func channelInactive(context: ChannelHandlerContext) {
        counters.update { $0.closed += 1 }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            requestsOnConnection += 1
            counters.update {
                $0.requests += 1
                $0.heads.append(head)
            }
            if dropSecondRequest && requestsOnConnection == 2 {
                context.close(promise: nil)
                return
            }
            self.head = head
            bytes = 0
            checksum = BodyDigest()
            if head.uri == "/echo" {
                var headers = HTTPHeaders()
                headers.add(name: "Transfer-Encoding", value: "chunked")
                context.writeAndFlush(
                    wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
                    promise: nil
                )
            }
        case .body(let body):
            bytes += body.readableBytes
            checksum.update(body)
            if head?.uri == "/echo" { context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        switch head.uri {
        case "/never":
            return
        case "/echo":
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case "/sum":
            complete("bytes=\(bytes) sum=\(checksum.value)", context: context)
        case "/headers":
            let text = head.headers.map { "\($0.name): \($0.value)\n" }.joined()
            var extra = HTTPHeaders()
            extra.add(name: "Connection", value: "keep-alive, X-Backend-Hop")
            extra.add(name: "X-Backend-Hop", value: "1")
            extra.add(name: "Keep-Alive", value: "timeout=30")
            extra.add(name: "X-Backend-End-To-End", value: "1")
            complete(text, extra: extra, context: context)
        case let uri where uri.hasPrefix("/stream/"):
            let count = Int(uri.dropFirst("/stream/".count)) ?? 0
            var headers = HTTPHeaders()
            headers.add(name: "Transfer-Encoding", value: "chunked")
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
                promise: nil
            )
            // Slices of one buffer: the event loop is shared with every other test, and a loop
            // that builds a megabyte byte by byte (in a debug build) stalls them all.
            let whole = HTTPTestBackend.streamBytes(count)
            var sent = 0
            while sent < count {
                let size = min(16_384, count - sent)
                let part = whole.getSlice(at: whole.readerIndex + sent, length: size)!
                context.write(wrapOutboundOut(.body(.byteBuffer(part))), promise: nil)
                sent += size
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        default:
            complete("hello", context: context)
        }
    }

    private func complete(_ text: String, extra: HTTPHeaders = HTTPHeaders(), context: ChannelHandlerContext) {
        var headers = extra
        headers.add(name: "Content-Length", value: String(text.utf8.count))
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
            promise: nil
        )
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: text)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// One HTTP/1.1 response as a test client decoded it.
struct TestHTTPResponse: Sendable {
    var head: HTTPResponseHead
    var body: ByteBuffer
    var status: Int { Int(head.status.code) }
    var text: String { String(buffer: body) }
}

/// An HTTP/1.1 client connection to 127.0.0.1 on NIO's client codec, for sequential requests.
final class TestHTTPConnection {
    private var iterator: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>

    private init(
        inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>,
        outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    ) {
        self.iterator = inbound.makeAsyncIterator()
        self.outbound = outbound
    }

    /// Connects, runs `body`, closes; fails with ``TimedOut`` after `seconds`.
    static func with<T: Sendable>(
        port: Int,
        seconds: Double = 20,
        _ body: @escaping @Sendable (TestHTTPConnection) async throws -> T
    ) async throws -> T {
        try await withLoopbackConnection(
            port: port,
            seconds: seconds,
            configure: { try $0.pipeline.syncOperations.addHTTPClientHandlers() },
            { inbound, outbound in try await body(TestHTTPConnection(inbound: inbound, outbound: outbound)) }
        )
    }

    /// Sends a request (its body in the given parts, framed as the headers say) and reads the
    /// response; nil when the connection closed before a complete response.
    func request(
        _ method: HTTPMethod = .GET,
        _ uri: String,
        headers: [(String, String)] = [],
        body: [ByteBuffer] = []
    ) async throws -> TestHTTPResponse? {
        var fields = HTTPHeaders([("Host", "proxy.test")])
        for (name, value) in headers { fields.add(name: name, value: value) }
        try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: fields)))
        for part in body { try await outbound.write(.body(.byteBuffer(part))) }
        try await outbound.write(.end(nil))
        return try await response()
    }

    /// Reads one complete response.
    func response() async throws -> TestHTTPResponse? {
        var head: HTTPResponseHead?
        var body = ByteBuffer()
        while let part = try await iterator.next() {
            switch part {
            case .head(let received): head = received
            case .body(var bytes): body.writeBuffer(&bytes)
            case .end:
                guard let head else { return nil }
                return TestHTTPResponse(head: head, body: body)
            }
        }
        return nil
    }
}

@available(*, unavailable)
extension TestHTTPConnection: Sendable {}

/// A raw TCP client to 127.0.0.1 that sends bytes and reads until a marker arrives.
final class RawConnection {
    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var received = ByteBuffer()

    private init(inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>)
    {
        iterator = inbound.makeAsyncIterator()
        self.outbound = outbound
    }

    /// Connects, runs `body`, closes; fails with ``TimedOut`` after `seconds`.
    static func with<T: Sendable>(
        port: Int,
        seconds: Double = 20,
        _ body: @escaping @Sendable (RawConnection) async throws -> T
    ) async throws -> T {
        try await withLoopbackConnection(port: port, seconds: seconds, configure: { _ in }) { inbound, outbound in
            try await body(RawConnection(inbound: inbound, outbound: outbound))
        }
    }

    func send(_ text: String) async throws {
        try await outbound.write(ByteBuffer(string: text))
    }

    func send(bytes: [UInt8]) async throws {
        try await outbound.write(ByteBuffer(bytes: bytes))
    }

    /// Reads until `marker` has arrived; returns everything up to and including it, keeping the rest.
    func read(until marker: String) async throws -> String {
        let needle = Array(marker.utf8)
        while true {
            let view = Array(received.readableBytesView)
            if let end = Self.find(needle, in: view) {
                let text = String(decoding: view[..<end], as: UTF8.self)
                received.moveReaderIndex(forwardBy: end)
                return text
            }
            guard var more = try await iterator.next() else { throw ConnectionClosed() }
            received.writeBuffer(&more)
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count)
        where haystack[start..<(start + needle.count)].elementsEqual(needle) {
            return start + needle.count
        }
        return nil
    }

    struct ConnectionClosed: Error {}
}

@available(*, unavailable)
extension RawConnection: Sendable {}

/// Connects to 127.0.0.1:`port`, writes `bytes` and closes at once: a client that leaves.
func sendAndLeave(port: Int, bytes: [UInt8]) async throws {
    let channel = try await ClientBootstrap(group: testGroup).connect(host: "127.0.0.1", port: port).get()
    try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    try await channel.close()
}

/// Connects to 127.0.0.1:`port`, lets `configure` add handlers, runs `body` on the channel's
/// inbound stream and outbound writer, then closes; fails with ``TimedOut`` after `seconds`.
func withLoopbackConnection<Inbound: Sendable, Outbound: Sendable, T: Sendable>(
    port: Int,
    seconds: Double,
    configure: @escaping @Sendable (any Channel) throws -> Void,
    _ body:
        @escaping @Sendable (NIOAsyncChannelInboundStream<Inbound>, NIOAsyncChannelOutboundWriter<Outbound>)
        async throws -> T
) async throws -> T {
    try await withTimeout(seconds: seconds) {
        let channel = try await ClientBootstrap(group: testGroup)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try configure(channel)
                    return try NIOAsyncChannel<Inbound, Outbound>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in try await body(inbound, outbound) }
    }
}
