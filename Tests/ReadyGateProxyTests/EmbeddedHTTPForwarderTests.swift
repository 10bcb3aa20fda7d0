import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// Counts the `read()` calls that reach the head of a pipeline: what the handlers behind it let through.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    private(set) var reads = 0

    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

/// A client `EmbeddedChannel` with the listener's HTTP/1.1 pipeline, whose backend connections are
/// `EmbeddedChannel`s on the same loop holding only the ``UpstreamHTTPHandler`` (they take and give
/// HTTP parts, not bytes).
final class ForwardHarness {
    let loop = EmbeddedEventLoop()
    let client: EmbeddedChannel
    let clientReads = ReadCounter()
    private let upstreamBox: NIOLoopBoundBox<[EmbeddedChannel]>
    private let failBox: NIOLoopBoundBox<Bool>
    let environment: ProxyEnvironment

    init(configure: (inout ReadyGateSettings) -> Void = { _ in }) throws {
        let loop = self.loop
        let upstreamBox = NIOLoopBoundBox([EmbeddedChannel](), eventLoop: loop)
        let failBox = NIOLoopBoundBox(false, eventLoop: loop)
        self.upstreamBox = upstreamBox
        self.failBox = failBox
        var settings = ReadyGateSettings()
        configure(&settings)
        var environment = ProxyEnvironment(
            settings: settings,
            logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        environment.httpPools = UpstreamPools(makeConnector: { _ in
            { eventLoop, handler in
                if failBox.value { return eventLoop.makeFailedFuture(ChannelError.connectTimeout(.seconds(1))) }
                return embeddedBackendConnection(on: loop, handlers: [ReadCounter(), handler], into: upstreamBox)
            }
        })
        self.environment = environment
        client = EmbeddedChannel(loop: loop)
        try client.pipeline.syncOperations.addHandler(clientReads)
        try ReadyGateServer.configureHTTP1(channel: client, environment: environment)
        try client.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
    }

    var upstreams: [EmbeddedChannel] { upstreamBox.value }
    var pool: UpstreamPool { environment.httpPools.pool(for: loop, settings: environment.settings) }

    func failConnects() { failBox.value = true }

    func send(_ text: String) throws {
        try client.writeInbound(ByteBuffer(string: text))
        loop.run()
    }

    /// The request parts the proxy wrote to backend connection `index`.
    func sentUpstream(_ index: Int = 0) throws -> [HTTPClientRequestPart] {
        var parts: [HTTPClientRequestPart] = []
        while let part = try upstreams[index].readOutbound(as: HTTPClientRequestPart.self) { parts.append(part) }
        return parts
    }

    /// The backend answers on connection `index`.
    func answer(_ index: Int = 0, _ parts: HTTPClientResponsePart...) throws {
        for part in parts { try upstreams[index].writeInbound(part) }
        upstreams[index].pipeline.fireChannelReadComplete()
        loop.run()
    }

    /// Everything written to the client so far, as text.
    func clientText() throws -> String {
        var all = ByteBuffer()
        while var chunk = try client.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&chunk) }
        return String(buffer: all)
    }

    func upstreamReads(_ index: Int = 0) throws -> Int {
        try upstreams[index].pipeline.syncOperations.handler(type: ReadCounter.self).reads
    }

    static func head(_ status: HTTPResponseStatus = .ok, _ fields: [(String, String)]) -> HTTPClientResponsePart {
        .head(HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(fields)))
    }

    static func body(_ text: String) -> HTTPClientResponsePart { .body(ByteBuffer(string: text)) }
}

@Suite("HTTPForwarder and UpstreamPool on EmbeddedChannels")
struct EmbeddedHTTPForwarderTests {
    static let get = "GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"

