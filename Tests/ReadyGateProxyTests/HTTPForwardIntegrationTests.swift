import NIOCore
import NIOHTTP1
import NIOPosix
import ReadyGateCore
import ReadyGateDemo
import Testing

@testable import ReadyGateProxy

/// Plain HTTP/1.1 through a real ReadyGate listener to ``HTTPTestBackend``, on loopback.
@Suite("Plain HTTP forwarding on loopback")
struct HTTPForwardIntegrationTests {
    /// Starts the backend and a ReadyGate in front of it, runs `body`, stops both.
    func withHTTPBackend<T>(
        dropSecondRequest: Bool = false,
        proxy configure: (inout ReadyGateSettings) -> Void = { _ in },
        _ body: (HTTPTestBackend, ProxyFixture) async throws -> T
    ) async throws -> T {
        let backend = try await HTTPTestBackend.start(dropSecondRequest: dropSecondRequest)
        let proxy: ProxyFixture
        do {
            proxy = try await ProxyFixture.start(upstreamPort: backend.port) { settings in
                settings.httpResponseTimeoutMs = 10_000
                configure(&settings)
            }
        } catch {
            try? await backend.close()
            throw error
        }
        defer { Task { try? await backend.close() } }
        do {
            let result = try await body(backend, proxy)
            try await proxy.stop()
            return result
        } catch {
            try? await proxy.stop()
            throw error
        }
    }

    @Test("sequential keep-alive GETs on one client connection reuse one backend connection")
    func keepAliveReuse() async throws {
        try await withHTTPBackend { backend, proxy in
            let statuses = try await TestHTTPConnection.with(port: proxy.port) { connection in
                var statuses: [Int] = []
                for _ in 0..<5 {
                    let response = try #require(try await connection.request(.GET, "/"))
                    #expect(response.text == "hello")
                    #expect(response.head.headers["connection"].isEmpty)
                    statuses.append(response.status)
                }
                return statuses
            }
            #expect(statuses == [200, 200, 200, 200, 200])
            #expect(backend.snapshot.requests == 5)
            #expect(backend.snapshot.connections == 1)
        }
    }

    @Test("an 8 MiB POST body is streamed to the backend intact")
    func largePost() async throws {
        try await withHTTPBackend { backend, proxy in
            let partSize = 64 * 1024
            let total = 8 << 20
            // 128 distinct parts: one random block, each stamped with its index.
            var block = ByteBuffer()
            for _ in 0..<(partSize / 8) { block.writeInteger(UInt64.random(in: 0...UInt64.max)) }
            var expected = BodyDigest()
            var parts: [ByteBuffer] = []
            for index in 0..<(total / partSize) {
                var part = block
                part.setInteger(UInt64(index), at: part.readerIndex)
                expected.update(part)
                parts.append(part)
            }
            let body = parts
            let response = try await TestHTTPConnection.with(port: proxy.port) { connection in
                try await connection.request(.POST, "/sum", headers: [("Content-Length", String(total))], body: body)
            }
            #expect(response?.status == 200)
            #expect(response?.text == "bytes=\(total) sum=\(expected.value)")
        }
    }

    @Test("a chunked request is echoed in a chunked response, and a chunked download arrives whole")
    func chunkedBothWays() async throws {
        try await withHTTPBackend { _, proxy in
            let parts = (0..<20).map { ByteBuffer(string: "part \($0);") }
            let expected = parts.map { String(buffer: $0) }.joined()
            let (echo, download) = try await TestHTTPConnection.with(port: proxy.port) { connection in
                let echo = try await connection.request(
                    .POST,
                    "/echo",
                    headers: [("Transfer-Encoding", "chunked")],
                    body: parts
                )
                let download = try await connection.request(.GET, "/stream/1000000")
                return (echo, download)
            }
            let echoed = try #require(echo)
            #expect(echoed.status == 200)
            #expect(echoed.text == expected)
            #expect(echoed.head.headers["transfer-encoding"] == ["chunked"])
            let streamed = try #require(download)
            #expect(streamed.body.readableBytes == 1_000_000)
            #expect(streamed.body == HTTPTestBackend.streamBytes(1_000_000), "the download differs")
        }
    }

