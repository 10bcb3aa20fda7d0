import Logging
import NIOCore
import NIOEmbedded
import NIOSSL
import NIOTLS
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// The TLS listener's own handlers on `EmbeddedChannel`s: the handshake watch (its log, its
/// deadline) and the routing by ALPN.
@Suite("TLS handlers on EmbeddedChannels")
struct EmbeddedTLSHandlerTests {
    /// An active channel on `loop` with a ``TLSHandshakeWatch``.
    static func watchedChannel(
        loop: EmbeddedEventLoop,
        failures: TLSHandshakeFailures,
        timeout: TimeAmount = .seconds(5)
    ) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(TLSHandshakeWatch(timeout: timeout, failures: failures))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test("failed handshakes: counted each, logged once a second at most with how many")
    func failuresLogged() throws {
        let log = CapturedLog()
        let metrics = ProxyMetrics()
        let failures = TLSHandshakeFailures(event: "tls_handshake_failed", logger: log.logger) {
            metrics.tlsHandshakeFailed()
        }
        let loop = EmbeddedEventLoop()
        // Finished at the end only: finishing an EmbeddedChannel runs its loop's scheduled tasks.
        var channels: [EmbeddedChannel] = []
        defer { for channel in channels { _ = try? channel.finish() } }
        for _ in 0..<3 {
            let channel = try Self.watchedChannel(loop: loop, failures: failures)
            channels.append(channel)
            channel.pipeline.fireErrorCaught(NIOSSLError.handshakeFailed(.sslError([])))
            #expect(throws: NIOSSLError.self) { try channel.throwIfErrorCaught() }
        }
        #expect(log.lines("tls_handshake_failed").map { $0["failures"] } == ["1"])
        loop.advanceTime(by: .seconds(1))
        #expect(log.lines("tls_handshake_failed").map { $0["failures"] } == ["1", "2"])
        #expect(log.lines("tls_handshake_failed").last?["last_error"]?.description.contains("handshakeFailed") == true)
        #expect(metricValue(metrics, "readygate_tls_handshake_failures_total") == 3)
    }

    @Test("a handshake not done in time closes the connection; a done one removes the watch")
    func deadline() throws {
        let log = CapturedLog()
        let failures = TLSHandshakeFailures(event: "tls_handshake_failed", logger: log.logger)
        let loop = EmbeddedEventLoop()
        let slow = try Self.watchedChannel(loop: loop, failures: failures, timeout: .milliseconds(300))
        let done = try Self.watchedChannel(loop: loop, failures: failures, timeout: .milliseconds(300))
        done.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: "http/1.1"))
        #expect(throws: (any Error).self) { try done.pipeline.syncOperations.handler(type: TLSHandshakeWatch.self) }
        loop.advanceTime(by: .milliseconds(300))
        #expect(!slow.isActive)
        #expect(done.isActive)
        let line = log.lines("tls_handshake_failed")
        #expect(line.count == 1 && line[0]["last_error"]?.description.contains("not done within 300 ms") == true)
        _ = try? done.finish()
    }

    @Test("ALPN: http/1.1 and no ALPN get the HTTP/1.1 handlers; h2 never does, and a failing h2 closes")
    func routing() throws {
        let log = CapturedLog()
        let environment = ProxyEnvironment(settings: ReadyGateSettings(), logger: log.logger)
        for result in [ALPNResult.negotiated("http/1.1"), .fallback] {
            let channel = EmbeddedChannel()
            try TLSConnectionPipeline.configureNegotiated(result, channel: channel, environment: environment)
            // The fast path's one handler (the default pools) or the NIO-codec path's entry handler.
            let sync = channel.pipeline.syncOperations
            #expect(
                (try? sync.handler(type: FastHTTP1Handler.self)) != nil
                    || (try? sync.handler(type: HTTPEntryHandler.self)) != nil
            )
            _ = try? channel.finish()
        }
        let h2 = EmbeddedChannel()
        try h2.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try TLSConnectionPipeline.configureNegotiated(.negotiated("h2"), channel: h2, environment: environment)
        #expect(throws: (any Error).self) { try h2.pipeline.syncOperations.handler(type: HTTPEntryHandler.self) }
        #expect(throws: (any Error).self) { try h2.pipeline.syncOperations.handler(type: FastHTTP1Handler.self) }
        // While HTTP/2 is not built its pipeline throws: the connection is closed, with a log line.
        let probe = EmbeddedChannel()
        if (try? HTTP2Pipeline.configure(channel: probe, environment: environment)) == nil {
            #expect(!h2.isActive)
            #expect(log.lines("tls_alpn_h2_failed").count == 1)
        }
        _ = try? probe.finish()
        _ = try? h2.finish()
    }
}
