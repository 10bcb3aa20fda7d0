import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ReadyGateCore
import ReadyGateProxy
import Testing

/// Failure paths over loopback against scripted backends and raw clients: a backend killed after
/// READY, a backend failing right after READY, close and half-close orders, retries of answers that
/// mean "not ready yet", a client reset, and bytes cut at the moment of READY.
@Suite("Session failure paths over loopback", .serialized)
struct SessionFailurePathTests {
    static let ready = Array(#"{"type":"connection_ready"}"#.utf8)

    func withScripted<T: Sendable>(
        _ configure: @escaping (inout ReadyGateSettings) -> Void = { _ in },
        script: @escaping @Sendable (Int, inout ScriptedConnection) async throws -> Void,
        _ body: @escaping @Sendable (ProxyFixture) async throws -> T
    ) async throws -> T {
        let backend = try await ScriptedBackend(script: script)
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port) { settings in
            settings.readyGate = .message
            configure(&settings)
        }
        do {
            let result = try await withTimeout(seconds: 30) { [proxy] in try await body(proxy) }
            try await proxy.stop()
            await backend.close()
            return result
        } catch {
            try? await proxy.stop()
            await backend.close()
            throw error
        }
    }

    @Test("a backend killed after READY: the client gets 1011 upstream closed, the summary says why")
    func backendKilledAfterReady() async throws {
        try await withScripted(script: { _, backend in
            try await backend.acceptUpgrade()
            try await backend.write(serverFrame(.text, Self.ready))
            let first = try await backend.expectFrame()
            try await backend.write(serverFrame(.text, first.payload))
            try await backend.drop()
        }) { proxy in
            let frames = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.text, Array("hello".utf8)))
                var frames: [WireFrame] = []
                while let frame = try await client.readFrame() {
                    frames.append(frame)
                    if frame.opcode == 0x8 { try await client.write(clientFrame(.close, frame.payload)) }
                }
                return frames
            }
            #expect(frames.map(\.text).prefix(2) == [String(decoding: Self.ready, as: UTF8.self), "hello"])
            let close = try #require(frames.last)
            #expect(close.opcode == 0x8)
            #expect(close.closeCode == 1011)
            #expect(String(decoding: close.payload.dropFirst(2), as: UTF8.self) == "upstream closed")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.endReason == .upstreamClosed)
            #expect(record.closer == .upstream)
            #expect(record.patterns.contains(.upstreamErrorAfterReady))
            #expect(!record.upstreamSentClose)
        }
    }

    @Test("a backend closing 1011 right after READY is upstream_error_after_ready, closed by upstream")
    func backendFailsRightAfterReady() async throws {
        try await withScripted(script: { _, backend in
            try await backend.acceptUpgrade()
            try await backend.write(serverFrame(.text, Self.ready))
            _ = try await backend.expectFrame()
            try await backend.write(serverFrame(.close, closePayload(1011, "handler failed")))
            while let frame = try await backend.readFrame(), frame.opcode != 0x8 {}
        }) { proxy in
            let codes = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.text, Array("early".utf8)))
                var codes: [UInt16?] = []
                while let frame = try await client.readFrame() {
                    guard frame.opcode == 0x8 else { continue }
                    codes.append(frame.closeCode)
                    // The client answers first, as a browser does.
                    try await client.write(clientFrame(.close, closePayload(1011)))
                }
                return codes
            }
            #expect(codes == [1011])
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.patterns.contains(.upstreamErrorAfterReady))
            #expect(record.closer == .upstream)
            #expect(record.endReason == nil)
            #expect(record.upstreamCloseCode == 1011)
            #expect(record.clientCloseCode == 1011)
        }
    }

    @Test("a backend that closes 1000 and then its connection: the client's answer ends it cleanly")
    func backendClosesThenHalfCloses() async throws {
        try await withScripted(script: { _, backend in
            try await backend.acceptUpgrade()
            try await backend.write(serverFrame(.text, Self.ready))
            try await backend.write(serverFrame(.close, closePayload(1000, "bye")))
            try await backend.drop()
        }) { proxy in
            let codes = try await RawClient.session(port: proxy.port) { client in
                var codes: [UInt16?] = []
                while let frame = try await client.readFrame() {
                    guard frame.opcode == 0x8 else { continue }
                    codes.append(frame.closeCode)
                    try await client.write(clientFrame(.close, closePayload(1000)))
                }
                return codes
            }
            #expect(codes == [1000])
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.closer == .upstream)
            #expect(record.upstreamCloseCode == 1000)
            #expect(record.endReason == nil)
            #expect(!record.patterns.contains(.upstreamErrorAfterReady))
        }
    }

    @Test("a backend that closes before its 101, or answers 503, is retried and gets every frame", arguments: [0, 503])
    func notReadyAnswersAreRetried(firstAnswer: Int) async throws {
        try await withScripted(script: { index, backend in
            if index == 0 {
                if firstAnswer == 0 {
                    _ = try await backend.readHead()
                    try await backend.drop()
                } else {
                    try await backend.reject(status: firstAnswer)
                }
                return
            }
            try await backend.acceptUpgrade()
            try await backend.write(serverFrame(.text, Self.ready))
            let first = try await backend.expectFrame()
            try await backend.write(serverFrame(.text, first.payload))
            while let frame = try await backend.readFrame(), frame.opcode != 0x8 {}
            try await backend.write(serverFrame(.close, closePayload(1000)))
        }) { proxy in
            let texts = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.text, Array("kept".utf8)))
                var texts: [String] = []
                while let frame = try await client.readFrame() {
                    if frame.opcode == 0x1 { texts.append(frame.text) }
                    if texts.count == 2 {
                        try await client.write(clientFrame(.close, closePayload(1000)))
                        texts.append("closing")
                    }
                }
                return texts
            }
            #expect(texts.contains("kept"))
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.connectAttempts == 2)
            #expect(record.patterns.contains(.upstreamConnectRetry))
            #expect(record.endReason == nil)
        }
    }

    @Test("a client reset after READY leaves the backend a masked 1001, closed by client")
    func clientResetAfterReady() async throws {
        let backendSaw = BackendLog()
        try await withScripted(script: { _, backend in
            try await backend.acceptUpgrade()
            try await backend.write(serverFrame(.text, Self.ready))
            while let frame = try await backend.readFrame() { backendSaw.append(frame) }
        }) { proxy in
            let channel = try await RawClient.connect(port: proxy.port)
            try await channel.executeThenClose { inbound, outbound in
                var client = ScriptedConnection(channel: channel, inbound: inbound, outbound: outbound)
                try await client.write(upgradeRequest())
                _ = try await client.readHead()
                _ = try await client.readFrame()
                // SO_LINGER 0: the close is a reset.
                let options = try #require(channel.channel as? any SocketOptionProvider)
                try await options.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
                try await channel.channel.close()
            }
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.closer == .client)
            let closes = backendSaw.frames.filter { $0.opcode == 0x8 }
            #expect(closes.allSatisfy { $0.masked && $0.closeCode == 1001 })
        }
    }

    @Test("a close reason that is not UTF-8, sent before READY, fails the connection with 1007")
    func invalidCloseReasonBeforeReady() async throws {
        try await withScripted(script: { _, backend in
            try await backend.acceptUpgrade()
            while try await backend.readFrame() != nil {}
        }) { proxy in
            let codes = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.close, [0x03, 0xE8, 0xFF, 0xFE]))
                return try await client.readAll().filter { $0.opcode == 0x8 }.map(\.closeCode)
            }
            #expect(codes == [1007])
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.closer == .client)
            #expect(record.endReason?.closeCode == 1007)
        }
    }

    /// A 125-byte ping written one byte per segment, with READY falling after `split` of its bytes:
    /// whoever answers it (the proxy for a ping complete before READY, the backend otherwise), the
    /// client gets exactly one pong and the backend sees only well-formed frames.
    @Test("a ping cut byte by byte across READY gets exactly one pong", arguments: [1, 2, 6, 64, 130])
    func pingSplitAcrossReady(split: Int) async throws {
        let (signal, fire) = AsyncStream<Void>.makeStream()
        let backendSaw = BackendLog()
        let payload = (0..<125).map { UInt8($0) }
        try await withScripted(script: { _, backend in
            try await backend.acceptUpgrade()
            for await _ in signal { break }
            try await backend.write(serverFrame(.text, Self.ready))
            while let frame = try await backend.readFrame() {
                backendSaw.append(frame)
                if frame.opcode == 0x9 { try await backend.write(serverFrame(.pong, frame.payload)) }
                if frame.opcode == 0x1 { try await backend.write(serverFrame(.text, frame.payload)) }
                if frame.opcode == 0x8 {
                    try await backend.write(serverFrame(.close, closePayload(1000)))
                    return
                }
            }
        }) { proxy in
            let ping = clientFrame(.ping, payload)
            let pongs = try await RawClient.session(port: proxy.port) { client in
                try await client.writeByteByByte(Array(ping.prefix(split)))
                fire.yield()
                // READY has passed once the ready message is relayed.
                while let frame = try await client.readFrame(), frame.opcode != 0x1 {}
                try await client.writeByteByByte(Array(ping.dropFirst(split)))
                try await client.write(clientFrame(.text, Array("after".utf8)))
                var pongs: [WireFrame] = []
                while let frame = try await client.readFrame() {
                    if frame.opcode == 0xA { pongs.append(frame) }
                    if frame.opcode == 0x1 && frame.text == "after" {
                        try await client.write(clientFrame(.close, closePayload(1000)))
                    }
                    if frame.opcode == 0x8 { break }
                }
                return pongs
            }
            #expect(pongs.count == 1)
            #expect(pongs.first?.payload == payload)
            let seen = backendSaw.frames
            #expect(seen.allSatisfy { $0.masked && $0.reservedBits == 0 && [0x1, 0x8, 0x9].contains($0.opcode) })
            #expect(seen.filter { $0.opcode == 0x1 }.map(\.text) == ["after"])
            #expect(seen.filter { $0.opcode == 0x9 }.allSatisfy { $0.payload == payload })
        }
    }

    /// An echo backend behind the message gate that says it is ready when the test signals (never
    /// without a signal); it answers a binary message with its length.
    static func readyOnSignal(
        _ signal: AsyncStream<Void>?,
        log: BackendLog? = nil
    ) -> @Sendable (Int, inout ScriptedConnection) async throws -> Void {
        { _, backend in
            try await backend.acceptUpgrade()
            if let signal {
                for await _ in signal { break }
                try await backend.write(serverFrame(.text, Self.ready))
            }
            while let frame = try await backend.readFrame() {
                log?.append(frame)
                switch frame.opcode {
                case 0x9: try await backend.write(serverFrame(.pong, frame.payload))
                case 0x8:
                    try await backend.write(serverFrame(.close, frame.payload))
                    return
                case 0x2: try await backend.write(serverFrame(.text, Array("\(frame.payload.count)".utf8)))
                default: try await backend.write(serverFrame(.text, frame.payload))
                }
            }
        }
    }

    @Test("READYGATE_READY_TIMEOUT_ACTION=open: at the timeout the held frames go to the backend")
    func timeoutOpen() async throws {
        try await withScripted(
            { settings in
                settings.readyTimeoutAction = .open
                settings.timing.handshakeTimeoutMs = 300
            },
            script: Self.readyOnSignal(nil)
        ) { proxy in
            let echo = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.text, Array("early".utf8)))
                let echo = try await client.expectFrame()
                try await client.write(clientFrame(.close, closePayload(1000)))
                _ = try await client.readAll()
                return echo.text
            }
            #expect(echo == "early")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.patterns.contains(.readyTimeout))
            #expect(record.endReason == nil)
            #expect(record.undeliveredFrames == 0)
        }
    }

    @Test("one client frame larger than READYGATE_MAX_BUFFER_BYTES is held whole and delivered")
    func frameLargerThanBound() async throws {
        let (signal, fire) = AsyncStream<Void>.makeStream()
        try await withScripted({ $0.maxBufferBytes = 1024 }, script: Self.readyOnSignal(signal)) { proxy in
            let texts = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.binary, Array(repeating: 0x5A, count: 65_536)))
                // READY only once the hold reached its bound (the proxy reads one receive buffer
                // per read event, so the whole frame is not in before the backend could answer).
                let budget = proxy.server.environment.heldBytesBudget
                while budget.heldBytes < 1024 { try await Task.sleep(for: .milliseconds(1)) }
                fire.yield()
                var texts: [String] = []
                while texts.count < 2, let frame = try await client.readFrame() {
                    if frame.opcode == 0x1 { texts.append(frame.text) }
                }
                try await client.write(clientFrame(.close, closePayload(1000)))
                _ = try await client.readAll()
                return texts
            }
            #expect(texts.last == "65536")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.patterns.contains(.bufferBackpressure))
            #expect(record.undeliveredFrames == 0)
        }
    }

    @Test("a fragmented message begun before READY and finished after reaches the backend in order")
    func fragmentedAcrossFlush() async throws {
        let (signal, fire) = AsyncStream<Void>.makeStream()
        let backendSaw = BackendLog()
        try await withScripted(script: Self.readyOnSignal(signal, log: backendSaw)) { proxy in
            try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.text, Array("ab".utf8), fin: false))
                fire.yield()
                while let frame = try await client.readFrame(), frame.opcode != 0x1 {}
                try await client.write(clientFrame(.continuation, Array("cd".utf8)))
                try await client.write(clientFrame(.close, closePayload(1000)))
                _ = try await client.readAll()
            }
            _ = try await proxy.sessions.waitFor(1)
            let frames = backendSaw.frames
            #expect(frames.map(\.opcode) == [0x1, 0x0, 0x8])
            #expect(frames.map(\.fin) == [false, true, true])
            #expect(frames.prefix(2).map(\.text) == ["ab", "cd"])
        }
    }

    @Test("a ping and a close behind a full hold: one pong, and the close handshake completes")
    func pingAndCloseBehindPausedReads() async throws {
        let (signal, fire) = AsyncStream<Void>.makeStream()
        try await withScripted({ $0.maxBufferBytes = 1024 }, script: Self.readyOnSignal(signal)) { proxy in
            let (pongs, closes) = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.binary, Array(repeating: 1, count: 8192)))
                try await client.write(clientFrame(.ping, [42]) + clientFrame(.close, closePayload(1000)))
                fire.yield()
                var pongs: [[UInt8]] = []
                var closes: [UInt16?] = []
                for frame in try await client.readAll() {
                    if frame.opcode == 0xA { pongs.append(frame.payload) }
                    if frame.opcode == 0x8 { closes.append(frame.closeCode) }
                }
                return (pongs, closes)
            }
            #expect(pongs == [[42]])
            #expect(closes == [1000])
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.closer == .client)
            #expect(record.clientCloseCode == 1000)
        }
    }

    /// `upstream` accept mode: the client has no `101` until the backend's is verified.
    @Test(
        "upstream mode: a bad Sec-WebSocket-Accept or an unoffered subprotocol is 502, a silent backend 504",
        arguments: ["bad accept", "subprotocol", "silent"]
    )
    func upstreamModeFailures(kind: String) async throws {
        try await withScripted(
            { settings in
                settings.acceptMode = .upstream
                settings.timing.handshakeTimeoutMs = 300
            },
            script: { _, backend in
                guard let head = try await backend.readHead() else { return }
                let key =
                    head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") }
                    .map { String($0.split(separator: " ").last ?? "") } ?? ""
                switch kind {
                case "bad accept":
                    try await backend.write(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            + "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
                    )
                case "subprotocol":
                    try await backend.write(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: key))\r\n"
                            + "Sec-WebSocket-Protocol: chat\r\n\r\n"
                    )
                default:
                    break
                }
                while try await backend.readFrame() != nil {}
            }
        ) { proxy in
            let answer = try await rawExchange(port: proxy.port, request: upgradeRequest())
            let expected = kind == "silent" ? "HTTP/1.1 504" : "HTTP/1.1 502"
            #expect(answer.hasPrefix(expected), "\(answer)")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.closer == .proxy)
            #expect(record.endReason?.closeCode == (kind == "silent" ? 1013 : 1011))
        }
    }
}

/// Frames a scripted backend read, for the test to check afterwards.
final class BackendLog: Sendable {
    private let box = NIOLockedValueBox<[WireFrame]>([])
    func append(_ frame: WireFrame) { box.withLockedValue { $0.append(frame) } }
    var frames: [WireFrame] { box.withLockedValue { $0 } }
}
