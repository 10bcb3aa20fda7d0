import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// How the embedded backend behaves. The defaults reproduce the incident ReadyGate exists for:
/// the backend accepts the upgrade at once but its handler needs `setupMs` before it can take a
/// message; a message that comes sooner kills the session with `1011`.
public struct DemoBackendConfiguration: Sendable {
    /// The race window: how long the session set-up runs after the 101.
    public var setupMs: Int = 200
    /// Whether the backend says it is ready (the message gate waits for this).
    public var sendsReadyMessage = true
    public var readyMessage = #"{"type":"connection_ready"}"#
    /// How long the backend takes to answer an upgrade request with its 101.
    public var upgradeDelayMs = 0
    /// A text message sent the moment the session starts, before set-up is done (nil: none).
    public var greeting: String?
    /// Answer every upgrade with this HTTP status instead of 101.
    public var rejectStatus: Int?
    /// Accept TCP connections and never answer them.
    public var silent = false
    /// Subprotocols the backend supports; it picks the first one the client offers.
    public var subprotocols: [String] = []
    /// The largest frame it accepts.
    public var maxFrameSize = 32 << 20

    public init() {}
}

/// What the embedded backend saw, summed over its sessions.
public struct DemoBackendCounters: Sendable, Equatable {
    public var connections = 0
    public var sessions = 0
    /// Sessions killed with 1011 because a message came before set-up was done.
    public var failedEarly = 0
    public var echoedMessages = 0
    /// Close frames received from clients: their code and whether they were masked.
    public var closeFrames: [(code: UInt16?, masked: Bool)] = []
    /// Upgrade request heads, in arrival order.
    public var requests: [HTTPRequestHead] = []

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.connections == rhs.connections && lhs.sessions == rhs.sessions && lhs.failedEarly == rhs.failedEarly
            && lhs.echoedMessages == rhs.echoedMessages && lhs.closeFrames.count == rhs.closeFrames.count
    }
}

/// A small WebSocket backend on SwiftNIO that reproduces the readiness race, for the demo and
/// the tests: echo after set-up, `1011` before it.
public final class DemoBackend: Sendable {
    public let configuration: DemoBackendConfiguration
    private let channel: any Channel
    private let state: Observed<DemoBackendCounters>

    private init(
        configuration: DemoBackendConfiguration,
        channel: any Channel,
        state: Observed<DemoBackendCounters>
    ) {
        self.configuration = configuration
        self.channel = channel
        self.state = state
    }

    public var port: Int { channel.localAddress?.port ?? 0 }
    public var counters: DemoBackendCounters { state.value }

    /// Returns once at least `count` WebSocket sessions have started.
    public func sessionsStarted(atLeast count: Int) async {
        await wait { $0.sessions >= count }
    }

    /// Returns once the counters satisfy `condition` (checked after every change), or when the
    /// calling task is cancelled.
    public func wait(until condition: @escaping @Sendable (DemoBackendCounters) -> Bool) async {
        await state.wait(until: condition)
    }

