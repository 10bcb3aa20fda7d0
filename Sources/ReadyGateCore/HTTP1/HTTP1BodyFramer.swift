/// Finds where an HTTP/1.1 message body ends (RFC 9112 §6, §7.1) without decoding it: the proxy
/// passes body bytes through as they are, and only needs to know how many of the bytes it read
/// belong to the body and when the message is complete.
///
/// Feed it the bytes that follow the head, in any pieces; each ``consume(_:)`` says how many of
/// them belong to the message (the rest begin the next one) and whether the message ended. A
/// chunked body is checked as it goes: chunk sizes in hex (below 2^60, leading zeros allowed), extensions, the
/// CRLF after each chunk, trailer fields; anything else is an error. The state is a few scalars, so
/// the result does not depend on how the bytes were split.
public struct HTTP1BodyFramer: Sendable, Equatable {
    public enum Error: Swift.Error, Sendable, Equatable {
        case invalidChunkSize
        case invalidChunkExtension
        case missingChunkCRLF
        case invalidTrailer
        /// `Content-Length` or `Transfer-Encoding` in the trailers (RFC 9110 §6.5.1). Stricter than
        /// llhttp, which refuses `Transfer-Encoding: chunked` there but takes an empty one.
        case framingFieldInTrailer
        case trailerTooLarge
    }

    enum State: Sendable, Equatable {
        case length(remaining: UInt64)
        case untilClose
        // Chunked, in the order a chunk is read.
        case chunkSize(digits: Int, value: UInt64)
        // A chunk extension (RFC 9112 §7.1.1): `;name` or `;name=value`, repeated; the name a
        // token, the value as lenient as llhttp's (see `consume`).
        case extensionName(started: Bool)
        case extensionValueStart
        case extensionToken
        case extensionQuoted(escaped: Bool)
        case extensionAfterQuoted
        case chunkSizeLF(last: Bool)
        case chunkData(remaining: UInt64)
        case chunkDataCR
        case chunkDataLF
        /// At the start of a trailer line (or the final empty line).
        case trailerLineStart
        /// In a trailer field's name.
        case trailerName
        /// In a trailer field's value.
        case trailerLine
        case trailerLF(empty: Bool)
        case done
    }

    private(set) var state: State
    private var trailerBytes = 0
    /// The most trailer bytes accepted.
    public static let trailerLimit = 16 * 1024

    public init(_ framing: HTTP1Head.Framing) {
        switch framing {
        case .none: state = .done
        case .length(let length): state = length == 0 ? .done : .length(remaining: length)
        case .chunked: state = .chunkSize(digits: 0, value: 0)
        case .untilClose: state = .untilClose
        }
    }

    /// Whether the message is complete.
    public var isComplete: Bool { state == .done }

    /// Whether the body ends only when the connection closes.
    public var isUntilClose: Bool { state == .untilClose }

