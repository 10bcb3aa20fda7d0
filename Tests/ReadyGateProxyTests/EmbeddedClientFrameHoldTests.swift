import NIOCore
import ReadyGateCore
import Testing

@testable import ReadyGateProxy

/// ``ClientFrameHold``: the client's frames kept verbatim while the session is not ready, control
/// frames cut out and handed back (DESIGN §2, "Buffering while not ready").
@Suite("ClientFrameHold")
struct EmbeddedClientFrameHoldTests {
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

    /// Feeds `chunks` in order; returns the controls found and the queue's bytes, concatenated.
    static func feed(
        _ chunks: [[UInt8]],
        into hold: inout ClientFrameHold
    ) throws -> (controls: [ClientFrameHold.ControlFrame], queued: [UInt8]) {
        var controls: [ClientFrameHold.ControlFrame] = []
        for chunk in chunks { controls += try hold.receive(ByteBuffer(bytes: chunk)) }
        return (controls, queuedBytes(of: hold))
    }

    static func queuedBytes(of hold: ClientFrameHold) -> [UInt8] {
        hold.queue.flatMap { Array($0.readableBytesView) }
    }

    // MARK: Data frames

    @Test("masked text and binary frames are queued verbatim, still masked")
    func dataFramesVerbatim() throws {
        var hold = Self.makeHold()
        let input = Self.text + Self.binary + Self.emptyText
        let (controls, queued) = try Self.feed([input], into: &hold)

        #expect(controls.isEmpty)
        #expect(queued == input)
        #expect(hold.queuedFrames == 3)
        #expect(hold.queuedBytes == input.count)
        #expect(hold.peakQueuedBytes == input.count)
        #expect(hold.scanner.stats.frames == 3)
        #expect(hold.scanner.stats.textMessages == 2)
        #expect(hold.scanner.stats.binaryMessages == 1)
    }

    @Test("a fragmented message is queued frame by frame, with a ping between its fragments cut out")
    func fragmentedMessageAroundPing() throws {
        var hold = Self.makeHold()
        let first = Self.masked(.text, Array("frag-".utf8), fin: false, key: 0x1111_2222)
        let last = Self.masked(.continuation, Array("ment".utf8), key: 0x3333_4444)
        let (controls, queued) = try Self.feed([first + Self.ping + last], into: &hold)

        #expect(controls == [.ping(payload: Self.pingPayload)])
        #expect(queued == first + last)
        #expect(hold.queuedFrames == 2)
        #expect(hold.scanner.stats.messages == 1)
    }

    // MARK: Control frames

    @Test("a ping between data frames is cut out and returned with its unmasked payload")
    func pingCutOut() throws {
        var hold = Self.makeHold()
        let (controls, queued) = try Self.feed([Self.text + Self.ping + Self.binary], into: &hold)

        #expect(controls == [.ping(payload: Self.pingPayload)])
        #expect(queued == Self.text + Self.binary)
        #expect(hold.queuedBytes == Self.text.count + Self.binary.count)
        #expect(hold.queuedFrames == 2)
        #expect(hold.scanner.stats.pings == 1)
    }

    @Test("an empty ping is returned with an empty payload")
    func emptyPing() throws {
        var hold = Self.makeHold()
        let (controls, queued) = try Self.feed([Self.masked(.ping, [], key: 0xDEAD_BEEF)], into: &hold)
        #expect(controls == [.ping(payload: [])])
        #expect(queued.isEmpty)
        #expect(hold.queuedBytes == 0)
        #expect(hold.queuedFrames == 0)
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
        let (controls, queued) = try Self.feed([Self.text + pong + close1000], into: &hold)
        #expect(controls == [.pong, .close(code: 1000)])
        #expect(queued == Self.text)

        var other = Self.makeHold()
        let bare = Self.masked(.close, [], key: 0x0102_0304)
        #expect(try Self.feed([bare], into: &other).controls == [.close(code: nil)])

        var goingAway = Self.makeHold()
        let close1001 = Self.masked(.close, WebSocketFrameWriter.closePayload(code: 1001, reason: ""), key: 0xFFFF_0000)
        #expect(try Self.feed([close1001], into: &goingAway).controls == [.close(code: 1001)])
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
            let (controls, queued) = try Self.feed(chunks, into: &hold)
            #expect(controls == Self.mixedControls, "split at \(split)")
            #expect(queued == Self.mixedQueue, "split at \(split)")
            #expect(hold.queuedFrames == 2, "split at \(split)")
            #expect(hold.queuedBytes == Self.mixedQueue.count, "split at \(split)")
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
                let (controls, queued) = try Self.feed(chunks, into: &hold)
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
        let (controls, queued) = try Self.feed(Self.mixed.map { [$0] }, into: &hold)
        #expect(controls == Self.mixedControls)
        #expect(queued == Self.mixedQueue)
        #expect(hold.queuedFrames == 2)
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
        #expect(Self.queuedBytes(of: hold) == Self.text)
        #expect(hold.queuedFrames == 1)
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

    // MARK: Counters and drain

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
        #expect(Self.queuedBytes(of: hold) == Self.binary)

        // A control frame adds nothing to the counters.
        _ = try hold.receive(ByteBuffer(bytes: Self.ping))
        #expect(hold.queuedBytes == Self.binary.count)
        #expect(hold.queuedFrames == 1)
    }

    @Test("drain hands over the queue in order and empties it; the peak survives")
    func drainEmpties() throws {
        var hold = Self.makeHold()
        _ = try hold.receive(ByteBuffer(bytes: Self.text + Self.binary))
        let peak = Self.text.count + Self.binary.count
        #expect(hold.peakQueuedBytes == peak)

        let drained = hold.drain()
        #expect(drained.flatMap { Array($0.readableBytesView) } == Self.text + Self.binary)
        #expect(hold.queue.isEmpty)
        #expect(hold.queuedBytes == 0)
        #expect(hold.queuedFrames == 0)
        #expect(hold.peakQueuedBytes == peak)
        #expect(hold.drain().isEmpty)

        // Frames after a drain queue afresh; the peak only moves when exceeded.
        _ = try hold.receive(ByteBuffer(bytes: Self.text))
        #expect(Self.queuedBytes(of: hold) == Self.text)
        #expect(hold.queuedFrames == 1)
        #expect(hold.peakQueuedBytes == peak)
    }

    @Test("a drain between the halves of a split frame keeps the stream position")
    func drainMidFrame() throws {
        var hold = Self.makeHold()
        let input = Self.text + Self.binary
        let cut = Self.text.count + 20
        _ = try hold.receive(ByteBuffer(bytes: Array(input[..<cut])))
        let firstPart = hold.drain().flatMap { Array($0.readableBytesView) }
        let controls = try hold.receive(ByteBuffer(bytes: Array(input[cut...]) + Self.ping))
        #expect(controls == [.ping(payload: Self.pingPayload)])
        #expect(firstPart + Self.queuedBytes(of: hold) == input)
        #expect(hold.queuedFrames == 1)
    }

    @Test("queued bytes are slices of a read: a reader index past zero is honoured")
    func honoursReaderIndex() throws {
        var hold = Self.makeHold()
        var buffer = ByteBuffer(bytes: [0xEE, 0xEE, 0xEE] + Self.text + Self.ping)
        buffer.moveReaderIndex(forwardBy: 3)
        let controls = try hold.receive(buffer)
        #expect(controls == [.ping(payload: Self.pingPayload)])
        #expect(Self.queuedBytes(of: hold) == Self.text)
    }
}
