import NIOCore
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// How a backend connection is opened: an IP literal straight to its address, a name through
/// NIO's resolver.
@Suite("Upstream connect")
struct UpstreamConnectTests {
    @Test(
        "IP literals become socket addresses",
        arguments: [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("10.1.2.3", "10.1.2.3"), ("fe80::1", "fe80::1")]
    )
    func literal(host: String, address: String) throws {
        let target = UpstreamTarget(host: host, port: 8000, usesTLS: false)
        let resolved = try #require(target.literalAddress)
        #expect(resolved.ipAddress == address)
        #expect(resolved.port == 8000)
    }

    @Test(
        "names, and what only looks like an address, go to the resolver",
        arguments: ["localhost", "cafe", "1.2.3", "backend.internal", "::g", ""]
    )
    func name(host: String) {
        #expect(UpstreamTarget(host: host, port: 80, usesTLS: false).literalAddress == nil)
    }

    @Test("a session reaches a backend named `localhost` through the resolver")
    func sessionToNamedBackend() async throws {
        try await withBackendAndProxy(
            backend: { $0.setupMs = 0 },
            proxy: { settings in
                settings.upstream.host = "localhost"
                settings.readyGate = .message
            }
        ) { backend, proxy in
            #expect(await earlyClientSession(port: proxy.port, message: "by name") == .echoed)
            let records = try await proxy.sessions.waitFor(1)
            #expect(records.first?.connectAttempts == 1)
        }
    }
}
