import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// ``UpstreamHandshakeHandler`` behind the HTTP/1.1 client codec, as `WebSocketSession` installs it,
/// on an `EmbeddedChannel`: what it sends the backend, and what it reports of the backend's answer.
/// A recording observer stands in for the session.
@Suite("UpstreamHandshakeHandler on an EmbeddedChannel")
struct EmbeddedUpstreamHandshakeHandlerTests {
    /// What the handler reported, in order.
    final class Recorder: UpstreamHandshakeObserver {
        enum Report: Equatable {
            case failed(attempt: Int)
            case non101(status: Int, body: String, attempt: Int)
            case upgraded(attempt: Int)
        }
        var reports: [Report] = []

        func upstreamAttemptFailed(attempt: Int, error: String) {
            reports.append(.failed(attempt: attempt))
        }

        func upstreamAnsweredNon101(_ head: HTTPResponseHead, body: ByteBuffer?, attempt: Int) {
            let text = body.map { String(buffer: $0) } ?? ""
            reports.append(.non101(status: Int(head.status.code), body: text, attempt: attempt))
        }

        func upstreamAnswered101(
            _ head: HTTPResponseHead,
            context: ChannelHandlerContext,
            attempt: Int
        ) {
            reports.append(.upgraded(attempt: attempt))
            // A session that no longer waits for this attempt closes it.
            context.close(promise: nil)
        }
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

    static func addHandlers(to channel: EmbeddedChannel, observer: Recorder) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(HTTPRequestEncoder())
        try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)))
        try sync.addHandler(UpstreamHandshakeHandler(session: observer, request: request, attempt: 1))
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
        let observer = Recorder()
        let upstream = EmbeddedChannel()
        try Self.addHandlers(to: upstream, observer: observer)
        #expect(try Self.outboundText(upstream).isEmpty, "nothing before the connection is up")

        try Self.connect(upstream)
        Self.expectOneUpgradeRequest(try Self.outboundText(upstream))
        #expect(upstream.isActive)
        #expect(observer.reports.isEmpty)
        #expect(try upstream.finish(acceptAlreadyClosed: true).isClean)
    }

    @Test("the upgrade request is sent once when the handler joins a connection already active")
    func sendsOnHandlerAdded() throws {
        let observer = Recorder()
        let upstream = EmbeddedChannel()
        try Self.connect(upstream)
        try Self.addHandlers(to: upstream, observer: observer)
        upstream.pipeline.fireChannelActive()

        Self.expectOneUpgradeRequest(try Self.outboundText(upstream))
        #expect(try upstream.finish(acceptAlreadyClosed: true).isClean)
    }

    @Test("a non-101 answer closes the upstream connection once the answer has ended")
    func non101Closes() throws {
        let observer = Recorder()
        let upstream = EmbeddedChannel()
        try Self.addHandlers(to: upstream, observer: observer)
        try Self.connect(upstream)
        _ = try Self.outboundText(upstream)

        try upstream.writeInbound(ByteBuffer(string: "HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nno "))
        upstream.embeddedEventLoop.run()
        #expect(upstream.isActive, "the body is not complete yet")

        try upstream.writeInbound(ByteBuffer(string: "entry!"))
        try upstream.writeInbound(ByteBuffer(string: "!"))
        upstream.embeddedEventLoop.run()
        #expect(!upstream.isActive)
        #expect(observer.reports == [.non101(status: 403, body: "no entry!!", attempt: 1)])
    }

    @Test("a 101 is reported once, with the context the session switches or closes")
    func stale101Closes() throws {
        let observer = Recorder()
        let upstream = EmbeddedChannel()
        try Self.addHandlers(to: upstream, observer: observer)
        try Self.connect(upstream)
        _ = try Self.outboundText(upstream)

        let answer =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: Self.upstreamKey))\r\n\r\n"
        try upstream.writeInbound(ByteBuffer(string: answer))
        upstream.embeddedEventLoop.run()
        #expect(!upstream.isActive)
        #expect(observer.reports == [.upgraded(attempt: 1)])
    }

    @Test("the connection closing before any answer is reported as a failed attempt, once")
    func inactiveBeforeAnswer() throws {
        let observer = Recorder()
        let upstream = EmbeddedChannel()
        try Self.addHandlers(to: upstream, observer: observer)
        try Self.connect(upstream)
        _ = try Self.outboundText(upstream)

        try upstream.close().wait()
        upstream.embeddedEventLoop.run()
        #expect(!upstream.isActive)
        #expect(observer.reports == [.failed(attempt: 1)])
    }
}
