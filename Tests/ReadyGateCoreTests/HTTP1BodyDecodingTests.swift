import Testing

@testable import ReadyGateCore

/// Feeds `body` to a framer in pieces of `piece` bytes with ``HTTP1BodyFramer/consumeDecoding(_:payload:)``;
/// returns the content it reported, the bytes it took and whether the message ended.
private func decode(
    _ framing: HTTP1Head.Framing,
    _ text: String,
    piece: Int
) throws -> (content: String, taken: Int, complete: Bool) {
    let body = Array(text.utf8)
    var framer = HTTP1BodyFramer(framing)
    var content: [UInt8] = []
    var taken = 0
    var offset = 0
    while offset < body.count && !framer.isComplete {
        let end = min(offset + piece, body.count)
        let part = Array(body[offset..<end])
        let n = try part.withUnsafeBytes { p in
            try framer.consumeDecoding(p) { range in content += part[range] }
        }
        taken += n
        offset = end
    }
    return (String(decoding: content, as: UTF8.self), taken, framer.isComplete)
}

@Suite("HTTP1BodyFramer: the content of a body (decoding chunked coding)")
struct HTTP1BodyDecodingTests {
    static let chunked = "5;ext=1\r\nhello\r\n1\r\n \r\n005\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"

    @Test(arguments: [1, 2, 3, 7, 100])
    func aChunkedBodyIsDecodedHoweverItIsSplit(piece: Int) throws {
        let result = try decode(.chunked, Self.chunked, piece: piece)
        #expect(result.content == "hello world")
        #expect(result.complete)
        #expect(result.taken == Self.chunked.utf8.count - "NEXT".utf8.count)
    }

    @Test(arguments: [1, 4, 100])
    func aLengthDelimitedBodyIsAllContent(piece: Int) throws {
        let result = try decode(.length(11), "hello worldNEXT", piece: piece)
        #expect(result.content == "hello world")
        #expect(result.taken == 11)
        #expect(result.complete)
    }

    @Test func aCloseDelimitedBodyNeverEnds() throws {
        let result = try decode(.untilClose, "all of it", piece: 4)
        #expect(result.content == "all of it")
        #expect(!result.complete)
    }

    @Test func anEmptyChunkedBodyHasNoContent() throws {
        let result = try decode(.chunked, "0\r\n\r\n", piece: 100)
        #expect(result.content.isEmpty)
        #expect(result.complete)
    }

    @Test func aBadChunkIsAnError() {
        #expect(throws: HTTP1BodyFramer.Error.invalidChunkSize) {
            _ = try decode(.chunked, "zz\r\n", piece: 100)
        }
        #expect(throws: HTTP1BodyFramer.Error.missingChunkCRLF) {
            _ = try decode(.chunked, "2\r\nabX", piece: 100)
        }
    }

    @Test func aCompleteFramerTakesNothing() throws {
        var framer = HTTP1BodyFramer(.none)
        let n = try [UInt8](repeating: 65, count: 4).withUnsafeBytes { p in
            try framer.consumeDecoding(p) { _ in Issue.record("no content expected") }
        }
        #expect(n == 0)
    }
}
