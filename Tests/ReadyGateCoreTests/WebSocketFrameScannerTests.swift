import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

// MARK: - Harness

/// A scan event made independent of how the stream was split: offsets are absolute and the payload
/// ranges of one frame are replaced by their concatenated bytes.
enum NormalisedScanEvent: Equatable {
    case header(WebSocketFrameHeader, end: Int)
    case payload([UInt8])
    case frameEnd(WebSocketFrameHeader, end: Int, closeCode: UInt16?)
}

/// Feeds a byte stream to a ``WebSocketFrameScanner`` in chunks and normalises what it reports.
struct FrameScanHarness {
    var scanner: WebSocketFrameScanner
    private(set) var events: [NormalisedScanEvent] = []
    /// Absolute offset of the next chunk's first byte.
    private var streamOffset = 0
    /// Absolute offset just after the last header, payload or frame end reported.
    private var lastEnd = 0

    init(role: WebSocketPeerRole, allowedReservedBits: UInt8 = 0, maxMessageBytes: UInt64 = .max) {
        scanner = WebSocketFrameScanner(
            role: role,
            allowedReservedBits: allowedReservedBits,
            maxMessageBytes: maxMessageBytes
        )
    }

    /// Scans one chunk, checking the invariants every event must keep whatever the split.
    mutating func feed(_ chunk: ArraySlice<UInt8>) throws {
        let chunk = Array(chunk)
        // A local copy: `record` mutates `self` while the scanner runs.
        var scanner = self.scanner
        defer { self.scanner = scanner }
        try chunk.withUnsafeBytes { buffer in
            try scanner.scan(buffer) { event in record(event, chunk: chunk) }
        }
        streamOffset += chunk.count
    }

    /// Scans `stream` cut at the sorted offsets `cuts` (empty chunks included).
    mutating func feed(_ stream: [UInt8], cuts: [Int]) throws {
        var start = 0
        for cut in cuts + [stream.count] {
            try feed(stream[start..<cut])
            start = cut
        }
    }

    private mutating func record(_ event: WebSocketScanEvent, chunk: [UInt8]) {
        switch event {
        case .header(let header, let endOffset):
            #expect((0...chunk.count).contains(endOffset))
            #expect(streamOffset + endOffset == lastEnd + header.headerLength)
            lastEnd = streamOffset + endOffset
            events.append(.header(header, end: lastEnd))
        case .payload(let range):
            #expect(!range.isEmpty)
            #expect(range.lowerBound >= 0 && range.upperBound <= chunk.count)
            #expect(streamOffset + range.lowerBound == lastEnd)
            lastEnd = streamOffset + range.upperBound
            if case .payload(let previous) = events.last {
                events[events.count - 1] = .payload(previous + chunk[range])
            } else {
                events.append(.payload(Array(chunk[range])))
            }
        case .frameEnd(let header, let endOffset, let closeCode):
            #expect((0...chunk.count).contains(endOffset))
            #expect(streamOffset + endOffset == lastEnd)
            events.append(.frameEnd(header, end: lastEnd, closeCode: closeCode))
        }
    }

    /// Scans `stream` in one go, or cut at `cuts`, and returns the harness for inspection.
    static func scan(
        _ stream: [UInt8],
        cuts: [Int] = [],
        role: WebSocketPeerRole,
        allowedReservedBits: UInt8 = 0,
        maxMessageBytes: UInt64 = .max
    ) throws -> FrameScanHarness {
        var harness = FrameScanHarness(
            role: role,
            allowedReservedBits: allowedReservedBits,
            maxMessageBytes: maxMessageBytes
        )
        try harness.feed(stream, cuts: cuts)
        return harness
    }
}