    /// Starts listening on `host:port` (port 0 picks a free one).
    public static func start(
        configuration: DemoBackendConfiguration = DemoBackendConfiguration(),
        group: any EventLoopGroup,
        host: String = "127.0.0.1",
        port: Int = 0
    ) async throws -> DemoBackend {
        let state = Observed(DemoBackendCounters())
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                state.update { $0.connections += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try configure(channel: channel, configuration: configuration, state: state)
                }
            }
            .bind(host: host, port: port)
            .get()
        return DemoBackend(configuration: configuration, channel: channel, state: state)
    }

    /// Stops listening; closing twice is harmless.
    public func close() async throws {
        do {
            try await channel.close()
        } catch ChannelError.alreadyClosed {
            return
        }
    }

    private static func configure(
        channel: any Channel,
        configuration: DemoBackendConfiguration,
        state: Observed<DemoBackendCounters>
    ) throws {
        let sync = channel.pipeline.syncOperations
        if configuration.silent {
            try sync.addHandler(SilentHandler())
            return
        }
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: configuration.maxFrameSize,
            shouldUpgrade: { channel, head in
                state.update { $0.requests.append(head) }
                guard configuration.rejectStatus == nil else { return channel.eventLoop.makeSucceededFuture(nil) }
                var headers = HTTPHeaders()
                let offered = head.headers["Sec-WebSocket-Protocol"].flatMap { $0.split(separator: ",") }
                    .map { $0.trimmingCharacters(in: " ") }
                if let chosen = offered.first(where: configuration.subprotocols.contains) {
                    headers.add(name: "Sec-WebSocket-Protocol", value: chosen)
                }
                let answer = headers
                guard configuration.upgradeDelayMs > 0 else { return channel.eventLoop.makeSucceededFuture(answer) }
                return channel.eventLoop.scheduleTask(in: .milliseconds(Int64(configuration.upgradeDelayMs))) {
                    answer
                }.futureResult
            },
            upgradePipelineHandler: { channel, _ in
                state.update { $0.sessions += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // The rejecting handler serves only requests that are not upgraded.
                    sync.removeHandler(try sync.handler(type: RejectingHTTPHandler.self), promise: nil)
                    try sync.addHandler(RacyWebSocketHandler(configuration: configuration, state: state))
                }
            }
        )
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: false,
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
        )
        try sync.addHandler(RejectingHTTPHandler(status: configuration.rejectStatus ?? 404))
    }
}

/// The backend's WebSocket handler: set-up takes a while; a message before it ends is fatal.
final class RacyWebSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let configuration: DemoBackendConfiguration
    private let state: Observed<DemoBackendCounters>
    private var ready = false
    private var closing = false

    init(configuration: DemoBackendConfiguration, state: Observed<DemoBackendCounters>) {
        self.configuration = configuration
        self.state = state
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if let greeting = configuration.greeting {
            let text = context.channel.allocator.buffer(string: greeting)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: text)), promise: nil)
        }
        let setup = TimeAmount.milliseconds(Int64(configuration.setupMs))
        if configuration.setupMs == 0 {
            setUpDone(context: context)
        } else {
            context.eventLoop.assumeIsolated().scheduleTask(in: setup) { [self] in setUpDone(context: context) }
        }
    }

    private func setUpDone(context: ChannelHandlerContext) {
        guard !closing, context.channel.isActive else { return }
        ready = true
        if configuration.sendsReadyMessage {
            let text = context.channel.allocator.buffer(string: configuration.readyMessage)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: text)), promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !closing else { return }
        switch frame.opcode {
        case .connectionClose:
            var payload = frame.unmaskedData
            let code = payload.readInteger(as: UInt16.self)
            state.update { $0.closeFrames.append((code, frame.maskKey != nil)) }
            closing = true
            var reply = context.channel.allocator.buffer(capacity: 2)
            if let code { reply.writeInteger(code) }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply)))
                .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .ping:
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)),
                promise: nil
            )
        case .text, .binary, .continuation:
            guard ready else {
                // The incident: the handler is not set up yet, so the message makes it fail.
                state.update { $0.failedEarly += 1 }
                closing = true
                var reply = context.channel.allocator.buffer(capacity: 32)
                reply.writeInteger(UInt16(1011))
                reply.writeString("handler not ready")
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply)))
                    .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                return
            }
            if frame.fin { state.update { $0.echoedMessages += 1 } }
            let echo = WebSocketFrame(fin: frame.fin, opcode: frame.opcode, data: frame.unmaskedData)
            context.write(wrapOutboundOut(echo), promise: nil)
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Answers requests that were not upgraded (the backend's rejection) with a fixed status.
final class RejectingHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let status: Int

    init(status: Int) { self.status = status }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let body = context.channel.allocator.buffer(string: "rejected by the demo backend\n")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "X-Demo-Backend", value: "rejected")
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

/// Reads and drops everything: a backend that accepted the connection but never answers.
final class SilentHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        String(drop(while: { $0 == set }).reversed().drop(while: { $0 == set }).reversed())
    }
}
