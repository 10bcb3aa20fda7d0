import NIOCore
import Testing

@testable import ReadyGateCore

/// ``ClientFrameHold``: the client's frames kept verbatim while the session is not ready, control
/// frames cut out and handed back (DESIGN §2, "Buffering while not ready").
@Suite("ClientFrameHold")
struct ClientFrameHoldTests {
    static func masked(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true, key: UInt32) -> [UInt8] {
        WebSocketFrameWriter.frame(opcode: opcode, payload: payload, fin: fin, maskingKey: key)
    }

    static let text = masked(.text, Array("hello, backend".utf8), key: 0x37FA_213D)
    /// 200 bytes: a 16-bit extended length, so its header is 8 bytes on the wire.
    static let binary = masked(.binary, (0..<200).map { UInt8($0) }, key: 0xA1B2_C3D4)
    static let pingPayload = Array("are you there?".utf8)
    static let ping = masked(.ping, pingPayload, key: 0x0F1E_2D3C)
    static let emptyText = masked(.text, [], key: 0x1234_5678)

    static func makeHold() -> ClientFrameHold {
        ClientFrameHold(scanner: WebSocketFrameScanner(role: .client))
    }

    /// Feeds `chunks` in order; returns the controls found.
    static func feed(_ chunks: [[UInt8]], into hold: inout ClientFrameHold) throws -> [ClientFrameHold.ControlFrame] {
        var controls: [ClientFrameHold.ControlFrame] = []
        for chunk in chunks { controls += try hold.receive(ByteBuffer(bytes: chunk)) }
        return controls
    }

    /// Drains `hold` and concatenates what it handed over.
    static func drained(_ hold: inout ClientFrameHold) -> [UInt8] {
        hold.drain().flatMap { Array($0.readableBytesView) }
    }

    // MARK: Data frames

    @Test("masked text and binary frames are queued verbatim, still masked")
    func dataFramesVerbatim() throws {
        var hold = Self.makeHold()
        let input = Self.text + Self.binary + Self.emptyText
        let controls = try Self.feed([input], into: &hold)

        #expect(controls.isEmpty)
        #expect(hold.queuedFrames == 3)
        #expect(hold.queuedBytes == input.count)
        #expect(hold.peakQueuedBytes == input.count)
        #expect(Self.drained(&hold) == input)
    }

    @Test("a fragmented message is queued frame by frame, with a ping between its fragments cut out")
    func fragmentedMessageAroundPing() throws {
        var hold = Self.makeHold()
        let first = Self.masked(.text, Array("frag-".utf8), fin: false, key: 0x1111_2222)
        let last = Self.masked(.continuation, Array("ment".utf8), key: 0x3333_4444)
        let controls = try Self.feed([first + Self.ping + last], into: &hold)

        #expect(controls == [.ping(payload: Self.pingPayload)])
        #expect(hold.queuedFrames == 2)
        #expect(Self.drained(&hold) == first + last)
    }

    // MARK: Control frames

    @Test("a ping between data frames is cut out and returned with its unmasked payload")
    func pingCutOut() throws {
        var hold = Self.makeHold()
        let controls = try Self.feed([Self.text + Self.ping + Self.binary], into: &hold)

        #expect(controls == [.ping(payload: Self.pingPayload)])
        #expect(hold.queuedBytes == Self.text.count + Self.binary.count)
        #expect(hold.queuedFrames == 2)
        #expect(Self.drained(&hold) == Self.text + Self.binary)
    }

    @Test("an empty ping is returned with an empty payload")
    func emptyPing() throws {
        var hold = Self.makeHold()
        let controls = try Self.feed([Self.masked(.ping, [], key: 0xDEAD_BEEF)], into: &hold)
        #expect(controls == [.ping(payload: [])])
        #expect(hold.queuedBytes == 0)
        #expect(hold.queuedFrames == 0)
        #expect(hold.drain().isEmpty)
    }

    @Test("a close returns its code; a close without a body returns nil; a pong returns .pong")
    func closeAndPong() throws {
        var hold = Self.makeHold()
        let close1000 = Self.masked(
            .close,
            WebSocketFrameWriter.closePayload(code: 1000, reason: "bye"),
            key: 0x5566_7788
        )
        let pong = Self.masked(.pong, Array("unsolicited".utf8), key: 0x99AA_BBCC)
        #expect(try Self.feed([Self.text + pong + close1000], into: &hold) == [.pong, .close(code: 1000)])
        #expect(Self.drained(&hold) == Self.text)

        var other = Self.makeHold()
        let bare = Self.masked(.close, [], key: 0x0102_0304)
        #expect(try Self.feed([bare], into: &other) == [.close(code: nil)])

        var goingAway = Self.makeHold()
        let close1001 = Self.masked(.close, WebSocketFrameWriter.closePayload(code: 1001, reason: ""), key: 0xFFFF_0000)
        #expect(try Self.feed([close1001], into: &goingAway) == [.close(code: 1001)])
    }

