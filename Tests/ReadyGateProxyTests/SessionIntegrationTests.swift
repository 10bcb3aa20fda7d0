import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import ReadyGateCore
import ReadyGateDemo
import ReadyGateProxy
import ReadyGateTestSupport
import Testing

/// Loopback integration tests: real sockets on 127.0.0.1, the demo backend in-process, ReadyGate between.
@Suite("WebSocket sessions over loopback", .serialized)
struct SessionIntegrationTests {
    /// (a) The incident and its fix: 200 clients that send right after the handshake.
    @Test("a racy backend fails early senders directly and none through the message gate")
    func racyBackendDirectAndThroughProxy() async throws {
        // The backend's handler is ready 500 ms after its accept: long enough that a loaded test
        // machine still delivers most direct first frames before it.
        try await withBackendAndProxy(
            backend: { $0.setupMs = 500 },
            proxy: { settings in
                settings.readyGate = .message
                settings.timing.handshakeTimeoutMs = 5000
            }
        ) { backend, proxy in

            let direct = await runConcurrently(200) { index in
                await earlyClientSession(port: backend.port, message: "direct \(index)")
            }
            let directFailures = direct.filter { $0 == .closed(1011) }.count
            #expect(directFailures > 100, "the backend should lose most early senders: \(directFailures)/200")

            let proxied = await runConcurrently(200) { index in
                await earlyClientSession(port: proxy.port, message: "proxied \(index)")
            }
            let lost = proxied.filter { $0 != .echoed }
            #expect(lost.isEmpty, "lost through ReadyGate: \(lost.prefix(5))")
            #expect(backend.counters.failedEarly == directFailures)

            let records = try await proxy.sessions.waitFor(200)
            #expect(records.filter { $0.patterns.contains(.earlyClientFrames) }.count > 0)
        }
    }

    /// (b) A cold start: nothing listens for 300 ms; retries carry every session through, in order.
    @Test("a backend that starts late gets every buffered frame once and in order")
    func backendNotListeningYet() async throws {
        let reserved = try await DemoBackend.start(group: testGroup)
        let port = reserved.port
        try await reserved.close()
        let proxy = try await ProxyFixture.start(upstreamPort: port) { settings in
            settings.readyGate = .message
            settings.timing.handshakeTimeoutMs = 5000
            settings.timing.retryCapMs = 50
        }
        let lateStart = Task {
            try await Task.sleep(for: .milliseconds(300))
            var configuration = DemoBackendConfiguration()
            configuration.setupMs = 0
            return try await DemoBackend.start(configuration: configuration, group: testGroup, port: port)
        }
        let outcomes = await runConcurrently(20) { index in
            do {
                let frames = (0..<5).map { DemoWebSocketClient.text("s\(index)-m\($0)") }
                return try await DemoWebSocketClient.withConnection(
                    group: testGroup,
                    port: proxy.port,
                    firstFrames: frames
                ) { connection in
                    var echoes: [String] = []
                    while echoes.count < 5, let message = try await connection.next() {
                        guard case .text(let text) = message else { return .failed("\(message)") }
                        if text.hasPrefix("{") { continue }
                        echoes.append(text)
                    }
                    try await connection.close()
                    return echoes == (0..<5).map { "s\(index)-m\($0)" } ? .echoed : .failed("order: \(echoes)")
                }
            } catch {
                return .failed("\(error)")
            }
        }
        #expect(outcomes.allSatisfy { $0 == .echoed }, "\(outcomes.filter { $0 != .echoed }.prefix(3))")
        let backend = try await lateStart.value
        #expect(backend.counters.echoedMessages == 100)
        let records = try await proxy.sessions.waitFor(20)
        #expect(records.contains { $0.connectAttempts > 1 && $0.patterns.contains(.upstreamConnectRetry) })
        try await proxy.stop()
        try await backend.close()
    }

