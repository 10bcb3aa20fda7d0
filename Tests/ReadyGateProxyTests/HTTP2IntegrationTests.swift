import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import ReadyGateCore
import ReadyGateDemo
import Testing

@testable import ReadyGateProxy

private let readyMessage = #"{"type":"connection_ready"}"#

@Suite("HTTP/2: h2c with prior knowledge and WebSockets over RFC 8441")
struct HTTP2IntegrationTests {
    // MARK: Plain requests

    @Test func getAndStreamedPostReachTheHTTP1Backend() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        let connection = try await H2TestConnection.connect(port: proxy.port)

        let get = try await connection.request(path: "/headers")
        #expect(get.status == 200)
        #expect(get.text.contains("host: proxy.test\n"), "the :authority is the backend's Host: \(get.text)")
        #expect(get.headers.first(name: "x-backend-end-to-end") == "1")
        for name in ["connection", "keep-alive", "transfer-encoding", "x-backend-hop"] {
            #expect(!get.headers.contains(name: name), "\(name) must not be in an HTTP/2 response")
        }

        let body = Array(HTTPTestBackend.streamBytes(300_000).readableBytesView)
        var digest = BodyDigest()
        digest.update(ByteBuffer(bytes: body))
        let post = try await connection.request(method: "POST", path: "/sum", body: body, chunk: 10_000)
        #expect(post.status == 200)
        #expect(post.text == "bytes=300000 sum=\(digest.value)")

        let streamed = try await connection.request(path: "/stream/1000000")
        #expect(streamed.status == 200)
        #expect(streamed.body == HTTPTestBackend.streamBytes(1_000_000))

