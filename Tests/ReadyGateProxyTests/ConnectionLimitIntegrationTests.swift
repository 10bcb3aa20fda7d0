import NIOConcurrencyHelpers
import NIOCore
import ReadyGateCore
import ReadyGateDemo
import ReadyGateTestSupport
import Testing

@testable import ReadyGateProxy

/// `READYGATE_MAX_CONNECTIONS` over loopback.
@Suite("Connection limit over loopback", .serialized)
struct ConnectionLimitIntegrationTests {
    static let readyMessage = #"{"type":"connection_ready"}"#

    @Test(
        "a flood past READYGATE_MAX_CONNECTIONS gets 503 while an established session relays; a closed one frees its slot"
    )
    func connectionFlood() async throws {
        try await withBackendAndProxy(
            backend: { $0.setupMs = 0 },
            proxy: { settings in
                settings.readyGate = .message
                settings.maxConnections = 1
            }
        ) { backend, proxy in
            let port = proxy.port
            let environment = proxy.server.environment
            let flood = 20
            try await withTimeout(seconds: 60) {
                try await DemoWebSocketClient.withConnection(group: testGroup, port: port) { connection in
                    #expect(try await connection.next() == .text(Self.readyMessage))
                    try await connection.send(text: "before")
                    #expect(try await connection.next() == .text("before"))
                    #expect(environment.connectionLimit.activeConnections == 1)

                    // Half plain requests, half upgrades, all at once.
                    let answers = try await withThrowingTaskGroup(of: String.self) { group in
                        for index in 0..<flood {
                            let request =
                                index.isMultiple(of: 2)
                                ? upgradeRequest() : "GET /plain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                            group.addTask { try await rawExchange(port: port, request: request) }
                        }
                        var answers: [String] = []
                        for try await answer in group { answers.append(answer) }
                        return answers
                    }
                    for answer in answers {
                        #expect(answer.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "\(answer)")
                        #expect(answer.lowercased().contains("\r\nconnection: close\r\n"))
                        #expect(answer.hasSuffix(ConnectionRefusalHandler.body))
                        #expect(!answer.contains(" 101 "))
                    }

                    // The established session relayed through the flood and still does.
                    try await connection.send(text: "after")
                    #expect(try await connection.next() == .text("after"))
                    try await connection.close(code: 1000)
                    #expect(try await connection.next() == .close(code: 1000, reason: ""))
                }
            }
            // The session's record comes after its client connection closed: the slot is free.
            _ = try await proxy.sessions.waitFor(1)
            #expect(environment.connectionLimit.activeConnections == 0)
            #expect(await earlyClientSession(port: port, message: "next") == .echoed)
            _ = try await proxy.sessions.waitFor(2)

            #expect(metricValue(environment.metrics, "readygate_connections_refused_total") == Double(flood))
            #expect(metricValue(environment.metrics, "readygate_connections_active") == 0)
            #expect(backend.counters.connections == 2, "no refused request reached the backend")
        }
    }
}
