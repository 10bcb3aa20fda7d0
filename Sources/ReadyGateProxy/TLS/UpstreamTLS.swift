import NIOCore
import NIOSSL
import NIOTLS
import ReadyGateCore

/// TLS to an `https://` or `wss://` backend: a client context that verifies the backend's
/// certificate against the system trust store, or only against `READYGATE_UPSTREAM_CA`, and the
/// name sent as SNI and checked against the certificate (the upstream host when it is a name; an
/// IP address is checked against the certificate's IP addresses and not sent).
public struct UpstreamTLS: Sendable {
    let context: NIOSSLContext
    /// The SNI name; nil when the upstream host is an IP address.
    let serverHostname: String?

    /// Builds the context. Reads the CA file and, without one, the system trust store: call it
    /// before serving, not on an event loop.
    public init(target: UpstreamTarget, caPath: String?) throws(TLSFileError) {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        configuration.applicationProtocols = ["http/1.1"]
        if let caPath {
            let roots = try PEMFiles.certificates(variable: ReadyGateConfigKey.upstreamCA.rawValue, path: caPath)
            configuration.trustRoots = .certificates(roots)
        } else {
            configuration.trustRoots = .default
        }
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSFileError(
                variable: ReadyGateConfigKey.upstreamCA.rawValue,
                path: caPath ?? "(unset)",
                problem: "cannot make the upstream TLS context (\(error))"
            )
        }
        serverHostname = Self.isIPAddress(target.host) ? nil : target.host
    }

    /// The first handler of a backend connection.
    func makeHandler() throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: context, serverHostname: serverHostname)
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// Behind `NIOSSLClientHandler` on a backend connection until the TLS handshake is done, then
/// leaves: logs a failed handshake (rate-limited; a wrong certificate fails every attempt), and
/// for a pooled connection completes `promise` when the handshake is done, or fails it when the
/// connection errs or closes first. Every error goes on unchanged.
final class UpstreamTLSHandshakeWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any
    typealias InboundOut = Any

    private let promise: EventLoopPromise<Void>?
    private let failures: TLSHandshakeFailures?
    private var done = false

    init(promise: EventLoopPromise<Void>?, failures: TLSHandshakeFailures?) {
        self.promise = promise
        self.failures = failures
    }

    /// Puts `tls`'s client handler and a watch completing `handshake` first in a pooled backend
    /// connection's pipeline; nothing without `tls` (a plaintext upstream).
    static func addTLS(
        _ tls: UpstreamTLS?,
        handshake: EventLoopPromise<Void>?,
        failures: TLSHandshakeFailures?,
        to sync: ChannelPipeline.SynchronousOperations
    ) throws {
        guard let tls, let handshake else { return }
        try sync.addHandler(tls.makeHandler())
        try sync.addHandler(UpstreamTLSHandshakeWatch(promise: handshake, failures: failures))
    }

    /// The channel of `connect` once `handshake` is done; a failed handshake fails it (the
    /// channel is closed), and a failed connect fails the handshake too.
    static func connected(
        _ connect: EventLoopFuture<any Channel>,
        handshake: EventLoopPromise<Void>
    ) -> EventLoopFuture<any Channel> {
        connect.whenFailure { handshake.fail($0) }
        return connect.flatMap { channel in
            handshake.futureResult.map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            finish(.success(()))
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { failures?.record(reason: "\(error)", peer: context.channel.remoteAddress, on: context.eventLoop) }
        finish(.failure(error))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(ChannelError.eof))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(.failure(ChannelError.ioOnClosedChannel))
    }

    private func finish(_ result: Result<Void, any Error>) {
        guard !done else { return }
        done = true
        promise?.completeWith(result)
    }
}

@available(*, unavailable)
extension UpstreamTLSHandshakeWatch: Sendable {}
