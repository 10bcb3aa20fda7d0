import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ReadyGateCore
import ReadyGateDemo
import Testing

@testable import ReadyGateProxy

/// The TLS listener (`READYGATE_TLS_CERT`, `READYGATE_TLS_KEY`) on loopback, with a test PKI.
@Suite("TLS listener")
struct TLSListenerTests {
    /// A demo backend and a TLS proxy in front of it (message gate: the client's first frames are
    /// held until the backend's ready message).
    func withTLSProxy<T>(
        server: ServerTLS? = nil,
        proxy configure: (inout ReadyGateSettings) -> Void = { _ in },
        _ body: (DemoBackend, ProxyFixture, TestPKI) async throws -> T
    ) async throws -> T {
        let pki = try TestPKI.get()
        let tls = try server ?? ServerTLS(files: pki.server)
        var backendConfiguration = DemoBackendConfiguration()
        backendConfiguration.setupMs = 50
        let backend = try await DemoBackend.start(configuration: backendConfiguration, group: testGroup)
        let proxy: ProxyFixture
        do {
            proxy = try await ProxyFixture.startTLS(upstreamPort: backend.port, server: tls) { settings in
                settings.readyGate = .message
                configure(&settings)
            }
        } catch {
            try? await backend.close()
            throw error
        }
        do {
            let result = try await body(backend, proxy, pki)
            try await proxy.stop()
            try await backend.close()
            return result
        } catch {
            try? await proxy.stop()
            try? await backend.close()
            throw error
        }
    }

    /// A wss session whose three frames are sent right after the 101; returns their echoes.
    /// `closing` is set to the moment the client begins its close handshake.
    static func earlyFramesSession(
        port: Int,
        context: NIOSSLContext,
        tag: String,
        closing: NIOLockedValueBox<ContinuousClock.Instant>? = nil
    ) async throws -> [String] {
        try await withTimeout(seconds: 20) {
            try await TLSTestClient.session(port: port, context: context) { client in
                let messages = (1...3).map { "\(tag)-\($0)" }
                try await client.write(messages.flatMap { clientFrame(.text, Array($0.utf8)) })
                var echoes: [String] = []
                while echoes.count < messages.count {
                    let frame = try await client.expectFrame()
                    if frame.opcode == 0x1, frame.text.hasPrefix(tag) { echoes.append(frame.text) }
                }
                closing?.withLockedValue { $0 = ContinuousClock.now }
                try await client.write(clientFrame(.close, closePayload(1000)))
                _ = try await client.readAll()
                return echoes
            }
        }
    }

