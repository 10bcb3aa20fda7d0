import Foundation
import NIOCore
import NIOPosix
import ReadyGateCore

/// One WebSocket frame as read off the wire by a scripted peer (unmasked payload).
struct WireFrame: Equatable {
    var fin: Bool
    var reservedBits: UInt8
    var opcode: UInt8
    var masked: Bool
    var payload: [UInt8]

    var closeCode: UInt16? {
        payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
    }
    var text: String { String(decoding: payload, as: UTF8.self) }
}

/// The byte stream of one connection of a scripted peer: read exactly what a test expects, and
/// write whatever it wants, however cut.
struct ScriptedConnection {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private let writer: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var buffered = ByteBuffer()

    init(
        channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>,
        inbound: NIOAsyncChannelInboundStream<ByteBuffer>,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) {
        self.channel = channel
        self.iterator = inbound.makeAsyncIterator()
        self.writer = outbound
    }

    /// Reads more bytes; false at the end of the stream.
    private mutating func fill() async throws -> Bool {
        guard var more = try await iterator.next() else { return false }
        buffered.writeBuffer(&more)
        return true
    }

    /// Reads up to and including an empty line: an HTTP head.
    mutating func readHead() async throws -> String? {
        while true {
            let view = buffered.readableBytesView
            if let end = view.firstRange(of: Array("\r\n\r\n".utf8)) {
                let length = end.upperBound - view.startIndex
                return buffered.readString(length: length)
            }
            guard try await fill() else { return nil }
        }
    }

    /// Reads one frame; nil at the end of the stream.
    mutating func readFrame() async throws -> WireFrame? {
        while true {
            if let frame = Self.parse(&buffered) { return frame }
            guard try await fill() else { return nil }
        }
    }

    /// Reads frames until the end of the stream.
    mutating func readAll() async throws -> [WireFrame] {
        var frames: [WireFrame] = []
        while let frame = try await readFrame() { frames.append(frame) }
        return frames
    }

    func write(_ bytes: [UInt8]) async throws {
        try await writer.write(ByteBuffer(bytes: bytes))
    }

    /// Writes `bytes` one at a time, each in a segment of its own (the socket has `TCP_NODELAY`).
    func writeByteByByte(_ bytes: [UInt8]) async throws {
        for byte in bytes { try await writer.write(ByteBuffer(bytes: [byte])) }
    }

    func write(_ text: String) async throws {
        try await write(Array(text.utf8))
    }

    /// Ends the connection without a close frame, as a killed process's kernel does.
    func drop() async throws {
        try await channel.channel.close()
    }

    /// Parses one frame from the front of `buffer` when it is complete.
    static func parse(_ buffer: inout ByteBuffer) -> WireFrame? {
        let bytes = Array(buffer.readableBytesView)
        guard bytes.count >= 2 else { return nil }
        let masked = bytes[1] & 0x80 != 0
        var length = Int(bytes[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard bytes.count >= 4 else { return nil }
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            offset = 4
        } else if length == 127 {
            guard bytes.count >= 10 else { return nil }
            length = bytes[2..<10].reduce(0) { $0 << 8 | Int($1) }
            offset = 10
        }
        let keyStart = offset
        if masked { offset += 4 }
        guard bytes.count >= offset + length else { return nil }
        var payload = Array(bytes[offset..<(offset + length)])
        if masked {
            for index in payload.indices { payload[index] ^= bytes[keyStart + index % 4] }
        }
        buffer.moveReaderIndex(forwardBy: offset + length)
        return WireFrame(
            fin: bytes[0] & 0x80 != 0,
            reservedBits: (bytes[0] >> 4) & 0x7,
            opcode: bytes[0] & 0x0F,
            masked: masked,
            payload: payload
        )
    }
}

/// A client frame, masked as RFC 6455 §5.3 requires.
func clientFrame(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
    WebSocketFrameWriter.frame(opcode: opcode, payload: payload, fin: fin, maskingKey: 0x1234_5678)
}

/// A backend frame (unmasked).
func serverFrame(_ opcode: WebSocketOpcode, _ payload: [UInt8]) -> [UInt8] {
    WebSocketFrameWriter.frame(opcode: opcode, payload: payload)
}

func closePayload(_ code: UInt16, _ reason: String = "") -> [UInt8] {
    WebSocketFrameWriter.closePayload(code: code, reason: reason)
}

/// A backend on 127.0.0.1 whose every connection runs `script`, in order of arrival (the
/// connection's index is passed). Backend failures are written as scripts: a kill, a close code,
/// a refusal, a stall.
final class ScriptedBackend: Sendable {
    private let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let task: Task<Void, Never>
    let port: Int

