import NIOConcurrencyHelpers
import NIOCore
import ReadyGateCore
import Testing

/// Keepalive pings and the WebSocket idle timeout over loopback, against scripted peers.
extension SessionFailurePathTests {
    static func keepalive(_ settings: inout ReadyGateSettings) {
        settings.readyGate = .delay
        settings.pingIntervalMs = 300
    }

    /// For the tests whose peers answer: two missed rounds end a session, so the interval must be
    /// longer than a scripted peer on a loaded test machine takes to answer (300 ms was not, with
    /// the whole suite running in parallel).
    static func keepaliveAnswered(_ settings: inout ReadyGateSettings) {
        settings.readyGate = .delay
        settings.pingIntervalMs = 1_000
    }

    /// A backend that echoes data, answers pings (`answersPings`), and records the pings it got,
    /// until the client's close.
    static func backendRecordingPings(
        _ backend: inout ScriptedConnection,
        answersPings: Bool
    ) async throws -> [WireFrame] {
        var pings: [WireFrame] = []
        while let frame = try await backend.readFrame() {
            switch frame.opcode {
            case 0x8:
                try await backend.write(serverFrame(.close, frame.payload))
                return pings
            case 0x9:
                pings.append(frame)
                if answersPings { try await backend.write(serverFrame(.pong, frame.payload)) }
            case 0x1:
                try await backend.write(serverFrame(.text, frame.payload))
            default:
                break
            }
        }
        return pings
    }

    @Test("keepalive: both sides get the proxy's pings; only its own pongs are taken out")
    func keepalivePings() async throws {
        let backendPings = NIOLockedValueBoxForTests<[WireFrame]>([])
        try await withScripted(
            Self.keepaliveAnswered,
            script: { _, backend in
                try await backend.acceptUpgrade()
                let pings = try await Self.backendRecordingPings(&backend, answersPings: true)
                backendPings.set(pings)
            }
        ) { proxy in
            let seen = try await RawClient.session(port: proxy.port) { client in
                try await client.write(clientFrame(.text, Array("hello".utf8)))
                var frames: [WireFrame] = []
                var proxyPings = 0
                while proxyPings < 3, let frame = try await client.readFrame() {
                    frames.append(frame)
                    if frame.opcode == 0x9 {
                        proxyPings += 1
                        try await client.write(clientFrame(.pong, frame.payload))
                        // The client's own ping goes to the backend, whose pong comes back.
                        if proxyPings == 2 { try await client.write(clientFrame(.ping, Array("mine".utf8))) }
                    }
                }
                try await client.write(clientFrame(.close, closePayload(1000)))
                while let frame = try await client.readFrame() { frames.append(frame) }
                return frames
            }
            #expect(seen.filter { $0.opcode == 0x1 }.map(\.text) == ["hello"])
            // A loop, not `seen.filter { $0.opcode == 0x9 }`: in this function's debug build (Swift
            // 6.3.1) that filter returned one of the three pings while `reduce` counted three.
            var pings: [WireFrame] = []
            for frame in seen where frame.opcode == 0x9 { pings.append(frame) }
            #expect(pings.count >= 3)
            #expect(pings.allSatisfy { $0.payload.count == 8 && !$0.masked })
            // The only pong the client sees is the backend's answer to its own ping.
            #expect(seen.filter { $0.opcode == 0xA }.map(\.text).contains("mine"))
            #expect(seen.filter { $0.opcode == 0xA }.allSatisfy { $0.text == "mine" })
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.endReason == nil)
            let atBackend = backendPings.get()
            #expect(atBackend.filter { $0.payload.count == 8 }.count >= 2)
            #expect(atBackend.allSatisfy { $0.masked })
            #expect(atBackend.contains { $0.text == "mine" })
        }
    }

    @Test("keepalive: a client that never answers is closed 1001 after two missed pongs")
    func unresponsiveClient() async throws {
        try await withScripted(
            Self.keepalive,
            script: { _, backend in
                try await backend.acceptUpgrade()
                _ = try await Self.backendRecordingPings(&backend, answersPings: true)
            }
        ) { proxy in
            let close = try await RawClient.session(port: proxy.port) { client -> WireFrame? in
                try await client.write(clientFrame(.text, Array("hello".utf8)))
                while let frame = try await client.readFrame() {
                    if frame.opcode == 0x8 {
                        try await client.write(clientFrame(.close, frame.payload))
                        return frame
                    }
                }
                return nil
            }
            #expect(close?.closeCode == 1001)
            #expect(close.map { String(decoding: $0.payload.dropFirst(2), as: UTF8.self) } == "client unresponsive")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.endReason == .peerUnresponsive(.client))
            #expect(record.closer == .proxy)
        }
    }

    @Test("keepalive: a backend that never answers: the client gets 1001 upstream unresponsive")
    func unresponsiveBackend() async throws {
        try await withScripted(
            Self.keepalive,
            script: { _, backend in
                try await backend.acceptUpgrade()
                _ = try await Self.backendRecordingPings(&backend, answersPings: false)
            }
        ) { proxy in
            let close = try await RawClient.session(port: proxy.port) { client -> WireFrame? in
                while let frame = try await client.readFrame() {
                    if frame.opcode == 0x9 { try await client.write(clientFrame(.pong, frame.payload)) }
                    if frame.opcode == 0x8 {
                        try await client.write(clientFrame(.close, frame.payload))
                        return frame
                    }
                }
                return nil
            }
            #expect(close?.closeCode == 1001)
            #expect(close.map { String(decoding: $0.payload.dropFirst(2), as: UTF8.self) } == "upstream unresponsive")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.endReason == .peerUnresponsive(.upstream))
        }
    }

    @Test("idle timeout: a session with no traffic is closed 1001 both ways; traffic keeps it open")
    func idleTimeout() async throws {
        try await withScripted(
            { settings in
                settings.readyGate = .delay
                settings.wsIdleTimeoutMs = 300
            },
            script: { _, backend in
                try await backend.acceptUpgrade()
                _ = try await Self.backendRecordingPings(&backend, answersPings: true)
            }
        ) { proxy in
            let (echoes, close) = try await RawClient.session(port: proxy.port) { client -> (Int, WireFrame?) in
                // Ten messages 100 ms apart: 1 s of traffic, longer than the timeout, stays open.
                var echoes = 0
                for index in 0..<10 {
                    try await client.write(clientFrame(.text, Array("m\(index)".utf8)))
                    guard let frame = try await client.readFrame(), frame.opcode == 0x1 else { break }
                    echoes += 1
                    try await Task.sleep(for: .milliseconds(100))
                }
                while let frame = try await client.readFrame() {
                    if frame.opcode == 0x8 {
                        try await client.write(clientFrame(.close, frame.payload))
                        return (echoes, frame)
                    }
                }
                return (echoes, nil)
            }
            #expect(echoes == 10)
            #expect(close?.closeCode == 1001)
            #expect(close.map { String(decoding: $0.payload.dropFirst(2), as: UTF8.self) } == "idle timeout")
            let record = try #require(try await proxy.sessions.waitFor(1).first)
            #expect(record.endReason == .idleTimeout)
            #expect(record.upstreamCloseCode == 1001, "the backend was told too, and answered")
        }
    }
}

/// A value shared between a scripted peer and the test body.
final class NIOLockedValueBoxForTests<Value: Sendable>: Sendable {
    private let box: NIOLockedValueBox<Value>
    init(_ value: Value) { box = NIOLockedValueBox(value) }
    func set(_ value: Value) { box.withLockedValue { $0 = value } }
    func get() -> Value { box.withLockedValue { $0 } }
}
