import NIOCore
import Testing

@testable import ReadyGateCore

/// Parses `text` as a request or response head.
private func parse(_ text: String, request: Bool = true, limit: Int = 16 * 1024) -> HTTP1HeadParseResult {
    Array(text.utf8).withUnsafeBytes { bytes in
        request ? HTTP1HeadParser.parseRequest(bytes, limit: limit) : HTTP1HeadParser.parseResponse(bytes, limit: limit)
    }
}

private func head(_ text: String, request: Bool = true) throws -> HTTP1Head {
    guard case .complete(let head) = parse(text, request: request) else {
        Issue.record("not a complete head: \(parse(text, request: request))")
        throw HTTP1HeadError.malformed("test")
    }
    return head
}

/// The bytes of `range` in `text`, as a string.
private func slice(_ text: String, _ range: Range<Int>) -> String {
    String(decoding: Array(text.utf8)[range], as: UTF8.self)
}

/// Feeds `body` to a framer in the given pieces; returns the bytes it took and whether it ended.
private func frame(_ framing: HTTP1Head.Framing, _ body: [UInt8], pieces: [Int]) throws -> (taken: Int, complete: Bool)
{
    var framer = HTTP1BodyFramer(framing)
    var offset = 0
    var taken = 0
    for size in pieces + [body.count] {
        let end = min(body.count, offset + size)
        let used = try body[offset..<end].withUnsafeBytes { try framer.consume($0) }
        taken += used
        if used < end - offset || framer.isComplete { return (taken, framer.isComplete) }
        offset = end
        if offset == body.count { break }
    }
    return (taken, framer.isComplete)
}

@Suite("HTTP/1 head parser")
struct HTTP1HeadParserTests {
    @Test("a request head: method, target, version and fields as byte ranges")
    func requestHead() throws {
        let text =
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-A:  padded \t\r\nConnection: keep-alive, X-A\r\n\r\nBODY"
        let head = try head(text)
        #expect(slice(text, head.first) == "GET")
        #expect(slice(text, head.second) == "/a?b=1")
        #expect(head.minorVersion == 1)
        #expect(head.length == text.utf8.count - 4)
        #expect(head.fields.map { slice(text, $0.name) } == ["Host", "X-A", "Connection"])
        #expect(head.fields.map { slice(text, $0.value) } == ["example.com", "padded", "keep-alive, X-A"])
        #expect(head.fields.map(\.kind) == [.host, .other, .connection])
        #expect(head.connectionTokens.map { slice(text, $0) } == ["X-A"])
        #expect(head.keepAlive)
        #expect(head.framing == .none)
    }

    @Test("keep-alive by version and Connection")
    func keepAlive() throws {
        #expect(try !head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n").keepAlive)
        #expect(try !head("GET / HTTP/1.0\r\n\r\n").keepAlive)
        #expect(try head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keepAlive)
    }

    @Test("framing: Content-Length, chunked")
    func framing() throws {
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").framing == .length(12))
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").framing == .chunked)
    }