enum FrameFixtures {
    static let binaryPayload: [UInt8] = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7) }

    /// Text, binary (16-bit length), ping, a text message in three fragments with a ping and a pong
    /// between them, an empty pong, an empty binary message, and a close with code and reason.
    /// Masked with a different key per frame when `masked` (client to server).
    static func sampleStream(masked: Bool) -> [UInt8] {
        var key: UInt32 = 0x37FA_213D
        func frame(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
            key = key &* 0x0100_0193 &+ 0x9E37
            return WebSocketFrameWriter.frame(
                opcode: opcode,
                payload: payload,
                fin: fin,
                maskingKey: masked ? key : nil
            )
        }
        return frame(.text, Array("Hello".utf8))
            + frame(.binary, binaryPayload)
            + frame(.ping, [0x70])
            + frame(.text, Array("frag".utf8), fin: false)
            + frame(.ping, Array("?".utf8))
            + frame(.continuation, Array("ment".utf8), fin: false)
            + frame(.pong, Array("!".utf8))
            + frame(.continuation, Array("ed".utf8), fin: true)
            + frame(.pong, [])
            + frame(.binary, [])
            + frame(.close, WebSocketFrameWriter.closePayload(code: 1000, reason: "bye"))
    }

    static var sampleStats: WebSocketTrafficStats {
        var stats = WebSocketTrafficStats()
        stats.frames = 11
        stats.messages = 4
        stats.textMessages = 2
        stats.binaryMessages = 2
        stats.pings = 2
        stats.pongs = 2
        stats.closeCode = 1000
        stats.sawClose = true
        return stats
    }

    /// `frame` with the RSV bits `bits` (RSV1 = 0b100) set in its first byte.
    static func withReservedBits(_ frame: [UInt8], _ bits: UInt8) -> [UInt8] {
        var frame = frame
        frame[0] |= bits << 4
        return frame
    }
}

// MARK: - Splits

@Suite("WebSocketFrameScanner")
struct WebSocketFrameScannerTests {
    static let roles: [WebSocketPeerRole] = [.server, .client]

    @Test("single-chunk scan of the sample stream reports every frame", arguments: roles)
    func singleChunk(role: WebSocketPeerRole) throws {
        let stream = FrameFixtures.sampleStream(masked: role == .client)
        let harness = try FrameScanHarness.scan(stream, role: role)

        var expectedStats = FrameFixtures.sampleStats
        expectedStats.bytes = UInt64(stream.count)
        #expect(harness.scanner.stats == expectedStats)
        #expect(harness.scanner.isAtFrameBoundary)

        let headers = harness.events.compactMap { event -> WebSocketFrameHeader? in
            if case .header(let header, _) = event { return header }
            return nil
        }
        #expect(
            headers.map(\.opcode) == [
                .text, .binary, .ping, .text, .ping, .continuation, .pong, .continuation, .pong, .binary, .close,
            ]
        )
        #expect(headers.map(\.fin) == [true, true, true, false, true, false, true, true, true, true, true])
        #expect(headers.allSatisfy { ($0.maskingKey != nil) == (role == .client) })

