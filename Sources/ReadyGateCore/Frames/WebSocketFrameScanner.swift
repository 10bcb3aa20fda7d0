/// Which side of the connection the scanned bytes come from. Decides the masking rule
/// (RFC 6455 §5.1: a client masks every frame, a server masks none).
public enum WebSocketPeerRole: Sendable {
    /// Bytes sent by a WebSocket client: every frame must be masked.
    case client
    /// Bytes sent by a WebSocket server: no frame may be masked.
    case server
}

/// A protocol violation found by ``WebSocketFrameScanner``; maps to a close code.
public struct WebSocketProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case maskingRuleViolated
        case reservedBitsSet
        case unknownOpcode(UInt8)
        case controlFrameTooLong(UInt64)
        case fragmentedControlFrame
        case unexpectedContinuation
        case expectedContinuation
        case nonMinimalLength
        case lengthHighBitSet
        case invalidClosePayload
        case invalidCloseReason
        case messageTooBig(UInt64)
    }
    public var kind: Kind
    public init(_ kind: Kind) { self.kind = kind }

    /// The close code to send (RFC 6455 §7.4.1): 1009 for ``Kind/messageTooBig(_:)``, 1002 otherwise.
    public var closeCode: UInt16 {
        switch kind {
        case .messageTooBig: 1009
        case .invalidCloseReason: 1007
        default: 1002
        }
    }

    /// A short reason for the close frame (≤ 123 bytes) and the log.
    ///
    /// The error does not know which peer sent the frame, so a masking violation reads the same for
    /// both directions.
    public var description: String {
        switch kind {
        case .maskingRuleViolated: "masking rule violated"
        case .reservedBitsSet: "reserved bits set"
        case .unknownOpcode(let opcode): "unknown opcode \(opcode)"
        case .controlFrameTooLong(let length): "control frame too long (\(length) bytes)"
        case .fragmentedControlFrame: "fragmented control frame"
        case .unexpectedContinuation: "unexpected continuation frame"
        case .expectedContinuation: "expected continuation frame"
        case .nonMinimalLength: "non-minimal payload length"
        case .lengthHighBitSet: "payload length has the high bit set"
        case .invalidClosePayload: "invalid close payload"
        case .invalidCloseReason: "close reason is not valid UTF-8"
        case .messageTooBig(let length): "message too big (\(length) bytes)"
        }
    }
}

/// What ``WebSocketFrameScanner`` reports while it walks a byte stream. Offsets are positions
/// in the chunk passed to the current ``WebSocketFrameScanner/scan(_:_:)`` call.
public enum WebSocketScanEvent: Sendable, Equatable {
    /// A complete header was read; its last byte is just before `endOffset`.
    case header(WebSocketFrameHeader, endOffset: Int)
    /// Payload bytes of the current frame (still masked, as on the wire) at `range`.
    case payload(Range<Int>)
    /// The current frame ended just before `endOffset`. `closeCode` is the status code of a close
    /// frame that carried one (unmasked), nil otherwise.
    case frameEnd(WebSocketFrameHeader, endOffset: Int, closeCode: UInt16?)
}

/// Counters a scanner keeps for one direction of a session. Cheap to copy.
///
/// Frame counters (`frames`, `pings`, `pongs`, `sawClose`, `closeCode`) move when a frame ends, so a
/// frame cut off mid-payload is not counted; `bytes` counts every byte handed to the scanner.
public struct WebSocketTrafficStats: Sendable, Equatable {
    public var frames: UInt64 = 0
    /// Completed data messages (a message ends with a FIN data or continuation frame).
    public var messages: UInt64 = 0
    public var textMessages: UInt64 = 0
    public var binaryMessages: UInt64 = 0
    public var pings: UInt64 = 0
    public var pongs: UInt64 = 0
    /// Wire bytes seen (headers and payloads).
    public var bytes: UInt64 = 0
    /// The status code of the first close frame seen (nil: none, or a close frame without a code).
    public var closeCode: UInt16?
    /// Whether a close frame was seen at all.
    public var sawClose: Bool = false
    public init() {}

    /// Adds the counts of `later`, the same direction's next connection (a replay): the first close
    /// seen stays the one reported.
    public mutating func add(_ later: WebSocketTrafficStats) {
        frames &+= later.frames
        messages &+= later.messages
        textMessages &+= later.textMessages
        binaryMessages &+= later.binaryMessages
        pings &+= later.pings
        pongs &+= later.pongs
        bytes &+= later.bytes
        if !sawClose {
            sawClose = later.sawClose
            closeCode = later.closeCode
        }
    }
}

