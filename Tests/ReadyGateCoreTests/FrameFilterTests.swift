import NIOCore
import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

/// ``FrameFilter``: the backend's stream passes untouched except the proxy's own pong
/// (taken out) and, while a replay may follow, a close frame (kept back).
@Suite("FrameFilter")
struct FrameFilterTests {
    static func frame(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
        WebSocketFrameWriter.frame(opcode: opcode, payload: payload, fin: fin, maskingKey: nil)
    }

    static let ownPayload: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
    static let text = frame(.text, Array("hello, client".utf8))
    static let ownPong = frame(.pong, ownPayload)
    static let otherPong = frame(.pong, [9, 9])
    static let ping = frame(.ping, Array("ping".utf8))
    static let close1011 = frame(.close, WebSocketFrameWriter.closePayload(code: 1011, reason: "boom"))

    static func makeFilter() -> FrameFilter {
        FrameFilter(scanner: WebSocketFrameScanner(role: .server))
    }

    /// Feeds `stream` cut into pieces at `cuts`; returns the bytes forwarded and the other outputs.
    static func run(
        _ stream: [UInt8],
        cuts: [Int],
        filter: inout FrameFilter
    ) -> (forwarded: [UInt8], events: [FrameFilter.Output]) {
        var forwarded: [UInt8] = []
        var events: [FrameFilter.Output] = []
        var start = 0
        for end in (cuts.filter { $0 > 0 && $0 < stream.count }.sorted() + [stream.count]) where end > start {
            filter.receive(ByteBuffer(bytes: stream[start..<end])) { output in
                if case .forward(let bytes) = output {
                    forwarded += Array(bytes.readableBytesView)
                } else {
                    events.append(output)
                }
            }
            start = end
        }
        return (forwarded, events)
    }

    static func randomCuts(_ count: Int, seed: UInt64) -> [Int] {
        var random = SplitMix64(seed: seed)
        return (0..<8).map { _ in Int.random(in: 0...count, using: &random) }
    }

    @Test("an idle filter passes any stream untouched, in any split", arguments: 0..<40)
    func passesUntouched(seed: Int) {
        let stream =
            Self.text + Self.ping + Self.otherPong + Self.frame(.binary, Array(repeating: 7, count: 300))
            + Self.close1011
        var filter = Self.makeFilter()
        let (forwarded, events) = Self.run(
            stream,
            cuts: Self.randomCuts(stream.count, seed: UInt64(seed)),
            filter: &filter
        )
        #expect(forwarded == stream)
        #expect(events == [.dataStarted])
        #expect(filter.isIdle)
    }

    @Test("the proxy's own pong is taken out, whatever else comes around it", arguments: 0..<40)
    func ownPongTakenOut(seed: Int) {
        let before = Self.ping + Self.otherPong
        let after = Self.text + Self.otherPong
        let stream = before + Self.ownPong + after
        var filter = Self.makeFilter()
        filter.awaitPong(payload: Self.ownPayload)
        let (forwarded, events) = Self.run(
            stream,
            cuts: Self.randomCuts(stream.count, seed: UInt64(seed)),
            filter: &filter
        )
        #expect(forwarded == before + after)
        #expect(events == [.ownPong, .dataStarted])
        #expect(!filter.awaitsPong)
        #expect(filter.isIdle)
    }

    /// Every output of one `receive`, forwards as their bytes.
    static func outputs(of read: [UInt8], filter: inout FrameFilter) -> [Either] {
        var outputs: [Either] = []
        filter.receive(ByteBuffer(bytes: read)) { output in
            if case .forward(let bytes) = output {
                outputs.append(.bytes(Array(bytes.readableBytesView)))
            } else {
                outputs.append(.event(output))
            }
        }
        return outputs
    }

    enum Either: Equatable {
        case bytes([UInt8])
        case event(FrameFilter.Output)
    }

