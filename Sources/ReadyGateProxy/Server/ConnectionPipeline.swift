import NIOCore

/// What an admitted connection gets, by listener kind. The seam between the transports: TLS
/// (`TLS/`) decides by ALPN, the plaintext listener by the connection's first bytes (`HTTP2/`);
/// both end in ``ReadyGateServer/configureHTTP1(channel:environment:)`` or
/// ``HTTP2Pipeline/configure(channel:environment:)``.
enum ConnectionPipeline {
    /// Installs the handlers of a connection that the connection limit admitted.
    static func configure(channel: any Channel, environment: ProxyEnvironment) throws {
        if let tls = environment.tls.server {
            try TLSConnectionPipeline.configure(channel: channel, tls: tls, environment: environment)
        } else {
            try configurePlaintext(channel: channel, environment: environment)
        }
    }

    /// A connection past `READYGATE_MAX_CONNECTIONS`: answered `503` (over TLS on the TLS listener).
    static func configureRefused(channel: any Channel, environment: ProxyEnvironment) throws {
        if let tls = environment.tls.server {
            try TLSConnectionPipeline.configureRefused(channel: channel, tls: tls, environment: environment)
        } else {
            try ConnectionRefusalHandler.configure(channel: channel, metrics: environment.metrics)
        }
    }

    /// The plaintext listener: HTTP/1.1, or h2c with prior knowledge. The HTTP/1.1 handlers are
    /// installed at once; the ``HTTP2PrefaceSniffer`` in front of them replaces them with HTTP/2 when
    /// the connection's first bytes are the HTTP/2 preface.
    static func configurePlaintext(channel: any Channel, environment: ProxyEnvironment) throws {
        try channel.pipeline.syncOperations.addHandler(HTTP2PrefaceSniffer(environment: environment))
        try ReadyGateServer.configureHTTP1(channel: channel, environment: environment)
    }
}