    @Test("controls before a protocol error in the same read are still handed over")
    func controlsBeforeError() throws {
        var hold = Self.makeHold()
        let unmasked = WebSocketFrameWriter.frame(opcode: .text, payload: [1])
        var seen: [ClientFrameHold.ControlFrame] = []
        #expect(throws: WebSocketProtocolError(.maskingRuleViolated)) {
            try hold.receive(ByteBuffer(bytes: Self.ping + unmasked)) { seen.append($0) }
        }
        #expect(seen == [.ping(payload: Self.pingPayload)])
    }

    // MARK: Splits

    /// data, ping, 16-bit-length data, close: every kind of boundary a read can fall on.
    static let mixed =
        text + ping + binary
        + masked(.close, WebSocketFrameWriter.closePayload(code: 4000, reason: "done"), key: 0x4242_4242)
    static let mixedControls: [ClientFrameHold.ControlFrame] = [.ping(payload: pingPayload), .close(code: 4000)]
    static let mixedQueue = text + binary

    @Test("every split point of data+ping+data+close gives the same queue bytes and controls")
    func everySplitPoint() throws {
        for split in 0...Self.mixed.count {
            var hold = Self.makeHold()
            let chunks = [Array(Self.mixed[..<split]), Array(Self.mixed[split...])]
            let controls = try Self.feed(chunks, into: &hold)
            #expect(controls == Self.mixedControls, "split at \(split)")
            #expect(hold.queuedFrames == 2, "split at \(split)")
            #expect(hold.queuedBytes == Self.mixedQueue.count, "split at \(split)")
            #expect(Self.drained(&hold) == Self.mixedQueue, "split at \(split)")
        }
    }

    @Test("every pair of split points around the ping gives the same queue bytes and controls")
    func everyPairOfSplitPoints() throws {
        let input = Self.text + Self.ping + Self.text
        var failures = 0
        for first in 0...input.count {
            for second in first...input.count {
                var hold = Self.makeHold()
                let chunks = [Array(input[..<first]), Array(input[first..<second]), Array(input[second...])]
                let controls = try Self.feed(chunks, into: &hold)
                let queued = Self.drained(&hold)
                if controls != [.ping(payload: Self.pingPayload)] || queued != Self.text + Self.text {
                    failures += 1
                    Issue.record("splits at \(first), \(second): \(controls)")
                }
                if failures > 5 { return }
            }
        }
    }

    @Test("one byte per read gives the same queue bytes and controls")
    func oneBytePerRead() throws {
        var hold = Self.makeHold()
        let controls = try Self.feed(Self.mixed.map { [$0] }, into: &hold)
        #expect(controls == Self.mixedControls)
        #expect(hold.queuedFrames == 2)
        #expect(Self.drained(&hold) == Self.mixedQueue)
    }

    // MARK: Protocol errors

    @Test("an unmasked client frame throws maskingRuleViolated")
    func unmaskedFrame() throws {
        var hold = Self.makeHold()
        let unmasked = WebSocketFrameWriter.frame(opcode: .text, payload: Array("plain".utf8))
        _ = try hold.receive(ByteBuffer(bytes: Self.text))
        #expect(throws: WebSocketProtocolError(.maskingRuleViolated)) {
            _ = try hold.receive(ByteBuffer(bytes: unmasked))
        }
        // What came before the bad frame is still held, untouched.
        #expect(hold.queuedFrames == 1)
        #expect(Self.drained(&hold) == Self.text)
    }

    @Test("an unmasked frame after a split masked one still throws maskingRuleViolated")
    func unmaskedFrameAfterSplit() throws {
        var hold = Self.makeHold()
        let unmasked = WebSocketFrameWriter.frame(opcode: .binary, payload: [1, 2, 3])
        let input = Self.text + unmasked
        _ = try hold.receive(ByteBuffer(bytes: Array(input[..<5])))
        #expect(throws: WebSocketProtocolError(.maskingRuleViolated)) {
            _ = try hold.receive(ByteBuffer(bytes: Array(input[5...])))
        }
    }

    @Test("a close frame with an invalid UTF-8 reason throws invalidCloseReason (1007)")
    func invalidCloseReason() throws {
        var hold = Self.makeHold()
        let close = Self.masked(.close, [0x03, 0xE8, 0xC3, 0x28], key: 0x0BAD_F00D)
        #expect(throws: WebSocketProtocolError(.invalidCloseReason)) {
            _ = try hold.receive(ByteBuffer(bytes: Self.text + close))
        }
        #expect(WebSocketProtocolError(.invalidCloseReason).closeCode == 1007)
    }

    // MARK: Counters, drain and discard

    @Test("queuedBytes counts data bytes as they arrive, queuedFrames only complete frames")
    func countersWhileFrameArrives() throws {
        var hold = Self.makeHold()
        // One byte: the header is not complete, so nothing is known to be data yet.
        _ = try hold.receive(ByteBuffer(bytes: Array(Self.binary[..<1])))
        #expect(hold.queuedBytes == 0)
        #expect(hold.queuedFrames == 0)

        // Header complete and part of the payload: queued, frame not yet counted.
        _ = try hold.receive(ByteBuffer(bytes: Array(Self.binary[1..<50])))
        #expect(hold.queuedBytes == 50)
        #expect(hold.queuedFrames == 0)

        _ = try hold.receive(ByteBuffer(bytes: Array(Self.binary[50...])))
        #expect(hold.queuedBytes == Self.binary.count)
        #expect(hold.queuedFrames == 1)

        // A control frame adds nothing to the counters.
        _ = try hold.receive(ByteBuffer(bytes: Self.ping))
        #expect(hold.queuedBytes == Self.binary.count)
        #expect(hold.queuedFrames == 1)
        #expect(Self.drained(&hold) == Self.binary)
    }

    @Test("drain hands over the queue in order and empties it; the peak survives")
    func drainEmpties() throws {
        var hold = Self.makeHold()
        _ = try hold.receive(ByteBuffer(bytes: Self.text + Self.binary))
        let peak = Self.text.count + Self.binary.count
        #expect(hold.peakQueuedBytes == peak)

        #expect(Self.drained(&hold) == Self.text + Self.binary)
        #expect(hold.queuedBytes == 0)
        #expect(hold.queuedFrames == 0)
        #expect(hold.peakQueuedBytes == peak)
        #expect(hold.drain().isEmpty)

        // Frames after a drain at a frame boundary queue afresh; the peak only moves when exceeded.
        #expect(try Self.feed([Self.ping + Self.text], into: &hold) == [.ping(payload: Self.pingPayload)])
        #expect(hold.queuedFrames == 1)
        #expect(hold.peakQueuedBytes == peak)
        #expect(Self.drained(&hold) == Self.text)
    }

    @Test("a drain in the middle of a data frame hands over its bytes so far; the rest follows straight")
    func drainMidDataFrame() throws {
        let input = Self.text + Self.binary + Self.ping
        for cut in [Self.text.count + 1, Self.text.count + 5, Self.text.count + 8, Self.text.count + 20] {
            var hold = Self.makeHold()
            _ = try hold.receive(ByteBuffer(bytes: Array(input[..<cut])))
            let firstPart = Self.drained(&hold)
            #expect(firstPart == Array(input[..<cut]), "cut at \(cut)")
            #expect(firstPart + Array(input[cut...]) == input, "cut at \(cut)")
        }
    }

    @Test("a ping split byte by byte and drained halfway is the backend's: its bytes so far are handed over")
    func drainMidPing() throws {
        let input = Self.text + Self.ping + Self.binary
        for pingBytes in 1..<Self.ping.count {
            var hold = Self.makeHold()
            let cut = Self.text.count + pingBytes
            let controls = try Self.feed(input[..<cut].map { [$0] }, into: &hold)
            #expect(controls.isEmpty, "\(pingBytes) ping bytes")
            #expect(hold.queuedFrames == 1)
            let handedOver = Self.drained(&hold)
            #expect(handedOver == Self.text + Self.ping[..<pingBytes], "\(pingBytes) ping bytes")
            // The rest goes straight to the backend: it sees the client's exact stream.
            #expect(handedOver + Array(input[cut...]) == input)
        }
    }

    @Test("a drain in the middle of a header hands over the header bytes so far")
    func drainMidHeader() throws {
        var hold = Self.makeHold()
        let input = Self.text + Self.binary
        let cut = Self.text.count + 3
        #expect(try Self.feed([Array(input[..<cut])], into: &hold).isEmpty)
        #expect(hold.queuedBytes == Self.text.count)
        #expect(Self.drained(&hold) == Array(input[..<cut]))
    }

    @Test("a ping drained whole is not handed over again")
    func drainAfterWholePing() throws {
        var hold = Self.makeHold()
        let controls = try Self.feed((Self.text + Self.ping).map { [$0] }, into: &hold)
        #expect(controls == [.ping(payload: Self.pingPayload)])
        #expect(Self.drained(&hold) == Self.text)
    }

    @Test("discard lets go of everything held, the partial frame too")
    func discard() throws {
        var hold = Self.makeHold()
        _ = try hold.receive(ByteBuffer(bytes: Self.text + Self.binary + Self.ping[..<4]))
        let peak = hold.peakQueuedBytes
        hold.discard()
        #expect(hold.queuedBytes == 0)
        #expect(hold.queuedFrames == 0)
        #expect(hold.peakQueuedBytes == peak)
        #expect(hold.drain().isEmpty)
    }

    @Test("queued bytes are slices of a read: a reader index past zero is honoured")
    func honoursReaderIndex() throws {
        var hold = Self.makeHold()
        var buffer = ByteBuffer(bytes: [0xEE, 0xEE, 0xEE] + Self.text + Self.ping)
        buffer.moveReaderIndex(forwardBy: 3)
        let controls = try hold.receive(buffer)
        #expect(controls == [.ping(payload: Self.pingPayload)])
        #expect(Self.drained(&hold) == Self.text)
    }
}
