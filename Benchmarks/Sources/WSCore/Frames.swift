import NIOCore

/// A WebSocket frame head as seen on the wire.
public struct WSFrameHead: Sendable {
    public var firstByte: UInt8
    public var masked: Bool
    public var maskKey: UInt32
    public var payloadLength: Int
    public var headLength: Int
    public var opcode: UInt8 { firstByte & 0x0F }

    /// Parses the head at the reader index of `buffer` without consuming; nil when incomplete.
    public static func peek(_ buffer: ByteBuffer) -> WSFrameHead? {
        let r = buffer.readerIndex
        guard buffer.readableBytes >= 2, let b0 = buffer.getInteger(at: r, as: UInt8.self),
            let b1 = buffer.getInteger(at: r + 1, as: UInt8.self)
        else { return nil }
        let masked = b1 & 0x80 != 0
        var length = Int(b1 & 0x7F)
        var head = 2
        if length == 126 {
            guard let l = buffer.getInteger(at: r + 2, as: UInt16.self) else { return nil }
            length = Int(l)
            head = 4
        } else if length == 127 {
            guard let l = buffer.getInteger(at: r + 2, as: UInt64.self) else { return nil }
            length = Int(truncatingIfNeeded: l)
            head = 10
        }
        var key: UInt32 = 0
        if masked {
            guard let k = buffer.getInteger(at: r + head, as: UInt32.self) else { return nil }
            key = k
            head += 4
        }
        return WSFrameHead(firstByte: b0, masked: masked, maskKey: key, payloadLength: length, headLength: head)
    }
}

public enum WSFrames {
    /// Writes a frame head (`fin`, `opcode`, length, optional mask key).
    public static func writeHead(into out: inout ByteBuffer, firstByte: UInt8, length: Int, maskKey: UInt32?) {
        let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
        out.writeInteger(firstByte)
        if length < 126 {
            out.writeInteger(UInt8(length) | maskBit)
        } else if length <= 0xFFFF {
            out.writeInteger(126 | maskBit)
            out.writeInteger(UInt16(length))
        } else {
            out.writeInteger(127 | maskBit)
            out.writeInteger(UInt64(length))
        }
        if let maskKey { out.writeInteger(maskKey) }
    }

    /// A complete masked binary frame of `size` bytes (client to server), pre-encoded once.
    public static func maskedBinaryFrame(size: Int, allocator: ByteBufferAllocator = .init()) -> ByteBuffer {
        let key: UInt32 = 0x3779_A1C5
        var out = allocator.buffer(capacity: size + 14)
        writeHead(into: &out, firstByte: 0x82, length: size, maskKey: key)
        let mask: [UInt8] = [UInt8(key >> 24), UInt8(truncatingIfNeeded: key >> 16), UInt8(truncatingIfNeeded: key >> 8), UInt8(truncatingIfNeeded: key)]
        for i in 0..<size { out.writeInteger(UInt8(truncatingIfNeeded: i & 0x7F | 0x20) ^ mask[i & 3]) }
        return out
    }

    /// A masked close frame with code 1000.
    public static func maskedClose() -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: 8)
        writeHead(into: &out, firstByte: 0x88, length: 2, maskKey: 0)
        out.writeInteger(UInt16(1000))
        return out
    }
}

/// Counts complete data frames in a byte stream without keeping payloads: the load tool's
/// decoder. Only a head split across reads is buffered.
public struct WSFrameCounter {
    var remaining = 0
    var currentIsData = false
    var pending: ByteBuffer?
    public private(set) var sawClose = false

    public init() {}

    /// Consumes `input` and returns the number of data frames completed in it.
    public mutating func feed(_ input: ByteBuffer) -> Int {
        var buffer: ByteBuffer
        if var p = pending {
            pending = nil
            var copy = input
            p.writeBuffer(&copy)
            buffer = p
        } else {
            buffer = input
        }
        var frames = 0
        while true {
            if remaining > 0 {
                let n = min(remaining, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: n)
                remaining -= n
                if remaining > 0 { break }
                if currentIsData { frames += 1 }
                continue
            }
            guard let head = WSFrameHead.peek(buffer) else { break }
            buffer.moveReaderIndex(forwardBy: head.headLength)
            let op = head.opcode
            if op == 0x8 { sawClose = true }
            currentIsData = op < 0x8
            if head.payloadLength == 0 {
                if currentIsData { frames += 1 }
            } else {
                remaining = head.payloadLength
            }
        }
        if buffer.readableBytes > 0 {
            var keep = ByteBufferAllocator().buffer(capacity: 16)
            keep.writeBuffer(&buffer)
            pending = keep
        }
        return frames
    }
}
