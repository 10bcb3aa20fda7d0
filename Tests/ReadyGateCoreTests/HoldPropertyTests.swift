import NIOCore
import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

/// One frame of a generated client stream, where it lies in the stream, and what it is.
private struct GeneratedFrame {
    var opcode: WebSocketOpcode
    var payload: [UInt8]
    var range: Range<Int>
}

/// A random masked client stream: text and binary messages (some fragmented, with control frames
/// between the fragments), pings and pongs.
private func generateStream(using random: inout SplitMix64) -> (bytes: [UInt8], frames: [GeneratedFrame]) {
    var bytes: [UInt8] = []
    var frames: [GeneratedFrame] = []

    func payload(maxCount: Int) -> [UInt8] {
        // Mostly short, sometimes long enough for a 16-bit length.
        let limit = Int.random(in: 0..<4, using: &random) == 0 ? maxCount : min(maxCount, 20)
        return (0..<Int.random(in: 0...limit, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
    }
    func append(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true) {
        let key = UInt32.random(in: 0...UInt32.max, using: &random)
        let frame = WebSocketFrameWriter.frame(opcode: opcode, payload: payload, fin: fin, maskingKey: key)
        frames.append(
            GeneratedFrame(opcode: opcode, payload: payload, range: bytes.count..<(bytes.count + frame.count))
        )
        bytes += frame
    }
    func control() {
        if Bool.random(using: &random) {
            append(.ping, payload(maxCount: 125))
        } else {
            append(.pong, payload(maxCount: 125))
        }
    }

    for _ in 0..<Int.random(in: 1...12, using: &random) {
        switch Int.random(in: 0..<6, using: &random) {
        case 0, 1:
            control()
        case 2, 3:
            append(Bool.random(using: &random) ? .text : .binary, payload(maxCount: 300))
        default:
            // A fragmented message, with control frames between some fragments.
            let fragments = Int.random(in: 2...4, using: &random)
            for index in 0..<fragments {
                let opcode: WebSocketOpcode =
                    index == 0 ? (Bool.random(using: &random) ? .text : .binary) : .continuation
                append(opcode, payload(maxCount: 300), fin: index == fragments - 1)
                if index < fragments - 1 && Bool.random(using: &random) { control() }
            }
        }
    }
    return (bytes, frames)
}

@Suite("ClientFrameHold properties")
struct HoldPropertyTests {
    /// The stream is cut into random chunks and fed to the hold until a random drain offset; the rest
    /// goes straight to the backend, as after READY. The backend must see the client's stream minus
    /// exactly the control frames the hold handed over whole, and each ping gets its payload back.
    @Test("drain anywhere: the backend sees the stream minus the controls answered", arguments: UInt64(1)...200)
    func drainAnywhere(_ seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let (stream, frames) = generateStream(using: &random)
        let drainAt = Int.random(in: 0...stream.count, using: &random)
        var cuts = (0..<Int.random(in: 0...16, using: &random)).map { _ in
            Int.random(in: 0...drainAt, using: &random)
        }
        cuts.append(drainAt)
        cuts.sort()

        var hold = ClientFrameHold(scanner: WebSocketFrameScanner(role: .client))
        var controls: [ClientFrameHold.ControlFrame] = []
        var start = 0
        for cut in cuts {
            controls += try hold.receive(ByteBuffer(bytes: stream[start..<cut]))
            start = cut
        }
        let answered = frames.filter { $0.opcode.isControl && $0.range.upperBound <= drainAt }
        let queuedFrames = frames.filter { !$0.opcode.isControl && $0.range.upperBound <= drainAt }.count
        #expect(hold.queuedFrames == queuedFrames, "seed \(seed)")
        let drained = hold.drain().flatMap { Array($0.readableBytesView) }
        let backend = drained + stream[drainAt...]

        var expected: [UInt8] = []
        for frame in frames where !(frame.opcode.isControl && frame.range.upperBound <= drainAt) {
            expected += stream[frame.range]
        }
        #expect(backend == expected, "seed \(seed), drain at \(drainAt), cuts \(cuts)")
        #expect(drained.count == drainAt - answered.reduce(0) { $0 + $1.range.count }, "seed \(seed)")

        // Each control frame completed before the drain was reported, in order; pings with their payload.
        let expectedControls = answered.map { frame -> ClientFrameHold.ControlFrame in
            frame.opcode == .ping ? .ping(payload: frame.payload) : .pong
        }
        #expect(controls == expectedControls, "seed \(seed)")
    }
}