        // Unmasked payloads, frame by frame; empty frames report no payload event at all.
        var payloads: [[UInt8]] = []
        var currentKey: UInt32?
        for event in harness.events {
            switch event {
            case .header(let header, _): currentKey = header.maskingKey
            case .payload(var bytes):
                if let currentKey { WebSocketMasking.apply(maskingKey: currentKey, to: &bytes) }
                payloads.append(bytes)
            case .frameEnd: break
            }
        }
        let text: (String) -> [UInt8] = { Array($0.utf8) }
        let closePayload = WebSocketFrameWriter.closePayload(code: 1000, reason: "bye")
        #expect(
            payloads == [
                text("Hello"), FrameFixtures.binaryPayload, [0x70], text("frag"), text("?"), text("ment"), text("!"),
                text("ed"), closePayload,
            ]
        )

        // Zero-length frames: the frame ends where its header ends.
        let emptyEnds = harness.events.indices.filter { index in
            guard case .header(let header, let end) = harness.events[index], header.payloadLength == 0 else {
                return false
            }
            return harness.events[index + 1] == .frameEnd(header, end: end, closeCode: nil)
        }
        #expect(emptyEnds.count == 2)
        #expect(harness.events.last == .frameEnd(headers[10], end: stream.count, closeCode: 1000))
    }

    @Test("two chunks split at every index give the single-chunk events", arguments: roles)
    func everyTwoChunkSplit(role: WebSocketPeerRole) throws {
        let stream = FrameFixtures.sampleStream(masked: role == .client)
        let reference = try FrameScanHarness.scan(stream, role: role)
        for cut in 0...stream.count {
            let split = try FrameScanHarness.scan(stream, cuts: [cut], role: role)
            #expect(split.events == reference.events, "split at \(cut)")
            #expect(split.scanner.stats == reference.scanner.stats, "split at \(cut)")
            #expect(split.scanner.isAtFrameBoundary)
        }
    }

    @Test("byte-by-byte scan gives the single-chunk events", arguments: roles)
    func byteByByte(role: WebSocketPeerRole) throws {
        let stream = FrameFixtures.sampleStream(masked: role == .client)
        let reference = try FrameScanHarness.scan(stream, role: role)
        let split = try FrameScanHarness.scan(stream, cuts: Array(1..<stream.count), role: role)
        #expect(split.events == reference.events)
        #expect(split.scanner.stats == reference.scanner.stats)
    }

    @Test("seeded random splits give the single-chunk events", arguments: roles)
    func randomSplits(role: WebSocketPeerRole) throws {
        let stream = FrameFixtures.sampleStream(masked: role == .client)
        let reference = try FrameScanHarness.scan(stream, role: role)
        var generator = SplitMix64(seed: 0x5EED_0001)
        for round in 0..<200 {
            let cutCount = Int.random(in: 1...24, using: &generator)
            let cuts = (0..<cutCount).map { _ in Int.random(in: 0...stream.count, using: &generator) }.sorted()
            let split = try FrameScanHarness.scan(stream, cuts: cuts, role: role)
            #expect(split.events == reference.events, "round \(round), cuts \(cuts)")
            #expect(split.scanner.stats == reference.scanner.stats, "round \(round)")
        }
    }

    @Test("three chunks at every pair of split points around the fragmented message")
    func everyThreeChunkSplit() throws {
        // The last 90 bytes hold the tail of the binary frame, the ping, the fragmented message and the
        // frames after it, all masked: every pair of cuts there makes the partial-header path resume
        // from every buffered length.
        let stream = FrameFixtures.sampleStream(masked: true)
        let reference = try FrameScanHarness.scan(stream, role: .client)
        let region = (stream.count - 90)...stream.count
        for first in region {
            for second in first...stream.count {
                let split = try FrameScanHarness.scan(stream, cuts: [first, second], role: .client)
                #expect(split.events == reference.events, "cuts \(first), \(second)")
            }
        }
    }

    // MARK: - Stats and boundaries

    @Test("isAtFrameBoundary is false inside a header or payload")
    func frameBoundary() throws {
        let frame = WebSocketFrameWriter.frame(opcode: .binary, payload: [1, 2, 3], maskingKey: 0x0102_0304)
        var harness = FrameScanHarness(role: .client)
        #expect(harness.scanner.isAtFrameBoundary)
        for index in frame.indices {
            try harness.feed(frame[index..<(index + 1)])
            #expect(harness.scanner.isAtFrameBoundary == (index == frame.count - 1), "after byte \(index)")
        }
        #expect(harness.scanner.stats.bytes == UInt64(frame.count))
    }

    @Test("stats count frames only when they end, and keep the first close code")
    func statsCounting() throws {
        let text = WebSocketFrameWriter.frame(opcode: .text, payload: Array("abc".utf8))
        var harness = FrameScanHarness(role: .server)
        try harness.feed(text[0..<4])
        #expect(harness.scanner.stats.frames == 0)
        #expect(harness.scanner.stats.messages == 0)
        #expect(harness.scanner.stats.bytes == 4)
        try harness.feed(text[4...])
        #expect(harness.scanner.stats.frames == 1)
        #expect(harness.scanner.stats.messages == 1)
        #expect(harness.scanner.stats.textMessages == 1)

        let firstClose = WebSocketFrameWriter.frame(opcode: .close, payload: [])
        let secondClose = WebSocketFrameWriter.frame(
            opcode: .close,
            payload: WebSocketFrameWriter.closePayload(code: 1001, reason: "")
        )
        try harness.feed((firstClose + secondClose)[...])
        let stats = harness.scanner.stats
        #expect(stats.sawClose)
        #expect(stats.closeCode == nil, "the first close frame carried no code")
        #expect(stats.frames == 3)
        #expect(stats.bytes == UInt64(text.count + firstClose.count + secondClose.count))
        guard case .frameEnd(let header, _, let closeCode) = harness.events.last else {
            Issue.record("no frame end")
            return
        }
        #expect(header.opcode == .close)
        #expect(closeCode == 1001, "each frame end still reports its own code")
    }

    @Test("a message ends only at its FIN frame, control frames between do not end it")
    func fragmentedMessageStats() throws {
        let stream =
            WebSocketFrameWriter.frame(opcode: .binary, payload: [1], fin: false)
            + WebSocketFrameWriter.frame(opcode: .ping, payload: [])
        var harness = FrameScanHarness(role: .server)
        try harness.feed(stream[...])
        #expect(harness.scanner.stats.messages == 0)
        #expect(harness.scanner.stats.pings == 1)
        #expect(harness.scanner.isInsideMessage)
        try harness.feed(WebSocketFrameWriter.frame(opcode: .continuation, payload: [2], fin: true)[...])
        #expect(harness.scanner.stats.messages == 1)
        #expect(harness.scanner.stats.binaryMessages == 1)
        #expect(harness.scanner.stats.textMessages == 0)
        #expect(!harness.scanner.isInsideMessage)
    }

    // MARK: - Close codes

    @Test("a masked close code split across chunks is unmasked", arguments: [1000, 1001, 1011, 3000, 4000, 4999])
    func closeCodeSplitMasked(code: UInt16) throws {
        let frame = WebSocketFrameWriter.frame(
            opcode: .close,
            payload: WebSocketFrameWriter.closePayload(code: code, reason: "going away"),
            maskingKey: 0xA5C3_5A3C
        )
        // The code bytes are frame[6] and frame[7]: split before, between and after them, and
        // byte by byte.
        var splits = (0...frame.count).map { [$0] }
        splits.append(Array(1..<frame.count))
        splits.append([6, 7])
        for cuts in splits {
            let harness = try FrameScanHarness.scan(frame, cuts: cuts, role: .client)
            guard case .frameEnd(_, _, let closeCode) = harness.events.last else {
                Issue.record("no frame end for cuts \(cuts)")
                continue
            }
            #expect(closeCode == code, "cuts \(cuts)")
            #expect(harness.scanner.stats.closeCode == code)
            #expect(harness.scanner.stats.sawClose)
        }
    }

    @Test("close codes RFC 6455 §7.4 allows are accepted", arguments: [1000, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
    func validCloseCodes(code: UInt16) throws {
        #expect(WebSocketFrameScanner.isValidCloseCode(code))
        let frame = WebSocketFrameWriter.frame(
            opcode: .close,
            payload: WebSocketFrameWriter.closePayload(code: code, reason: "")
        )
        let harness = try FrameScanHarness.scan(frame, role: .server)
        #expect(harness.scanner.stats.closeCode == code)
    }

    @Test("an empty close frame has no code")
    func emptyClose() throws {
        let frame = WebSocketFrameWriter.frame(opcode: .close, payload: [], maskingKey: 1)
        let harness = try FrameScanHarness.scan(frame, role: .client)
        #expect(harness.scanner.stats.sawClose)
        #expect(harness.scanner.stats.closeCode == nil)
        #expect(harness.events.count == 2)
    }

    // MARK: - Close reasons

    @Test("a close reason that is not UTF-8 is invalidCloseReason, close code 1007")
    func invalidCloseReason() throws {
        let frame = WebSocketFrameWriter.frame(
            opcode: .close,
            payload: [0x03, 0xE8] + Array("bad ".utf8) + [0xFE],
            maskingKey: 0x2468_ACE0
        )
        var harness = FrameScanHarness(role: .client)
        do {
            try harness.feed(frame[...])
            Issue.record("no error")
        } catch let error as WebSocketProtocolError {
            #expect(error.kind == .invalidCloseReason)
            #expect(error.closeCode == 1007)
            #expect(error.description == "close reason is not valid UTF-8")
        }
        // Unmasked from a server too.
        let serverFrame = WebSocketFrameWriter.frame(opcode: .close, payload: [0x03, 0xE8, 0xC0, 0x80])
        #expect(throws: WebSocketProtocolError(.invalidCloseReason)) {
            try FrameScanHarness.scan(serverFrame, role: .server)
        }
    }

    static let multiByteReasons = [
        "é", "ça va", "日本語", "😀", "a😀b€c", "✓ done 🎉", "\u{10FFFF}", "\u{7F}\u{80}\u{7FF}\u{800}",
    ]

    @Test("a multi-byte UTF-8 reason split across chunks anywhere is accepted", arguments: multiByteReasons)
    func multiByteReasonSplit(reason: String) throws {
        let payload = WebSocketFrameWriter.closePayload(code: 1001, reason: reason)
        #expect(payload.count == 2 + reason.utf8.count)
        for role in Self.roles {
            let frame = WebSocketFrameWriter.frame(
                opcode: .close,
                payload: payload,
                maskingKey: role == .client ? 0x8421_1248 : nil
            )
            let reference = try FrameScanHarness.scan(frame, role: role)
            guard case .frameEnd(_, let end, let code) = reference.events.last, end == frame.count, code == 1001 else {
                Issue.record("no frame end with code 1001: \(reference.events)")
                continue
            }
            var splits = [Array(1..<frame.count)]
            for first in 0...frame.count {
                for second in first...frame.count { splits.append([first, second]) }
            }
            for cuts in splits {
                let harness = try FrameScanHarness.scan(frame, cuts: cuts, role: role)
                #expect(harness.events == reference.events, "cuts \(cuts)")
                #expect(harness.scanner.stats.closeCode == 1001)
                #expect(harness.scanner.isAtFrameBoundary)
            }
        }
    }

    @Test("a close reason is checked afresh in each close frame")
    func reasonPerFrame() throws {
        // The first frame's reason ends on a character boundary; the second's starts with one.
        let stream =
            WebSocketFrameWriter.frame(
                opcode: .close,
                payload: WebSocketFrameWriter.closePayload(code: 1000, reason: "é")
            )
            + WebSocketFrameWriter.frame(
                opcode: .close,
                payload: WebSocketFrameWriter.closePayload(code: 1000, reason: "😀")
            )
        let harness = try FrameScanHarness.scan(stream, cuts: Array(1..<stream.count), role: .server)
        #expect(harness.scanner.stats.frames == 2)

        // A reason cut mid-character in one frame is not completed by the next frame's bytes.
        let cut =
            WebSocketFrameWriter.frame(opcode: .close, payload: [0x03, 0xE8, 0xC3])
            + WebSocketFrameWriter.frame(opcode: .close, payload: [0x03, 0xE8, 0xA9])
        #expect(throws: WebSocketProtocolError(.invalidCloseReason)) {
            try FrameScanHarness.scan(cut, role: .server)
        }
    }

    // MARK: - Extensions and limits (accepted)

    @Test("RSV1 is accepted on the first frame of a message when negotiated")
    func reservedBitAllowed() throws {
        let stream =
            FrameFixtures.withReservedBits(WebSocketFrameWriter.frame(opcode: .text, payload: [1], fin: false), 0b100)
            + WebSocketFrameWriter.frame(opcode: .ping, payload: [])
            + WebSocketFrameWriter.frame(opcode: .continuation, payload: [2])
            + FrameFixtures.withReservedBits(WebSocketFrameWriter.frame(opcode: .binary, payload: [3]), 0b100)
        let harness = try FrameScanHarness.scan(stream, role: .server, allowedReservedBits: 0b100)
        #expect(harness.scanner.stats.messages == 2)
        guard case .header(let first, _) = harness.events.first else {
            Issue.record("no header")
            return
        }
        #expect(first.reservedBits == 0b100)
    }

    @Test("a message of exactly maxMessageBytes is accepted")
    func messageAtLimit() throws {
        let stream =
            WebSocketFrameWriter.frame(opcode: .binary, payload: [UInt8](repeating: 0, count: 6), fin: false)
            + WebSocketFrameWriter.frame(opcode: .ping, payload: [UInt8](repeating: 0, count: 100))
            + WebSocketFrameWriter.frame(opcode: .continuation, payload: [UInt8](repeating: 0, count: 4))
            + WebSocketFrameWriter.frame(opcode: .text, payload: [UInt8](repeating: 0x61, count: 10))
        let harness = try FrameScanHarness.scan(stream, role: .server, maxMessageBytes: 10)
        #expect(harness.scanner.stats.messages == 2)
    }

    // MARK: - Errors

    struct Violation: Sendable, CustomTestStringConvertible {
        var name: String
        var role: WebSocketPeerRole = .server
        var allowedReservedBits: UInt8 = 0
        var maxMessageBytes: UInt64 = .max
        var stream: [UInt8]
        var expected: WebSocketProtocolError.Kind
        var testDescription: String { name }
    }

    static let violations: [Violation] = {
        typealias W = WebSocketFrameWriter
        let fragmentStart = W.frame(opcode: .text, payload: [0x61], fin: false)
        func close(_ code: UInt16) -> Violation {
            Violation(
                name: "close code \(code)",
                role: .client,
                stream: W.frame(
                    opcode: .close,
                    payload: W.closePayload(code: code, reason: "x"),
                    maskingKey: 0xDEAD_BEEF
                ),
                expected: .invalidClosePayload
            )
        }
        func invalidReason(_ name: String, _ reason: [UInt8]) -> Violation {
            Violation(
                name: "close reason: \(name)",
                role: .client,
                stream: W.frame(opcode: .close, payload: [0x03, 0xE8] + reason, maskingKey: 0x1357_9BDF),
                expected: .invalidCloseReason
            )
        }
        return [
            Violation(
                name: "unmasked client frame",
                role: .client,
                stream: W.frame(opcode: .text, payload: [1]),
                expected: .maskingRuleViolated
            ),
            Violation(
                name: "masked server frame",
                role: .server,
                stream: W.frame(opcode: .text, payload: [1], maskingKey: 7),
                expected: .maskingRuleViolated
            ),
            Violation(
                name: "RSV1 not negotiated",
                stream: FrameFixtures.withReservedBits(W.frame(opcode: .text, payload: [1]), 0b100),
                expected: .reservedBitsSet
            ),
            Violation(
                name: "RSV2 with RSV1 negotiated",
                allowedReservedBits: 0b100,
                stream: FrameFixtures.withReservedBits(W.frame(opcode: .binary, payload: [1]), 0b010),
                expected: .reservedBitsSet
            ),
            Violation(
                name: "RSV3",
                stream: FrameFixtures.withReservedBits(W.frame(opcode: .binary, payload: []), 0b001),
                expected: .reservedBitsSet
            ),
            Violation(
                name: "RSV1 on a continuation frame",
                allowedReservedBits: 0b100,
                stream: FrameFixtures.withReservedBits(fragmentStart, 0b100)
                    + FrameFixtures.withReservedBits(W.frame(opcode: .continuation, payload: [2]), 0b100),
                expected: .reservedBitsSet
            ),
            Violation(
                name: "RSV1 on a control frame",
                allowedReservedBits: 0b100,
                stream: FrameFixtures.withReservedBits(W.frame(opcode: .ping, payload: []), 0b100),
                expected: .reservedBitsSet
            ),
            Violation(name: "opcode 3", stream: [0x83, 0x00], expected: .unknownOpcode(3)),
            Violation(name: "opcode 7", stream: [0x87, 0x00], expected: .unknownOpcode(7)),
            Violation(name: "opcode 0xB", stream: [0x8B, 0x00], expected: .unknownOpcode(0xB)),
            Violation(name: "opcode 0xF", stream: [0x8F, 0x00], expected: .unknownOpcode(0xF)),
            Violation(
                name: "ping of 126 bytes",
                stream: [0x89, 126, 0x00, 126] + [UInt8](repeating: 0, count: 126),
                expected: .controlFrameTooLong(126)
            ),
            Violation(
                name: "masked close of 200 bytes",
                role: .client,
                stream: [0x88, 0x80 | 126, 0x00, 200, 1, 2, 3, 4] + [UInt8](repeating: 0, count: 200),
                expected: .controlFrameTooLong(200)
            ),
            Violation(name: "ping without FIN", stream: [0x09, 0x00], expected: .fragmentedControlFrame),
            Violation(
                name: "continuation without a message",
                stream: W.frame(opcode: .continuation, payload: [1]),
                expected: .unexpectedContinuation
            ),
            Violation(
                name: "continuation after a finished message",
                stream: W.frame(opcode: .text, payload: [1]) + W.frame(opcode: .continuation, payload: [1]),
                expected: .unexpectedContinuation
            ),
            Violation(
                name: "text inside a fragmented message",
                stream: fragmentStart + W.frame(opcode: .ping, payload: []) + W.frame(opcode: .text, payload: [1]),
                expected: .expectedContinuation
            ),
            Violation(
                name: "binary inside a fragmented message",
                stream: fragmentStart + W.frame(opcode: .binary, payload: [1], fin: false),
                expected: .expectedContinuation
            ),
            Violation(
                name: "16-bit length carrying 125",
                stream: [0x82, 126, 0x00, 125] + [UInt8](repeating: 0, count: 125),
                expected: .nonMinimalLength
            ),
            Violation(
                name: "16-bit length carrying 0",
                stream: [0x82, 126, 0x00, 0x00],
                expected: .nonMinimalLength
            ),
            Violation(
                name: "64-bit length carrying 65535",
                stream: [0x82, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF],
                expected: .nonMinimalLength
            ),
            Violation(
                name: "64-bit length carrying 5",
                stream: [0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5],
                expected: .nonMinimalLength
            ),
            Violation(
                name: "64-bit length with the high bit set",
                stream: [0x82, 127, 0x80, 0, 0, 0, 0, 1, 0, 0],
                expected: .lengthHighBitSet
            ),
            Violation(name: "close with 1 byte", stream: [0x88, 0x01, 0x03], expected: .invalidClosePayload),
            close(0), close(999), close(1004), close(1005), close(1006), close(1015), close(1016), close(2999),
            close(5000), close(0xFFFF),
            invalidReason("0xFF in the reason", [0xFF]),
            invalidReason("an overlong '/'", [0xC0, 0xAF]),
            invalidReason("a UTF-16 surrogate", [0xED, 0xA0, 0x80]),
            invalidReason("past U+10FFFF", [0xF4, 0x90, 0x80, 0x80]),
            invalidReason("a stray continuation byte", Array("ok".utf8) + [0x80]),
            invalidReason("a lead byte followed by ASCII", [0xC3, 0x28]),
            invalidReason("'é' cut after its lead byte at frame end", Array("caf".utf8) + [0xC3]),
            invalidReason("'😀' cut after three of its four bytes at frame end", [0xF0, 0x9F, 0x98]),
            Violation(
                name: "single frame over the limit",
                maxMessageBytes: 10,
                stream: W.frame(opcode: .text, payload: [UInt8](repeating: 0x61, count: 11)),
                expected: .messageTooBig(11)
            ),
            Violation(
                name: "fragments over the limit",
                maxMessageBytes: 10,
                stream: W.frame(opcode: .binary, payload: [UInt8](repeating: 0, count: 6), fin: false)
                    + W.frame(opcode: .pong, payload: [UInt8](repeating: 0, count: 50))
                    + W.frame(opcode: .continuation, payload: [UInt8](repeating: 0, count: 6)),
                expected: .messageTooBig(12)
            ),
            Violation(
                name: "header of a 5 MB frame alone",
                maxMessageBytes: 1 << 20,
                stream: [0x82, 127, 0, 0, 0, 0, 0, 0x4C, 0x4B, 0x40],
                expected: .messageTooBig(5_000_000)
            ),
        ]
    }()

    @Test("protocol violations throw whatever the split", arguments: violations)
    func violation(_ violation: Violation) throws {
        let expected = WebSocketProtocolError(violation.expected)
        var splits: [[Int]] = [[], Array(1..<max(violation.stream.count, 1))]
        splits += (0...violation.stream.count).map { [$0] }
        for cuts in splits {
            #expect(throws: expected, "cuts \(cuts)") {
                try FrameScanHarness.scan(
                    violation.stream,
                    cuts: cuts,
                    role: violation.role,
                    allowedReservedBits: violation.allowedReservedBits,
                    maxMessageBytes: violation.maxMessageBytes
                )
            }
        }
    }

    @Test("a frame too big for the limit is rejected on its header, before its payload")
    func messageTooBigOnHeader() throws {
        let header: [UInt8] = [0x82, 126, 0x01, 0x00]
        var harness = FrameScanHarness(role: .server, maxMessageBytes: 255)
        #expect(throws: WebSocketProtocolError(.messageTooBig(256))) {
            try harness.feed(header[...])
        }
    }

    @Test("a server-side masking violation is caught from the first two bytes")
    func earlyMaskingError() throws {
        var harness = FrameScanHarness(role: .server)
        #expect(throws: WebSocketProtocolError(.maskingRuleViolated)) {
            try harness.feed([0x81, 0x85][...])
        }
    }

    @Test("error descriptions and close codes")
    func errorDescriptions() {
        let cases: [(WebSocketProtocolError.Kind, String, UInt16)] = [
            (.maskingRuleViolated, "masking rule violated", 1002),
            (.reservedBitsSet, "reserved bits set", 1002),
            (.unknownOpcode(3), "unknown opcode 3", 1002),
            (.controlFrameTooLong(126), "control frame too long (126 bytes)", 1002),
            (.fragmentedControlFrame, "fragmented control frame", 1002),
            (.unexpectedContinuation, "unexpected continuation frame", 1002),
            (.expectedContinuation, "expected continuation frame", 1002),
            (.nonMinimalLength, "non-minimal payload length", 1002),
            (.lengthHighBitSet, "payload length has the high bit set", 1002),
            (.invalidClosePayload, "invalid close payload", 1002),
            (.invalidCloseReason, "close reason is not valid UTF-8", 1007),
            (.messageTooBig(5_000_000), "message too big (5000000 bytes)", 1009),
        ]
        for (kind, description, closeCode) in cases {
            let error = WebSocketProtocolError(kind)
            #expect(error.description == description)
            #expect(error.closeCode == closeCode)
            #expect(error.description.utf8.count <= 123)
        }
    }
}