    /// As ``consume(_:)``, and also says which of the bytes are the body's content: `payload` gets
    /// each range (relative to `bytes`) that is data, not chunked framing (chunk sizes, extensions,
    /// CRLFs, trailers). For a length- or close-delimited body that is all of the bytes taken. An
    /// HTTP/2 stream carries the content alone, so a chunked backend response is decoded with this.
    public mutating func consumeDecoding(
        _ bytes: UnsafeRawBufferPointer,
        payload: (Range<Int>) -> Void
    ) throws(Error) -> Int {
        switch state {
        case .done:
            return 0
        case .length, .untilClose:
            let taken = try consume(bytes)
            if taken > 0 { payload(0..<taken) }
            return taken
        default:
            break
        }
        var i = 0
        let n = bytes.count
        while i < n {
            switch state {
            case .done:
                return i
            case .chunkData(let remaining):
                let take = UInt64(n - i) < remaining ? n - i : Int(remaining)
                _ = try consume(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)]))
                payload(i..<(i + take))
                i += take
            default:
                // Framing: a byte at a time, so that data is seen where it starts.
                i += try consume(UnsafeRawBufferPointer(rebasing: bytes[i..<(i + 1)]))
            }
        }
        return i
    }

    /// Takes `bytes` following what was consumed before: returns how many of them belong to the
    /// message (all of them unless it ended within them).
    public mutating func consume(_ bytes: UnsafeRawBufferPointer) throws(Error) -> Int {
        var i = 0
        let n = bytes.count
        while i < n {
            switch state {
            case .done:
                return i
            case .untilClose:
                return n
            case .length(let remaining):
                let take = UInt64(n - i) < remaining ? UInt64(n - i) : remaining
                i += Int(take)
                state = remaining == take ? .done : .length(remaining: remaining - take)
            case .chunkData(let remaining):
                let take = UInt64(n - i) < remaining ? UInt64(n - i) : remaining
                i += Int(take)
                state = remaining == take ? .chunkDataCR : .chunkData(remaining: remaining - take)
            case .chunkSize(let digits, let value):
                let byte = bytes[i]
                if let digit = Self.hexValue(byte) {
                    // Leading zeros are allowed (llhttp takes any number); the value must stay
                    // below 2^60.
                    guard value >> 56 == 0 else { throw .invalidChunkSize }
                    state = .chunkSize(digits: digits + 1, value: value << 4 | UInt64(digit))
                } else if digits == 0 {
                    throw .invalidChunkSize
                } else if byte == UInt8(ascii: ";") {
                    state = .extensionName(started: false)
                    pendingSize = value
                } else if byte == 13 {
                    pendingSize = value
                    state = .chunkSizeLF(last: value == 0)
                } else {
                    throw .invalidChunkSize
                }
                i += 1
            case .extensionName(let started):
                let byte = bytes[i]
                if HTTP1HeadParser.isTokenByte(byte) {
                    state = .extensionName(started: true)
                } else if byte == UInt8(ascii: "=") {
                    // An empty name before `=` too (llhttp takes `;=v`).
                    state = .extensionValueStart
                } else if byte == UInt8(ascii: ";") {
                    // An empty name (`;;`) is allowed, as llhttp allows it.
                    state = .extensionName(started: false)
                } else if started && byte == 13 {
                    state = .chunkSizeLF(last: pendingSize == 0)
                } else {
                    throw .invalidChunkExtension
                }
                i += 1
            case .extensionAfterQuoted:
                let byte = bytes[i]
                if byte == UInt8(ascii: ";") {
                    state = .extensionName(started: false)
                } else if byte == 13 {
                    state = .chunkSizeLF(last: pendingSize == 0)
                } else {
                    throw .invalidChunkExtension
                }
                i += 1
            case .extensionValueStart, .extensionToken:
                // A value as llhttp reads it (FuzzHTTP1Parser compares): token bytes, where a `"`
                // begins a quoted string (even after token bytes); it ends at `;` or the CR.
                let byte = bytes[i]
                if byte == 13 {
                    state = .chunkSizeLF(last: pendingSize == 0)
                } else if byte == UInt8(ascii: "\"") {
                    state = .extensionQuoted(escaped: false)
                } else if byte == UInt8(ascii: ";") {
                    state = .extensionName(started: false)
                } else if HTTP1HeadParser.isTokenByte(byte) {
                    state = .extensionToken
                } else {
                    throw .invalidChunkExtension
                }
                i += 1
            case .extensionQuoted(let escaped):
                let byte = bytes[i]
                // Any byte but controls (DEL included, as llhttp takes it).
                guard byte == 9 || byte >= 32 else { throw .invalidChunkExtension }
                if escaped {
                    state = .extensionQuoted(escaped: false)
                } else if byte == UInt8(ascii: "\\") {
                    state = .extensionQuoted(escaped: true)
                } else if byte == UInt8(ascii: "\"") {
                    state = .extensionAfterQuoted
                }
                i += 1
            case .chunkSizeLF(let last):
                guard bytes[i] == 10 else { throw .missingChunkCRLF }
                i += 1
                state = last ? .trailerLineStart : .chunkData(remaining: pendingSize)
                if !last && pendingSize == 0 { state = .chunkDataCR }
            case .chunkDataCR:
                guard bytes[i] == 13 else { throw .missingChunkCRLF }
                i += 1
                state = .chunkDataLF
            case .chunkDataLF:
                guard bytes[i] == 10 else { throw .missingChunkCRLF }
                i += 1
                state = .chunkSize(digits: 0, value: 0)
            case .trailerLineStart:
                let byte = bytes[i]
                if byte == 13 {
                    state = .trailerLF(empty: true)
                } else {
                    // A trailer field name: a token byte first (no obs-fold).
                    guard HTTP1HeadParser.isTokenByte(byte) else { throw .invalidTrailer }
                    state = .trailerName
                    trailerNameLength = 0
                    trailerNameMayBeFraming = 0b11
                    noteTrailerNameByte(byte)
                }
                try countTrailerByte()
                i += 1
            case .trailerName:
                let byte = bytes[i]
                if byte == UInt8(ascii: ":") {
                    // Framing fields are not allowed in trailers (RFC 9110 §6.5.1); llhttp refuses them.
                    if (trailerNameMayBeFraming & 0b01 != 0 && trailerNameLength == Self.contentLength.count)
                        || (trailerNameMayBeFraming & 0b10 != 0 && trailerNameLength == Self.transferEncoding.count)
                    {
                        throw .framingFieldInTrailer
                    }
                    state = .trailerLine
                } else {
                    guard HTTP1HeadParser.isTokenByte(byte) else { throw .invalidTrailer }
                    noteTrailerNameByte(byte)
                }
                try countTrailerByte()
                i += 1
            case .trailerLine:
                let byte = bytes[i]
                if byte == 13 {
                    state = .trailerLF(empty: false)
                } else {
                    guard byte == 9 || (byte >= 32 && byte != 0x7F) else { throw .invalidTrailer }
                }
                try countTrailerByte()
                i += 1
            case .trailerLF(let empty):
                guard bytes[i] == 10 else { throw .invalidTrailer }
                i += 1
                state = empty ? .done : .trailerLineStart
            }
        }
        return i
    }

    /// The length of the trailer field name read so far, and which of `Content-Length` (bit 0) and
    /// `Transfer-Encoding` (bit 1) it may still be.
    private var trailerNameLength = 0
    private var trailerNameMayBeFraming: UInt8 = 0
    private static let contentLength = Array("content-length".utf8)
    private static let transferEncoding = Array("transfer-encoding".utf8)

    private mutating func noteTrailerNameByte(_ byte: UInt8) {
        let folded = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
        let index = trailerNameLength
        if index >= Self.contentLength.count || Self.contentLength[index] != folded {
            trailerNameMayBeFraming &= ~0b01
        }
        if index >= Self.transferEncoding.count || Self.transferEncoding[index] != folded {
            trailerNameMayBeFraming &= ~0b10
        }
        trailerNameLength += 1
    }

    /// A chunk's size while its extensions and CRLF are read.
    private var pendingSize: UInt64 = 0

    private mutating func countTrailerByte() throws(Error) {
        trailerBytes += 1
        if trailerBytes > Self.trailerLimit { throw .trailerTooLarge }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 48...57: byte - 48
        case 65...70: byte - 55
        case 97...102: byte - 87
        default: nil
        }
    }
}
