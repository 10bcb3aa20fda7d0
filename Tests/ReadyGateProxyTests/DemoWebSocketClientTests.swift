import NIOCore
import ReadyGateDemo
import Testing

/// The test and demo client itself, against a scripted server: what the proxy's tests conclude
/// depends on it seeing every frame the server sent.
@Suite("Demo WebSocket client over loopback", .serialized)
struct DemoWebSocketClientTests {
    @Test("a frame that arrives in the same read as the 101 is delivered, not dropped with the HTTP decoder")
    func frameBehindThe101() async throws {
        let greeting = Array(#"{"type":"connection_ready"}"#.utf8)
        let backend = try await ScriptedBackend { _, connection in
            // One write, so that the client reads the 101 and the frame together.
            try await connection.acceptUpgrade(then: serverFrame(.text, greeting))
            _ = try await connection.readFrame()
        }
        let port = backend.port
        let first = try await withTimeout(seconds: 10) {
            try await DemoWebSocketClient.withConnection(group: testGroup, port: port) { try await $0.next() }
        }
        await backend.close()
        #expect(first == .text(#"{"type":"connection_ready"}"#))
    }
}