/// An incremental WebSocket frame-header scanner (RFC 6455 §5.2).
///
/// Feed it the bytes of one direction of a connection in any split (one byte at a time, or
/// megabytes at once): it reports the same frames either way. It never copies payloads; it keeps
/// at most one partial header (≤ 14 bytes) and the first two bytes of a close payload.
/// After it throws, the stream is broken and the scanner must not be fed again.
public struct WebSocketFrameScanner: Sendable {
    /// RSV1, the bit permessage-deflate claims (RFC 7692 §6).
    private static let rsv1: UInt8 = 0b100

    private let role: WebSocketPeerRole
    private let allowedReservedBits: UInt8
    private let maxMessageBytes: UInt64
    private var counters = WebSocketTrafficStats()

    /// The bytes of a header split across chunks: 16 bytes of inline storage, so buffering one never
    /// allocates. Only the first `partialHeaderCount` bytes are meaningful.
    private var partialHeader: (UInt64, UInt64) = (0, 0)
    private var partialHeaderCount = 0

    /// The frame whose payload is being skipped; nil between frames and while reading a header.
    private var currentFrame: WebSocketFrameHeader?
    private var payloadRemaining: UInt64 = 0

    /// How many of the first two close payload bytes have been seen, and their unmasked value.
    private var closeCodeBytesSeen = 0
    private var closeCodeValue: UInt16 = 0
    /// Checks the close reason's UTF-8 (RFC 6455 §5.5.1, §8.1) as its bytes pass.
    private var closeReason = UTF8Validator()

    /// The opcode (text or binary) of the data message in progress, set by its first frame and cleared
    /// when its FIN frame ends (RFC 6455 §5.4).
    private var messageOpcode: WebSocketOpcode?
    /// Payload bytes the message in progress has announced so far, including the current frame.
    private var messageBytes: UInt64 = 0

    /// - Parameters:
    ///   - role: who sends the bytes; decides the masking rule.
    ///   - allowedReservedBits: RSV bits an extension negotiated (RSV1 = 0b100 for permessage-deflate).
    ///     RSV1 is allowed only on the first frame of a data message (RFC 7692 §6).
    ///   - maxMessageBytes: a data message whose payload would exceed this throws `messageTooBig`.
    public init(role: WebSocketPeerRole, allowedReservedBits: UInt8 = 0, maxMessageBytes: UInt64 = .max) {
        self.role = role
        self.allowedReservedBits = allowedReservedBits & 0b111
        self.maxMessageBytes = maxMessageBytes
    }

    /// Counters so far.
    public var stats: WebSocketTrafficStats { counters }

    /// True when the scanner stands between two frames (no partial header or payload pending).
    public var isAtFrameBoundary: Bool { currentFrame == nil && partialHeaderCount == 0 }

    /// Whether a fragmented data message has started and its FIN frame has not ended yet
    /// (RFC 6455 §5.4). Control frames may still arrive in between.
    public var isInsideMessage: Bool { messageOpcode != nil }

