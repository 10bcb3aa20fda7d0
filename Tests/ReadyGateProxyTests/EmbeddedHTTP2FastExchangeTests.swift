import Logging
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// An HTTP/2 stream as an `EmbeddedChannel` of frame payloads with the stream's first handler, the
/// ``HTTP2StreamRouter``; backend connections are `EmbeddedChannel`s holding a ``RawUpstreamHandler``.
private final class StreamHarness {
    let loop = EmbeddedEventLoop()
    let stream: EmbeddedChannel
    private let upstreamBox: NIOLoopBoundBox<[EmbeddedChannel]>
    let environment: ProxyEnvironment

    init(refuseConnects: Bool = false) throws {
        let loop = self.loop
        let upstreamBox = NIOLoopBoundBox([EmbeddedChannel](), eventLoop: loop)
        self.upstreamBox = upstreamBox
        var environment = ProxyEnvironment(
            settings: ReadyGateSettings(),
            logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        environment.httpPools = UpstreamPools(makeRawConnector: { _ in
            { eventLoop, handler in
                if refuseConnects { return eventLoop.makeFailedFuture(UpstreamConnectError.unsupportedEventLoop) }
                return embeddedBackendConnection(on: loop, handlers: [handler], into: upstreamBox)
            }
        })
        self.environment = environment
        stream = EmbeddedChannel(loop: loop)
        try stream.pipeline.syncOperations.addHandler(HTTP2StreamRouter(environment: environment))
        try stream.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
    }

    var upstreams: [EmbeddedChannel] { upstreamBox.value }

    func request(
        method: String = "GET",
        path: String = "/a",
        extra: [(String, String)] = [],
        endStream: Bool = true
    ) throws {
        var headers = HPACKHeaders([
            (":method", method), (":scheme", "http"), (":path", path), (":authority", "proxy.test"),
        ])
        for (name, value) in extra { headers.add(name: name, value: value) }
        try stream.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: endStream)))
        loop.run()
    }

    func sentUpstream(_ index: Int = 0) throws -> String {
        var text = ""
        while let part = try upstreams[index].readOutbound(as: ByteBuffer.self) { text += String(buffer: part) }
        return text
    }

    func answer(_ text: String, on index: Int = 0) throws {
        try upstreams[index].writeInbound(ByteBuffer(string: text))
        loop.run()
    }

    /// The frames written to the client so far: the header blocks and the DATA bytes, and whether
    /// the stream was ended.
    func response() throws -> (headers: [HPACKHeaders], body: String, ended: Bool) {
        var headers: [HPACKHeaders] = []
        var body = ""
        var ended = false
        while let payload = try stream.readOutbound(as: HTTP2Frame.FramePayload.self) {
            switch payload {
            case .headers(let block):
                headers.append(block.headers)
                ended = ended || block.endStream
            case .data(let data):
                if case .byteBuffer(let bytes) = data.data { body += String(buffer: bytes) }
                ended = ended || data.endStream
            default:
                break
            }
        }
        return (headers, body, ended)
    }
}