    @Test("a GET is rewritten for the backend, answered, and the backend connection reused for the next")
    func getAndReuse() throws {
        let harness = try ForwardHarness()
        try harness.send(
            "GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
                + "TE: trailers\r\nX-Keep: yes\r\n\r\n"
        )
        #expect(harness.upstreams.count == 1)
        let sent = try harness.sentUpstream()
        #expect(sent.count == 2)
        guard case .head(let head) = sent.first, case .end = sent.last else {
            Issue.record("expected head and end, got \(sent)")
            return
        }
        #expect(head.uri == "/a?b=1")
        #expect(head.version == .http1_1)
        #expect(head.headers["Host"] == ["example.test"])
        #expect(head.headers["X-Keep"] == ["yes"])
        #expect(head.headers["X-Hop"].isEmpty)
        #expect(head.headers["TE"].isEmpty)
        #expect(head.headers["Connection"].isEmpty)
        #expect(head.headers["X-Forwarded-For"] == ["192.0.2.7"])
        #expect(head.headers["X-Forwarded-Proto"] == ["http"])
        #expect(head.headers["X-Forwarded-Host"] == ["example.test"])
        #expect(head.headers["Forwarded"] == [#"for=192.0.2.7;proto=http;host="example.test""#])

        try harness.answer(
            0,
            ForwardHarness.head(.ok, [("Content-Length", "5"), ("Keep-Alive", "timeout=5"), ("X-App", "1")]),
            ForwardHarness.body("hello"),
            .end(nil)
        )
        let text = try harness.clientText()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("X-App: 1\r\n"))
        #expect(!text.contains("Keep-Alive"))
        #expect(text.hasSuffix("\r\n\r\nhello"))
        #expect(harness.pool.idleCount == 1)