    /// Whether a close status code is one an endpoint may send on the wire (RFC 6455 §7.4.1, §7.4.2):
    /// 1000-1003, 1007-1014 (1012-1014 were registered later, §11.7), and 3000-4999. The others are
    /// reserved, or (1005, 1006, 1015) must never appear in a close frame.
    public static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }

    /// Scans `bytes`, calling `visit` for each event in stream order.
    ///
    /// Costs O(1) per frame plus O(1) per chunk for a payload: payload bytes are only counted, never
    /// read, except the two close-code bytes.
    public mutating func scan(
        _ bytes: UnsafeRawBufferPointer,
        _ visit: (WebSocketScanEvent) -> Void
    ) throws(WebSocketProtocolError) {
        counters.bytes &+= UInt64(bytes.count)
        var position = 0
        while position < bytes.count {
            if let frame = currentFrame {
                position = try skipPayload(of: frame, in: bytes, from: position, visit)
            } else if let parsed = try readHeader(from: bytes, at: position) {
                let (frame, endOffset) = parsed
                try startFrame(frame)
                visit(.header(frame, endOffset: endOffset))
                position = endOffset
                if frame.payloadLength == 0 {
                    endFrame(frame, endOffset: endOffset, visit)
                } else {
                    currentFrame = frame
                    payloadRemaining = frame.payloadLength
                }
            } else {
                // The rest of the chunk was buffered as a partial header.
                position = bytes.count
            }
        }
    }

    // MARK: - Headers

    /// Reads the header starting at `position`, completing a buffered partial header first.
    /// Returns the header and the offset just after its last byte in this chunk, or nil when the
    /// chunk ended first (its remaining bytes are then buffered).
    private mutating func readHeader(
        from bytes: UnsafeRawBufferPointer,
        at position: Int
    ) throws(WebSocketProtocolError) -> (WebSocketFrameHeader, Int)? {
        let rest = UnsafeRawBufferPointer(rebasing: bytes[position...])
        if partialHeaderCount == 0 {
            // Fast path: the whole header is in this chunk, parse it in place.
            if let frame = try WebSocketFrameHeader.parse(rest, role: role) {
                return (frame, position + frame.headerLength)
            }
            // parse returns nil only when fewer than the header's ≤ 14 bytes are left.
            bufferPartialHeader(rest)
            return nil
        }
        let previousCount = partialHeaderCount
        let appended = min(rest.count, WebSocketFrameHeader.maximumLength - previousCount)
        bufferPartialHeader(UnsafeRawBufferPointer(rebasing: rest[..<appended]))
        let count = partialHeaderCount
        let parsed = withUnsafeBytes(of: partialHeader) { storage in
            Result { () throws(WebSocketProtocolError) in
                try WebSocketFrameHeader.parse(UnsafeRawBufferPointer(rebasing: storage[..<count]), role: role)
            }
        }
        guard let frame = try parsed.get() else {
            // All `appended` bytes were needed: with 14 buffered bytes parsing cannot come up short.
            return nil
        }
        partialHeaderCount = 0
        return (frame, position + frame.headerLength - previousCount)
    }

    private mutating func bufferPartialHeader(_ bytes: UnsafeRawBufferPointer) {
        let offset = partialHeaderCount
        withUnsafeMutableBytes(of: &partialHeader) { storage in
            UnsafeMutableRawBufferPointer(rebasing: storage[offset..<(offset + bytes.count)]).copyMemory(from: bytes)
        }
        partialHeaderCount += bytes.count
    }

    // MARK: - Frames

    /// Applies the checks that need the scanner's state to a fresh header, and tracks the message.
    private mutating func startFrame(_ frame: WebSocketFrameHeader) throws(WebSocketProtocolError) {
        try checkReservedBits(frame)
        switch frame.opcode {
        case .text, .binary:
            // §5.4: a new message may not start inside a fragmented one.
            if messageOpcode != nil { throw WebSocketProtocolError(.expectedContinuation) }
            try checkMessageSize(frame.payloadLength)
            messageOpcode = frame.opcode
            messageBytes = frame.payloadLength
        case .continuation:
            if messageOpcode == nil { throw WebSocketProtocolError(.unexpectedContinuation) }
            let (total, overflow) = messageBytes.addingReportingOverflow(frame.payloadLength)
            let saturatedTotal = overflow ? UInt64.max : total
            try checkMessageSize(saturatedTotal)
            messageBytes = saturatedTotal
        case .close:
            // §5.5.1: a close body, if any, starts with a 2-byte status code.
            if frame.payloadLength == 1 { throw WebSocketProtocolError(.invalidClosePayload) }
            closeCodeBytesSeen = 0
            closeCodeValue = 0
            closeReason = UTF8Validator()
        case .ping, .pong:
            break
        }
    }

    /// §5.2: a non-zero reserved bit is an error unless an extension defines it; RFC 7692 §6 allows
    /// RSV1 only on the first frame of a data message.
    private func checkReservedBits(_ frame: WebSocketFrameHeader) throws(WebSocketProtocolError) {
        let bits = frame.reservedBits
        guard bits != 0 else { return }
        if bits & ~allowedReservedBits != 0 {
            throw WebSocketProtocolError(.reservedBitsSet)
        }
        let startsMessage = frame.opcode == .text || frame.opcode == .binary
        if bits & Self.rsv1 != 0 && !startsMessage {
            throw WebSocketProtocolError(.reservedBitsSet)
        }
    }

    private func checkMessageSize(_ total: UInt64) throws(WebSocketProtocolError) {
        if total > maxMessageBytes { throw WebSocketProtocolError(.messageTooBig(total)) }
    }

    /// Reports the payload of `frame` available from `position` and returns the new position.
    private mutating func skipPayload(
        of frame: WebSocketFrameHeader,
        in bytes: UnsafeRawBufferPointer,
        from position: Int,
        _ visit: (WebSocketScanEvent) -> Void
    ) throws(WebSocketProtocolError) -> Int {
        let available = bytes.count - position
        let take = payloadRemaining < UInt64(available) ? Int(payloadRemaining) : available
        if frame.opcode == .close {
            try readClosePayload(of: frame, from: UnsafeRawBufferPointer(rebasing: bytes[position..<(position + take)]))
        }
        let end = position + take
        visit(.payload(position..<end))
        payloadRemaining -= UInt64(take)
        if payloadRemaining == 0 {
            if frame.opcode == .close && !closeReason.isComplete {
                throw WebSocketProtocolError(.invalidCloseReason)
            }
            currentFrame = nil
            endFrame(frame, endOffset: end, visit)
        }
        return end
    }

    /// Reads a close payload as it passes: the status code at its start, which may arrive split across
    /// chunks, unmasked with the key bytes for its payload offsets (§5.3) and rejected when §7.4
    /// forbids it; then the reason, which must be UTF-8 (§5.5.1). Close frames are at most 125 bytes.
    private mutating func readClosePayload(
        of frame: WebSocketFrameHeader,
        from payload: UnsafeRawBufferPointer
    ) throws(WebSocketProtocolError) {
        var offset = Int(frame.payloadLength - payloadRemaining)
        for byte in payload {
            var unmasked = byte
            if let key = frame.maskingKey {
                unmasked ^= UInt8(truncatingIfNeeded: key >> (24 - 8 * (offset % 4)))
            }
            offset += 1
            if closeCodeBytesSeen < 2 {
                closeCodeValue = closeCodeValue << 8 | UInt16(unmasked)
                closeCodeBytesSeen += 1
                if closeCodeBytesSeen == 2 && !Self.isValidCloseCode(closeCodeValue) {
                    throw WebSocketProtocolError(.invalidClosePayload)
                }
            } else if !closeReason.accept(unmasked) {
                throw WebSocketProtocolError(.invalidCloseReason)
            }
        }
    }

    private mutating func endFrame(
        _ frame: WebSocketFrameHeader,
        endOffset: Int,
        _ visit: (WebSocketScanEvent) -> Void
    ) {
        counters.frames += 1
        var closeCode: UInt16?
        switch frame.opcode {
        case .text, .binary, .continuation:
            if frame.fin, let opcode = messageOpcode {
                counters.messages += 1
                if opcode == .text { counters.textMessages += 1 } else { counters.binaryMessages += 1 }
                messageOpcode = nil
                messageBytes = 0
            }
        case .ping:
            counters.pings += 1
        case .pong:
            counters.pongs += 1
        case .close:
            closeCode = closeCodeBytesSeen == 2 ? closeCodeValue : nil
            if !counters.sawClose {
                counters.sawClose = true
                counters.closeCode = closeCode
            }
        }
        visit(.frameEnd(frame, endOffset: endOffset, closeCode: closeCode))
    }
}

/// A UTF-8 validator fed one byte at a time (RFC 3629 §4: no overlong forms, no surrogates,
/// nothing above U+10FFFF), with no storage beyond three small fields.
struct UTF8Validator: Sendable {
    private var needed = 0
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    /// Whether the bytes so far end on a character boundary.
    var isComplete: Bool { needed == 0 }

    /// Takes the next byte; false when it cannot continue valid UTF-8.
    mutating func accept(_ byte: UInt8) -> Bool {
        guard needed == 0 else {
            guard byte >= lower && byte <= upper else { return false }
            lower = 0x80
            upper = 0xBF
            needed -= 1
            return true
        }
        switch byte {
        case 0x00...0x7F: return true
        case 0xC2...0xDF: needed = 1
        case 0xE0: (needed, lower) = (2, 0xA0)
        case 0xE1...0xEC, 0xEE...0xEF: needed = 2
        case 0xED: (needed, upper) = (2, 0x9F)
        case 0xF0: (needed, lower) = (3, 0x90)
        case 0xF1...0xF3: needed = 3
        case 0xF4: (needed, upper) = (3, 0x8F)
        default: return false
        }
        return true
    }
}
