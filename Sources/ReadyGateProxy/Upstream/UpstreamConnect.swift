import NIOCore
import NIOPosix
import ReadyGateCore

extension ClientBootstrap {
    /// Connects to the backend: straight to its address when the configured host is an IP literal,
    /// else by name through NIO's resolver (a `getaddrinfo` on a background thread and Happy
    /// Eyeballs, for every connection). Sessions and backend connections open often enough for the
    /// lookup to cost: it was about a tenth of a session's set-up CPU on loopback.
    func connect(to target: UpstreamTarget) -> EventLoopFuture<any Channel> {
        if let address = target.literalAddress { return connect(to: address) }
        return connect(host: target.host, port: target.port)
    }
}

extension UpstreamTarget {
    /// The socket address when `host` is an IPv4 or IPv6 literal; nil for a name.
    var literalAddress: SocketAddress? {
        let maybeLiteral = host.utf8.allSatisfy { byte in
            byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20)
        }
        guard maybeLiteral else { return nil }
        return try? SocketAddress(ipAddress: host, port: port)
    }
}
