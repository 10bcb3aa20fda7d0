import NIOCore
import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

@Suite("ClientFrameHold properties")
struct HoldPropertyTests {
    /// The stream is cut into random chunks and fed to the hold until a random drain offset; the rest
    /// goes straight to the backend, as after READY. The backend must see the client's stream minus
    /// exactly the control frames the hold handed over whole, and each ping gets its payload back.
    @Test("drain anywhere: the backend sees the stream minus the controls answered", arguments: UInt64(1)...200)
    func drainAnywhere(_ seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let (stream, frames) = GeneratedClientStream.make(using: &random)
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
