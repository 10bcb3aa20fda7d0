import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import ReadyGateCore

typealias H2Stream = NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>

/// An h2c client with prior knowledge on 127.0.0.1 (NIOHTTP2). ``connect(port:)`` returns once the
/// server's SETTINGS are in, so that an extended CONNECT is allowed (RFC 8441 §3).
final class H2TestConnection: Sendable {
    let channel: any Channel
    let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
    let frames: H2ConnectionFrames

    private init(
        channel: any Channel,
        multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>,
        frames: H2ConnectionFrames
    ) {
        self.channel = channel
        self.multiplexer = multiplexer
        self.frames = frames
    }

    static func connect(port: Int) async throws -> H2TestConnection {
        let channel = try await ClientBootstrap(group: testGroup)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: "127.0.0.1", port: port)
            .get()
        let settings = channel.eventLoop.makePromise(of: HTTP2Settings.self)
        let frames = H2ConnectionFrames(settings: settings)
        // The flood test resets hundreds of streams the proxy may still answer on.
        let configuration = {
            var configuration = NIOHTTP2Handler.Configuration()
            configuration.connection.maximumRecentlyResetStreams = 4096
            return configuration
        }()
        let multiplexer = try await channel.eventLoop.submit {
            let sync = channel.pipeline.syncOperations
            let multiplexer = try sync.configureAsyncHTTP2Pipeline(
                mode: .client,
                streamDelegate: nil,
                configuration: configuration
            ) { $0.eventLoop.makeSucceededVoidFuture() }
            try sync.addHandler(frames)
            return multiplexer
        }.get()
        let connection = H2TestConnection(channel: channel, multiplexer: multiplexer, frames: frames)
        let announced = try await withTimeout(seconds: 10) { try await settings.futureResult.get() }
        guard announced.contains(where: { $0.parameter == .enableConnectProtocol && $0.value == 1 }) else {
            await connection.close()
            throw H2TestError.noExtendedConnect
        }
        return connection
    }

    func openStream() async throws -> H2Stream {
        try await multiplexer.openStream { stream in
            stream.eventLoop.makeCompletedFuture { try H2Stream(wrappingChannelSynchronously: stream) }
        }
    }

    func close() async {
        try? await channel.close()
    }

    /// Sends a request (`body` in DATA frames of `chunk` bytes) and reads the whole response.
    func request(
        method: String = "GET",
        path: String,
        extra: [(String, String)] = [],
        body: [UInt8]? = nil,
        chunk: Int = 16_384
    ) async throws -> H2Response {
        let stream = try await openStream()
        return try await stream.executeThenClose { inbound, outbound in
            var headers = HPACKHeaders([
                (":method", method), (":scheme", "http"), (":path", path), (":authority", "proxy.test"),
            ])
            for (name, value) in extra { headers.add(name: name, value: value) }
            try await outbound.write(.headers(.init(headers: headers, endStream: body == nil)))
            if let body {
                var offset = 0
                repeat {
                    let end = min(offset + chunk, body.count)
                    let data = ByteBuffer(bytes: body[offset..<end])
                    try await outbound.write(.data(.init(data: .byteBuffer(data), endStream: end == body.count)))
                    offset = end
                } while offset < body.count
            }
            return try await H2Response.read(inbound)
        }
    }
}

enum H2TestError: Error {
    case noExtendedConnect
    case streamEnded
}

/// The connection-level frames the client saw: the server's first SETTINGS, GOAWAYs.
final class H2ConnectionFrames: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTP2Frame

    private let settings: EventLoopPromise<HTTP2Settings>
    private let goAways = NIOLockedValueBox<[HTTP2StreamID]>([])

    init(settings: EventLoopPromise<HTTP2Settings>) {
        self.settings = settings
    }

    var goAwaysSeen: [HTTP2StreamID] { goAways.withLockedValue { $0 } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data).payload {
        case .settings(.settings(let values)):
            settings.succeed(values)
        case .goAway(let lastStreamID, _, _):
            goAways.withLockedValue { $0.append(lastStreamID) }
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        settings.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }
}

/// A response on one stream: its header block and body, and how the stream ended.
struct H2Response: Sendable {
    var headers = HPACKHeaders()
    /// Interim (`1xx`) header blocks before the final one, in order.
    var interim: [HPACKHeaders] = []
    var body = ByteBuffer()
    /// The server reset the stream (instead of ending it).
    var reset = false

    var status: Int { Int(headers.first(name: ":status") ?? "") ?? 0 }
    var text: String { String(buffer: body) }

