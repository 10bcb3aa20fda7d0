import NIOCore
import ReadyGateCore
import Testing

/// The ping gate and transparent replay over loopback, against scripted backends: what the backend
/// and the client see on the wire.
extension SessionFailurePathTests {
    static func replayOn(_ settings: inout ReadyGateSettings) {
        settings.readyGate = .delay
        settings.replay = true
        settings.replayAttempts = 2
        settings.timing.handshakeTimeoutMs = 2000
    }

    /// The racy backend after its `101`: its first session (`index` 0) gets the first message
    /// before its set-up and fails it with `1011`; the later ones echo until the client's close.
    static func failFirstSessionThenEcho(_ index: Int, _ backend: inout ScriptedConnection) async throws {
        guard index == 0 else { return try await backend.echoUntilClose() }
        _ = try await backend.expectFrame()
        try await backend.write(serverFrame(.close, closePayload(1011, "not set up")))
        while let frame = try await backend.readFrame(), frame.opcode != 0x8 {}
    }

    /// The client sends `messages` at once, then reads until it has as many echoes (or a close).
    static func sendAndCollect(_ messages: [String], port: Int) async throws -> [WireFrame] {
        try await sendAndCollect(messages, port: port, request: upgradeRequest()).frames
    }

    /// ``sendAndCollect(_:port:)`` with the upgrade request given; also returns the `101`'s head.
    static func sendAndCollect(
        _ messages: [String],
        port: Int,
        request: String
    ) async throws -> (head: String, frames: [WireFrame]) {
        try await RawClient.session(port: port, request: request) { head, client in
            try await client.write(messages.flatMap { clientFrame(.text, Array($0.utf8)) })
            var frames: [WireFrame] = []
            while frames.filter({ $0.opcode == 0x1 }).count < messages.count, let frame = try await client.readFrame() {
                frames.append(frame)
                if frame.opcode == 0x8 { return (head, frames) }
            }
            try await client.write(clientFrame(.close, closePayload(1000)))
            while let frame = try await client.readFrame() { frames.append(frame) }
            return (head, frames)
        }
    }

    @Test("replay: a backend that fails 1011 on the early frames is replaced; the client sees only echoes")
    func replayAfter1011() async throws {
        try await withScripted(
            Self.replayOn,
            script: { index, backend in
                try await backend.acceptUpgrade()
                try await Self.failFirstSessionThenEcho(index, &backend)
            }
        ) { proxy in
            let frames = try await Self.sendAndCollect(["one", "two", "three"], port: proxy.port)
            #expect(frames.filter { $0.opcode == 0x1 }.map(\.text) == ["one", "two", "three"])
            #expect(frames.last?.opcode == 0x8)
            #expect(frames.last?.closeCode == 1000, "the 1011 never reached the client")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.replays == 1)
            #expect(record.connectAttempts == 2)
            #expect(record.patterns.contains(.upstreamErrorAfterReady))
            #expect(record.endReason == nil)
            #expect(record.closer == .client)
            #expect(record.upstreamCloseCode == 1000)
        }
    }

