import ReadyGateCore

/// One frame of a generated client stream, where it lies in the stream, and what it is.
public struct GeneratedFrame: Sendable {
    public var opcode: WebSocketOpcode
    public var payload: [UInt8]
    public var range: Range<Int>
    public var fin: Bool
}

/// Random WebSocket streams for property tests.
public enum GeneratedClientStream {
    /// A random masked client stream: text and binary messages (some fragmented, with control frames
    /// between the fragments), pings and pongs.
    public static func make(using random: inout SplitMix64) -> (bytes: [UInt8], frames: [GeneratedFrame]) {
        var bytes: [UInt8] = []
        var frames: [GeneratedFrame] = []

        func payload(maxCount: Int) -> [UInt8] {
            // Mostly short, sometimes long enough for a 16-bit length.
            let limit = Int.random(in: 0..<4, using: &random) == 0 ? maxCount : min(maxCount, 20)
            return (0..<Int.random(in: 0...limit, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random)
            }
        }
        func append(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true) {
            let key = UInt32.random(in: 0...UInt32.max, using: &random)
            let frame = WebSocketFrameWriter.frame(opcode: opcode, payload: payload, fin: fin, maskingKey: key)
            frames.append(
                GeneratedFrame(
                    opcode: opcode,
                    payload: payload,
                    range: bytes.count..<(bytes.count + frame.count),
                    fin: fin
                )
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
}