    @Test("wss: frames sent before the backend is ready are all delivered, in order")
    func webSocketOverTLS() async throws {
        try await withTLSProxy { backend, proxy, pki in
            let context = try TLSTestClient.context(pki: pki)
            let closing = NIOLockedValueBox(ContinuousClock.now)
            let echoes = try await Self.earlyFramesSession(
                port: proxy.port,
                context: context,
                tag: "early",
                closing: closing
            )
            #expect(echoes == ["early-1", "early-2", "early-3"])
            let records = try await proxy.sessions.waitFor(1)
            // NIOSSL's shutdown timeout is 5 s: the close handshake and the session's end must not
            // wait for it (timed from the client's close frame, not the slow TLS handshake before).
            #expect(
                ContinuousClock.now - closing.withLockedValue { $0 } < .seconds(4),
                "the client connection closed without the TLS shutdown timeout"
            )
            #expect(records.first?.earlyFrames == 3, "\(records)")
            #expect(backend.counters.requests.first?.headers["X-Forwarded-Proto"] == ["https"])
        }
    }

    @Test("the listener's ALPN prefers h2, and takes http/1.1 when only that is offered")
    func alpn() async throws {
        try await withTLSProxy { _, proxy, pki in
            for (offered, expected) in [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (["h2"], "h2")] {
                let context = try TLSTestClient.context(pki: pki, alpn: offered)
                let (channel, handshake) = try await TLSTestClient.connect(port: proxy.port, context: context)
                let negotiated = try await channel.executeThenClose { _, _ in try await handshake.get() }
                #expect(negotiated == expected, "offered \(offered)")
            }
        }
    }

    /// `body` with an ``HTTPTestBackend`` and a TLS proxy in front of it, both stopped afterwards.
    func withHTTPBackendAndTLSProxy(
        _ body: (HTTPTestBackend, ProxyFixture, TestPKI) async throws -> Void
    ) async throws {
        let pki = try TestPKI.get()
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.startTLS(upstreamPort: backend.port, server: ServerTLS(files: pki.server))
        do {
            try await body(backend, proxy, pki)
        } catch {
            try? await proxy.stop()
            try? await backend.close()
            throw error
        }
        try await proxy.stop()
        try await backend.close()
    }

    @Test("plain HTTP over TLS is forwarded to the backend")
    func plainHTTPOverTLS() async throws {
        try await withHTTPBackendAndTLSProxy { backend, proxy, pki in
            let context = try TLSTestClient.context(pki: pki)
            let answer = try await TLSTestClient.exchange(
                port: proxy.port,
                context: context,
                request: "GET /plain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
            #expect(answer.hasSuffix("hello"), "\(answer)")
            #expect(backend.snapshot.heads.map(\.uri) == ["/plain"])
            let forwarded = backend.snapshot.heads.first?.headers
            #expect(forwarded?["X-Forwarded-Proto"] == ["https"])
            #expect(forwarded?["Forwarded"].first?.contains(";proto=https") == true, "\(String(describing: forwarded))")
        }
    }

    @Test("a client that ends its output (close_notify) after its request still gets the answer")
    func halfClose() async throws {
        try await withHTTPBackendAndTLSProxy { backend, proxy, pki in
            let context = try TLSTestClient.context(pki: pki)
            let (channel, handshake) = try await TLSTestClient.connect(port: proxy.port, context: context)
            let answer = try await withTimeout(seconds: 20) {
                try await channel.executeThenClose { inbound, outbound in
                    _ = try await handshake.get()
                    try await outbound.write(ByteBuffer(string: "GET /half HTTP/1.1\r\nHost: localhost\r\n\r\n"))
                    try await channel.channel.close(mode: .output)
                    var collected = ByteBuffer()
                    for try await var part in inbound { collected.writeBuffer(&part) }
                    return String(buffer: collected)
                }
            }
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
            #expect(answer.hasSuffix("hello"), "\(answer)")
        }
    }

    @Test("a client without ALPN gets HTTP/1.1")
    func noALPN() async throws {
        try await withTLSProxy { _, proxy, pki in
            let context = try TLSTestClient.context(pki: pki, alpn: [])
            let echoes = try await Self.earlyFramesSession(port: proxy.port, context: context, tag: "plain")
            #expect(echoes.count == 3)
        }
    }

    @Test("plaintext sent to the TLS port: that connection is closed, counted, and others are served")
    func plaintextToTLSPort() async throws {
        try await withTLSProxy { _, proxy, pki in
            let answer = try await rawExchange(port: proxy.port, request: upgradeRequest())
            #expect(!answer.contains("HTTP/1.1"), "no HTTP answer on a TLS port: \(answer)")
            let environment = proxy.server.environment
            try await eventually { environment.connectionLimit.activeConnections == 0 }
            #expect(metricValue(environment.metrics, "readygate_tls_handshake_failures_total") == 1)
            let context = try TLSTestClient.context(pki: pki)
            #expect(try await Self.earlyFramesSession(port: proxy.port, context: context, tag: "after").count == 3)
        }
    }

    @Test("a client that closes in the middle of its hello, or never sends one, leaks no connection")
    func abortedHandshake() async throws {
        try await withTLSProxy(proxy: { $0.httpHeaderTimeoutMs = 1_000 }) { _, proxy, pki in
            let environment = proxy.server.environment
            // A client hello's record header and the start of the hello, then the end.
            let partialHello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]
            let aborted = try await RawClient.connect(port: proxy.port)
            try await aborted.executeThenClose { _, outbound in
                try await outbound.write(ByteBuffer(bytes: partialHello))
            }
            try await eventually { environment.connectionLimit.activeConnections == 0 }
            // Nothing at all: the proxy closes it after the handshake deadline.
            let silent = try await rawExchange(port: proxy.port, bytes: [])
            #expect(silent.isEmpty)
            try await eventually { environment.connectionLimit.activeConnections == 0 }
            #expect(metricValue(environment.metrics, "readygate_tls_handshake_failures_total") == 2)
            let context = try TLSTestClient.context(pki: pki)
            #expect(try await Self.earlyFramesSession(port: proxy.port, context: context, tag: "next").count == 3)
            try await eventually { environment.connectionLimit.activeConnections == 0 }
        }
    }

    @Test("past READYGATE_MAX_CONNECTIONS a TLS client gets its 503 over TLS")
    func refusedOverTLS() async throws {
        try await withTLSProxy(proxy: { $0.maxConnections = 1 }) { _, proxy, pki in
            let context = try TLSTestClient.context(pki: pki)
            let answer = try await withTimeout(seconds: 20) {
                try await TLSTestClient.session(port: proxy.port, context: context) { _ in
                    try await TLSTestClient.exchange(
                        port: proxy.port,
                        context: context,
                        request: "GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    )
                }
            }
            #expect(answer.hasPrefix("HTTP/1.1 503"), "\(answer)")
            #expect(answer.hasSuffix(ConnectionRefusalHandler.body), "\(answer)")
        }
    }

    @Test("a client sending another SNI name gets the one certificate and is served")
    func otherSNI() async throws {
        try await withTLSProxy { _, proxy, pki in
            let context = try TLSTestClient.context(pki: pki, verification: .noHostnameVerification)
            let serial = try await Self.peerSerial(port: proxy.port, context: context, serverHostname: "other.example")
            #expect(serial == [2])
            let (channel, handshake) = try await TLSTestClient.connect(
                port: proxy.port,
                context: context,
                serverHostname: "other.example"
            )
            let answer = try await channel.executeThenClose { inbound, outbound in
                _ = try await handshake.get()
                try await outbound.write(
                    ByteBuffer(string: "GET /x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")
                )
                var collected = ByteBuffer()
                for try await var part in inbound { collected.writeBuffer(&part) }
                return String(buffer: collected)
            }
            #expect(answer.hasPrefix("HTTP/1.1 404"), "the demo backend's answer: \(answer)")
        }
    }

    @Test("reload: new connections get the new certificate, an open session runs on")
    func reload() async throws {
        let pki = try TestPKI.get()
        let files = try pki.copyOfServer(prefix: "reload-\(UInt32.random(in: 0...UInt32.max))")
        let server = try ServerTLS(files: files)
        try await withTLSProxy(server: server) { _, proxy, pki in
            let context = try TLSTestClient.context(pki: pki)
            #expect(try await Self.peerSerial(port: proxy.port, context: context) == [2])
            let environment = proxy.server.environment
            let echoed = try await withTimeout(seconds: 20) {
                try await TLSTestClient.session(port: proxy.port, context: context) { client in
                    try await client.write(clientFrame(.text, Array("before".utf8)))
                    try await Self.readEcho("before", client: &client)
                    try pki.replace(files, with: pki.renewed)
                    #expect(environment.reloadTLS())
                    #expect(try await Self.peerSerial(port: proxy.port, context: context) == [3])
                    try await client.write(clientFrame(.text, Array("after".utf8)))
                    try await Self.readEcho("after", client: &client)
                    try await client.write(clientFrame(.close, closePayload(1000)))
                    _ = try await client.readAll()
                    return true
                }
            }
            #expect(echoed)
            #expect(metricValue(environment.metrics, #"readygate_tls_reloads_total{result="ok"}"#) == 1)
        }
    }

    @Test("a reload from bad files keeps the current certificate and counts the failure")
    func failedReload() async throws {
        let pki = try TestPKI.get()
        let files = try pki.copyOfServer(prefix: "bad-reload-\(UInt32.random(in: 0...UInt32.max))")
        let server = try ServerTLS(files: files)
        try await withTLSProxy(server: server) { _, proxy, pki in
            _ = try pki.write(URL(fileURLWithPath: files.certificatePath).lastPathComponent, "not a certificate\n")
            let environment = proxy.server.environment
            #expect(!environment.reloadTLS())
            #expect(metricValue(environment.metrics, #"readygate_tls_reloads_total{result="failed"}"#) == 1)
            let context = try TLSTestClient.context(pki: pki)
            #expect(try await Self.peerSerial(port: proxy.port, context: context) == [2])
        }
    }

    static func readEcho(_ text: String, client: inout ScriptedConnection) async throws {
        while true {
            let frame = try await client.expectFrame()
            if frame.opcode == 0x1, frame.text == text { return }
        }
    }

    /// The serial number of the certificate a new connection gets.
    static func peerSerial(port: Int, context: NIOSSLContext, serverHostname: String = "localhost") async throws
        -> [UInt8]?
    {
        let (channel, handshake) = try await TLSTestClient.connect(
            port: port,
            context: context,
            serverHostname: serverHostname
        )
        return try await channel.executeThenClose { _, _ in
            _ = try await handshake.get()
            return try await channel.channel.nioSSL_peerCertificate().get()?.serialNumber
        }
    }
}