    @Test("replay: a backend connection lost right after READY is replaced too, up to the attempts")
    func replayAfterLostConnection() async throws {
        try await withScripted(
            Self.replayOn,
            script: { index, backend in
                try await backend.acceptUpgrade()
                if index < 2 {
                    _ = try await backend.expectFrame()
                    try await backend.drop()
                } else {
                    try await backend.echoUntilClose()
                }
            }
        ) { proxy in
            let frames = try await Self.sendAndCollect(["hello"], port: proxy.port)
            #expect(frames.filter { $0.opcode == 0x1 }.map(\.text) == ["hello"])
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.replays == 2)
            #expect(record.connectAttempts == 3)
        }
    }

    @Test("replay: once the attempts are used, the backend's failure reaches the client")
    func replayAttemptsRunOut() async throws {
        try await withScripted(
            Self.replayOn,
            script: { _, backend in
                try await backend.acceptUpgrade()
                _ = try await backend.expectFrame()
                try await backend.write(serverFrame(.close, closePayload(1011, "still broken")))
                while let frame = try await backend.readFrame(), frame.opcode != 0x8 {}
            }
        ) { proxy in
            let frames = try await Self.sendAndCollect(["hello"], port: proxy.port)
            #expect(frames.last?.closeCode == 1011)
            #expect(frames.last.map { String(decoding: $0.payload.dropFirst(2), as: UTF8.self) } == "still broken")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.replays == 2)
            #expect(record.closer == .upstream)
            #expect(record.upstreamCloseCode == 1011)
        }
    }

    /// `upstream` accept mode with replay, the client offering permessage-deflate: each backend
    /// session `index` answers with `extensions(index)`; the first fails 1011 on the first message.
    func replayWithExtensions(
        _ extensions: @escaping @Sendable (Int) -> String?,
        _ body: @escaping @Sendable (_ head101: String, _ frames: [WireFrame], ProxyFixture) async throws -> Void
    ) async throws {
        try await withScripted(
            { settings in
                Self.replayOn(&settings)
                settings.acceptMode = .upstream
            },
            script: { index, backend in
                try await backend.acceptUpgrade(extensions: extensions(index))
                try await Self.failFirstSessionThenEcho(index, &backend)
            }
        ) { proxy in
            let request = upgradeRequest(extraFields: "Sec-WebSocket-Extensions: permessage-deflate\r\n")
            // Uncompressed (RSV1 clear): permessage-deflate allows it, and the backends here only echo.
            let (head, frames) = try await Self.sendAndCollect(["hello"], port: proxy.port, request: request)
            try await body(head, frames, proxy)
        }
    }

    @Test("replay, upstream mode: a replacement backend that chose the same extensions gets the replay")
    func replayWithSameExtensions() async throws {
        let answers = [
            "permessage-deflate; client_max_window_bits=15", "Permessage-Deflate;client_max_window_bits = 15",
        ]
        try await replayWithExtensions({ answers[min($0, 1)] }) { head, frames, proxy in
            #expect(head.contains("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15"))
            #expect(frames.filter { $0.opcode == 0x1 }.map(\.text) == ["hello"])
            #expect(frames.last?.closeCode == 1000)
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.replays == 1)
            #expect(record.endReason == nil)
        }
    }

    @Test("replay, upstream mode: a replacement backend that chose other extensions ends the session with 1011")
    func replayWithOtherExtensions() async throws {
        try await replayWithExtensions({ index in index == 0 ? "permessage-deflate" : nil }) { head, frames, proxy in
            #expect(head.contains("Sec-WebSocket-Extensions: permessage-deflate"))
            #expect(frames.filter { $0.opcode == 0x1 }.isEmpty, "nothing framed under the wrong rules")
            #expect(frames.last?.closeCode == 1011)
            let reason = frames.last.map { String(decoding: $0.payload.dropFirst(2), as: UTF8.self) } ?? ""
            #expect(reason.hasPrefix("upstream protocol error: replacement backend chose extensions none"))
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.replays == 1)
            guard case .upstreamProtocolError(let problem) = record.endReason else {
                Issue.record("end reason \(String(describing: record.endReason))")
                return
            }
            #expect(problem.contains("extensions none"))
        }
    }

    @Test("replay: after a backend data message reached the client there is no replay")
    func noReplayAfterBackendData() async throws {
        try await withScripted(
            Self.replayOn,
            script: { _, backend in
                try await backend.acceptUpgrade()
                let first = try await backend.expectFrame()
                try await backend.write(serverFrame(.text, first.payload))
                try await backend.write(serverFrame(.close, closePayload(1011, "failed later")))
                while let frame = try await backend.readFrame(), frame.opcode != 0x8 {}
            }
        ) { proxy in
            let frames = try await Self.sendAndCollect(["hello", "never echoed"], port: proxy.port)
            #expect(frames.filter { $0.opcode == 0x1 }.map(\.text) == ["hello"])
            #expect(frames.last?.closeCode == 1011)
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.replays == 0)
        }
    }

    @Test("the ping gate: the backend gets the proxy's ping first, the client never sees its pong")
    func pingGate() async throws {
        try await withScripted(
            { settings in
                settings.readyGate = .ping
                settings.timing.handshakeTimeoutMs = 2000
            },
            script: { _, backend in
                try await backend.acceptUpgrade()
                let ping = try await backend.expectFrame()
                guard ping.opcode == 0x9, ping.masked, ping.payload.count == 8 else {
                    throw ScriptError.ended("expected the proxy's masked ping first, got opcode \(ping.opcode)")
                }
                // The backend's own ping and an unsolicited pong pass to the client; the answer does not.
                try await backend.write(serverFrame(.ping, Array("backend ping".utf8)))
                try await backend.write(serverFrame(.pong, Array("unsolicited".utf8)))
                try await backend.write(serverFrame(.pong, ping.payload))
                try await backend.echoUntilClose()
            }
        ) { proxy in
            let frames = try await Self.sendAndCollect(["early"], port: proxy.port)
            #expect(frames.filter { $0.opcode == 0x1 }.map(\.text) == ["early"])
            #expect(frames.filter { $0.opcode == 0x9 }.map(\.text) == ["backend ping"])
            #expect(frames.filter { $0.opcode == 0xA }.map(\.text) == ["unsolicited"])
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.pongAfterMs != nil)
            #expect(record.gate == .ping)
        }
    }
}

