import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// A connection of the TLS listener: `NIOSSLServerHandler` with the context current at the accept,
/// a ``TLSHandshakeWatch``, and NIO's ALPN handler, which installs the protocol's handlers once
/// the handshake is done: HTTP/2 for `h2`, HTTP/1.1 for `http/1.1` or no ALPN.
enum TLSConnectionPipeline {
    static func configure(channel: any Channel, tls: ServerTLS, environment: ProxyEnvironment) throws {
        // Half-closure stays allowed, as on the plaintext listener (a client's close_notify is its
        // end of output); the TLSCloser keeps it from holding a close the proxy starts for 5 s.
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLServerHandler(context: tls.context))
        try sync.addHandler(TLSCloser())
        try sync.addHandler(
            TLSHandshakeWatch(
                timeout: .milliseconds(Int64(environment.settings.httpHeaderTimeoutMs)),
                failures: environment.tlsHandshakeFailures
            )
        )
        try sync.addHandler(
            ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    try configureNegotiated(result, channel: channel, environment: environment)
                }
            }
        )
    }

    /// A connection past `READYGATE_MAX_CONNECTIONS`: the handshake (bounded by the refusal's own
    /// timeout), then the `503` of ``ConnectionRefusalHandler`` over HTTP/1.1; an `h2` client is
    /// closed after the handshake (the refusal speaks HTTP/1.1 only).
    static func configureRefused(channel: any Channel, tls: ServerTLS, environment: ProxyEnvironment) throws {
        try channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: false)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLServerHandler(context: tls.context))
        try sync.addHandler(
            TLSHandshakeWatch(timeout: ConnectionRefusalHandler.timeout, failures: environment.tlsHandshakeFailures)
        )
        let metrics = environment.metrics
        try sync.addHandler(
            ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    if case .negotiated("h2") = result {
                        channel.close(promise: nil)
                    } else {
                        try ConnectionRefusalHandler.configure(channel: channel, metrics: metrics)
                    }
                }
            }
        )
    }

    /// The handlers of the negotiated protocol. A protocol the proxy cannot serve closes the
    /// connection, with a log line.
    static func configureNegotiated(_ result: ALPNResult, channel: any Channel, environment: ProxyEnvironment) throws {
        switch result {
        case .negotiated("h2"):
            do {
                try HTTP2Pipeline.configure(channel: channel, environment: environment)
            } catch {
                environment.logger.warning(
                    "tls_alpn_h2_failed",
                    metadata: ["error": "\(error)", "client": "\(channel.remoteAddress?.description ?? "-")"]
                )
                channel.close(promise: nil)
            }
        case .negotiated, .fallback:
            try ReadyGateServer.configureHTTP1(channel: channel, environment: environment)
        }
    }
}