@Suite("HTTP/2 fast path: a plain request on a stream straight to a raw backend connection")
struct EmbeddedHTTP2FastExchangeTests {
    @Test func aGetIsForwardedAsHTTP1AndItsResponseComesBackAsFrames() throws {
        let h = try StreamHarness()
        try h.request(path: "/x?y=1", extra: [("accept", "*/*"), ("x-forwarded-for", "10.0.0.1")])
        // No handler besides the router: no codec, no entry handler.
        #expect(throws: (any Error).self) { try h.stream.pipeline.syncOperations.handler(type: HTTPEntryHandler.self) }
        let sent = try h.sentUpstream()
        #expect(sent.hasPrefix("GET /x?y=1 HTTP/1.1\r\nhost: proxy.test\r\naccept: */*\r\n"), "\(sent)")
        #expect(sent.contains("X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"), "\(sent)")
        #expect(sent.contains("X-Forwarded-Proto: http\r\n"), "\(sent)")
        #expect(sent.contains("Forwarded: for=192.0.2.7;proto=http"), "\(sent)")
        #expect(sent.hasSuffix("\r\n\r\n"))

        try h.answer(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
                + "Keep-Alive: timeout=5\r\nX-End-To-End: 2\r\n\r\nhello"
        )
        let response = try h.response()
        #expect(response.headers.count == 1)
        let block = try #require(response.headers.first)
        #expect(block.first(name: ":status") == "200")
        #expect(block.first(name: "content-length") == "5")
        #expect(block.first(name: "x-end-to-end") == "2")
        for name in ["connection", "keep-alive", "x-hop"] { #expect(!block.contains(name: name), "\(name)") }
        #expect(response.body == "hello")
        #expect(response.ended)
        // The backend connection went back to the pool.
        #expect(h.environment.httpPools.rawPool(for: h.loop, settings: h.environment.settings).idleCount == 1)
    }

    @Test func aChunkedResponseIsDecodedIntoDataFrames() throws {
        let h = try StreamHarness()
        try h.request()
        _ = try h.sentUpstream()
        try h.answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        var response = try h.response()
        #expect(response.headers.first?.contains(name: "transfer-encoding") == false)
        #expect(response.body == "hello")
        #expect(!response.ended)
        try h.answer("6\r\n world\r\n0\r\n\r\n")
        response = try h.response()
        #expect(response.body == " world")
        #expect(response.ended)
    }

    @Test func aHeadResponseEndsWithItsHeaders() throws {
        let h = try StreamHarness()
        try h.request(method: "HEAD")
        #expect(try h.sentUpstream().hasPrefix("HEAD /a HTTP/1.1\r\n"))
        try h.answer("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
        let response = try h.response()
        #expect(response.headers.first?.first(name: "content-length") == "42")
        #expect(response.ended)
        #expect(response.body.isEmpty)
    }

    @Test func aRefusedBackendIs502OnTheStream() throws {
        let h = try StreamHarness(refuseConnects: true)
        try h.request()
        let response = try h.response()
        #expect(response.headers.first?.first(name: ":status") == "502")
        #expect(response.body.hasPrefix("502 Bad Gateway: "))
        #expect(response.ended)
    }

    @Test func noAnswerInTheResponseTimeoutIs504() throws {
        let h = try StreamHarness()
        try h.request()
        _ = try h.sentUpstream()
        h.loop.advanceTime(by: .milliseconds(Int64(h.environment.settings.httpResponseTimeoutMs) + 1))
        let response = try h.response()
        #expect(response.headers.first?.first(name: ":status") == "504")
        #expect(response.ended)
        #expect(!h.upstreams[0].isActive)
    }

    @Test func anInterimAnswerIsRelayedBeforeTheFinalOne() throws {
        let h = try StreamHarness()
        try h.request()
        _ = try h.sentUpstream()
        try h.answer("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        let response = try h.response()
        #expect(response.headers.map { $0.first(name: ":status") } == ["103", "200"])
        #expect(response.headers.first?.first(name: "link") == "</a>")
        #expect(response.body == "ok")
        #expect(response.ended)
    }

    @Test func aPooledConnectionClosedByTheBackendIsRetriedOnAFreshOne() throws {
        let h = try StreamHarness()
        try h.request()
        _ = try h.sentUpstream()
        try h.answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        _ = try h.response()
        // A second stream on the same loop reuses the pooled connection, which the backend closes.
        let second = EmbeddedChannel(handler: HTTP2StreamRouter(environment: h.environment), loop: h.loop)
        try second.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
        let headers = HPACKHeaders([(":method", "GET"), (":scheme", "http"), (":path", "/b"), (":authority", "p")])
        try second.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: true)))
        h.loop.run()
        #expect(try h.sentUpstream(0).hasPrefix("GET /b HTTP/1.1\r\n"))
        try h.upstreams[0].close().wait()
        h.loop.run()
        #expect(h.upstreams.count == 2)
        #expect(try h.sentUpstream(1).hasPrefix("GET /b HTTP/1.1\r\n"))
        try h.answer("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", on: 1)
        var body = ""
        var status: String?
        while let payload = try second.readOutbound(as: HTTP2Frame.FramePayload.self) {
            if case .headers(let block) = payload { status = block.headers.first(name: ":status") }
            if case .data(let data) = payload, case .byteBuffer(let bytes) = data.data { body += String(buffer: bytes) }
        }
        #expect(status == "200")
        #expect(body == "yes")
    }

    @Test func aBackendThatClosesMidBodyResetsTheStream() throws {
        let h = try StreamHarness()
        try h.request()
        _ = try h.sentUpstream()
        try h.answer("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        try h.upstreams[0].close().wait()
        h.loop.run()
        #expect(!h.stream.isActive)
    }

    @Test func aClientThatLeavesClosesTheBackendConnection() throws {
        let h = try StreamHarness()
        try h.request()
        _ = try h.sentUpstream()
        try h.stream.close().wait()
        h.loop.run()
        #expect(!h.upstreams[0].isActive)
    }

    @Test(arguments: [
        (method: "POST", extra: [(String, String)](), endStream: false),
        (method: "GET", extra: [("host", "other")], endStream: true),
        (method: "GET", extra: [("expect", "100-continue")], endStream: true),
        (method: "PROPFIND", extra: [], endStream: true),
    ])
    func otherRequestsTakeTheNIOPath(method: String, extra: [(String, String)], endStream: Bool) throws {
        let h = try StreamHarness()
        try h.request(method: method, extra: extra, endStream: endStream)
        // The NIO path's pool cannot connect on an `EmbeddedEventLoop`: its 502 (or the entry
        // handler's own answer), and no raw backend connection.
        #expect(h.upstreams.isEmpty)
        let response = try h.response()
        #expect(response.headers.first?.first(name: ":status") != nil)
    }

    @Test func theRequestHeadIsWrittenFromTheHeaderBlock() throws {
        let headers = HPACKHeaders([
            (":method", "GET"), (":scheme", "https"), (":authority", "a.test:8443"), (":path", "/p"),
            ("cookie", "a=1"), ("cookie", "b=2"),
        ])
        let raw = try #require(HTTP2FastExchange.requestHead(headers, allocator: ByteBufferAllocator()))
        #expect(String(buffer: raw) == "GET /p HTTP/1.1\r\nhost: a.test:8443\r\ncookie: a=1\r\ncookie: b=2\r\n\r\n")
        for missing in [":method", ":path", ":authority"] {
            var partial = headers
            partial.remove(name: missing)
            #expect(HTTP2FastExchange.requestHead(partial, allocator: ByteBufferAllocator()) == nil, "\(missing)")
        }
        var connect = headers
        connect.replaceOrAdd(name: ":method", value: "CONNECT")
        #expect(HTTP2FastExchange.requestHead(connect, allocator: ByteBufferAllocator()) == nil)
    }
}
