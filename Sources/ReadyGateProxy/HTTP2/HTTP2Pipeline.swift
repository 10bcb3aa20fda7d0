import NIOCore

/// HTTP/2 on a connection (h2 by ALPN, h2c with prior knowledge). Not built yet.
enum HTTP2Pipeline {
    struct Unsupported: Error {}

    static func configure(channel: any Channel, environment: ProxyEnvironment) throws {
        throw Unsupported()
    }
}