    @Test("hop-by-hop fields are removed both ways; X-Forwarded-* and Forwarded are added; Host is kept")
    func hopByHopAndForwarded() async throws {
        try await withHTTPBackend { _, proxy in
            let response = try await TestHTTPConnection.with(port: proxy.port) { connection in
                try await connection.request(
                    .GET,
                    "/headers",
                    headers: [
                        ("Connection", "keep-alive, X-Drop-Me"), ("X-Drop-Me", "secret"),
                        ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"), ("TE", "trailers"),
                        ("X-End-To-End", "kept"),
                    ]
                )
            }
            let answer = try #require(response)
            let lines = Set(answer.text.split(separator: "\n").map { $0.lowercased() })
            let names = Set(lines.compactMap { $0.split(separator: ":").first.map(String.init) })
            for dropped in ["x-drop-me", "keep-alive", "proxy-connection", "te", "connection"] {
                #expect(!names.contains(dropped), "\(dropped) reached the backend")
            }
            #expect(lines.contains("host: proxy.test"))
            #expect(lines.contains("x-end-to-end: kept"))
            #expect(lines.contains("x-forwarded-for: 127.0.0.1"))
            #expect(lines.contains("x-forwarded-proto: http"))
            #expect(lines.contains("x-forwarded-host: proxy.test"))
            #expect(lines.contains(#"forwarded: for=127.0.0.1;proto=http;host="proxy.test""#))
            #expect(answer.head.headers["X-Backend-Hop"].isEmpty)
            #expect(answer.head.headers["Keep-Alive"].isEmpty)
            #expect(answer.head.headers["X-Backend-End-To-End"] == ["1"])
        }
    }

    @Test("Connection: close and HTTP/1.0 are honoured: the answer says close and the connection ends")
    func clientCloses() async throws {
        try await withHTTPBackend { _, proxy in
            let close = try await rawExchange(
                port: proxy.port,
                request: "GET / HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n"
            )
            #expect(close.hasPrefix("HTTP/1.1 200"))
            #expect(close.lowercased().contains("connection: close"))
            #expect(close.hasSuffix("hello"))
            let old = try await rawExchange(port: proxy.port, request: "GET / HTTP/1.0\r\nHost: proxy.test\r\n\r\n")
            #expect(old.hasPrefix("HTTP/1.0 200"))
            #expect(old.hasSuffix("hello"))
        }
    }

    @Test("two pipelined requests in one packet are answered in order")
    func pipelined() async throws {
        try await withHTTPBackend { backend, proxy in
            let request =
                "GET /headers HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
            let answer = try await rawExchange(port: proxy.port, request: request)
            #expect(answer.components(separatedBy: "HTTP/1.1 200").count == 3)
            #expect(answer.hasSuffix("hello"))
            #expect(backend.snapshot.heads.map(\.uri) == ["/headers", "/"])
        }
    }

