import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// A client `EmbeddedChannel` with the listener's pipeline on the fast path; its backend
/// connections are `EmbeddedChannel`s on the same loop holding only a ``RawUpstreamHandler``
/// (bytes both ways).
final class FastHarness {
    let loop = EmbeddedEventLoop()
    let client: EmbeddedChannel
    private let upstreamBox: NIOLoopBoundBox<[EmbeddedChannel]>
    let environment: ProxyEnvironment

    init() throws {
        let loop = self.loop
        let upstreamBox = NIOLoopBoundBox([EmbeddedChannel](), eventLoop: loop)
        self.upstreamBox = upstreamBox
        var environment = ProxyEnvironment(
            settings: ReadyGateSettings(),
            logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        environment.httpPools = UpstreamPools(makeRawConnector: { _ in
            { _, handler in embeddedBackendConnection(on: loop, handlers: [handler], into: upstreamBox) }
        })
        self.environment = environment
        client = EmbeddedChannel(loop: loop)
        try ReadyGateServer.configureHTTP1(channel: client, environment: environment)
        try client.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
    }

    var upstreams: [EmbeddedChannel] { upstreamBox.value }

    func send(_ text: String) throws {
        try client.writeInbound(ByteBuffer(string: text))
        loop.run()
    }

    func answer(_ text: String, on index: Int = 0) throws {
        try upstreams[index].writeInbound(ByteBuffer(string: text))
        loop.run()
    }

    /// Everything written to backend connection `index` so far.
    func sentUpstream(_ index: Int = 0) throws -> String {
        var text = ""
        while let bytes = try upstreams[index].readOutbound(as: ByteBuffer.self) { text += String(buffer: bytes) }
        return text
    }

    /// Everything written to the client so far.
    func received() throws -> String {
        var text = ""
        while let bytes = try client.readOutbound(as: ByteBuffer.self) { text += String(buffer: bytes) }
        return text
    }

    var isFastPath: Bool { (try? client.pipeline.syncOperations.handler(type: FastHTTP1Handler.self)) != nil }
}

@Suite("fast path on EmbeddedChannel")
struct EmbeddedFastHTTP1HandlerTests {
    static let forwarded =
        "X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n"
        + "Forwarded: for=192.0.2.7;proto=http;host=\"h\"\r\n"

    @Test("a GET goes out rewritten, its answer comes back, and the backend connection is reused")
    func get() throws {
        let harness = try FastHarness()
        try harness.send("GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n")
        #expect(try harness.sentUpstream() == "GET /a HTTP/1.1\r\nHost: h\r\n" + Self.forwarded + "\r\n")
        try harness.answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok")
        #expect(try harness.received() == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        try harness.send("GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(harness.upstreams.count == 1)
        #expect(try harness.sentUpstream().hasPrefix("GET /b HTTP/1.1\r\n"))
        try harness.answer("HTTP/1.1 204 No Content\r\n\r\n")
        #expect(try harness.received() == "HTTP/1.1 204 No Content\r\n\r\n")
        #expect(harness.client.isActive)
    }

    @Test("a chunked body in any split reaches the backend as it came; a pipelined request waits for the response")
    func chunkedAndPipelined() throws {
        let body = "5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n"
        let request = "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        let next = "GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
        let all = Array((request + next).utf8)
        for seed in 0..<20 {
            let harness = try FastHarness()
            var generator = SeededGenerator(seed: UInt64(seed))
            var offset = 0
            while offset < all.count {
                let size = min(all.count - offset, Int.random(in: 1...13, using: &generator))
                try harness.client.writeInbound(ByteBuffer(bytes: all[offset..<(offset + size)]))
                harness.loop.run()
                offset += size
            }
            let sent = try harness.sentUpstream()
            #expect(sent.hasSuffix("Transfer-Encoding: chunked\r\n\r\n" + body), "seed \(seed)")
            #expect(!sent.contains("/next"))
            try harness.answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            #expect(
                try harness.received() == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
            #expect(try harness.sentUpstream().hasPrefix("GET /next HTTP/1.1\r\n"))
        }
    }

    @Test("a body delimited by the backend's close is chunked for the client, which stays open")
    func closeDelimited() throws {
        let harness = try FastHarness()
        try harness.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        try harness.answer("HTTP/1.0 200 OK\r\n\r\nab")
        try harness.upstreams[0].close().wait()
        harness.loop.run()
        #expect(try harness.received() == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
        #expect(harness.client.isActive)
    }

    @Test("Connection: close is answered with Connection: close and the connection closed")
    func close() throws {
        let harness = try FastHarness()
        try harness.send("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        try harness.answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(try harness.received() == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        #expect(!harness.client.isActive)
    }

    @Test("a closed client connection frees its handler: no timer or backend connection keeps it")
    func freed() throws {
        let harness = try FastHarness()
        weak let handler = try harness.client.pipeline.syncOperations.handler(type: FastHTTP1Handler.self)
        try harness.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        try harness.answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(handler != nil)
        try harness.client.close().wait()
        harness.loop.run()
        #expect(handler == nil)
    }

    @Test("a malformed chunk size is answered 400 and closed")
    func badChunk() throws {
        let harness = try FastHarness()
        try harness.send("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        #expect(try harness.received().hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(!harness.client.isActive)
    }

    @Test("an interim answer is relayed first; a backend that closes after it is 502, not retried")
    func interimAnswer() throws {
        let harness = try FastHarness()
        try harness.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        _ = try harness.sentUpstream()
        try harness.answer(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        #expect(
            try harness.received()
                == "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )

        // The next request goes out on the pooled connection; the backend answers 103 and closes. It
        // had the request: no retry on a fresh connection (that would send it twice), a 502.
        try harness.send("GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(harness.upstreams.count == 1)
        _ = try harness.sentUpstream()
        try harness.answer("HTTP/1.1 103 Early Hints\r\n\r\n")
        try harness.upstreams[0].close().wait()
        harness.loop.run()
        #expect(harness.upstreams.count == 1, "no retry")
        let text = try harness.received()
        #expect(text.hasPrefix("HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 502 Bad Gateway\r\n"), "\(text)")
    }

    @Test("the backend closing before answering is 502")
    func upstreamClosed() throws {
        let harness = try FastHarness()
        try harness.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        try harness.upstreams[0].close().wait()
        harness.loop.run()
        #expect(try harness.received().hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
        #expect(!harness.client.isActive)
    }

    @Test(
        "what the fast path does not take goes to the NIO path at the request boundary",
        arguments: [
            ("GET / HTTP/1.1\r\nHost: h\r\nX : y\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("FOO / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "HTTP/1.1 400 Bad Request"
            ),
            ("GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 502 Bad Gateway"),
            ("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 502 Bad Gateway"),
            ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (
                "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                "HTTP/1.1 502 Bad Gateway"
            ),
        ]
    )
    func fallback(request: String, status: String) throws {
        let harness = try FastHarness()
        try harness.send("GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
        try harness.answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(harness.isFastPath)
        _ = try harness.received()
        try harness.send(request)
        #expect(!harness.isFastPath)
        #expect(try harness.received().hasPrefix(status))
    }
}

/// A small deterministic generator (splitmix64) for reproducible splits.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
