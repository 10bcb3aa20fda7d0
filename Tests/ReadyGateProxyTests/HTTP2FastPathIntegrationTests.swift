import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

@testable import ReadyGateProxy

@Suite("HTTP/2 fast path over loopback: plain requests on raw pooled backend connections")
struct HTTP2FastPathIntegrationTests {
    @Test func theBackendSeesTheForwardingFieldsAndTheClientOnlyEndToEndFields() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        let connection = try await H2TestConnection.connect(port: proxy.port)

        let get = try await connection.request(path: "/headers", extra: [("x-forwarded-for", "10.1.2.3")])
        #expect(get.status == 200)
        #expect(get.text.contains("host: proxy.test\n"), "\(get.text)")
        #expect(get.text.contains("X-Forwarded-For: 10.1.2.3, 127.0.0.1\n"), "\(get.text)")
        #expect(get.text.contains("X-Forwarded-Proto: http\n"), "\(get.text)")
        #expect(get.headers.first(name: "x-backend-end-to-end") == "1")
        for name in ["connection", "keep-alive", "x-backend-hop"] { #expect(!get.headers.contains(name: name)) }

        let head = try await connection.request(method: "HEAD", path: "/")
        #expect(head.status == 200)
        #expect(head.body.readableBytes == 0)

        await connection.close()
        try await proxy.stop()
        try await backend.close()
    }

    @Test func twoHundredConcurrentStreamsShareThePoolAndAllGetTheirAnswer() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        let connection = try await H2TestConnection.connect(port: proxy.port)
        let bodies = try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            for i in 0..<200 {
                group.addTask { try await connection.request(path: i % 10 == 0 ? "/stream/20000" : "/").body }
            }
            var bodies: [ByteBuffer] = []
            for try await body in group { bodies.append(body) }
            return bodies
        }
        #expect(bodies.count(where: { String(buffer: $0) == "hello" }) == 180)
        #expect(bodies.count(where: { $0 == HTTPTestBackend.streamBytes(20_000) }) == 20)
        // Sequential requests afterwards reuse pooled connections.
        for _ in 0..<3 { #expect(try await connection.request(path: "/").text == "hello") }
        await connection.close()
        try await proxy.stop()
        try await backend.close()
    }

    /// The client resets a plain request's stream while its backend has not answered: counted in
    /// `readygate_http2_stream_resets_total` on the fast path (no body) and on the NIO-codec path
    /// (a body); the connection serves on and a completed request counts nothing.
    @Test(arguments: [false, true])
    func aClientResetOfAPlainRequestIsCounted(withBody: Bool) async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        let connection = try await H2TestConnection.connect(port: proxy.port)
        let stream = try await connection.openStream()
        try await stream.executeThenClose { _, outbound in
            let headers = HPACKHeaders([
                (":method", withBody ? "POST" : "GET"), (":scheme", "http"), (":path", "/never"),
                (":authority", "proxy.test"),
            ])
            try await outbound.write(.headers(.init(headers: headers, endStream: !withBody)))
            if withBody {
                try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(string: "body")), endStream: true)))
            }
            try await backend.waitUntil { $0.requests == 1 }
        }  // Leaving closes the open stream: RST_STREAM (CANCEL).
        try await waitForResets(1, proxy: proxy)
        #expect(try await connection.request(path: "/").text == "hello")
        #expect(resets(proxy) == 1)
        await connection.close()
        try await proxy.stop()
        try await backend.close()
    }

    /// `103 Early Hints` from the backend reaches the h2 client as a HEADERS frame of its own, before
    /// the final answer, on both paths: a GET takes the fast path, a POST with a body NIO's codecs
    /// (whose response decoder passes interim answers on). NIOHTTP2's client accepts the sequence.
    @Test(arguments: [false, true])
    func anInterimAnswerReachesTheClientBeforeTheFinalOne(withBody: Bool) async throws {
        let backend = try await ScriptedBackend { _, connection in
            _ = try await connection.readHead()
            try await connection.write(
                "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                    + "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            )
        }
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        let connection = try await H2TestConnection.connect(port: proxy.port)
        let answer = try await connection.request(
            method: withBody ? "POST" : "GET",
            path: "/hints",
            extra: withBody ? [("content-length", "4")] : [],
            body: withBody ? Array("data".utf8) : nil
        )
        #expect(answer.interim.map { $0.first(name: ":status") } == ["103"])
        #expect(answer.interim.first?.first(name: "link") == "</style.css>; rel=preload")
        #expect(answer.status == 200)
        #expect(answer.text == "ok")
        await connection.close()
        try await proxy.stop()
        await backend.close()
    }

    /// A backend that breaks off mid-body: the proxy resets the client's stream itself, which is
    /// not the client's reset and is not counted.
    @Test func aResetByTheProxyIsNotCounted() async throws {
        let backend = try await ScriptedBackend { _, connection in
            _ = try await connection.readHead()
            try await connection.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
            try await connection.drop()
        }
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        let connection = try await H2TestConnection.connect(port: proxy.port)
        let cut = try await connection.request(path: "/cut")
        #expect(cut.reset, "the client sees its stream reset")
        #expect(cut.body.readableBytes == 9)
        #expect(resets(proxy) == 0)
        await connection.close()
        try await proxy.stop()
        await backend.close()
    }

    private func resets(_ proxy: ProxyFixture) -> Int {
        let text = String(decoding: proxy.server.environment.metrics.registry.emitToBuffer(), as: UTF8.self)
        let line = text.split(separator: "\n").first { $0.hasPrefix("readygate_http2_stream_resets_total ") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
    }

    private func waitForResets(_ count: Int, proxy: ProxyFixture) async throws {
        try await withTimeout(seconds: 10) {
            while resets(proxy) < count { try await Task.sleep(for: .milliseconds(5)) }
        }
    }
}
