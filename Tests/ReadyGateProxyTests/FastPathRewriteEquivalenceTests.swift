import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// The fast path's head rewrites (``HTTP1HeadRewriter``) against the NIO path's
/// (``ForwardedMessage``) on the same requests and responses: the same request line, the same
/// fields in the same order, the same values.
@Suite("fast-path rewrite equals the NIO path's")
struct FastPathRewriteEquivalenceTests {
    static let requests = [
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: x\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n"
            + "Accept-Language: en\r\nCookie: a=b; c=d\r\nReferer: http://x/\r\n\r\n",
        "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
        "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /p HTTP/1.1\r\nhost: h\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret ,  x-other\r\nX-Secret: 1\r\nX-Other: 2\r\nX-Kept: 3\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: host, content-length\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For:\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For:\r\nX-Forwarded-For:\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: orig\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=1.2.3.4\r\nFORWARDED: for=5.6.7.8;proto=https\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: forwarded, x-forwarded-for\r\nForwarded: a\r\nX-Forwarded-For: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost:   spaced\r\nX-Tab:\tv\t\r\nX-Empty:\r\n\r\n",
        "DELETE /x HTTP/1.1\r\nHost: h\r\nUpgrade-Insecure-Requests: 1\r\n\r\n",
    ]

    /// The head NIO's decoder reads from `text`.
    private func nioHead(_ text: String) throws -> HTTPRequestHead {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
        try channel.writeInbound(ByteBuffer(string: text))
        guard case .head(let head) = try channel.readInbound(as: HTTPServerRequestPart.self) else {
            throw HTTP1HeadError.malformed("no head")
        }
        return head
    }

    private func fields(_ text: String, _ head: HTTP1Head) -> [String] {
        let bytes = Array(text.utf8)
        return head.fields.map {
            String(decoding: bytes[$0.name], as: UTF8.self) + ": " + String(decoding: bytes[$0.value], as: UTF8.self)
        }
    }

    @Test("request heads", arguments: requests)
    func request(text: String) throws {
        let identity = ForwardedMessage.forwardedIdentity(clientAddress: "192.0.2.7")
        let old = ForwardedMessage.upstreamRequestHead(
            try nioHead(text),
            forwardedFor: identity.forwardedFor,
            forwardedElement: identity.forwardedElement
        )
        let bytes = Array(text.utf8)
        guard case .complete(let parsed) = bytes.withUnsafeBytes({ HTTP1HeadParser.parseRequest($0, limit: 16_384) })
        else {
            Issue.record("the fast parser refused \(text)")
            return
        }
        var out = ByteBuffer()
        bytes.withUnsafeBytes {
            HTTP1HeadRewriter.writeUpstreamRequest(
                parsed,
                from: $0,
                forwardedFor: identity.forwardedFor,
                forwardedElement: identity.forwardedElement,
                into: &out
            )
        }
        let written = String(buffer: out)
        guard
            case .complete(let reparsed) = Array(written.utf8).withUnsafeBytes({
                HTTP1HeadParser.parseRequest($0, limit: 16_384)
            })
        else {
            Issue.record("the rewrite does not parse: \(written)")
            return
        }
        #expect(written.hasPrefix("\(old.method.rawValue) \(old.uri) HTTP/1.1\r\n"))
        // NIO keeps a value's trailing whitespace (so a `Host` with some would pass it on into
        // `X-Forwarded-Host` and `Forwarded`); the fast path's values have none (RFC 9110 §5.5). The
        // client's own field lines are copied as they came on both paths.
        #expect(fields(written, reparsed) == old.headers.map { "\($0.name): \(trimmed($0.value))" })
    }

    private func trimmed(_ value: String) -> String {
        var value = Substring(value)
        while let last = value.last, last == " " || last == "\t" { value = value.dropLast() }
        return String(value)
    }

    static let responses: [(String, Bool, Bool)] = [
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n", false, true),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n", false,
            true
        ),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, true),
        ("HTTP/1.1 204 No Content\r\nKeep-Alive: 5\r\n\r\n", false, false),
        ("HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", false, true),
        ("HTTP/1.0 200 OK\r\nServer: s\r\n\r\n", false, true),
        ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", false, false),
    ]

    @Test("response heads", arguments: responses)
    func response(text: String, isHEAD: Bool, keepAlive: Bool) throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTPRequestEncoder())
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPResponseDecoder()))
        let request = HTTPRequestHead(version: .http1_1, method: isHEAD ? .HEAD : .GET, uri: "/")
        try channel.writeOutbound(HTTPClientRequestPart.head(request))
        try channel.writeInbound(ByteBuffer(string: text))
        guard case .head(let nio) = try channel.readInbound(as: HTTPClientResponsePart.self) else {
            Issue.record("NIO read no head")
            return
        }
        let old = ForwardedMessage.clientResponseHead(
            nio,
            requestMethod: isHEAD ? .HEAD : .GET,
            requestVersion: .http1_1,
            keepAlive: keepAlive
        )
        let bytes = Array(text.utf8)
        guard case .complete(let parsed) = bytes.withUnsafeBytes({ HTTP1HeadParser.parseResponse($0, limit: 16_384) })
        else {
            Issue.record("the fast parser refused \(text)")
            return
        }
        var out = ByteBuffer()
        _ = bytes.withUnsafeBytes {
            HTTP1HeadRewriter.writeClientResponse(
                parsed,
                from: $0,
                requestIsHEAD: isHEAD,
                keepAlive: keepAlive,
                into: &out
            )
        }
        let written = String(buffer: out)
        guard
            case .complete(let reparsed) = Array(written.utf8).withUnsafeBytes({
                HTTP1HeadParser.parseResponse($0, limit: 16_384)
            })
        else {
            Issue.record("the rewrite does not parse: \(written)")
            return
        }
        #expect(reparsed.status == Int(old.head.status.code))
        #expect(fields(written, reparsed) == old.head.headers.map { "\($0.name): \($0.value)" })
    }
}