    static func read(_ inbound: NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>) async throws -> H2Response {
        var response = H2Response()
        do {
            for try await payload in inbound {
                switch payload {
                case .headers(let block):
                    if !response.headers.isEmpty && response.status < 200 { response.interim.append(response.headers) }
                    if response.headers.isEmpty || response.status < 200 { response.headers = block.headers }
                    if block.endStream { return response }
                case .data(let data):
                    if case .byteBuffer(var bytes) = data.data { response.body.writeBuffer(&bytes) }
                    if data.endStream { return response }
                case .rstStream:
                    response.reset = true
                    return response
                default:
                    continue
                }
            }
        } catch {
            response.reset = true
        }
        return response
    }
}

/// One side of a WebSocket over an HTTP/2 stream (RFC 8441), as a client: the answer's status,
/// then frames read from the DATA frames.
struct H2WebSocketPeer {
    private var iterator: NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>
    private var buffered = ByteBuffer()
    private(set) var status: Int?
    /// The answer's header block.
    private(set) var headers = HPACKHeaders()
    /// The server ended its side (END_STREAM) or reset the stream.
    private(set) var ended = false
    private(set) var reset = false

    init(
        inbound: NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>,
        outbound: NIOAsyncChannelOutboundWriter<HTTP2Frame.FramePayload>
    ) {
        self.iterator = inbound.makeAsyncIterator()
        self.outbound = outbound
    }

    /// Sends the extended CONNECT and, in the same write, `firstFrames` (before any answer).
    func connect(
        path: String,
        protocol proto: String = "websocket",
        extra: [(String, String)] = [],
        firstFrames: [[UInt8]] = []
    ) async throws {
        var headers = HPACKHeaders([
            (":method", "CONNECT"), (":protocol", proto), (":scheme", "http"), (":path", path),
            (":authority", "proxy.test"), ("sec-websocket-version", "13"),
        ])
        for (name, value) in extra { headers.add(name: name, value: value) }
        var payloads: [HTTP2Frame.FramePayload] = [.headers(.init(headers: headers))]
        for frame in firstFrames { payloads.append(.data(.init(data: .byteBuffer(ByteBuffer(bytes: frame))))) }
        try await outbound.write(contentsOf: payloads)
    }

    func send(_ bytes: [UInt8], endStream: Bool = false) async throws {
        try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: bytes)), endStream: endStream)))
    }

    /// The answer's `:status`.
    mutating func readStatus() async throws -> Int {
        while status == nil, !ended {
            try await next()
        }
        guard let status else { throw H2TestError.streamEnded }
        return status
    }

    /// The next WebSocket frame, or nil when the stream ended.
    mutating func readFrame() async throws -> WireFrame? {
        while true {
            if let frame = ScriptedConnection.parse(&buffered) { return frame }
            if ended { return nil }
            try await next()
        }
    }

    /// The next text frames that are not `skipping`, until `count` or the end.
    mutating func readTexts(_ count: Int, skipping: String) async throws -> [String] {
        var texts: [String] = []
        while texts.count < count, let frame = try await readFrame() {
            if frame.opcode == 0x1, frame.text != skipping { texts.append(frame.text) }
        }
        return texts
    }

    /// A response body (not WebSocket frames): everything until the server ends the stream.
    mutating func readBody() async throws -> String {
        while !ended { try await next() }
        return String(buffer: buffered)
    }

    /// Reads until the server ends the stream.
    mutating func readToEnd() async throws -> [WireFrame] {
        var frames: [WireFrame] = []
        while let frame = try await readFrame() { frames.append(frame) }
        return frames
    }

    private mutating func next() async throws {
        do {
            guard let payload = try await iterator.next() else {
                ended = true
                return
            }
            switch payload {
            case .headers(let block):
                if let value = block.headers.first(name: ":status") {
                    status = Int(value)
                    headers = block.headers
                }
                if block.endStream { ended = true }
            case .data(let data):
                if case .byteBuffer(var bytes) = data.data { buffered.writeBuffer(&bytes) }
                if data.endStream { ended = true }
            case .rstStream:
                ended = true
                reset = true
            default:
                break
            }
        } catch {
            ended = true
            reset = true
        }
    }
}

extension H2TestConnection {
    /// Opens a stream and runs `body` with its WebSocket peer; the stream is closed afterwards.
    func withStream<T: Sendable>(_ body: @Sendable (inout H2WebSocketPeer) async throws -> T) async throws -> T {
        let stream = try await openStream()
        return try await stream.executeThenClose { inbound, outbound in
            var peer = H2WebSocketPeer(inbound: inbound, outbound: outbound)
            return try await body(&peer)
        }
    }
}
