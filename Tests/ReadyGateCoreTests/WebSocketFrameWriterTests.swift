import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

@Suite("WebSocketFrameWriter and WebSocketFrameHeader.parse")
struct WebSocketFrameWriterTests {
    struct LengthForm: Sendable, CustomTestStringConvertible {
        var payloadLength: Int
        /// The 7-bit length field: the length itself, 126 or 127.
        var shortLength: UInt8
        var unmaskedHeaderLength: Int
        var testDescription: String { "\(payloadLength) bytes" }
    }

    static let lengthForms: [LengthForm] = [
        LengthForm(payloadLength: 0, shortLength: 0, unmaskedHeaderLength: 2),
        LengthForm(payloadLength: 1, shortLength: 1, unmaskedHeaderLength: 2),
        LengthForm(payloadLength: 125, shortLength: 125, unmaskedHeaderLength: 2),
        LengthForm(payloadLength: 126, shortLength: 126, unmaskedHeaderLength: 4),
        LengthForm(payloadLength: 65_535, shortLength: 126, unmaskedHeaderLength: 4),
        LengthForm(payloadLength: 65_536, shortLength: 127, unmaskedHeaderLength: 10),
    ]

    static let maskingKeys: [UInt32?] = [nil, 0x37FA_213D]

    static func payload(count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    }