    @Test("a backend that is down is answered 502")
    func backendDown() async throws {
        let refused = try RefusedPort()
        let proxy = try await ProxyFixture.start(upstreamPort: refused.port)
        defer { Task { try? await proxy.stop() } }
        let answer = try await rawExchange(port: proxy.port, request: "GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        #expect(answer.hasPrefix("HTTP/1.1 502"))
        #expect(answer.lowercased().contains("connection: close"))
        withExtendedLifetime(refused) {}
    }

    @Test("a backend that never answers is answered 504 after the response timeout")
    func backendSilent() async throws {
        // 1 s: the first request's whole exchange must fit in it even on a loaded machine.
        try await withHTTPBackend(proxy: { $0.httpResponseTimeoutMs = 1000 }) { backend, proxy in
            try await TestHTTPConnection.with(port: proxy.port) { connection in
                // The first answer leaves a pooled backend connection, so the silent request
                // needs no connect: the timeout can only be the wait for the response head (a
                // connect that outlasts it on a loaded machine would be a 502).
                #expect(try await connection.request(.GET, "/")?.status == 200)
                let answer = try await connection.request(.GET, "/never")
                #expect(answer?.status == 504)
                #expect(answer?.head.headers.first(name: "connection")?.lowercased() == "close")
            }
            #expect(backend.snapshot.connections == 1, "the silent request went over the pooled connection")
            // The backend connection of a timed-out exchange is closed, not pooled.
            try await backend.waitUntil { $0.closed == 1 }
        }
    }

    @Test("a request head that trickles in is answered 408")
    func slowHead() async throws {
        // The idle timeout is long: only the header timeout, which starts at the proxy's read of
        // the first byte, can end this connection (closing it unread would reset it instead).
        try await withHTTPBackend(proxy: {
            $0.httpHeaderTimeoutMs = 200
            $0.httpIdleTimeoutMs = 60_000
        }) { backend, proxy in
            try await RawConnection.with(port: proxy.port) { connection in
                try await connection.send("GET / HTTP/1.1\r\nHost: pro")
                let answer = try await connection.read(until: "\r\n\r\n")
                #expect(answer.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
                await #expect(throws: RawConnection.ConnectionClosed.self) {
                    _ = try await connection.read(until: "never sent")
                }
            }
            #expect(backend.snapshot.connections == 0)
        }
    }

    @Test("a client that sends nothing is closed without a word at the idle timeout")
    func silentClient() async throws {
        try await withHTTPBackend(proxy: {
            $0.httpHeaderTimeoutMs = 60_000
            $0.httpIdleTimeoutMs = 200
        }) { backend, proxy in
            let silent = try await RawConnection.with(port: proxy.port) { connection in
                do {
                    return try await connection.read(until: "HTTP/1.1")
                } catch is RawConnection.ConnectionClosed {
                    return "closed"
                }
            }
            #expect(silent == "closed")
            #expect(backend.snapshot.connections == 0)
        }
    }