        await connection.close()
        try await proxy.stop()
        try await backend.close()
    }

    @Test func http1AndH2cShareThePort() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        let http1 = try await rawExchange(
            port: proxy.port,
            request: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        #expect(http1.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(http1.hasSuffix("hello"))
        let connection = try await H2TestConnection.connect(port: proxy.port)
        let h2 = try await connection.request(path: "/")
        #expect(h2.status == 200 && h2.text == "hello")
        await connection.close()
        try await proxy.stop()
        try await backend.close()
    }

    @Test func aBackendThatIsDownGets502OnThatStreamOnly() async throws {
        let refused = try RefusedPort()
        let proxy = try await ProxyFixture.start(upstreamPort: refused.port)
        let connection = try await H2TestConnection.connect(port: proxy.port)
        async let first = connection.request(path: "/a")
        async let second = connection.request(path: "/b")
        let responses = try await [first, second]
        #expect(responses.map(\.status) == [502, 502])
        // The connection is still usable.
        #expect(try await connection.request(path: "/c").status == 502)
        await connection.close()
        try await proxy.stop()
    }

    @Test func aShutdownSendsGoAwayAndClosesTheConnectionOnceItsStreamsAreDone() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        let connection = try await H2TestConnection.connect(port: proxy.port)
        #expect(try await connection.request(path: "/").status == 200)
        #expect(proxy.server.environment.httpConnections.count == 1)
        try await proxy.server.shutdown(drain: .seconds(5), grace: .seconds(1))
        try await withTimeout(seconds: 10) { try await connection.channel.closeFuture.get() }
        #expect(connection.frames.goAwaysSeen == [HTTP2StreamID(1)])
        #expect(proxy.server.environment.httpConnections.count == 0)
        try await backend.close()
    }

    @Test func aShutdownEndsAWebSocketStreamWithGoingAway() async throws {
        try await withBackendAndProxy(backend: { $0.setupMs = 0 }, proxy: { _ in }) { _, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            let frames = try await connection.withStream { peer in
                try await peer.connect(path: "/ws")
                #expect(try await peer.readStatus() == 200)
                try await proxy.server.shutdown(drain: .milliseconds(100), grace: .seconds(5))
                return try await peer.readToEnd()
            }
            #expect(frames.last?.closeCode == 1001)
            #expect(connection.frames.goAwaysSeen.count == 1)
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.endReason == .goingAway)
            await connection.close()
        }
    }

    @Test func aConnectionWithoutStreamsForTheIdleTimeoutIsClosed() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port) { $0.httpIdleTimeoutMs = 1_500 }
        let connection = try await H2TestConnection.connect(port: proxy.port)
        #expect(try await connection.request(path: "/").status == 200)
        try await withTimeout(seconds: 10) { try await connection.channel.closeFuture.get() }
        #expect(connection.frames.goAwaysSeen == [HTTP2StreamID(1)])
        try await proxy.stop()
        try await backend.close()
    }

    // MARK: Detection

    @Test func aClientStalledMidPrefaceGets408() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port) { $0.httpHeaderTimeoutMs = 200 }
        let answer = try await rawExchange(port: proxy.port, request: "PRI * HTTP/2.0\r\n")
        #expect(answer.hasPrefix("HTTP/1.1 408 "), "\(answer.prefix(60))")
        try await proxy.stop()
        try await backend.close()
    }

    @Test func anHTTP1RequestIsNotHeldForThePrefaceLength() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        // Shorter than the preface, and complete: answered without waiting for more bytes.
        let answer = try await rawExchange(port: proxy.port, request: "GET / HTTP/1.0\r\n\r\n")
        #expect(answer.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(answer.prefix(60))")
        try await proxy.stop()
        try await backend.close()
    }

    @Test func aMalformedPrefaceClosesTheConnectionAndTheProxyServesOn() async throws {
        let backend = try await HTTPTestBackend.start()
        let proxy = try await ProxyFixture.start(upstreamPort: backend.port)
        // Differs from the preface at its 19th byte: HTTP/1.1, which cannot parse it.
        let almost = try await rawExchange(port: proxy.port, request: "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        #expect(almost.hasPrefix("HTTP/1.1 400 "), "\(almost.prefix(60))")
        // The whole preface, then a DATA frame where SETTINGS must come: NIOHTTP2's GOAWAY, then
        // the close.
        var garbage = Array(HTTP2PrefaceSniffer.preface)
        garbage += [0, 0, 4, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]
        let goAway = try await rawExchange(port: proxy.port, bytes: garbage)
        #expect(goAway.count >= 9 && goAway.contains(0x07), "a GOAWAY frame (type 7) before the close")
        let connection = try await H2TestConnection.connect(port: proxy.port)
        #expect(try await connection.request(path: "/").status == 200)
        await connection.close()
        try await proxy.stop()
        try await backend.close()
    }

    @Test func theSnifferTellsPrefacesFromOtherBytes() {
        let preface = HTTP2PrefaceSniffer.preface
        #expect(HTTP2PrefaceSniffer.verdict(ByteBuffer(bytes: preface)) == .http2)
        #expect(HTTP2PrefaceSniffer.verdict(ByteBuffer(bytes: preface + [0, 0])) == .http2)
        #expect(HTTP2PrefaceSniffer.verdict(ByteBuffer(bytes: preface.prefix(5))) == .undecided)
        #expect(HTTP2PrefaceSniffer.verdict(ByteBuffer(string: "P")) == .undecided)
        #expect(HTTP2PrefaceSniffer.verdict(ByteBuffer(string: "POST")) == .http1)
        #expect(HTTP2PrefaceSniffer.verdict(ByteBuffer(string: "G")) == .http1)
    }

    @Test func theSettingsAnnounceExtendedConnectAndTheStreamLimit() {
        var settings = ReadyGateSettings()
        settings.http2MaxStreams = 12
        let announced = HTTP2Pipeline.initialSettings(settings)
        #expect(announced.contains { $0.parameter == .maxConcurrentStreams && $0.value == 12 })
        #expect(announced.contains { $0.parameter == .enableConnectProtocol && $0.value == 1 })
    }

    // MARK: WebSockets (RFC 8441)

    @Test func fiftyWebSocketStreamsOnOneConnectionEachHeldUntilItsBackendIsReady() async throws {
        try await withBackendAndProxy(
            backend: { $0.setupMs = 300 },
            proxy: { settings in
                settings.readyGate = .message
                settings.timing.handshakeTimeoutMs = 10_000
            }
        ) { backend, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            let echoes = try await withThrowingTaskGroup(of: (Int, [String], Int).self) { group in
                for index in 0..<50 {
                    group.addTask {
                        try await connection.withStream { peer in
                            let first = clientFrame(.text, Array("first \(index)".utf8))
                            let second = clientFrame(.text, Array("second \(index)".utf8))
                            try await peer.connect(path: "/ws?n=\(index)", firstFrames: [first, second])
                            let status = try await peer.readStatus()
                            let texts = try await peer.readTexts(2, skipping: readyMessage)
                            try await peer.send(clientFrame(.close, closePayload(1000)), endStream: true)
                            _ = try await peer.readToEnd()
                            return (index, texts, status)
                        }
                    }
                }
                var all: [Int: (texts: [String], status: Int)] = [:]
                for try await (index, texts, status) in group { all[index] = (texts, status) }
                return all
            }
            for index in 0..<50 {
                #expect(echoes[index]?.status == 200)
                #expect(echoes[index]?.texts == ["first \(index)", "second \(index)"], "stream \(index)")
            }
            let records = try await proxy.sessions.waitFor(50)
            #expect(records.count == 50)
            #expect(records.allSatisfy { $0.earlyFrames == 2 }, "every stream's frames were held")
            #expect(backend.counters.failedEarly == 0)
            #expect(backend.counters.sessions == 50)
            await connection.close()
        }
    }

    @Test func upstreamAcceptModeMirrorsTheBackendsAnswerAsA200() async throws {
        try await withBackendAndProxy(
            backend: { backend in
                backend.setupMs = 100
                backend.subprotocols = ["chat"]
            },
            proxy: { settings in
                settings.acceptMode = .upstream
                settings.readyGate = .message
            }
        ) { backend, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            let (headers, echoed) = try await withTimeout(seconds: 10) {
                try await connection.withStream { peer in
                    try await peer.connect(
                        path: "/ws",
                        extra: [("sec-websocket-protocol", "other, chat")],
                        firstFrames: [clientFrame(.text, Array("early".utf8))]
                    )
                    #expect(try await peer.readStatus() == 200)
                    let echoed = try await peer.readTexts(1, skipping: readyMessage)
                    try await peer.send(clientFrame(.close, closePayload(1000)), endStream: true)
                    _ = try await peer.readToEnd()
                    return (peer.headers, echoed)
                }
            }
            #expect(headers.first(name: "sec-websocket-protocol") == "chat")
            for name in ["sec-websocket-accept", "upgrade", "connection"] {
                #expect(!headers.contains(name: name), "\(name) in a 200 to an extended CONNECT")
            }
            #expect(echoed == ["early"])
            let record = try await proxy.sessions.waitFor(1)[0]
            #expect(record.earlyFrames == 1)
            #expect(backend.counters.failedEarly == 0)
            await connection.close()
        }
    }

    @Test func upstreamAcceptModeRelaysTheBackendsRefusalOnTheStream() async throws {
        try await withBackendAndProxy(
            backend: { $0.rejectStatus = 403 },
            proxy: { $0.acceptMode = .upstream }
        ) { _, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            let (status, headers, body) = try await withTimeout(seconds: 10) {
                try await connection.withStream { peer in
                    try await peer.connect(path: "/ws")
                    let status = try await peer.readStatus()
                    return (status, peer.headers, try await peer.readBody())
                }
            }
            #expect(status == 403)
            #expect(headers.first(name: "x-demo-backend") == "rejected")
            #expect(body == "rejected by the demo backend\n")
            // The connection is unaffected.
            let next = try await connection.withStream { peer in
                try await peer.connect(path: "/ws")
                return try await peer.readStatus()
            }
            #expect(next == 403)
            await connection.close()
        }
    }

    @Test func aFullHoldStopsTheStreamAtItsWindowAndLosesNothing() async throws {
        // 200 kB sent before READY against an 8 kB hold: the session stops reading the stream, the
        // client's 64 kB window closes, and everything arrives once the backend is ready.
        try await withBackendAndProxy(
            backend: { $0.setupMs = 400 },
            proxy: { settings in
                settings.readyGate = .message
                settings.maxBufferBytes = 8192
            }
        ) { backend, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            let messages = (0..<200).map { index in "\(index):" + String(repeating: "x", count: 1000) }
            let echoed = try await withTimeout(seconds: 20) {
                try await connection.withStream { peer in
                    try await peer.connect(path: "/ws")
                    for message in messages { try await peer.send(clientFrame(.text, Array(message.utf8))) }
                    #expect(try await peer.readStatus() == 200)
                    let echoed = try await peer.readTexts(messages.count, skipping: readyMessage)
                    try await peer.send(clientFrame(.close, closePayload(1000)), endStream: true)
                    _ = try await peer.readToEnd()
                    return echoed
                }
            }
            #expect(echoed == messages)
            let record = try await proxy.sessions.waitFor(1)[0]
            // Past the cap, at most what the stream's window had let in: the rest of one read.
            #expect(record.peakHeldBytes <= 8192 + 65_535, "held beyond the window: \(record.peakHeldBytes)")
            #expect(backend.counters.failedEarly == 0)
            await connection.close()
        }
    }

    @Test func aResetStreamEndsItsSessionAndNoOther() async throws {
        try await withBackendAndProxy(backend: { $0.setupMs = 0 }, proxy: { _ in }) { _, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            let doomed = try await connection.openStream()
            try await doomed.executeThenClose { inbound, outbound in
                var reset = H2WebSocketPeer(inbound: inbound, outbound: outbound)
                try await reset.connect(path: "/doomed")
                #expect(try await reset.readStatus() == 200)
                try await connection.withStream { kept in
                    try await kept.connect(path: "/kept")
                    #expect(try await kept.readStatus() == 200)
                    // Closing a stream channel that has not ended sends RST_STREAM (CANCEL).
                    // (The client's own stream channel reports the reset as its close's error.)
                    try? await doomed.channel.close()
                    let records = try await proxy.sessions.waitFor(1)
                    #expect(records.first?.path == "/doomed")
                    #expect(records.first?.closer == .client)
                    try await kept.send(clientFrame(.text, Array("after the reset".utf8)))
                    #expect(try await kept.readTexts(1, skipping: readyMessage) == ["after the reset"])
                    try await kept.send(clientFrame(.close, closePayload(1000)), endStream: true)
                    let frames = try await kept.readToEnd()
                    #expect(frames.last?.closeCode == 1000)
                    #expect(!kept.reset, "the kept stream ends cleanly")
                }
            }
            _ = try await proxy.sessions.waitFor(2)
            try await waitUntilNoSessions(proxy)
            await connection.close()
        }
    }

    @Test func goAwayAndAClosedConnectionEndEverySession() async throws {
        try await withBackendAndProxy(backend: { $0.setupMs = 0 }, proxy: { _ in }) { _, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            let (accepted, acceptedNow) = AsyncStream<Void>.makeStream()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<3 {
                    group.addTask {
                        try await connection.withStream { peer in
                            try await peer.connect(path: "/ws/\(index)")
                            #expect(try await peer.readStatus() == 200)
                            acceptedNow.yield()
                            _ = try await peer.readToEnd()
                        }
                    }
                }
                // Once all three sessions run: GOAWAY, then the connection goes.
                var count = 0
                for await _ in accepted {
                    count += 1
                    if count == 3 { break }
                }
                let goAway = HTTP2Frame(
                    streamID: .rootStream,
                    payload: .goAway(lastStreamID: .rootStream, errorCode: .noError, opaqueData: nil)
                )
                try await connection.channel.writeAndFlush(goAway)
                await connection.close()
                try await group.waitForAll()
            }
            let records = try await proxy.sessions.waitFor(3)
            #expect(records.allSatisfy { $0.closer == .client })
            try await waitUntilNoSessions(proxy)
        }
    }

    @Test func badExtendedConnectsAreAnsweredOnTheirStreamOnly() async throws {
        try await withBackendAndProxy(backend: { $0.setupMs = 0 }, proxy: { _ in }) { _, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            let other = try await connection.withStream { peer in
                try await peer.connect(path: "/ws", protocol: "connect-udp")
                return try await peer.readStatus()
            }
            #expect(other == 501)
            let noVersion = try await connection.request(
                method: "CONNECT",
                path: "/ws",
                extra: [(":protocol", "websocket")],
                body: [1]
            )
            #expect(noVersion.status == 426)
            #expect(noVersion.headers.first(name: "sec-websocket-version") == "13")
            let plainConnect = try await connection.withStream { peer in
                try await peer.connect(path: "/ws")
                try await peer.send(clientFrame(.text, Array("fine".utf8)))
                #expect(try await peer.readStatus() == 200)
                return try await peer.readTexts(1, skipping: readyMessage)
            }
            #expect(plainConnect == ["fine"])
            await connection.close()
        }
    }

    @Test func aFloodOfResetStreamsLeavesNothingBehind() async throws {
        try await withBackendAndProxy(
            backend: { $0.setupMs = 50 },
            proxy: { settings in
                settings.readyGate = .message
                settings.timing.handshakeTimeoutMs = 2_000
            }
        ) { _, proxy in
            let connection = try await H2TestConnection.connect(port: proxy.port)
            for round in 0..<4 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<50 {
                        group.addTask {
                            let stream = try await connection.openStream()
                            try await stream.executeThenClose { inbound, outbound in
                                let peer = H2WebSocketPeer(inbound: inbound, outbound: outbound)
                                try await peer.connect(
                                    path: "/flood/\(round)/\(index)",
                                    firstFrames: [clientFrame(.text, [1, 2, 3])]
                                )
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            // Every stream was reset by its close; every session that started has ended.
            try await waitUntilNoSessions(proxy)
            let status = try await withTimeout(seconds: 10) { try await connection.request(path: "/").status }
            #expect(status == 404, "the connection still serves (the demo backend's 404)")
            await connection.close()
            try await withTimeout(seconds: 20) {
                while proxy.server.environment.connectionLimit.activeConnections > 0 {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
        }
    }
}

/// Waits (polling, bounded) until the proxy's session registry is empty: a session leaves it just
/// after its record is reported, so the record alone does not say the registry is empty yet.
private func waitUntilNoSessions(_ proxy: ProxyFixture) async throws {
    let environment = proxy.server.environment
    try await withTimeout(seconds: 20) {
        while environment.sessions.count > 0 { try await Task.sleep(for: .milliseconds(10)) }
    }
}