/// Loading the listener's and the backend's TLS files: every bad file is a precise error.
@Suite("TLS files")
struct TLSFileTests {
    @Test("good files load")
    func good() throws {
        let pki = try TestPKI.get()
        _ = try ServerTLS(files: pki.server)
        _ = try UpstreamTLS(
            target: UpstreamTarget(host: "localhost", port: 1, usesTLS: true),
            caPath: pki.caCertificate
        )
    }

    @Test("a missing certificate file names READYGATE_TLS_CERT and the path")
    func missingCertificate() throws {
        let pki = try TestPKI.get()
        let files = TLSFiles(certificatePath: pki.path("absent.pem"), keyPath: pki.server.keyPath)
        #expect(
            throws: TLSFileError(variable: "READYGATE_TLS_CERT", path: files.certificatePath, problem: "no such file")
        ) {
            try ServerTLS(files: files)
        }
    }

    @Test("a missing key file names READYGATE_TLS_KEY")
    func missingKey() throws {
        let pki = try TestPKI.get()
        let files = TLSFiles(certificatePath: pki.server.certificatePath, keyPath: pki.path("absent.key"))
        #expect(throws: TLSFileError(variable: "READYGATE_TLS_KEY", path: files.keyPath, problem: "no such file")) {
            try ServerTLS(files: files)
        }
    }

    @Test("a file that is not PEM, or has no certificate, is refused")
    func notPEM() throws {
        let pki = try TestPKI.get()
        let garbage = try pki.write("garbage.pem", "hello\n")
        for files in [
            TLSFiles(certificatePath: garbage, keyPath: pki.server.keyPath),
            TLSFiles(certificatePath: pki.server.keyPath, keyPath: pki.server.keyPath),
        ] {
            do {
                _ = try ServerTLS(files: files)
                Issue.record("expected an error for \(files)")
            } catch {
                #expect(error.variable == "READYGATE_TLS_CERT" && error.path == files.certificatePath)
                #expect(error.problem.contains("PEM certificate"), "\(error)")
            }
        }
        do {
            _ = try ServerTLS(files: TLSFiles(certificatePath: pki.server.certificatePath, keyPath: garbage))
            Issue.record("expected an error")
        } catch {
            #expect(error.variable == "READYGATE_TLS_KEY" && error.path == garbage)
            #expect(error.problem.contains("PEM private key"), "\(error)")
        }
    }

    @Test("a key that does not belong to the certificate is refused, naming both files")
    func mismatchedKey() throws {
        let pki = try TestPKI.get()
        let files = TLSFiles(certificatePath: pki.server.certificatePath, keyPath: pki.renewed.keyPath)
        do {
            _ = try ServerTLS(files: files)
            Issue.record("expected an error")
        } catch {
            #expect(error.variable == "READYGATE_TLS_KEY" && error.path == files.keyPath)
            #expect(error.problem.contains("does not match"), "\(error)")
            #expect(error.description.contains(files.certificatePath))
        }
    }

    @Test("a bad READYGATE_UPSTREAM_CA is refused")
    func badUpstreamCA() throws {
        let pki = try TestPKI.get()
        let target = UpstreamTarget(host: "backend.internal", port: 443, usesTLS: true)
        #expect(
            throws: TLSFileError(
                variable: "READYGATE_UPSTREAM_CA",
                path: pki.path("absent-ca.pem"),
                problem: "no such file"
            )
        ) {
            try UpstreamTLS(target: target, caPath: pki.path("absent-ca.pem"))
        }
        let garbage = try pki.write("garbage-ca.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        #expect(throws: TLSFileError.self) { try UpstreamTLS(target: target, caPath: garbage) }
    }

    @Test("SNI: a host name is sent, an IP address is not")
    func serverName() throws {
        let pki = try TestPKI.get()
        let named = try UpstreamTLS(
            target: UpstreamTarget(host: "localhost", port: 1, usesTLS: true),
            caPath: pki.caCertificate
        )
        #expect(named.serverHostname == "localhost")
        for address in ["127.0.0.1", "::1"] {
            let byAddress = try UpstreamTLS(
                target: UpstreamTarget(host: address, port: 1, usesTLS: true),
                caPath: pki.caCertificate
            )
            #expect(byAddress.serverHostname == nil)
        }
    }
}