    /// (c) A backend that refuses the upgrade with 403, in both accept modes.
    @Test("a 403 becomes close 1008 in immediate mode and is relayed in upstream mode")
    func upstreamRejection() async throws {
        var configuration = DemoBackendConfiguration()
        configuration.rejectStatus = 403
        let backend = try await DemoBackend.start(configuration: configuration, group: testGroup)

        let immediate = try await ProxyFixture.start(upstreamPort: backend.port)
        let closed = try await DemoWebSocketClient.withConnection(group: testGroup, port: immediate.port) {
            try await $0.next()
        }
        #expect(closed == .close(code: 1008, reason: "upstream rejected: 403"))
        let record = try await immediate.sessions.waitFor(1)[0]
        #expect(record.patterns.contains(.upstreamRejected))
        try await immediate.stop()

        let upstreamMode = try await ProxyFixture.start(upstreamPort: backend.port) { $0.acceptMode = .upstream }
        let response = try await rawExchange(port: upstreamMode.port, request: upgradeRequest())
        #expect(response.hasPrefix("HTTP/1.1 403 Forbidden\r\n"), "\(response)")
        #expect(response.contains("X-Demo-Backend: rejected"))
        #expect(response.hasSuffix("rejected by the demo backend\n"))
        try await upstreamMode.stop()
        try await backend.close()
    }

