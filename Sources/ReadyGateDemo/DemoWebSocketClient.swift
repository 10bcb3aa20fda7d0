import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A message (or control frame) a ``DemoWebSocketClient`` received.
public enum ReceivedMessage: Sendable, Equatable {
    case text(String)
    case binary(ByteBuffer)
    case close(code: UInt16?, reason: String)
    case pong(ByteBuffer)
}

/// Why a connection attempt did not become a WebSocket.
public enum DemoClientError: Error, Sendable, Equatable {
    /// The server answered the upgrade with something other than 101.
    case upgradeRefused
    /// Nothing happened within the time allowed.
    case timedOut
    /// The connection ended without a close frame.
    case connectionLost
}

/// What the client's upgrade ended in.
enum ClientUpgrade: Sendable {
    case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, String?)
    case refused
}

/// A WebSocket client on SwiftNIO's own upgrader and frame codec, for the demo and the tests.
public enum DemoWebSocketClient {
    /// Connects, upgrades, writes `firstFrames` the moment the upgrade completes (the race the demo shows),
    /// then runs `body` with the open connection and closes it.
    public static func withConnection<Result: Sendable>(
        group: any EventLoopGroup,
        host: String = "127.0.0.1",
        port: Int,
        path: String = "/",
        subprotocols: [String] = [],
        firstFrames: [WebSocketFrame] = [],
        maxFrameSize: Int = 32 << 20,
        _ body: (inout WebSocketConnection) async throws -> Result
    ) async throws -> Result {
        let upgrade: EventLoopFuture<ClientUpgrade> = try await ClientBootstrap(group: group)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<ClientUpgrade>(
                        maxFrameSize: maxFrameSize,
                        upgradePipelineHandler: { channel, response in
                            channel.eventLoop.makeCompletedFuture {
                                let wrapped = try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(
                                    wrappingChannelSynchronously: channel
                                )
                                return .websocket(wrapped, response.headers.first(name: "Sec-WebSocket-Protocol"))
                            }
                        }
                    )
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: "\(host):\(port)")
                    if !subprotocols.isEmpty {
                        headers.add(name: "Sec-WebSocket-Protocol", value: subprotocols.joined(separator: ", "))
                    }
                    let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration(
                        upgradeRequestHead: request,
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            channel.close(promise: nil)
                            return channel.eventLoop.makeSucceededFuture(.refused)
                        }
                    )
                    // Frames that came in the same read as the `101` (a server that greets at once, on a
                    // loaded machine) are passed on to the WebSocket decoder; NIO's default drops them.
                    var pipeline = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: configuration)
                    pipeline.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: pipeline
                    )
                }
            }
        switch try await upgrade.get() {
        case .refused:
            throw DemoClientError.upgradeRefused
        case .websocket(let channel, let subprotocol):
            return try await channel.executeThenClose { inbound, outbound in
                // Written as soon as the upgrade is complete (the client handlers must be gone first,
                // or the frames would be swallowed by the upgrade handler).
                try await outbound.write(contentsOf: firstFrames)
                var connection = WebSocketConnection(
                    iterator: inbound.makeAsyncIterator(),
                    outbound: outbound,
                    subprotocol: subprotocol
                )
                return try await body(&connection)
            }
        }
    }

    /// A client frame: masked with a fresh key, as RFC 6455 §5.3 requires.
    public static func frame(_ opcode: WebSocketOpcode, _ data: ByteBuffer, fin: Bool = true) -> WebSocketFrame {
        WebSocketFrame(fin: fin, opcode: opcode, maskKey: .random(), data: data)
    }

    public static func text(_ text: String) -> WebSocketFrame {
        frame(.text, ByteBuffer(string: text))
    }
}

/// An open client connection: send frames, receive whole messages.
public struct WebSocketConnection {
    var iterator: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    /// The subprotocol the server chose.
    public let subprotocol: String?
    /// A fragmented message being joined; control frames may come between its fragments.
    private var fragments: ByteBuffer?
    private var fragmentedOpcode: WebSocketOpcode?
    /// A close frame went out: a close frame that arrives after it is the answer, not a request.
    private var sentClose = false

    init(
        iterator: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>,
        subprotocol: String?
    ) {
        self.iterator = iterator
        self.outbound = outbound
        self.subprotocol = subprotocol
    }

    /// Sends a frame (use ``DemoWebSocketClient/frame(_:_:fin:)`` for a masked one).
    public func send(_ frame: WebSocketFrame) async throws {
        try await outbound.write(frame)
    }

    public func send(text: String) async throws {
        try await send(DemoWebSocketClient.text(text))
    }

    /// Starts the close handshake.
    public mutating func close(code: UInt16 = 1000) async throws {
        var payload = ByteBuffer()
        payload.writeInteger(code)
        sentClose = true
        try await send(DemoWebSocketClient.frame(.connectionClose, payload))
    }

    /// The next whole message: fragments are joined; pings are answered; a close frame the server
    /// started is answered with the same code (RFC 6455 §5.5.1); nil when the stream ended.
    public mutating func next() async throws -> ReceivedMessage? {
        while let frame = try await iterator.next() {
            switch frame.opcode {
            case .connectionClose:
                var payload = frame.unmaskedData
                let code = payload.readInteger(as: UInt16.self)
                let reason = payload.readString(length: payload.readableBytes) ?? ""
                if !sentClose {
                    sentClose = true
                    var answer = ByteBuffer()
                    if let code { answer.writeInteger(code) }
                    try? await send(DemoWebSocketClient.frame(.connectionClose, answer))
                }
                return .close(code: code, reason: reason)
            case .ping:
                try await send(DemoWebSocketClient.frame(.pong, frame.unmaskedData))
            case .pong:
                return .pong(frame.unmaskedData)
            case .text, .binary:
                if frame.fin { return Self.message(frame.opcode, frame.unmaskedData) }
                fragmentedOpcode = frame.opcode
                fragments = frame.unmaskedData
            case .continuation:
                var data = frame.unmaskedData
                fragments?.writeBuffer(&data)
                if frame.fin, let opcode = fragmentedOpcode, let whole = fragments {
                    fragments = nil
                    fragmentedOpcode = nil
                    return Self.message(opcode, whole)
                }
            default:
                continue
            }
        }
        return nil
    }

    private static func message(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> ReceivedMessage {
        opcode == .text ? .text(String(buffer: data)) : .binary(data)
    }
}
