import Testing

@testable import ReadyGateCore

private let readyText = #""type":"connection_ready""#

/// A backend (unmasked) frame header.
private func header(_ opcode: WebSocketOpcode, fin: Bool = true, length: Int) -> WebSocketFrameHeader {
    WebSocketFrameHeader(
        fin: fin,
        opcode: opcode,
        maskingKey: nil,
        payloadLength: UInt64(length),
        headerLength: length < 126 ? 2 : 4
    )
}

/// Drives a matcher frame by frame. A class, so that `#expect` can call it.
private final class MatcherDriver {
    var matcher: ReadyMessageMatcher

    init(_ readyMessage: String = readyText) {
        matcher = ReadyMessageMatcher(readyMessage: readyMessage)
    }

    /// Feeds one whole frame, its payload in `chunks`, and returns the matcher's verdict at its end.
    func feed(_ opcode: WebSocketOpcode, fin: Bool = true, chunks: [String]) -> Bool {
        let frame = header(opcode, fin: fin, length: chunks.reduce(0) { $0 + $1.utf8.count })
        matcher.frameStarted(frame)
        for chunk in chunks {
            Array(chunk.utf8).withUnsafeBytes { matcher.payload($0, of: frame) }
        }
        return matcher.frameEnded(frame)
    }

    func feed(_ opcode: WebSocketOpcode, fin: Bool = true, _ text: String) -> Bool {
        feed(opcode, fin: fin, chunks: [text])
    }
}

@Suite("ReadyMessageMatcher")
struct ReadyMessageMatcherTests {
    @Test("a single text frame holding the ready text matches")
    func singleFrame() {
        let matcher = MatcherDriver()
        #expect(matcher.feed(.text, #"{"type":"connection_ready","session":"42"}"#))
    }

    @Test("the exact ready text matches")
    func exactText() {
        let matcher = MatcherDriver()
        #expect(matcher.feed(.text, readyText))
    }

    @Test("a binary frame holding the ready bytes matches too")
    func binaryFrame() {
        let matcher = MatcherDriver("READY")
        #expect(matcher.feed(.binary, "xxREADYxx"))
    }

    @Test("no match", arguments: ["", "hello", #"{"type":"connection_pending"}"#, #""type": "connection_ready""#])
    func noMatch(_ text: String) {
        let matcher = MatcherDriver()
        #expect(!matcher.feed(.text, text))
    }

    @Test("matching is byte-exact (case-sensitive)")
    func caseSensitive() {
        let matcher = MatcherDriver("READY")
        #expect(!matcher.feed(.text, "ready"))
    }

    @Test("a message across fragments matches at its last fragment")
    func acrossFragments() {
        let matcher = MatcherDriver()
        #expect(!matcher.feed(.text, fin: false, #"{"type":"conn"#))
        #expect(!matcher.feed(.continuation, fin: false, #"ection_re"#))
        #expect(matcher.feed(.continuation, fin: true, #"ady"}"#))
    }

    @Test("a fragmented message without the text does not match")
    func fragmentsNoMatch() {
        let matcher = MatcherDriver()
        #expect(!matcher.feed(.text, fin: false, #"{"type":"#))
        #expect(!matcher.feed(.continuation, fin: true, #""other"}"#))
    }

    @Test("a needle split across payload chunks of one frame matches")
    func splitAcrossChunks() {
        let matcher = MatcherDriver()
        #expect(matcher.feed(.text, chunks: [#"{"ty"#, #"pe":"connec"#, "t", #"ion_ready"}"#]))
    }

    @Test("every split point of the needle matches")
    func everySplitPoint() {
        let message = #"{"type":"connection_ready"}"#
        let bytes = Array(message)
        for cut in 0...bytes.count {
            let matcher = MatcherDriver()
            #expect(matcher.feed(.text, chunks: [String(bytes[..<cut]), String(bytes[cut...])]), "cut at \(cut)")
        }
    }

    @Test("only data frames count: control frames never match")
    func controlFramesIgnored() {
        let matcher = MatcherDriver()
        #expect(!matcher.feed(.ping, readyText))
        #expect(!matcher.feed(.pong, readyText))
        #expect(!matcher.feed(.close, readyText))
    }

    @Test("a control frame between fragments neither matches nor disturbs the message")
    func controlBetweenFragments() {
        let matcher = MatcherDriver()
        #expect(!matcher.feed(.text, fin: false, #"{"type":"connection"#))
        #expect(!matcher.feed(.ping, #"_ready""#))
        #expect(matcher.feed(.continuation, fin: true, #"_ready"}"#))
    }

    @Test("a continuation with no message begun does not match")
    func strayContinuation() {
        let matcher = MatcherDriver()
        #expect(!matcher.feed(.continuation, fin: true, readyText))
    }

    @Test("a later message can match after one that did not")
    func laterMessage() {
        let matcher = MatcherDriver()
        #expect(!matcher.feed(.text, #"{"type":"hello"}"#))
        #expect(!matcher.feed(.binary, "\u{1}\u{2}"))
        #expect(matcher.feed(.text, #"{"type":"connection_ready"}"#))
    }

    @Test("the text is not matched across two messages")
    func notAcrossMessages() {
        let matcher = MatcherDriver()
        #expect(!matcher.feed(.text, #"{"type":"connection"#))
        #expect(!matcher.feed(.text, #"_ready"}"#))
    }

    @Test("a ready text past the inspected prefix is not seen")
    func inspectionLimit() {
        let matcher = MatcherDriver("READY")
        let padding = String(repeating: "x", count: ReadyMessageMatcher.maxInspectedBytes)
        #expect(!matcher.feed(.text, chunks: [padding, "READY"]))
        let almost = String(repeating: "x", count: ReadyMessageMatcher.maxInspectedBytes - 5)
        #expect(matcher.feed(.text, chunks: [almost, "READY"]))
    }

    @Test("the substring search")
    func contains() {
        let search = { (haystack: String, needle: String) in
            ReadyMessageMatcher.contains(Array(haystack.utf8), Array(needle.utf8))
        }
        #expect(search("abc", ""))
        #expect(search("", ""))
        #expect(!search("", "a"))
        #expect(search("aaab", "aab"))
        #expect(search("abc", "abc"))
        #expect(!search("ab", "abc"))
        #expect(search("xyzabc", "abc"))
        #expect(!search("abxabyab", "abc"))
    }
}