    /// (d) A backend that accepts TCP and never answers.
    @Test("a silent backend ends the session with 1013 at the handshake timeout")
    func silentBackend() async throws {
        try await withBackendAndProxy(
            backend: { $0.silent = true },
            proxy: { $0.timing.handshakeTimeoutMs = 300 }
        ) { backend, proxy in
            let message = try await DemoWebSocketClient.withConnection(
                group: testGroup,
                port: proxy.port,
                firstFrames: [DemoWebSocketClient.text("hello?")]
            ) { try await $0.next() }
            #expect(message == .close(code: 1013, reason: "upstream unavailable"))
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.endReason == .upstreamUnavailable)
            #expect(record.undeliveredFrames == 1)
        }
    }

    /// (e) 1 MiB of early frames against a slow backend, through a 256 KiB buffer.
    @Test("1 MiB of early frames arrives intact while the buffer stays bounded")
    func earlyMegabyte() async throws {
        let bound = 256 * 1024
        try await withBackendAndProxy(
            backend: { $0.setupMs = 400 },
            proxy: { settings in
                settings.readyGate = .message
                settings.timing.handshakeTimeoutMs = 5000
                settings.maxBufferBytes = bound
            }
        ) { backend, proxy in
            var generator = SplitMix64(seed: 42)
            let chunks = (0..<64).map { _ in (0..<16_384).map { _ in UInt8.random(in: 0...255, using: &generator) } }
            let sent = chunks.flatMap { $0 }
            let frames = chunks.map { DemoWebSocketClient.frame(.binary, ByteBuffer(bytes: $0)) }
            let received = try await DemoWebSocketClient.withConnection(
                group: testGroup,
                port: proxy.port,
                firstFrames: frames
            ) { connection in
                var bytes: [UInt8] = []
                while bytes.count < sent.count, let message = try await connection.next() {
                    if case .binary(let data) = message { bytes += Array(buffer: data) }
                }
                try await connection.close()
                return bytes
            }
            #expect(received.count == sent.count)
            #expect(fnv1a(received) == fnv1a(sent))
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.patterns.contains(.bufferBackpressure))
            // One read batch may land after the bound is reached: NIO reads up to `maxMessagesPerRead`
            // (4) buffers of at most 64 KiB each before the pause takes effect.
            #expect(record.peakHeldBytes <= bound + 4 * 65_536, "peak \(record.peakHeldBytes)")
            #expect(record.peakHeldBytes >= bound)
        }
    }

    /// (f) The client gives up while its frames are held.
    @Test("a client that closes while pending leaves the backend a masked close frame")
    func clientClosesWhilePending() async throws {
        try await withBackendAndProxy(
            backend: { backend in
                backend.setupMs = 10_000
                backend.greeting = "hello, still setting up"
            },
            proxy: { settings in
                settings.readyGate = .message
                settings.timing.handshakeTimeoutMs = 20_000
            }
        ) { backend, proxy in
            let reply = try await DemoWebSocketClient.withConnection(
                group: testGroup,
                port: proxy.port,
                firstFrames: [DemoWebSocketClient.text("never delivered")]
            ) { connection in
                // The backend's greeting is relayed at once: the proxy is connected upstream, not ready.
                #expect(try await connection.next() == .text("hello, still setting up"))
                try await connection.close(code: 1000)
                return try await connection.next()
            }
            #expect(reply == .close(code: 1000, reason: ""))
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.closer == .client)
            #expect(record.undeliveredFrames == 1)
            try await backend.waitUntil { !$0.closeFrames.isEmpty }
            #expect(backend.counters.closeFrames.count == 1)
            #expect(backend.counters.closeFrames.first?.masked == true)
            #expect(backend.counters.closeFrames.first?.code == 1000)
            #expect(backend.counters.failedEarly == 0)
        }
    }

    /// (f) again, earlier: the client leaves while the backend has not answered the upgrade yet.
    @Test("a client that leaves during the upstream upgrade still leaves the backend a masked close frame")
    func clientLeavesDuringUpstreamUpgrade() async throws {
        try await withBackendAndProxy(
            backend: { backend in
                backend.upgradeDelayMs = 200
                backend.setupMs = 10_000
            },
            proxy: { settings in
                settings.readyGate = .message
                settings.timing.handshakeTimeoutMs = 20_000
            }
        ) { backend, proxy in
            let reply = try await DemoWebSocketClient.withConnection(
                group: testGroup,
                port: proxy.port,
                firstFrames: [DemoWebSocketClient.text("never delivered")]
            ) { connection in
                // The backend has the request but holds its 101.
                try await backend.waitUntil { !$0.requests.isEmpty }
                try await connection.close(code: 1000)
                return try await connection.next()
            }
            #expect(reply == .close(code: 1000, reason: ""))
            try await backend.waitUntil { !$0.closeFrames.isEmpty }
            #expect(backend.counters.closeFrames.first?.masked == true)
            #expect(backend.counters.closeFrames.first?.code == 1000)
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.closer == .client)
            #expect(record.undeliveredFrames == 1)
        }
    }

    /// (g) After the splice, bytes are relayed as they are.
    @Test("text, binary, fragmented and 16 MiB messages round-trip byte-exact")
    func roundTrips() async throws {
        // 16 MiB masked and unmasked byte by byte in a debug build keep a loop busy for seconds:
        // this test has loops of its own.
        try await withOwnLoops { group in
            try await withBackendAndProxy(
                group: group,
                backend: { $0.setupMs = 0 },
                proxy: { $0.readyGate = .message }
            ) { backend, proxy in
                var generator = SplitMix64(seed: 7)
                var big = ByteBuffer()
                big.reserveCapacity(16 << 20)
                for _ in 0..<((16 << 20) / 8) { big.writeInteger(generator.next()) }
                try await DemoWebSocketClient.withConnection(group: group, port: proxy.port) { connection in
                    #expect(try await connection.next() == .text(#"{"type":"connection_ready"}"#))
                    try await connection.send(text: "héllo, wörld")
                    #expect(try await connection.next() == .text("héllo, wörld"))
                    try await connection.send(DemoWebSocketClient.frame(.binary, ByteBuffer(bytes: [0, 1, 2, 255])))
                    #expect(try await connection.next() == .binary(ByteBuffer(bytes: [0, 1, 2, 255])))
                    try await connection.send(DemoWebSocketClient.frame(.text, ByteBuffer(string: "frag"), fin: false))
                    try await connection.send(DemoWebSocketClient.frame(.ping, ByteBuffer(string: "p")))
                    try await connection.send(
                        DemoWebSocketClient.frame(.continuation, ByteBuffer(string: "men"), fin: false)
                    )
                    try await connection.send(
                        DemoWebSocketClient.frame(.continuation, ByteBuffer(string: "ted"), fin: true)
                    )
                    #expect(try await connection.next() == .pong(ByteBuffer(string: "p")))
                    #expect(try await connection.next() == .text("fragmented"))
                    try await connection.send(DemoWebSocketClient.frame(.binary, big))
                    guard case .binary(let echoed) = try await connection.next() else {
                        Issue.record("no binary echo")
                        return
                    }
                    #expect(echoed.readableBytes == 16 << 20)
                    #expect(echoed == big, "the 16 MiB echo differs")
                    try await connection.close()
                    #expect(try await connection.next() == .close(code: 1000, reason: ""))
                }
                let record = try await proxy.sessions.waitFor(1)[0]
                #expect(record.clientToUpstream.messages == 4)
                #expect(record.clientToUpstream.closeCode == 1000)
                #expect(record.upstreamToClient.messages == 5)
            }
        }
    }

    /// (h) Bad upgrade requests get precise answers and the proxy keeps serving.
    @Test("malformed upgrades get 400 or 426 and others are still served")
    func malformedUpgrades() async throws {
        try await withBackendAndProxy(
            backend: { $0.setupMs = 0 },
            proxy: { _ in }
        ) { backend, proxy in
            let cases: [(request: String, status: String)] = [
                (upgradeRequest(version: "8"), "426 Upgrade Required"),
                (upgradeRequest(key: "short"), "400 Bad Request"),
                (upgradeRequest().replacingFirst("GET", with: "POST"), "400 Bad Request"),
                (upgradeRequest().replacingFirst("Connection: Upgrade\r\n", with: ""), "400 Bad Request"),
                (upgradeRequest().replacingFirst("Host: 127.0.0.1\r\n", with: ""), "400 Bad Request"),
                ("GARBAGE\r\n\r\n", "400 Bad Request"),
                // A plain request is forwarded: the demo backend's own answer comes back.
                ("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "404 Not Found"),
            ]
            for (request, status) in cases {
                let response = try await rawExchange(port: proxy.port, request: request)
                #expect(response.hasPrefix("HTTP/1.1 \(status)\r\n"), "\(request.prefix(40)) → \(response.prefix(80))")
                if status.hasPrefix("426") { #expect(response.contains("Sec-WebSocket-Version: 13\r\n")) }
            }
            #expect(await earlyClientSession(port: proxy.port, message: "still here") == .echoed)
        }
    }
}

/// Control frames and protocol errors while the client's frames are held.
@Suite("Client frames before READY over loopback", .serialized)
struct HeldFrameProtocolTests {
    @Test("a ping is answered by the proxy and an unmasked frame closes with 1002")
    func pingThenProtocolError() async throws {
        try await withPendingSession { _, proxy in
            let greeting = Array("are you there".utf8)
            let ping = WebSocketFrameWriter.frame(opcode: .ping, payload: greeting, maskingKey: 0x0102_0304)
            let unmasked = WebSocketFrameWriter.frame(opcode: .text, payload: Array("no mask".utf8))
            let request = Array(upgradeRequest().utf8) + ping + unmasked
            let response = try await rawExchange(port: proxy.port, bytes: request)
            let text = String(decoding: response, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
            let pong = WebSocketFrameWriter.frame(opcode: .pong, payload: greeting)
            #expect(response.containsSequence(pong), "no pong in \(text)")
            let reason = WebSocketProtocolError(.maskingRuleViolated).description
            let close = WebSocketFrameWriter.frame(
                opcode: .close,
                payload: WebSocketFrameWriter.closePayload(code: 1002, reason: reason)
            )
            #expect(response.containsSequence(close), "no close 1002 in \(text)")
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.endReason == .clientProtocolError(WebSocketProtocolError(.maskingRuleViolated)))
        }
    }

    @Test("a message over the limit before READY closes with 1009")
    func oversizedMessage() async throws {
        try await withPendingSession({ $0.maxMessageBytes = 1000 }) { _, proxy in
            let reply = try await DemoWebSocketClient.withConnection(
                group: testGroup,
                port: proxy.port,
                firstFrames: [DemoWebSocketClient.frame(.binary, ByteBuffer(repeating: 7, count: 2000))]
            ) { try await $0.next() }
            guard case .close(let code, _) = reply else {
                Issue.record("expected a close frame, got \(String(describing: reply))")
                return
            }
            #expect(code == 1009)
        }
    }
}

extension Array where Element == UInt8 {
    func containsSequence(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, count >= needle.count else { return needle.isEmpty }
        return (0...(count - needle.count)).contains { self[$0..<$0 + needle.count].elementsEqual(needle) }
    }
}

/// FNV-1a, a checksum to compare large payloads without printing them.
func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return hash
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        var characters = Array(self)
        let pattern = Array(target)
        guard !pattern.isEmpty, characters.count >= pattern.count else { return self }
        for start in 0...(characters.count - pattern.count)
        where Array(characters[start..<start + pattern.count]) == pattern {
            characters.replaceSubrange(start..<start + pattern.count, with: Array(replacement))
            return String(characters)
        }
        return self
    }
}