    @Test("the passing frames of one read go on as one slice; the own pong splits them where it was")
    func onePassingSlicePerRead() {
        var filter = Self.makeFilter()
        _ = Self.outputs(of: Self.text, filter: &filter)
        let many = Array((0..<50).map { _ in Self.text + Self.ping + Self.otherPong }.joined())
        #expect(Self.outputs(of: many, filter: &filter) == [.bytes(many)])

        filter.awaitPong(payload: Self.ownPayload)
        let before = Self.text + Self.ping
        let after = Self.otherPong + Self.text
        #expect(
            Self.outputs(of: before + Self.ownPong + after, filter: &filter) == [
                .bytes(before), .event(.ownPong), .bytes(after),
            ]
        )
    }

    @Test("an empty read gives no output, before and after a protocol error (found by FuzzFrameFilter)")
    func emptyReads() {
        var filter = Self.makeFilter()
        #expect(Self.outputs(of: [], filter: &filter).isEmpty)
        let broken: [UInt8] = [0x8F, 0x00]  // opcode 0xF is reserved
        #expect(Self.outputs(of: broken, filter: &filter) == [.bytes(broken)])
        #expect(Self.outputs(of: [], filter: &filter).isEmpty)
    }

    @Test("with several pings out, a pong to the latest answers all; a pong to an older one, it and older")
    func severalPingsOut() {
        var filter = Self.makeFilter()
        let first: [UInt8] = [1, 1, 1, 1, 1, 1, 1, 1]
        let second: [UInt8] = [2, 2, 2, 2, 2, 2, 2, 2]
        let third: [UInt8] = [3, 3, 3, 3, 3, 3, 3, 3]
        for payload in [first, second, third] { filter.awaitPong(payload: payload) }
        // A late pong to the second ping: taken out, and the first counts as answered too.
        var (forwarded, events) = Self.run(Self.frame(.pong, second), cuts: [], filter: &filter)
        #expect(forwarded.isEmpty && events == [.ownPong])
        #expect(filter.awaitedPongs == [third])
        // A pong to the first, now answered, is someone else's: it passes.
        (forwarded, events) = Self.run(Self.frame(.pong, first), cuts: [], filter: &filter)
        #expect(forwarded == Self.frame(.pong, first) && events.isEmpty)
        (forwarded, events) = Self.run(Self.frame(.pong, third), cuts: [3], filter: &filter)
        #expect(forwarded.isEmpty && events == [.ownPong] && !filter.awaitsPong)
    }

    @Test("at most four pings are awaited; the oldest is forgotten")
    func boundedAwait() {
        var filter = Self.makeFilter()
        for n in 0..<6 { filter.awaitPong(payload: [UInt8](repeating: UInt8(n), count: 8)) }
        #expect(filter.awaitedPongs.map { $0[0] } == [2, 3, 4, 5])
    }

    @Test("a close is kept back with what follows it, and released whole")
    func closeKeptBack() {
        let stream = Self.ping + Self.close1011 + Self.text
        for cut in 0...stream.count {
            var filter = Self.makeFilter()
            filter.keepsCloseBack = true
            let (forwarded, events) = Self.run(stream, cuts: [cut], filter: &filter)
            #expect(forwarded == Self.ping)
            #expect(events == [.closeKeptBack(code: 1011)])
            let released = filter.release().map { Array($0.readableBytesView) } ?? []
            #expect(released == Self.close1011 + Self.text)
            #expect(filter.isIdle)
        }
    }

    @Test("release mid-frame hands over the frame's first bytes; the rest then passes")
    func releaseMidFrame() {
        var filter = Self.makeFilter()
        filter.awaitPong(payload: Self.ownPayload)
        let (forwarded, _) = Self.run(Array(Self.ownPong.prefix(5)), cuts: [1], filter: &filter)
        #expect(forwarded.isEmpty)
        let released = filter.release().map { Array($0.readableBytesView) } ?? []
        #expect(released == Array(Self.ownPong.prefix(5)))
    }

    @Test("after a protocol error the rest passes unfiltered")
    func brokenStreamPasses() {
        // A masked frame from the server is a protocol error (RFC 6455 §5.1).
        let bad = WebSocketFrameWriter.frame(opcode: .text, payload: [1, 2], maskingKey: 0x0102_0304)
        let stream = Self.text + bad + Self.close1011
        var filter = Self.makeFilter()
        filter.keepsCloseBack = true
        let (forwarded, _) = Self.run(stream, cuts: [Self.text.count + 1], filter: &filter)
        #expect(forwarded == stream)
    }

    @Test("a kept close can be discarded (the backend is being replaced)")
    func discard() {
        var filter = Self.makeFilter()
        filter.keepsCloseBack = true
        _ = Self.run(Self.close1011, cuts: [], filter: &filter)
        filter.discardKept()
        #expect(filter.release() == nil)
    }
}

@Suite("ClientFrameHold: a replay's prefill")
struct ClientFrameHoldPrefillTests {
    static func masked(_ opcode: WebSocketOpcode, _ payload: [UInt8]) -> [UInt8] {
        WebSocketFrameWriter.frame(opcode: opcode, payload: payload, maskingKey: 0x1122_3344)
    }

    static let text = masked(.text, Array("first".utf8))
    static let ping = masked(.ping, Array("p".utf8))

    static func hold() -> ClientFrameHold { ClientFrameHold(scanner: WebSocketFrameScanner(role: .client)) }

    static func drained(_ hold: inout ClientFrameHold) -> [UInt8] {
        hold.drain().flatMap { Array($0.readableBytesView) }
    }

    @Test("prefilled frames are kept verbatim, control frames too, and none is answered")
    func verbatim() throws {
        var hold = Self.hold()
        try hold.prefill(ByteBuffer(bytes: Self.text + Self.ping + Self.text))
        let controls = try hold.receive(ByteBuffer(bytes: Self.ping))
        #expect(controls == [.ping(payload: Array("p".utf8))], "a new ping is the proxy's to answer again")
        #expect(Self.drained(&hold) == Self.text + Self.ping + Self.text)
    }

    @Test("a frame cut off at the prefill's end goes on with the bytes that follow, even a ping")
    func cutFrameContinues() throws {
        for cut in 1..<Self.ping.count {
            var hold = Self.hold()
            try hold.prefill(ByteBuffer(bytes: Self.text + Self.ping.prefix(cut)))
            let controls = try hold.receive(ByteBuffer(bytes: Array(Self.ping.dropFirst(cut)) + Self.text))
            // A header cut off before its end is not decided yet: the ping is then the proxy's.
            let headerComplete = cut >= 6
            if headerComplete {
                #expect(controls.isEmpty)
                #expect(Self.drained(&hold) == Self.text + Self.ping + Self.text)
            } else {
                #expect(controls == [.ping(payload: Array("p".utf8))])
                #expect(Self.drained(&hold) == Self.text + Self.text)
            }
        }
    }
}