        try harness.send(Self.get)
        #expect(harness.upstreams.count == 1, "the pooled connection is reused")
        #expect(try harness.sentUpstream().count == 2)
        #expect(harness.pool.idleCount == 0)
    }

    @Test("pipelined requests wait: the second reaches the backend only after the first response ends")
    func pipelinedWaits() throws {
        let harness = try ForwardHarness()
        try harness.send(Self.get + "GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n")
        #expect(try harness.sentUpstream().count == 2)
        let readsBefore = harness.clientReads.reads
        harness.client.read()
        #expect(harness.clientReads.reads == readsBefore, "no read while a pipelined request waits")

        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "1")]), ForwardHarness.body("1"), .end(nil))
        let second = try harness.sentUpstream()
        guard case .head(let head) = second.first else {
            Issue.record("the pipelined request did not follow: \(second)")
            return
        }
        #expect(head.uri == "/b")
        #expect(harness.clientReads.reads == readsBefore + 1, "nothing waits any more: the withheld read goes on")
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "1")]), ForwardHarness.body("2"), .end(nil))
        #expect(try harness.clientText().components(separatedBy: "HTTP/1.1 200").count == 3)
    }

    /// Found by the FuzzHTTPEntry target (`Tests/Fuzz`, invariant: the answers do not depend on how
    /// the client's bytes were split into reads): read together with a valid request, a malformed
    /// one behind it was answered `400` at once, in the valid request's place, and that request's
    /// own response was lost.
    @Test(
        "a malformed request pipelined behind one in flight is answered 400 after it, in order",
        arguments: [
            "GET /b HTTP/1.1\r\nHost: example.test\r\nno colon here\r\n\r\n",
            Self.get + "GET /c HTTP/1.1\r\nHost: example.test\r\nno colon here\r\n\r\n",
            "POST /b HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]
    )
    func pipelinedMalformedRequest(behind: String) throws {
        let harness = try ForwardHarness()
        try harness.send(Self.get + behind)
        #expect(try harness.clientText().isEmpty, "nothing is answered before the request in flight")
        let expected = behind.hasPrefix(Self.get) ? 2 : 1
        for answered in 1...expected {
            try harness.answer(
                0,
                ForwardHarness.head(.ok, [("Content-Length", "1")]),
                ForwardHarness.body("\(answered)"),
                .end(nil)
            )
        }
        let text = try harness.clientText()
        #expect(text.components(separatedBy: "HTTP/1.1 200").count == expected + 1, "\(text)")
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.prefix(3) }
        #expect(statuses.last == "400", "\(text)")
        #expect(!harness.client.isActive)
    }

    /// Found by the FuzzHTTPEntry target (`Tests/Fuzz`, invariant: every request the backend gets
    /// is HTTP/1.1 with one Host).
    @Test("an HTTP/1.0 request without Host reaches the backend as HTTP/1.1 with an empty Host")
    func http10WithoutHost() throws {
        let harness = try ForwardHarness()
        try harness.send("GET /old HTTP/1.0\r\n\r\n")
        let sent = try harness.sentUpstream()
        guard case .head(let head) = sent.first else {
            Issue.record("expected a head, got \(sent)")
            return
        }
        #expect(head.version == .http1_1)
        #expect(head.headers["Host"] == [""])
    }

    @Test("while a request waits for its answer the client is still read, so a close is noticed")
    func readWhileWaiting() throws {
        let harness = try ForwardHarness()
        try harness.send(Self.get)
        let readsBefore = harness.clientReads.reads
        harness.client.read()
        #expect(harness.clientReads.reads == readsBefore + 1)
        harness.client.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        harness.loop.run()
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "2")]), ForwardHarness.body("ok"), .end(nil))
        #expect(try harness.clientText().hasSuffix("ok"), "a half-closed client still gets its answer")
        #expect(!harness.client.isActive, "then the connection closes")
    }

    @Test("a closed client connection frees its entry handler and forwarder (no retain cycle)")
    func noLeak() throws {
        let harness = try ForwardHarness()
        weak let entry = try harness.client.pipeline.syncOperations.handler(type: HTTPEntryHandler.self)
        try harness.send(Self.get)
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "0")]), .end(nil))
        #expect(entry != nil)
        try harness.client.close().wait()
        harness.loop.run()
        #expect(entry == nil)
    }

    @Test("the backend is not read while the client cannot take more")
    func clientBackpressure() throws {
        let harness = try ForwardHarness()
        try harness.send(Self.get)
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "100")]), ForwardHarness.body("part"))
        let readsBefore = try harness.upstreamReads()
        harness.client.isWritable = false
        harness.client.pipeline.fireChannelWritabilityChanged()
        harness.upstreams[0].read()
        #expect(try harness.upstreamReads() == readsBefore)
        harness.client.isWritable = true
        harness.client.pipeline.fireChannelWritabilityChanged()
        #expect(try harness.upstreamReads() == readsBefore + 1)
    }

    @Test("the client is not read while the backend connection cannot take more of the body")
    func upstreamBackpressure() throws {
        let harness = try ForwardHarness()
        try harness.send("POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nhello")
        let sent = try harness.sentUpstream()
        #expect(sent.count == 2)
        let readsBefore = harness.clientReads.reads
        harness.upstreams[0].isWritable = false
        harness.upstreams[0].pipeline.fireChannelWritabilityChanged()
        harness.client.read()
        #expect(harness.clientReads.reads == readsBefore)
        harness.upstreams[0].isWritable = true
        harness.upstreams[0].pipeline.fireChannelWritabilityChanged()
        #expect(harness.clientReads.reads == readsBefore + 1)
    }

    @Test("a HEAD answer keeps its framing headers and carries no body, and the next request still parses")
    func headResponse() throws {
        let harness = try ForwardHarness()
        try harness.send("HEAD /a HTTP/1.1\r\nHost: example.test\r\n\r\n")
        try harness.answer(0, ForwardHarness.head(.ok, [("Transfer-Encoding", "chunked")]), .end(nil))
        let text = try harness.clientText()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.hasSuffix("\r\n\r\n"), "no chunked terminator after a HEAD answer: \(text)")
        #expect(!text.contains("0\r\n\r\n"))
    }

    @Test("a chunked backend answer is re-chunked for an HTTP/1.1 client and delimited by close for HTTP/1.0")
    func responseFraming() throws {
        let modern = try ForwardHarness()
        try modern.send(Self.get)
        try modern.answer(
            0,
            ForwardHarness.head(.ok, [("Transfer-Encoding", "chunked")]),
            ForwardHarness.body("abc"),
            .end(nil)
        )
        let chunked = try modern.clientText()
        #expect(chunked.contains("Transfer-Encoding: chunked\r\n"))
        #expect(chunked.hasSuffix("3\r\nabc\r\n0\r\n\r\n"))
        #expect(modern.client.isActive)

        let old = try ForwardHarness()
        try old.send("GET /a HTTP/1.0\r\nHost: example.test\r\nConnection: keep-alive\r\n\r\n")
        try old.answer(
            0,
            ForwardHarness.head(.ok, [("Transfer-Encoding", "chunked")]),
            ForwardHarness.body("abc"),
            .end(nil)
        )
        let closeDelimited = try old.clientText()
        #expect(closeDelimited.hasPrefix("HTTP/1.0 200 OK\r\n"))
        #expect(closeDelimited.contains("Connection: close\r\n"))
        #expect(closeDelimited.hasSuffix("\r\n\r\nabc"))
        #expect(!old.client.isActive)
    }

    @Test("Expect: 100-continue is answered by the proxy and not passed on")
    func expectContinue() throws {
        let harness = try ForwardHarness()
        try harness.send("POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        #expect(try harness.clientText() == "HTTP/1.1 100 Continue\r\n\r\n")
        guard case .head(let head) = try harness.sentUpstream().first else {
            Issue.record("no head upstream")
            return
        }
        #expect(head.headers["Expect"].isEmpty)
        #expect(head.headers["Content-Length"] == ["2"])
    }

    @Test("an interim answer reaches an HTTP/1.1 client before the final one, without hop-by-hop fields")
    func interimAnswer() throws {
        let hints = ForwardHarness.head(
            HTTPResponseStatus(statusCode: 103, reasonPhrase: "Early Hints"),
            [("Link", "</a.css>; rel=preload"), ("Connection", "X-Hop"), ("X-Hop", "1")]
        )
        let final = ForwardHarness.head(.ok, [("Content-Length", "2")])

        let modern = try ForwardHarness()
        try modern.send(Self.get)
        try modern.answer(0, hints, final, ForwardHarness.body("ok"), .end(nil))
        let text = try modern.clientText()
        #expect(
            text.hasPrefix("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"),
            "\(text)"
        )
        #expect(!text.contains("X-Hop"), "\(text)")
        #expect(text.hasSuffix("\r\n\r\nok"))
        #expect(modern.pool.idleCount == 1, "the backend connection is pooled after the final answer")

        // An HTTP/1.0 client gets no 1xx (RFC 9110 §15.2).
        let old = try ForwardHarness()
        try old.send("GET /a HTTP/1.0\r\nHost: example.test\r\n\r\n")
        try old.answer(0, hints, final, ForwardHarness.body("ok"), .end(nil))
        let oldText = try old.clientText()
        #expect(oldText.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(oldText)")
        #expect(oldText.hasSuffix("\r\n\r\nok"))
    }

    @Test("after the proxy's own 100 Continue, the backend's 100 is not relayed again")
    func ownContinueOnly() throws {
        let harness = try ForwardHarness()
        try harness.send(
            "POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nab"
        )
        #expect(try harness.clientText() == "HTTP/1.1 100 Continue\r\n\r\n")
        try harness.answer(
            0,
            ForwardHarness.head(.continue, []),
            ForwardHarness.head(.ok, [("Content-Length", "0")]),
            .end(nil)
        )
        let text = try harness.clientText()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(text)")
        #expect(!text.contains("100 Continue"))
    }

    /// Requests whose framing is ambiguous: each must be answered 400 and never reach a backend.
    static let smuggling: [String] = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ]

    @Test("ambiguous request framing is answered 400 and closed, with no backend connection", arguments: smuggling)
    func ambiguousFraming(request: String) throws {
        let harness = try ForwardHarness()
        try harness.send(request)
        let text = try harness.clientText()
        #expect(text.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(request): \(text)")
        #expect(harness.upstreams.isEmpty)
        #expect(!harness.client.isActive)
    }

    /// Header sets for the parity test below.
    static let headerSets: [[(String, String)]] = [
        [("Host", "example.test")],
        [("Host", "a"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("x-hop", "2"), ("X-Keep", "k")],
        [("Host", "a"), ("Connection", "close"), ("Keep-Alive", "t=5"), ("TE", "trailers"), ("Trailer", "x")],
        [("Host", "a"), ("Proxy-Connection", "keep-alive"), ("Upgrade", "h2c"), ("Connection", "Upgrade,  , Foo")],
        [
            ("Host", "a"), ("X-Forwarded-For", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2"),
            ("X-Forwarded-Proto", "https"),
        ],
        [("X-Forwarded-Host", "orig"), ("Forwarded", "for=10.0.0.1"), ("forwarded", "for=10.0.0.2;proto=https")],
        [("Host", "[::1]:8080"), ("Cookie", "a=b"), ("Cookie", "c=d"), ("Accept", "*/*")],
        [("Host", "a"), ("Content-Length", "5"), ("Connection", "Host, content-length, X-Hop"), ("X-Hop", "1")],
    ]

    /// Found by the FuzzUpgradeRequest target (`Tests/Fuzz`, invariant: stripping hop-by-hop fields
    /// keeps Host and Content-Length): a client could name them in `Connection`. Without
    /// Content-Length the backend read the body as the next request on the pooled connection.
    @Test("Connection cannot remove Host or Content-Length from a forwarded request")
    func connectionCannotNominateFraming() throws {
        let harness = try ForwardHarness()
        try harness.send(
            "POST /a HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n"
                + "Connection: keep-alive, Content-Length, host, X-Hop\r\nX-Hop: 1\r\n\r\nhello"
        )
        let sent = try harness.sentUpstream()
        guard case .head(let head) = sent.first else {
            Issue.record("expected a head, got \(sent)")
            return
        }
        #expect(head.headers["Content-Length"] == ["5"])
        #expect(head.headers["Host"] == ["example.test"])
        #expect(head.headers["X-Hop"].isEmpty)
        #expect(head.headers["Connection"].isEmpty)
        let body = sent.compactMap { part -> String? in
            if case .body(.byteBuffer(let buffer)) = part { return String(buffer: buffer) }
            return nil
        }
        #expect(body.joined() == "hello")
    }

    @Test("the NIO-native header rewrite gives what Core's ProxyHeaders gives", arguments: headerSets.indices)
    func headerRewriteParity(index: Int) {
        let fields = Self.headerSets[index]
        for address in ["192.0.2.7", "2001:db8::1", nil] as [String?] {
            let core = ProxyHeaders.addingForwarded(
                ProxyHeaders.strippingHopByHop(HTTPHeaderList(fields.map { (name: $0.0, value: $0.1) })),
                clientAddress: address,
                proto: "http",
                host: fields.first { $0.0.lowercased() == "host" }?.1
            )
            var nio = HTTPHeaders(fields)
            let identity = ForwardedMessage.forwardedIdentity(clientAddress: address)
            ForwardedMessage.stripHopByHop(&nio)
            ForwardedMessage.addForwarded(
                &nio,
                forwardedFor: identity.forwardedFor,
                forwardedElement: identity.forwardedElement
            )
            let coreFields = core.fields.map { "\($0.name.lowercased()): \($0.value)" }
            let nioFields = nio.map { "\($0.name.lowercased()): \($0.value)" }
            #expect(nioFields == coreFields, "address \(address ?? "nil")")
        }
    }

    @Test("our own framing check refuses what llhttp might let through")
    func framingCheck() {
        func head(_ fields: [(String, String)], version: HTTPVersion = .http1_1) -> HTTPRequestHead {
            HTTPRequestHead(version: version, method: .POST, uri: "/", headers: HTTPHeaders(fields))
        }
        #expect(ForwardedMessage.framingProblem(head([("Content-Length", "3")])) == nil)
        #expect(ForwardedMessage.framingProblem(head([("Transfer-Encoding", "chunked")])) == nil)
        #expect(
            ForwardedMessage.framingProblem(head([("Transfer-Encoding", "chunked"), ("Content-Length", "3")])) != nil
        )
        #expect(ForwardedMessage.framingProblem(head([("Transfer-Encoding", "gzip")])) != nil)
        #expect(ForwardedMessage.framingProblem(head([("Transfer-Encoding", "chunked")], version: .http1_0)) != nil)
        #expect(ForwardedMessage.framingProblem(head([("Content-Length", "3"), ("Content-Length", "3")])) != nil)
        #expect(ForwardedMessage.framingProblem(head([("Content-Length", "x")])) != nil)
    }

    @Test("no backend connection: 502 and the client connection closed")
    func connectFails() throws {
        let harness = try ForwardHarness()
        harness.failConnects()
        try harness.send(Self.get)
        let text = try harness.clientText()
        #expect(text.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
        #expect(text.contains("Connection: close\r\n"))
        #expect(!harness.client.isActive)
    }

    @Test("no response head within the response timeout: 504, and the backend connection closed")
    func responseTimeout() throws {
        let harness = try ForwardHarness { $0.httpResponseTimeoutMs = 500 }
        try harness.send(Self.get)
        harness.loop.advanceTime(by: .milliseconds(499))
        #expect(try harness.clientText().isEmpty)
        harness.loop.advanceTime(by: .milliseconds(1))
        #expect(try harness.clientText().hasPrefix("HTTP/1.1 504 Gateway Timeout\r\n"))
        #expect(!harness.upstreams[0].isActive)
        #expect(!harness.client.isActive)
        #expect(harness.pool.idleCount == 0)
    }

    @Test("a response body that stops for the response timeout closes both connections; one that moves does not")
    func stalledBody() throws {
        let harness = try ForwardHarness { $0.httpResponseTimeoutMs = 500 }
        try harness.send(Self.get)
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "10")]), ForwardHarness.body("hal"))
        for _ in 0..<4 {
            harness.loop.advanceTime(by: .milliseconds(400))
            try harness.answer(0, ForwardHarness.body("f"))
        }
        #expect(harness.client.isActive, "a part every 400 ms keeps a 500 ms timeout from firing")
        harness.loop.advanceTime(by: .milliseconds(499))
        #expect(harness.client.isActive)
        harness.loop.advanceTime(by: .milliseconds(1))
        #expect(!harness.client.isActive)
        #expect(!harness.upstreams[0].isActive)
        #expect(try harness.clientText().hasSuffix("halffff"))
        #expect(harness.pool.idleCount == 0)
    }

    @Test("a request body that stops for the response timeout is answered 408; one that moves is not")
    func stalledRequestBody() throws {
        let harness = try ForwardHarness { $0.httpResponseTimeoutMs = 500 }
        try harness.send("POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nhel")
        for _ in 0..<3 {
            harness.loop.advanceTime(by: .milliseconds(400))
            try harness.send("l")
        }
        #expect(harness.client.isActive, "a part every 400 ms keeps a 500 ms timeout from firing")
        harness.loop.advanceTime(by: .milliseconds(500))
        #expect(try harness.clientText().hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
        #expect(!harness.client.isActive)
        #expect(!harness.upstreams[0].isActive)
        #expect(harness.pool.idleCount == 0)
    }

    @Test("the backend closing mid-response closes the client connection")
    func upstreamClosesMidResponse() throws {
        let harness = try ForwardHarness()
        try harness.send(Self.get)
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "10")]), ForwardHarness.body("hal"))
        try harness.upstreams[0].close().wait()
        harness.loop.run()
        #expect(try harness.clientText().hasSuffix("hal"))
        #expect(!harness.client.isActive)
    }

    @Test("a client that leaves mid-body gets its backend connection closed, not pooled")
    func clientLeaves() throws {
        let harness = try ForwardHarness()
        try harness.send("POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nhel")
        try harness.client.close().wait()
        harness.loop.run()
        #expect(!harness.upstreams[0].isActive)
        #expect(harness.pool.idleCount == 0)
    }

    @Test("Connection: close from the backend or a pool of 0 closes the backend connection after the response")
    func notPooled() throws {
        let closing = try ForwardHarness()
        try closing.send(Self.get)
        try closing.answer(0, ForwardHarness.head(.ok, [("Content-Length", "0"), ("Connection", "close")]), .end(nil))
        #expect(!closing.upstreams[0].isActive)
        #expect(closing.client.isActive, "the client's keep-alive does not depend on the backend's")

        let unpooled = try ForwardHarness { $0.httpPoolIdleMax = 0 }
        try unpooled.send(Self.get)
        try unpooled.answer(0, ForwardHarness.head(.ok, [("Content-Length", "0")]), .end(nil))
        #expect(!unpooled.upstreams[0].isActive)
    }

    @Test("idle pooled connections are closed after the idle timeout, and a backend close removes one at once")
    func idleTimeoutAndBackendClose() throws {
        let harness = try ForwardHarness()
        try harness.send(Self.get)
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "0")]), .end(nil))
        #expect(harness.pool.idleCount == 1)
        // The sweep runs every quarter of the timeout: closed within 1.25 × the timeout.
        harness.loop.advanceTime(by: .nanoseconds(UpstreamPools.idleTimeout.nanoseconds * 5 / 4))
        #expect(harness.pool.idleCount == 0)
        #expect(!harness.upstreams[0].isActive)

        try harness.send(Self.get)
        #expect(harness.upstreams.count == 2)
        try harness.answer(1, ForwardHarness.head(.ok, [("Content-Length", "0")]), .end(nil))
        #expect(harness.pool.idleCount == 1)
        try harness.upstreams[1].close().wait()
        harness.loop.run()
        #expect(harness.pool.idleCount == 0)
    }

    @Test("a reused connection that closes before answering a body-less request is retried on a fresh one")
    func staleRetry() throws {
        let harness = try ForwardHarness()
        try harness.send(Self.get)
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "0")]), .end(nil))
        _ = try harness.clientText()
        try harness.send(Self.get)
        #expect(harness.upstreams.count == 1)
        try harness.upstreams[0].close().wait()
        harness.loop.run()
        #expect(harness.upstreams.count == 2)
        let resent = try harness.sentUpstream(1)
        #expect(resent.count == 2)
        try harness.answer(1, ForwardHarness.head(.ok, [("Content-Length", "2")]), ForwardHarness.body("ok"), .end(nil))
        #expect(try harness.clientText().hasSuffix("ok"))
    }

    @Test(
        "a request without keep-alive is answered and the connection closed",
        arguments: [
            "GET / HTTP/1.0\r\nHost: example.test\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        ]
    )
    func withoutKeepAlive(request: String) throws {
        let harness = try ForwardHarness()
        try harness.send(request)
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "2")]), ForwardHarness.body("ok"), .end(nil))
        let text = try harness.clientText()
        #expect(text.contains("Connection: close\r\n"))
        #expect(text.hasSuffix("ok"))
        #expect(!harness.client.isActive)
        #expect(harness.pool.idleCount == 1, "the backend connection is still good")
    }

    @Test("a POST body is streamed, and the next request on the connection is forwarded too")
    func postThenGet() throws {
        let harness = try ForwardHarness()
        try harness.send("POST /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\nhello world" + Self.get)
        let sent = try harness.sentUpstream()
        let body = sent.compactMap { part -> String? in
            if case .body(.byteBuffer(let bytes)) = part { return String(buffer: bytes) }
            return nil
        }
        #expect(body.joined() == "hello world")
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "0")]), .end(nil))
        guard case .head(let next) = try harness.sentUpstream().first else {
            Issue.record("the next request was not forwarded")
            return
        }
        #expect(next.uri == "/a")
    }

    /// NIO's request decoder stops parsing after any request with `Upgrade` (it leaves the rest to
    /// the new protocol), so after answering such a request that is not a WebSocket upgrade (here
    /// h2c) the connection is closed rather than left unable to read a next request.
    @Test("a plain request that asks for another upgrade is forwarded without it, then the connection closed")
    func otherUpgrade() throws {
        let harness = try ForwardHarness()
        try harness.send(
            "GET / HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                + "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        guard case .head(let head) = try harness.sentUpstream().first else {
            Issue.record("not forwarded")
            return
        }
        #expect(head.headers["Upgrade"].isEmpty)
        #expect(head.headers["HTTP2-Settings"].isEmpty)
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "0")]), .end(nil))
        #expect(try harness.clientText().contains("Connection: close\r\n"))
        #expect(!harness.client.isActive)
    }
}
