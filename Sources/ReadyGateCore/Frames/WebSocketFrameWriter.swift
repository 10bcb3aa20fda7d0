/// Builds whole WebSocket frames (RFC 6455 §5.2), for the few frames the proxy sends itself:
/// close frames on a protocol error, pings, and test fixtures.
public enum WebSocketFrameWriter {
    /// The longest close reason: a control payload holds at most 125 bytes (RFC 6455 §5.5), two of
    /// which are the status code (§5.5.1).
    public static let maximumCloseReasonBytes = 123

    /// Encodes one frame.
    ///
    /// The length uses the minimal form §5.2 requires (7-bit up to 125, 16-bit up to 65535, 64-bit
    /// beyond). With a `maskingKey` the frame is masked (§5.3), as every client frame must be (§5.1).
    /// The caller keeps control frames within 125 bytes and unfragmented (§5.5).
    public static func frame(
        opcode: WebSocketOpcode,
        payload: [UInt8],
        fin: Bool = true,
        maskingKey: UInt32? = nil
    ) -> [UInt8] {
        let length = payload.count
        var frame: [UInt8] = []
        frame.reserveCapacity(WebSocketFrameHeader.maximumLength + length)
        frame.append((fin ? 0x80 : 0) | opcode.rawValue)
        let maskBit: UInt8 = maskingKey == nil ? 0 : 0x80
        switch length {
        case 0...125:
            frame.append(maskBit | UInt8(length))
        case 126...0xFFFF:
            frame.append(maskBit | 126)
            appendBigEndian(UInt64(length), byteCount: 2, to: &frame)
        default:
            frame.append(maskBit | 127)
            appendBigEndian(UInt64(length), byteCount: 8, to: &frame)
        }
        guard let maskingKey else {
            frame.append(contentsOf: payload)
            return frame
        }
        appendBigEndian(UInt64(maskingKey), byteCount: 4, to: &frame)
        let payloadStart = frame.count
        frame.append(contentsOf: payload)
        frame.withUnsafeMutableBytes { bytes in
            let payloadBytes = UnsafeMutableRawBufferPointer(rebasing: bytes[payloadStart...])
            WebSocketMasking.apply(maskingKey: maskingKey, to: payloadBytes)
        }
        return frame
    }

    /// The body of a close frame (RFC 6455 §5.5.1): the status code, big-endian, then the UTF-8
    /// reason, cut to ``maximumCloseReasonBytes`` at a scalar boundary so it stays valid UTF-8 (§8.1).
    public static func closePayload(code: UInt16, reason: String) -> [UInt8] {
        var payload: [UInt8] = [UInt8(truncatingIfNeeded: code >> 8), UInt8(truncatingIfNeeded: code)]
        let utf8 = reason.utf8
        guard utf8.count > maximumCloseReasonBytes else {
            payload.append(contentsOf: utf8)
            return payload
        }
        let prefix = Array(utf8.prefix(maximumCloseReasonBytes + 1))
        var cut = maximumCloseReasonBytes
        // Back up over continuation bytes (0b10xxxxxx) so the cut lands before a scalar's lead byte.
        while cut > 0 && prefix[cut] & 0xC0 == 0x80 { cut -= 1 }
        payload.append(contentsOf: prefix[..<cut])
        return payload
    }

    private static func appendBigEndian(_ value: UInt64, byteCount: Int, to bytes: inout [UInt8]) {
        for index in stride(from: byteCount - 1, through: 0, by: -1) {
            bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))))
        }
    }
}

/// The payload masking of RFC 6455 §5.3: byte `i` of a payload is XORed with byte `i % 4` of the
/// masking key. Applying it twice restores the input, so the same call masks and unmasks.
public enum WebSocketMasking {
    /// Masks or unmasks `bytes`, which start at `payloadOffset` within the frame's payload (so a
    /// payload split across buffers can be handled piece by piece). The key is big-endian: its high
    /// byte is the first key byte on the wire.
    public static func apply(maskingKey: UInt32, to bytes: inout [UInt8], payloadOffset: Int = 0) {
        bytes.withUnsafeMutableBytes { buffer in
            apply(maskingKey: maskingKey, to: buffer, payloadOffset: payloadOffset)
        }
    }

    /// Masks or unmasks `bytes` in place; see the `[UInt8]` overload.
    ///
    /// Works eight bytes at a time: the key, rotated to the phase of `payloadOffset`, repeats every
    /// four bytes, so one 64-bit pattern covers any run of eight.
    public static func apply(maskingKey: UInt32, to bytes: UnsafeMutableRawBufferPointer, payloadOffset: Int = 0) {
        guard let base = bytes.baseAddress else { return }
        let phase = payloadOffset & 3
        // Key bytes in wire order starting at `phase`, then as they must lie in memory.
        let rotated = phase == 0 ? maskingKey : maskingKey << (8 * phase) | maskingKey >> (32 - 8 * phase)
        let pattern32 = rotated.bigEndian
        let pattern = UInt64(pattern32) | UInt64(pattern32) << 32
        let count = bytes.count
        var index = 0
        while index + 8 <= count {
            let word = base.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            base.storeBytes(of: word ^ pattern, toByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < count {
            // Payload offset `payloadOffset + index` uses key byte `(phase + index) % 4`.
            let keyByte = UInt8(truncatingIfNeeded: maskingKey >> (24 - 8 * ((phase + index) & 3)))
            let masked = base.load(fromByteOffset: index, as: UInt8.self) ^ keyByte
            base.storeBytes(of: masked, toByteOffset: index, as: UInt8.self)
            index += 1
        }
    }
}