    @Test("a shutdown closes idle connections at once and lets a response in flight finish")
    func drain() async throws {
        try await withHTTPBackend { _, proxy in
            // A connection that has sent nothing waits for a request head: idle.
            let idle = try await ClientBootstrap(group: testGroup).connect(host: "127.0.0.1", port: proxy.port).get()
            try await RawConnection.with(port: proxy.port) { busy in
                try await busy.send(
                    "POST /echo HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
                )
                _ = try await busy.read(until: "first")
                async let shutdown: Void = proxy.server.shutdown(drain: .seconds(60), grace: .seconds(1))
                // The proxy closing the idle connection shows that the drain has begun.
                try await idle.closeFuture.get()
                try await busy.send("4\r\nlast\r\n0\r\n\r\n")
                _ = try await busy.read(until: "last")
                _ = try await busy.read(until: "0\r\n\r\n")
                await #expect(throws: RawConnection.ConnectionClosed.self) {
                    _ = try await busy.read(until: "never sent")
                }
                try await shutdown
            }
            #expect(proxy.server.environment.httpConnections.count == 0)
        }
    }

    @Test("Content-Length with Transfer-Encoding is answered 400 and never reaches the backend")
    func smuggling() async throws {
        try await withHTTPBackend { backend, proxy in
            let request =
                "POST /sum HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: proxy.test\r\n\r\n"
            let answer = try await rawExchange(port: proxy.port, request: request)
            #expect(answer.hasPrefix("HTTP/1.1 400"))
            #expect(answer.components(separatedBy: "HTTP/1.1").count == 2)
            #expect(backend.snapshot.requests == 0)
        }
    }

    @Test("a chunked body with a bad chunk size is answered 400 before any response, and closed")
    func badChunkSize() async throws {
        try await withHTTPBackend { _, proxy in
            let request =
                "POST /sum HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "4\r\nabcd\r\nZZ\r\nnope\r\n0\r\n\r\n"
            let answer = try await rawExchange(port: proxy.port, request: request)
            #expect(answer.hasPrefix("HTTP/1.1 400"), "\(answer)")
            #expect(answer.components(separatedBy: "HTTP/1.1").count == 2)
            #expect(answer.contains("Connection: close"))
        }
    }

    @Test("an HTTP/1.0 request without Host is still forwarded")
    func http10WithoutHost() async throws {
        try await withHTTPBackend { _, proxy in
            let answer = try await rawExchange(port: proxy.port, request: "GET /headers HTTP/1.0\r\n\r\n")
            #expect(answer.hasPrefix("HTTP/1.1 200") || answer.hasPrefix("HTTP/1.0 200"), "\(answer)")
        }
    }

    @Test("a pooled connection the backend closes as it is reused is retried on a fresh one")
    func staleConnectionRetried() async throws {
        try await withHTTPBackend(dropSecondRequest: true) { backend, proxy in
            let statuses = try await TestHTTPConnection.with(port: proxy.port) { connection in
                [
                    try await connection.request(.GET, "/")?.status,
                    try await connection.request(.GET, "/")?.status,
                ]
            }
            #expect(statuses == [200, 200])
            #expect(backend.snapshot.connections == 2)
            #expect(backend.snapshot.requests == 3)
        }
    }

    @Test("a body already sent on a connection that then fails is not replayed: 502")
    func staleConnectionWithBodyNotRetried() async throws {
        try await withHTTPBackend(dropSecondRequest: true) { backend, proxy in
            try await RawConnection.with(port: proxy.port) { connection in
                try await connection.send("GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
                #expect(try await connection.read(until: "hello").hasPrefix("HTTP/1.1 200 OK\r\n"))
                // Head and body in one packet: the proxy reads them together and writes both to
                // the pooled connection before the backend's close can reach it. (Sent apart, the
                // close may come before any body byte went out, and then a retry is right.)
                try await connection.send(
                    "POST /sum HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\n\r\nhello"
                )
                #expect(try await connection.read(until: "\r\n").hasPrefix("HTTP/1.1 502"))
            }
            #expect(backend.snapshot.requests == 2)
        }
    }

    @Test("a client that leaves mid-request gets its backend connection closed, not pooled")
    func clientLeavesMidRequest() async throws {
        try await withHTTPBackend { backend, proxy in
            try await sendAndLeave(
                port: proxy.port,
                bytes: Array("POST /sum HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 1000000\r\n\r\nabc".utf8)
            )
            // Whether the head reached the backend or the connect was still under way, the backend
            // connection is closed: a pooled one would stay open.
            try await backend.waitUntil { $0.connections >= 1 && $0.closed == $0.connections }
        }
    }

    @Test("a WebSocket upgrade after a plain request on the same connection still works")
    func upgradeAfterPlainRequest() async throws {
        // A roomy handshake timeout: the testing profile's 100 ms is short for a loaded CI machine.
        try await withBackendAndProxy(backend: { $0.setupMs = 0 }, proxy: { $0.timing.handshakeTimeoutMs = 10_000 }) {
            _,
            proxy in
            try await RawConnection.with(port: proxy.port) { connection in
                try await connection.send("GET /plain HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
                let plain = try await connection.read(until: "rejected by the demo backend\n")
                #expect(plain.hasPrefix("HTTP/1.1 404"))
                #expect(!plain.lowercased().contains("connection: close"))
                try await connection.send(upgradeRequest())
                let upgraded = try await connection.read(until: "\r\n\r\n")
                #expect(upgraded.hasPrefix("HTTP/1.1 101"))
                let frame = WebSocketFrameWriter.frame(
                    opcode: .text,
                    payload: Array("after plain".utf8),
                    maskingKey: 0x0A0B_0C0D
                )
                try await connection.send(bytes: frame)
                let echoed = try await connection.read(until: "after plain")
                #expect(echoed.contains("after plain"))
            }
        }
    }
}
