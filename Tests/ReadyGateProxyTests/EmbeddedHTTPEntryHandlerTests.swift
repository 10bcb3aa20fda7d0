import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// ``HTTPEntryHandler`` behind the HTTP/1.1 codec exactly as ``ReadyGateServer`` installs it, on an
/// `EmbeddedChannel`: raw request bytes in, raw response bytes out.
///
/// Only requests that do not start a session are exercised here: a valid upgrade starts a
/// ``WebSocketSession``, whose upstream `ClientBootstrap` needs a real event loop (here it gets
/// `502`). Forwarded plain requests are in `EmbeddedHTTPForwarderTests`.
@Suite("HTTPEntryHandler on an EmbeddedChannel")
struct EmbeddedHTTPEntryHandlerTests {
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="

    /// A WebSocket upgrade request; `replacing` swaps or (with a nil value) drops headers by name.
    static func upgradeRequest(
        method: String = "GET",
        version: String = "HTTP/1.1",
        replacing changes: KeyValuePairs<String, String?> = [:]
    ) -> String {
        var fields: [(String, String)] = [
            ("Host", "example.test"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ]
        for (name, value) in changes {
            if let index = fields.firstIndex(where: { $0.0 == name }) {
                if let value { fields[index].1 = value } else { fields.remove(at: index) }
            } else if let value {
                fields.append((name, value))
            }
        }
        return "\(method) /ws \(version)\r\n" + fields.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
    }

    static let plainGet = "GET /health HTTP/1.1\r\nHost: example.test\r\n\r\n"

    // MARK: Rejected upgrades

    @Test("Sec-WebSocket-Version 8 is answered 426 with Sec-WebSocket-Version: 13, then closed")
    func unsupportedVersion() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: Self.upgradeRequest(replacing: ["Sec-WebSocket-Version": "8"])))
        channel.embeddedEventLoop.run()

        let responses = try readResponses(channel)
        #expect(responses.count == 1)
        let response = try #require(responses.first)
        #expect(response.status == 426)
        #expect(response.values("Sec-WebSocket-Version") == ["13"])
        #expect(response.value("Connection") == "close")
        #expect(response.contentLengthMatchesBody)
        #expect(!channel.isActive)
    }

    /// An HTTP request to feed in, named for the test report.
    struct RequestCase: Sendable, CustomTestStringConvertible {
        var label: String
        var bytes: String
        var testDescription: String { label }

        init(_ label: String, _ bytes: String) {
            self.label = label
            self.bytes = bytes
        }
    }

    /// Every one must be answered 400 and closed.
    static let badUpgrades: [RequestCase] = [
        RequestCase("missing Sec-WebSocket-Key", upgradeRequest(replacing: ["Sec-WebSocket-Key": nil])),
        RequestCase(
            "Sec-WebSocket-Key not base64",
            upgradeRequest(replacing: ["Sec-WebSocket-Key": "not a key at all!!!!!!!!"])
        ),
        RequestCase(
            "Sec-WebSocket-Key of 15 bytes",
            upgradeRequest(replacing: ["Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"])
        ),
        RequestCase(
            "two Sec-WebSocket-Key values",
            upgradeRequest().replacingOccurrences(of: "\r\n\r\n", with: "\r\nSec-WebSocket-Key: \(key)\r\n\r\n")
        ),
        RequestCase("POST", upgradeRequest(method: "POST", replacing: ["Content-Length": "0"])),
        RequestCase("missing Connection: Upgrade", upgradeRequest(replacing: ["Connection": nil])),
        RequestCase("Connection: keep-alive only", upgradeRequest(replacing: ["Connection": "keep-alive"])),
        RequestCase("missing Host", upgradeRequest(replacing: ["Host": nil])),
        RequestCase("HTTP/1.0", upgradeRequest(version: "HTTP/1.0")),
        RequestCase("a body", upgradeRequest(replacing: ["Content-Length": "4"]) + "abcd"),
    ]

    @Test("an invalid upgrade request is answered 400 and the connection closed", arguments: badUpgrades)
    func badUpgrade(request: RequestCase) throws {
        let label = request.label
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: request.bytes))
        channel.embeddedEventLoop.run()

        let responses = try readResponses(channel)
        #expect(responses.count == 1, "\(label)")
        let response = try #require(responses.first)
        #expect(response.status == 400, "\(label): \(response.body)")
        #expect(response.value("Connection") == "close", "\(label)")
        #expect(response.values("Sec-WebSocket-Version").isEmpty, "\(label)")
        #expect(response.value("Upgrade") == nil, "\(label)")
        #expect(!response.body.isEmpty, "\(label)")
        #expect(response.contentLengthMatchesBody, "\(label)")
        #expect(!channel.isActive, "\(label)")
    }

    @Test("a rejected upgrade fed one byte at a time gets the same single answer")
    func rejectedUpgradeByteByByte() throws {
        let channel = try makeChannel()
        for byte in Self.upgradeRequest(replacing: ["Sec-WebSocket-Version": "8"]).utf8 {
            guard channel.isActive else { break }
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        channel.embeddedEventLoop.run()

        let responses = try readResponses(channel)
        #expect(responses.map(\.status) == [426])
        #expect(responses.first?.values("Sec-WebSocket-Version") == ["13"])
        #expect(!channel.isActive)
    }

    @Test("frames sent right behind a rejected upgrade get no second answer")
    func bytesAfterRejectedUpgrade() throws {
        let channel = try makeChannel()
        let frame = WebSocketFrameWriter.frame(opcode: .text, payload: Array("early".utf8), maskingKey: 0x0102_0304)
        var bytes = ByteBuffer(string: Self.upgradeRequest(replacing: ["Sec-WebSocket-Key": nil]))
        bytes.writeBytes(frame)
        bytes.writeString(Self.plainGet)
        try channel.writeInbound(bytes)
        channel.embeddedEventLoop.run()

        #expect(try readResponses(channel).map(\.status) == [400])
        #expect(!channel.isActive)
    }

    /// Found by the HTTP entry fuzz target (`Tests/Fuzz`): a valid upgrade started a session, whose
    /// `ClientBootstrap(group:)` trapped on an event loop that cannot make sockets.
    @Test("a valid upgrade on an event loop that cannot reach the backend is answered 502, without a trap")
    func validUpgradeWithoutSockets() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: Self.upgradeRequest()))
        channel.embeddedEventLoop.run()

        let responses = try readResponses(channel)
        #expect(responses.map(\.status) == [502])
        #expect(responses.first?.value("Connection") == "close")
        #expect(responses.first?.contentLengthMatchesBody == true)
        #expect(!channel.isActive)
    }

    // MARK: Malformed HTTP

    @Test("an unparsable request line is answered 400 and the connection closed")
    func unparsableRequestLine() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: "\u{1}\u{2} this is not HTTP\r\n\r\n"))
        channel.embeddedEventLoop.run()

        let responses = try readResponses(channel)
        #expect(responses.count == 1)
        let response = try #require(responses.first)
        #expect(response.status == 400)
        #expect(response.value("Connection") == "close")
        #expect(response.body.hasPrefix("malformed HTTP request"))
        #expect(response.contentLengthMatchesBody)
        #expect(!channel.isActive)
    }

    @Test(
        "a request without Host (HTTP/1.1) or with two is answered 400 and closed (RFC 9112 §3.2)",
        arguments: [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a.test\r\nhost: b.test\r\n\r\n",
            // Found by FuzzHTTPEntry (`Tests/Fuzz`): an empty second Host was not counted.
            "POST /a HTTP/1.1\r\nHost: a.test\r\nHost: \r\nContent-Length: 0\r\n\r\n",
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ]
    )
    func hostRules(request: String) throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: request))
        channel.embeddedEventLoop.run()

        let responses = try readResponses(channel)
        #expect(responses.map(\.status) == [400])
        #expect(responses.first?.body.contains("Host") == true)
        #expect(!channel.isActive)
    }

    @Test("HTTP/2.0 in an HTTP/1 request line is answered 400 and the connection closed")
    func wrongMajorVersion() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/2.0\r\nHost: example.test\r\n\r\n"))
        channel.embeddedEventLoop.run()

        #expect(try readResponses(channel).map(\.status) == [400])
        #expect(!channel.isActive)
    }

    @Test("a header section over NIO's limit is answered 431 and the connection closed")
    func headerTooLarge() throws {
        let channel = try makeChannel()
        let request =
            "GET /ws HTTP/1.1\r\nHost: example.test\r\nX-Big: \(String(repeating: "a", count: 100 * 1024))\r\n\r\n"
        try channel.writeInbound(ByteBuffer(string: request))
        channel.embeddedEventLoop.run()

        let responses = try readResponses(channel)
        #expect(responses.count == 1)
        let response = try #require(responses.first)
        #expect(response.status == 431)
        #expect(response.value("Connection") == "close")
        #expect(response.contentLengthMatchesBody)
        #expect(!channel.isActive)
    }

    @Test("a large header section under NIO's limit is an ordinary request, forwarded")
    func largeHeaderUnderLimit() throws {
        let harness = try ForwardHarness()
        try harness.send(
            "GET / HTTP/1.1\r\nHost: example.test\r\nX-Big: \(String(repeating: "a", count: 60 * 1024))\r\n\r\n"
        )
        #expect(harness.upstreams.count == 1)
        #expect(try harness.clientText().isEmpty)
        #expect(harness.client.isActive)
    }

    // MARK: Helpers

    func makeChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let environment = ProxyEnvironment(
            settings: ReadyGateSettings(),
            logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        try ReadyGateServer.configureHTTP1(channel: channel, environment: environment)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
        #expect(channel.isActive)
        return channel
    }

    /// Everything written to the client so far, split into responses by `Content-Length`.
    func readResponses(_ channel: EmbeddedChannel) throws -> [RawHTTPResponse] {
        var all = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&chunk) }
        var text = Substring(String(decoding: all.readableBytesView, as: UTF8.self))
        var responses: [RawHTTPResponse] = []
        while !text.isEmpty {
            guard let response = RawHTTPResponse(parsingFrom: &text) else {
                Issue.record("unparsable response bytes: \(text)")
                break
            }
            responses.append(response)
        }
        return responses
    }
}

/// One HTTP/1.1 response as it went over the wire.
struct RawHTTPResponse {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: String
    var declaredLength: Int?

    /// Parses one response off the front of `text` (status line, headers, `Content-Length` body).
    init?(parsingFrom text: inout Substring) {
        guard let headEnd = text.range(of: "\r\n\r\n") else { return nil }
        let lines = text[..<headEnd.lowerBound].components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, statusParts[0] == "HTTP/1.1", let status = Int(statusParts[1]) else {
            return nil
        }
        self.status = status
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            headers.append(
                (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            )
        }
        self.headers = headers
        let rest = text[headEnd.upperBound...]
        let length = headers.first { $0.name.lowercased() == "content-length" }.flatMap { Int($0.value) }
        declaredLength = length
        let bodyUTF8 = rest.utf8.prefix(length ?? rest.utf8.count)
        body = String(decoding: bodyUTF8, as: UTF8.self)
        text = Substring(String(decoding: rest.utf8.dropFirst(bodyUTF8.count), as: UTF8.self))
    }

    func values(_ name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    func value(_ name: String) -> String? { values(name).first }

    var contentLengthMatchesBody: Bool { declaredLength == body.utf8.count }
}