    @Test(
        "malformed and ambiguous requests are refused",
        arguments: [
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "CL+TE"),
            ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", "TE+CL"),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "differing CL"),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "two CL"),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n", "CL list"),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "negative CL"),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\t\r\n\r\n", "tab after CL"),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", "huge CL"),
            ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "TE not chunked last"),
            ("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "TE in 1.0"),
            ("GET / HTTP/1.1\r\n\r\n", "no Host"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Host"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost:\r\n\r\n", "empty second Host"),
            ("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", "two Host in 1.0"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", "space before colon"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", "obs-fold"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\nX-B: c\r\n\r\n", "bare LF"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rX-B: c\r\n\r\n", "bare CR"),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF in request line"),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "invalid method"),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", "space in target"),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-\u{1}: b\r\n\r\n", "control in name"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u{0}c\r\n\r\n", "NUL in value"),
            ("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", "empty name"),
            ("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "leading empty line"),
        ]
    )
    func refused(text: String, why: String) {
        guard case .invalid(.malformed) = parse(text) else {
            Issue.record("\(why): \(parse(text))")
            return
        }
    }

    @Test("a head beyond the limit is too large, complete or not; one under it is incomplete")
    func tooLarge() {
        let big = "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + String(repeating: "x", count: 200)
        #expect(parse(big, limit: 100) == .invalid(.tooLarge))
        #expect(parse(big + "\r\n\r\n", limit: 100) == .invalid(.tooLarge))
        #expect(parse(big, limit: 1000) == .incomplete)
    }

    @Test("the result is the same for every prefix boundary: incomplete until the end of the head")
    func prefixes() throws {
        let text = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
        let bytes = Array(text.utf8)
        for cut in 0..<bytes.count {
            let result = bytes[0..<cut].withUnsafeBytes { HTTP1HeadParser.parseRequest($0, limit: 1000) }
            #expect(result == .incomplete, "cut at \(cut)")
        }
        #expect(try head(text).length == bytes.count)
    }

    @Test("a response head: status, reason, framing by status and request method")
    func responseHead() throws {
        let ok = try head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", request: false)
        #expect(ok.status == 200)
        #expect(ok.framing == .length(5))
        #expect(HTTP1HeadParser.responseFraming(ok, requestIsHEAD: true) == .none)
        let chunked = try head("HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n", request: false)
        #expect(chunked.framing == .chunked)
        let close = try head("HTTP/1.0 200 OK\r\n\r\n", request: false)
        #expect(close.framing == .untilClose)
        #expect(!close.keepAlive)
        let noContent = try head("HTTP/1.1 204 No Content\r\n\r\n", request: false)
        #expect(HTTP1HeadParser.responseFraming(noContent, requestIsHEAD: false) == .none)
        let noReason = try head("HTTP/1.1 304\r\n\r\n", request: false)
        #expect(noReason.status == 304)
        guard
            case .invalid = parse(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                request: false
            )
        else {
            Issue.record("CL+TE response accepted")
            return
        }
    }
}

@Suite("HTTP/1 body framer")
struct HTTP1BodyFramerTests {
    @Test("Content-Length: takes exactly the length, the rest is the next message")
    func length() throws {
        let result = try frame(.length(5), Array("helloGET".utf8), pieces: [2, 1])
        #expect(result.taken == 5)
        #expect(result.complete)
        #expect(HTTP1BodyFramer(.length(0)).isComplete)
        #expect(HTTP1BodyFramer(.none).isComplete)
    }

    @Test("chunked with extensions and trailers ends after the trailer section, in any split")
    func chunked() throws {
        let body = Array("5;a=b;c=\"d;\\\"e\"\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n".utf8)
        let next = Array("GET / HTTP/1.1\r\n".utf8)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var pieces: [Int] = []
            var total = 0
            while total < body.count + next.count {
                let size = Int.random(in: 1...9, using: &generator)
                pieces.append(size)
                total += size
            }
            let result = try frame(.chunked, body + next, pieces: pieces)
            #expect(result.taken == body.count)
            #expect(result.complete)
        }
    }

    @Test(
        "malformed chunked bodies are refused",
        arguments: [
            "x\r\n", "\r\n", "5 \r\nhello\r\n", "-5\r\n", "1234567890ABCDEF0\r\n", "5\nhello\r\n",
            "5\r\nhelloXX", "0\r\nX\u{0}\r\n\r\n", "0\r\n folded\r\n\r\n", "5;a\u{1}\r\n",
            "0\r\nX-No-Colon 1\r\n\r\n", "0\r\nTransfer-Encoding: chunked\r\n\r\n", "0\r\ncontent-length: 1\r\n\r\n",
            "5;a=b;\"c\"\r\n", "5;a=b=c\r\n", "5;a=\"b\"c\r\n",
            "5;a=\u{8A}\r\n", "5;a=\u{1}\r\n", "0\r\nX-Space : 1\r\n\r\n",
        ]
    )
    func malformed(text: String) {
        var framer = HTTP1BodyFramer(.chunked)
        let bytes = Array(text.utf8)
        #expect(throws: HTTP1BodyFramer.Error.self) {
            _ = try bytes.withUnsafeBytes { try framer.consume($0) }
        }
    }

    @Test("leading zeros in a chunk size are allowed, as llhttp allows them")
    func leadingZeros() throws {
        let result = try frame(
            .chunked,
            Array("00000000000000000000005\r\nhello\r\n000000000000000000\r\n\r\n".utf8),
            pieces: [7]
        )
        #expect(result.complete)
    }

    @Test("a body delimited by close takes everything and never ends")
    func untilClose() throws {
        let result = try frame(.untilClose, Array("anything".utf8), pieces: [3])
        #expect(result.taken == 8)
        #expect(!result.complete)
    }
}

