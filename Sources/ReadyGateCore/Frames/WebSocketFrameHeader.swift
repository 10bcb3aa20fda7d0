/// WebSocket opcodes (RFC 6455 §5.2, §11.8).
public enum WebSocketOpcode: UInt8, Sendable, Hashable {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    /// Control frames have the high bit of the opcode set (RFC 6455 §5.5).
    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// A parsed WebSocket frame header (RFC 6455 §5.2). Holds no payload.
public struct WebSocketFrameHeader: Sendable, Hashable {
    public var fin: Bool
    /// RSV1, RSV2, RSV3 as the low three bits (RSV1 = 0b100).
    public var reservedBits: UInt8
    public var opcode: WebSocketOpcode
    /// The 32-bit masking key, big-endian as on the wire, when the MASK bit is set.
    public var maskingKey: UInt32?
    public var payloadLength: UInt64
    /// Bytes the header occupied on the wire: 2, 4 or 10, plus 4 when masked.
    public var headerLength: Int

    public init(
        fin: Bool,
        reservedBits: UInt8 = 0,
        opcode: WebSocketOpcode,
        maskingKey: UInt32?,
        payloadLength: UInt64,
        headerLength: Int
    ) {
        self.fin = fin
        self.reservedBits = reservedBits
        self.opcode = opcode
        self.maskingKey = maskingKey
        self.payloadLength = payloadLength
        self.headerLength = headerLength
    }
}

extension WebSocketFrameHeader {
    /// The longest header on the wire: 2 fixed bytes, an 8-byte extended length and a 4-byte masking key
    /// (RFC 6455 §5.2).
    public static let maximumLength = 14

    /// Parses the frame header at the start of `bytes` (RFC 6455 §5.2).
    ///
    /// Returns nil while `bytes` holds only part of the header; it never reads past the header.
    /// It throws as soon as the bytes it has prove the header invalid, so a caller feeding a growing
    /// prefix sees the same error whatever the split: the first two bytes decide the opcode, masking
    /// and fragmentation checks, the extended length decides the length checks.
    /// Reserved bits are not checked here: only the caller knows which ones an extension negotiated.
    ///
    /// - Throws: `unknownOpcode` (§5.2: 0x3-0x7 and 0xB-0xF are reserved), `maskingRuleViolated` (§5.1),
    ///   `fragmentedControlFrame` and `controlFrameTooLong` (§5.5), `lengthHighBitSet` and
    ///   `nonMinimalLength` (§5.2: "the minimal number of bytes MUST be used to encode the length").
    public static func parse(
        _ bytes: UnsafeRawBufferPointer,
        role: WebSocketPeerRole
    ) throws(WebSocketProtocolError) -> WebSocketFrameHeader? {
        guard bytes.count >= 2 else { return nil }
        let first = bytes[0]
        let second = bytes[1]

        let fin = first & 0x80 != 0
        let reservedBits = (first >> 4) & 0b111
        guard let opcode = WebSocketOpcode(rawValue: first & 0x0F) else {
            throw WebSocketProtocolError(.unknownOpcode(first & 0x0F))
        }
        let masked = second & 0x80 != 0
        // §5.1: a client masks every frame it sends; a server masks none.
        switch role {
        case .client where !masked, .server where masked:
            throw WebSocketProtocolError(.maskingRuleViolated)
        default:
            break
        }
        // §5.5: control frames MUST NOT be fragmented.
        if opcode.isControl && !fin {
            throw WebSocketProtocolError(.fragmentedControlFrame)
        }

        let shortLength = second & 0x7F
        let extendedLengthBytes: Int
        switch shortLength {
        case 126: extendedLengthBytes = 2
        case 127: extendedLengthBytes = 8
        default: extendedLengthBytes = 0
        }
        guard bytes.count >= 2 + extendedLengthBytes else { return nil }

        let payloadLength: UInt64
        switch extendedLengthBytes {
        case 2:
            payloadLength = UInt64(bytes[2]) << 8 | UInt64(bytes[3])
            if payloadLength < 126 { throw WebSocketProtocolError(.nonMinimalLength) }
        case 8:
            var length: UInt64 = 0
            for index in 2..<10 { length = length << 8 | UInt64(bytes[index]) }
            // §5.2: "the most significant bit MUST be 0".
            if length & (1 << 63) != 0 { throw WebSocketProtocolError(.lengthHighBitSet) }
            if length <= 0xFFFF { throw WebSocketProtocolError(.nonMinimalLength) }
            payloadLength = length
        default:
            payloadLength = UInt64(shortLength)
        }
        // §5.5: "All control frames MUST have a payload length of 125 bytes or less".
        if opcode.isControl && payloadLength > 125 {
            throw WebSocketProtocolError(.controlFrameTooLong(payloadLength))
        }

        let keyOffset = 2 + extendedLengthBytes
        let headerLength = keyOffset + (masked ? 4 : 0)
        guard bytes.count >= headerLength else { return nil }
        var maskingKey: UInt32?
        if masked {
            maskingKey =
                UInt32(bytes[keyOffset]) << 24 | UInt32(bytes[keyOffset + 1]) << 16
                | UInt32(bytes[keyOffset + 2]) << 8 | UInt32(bytes[keyOffset + 3])
        }
        return WebSocketFrameHeader(
            fin: fin,
            reservedBits: reservedBits,
            opcode: opcode,
            maskingKey: maskingKey,
            payloadLength: payloadLength,
            headerLength: headerLength
        )
    }
}
