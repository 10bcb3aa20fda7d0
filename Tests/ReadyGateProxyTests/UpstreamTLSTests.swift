import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// `https://` and `wss://` upstreams: the proxy speaks TLS to a NIO test backend, trusting
/// `READYGATE_UPSTREAM_CA`.
@Suite("TLS to the backend")
struct UpstreamTLSTests {
    /// A backend that upgrades, says it is ready, and echoes text frames until a close.
    static let echoScript: @Sendable (Int, inout ScriptedConnection) async throws -> Void = { _, connection in
        try await connection.acceptUpgrade()
        try await connection.write(serverFrame(.text, Array(#"{"type":"connection_ready"}"#.utf8)))
        while let frame = try await connection.readFrame() {
            if frame.opcode == 0x8 {
                try await connection.write(serverFrame(.close, frame.payload))
                return
            }
            if frame.opcode == 0x1 { try await connection.write(serverFrame(.text, frame.payload)) }
        }
    }

    /// A backend that answers one plain HTTP request with `200 hello`.
    static let httpScript: @Sendable (Int, inout ScriptedConnection) async throws -> Void = { _, connection in
        guard let head = try await connection.readHead() else { return }
        let body = "hello over tls: " + (head.split(separator: " ").dropFirst().first.map(String.init) ?? "")
        try await connection.write("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body)
        _ = try await connection.readHead()
    }

    func withTLSBackend<T>(
        files: TLSFiles,
        host: String = "localhost",
        script: @escaping @Sendable (Int, inout ScriptedConnection) async throws -> Void,
        proxy configure: @escaping (inout ReadyGateSettings) -> Void = { _ in },
        _ body: (TLSScriptedBackend, ProxyFixture) async throws -> T
    ) async throws -> T {
        let pki = try TestPKI.get()
        let backend = try await TLSScriptedBackend(files: files, script: script)
        let target = UpstreamTarget(host: host, port: backend.port, usesTLS: true)
        let proxy: ProxyFixture
        do {
            let upstream = try UpstreamTLS(target: target, caPath: pki.caCertificate)
            proxy = try await ProxyFixture.startTLS(upstreamPort: backend.port, server: nil, upstream: upstream) {
                settings in
                settings.upstream = target
                settings.readyGate = .message
                configure(&settings)
            }
        } catch {
            await backend.close()
            throw error
        }
        do {
            let result = try await body(backend, proxy)
            try await proxy.stop()
            await backend.close()
            return result
        } catch {
            try? await proxy.stop()
            await backend.close()
            throw error
        }
    }

    @Test("wss backend: early frames are delivered over TLS; the backend sees SNI localhost")
    func webSocket() async throws {
        let pki = try TestPKI.get()
        try await withTLSBackend(files: pki.server, script: Self.echoScript) { backend, proxy in
            let echoes = try await withTimeout(seconds: 20) {
                try await RawClient.session(port: proxy.port) { client in
                    try await client.write(["one", "two"].flatMap { clientFrame(.text, Array($0.utf8)) })
                    var echoes: [String] = []
                    while echoes.count < 2 {
                        let frame = try await client.expectFrame()
                        if frame.opcode == 0x1, !frame.text.contains("connection_ready") { echoes.append(frame.text) }
                    }
                    try await client.write(clientFrame(.close, closePayload(1000)))
                    #expect(try await client.expectFrame().closeCode == 1000)
                    return echoes
                }
            }
            #expect(echoes == ["one", "two"])
            #expect(backend.serverNames == ["localhost"])
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.earlyFrames == 2 && record.connectAttempts == 1, "\(record)")
        }
    }

    @Test("a client that leaves mid-session: the proxy closes the TLS backend connection and the session ends")
    func clientLeaves() async throws {
        let pki = try TestPKI.get()
        try await withTLSBackend(files: pki.server, script: Self.echoScript) { _, proxy in
            // Timed from the client's leaving, not from the start: the TLS handshakes before it
            // are slow on a loaded machine, the close after it is not (without TLSCloser it waits
            // out NIOSSL's 5 s shutdown timeout).
            let clock = ContinuousClock()
            let left = NIOLockedValueBox(clock.now)
            try await withTimeout(seconds: 20) {
                try await RawClient.session(port: proxy.port) { client in
                    try await client.write(clientFrame(.text, Array("hi".utf8)))
                    while try await client.expectFrame().text != "hi" {}
                    left.withLockedValue { $0 = clock.now }
                    try await client.drop()
                }
            }
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.closer == .client, "\(record)")
            #expect(clock.now - left.withLockedValue { $0 } < .seconds(4), "not held by a TLS shutdown timeout (5 s)")
        }
    }

    @Test("a backend that never answers the close: the proxy closes its TLS connection after the linger")
    func backendIgnoresClose() async throws {
        let pki = try TestPKI.get()
        let script: @Sendable (Int, inout ScriptedConnection) async throws -> Void = { _, connection in
            try await connection.acceptUpgrade()
            try await connection.write(serverFrame(.text, Array(#"{"type":"connection_ready"}"#.utf8)))
            while let frame = try await connection.readFrame() {
                if frame.opcode == 0x1 { try await connection.write(serverFrame(.text, frame.payload)) }
            }
        }
        try await withTLSBackend(files: pki.server, script: script, proxy: { $0.closeLingerMs = 100 }) { _, proxy in
            let clock = ContinuousClock()
            let closed = NIOLockedValueBox(clock.now)
            try await withTimeout(seconds: 20) {
                try await RawClient.session(port: proxy.port) { client in
                    try await client.write(clientFrame(.text, Array("hi".utf8)))
                    while try await client.expectFrame().text != "hi" {}
                    closed.withLockedValue { $0 = clock.now }
                    try await client.write(clientFrame(.close, closePayload(1000)))
                    _ = try await client.readAll()
                }
            }
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.clientSentClose, "\(record)")
            // NIOSSL's shutdown timeout is 5 s; the linger is 100 ms. Timed from the close only.
            #expect(
                clock.now - closed.withLockedValue { $0 } < .seconds(4),
                "the backend connection closed without the TLS shutdown timeout"
            )
        }
    }

    @Test("https backend by IP address: verified against the certificate's IP, no SNI sent")
    func byAddress() async throws {
        let pki = try TestPKI.get()
        try await withTLSBackend(files: pki.server, host: "127.0.0.1", script: Self.echoScript) { backend, proxy in
            let echoed = await earlyClientSession(port: proxy.port, message: "by address")
            #expect(echoed == .echoed)
            #expect(backend.serverNames == [nil])
        }
    }

    @Test("plain HTTP to an https backend goes through the pool over TLS")
    func plainHTTP() async throws {
        let pki = try TestPKI.get()
        try await withTLSBackend(files: pki.server, script: Self.httpScript) { backend, proxy in
            let answer = try await rawExchange(
                port: proxy.port,
                request: "GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
            #expect(answer.hasSuffix("hello over tls: /tls"), "\(answer)")
            #expect(backend.serverNames == ["localhost"])
        }
    }

    @Test("an untrusted backend certificate fails the upgrade as a refused connect does: retried, then the same answer")
    func untrustedWebSocket() async throws {
        let pki = try TestPKI.get()
        let configure: (inout ReadyGateSettings) -> Void = { settings in
            settings.acceptMode = .upstream
            // Long enough for a second attempt when a TLS handshake is slow on a loaded machine.
            settings.timing.handshakeTimeoutMs = 3_000
        }
        let refused = try RefusedPort()
        let plain = try await ProxyFixture.start(upstreamPort: refused.port, configure)
        let refusedAnswer = try await rawExchange(port: plain.port, request: upgradeRequest())
        try await plain.stop()
        try await withTLSBackend(files: pki.untrusted, script: Self.echoScript, proxy: configure) { backend, proxy in
            let answer = try await rawExchange(port: proxy.port, request: upgradeRequest())
            #expect(answer.hasPrefix("HTTP/1.1 50"), "\(answer)")
            #expect(answer.prefix(12) == refusedAnswer.prefix(12), "\(answer) vs \(refusedAnswer)")
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.connectAttempts >= 2, "a failed handshake is retried like a refused connect: \(record)")
            #expect(backend.serverNames.count >= 2)
        }
    }

    @Test("an untrusted backend certificate: a plain HTTP request is answered 502")
    func untrustedHTTP() async throws {
        let pki = try TestPKI.get()
        try await withTLSBackend(files: pki.untrusted, script: Self.httpScript) { _, proxy in
            let answer = try await rawExchange(
                port: proxy.port,
                request: "GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            #expect(answer.hasPrefix("HTTP/1.1 502"), "\(answer)")
        }
    }
}
