import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// The delay gate's delay over loopback: a backend that fails right after READY makes the next
/// session wait longer; `READYGATE_ADAPTIVE=false` pins it.
@Suite("Adaptive delay over loopback", .serialized)
struct AdaptiveDelayIntegrationTests {
    /// A backend whose handler fails the first message with 1011.
    static func failingBackend() async throws -> ScriptedBackend {
        try await ScriptedBackend { _, backend in
            try await backend.acceptUpgrade()
            _ = try await backend.expectFrame()
            try await backend.write(serverFrame(.close, closePayload(1011, "not ready")))
            while let frame = try await backend.readFrame(), frame.opcode != 0x8 {}
        }
    }

    static func oneSession(port: Int) async throws {
        try await RawClient.session(port: port) { client in
            try await client.write(clientFrame(.text, Array("first".utf8)))
            while let frame = try await client.readFrame() {
                if frame.opcode == 0x8 { try await client.write(clientFrame(.close, frame.payload)) }
            }
        }
    }

    @Test("failures after READY double the delay for later sessions", arguments: [true, false])
    func grows(adaptive: Bool) async throws {
        let backend = try await Self.failingBackend()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port) { settings in
            settings.readyGate = .delay
            settings.timing.baseDelayMs = 5
            settings.adaptiveDelay = adaptive
        }
        do {
            try await withTimeout(seconds: 30) {
                for _ in 0..<3 { try await Self.oneSession(port: proxy.port) }
            }
            let records = try await proxy.sessions.waitFor(3)
            #expect(records.allSatisfy { $0.patterns.contains(.upstreamErrorAfterReady) })
            #expect(proxy.server.environment.gateDelayMs == (adaptive ? 40 : 5))
            let metrics = String(decoding: proxy.server.environment.metrics.registry.emitToBuffer(), as: UTF8.self)
            #expect(metrics.contains("readygate_gate_delay_seconds \(adaptive ? "0.04" : "0.005")"), "\(metrics)")
        } catch {
            try? await proxy.stop()
            await backend.close()
            throw error
        }
        try await proxy.stop()
        await backend.close()
    }
}