/// Shutting down ends live sessions with 1001 (DESIGN §2's close-code table).
@Suite("Shutdown over loopback", .serialized)
struct ShutdownTests {
    @Test("shutdown closes a spliced session with 1001 going away and the backend gets a masked close")
    func goingAway() async throws {
        try await withBackendAndProxy(
            backend: { $0.setupMs = 0 },
            proxy: { settings in
                settings.readyGate = .message
                settings.timing.handshakeTimeoutMs = 5000
                // Only the client's answer can end the session in time.
                settings.closeLingerMs = 60_000
            }
        ) {
            backend,
            proxy in
            // Bounded: a hang here fails the test instead of the run, and says where it stuck. (It
            // once hung at the ready message under heavy load: the client dropped a frame read
            // together with the 101; DemoWebSocketClientTests covers that.)
            let stage = NIOLockedValueBoxForTests("connecting")
            let message: ReceivedMessage?
            do {
                message = try await withTimeout(seconds: 60) {
                    try await DemoWebSocketClient.withConnection(group: testGroup, port: proxy.port) {
                        connection in
                        stage.set("waiting for the ready message")
                        #expect(try await connection.next() == .text(#"{"type":"connection_ready"}"#))
                        stage.set("waiting for the echo")
                        try await connection.send(text: "ready?")
                        #expect(try await connection.next() == .text("ready?"))
                        // The shutdown waits for the session, which waits for the client's close frame:
                        // the client must read and answer while the shutdown runs.
                        stage.set("waiting for the proxy's close frame")
                        async let shutdown: Void = proxy.server.shutdown(drain: .zero, grace: .seconds(30))
                        let message = try await connection.next()
                        stage.set("waiting for the shutdown to return")
                        try await shutdown
                        return message
                    }
                }
            } catch {
                Issue.record("stuck \(stage.get())")
                throw error
            }
            #expect(message == .close(code: 1001, reason: "going away"))
            #expect(proxy.server.environment.sessions.count == 0, "the shutdown returned with the session still live")
            try await backend.waitUntil { !$0.closeFrames.isEmpty }
            #expect(backend.counters.closeFrames.first?.code == 1001)
            #expect(backend.counters.closeFrames.first?.masked == true)
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.endReason == .goingAway)
        }
    }

    @Test("during the drain a session runs on and ends by itself; new connections are refused")
    func drainLetsSessionsFinish() async throws {
        try await withBackendAndProxy(
            backend: { $0.setupMs = 0 },
            proxy: { $0.readyGate = .message }
        ) { backend, proxy in
            let port = proxy.port
            // Bounded: a hang here fails the test instead of the run.
            try await withTimeout(seconds: 60) {
                try await DemoWebSocketClient.withConnection(group: testGroup, port: port) { connection in
                    #expect(try await connection.next() == .text(#"{"type":"connection_ready"}"#))
                    async let shutdown: Void = proxy.server.shutdown(drain: .seconds(30), grace: .seconds(1))
                    // The listener closes before the drain starts.
                    try await proxy.server.closeFuture.get()
                    await #expect(throws: (any Error).self) { try await sendAndLeave(port: port, bytes: []) }
                    try await connection.send(text: "still there?")
                    #expect(try await connection.next() == .text("still there?"))
                    try await connection.close(code: 1000)
                    #expect(try await connection.next() == .close(code: 1000, reason: ""))
                    try await shutdown
                }
            }
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.endReason != .goingAway, "the session was ended, not left to finish")
            #expect(record.clientToUpstream.closeCode == 1000)
            #expect(proxy.server.environment.sessions.count == 0)
        }
    }
}

