import NIOCore
import NIOPosix
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// The listener: one socket per event loop on one address (`SO_REUSEPORT`), and a port that is
/// taken still refuses the start.
@Suite("Listener", .serialized)
struct ListenerTests {
    @Test("one listening socket per event loop, on the same port, each on its own loop, all serving")
    func socketPerLoop() async throws {
        try await withOwnLoops { group in
            let backend = try await ScriptedBackend(script: { _, backend in
                try await backend.acceptUpgrade()
                try await backend.echoUntilClose()
            })
            let proxy = try await ProxyFixture.start(upstreamPort: backend.port, group: group) {
                $0.readyGate = .delay
            }
            let channels = proxy.server.channels
            #expect(channels.count == 2)
            #expect(Set(channels.compactMap { $0.localAddress?.port }) == [proxy.port])
            #expect(channels[0].eventLoop !== channels[1].eventLoop)
            // The kernel spreads connections over the sockets: every one of them is served.
            for number in 0..<16 {
                let echoed = try await RawClient.session(port: proxy.port) { client in
                    try await client.write(clientFrame(.text, Array("hello \(number)".utf8)))
                    let frame = try await client.readFrame()
                    try await client.write(clientFrame(.close, closePayload(1000)))
                    return frame?.text
                }
                #expect(echoed == "hello \(number)")
            }
            try await proxy.stop()
            await backend.close()
        }
    }

    @Test("a second proxy on a port the first listens on fails to start, and the first serves on")
    func portTaken() async throws {
        let first = try await ProxyFixture.start(upstreamPort: 9)
        await #expect(throws: IOError.self) {
            let second = try await ProxyFixture.start(upstreamPort: 9) {
                $0.listen = HostAndPort(host: "127.0.0.1", port: first.port)
            }
            try await second.stop()
        }
        let client = try await RawClient.connect(port: first.port)
        try await client.channel.close()
        try await first.stop()
    }
}
