import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// ``UpstreamHandshakeHandler`` behind the HTTP/1.1 client codec, as `WebSocketSession` installs it,
/// on an `EmbeddedChannel`: what it sends the backend, and what it does with the backend's answer.
///
/// The handler reports to a ``WebSocketSession``. Starting one would connect upstream through a
/// `ClientBootstrap`, which needs a real event loop, so the session here is never started: it has
/// counted no connect attempt, every report from the handler (attempt 1) is stale and ignored, and
/// what remains to observe is the handler's own part.
@Suite("UpstreamHandshakeHandler on an EmbeddedChannel")
struct EmbeddedUpstreamHandshakeHandlerTests {
    /// Takes the place of the HTTP entry handler, whose context the session keeps.
    final class EntryPlaceholder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
    }

    static let upstreamKey = "x3JJHMbDL1EzLkh9GBhXDw=="

    static let request: HTTPRequestHead = {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "backend.test")
        headers.add(name: "Upgrade", value: "websocket")
        headers.add(name: "Connection", value: "Upgrade")
        headers.add(name: "Sec-WebSocket-Key", value: upstreamKey)
        headers.add(name: "Sec-WebSocket-Version", value: "13")
        return HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws?room=7", headers: headers)
    }()

    /// A session that was never started, on a client channel of its own.
    static func makeSession() throws -> (session: WebSocketSession, client: EmbeddedChannel) {
        let client = EmbeddedChannel(handler: EntryPlaceholder())
        try client.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
        let context = try client.pipeline.syncOperations.context(handlerType: EntryPlaceholder.self)
        let headers = HTTPHeaderList([
            (name: "Host", value: "proxy.test"), (name: "Upgrade", value: "websocket"),
            (name: "Connection", value: "Upgrade"), (name: "Sec-WebSocket-Key", value: "dGhlIHNhbXBsZSBub25jZQ=="),
            (name: "Sec-WebSocket-Version", value: "13"),
        ])
        let upgrade = try WebSocketHandshake.validateUpgrade(
            method: "GET",
            versionMajor: 1,
            versionMinor: 1,
            headers: headers
        ).get()
        let session = WebSocketSession(
            environment: ProxyEnvironment(
                settings: ReadyGateSettings(),
                logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })
            ),
            request: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws?room=7"),
            headers: headers,
            upgrade: upgrade,
            clientContext: context
        )
        return (session, client)
    }

    static func addHandlers(to channel: EmbeddedChannel, session: WebSocketSession) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(HTTPRequestEncoder())
        try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)))
        try sync.addHandler(UpstreamHandshakeHandler(session: session, request: request, attempt: 1))
    }

    static func connect(_ channel: EmbeddedChannel) throws {
        try channel.connect(to: SocketAddress(ipAddress: "198.51.100.1", port: 8000)).wait()
    }

    static func outboundText(_ channel: EmbeddedChannel) throws -> String {
        var all = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&chunk) }
        return String(decoding: all.readableBytesView, as: UTF8.self)
    }

    static func expectOneUpgradeRequest(_ text: String) {
        #expect(text.hasPrefix("GET /ws?room=7 HTTP/1.1\r\n"), "\(text)")
        #expect(text.hasSuffix("\r\n\r\n"), "a bodiless request: \(text)")
        #expect(text.components(separatedBy: "GET ").count == 2, "exactly one request: \(text)")
        let lines = text.components(separatedBy: "\r\n")
        #expect(lines.contains("Sec-WebSocket-Key: \(upstreamKey)"))
        #expect(lines.contains("Upgrade: websocket"))
        #expect(lines.contains("Connection: Upgrade"))
        #expect(lines.contains("Host: backend.test"))
        #expect(!lines.contains { $0.lowercased().hasPrefix("transfer-encoding") }, "no chunked framing: \(text)")
    }

    @Test("the upgrade request is sent once when the connection becomes active")
    func sendsOnChannelActive() throws {
        let (session, client) = try Self.makeSession()
        let upstream = EmbeddedChannel()
        try Self.addHandlers(to: upstream, session: session)
        #expect(try Self.outboundText(upstream).isEmpty, "nothing before the connection is up")

        try Self.connect(upstream)
        Self.expectOneUpgradeRequest(try Self.outboundText(upstream))
        #expect(upstream.isActive)
        #expect(try upstream.finish(acceptAlreadyClosed: true).isClean)
        #expect(try client.finish(acceptAlreadyClosed: true).isClean)
    }

    @Test("the upgrade request is sent once when the handler joins a connection already active")
    func sendsOnHandlerAdded() throws {
        let (session, client) = try Self.makeSession()
        let upstream = EmbeddedChannel()
        try Self.connect(upstream)
        try Self.addHandlers(to: upstream, session: session)
        upstream.pipeline.fireChannelActive()

        Self.expectOneUpgradeRequest(try Self.outboundText(upstream))
        #expect(try upstream.finish(acceptAlreadyClosed: true).isClean)
        #expect(try client.finish(acceptAlreadyClosed: true).isClean)
    }

    @Test("a non-101 answer closes the upstream connection once the answer has ended")
    func non101Closes() throws {
        let (session, client) = try Self.makeSession()
        let upstream = EmbeddedChannel()
        try Self.addHandlers(to: upstream, session: session)
        try Self.connect(upstream)
        _ = try Self.outboundText(upstream)

        try upstream.writeInbound(ByteBuffer(string: "HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nno "))
        upstream.embeddedEventLoop.run()
        #expect(upstream.isActive, "the body is not complete yet")

        try upstream.writeInbound(ByteBuffer(string: "entry!"))
        try upstream.writeInbound(ByteBuffer(string: "!"))
        upstream.embeddedEventLoop.run()
        #expect(!upstream.isActive)
        // The session counted no attempt, so it took nothing from this stale one.
        #expect(session.record.upstreamStatus == nil)
        #expect(client.isActive, "the client connection is not the handler's to close")
        #expect(try client.finish(acceptAlreadyClosed: true).isClean)
    }

    @Test("a 101 for an attempt the session no longer waits for is closed, not spliced")
    func stale101Closes() throws {
        let (session, client) = try Self.makeSession()
        let upstream = EmbeddedChannel()
        try Self.addHandlers(to: upstream, session: session)
        try Self.connect(upstream)
        _ = try Self.outboundText(upstream)

        let answer =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: Self.upstreamKey))\r\n\r\n"
        try upstream.writeInbound(ByteBuffer(string: answer))
        upstream.embeddedEventLoop.run()
        #expect(!upstream.isActive)
        #expect(session.record.upstreamStatus == nil)
        #expect(try client.finish(acceptAlreadyClosed: true).isClean)
    }

    @Test("the connection closing before any answer is taken quietly")
    func inactiveBeforeAnswer() throws {
        let (session, client) = try Self.makeSession()
        let upstream = EmbeddedChannel()
        try Self.addHandlers(to: upstream, session: session)
        try Self.connect(upstream)
        _ = try Self.outboundText(upstream)

        try upstream.close().wait()
        upstream.embeddedEventLoop.run()
        #expect(!upstream.isActive)
        #expect(session.record.upstreamStatus == nil)
        #expect(session.record.connectAttempts == 0)
        #expect(client.isActive)
        #expect(try client.finish(acceptAlreadyClosed: true).isClean)
    }
}