extension SessionFailurePathTests {
    @Test("replay: messages the client sends while the replay connects are held and come after, once each")
    func messagesDuringReplay() async throws {
        let (failed, failing) = AsyncStream<Void>.makeStream()
        try await withScripted(
            Self.replayOn,
            script: { index, backend in
                try await backend.acceptUpgrade()
                if index == 0 {
                    _ = try await backend.expectFrame()
                    try await backend.write(serverFrame(.close, closePayload(1011, "not set up")))
                    failing.yield()
                    while let frame = try await backend.readFrame(), frame.opcode != 0x8 {}
                } else {
                    try await backend.echoUntilClose()
                }
            }
        ) { proxy in
            let texts = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.text, Array("one".utf8)))
                // Once the first backend has failed, the replay is under way: more messages now.
                var iterator = failed.makeAsyncIterator()
                _ = await iterator.next()
                try await client.write(clientFrame(.text, Array("two".utf8)) + clientFrame(.ping, Array("p".utf8)))
                try await client.write(clientFrame(.text, Array("three".utf8)))
                var texts: [String] = []
                while texts.count < 3, let frame = try await client.readFrame() {
                    if frame.opcode == 0x1 { texts.append(frame.text) }
                    if frame.opcode == 0x8 { break }
                }
                try await client.write(clientFrame(.close, closePayload(1000)))
                while try await client.readFrame() != nil {}
                return texts
            }
            #expect(texts == ["one", "two", "three"])
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.replays == 1)
            #expect(record.clientToUpstream.messages == 3, "each message counted once")
        }
    }

    @Test("replay: a replacement backend that closes before its 101 is retried like any connect")
    func replayRetries() async throws {
        try await withScripted(
            Self.replayOn,
            script: { index, backend in
                switch index {
                case 0:
                    try await backend.acceptUpgrade()
                    _ = try await backend.expectFrame()
                    try await backend.drop()
                case 1:
                    // Reads the upgrade request and leaves without an answer.
                    _ = try await backend.readHead()
                    try await backend.drop()
                default:
                    try await backend.acceptUpgrade()
                    try await backend.echoUntilClose()
                }
            }
        ) { proxy in
            let frames = try await Self.sendAndCollect(["hello"], port: proxy.port)
            #expect(frames.filter { $0.opcode == 0x1 }.map(\.text) == ["hello"])
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.replays == 1)
            #expect(record.connectAttempts == 3)
            #expect(record.patterns.contains(.upstreamConnectRetry))
        }
    }

    @Test("replay: a shutdown while the replay connects ends the session with 1001")
    func shutdownDuringReplay() async throws {
        let (failed, failing) = AsyncStream<Void>.makeStream()
        try await withScripted(
            Self.replayOn,
            script: { index, backend in
                if index == 0 {
                    try await backend.acceptUpgrade()
                    _ = try await backend.expectFrame()
                    try await backend.drop()
                } else {
                    // The replacement is never answered: the replay stays connecting.
                    failing.yield()
                    _ = try await backend.readHead()
                    while try await backend.readFrame() != nil {}
                }
            }
        ) { proxy in
            let close = try await RawClient.session(port: proxy.port) { client -> WireFrame? in
                try await client.write(clientFrame(.text, Array("hello".utf8)))
                var iterator = failed.makeAsyncIterator()
                _ = await iterator.next()
                async let shutdown: Void = proxy.server.shutdown(drain: .zero, grace: .seconds(1))
                var close: WireFrame?
                while let frame = try await client.readFrame() {
                    if frame.opcode == 0x8 {
                        close = frame
                        try await client.write(clientFrame(.close, frame.payload))
                    }
                }
                try await shutdown
                return close
            }
            #expect(close?.closeCode == 1001)
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.endReason == .goingAway)
            #expect(record.replays == 1)
        }
    }
}

extension SessionFailurePathTests {
    @Test("a client's FIN after READY reaches the backend; the backend's FIN ends the session cleanly")
    func clientHalfCloseAnswered() async throws {
        try await withScripted(
            { $0.readyGate = .delay },
            script: { _, backend in
                try await backend.acceptUpgrade()
                let first = try await backend.expectFrame()
                try await backend.write(serverFrame(.text, first.payload))
                // The client's FIN: the end of the stream, then the backend leaves too.
                guard try await backend.readFrame() == nil else { throw ScriptError.ended("expected the client's FIN") }
                try await backend.drop()
            }
        ) { proxy in
            let frames = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.text, Array("bye".utf8)))
                var frames: [WireFrame] = []
                if let echo = try await client.readFrame() { frames.append(echo) }
                try await client.channel.channel.close(mode: .output)
                while let frame = try await client.readFrame() { frames.append(frame) }
                return frames
            }
            #expect(frames.map(\.opcode) == [0x1], "no close frame: the connection just ends, as the backend's did")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.endReason == nil)
            #expect(record.closer == .client)
            #expect(!record.patterns.contains(.upstreamErrorAfterReady))
        }
    }
}
