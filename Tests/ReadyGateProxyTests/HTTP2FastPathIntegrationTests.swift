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
}