    @Test("every length form encodes minimally and parses back", arguments: lengthForms, maskingKeys)
    func lengthForm(form: LengthForm, maskingKey: UInt32?) throws {
        let payload = Self.payload(count: form.payloadLength)
        let frame = WebSocketFrameWriter.frame(opcode: .binary, payload: payload, maskingKey: maskingKey)
        let headerLength = form.unmaskedHeaderLength + (maskingKey == nil ? 0 : 4)
        #expect(frame.count == headerLength + form.payloadLength)
        #expect(frame[0] == 0x82)
        #expect(frame[1] == (maskingKey == nil ? 0 : 0x80) | form.shortLength)

        let role: WebSocketPeerRole = maskingKey == nil ? .server : .client
        let header = try frame.withUnsafeBytes { bytes in
            try WebSocketFrameHeader.parse(bytes, role: role)
        }
        #expect(
            header
                == WebSocketFrameHeader(
                    fin: true,
                    opcode: .binary,
                    maskingKey: maskingKey,
                    payloadLength: UInt64(form.payloadLength),
                    headerLength: headerLength
                )
        )
        // Every strict prefix of the header is "need more bytes", not an error.
        for prefixLength in 0..<headerLength {
            let partial = try frame.withUnsafeBytes { bytes in
                try WebSocketFrameHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[..<prefixLength]), role: role)
            }
            #expect(partial == nil, "prefix of \(prefixLength) bytes")
        }
    }

    @Test("every length form round-trips through the scanner", arguments: lengthForms, maskingKeys)
    func lengthFormRoundTrip(form: LengthForm, maskingKey: UInt32?) throws {
        let payload = Self.payload(count: form.payloadLength)
        let frame = WebSocketFrameWriter.frame(opcode: .binary, payload: payload, maskingKey: maskingKey)
        let role: WebSocketPeerRole = maskingKey == nil ? .server : .client
        // Whole, and cut inside the header and inside the payload.
        for cuts in [[], [1], [3, 7], [frame.count / 2]] where cuts.allSatisfy({ $0 <= frame.count }) {
            let harness = try FrameScanHarness.scan(frame, cuts: cuts, role: role)
            var received: [UInt8] = []
            for case .payload(let bytes) in harness.events { received += bytes }
            if let maskingKey { WebSocketMasking.apply(maskingKey: maskingKey, to: &received) }
            #expect(received == payload, "cuts \(cuts)")
            #expect(harness.scanner.stats.binaryMessages == 1)
            #expect(harness.scanner.stats.bytes == UInt64(frame.count))
            #expect(harness.scanner.isAtFrameBoundary)
        }
    }

    @Test("a declared 64-bit length of 5 000 000 parses and is skipped chunk by chunk", arguments: maskingKeys)
    func largeDeclaredLength(maskingKey: UInt32?) throws {
        var header: [UInt8] = [0x82, (maskingKey == nil ? 0 : 0x80) | 127, 0, 0, 0, 0, 0, 0x4C, 0x4B, 0x40]
        if let maskingKey {
            header += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: maskingKey >> $0) }
        }
        let role: WebSocketPeerRole = maskingKey == nil ? .server : .client
        let parsed = try header.withUnsafeBytes { try WebSocketFrameHeader.parse($0, role: role) }
        let expected = WebSocketFrameHeader(
            fin: true,
            opcode: .binary,
            maskingKey: maskingKey,
            payloadLength: 5_000_000,
            headerLength: maskingKey == nil ? 10 : 14
        )
        #expect(parsed == expected)

        // One reused 64 KiB buffer stands in for the payload: the scanner only counts it.
        var scanner = WebSocketFrameScanner(role: role)
        var payloadBytes = 0
        var ends = 0
        try header.withUnsafeBytes { bytes in
            try scanner.scan(bytes) { event in #expect(event == .header(expected, endOffset: bytes.count)) }
        }
        let chunk = [UInt8](repeating: 0, count: 65_536)
        var remaining = 5_000_000
        while remaining > 0 {
            let size = min(remaining, chunk.count)
            try chunk.withUnsafeBytes { bytes in
                try scanner.scan(UnsafeRawBufferPointer(rebasing: bytes[..<size])) { event in
                    switch event {
                    case .payload(let range): payloadBytes += range.count
                    case .frameEnd(let header, let endOffset, let closeCode):
                        #expect(header == expected)
                        #expect(endOffset == size)
                        #expect(closeCode == nil)
                        ends += 1
                    case .header: Issue.record("unexpected header")
                    }
                }
            }
            remaining -= size
        }
        #expect(payloadBytes == 5_000_000)
        #expect(ends == 1)
        #expect(scanner.stats.bytes == UInt64(5_000_000 + header.count))
        #expect(scanner.stats.binaryMessages == 1)
    }

    @Test("RFC 6455 §5.7 examples")
    func rfcExamples() {
        let hello = Array("Hello".utf8)
        #expect(
            WebSocketFrameWriter.frame(opcode: .text, payload: hello) == [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]
        )
        #expect(
            WebSocketFrameWriter.frame(opcode: .text, payload: hello, maskingKey: 0x37FA_213D) == [
                0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58,
            ]
        )
        #expect(
            WebSocketFrameWriter.frame(opcode: .text, payload: Array("Hel".utf8), fin: false) == [
                0x01, 0x03, 0x48, 0x65, 0x6C,
            ]
        )
        #expect(
            WebSocketFrameWriter.frame(opcode: .continuation, payload: Array("lo".utf8)) == [0x80, 0x02, 0x6C, 0x6F]
        )
        #expect(WebSocketFrameWriter.frame(opcode: .ping, payload: hello).prefix(2) == [0x89, 0x05])
        let binary256 = WebSocketFrameWriter.frame(opcode: .binary, payload: [UInt8](repeating: 0, count: 256))
        #expect(binary256.prefix(4) == [0x82, 0x7E, 0x01, 0x00])
        let binary64k = WebSocketFrameWriter.frame(opcode: .binary, payload: [UInt8](repeating: 0, count: 65_536))
        #expect(binary64k.prefix(10) == [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00])
    }

    @Test("the parser rejects what the writer never produces")
    func parseErrors() {
        func parse(_ bytes: [UInt8], _ role: WebSocketPeerRole) throws(WebSocketProtocolError) {
            let result = bytes.withUnsafeBytes { buffer in
                Result { () throws(WebSocketProtocolError) in try WebSocketFrameHeader.parse(buffer, role: role) }
            }
            _ = try result.get()
        }
        // Checks the first two bytes decide fire even when the rest of the header is missing.
        #expect(throws: WebSocketProtocolError(.maskingRuleViolated)) { try parse([0x82, 0x7F], .client) }
        #expect(throws: WebSocketProtocolError(.maskingRuleViolated)) { try parse([0x82, 0xFE], .server) }
        #expect(throws: WebSocketProtocolError(.unknownOpcode(4))) { try parse([0x84, 0x00], .server) }
        #expect(throws: WebSocketProtocolError(.fragmentedControlFrame)) { try parse([0x08, 0x80], .client) }
        // Length checks fire once the extended length is in, before the masking key.
        #expect(throws: WebSocketProtocolError(.nonMinimalLength)) { try parse([0x81, 0xFE, 0x00, 0x10], .client) }
        #expect(throws: WebSocketProtocolError(.controlFrameTooLong(300))) {
            try parse([0x8A, 0xFE, 0x01, 0x2C], .client)
        }
        #expect(throws: WebSocketProtocolError(.lengthHighBitSet)) {
            try parse([0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], .server)
        }
        // Reserved bits are left to the scanner.
        #expect(throws: Never.self) { try parse([0xF2, 0x00], .server) }
    }

    // MARK: - Masking

    @Test("masking twice restores the bytes, and piecewise masking matches whole-buffer masking")
    func masking() {
        let original = Self.payload(count: 103)
        let key: UInt32 = 0x0102_0304
        var whole = original
        WebSocketMasking.apply(maskingKey: key, to: &whole)
        #expect(whole != original)
        #expect(
            whole.prefix(5) == [original[0] ^ 1, original[1] ^ 2, original[2] ^ 3, original[3] ^ 4, original[4] ^ 1]
        )
        for index in original.indices {
            let keyByte = UInt8(truncatingIfNeeded: key >> (24 - 8 * (index % 4)))
            #expect(whole[index] == original[index] ^ keyByte)
        }

        var restored = whole
        WebSocketMasking.apply(maskingKey: key, to: &restored)
        #expect(restored == original)

        for cut in [1, 2, 3, 5, 9, 17, 50] {
            var head = Array(original[..<cut])
            var tail = Array(original[cut...])
            WebSocketMasking.apply(maskingKey: key, to: &head)
            WebSocketMasking.apply(maskingKey: key, to: &tail, payloadOffset: cut)
            #expect(head + tail == whole, "cut \(cut)")
        }

        var empty: [UInt8] = []
        WebSocketMasking.apply(maskingKey: key, to: &empty, payloadOffset: 3)
        #expect(empty.isEmpty)
    }

    @Test("the raw-buffer overload masks only the given bytes")
    func maskingRawBuffer() {
        var bytes = [UInt8](repeating: 0, count: 20)
        bytes.withUnsafeMutableBytes { buffer in
            WebSocketMasking.apply(
                maskingKey: 0xAABB_CCDD,
                to: UnsafeMutableRawBufferPointer(rebasing: buffer[2..<13]),
                payloadOffset: 1
            )
        }
        let expected: [UInt8] =
            [0, 0] + [0xBB, 0xCC, 0xDD, 0xAA, 0xBB, 0xCC, 0xDD, 0xAA, 0xBB, 0xCC, 0xDD]
            + [UInt8](repeating: 0, count: 7)
        #expect(bytes == expected)
    }

    // MARK: - Close payloads

    @Test("close payload: big-endian code then the reason")
    func closePayload() {
        #expect(WebSocketFrameWriter.closePayload(code: 1000, reason: "") == [0x03, 0xE8])
        #expect(WebSocketFrameWriter.closePayload(code: 4001, reason: "bye") == [0x0F, 0xA1, 0x62, 0x79, 0x65])
    }

    @Test(
        "close reasons are cut to 123 bytes on a scalar boundary",
        arguments: [
            (String(repeating: "a", count: 200), 123),
            (String(repeating: "a", count: 123), 123),
            (String(repeating: "é", count: 100), 122),
            ("a" + String(repeating: "€", count: 60), 121),
            (String(repeating: "€", count: 41), 123),
            ("ab" + String(repeating: "🙂", count: 40), 122),
        ]
    )
    func closeReasonTruncation(reason: String, expectedBytes: Int) throws {
        let payload = WebSocketFrameWriter.closePayload(code: 1001, reason: reason)
        #expect(payload.count == 2 + expectedBytes)
        #expect(payload.count <= 125)
        let text = try #require(String(validating: payload[2...], as: UTF8.self))
        #expect(reason.hasPrefix(text))
    }

    // MARK: - Round trip

    @Test("writer frames round-trip through the scanner")
    func roundTrip() throws {
        let messages: [(WebSocketOpcode, [UInt8], Bool)] = [
            (.text, Array("héllo".utf8), true),
            (.binary, Self.payload(count: 70_000), false),
            (.continuation, Self.payload(count: 3), true),
            (.ping, [], true),
            (.close, WebSocketFrameWriter.closePayload(code: 3001, reason: "done"), true),
        ]
        for role in [WebSocketPeerRole.client, .server] {
            var stream: [UInt8] = []
            for (index, (opcode, payload, fin)) in messages.enumerated() {
                let key: UInt32? = role == .client ? UInt32(0x1234_5678) &* UInt32(index + 1) : nil
                stream += WebSocketFrameWriter.frame(opcode: opcode, payload: payload, fin: fin, maskingKey: key)
            }
            var generator = SplitMix64(seed: 42)
            let cuts = (0..<40).map { _ in Int.random(in: 0...stream.count, using: &generator) }.sorted()
            let harness = try FrameScanHarness.scan(stream, cuts: cuts, role: role)

            var frames: [(WebSocketOpcode, [UInt8], Bool)] = []
            var current: WebSocketFrameHeader?
            var payload: [UInt8] = []
            for event in harness.events {
                switch event {
                case .header(let header, _):
                    current = header
                    payload = []
                case .payload(let bytes):
                    payload = bytes
                case .frameEnd(let header, _, _):
                    #expect(header == current)
                    if let key = header.maskingKey { WebSocketMasking.apply(maskingKey: key, to: &payload) }
                    frames.append((header.opcode, payload, header.fin))
                }
            }
            #expect(frames.map(\.0) == messages.map(\.0))
            #expect(frames.map(\.1) == messages.map(\.1))
            #expect(frames.map(\.2) == messages.map(\.2))
            var expectedStats = WebSocketTrafficStats()
            expectedStats.frames = 5
            expectedStats.messages = 2
            expectedStats.textMessages = 1
            expectedStats.binaryMessages = 1
            expectedStats.pings = 1
            expectedStats.bytes = UInt64(stream.count)
            expectedStats.closeCode = 3001
            expectedStats.sawClose = true
            #expect(harness.scanner.stats == expectedStats)
        }
    }
}
