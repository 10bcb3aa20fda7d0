import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ReadyGateCore

/// The admin listener (DESIGN §6, `READYGATE_ADMIN_LISTEN`): `/healthz` (the process answers),
/// `/readyz` (not shutting down, and the backend accepts a TCP connection) and `/metrics` (this
/// proxy's ``ProxyMetrics`` in Prometheus' text format). Small answers on NIO's HTTP/1 server
/// pipeline; it carries no traffic, so it is kept apart from the proxy's listener.
public final class AdminServer: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// The bound port (the real one when 0 was asked for).
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// Binds `address` and serves `environment`'s health, readiness and metrics.
    public static func start(
        address: HostAndPort,
        environment: ProxyEnvironment,
        group: any EventLoopGroup
    ) async throws -> AdminServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(AdminHandler(environment: environment))
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
        return AdminServer(channel: channel)
    }

    public func close() async throws {
        do {
            try await channel.close()
        } catch ChannelError.alreadyClosed {
            return
        }
    }
}

/// Answers one admin request at a time (NIO's pipelining handler orders them).
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart

    /// How long `/readyz` waits for the backend to accept a connection.
    static let probeTimeout = TimeAmount.seconds(1)
    static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    private let environment: ProxyEnvironment
    private var request: HTTPRequestHead?

    init(environment: ProxyEnvironment) {
        self.environment = environment
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            answer(head, context: context)
        }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard head.method == .GET || head.method == .HEAD else {
            var allow = HTTPHeaders()
            allow.add(name: "Allow", value: "GET, HEAD")
            respond(head, .methodNotAllowed, "only GET and HEAD\n", headers: allow, context: context)
            return
        }
        switch head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri {
        case "/healthz":
            respond(head, .ok, "ok\n", context: context)
        case "/readyz":
            readiness(head, context: context)
        case "/metrics":
            let text = String(decoding: environment.metrics.registry.emitToBuffer(), as: UTF8.self)
            respond(head, .ok, text, contentType: Self.prometheusContentType, context: context)
        default:
            respond(head, .notFound, "not found; try /healthz, /readyz or /metrics\n", context: context)
        }
    }

    /// Ready while the proxy is not shutting down and the backend accepts a TCP connection.
    private func readiness(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard !environment.isDraining else {
            respond(head, .serviceUnavailable, "draining\n", context: context)
            return
        }
        let upstream = environment.settings.upstream
        let probe = ClientBootstrap(group: context.eventLoop)
            .connectTimeout(Self.probeTimeout)
            .connect(to: upstream)
        probe.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let channel):
                channel.close(promise: nil)
                respond(head, .ok, "ready\n", context: context)
            case .failure(let error):
                environment.logger.notice(
                    "readyz_backend_unreachable",
                    metadata: ["upstream": "\(upstream)", "error": "\(error)"]
                )
                respond(head, .serviceUnavailable, "backend unreachable: \(upstream)\n", context: context)
            }
        }
    }

    private func respond(
        _ request: HTTPRequestHead,
        _ status: HTTPResponseStatus,
        _ body: String,
        headers: HTTPHeaders = HTTPHeaders(),
        contentType: String = plainTextContentType,
        context: ChannelHandlerContext
    ) {
        var headers = headers
        headers.add(name: "Cache-Control", value: "no-store")
        let done = context.writeHTTPResponse(
            status: status,
            headers: headers,
            body: context.channel.allocator.buffer(string: body),
            contentType: contentType,
            keepAlive: request.isKeepAlive,
            headOnly: request.method == .HEAD
        )
        if !request.isKeepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}