/// The close handshake when the proxy ends a session (RFC 6455 §5.5.1, §7.1.1).
@Suite("Close handshake over loopback", .serialized)
struct CloseHandshakeTests {
    /// A backend that refuses every upgrade with 403: in `immediate` mode the client has its 101
    /// and gets `1008 upstream rejected: 403` (a 20 s handshake timeout keeps a slow machine from
    /// turning it into 1013); the proxy waits `linger` ms for the client's answer.
    func withRefusingBackend(linger: Int, _ body: (ProxyFixture) async throws -> Void) async throws {
        try await withBackendAndProxy(
            backend: { $0.rejectStatus = 403 },
            proxy: {
                $0.timing.handshakeTimeoutMs = 20_000
                $0.closeLingerMs = linger
            }
        ) { _, proxy in try await body(proxy) }
    }

    static let reason = SessionCloseReason.upstreamRejected(status: 403).reasonText

    @Test("after its close frame the proxy reads the client's answer, then ends the connection")
    func clientAnswers() async throws {
        // A linger far beyond any scheduling delay of a loaded test machine: the client's answer
        // must be read, not raced against a timer.
        try await withRefusingBackend(linger: 60_000) { proxy in
            try await RawConnection.with(port: proxy.port) { connection in
                try await connection.send(upgradeRequest())
                _ = try await connection.read(until: Self.reason)
                let answer = WebSocketFrameWriter.frame(
                    opcode: .close,
                    payload: WebSocketFrameWriter.closePayload(code: 1008, reason: ""),
                    maskingKey: 0x0A0B_0C0D
                )
                try await connection.send(bytes: answer)
                await #expect(throws: RawConnection.ConnectionClosed.self) {
                    _ = try await connection.read(until: "never sent")
                }
            }
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.endReason == .upstreamRejected(status: 403))
            #expect(record.clientToUpstream.sawClose, "the proxy closed before it read the client's close frame")
            #expect(record.clientToUpstream.closeCode == 1008)
        }
    }

    @Test("a client that never answers the close frame is closed after the linger")
    func clientSilent() async throws {
        try await withRefusingBackend(linger: 200) { proxy in
            try await RawConnection.with(port: proxy.port) { connection in
                try await connection.send(upgradeRequest())
                _ = try await connection.read(until: Self.reason)
                await #expect(throws: RawConnection.ConnectionClosed.self) {
                    _ = try await connection.read(until: "never sent")
                }
            }
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.endReason == .upstreamRejected(status: 403))
            #expect(!record.clientToUpstream.sawClose)
        }
    }
}