@Suite("HTTP/1 head rewriter")
struct HTTP1HeadRewriterTests {
    private func rewrite(_ text: String) throws -> String {
        let parsed = try head(text)
        var out = ByteBuffer()
        Array(text.utf8).withUnsafeBytes { p in
            HTTP1HeadRewriter.writeUpstreamRequest(
                parsed,
                from: p,
                forwardedFor: "192.0.2.7",
                forwardedElement: "for=192.0.2.7;proto=http",
                into: &out
            )
        }
        return String(buffer: out)
    }

    @Test(
        "hop-by-hop and Connection-named fields go, Host and Content-Length stay, X-Forwarded-* and Forwarded are added"
    )
    func request() throws {
        let out = try rewrite(
            "POST /p HTTP/1.1\r\nHost: h\r\nConnection: x-drop, host, content-length\r\nX-Drop: 1\r\nKeep-Alive: 5\r\n"
                + "Content-Length: 2\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nAccept: */*\r\n\r\n"
        )
        #expect(
            out
                == "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nAccept: */*\r\n"
                + "X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n"
                + "Forwarded: for=10.0.0.1, for=192.0.2.7;proto=http;host=\"h\"\r\n\r\n"
        )
    }

    @Test("a chunked request says so to the backend; the client's Transfer-Encoding is not copied")
    func chunked() throws {
        let out = try rewrite(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Forwarded-Proto: https\r\n\r\n"
        )
        #expect(
            out
                == "POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 192.0.2.7\r\n"
                + "X-Forwarded-Host: h\r\nForwarded: for=192.0.2.7;proto=http;host=\"h\"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
    }

    @Test("the client's response head: hop-by-hop fields go, chunked framing without a length, close when asked")
    func response() throws {
        func rewrite(_ text: String, head isHEAD: Bool = false, keepAlive: Bool = true) throws -> (
            String, HTTP1HeadRewriter.ResponsePlan
        ) {
            let parsed = try head(text, request: false)
            var out = ByteBuffer()
            let plan = Array(text.utf8).withUnsafeBytes { p in
                HTTP1HeadRewriter.writeClientResponse(
                    parsed,
                    from: p,
                    requestIsHEAD: isHEAD,
                    keepAlive: keepAlive,
                    into: &out
                )
            }
            return (String(buffer: out), plan)
        }
        let (length, lengthPlan) = try rewrite("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: x\r\nA: b\r\n\r\n")
        #expect(length == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nA: b\r\n\r\n")
        #expect(lengthPlan == .init(upstreamFraming: .length(2), chunkEncode: false, keepClient: true))
        let (chunked, chunkedPlan) = try rewrite(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            keepAlive: false
        )
        #expect(chunked == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        #expect(chunkedPlan == .init(upstreamFraming: .chunked, chunkEncode: false, keepClient: false))
        let (close, closePlan) = try rewrite("HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n")
        #expect(close == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(closePlan == .init(upstreamFraming: .untilClose, chunkEncode: true, keepClient: true))
        let (headAnswer, headPlan) = try rewrite("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", head: true)
        #expect(headAnswer == "HTTP/1.1 200 OK\r\n\r\n")
        #expect(headPlan.upstreamFraming == .none)
    }
}
