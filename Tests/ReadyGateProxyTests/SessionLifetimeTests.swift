import NIOCore
import ReadyGateCore
import ReadyGateDemo
import Testing

@testable import ReadyGateProxy

/// A reference that does not keep its object alive; read it on the object's event loop.
final class WeakReference {
    weak var object: AnyObject?

    init(_ object: AnyObject) {
        self.object = object
    }
}

/// What keeps a session alive: while it runs, its channels' handlers; once its summary is out,
/// nothing. A reference kept by a timer, a future's callback or a handler the session forgot to
/// let go of would hold its state (and through it the backend connection's) for as long as the
/// process runs.
@Suite("Session lifetime over loopback", .serialized)
struct SessionLifetimeTests {
    /// Runs one session to the end in `close` and returns whether its object was released by the
    /// time its summary was out.
    func sessionIsReleased(
        proxy configure: @escaping (inout ReadyGateSettings) -> Void = { _ in },
        close: @escaping @Sendable (inout WebSocketConnection) async throws -> Void
    ) async throws -> Bool {
        try await withBackendAndProxy(
            backend: { $0.setupMs = 0 },
            proxy: { settings in
                settings.readyGate = .message
                configure(&settings)
            }
        ) { _, proxy in
            let sessions = proxy.server.environment.sessions
            let probe = try await withTimeout(seconds: 30) {
                try await DemoWebSocketClient.withConnection(group: testGroup, port: proxy.port) { connection in
                    #expect(try await connection.next() == .text(#"{"type":"connection_ready"}"#))
                    try await connection.send(text: "hello")
                    #expect(try await connection.next() == .text("hello"))
                    let member = try #require(sessions.members.first)
                    let probe = try await member.eventLoop.submit {
                        NIOLoopBound(WeakReference(member.value), eventLoop: member.eventLoop)
                    }.get()
                    try await close(&connection)
                    return probe
                }
            }
            _ = try await proxy.sessions.waitFor(1)
            // Asked on the session's loop after the summary: whatever ran at the end has run.
            let released = try await probe.eventLoop.submit { probe.value.object == nil }.get()
            #expect(sessions.count == 0)
            return released
        }
    }

    @Test("a session the client closes is released once its summary is out")
    func clientCloses() async throws {
        let released = try await sessionIsReleased { connection in
            try await connection.close(code: 1000)
            _ = try await connection.next()
        }
        #expect(released, "something still holds the finished session")
    }

    @Test("a session with keepalive and replay (their timers and filters) is released once its summary is out")
    func keepaliveAndReplay() async throws {
        let released = try await sessionIsReleased(
            proxy: { settings in
                settings.pingIntervalMs = 60_000
                settings.replay = true
            },
            close: { connection in
                try await connection.close(code: 1000)
                _ = try await connection.next()
            }
        )
        #expect(released, "something still holds the finished session")
    }
}