    init(script: @escaping @Sendable (Int, inout ScriptedConnection) async throws -> Void) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        self.server = server
        self.port = server.channel.localAddress?.port ?? 0
        self.task = Self.serve(server, script: script)
    }

    /// Runs `script` on each connection `server` accepts (numbered from 0), until it closes.
    static func serve(
        _ server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>,
        script: @escaping @Sendable (Int, inout ScriptedConnection) async throws -> Void
    ) -> Task<Void, Never> {
        Task {
            try? await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    var index = 0
                    for try await connection in inbound {
                        let number = index
                        index += 1
                        group.addTask {
                            try? await connection.executeThenClose { inbound, outbound in
                                var scripted = ScriptedConnection(
                                    channel: connection,
                                    inbound: inbound,
                                    outbound: outbound
                                )
                                try await script(number, &scripted)
                            }
                        }
                    }
                }
            }
        }
    }

    func close() async {
        try? await server.channel.close()
        task.cancel()
        await task.value
    }
}

extension ScriptedConnection {
    /// Reads the upgrade request and answers `101` with the right `Sec-WebSocket-Accept`, followed in
    /// the same write by `firstBytes` (frames the backend sends at once).
    mutating func acceptUpgrade(then firstBytes: [UInt8] = [], extensions: String? = nil) async throws {
        guard let head = try await readHead() else { throw ScriptError.ended("no upgrade request") }
        let key =
            head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") }
            .map { $0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces) } ?? ""
        let head101 =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + (extensions.map { "Sec-WebSocket-Extensions: \($0)\r\n" } ?? "")
            + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: key))\r\n\r\n"
        try await write(Array(head101.utf8) + firstBytes)
    }

    /// Reads the upgrade request and answers with `status` (a final, bodiless answer).
    mutating func reject(status: Int) async throws {
        _ = try await readHead()
        try await write("HTTP/1.1 \(status) No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    /// Echoes every text frame until the client's close, then answers that close.
    mutating func echoUntilClose() async throws {
        while let frame = try await readFrame() {
            if frame.opcode == 0x8 {
                try await write(serverFrame(.close, frame.payload))
                return
            }
            if frame.opcode == 0x1 { try await write(serverFrame(.text, frame.payload)) }
        }
    }

    mutating func expectFrame() async throws -> WireFrame {
        guard let frame = try await readFrame() else { throw ScriptError.ended("no frame") }
        return frame
    }
}

enum ScriptError: Error {
    case ended(String)
}

/// A raw WebSocket client of ReadyGate on 127.0.0.1: it writes bytes cut as the test wants and
/// reads frames as they come.
enum RawClient {
    static func connect(port: Int, path: String = "/ws") async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Connects, upgrades and runs `body` with the connection after the `101`; returns its result.
    static func session<T: Sendable>(
        port: Int,
        _ body: @escaping @Sendable (inout ScriptedConnection) async throws -> T
    ) async throws -> T {
        try await session(port: port, request: upgradeRequest()) { _, connection in try await body(&connection) }
    }

    /// ``session(port:_:)`` with the upgrade request given, and the `101`'s head passed to `body`.
    static func session<T: Sendable>(
        port: Int,
        request: String,
        _ body: @escaping @Sendable (String, inout ScriptedConnection) async throws -> T
    ) async throws -> T {
        let channel = try await connect(port: port)
        return try await channel.executeThenClose { inbound, outbound in
            var connection = ScriptedConnection(channel: channel, inbound: inbound, outbound: outbound)
            try await connection.write(request)
            guard let head = try await connection.readHead(), head.hasPrefix("HTTP/1.1 101") else {
                throw ScriptError.ended("no 101")
            }
            return try await body(head, &connection)
        }
    }
}
