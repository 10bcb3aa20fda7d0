/// A parsed HTTP/1.1 message head (RFC 9112 §2-§5), kept as byte offsets into the bytes it was
/// parsed from: nothing is copied and no `String` is made. The proxy's fast path parses each head
/// once with ``HTTP1HeadParser``, decides from the flags here, and re-serialises only what
/// ``HTTP1HeadRewriter`` changes.
public struct HTTP1Head: Sendable, Equatable {
    /// One field line: the name and the value without its surrounding whitespace, and where the
    /// line ends (after its CRLF).
    public struct Field: Sendable, Equatable {
        public var name: Range<Int>
        public var value: Range<Int>
        public var lineEnd: Int
        /// The field's meaning to the proxy.
        public var kind: FieldKind
    }

    /// The fields the proxy acts on; everything else is `.other`.
    public enum FieldKind: UInt8, Sendable, Equatable {
        case other, host, contentLength, transferEncoding, connection, upgrade, expect
        case proxyConnection, keepAlive, te, trailer
        case xForwardedFor, xForwardedProto, xForwardedHost, forwarded

        /// Hop-by-hop fields (RFC 9110 §7.6.1), as ``ProxyHeaders/hopByHop`` lists them.
        public var isHopByHop: Bool {
            switch self {
            case .connection, .proxyConnection, .keepAlive, .te, .trailer, .transferEncoding, .upgrade: true
            default: false
            }
        }
    }

    /// How the message's body is delimited (RFC 9112 §6.3).
    public enum Framing: Sendable, Equatable {
        case none
        case length(UInt64)
        case chunked
        /// Until the connection closes (responses only).
        case untilClose
    }

    /// The request methods the fast path knows; NIO's llhttp knows more (and refuses any it does
    /// not know), so `.other` goes to the NIO path.
    public enum Method: UInt8, Sendable, Equatable {
        case get, head, post, put, delete, options, patch, trace, connect, other
    }

    /// Request: the method; response: the status code's three digits.
    public var first: Range<Int>
    /// Request: the method, if a common one (response: `.other`).
    public var method: Method
    /// Request: the target; response: the reason phrase (maybe empty).
    public var second: Range<Int>
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    /// Response: the status code; request: 0.
    public var status: Int
    public var fields: [Field]
    /// The head's length, its final empty line included.
    public var length: Int
    /// The body's framing as the head's own fields say (for a response before the request method and
    /// the status are taken into account: see ``HTTP1HeadParser/responseFraming(_:requestIsHEAD:)``).
    public var framing: Framing
    /// Whether the connection may carry another message after this one (RFC 9112 §9.3).
    public var keepAlive: Bool
    /// Field lines of each kind that matter for routing.
    public var hostCount: Int
    public var hasUpgrade: Bool
    public var hasExpect: Bool
    /// `Transfer-Encoding` is other than one field saying just `chunked` (two fields, or codings
    /// besides chunked): left to the NIO path, whose llhttp has its own rules for these.
    public var hasUnusualTransferEncoding: Bool
    /// The request target is in origin form (`/path?query`, RFC 9112 §3.2.1).
    public var isOriginForm: Bool
    /// Comma-separated tokens of the `Connection` fields other than `close` and `keep-alive`: the
    /// fields they name are hop-by-hop too.
    public var connectionTokens: [Range<Int>]
}

extension HTTP1Head {
    /// An ordinary request the proxy's fast path forwards itself: HTTP/1.1, a method NIO's llhttp
    /// knows other than `CONNECT`, a target in origin form, no `Upgrade`, no `Expect`, and no
    /// `Transfer-Encoding` but a single `chunked`. Anything
    /// else goes to the NIO path.
    public var isOrdinaryRequest: Bool {
        minorVersion == 1 && method != .other && method != .connect && isOriginForm && !hasUpgrade && !hasExpect
            && !hasUnusualTransferEncoding
    }
}

/// Why a head is not accepted.
public enum HTTP1HeadError: Error, Sendable, Equatable {
    /// Bigger than the limit: `431` for a request.
    case tooLarge
    /// Not a valid head (`400` for a request); the reason is for logs.
    case malformed(String)
}

/// What a parse of the bytes so far gives.
public enum HTTP1HeadParseResult: Sendable, Equatable {
    /// No complete head yet (and not beyond the limit).
    case incomplete
    case complete(HTTP1Head)
    case invalid(HTTP1HeadError)
}

/// Parses request and response heads from bytes, strictly (RFC 9112): tokens where the grammar
/// says token, no whitespace before a colon, no obs-fold, CRLF line ends only (a bare CR or LF is
/// an error), no control bytes in values, HTTP/1.0 or HTTP/1.1 only. The parse is a pure function
/// of the bytes, so it does not depend on how they arrived; the caller keeps what it has read and
/// parses again when more comes.
public enum HTTP1HeadParser {
    public static let cr: UInt8 = 13
    public static let lf: UInt8 = 10
    public static let sp: UInt8 = 32
    public static let htab: UInt8 = 9

    /// Parses a request head from the start of `bytes`.
    public static func parseRequest(_ bytes: UnsafeRawBufferPointer, limit: Int) -> HTTP1HeadParseResult {
        parse(bytes, limit: limit, isRequest: true)
    }

    /// Parses a response head from the start of `bytes`.
    public static func parseResponse(_ bytes: UnsafeRawBufferPointer, limit: Int) -> HTTP1HeadParseResult {
        parse(bytes, limit: limit, isRequest: false)
    }

    /// The framing of a response body (RFC 9112 §6.3): none for a response to HEAD and for 1xx,
    /// 204 and 304; else what the fields say.
    public static func responseFraming(_ head: HTTP1Head, requestIsHEAD: Bool) -> HTTP1Head.Framing {
        if requestIsHEAD || (100..<200).contains(head.status) || head.status == 204 || head.status == 304 {
            return .none
        }
        return head.framing
    }

    private static func parse(_ p: UnsafeRawBufferPointer, limit: Int, isRequest: Bool) -> HTTP1HeadParseResult {
        // Find the end of the head; a bare CR or LF anywhere before it is an error.
        var end = -1
        var i = 0
        let n = p.count
        while i < n {
            let byte = p[i]
            if byte == lf {
                if i == 0 || p[i - 1] != cr { return .invalid(.malformed("bare LF")) }
                if i >= 3 && p[i - 2] == lf && p[i - 3] == cr {
                    end = i + 1
                    break
                }
            } else if byte == cr, i + 1 < n, p[i + 1] != lf {
                return .invalid(.malformed("bare CR"))
            }
            i += 1
            if i >= limit { return .invalid(.tooLarge) }
        }
        if end < 0 { return n >= limit ? .invalid(.tooLarge) : .incomplete }
        do {
            return .complete(try parseHead(p, end: end, isRequest: isRequest))
        } catch let error as HTTP1HeadError {
            return .invalid(error)
        } catch {
            return .invalid(.malformed("\(error)"))
        }
    }

    private static func parseHead(_ p: UnsafeRawBufferPointer, end: Int, isRequest: Bool) throws -> HTTP1Head {
        var i = 0
        let first: Range<Int>
        let second: Range<Int>
        var minor = 1
        var status = 0
        if isRequest {
            let methodStart = i
            while i < end, isTokenByte(p[i]) { i += 1 }
            guard i > methodStart, p[i] == sp else { throw HTTP1HeadError.malformed("invalid method") }
            first = methodStart..<i
            i += 1
            let targetStart = i
            while i < end, p[i] > sp, p[i] < 0x7F { i += 1 }
            guard i > targetStart, p[i] == sp else { throw HTTP1HeadError.malformed("invalid target") }
            second = targetStart..<i
            i += 1
            minor = try version(p, at: i)
            i += 8
            guard p[i] == cr else { throw HTTP1HeadError.malformed("invalid request line") }
            i += 2
        } else {
            minor = try version(p, at: i)
            i += 8
            guard p[i] == sp else { throw HTTP1HeadError.malformed("invalid status line") }
            i += 1
            guard i + 3 < end, isDigit(p[i]), isDigit(p[i + 1]), isDigit(p[i + 2]) else {
                throw HTTP1HeadError.malformed("invalid status code")
            }
            status = Int(p[i] - 48) * 100 + Int(p[i + 1] - 48) * 10 + Int(p[i + 2] - 48)
            guard status >= 100 else { throw HTTP1HeadError.malformed("invalid status code") }
            first = i..<(i + 3)
            i += 3
            if p[i] == sp {
                i += 1
                let reasonStart = i
                while p[i] != cr {
                    guard isFieldValueByte(p[i]) else { throw HTTP1HeadError.malformed("invalid reason phrase") }
                    i += 1
                }
                second = reasonStart..<i
            } else {
                second = i..<i
            }
            guard p[i] == cr else { throw HTTP1HeadError.malformed("invalid status line") }
            i += 2
        }

        var fields: [HTTP1Head.Field] = []
        fields.reserveCapacity(12)
        var head = HTTP1Head(
            first: first,
            method: isRequest ? methodKind(p, first) : .other,
            second: second,
            minorVersion: minor,
            status: status,
            fields: [],
            length: end,
            framing: .none,
            keepAlive: minor == 1,
            hostCount: 0,
            hasUpgrade: false,
            hasExpect: false,
            hasUnusualTransferEncoding: false,
            isOriginForm: isRequest && p[second.lowerBound] == UInt8(ascii: "/"),
            connectionTokens: []
        )
        var contentLength: UInt64?
        var transferEncodingCount = 0
        var chunked = false
        var sawClose = false
        var sawKeepAlive = false
        while i < end - 2 {
            let nameStart = i
            while isTokenByte(p[i]) { i += 1 }
            guard i > nameStart else {
                throw HTTP1HeadError.malformed(
                    p[i] == sp || p[i] == htab ? "obs-fold" : "invalid field name"
                )
            }
            guard p[i] == UInt8(ascii: ":") else { throw HTTP1HeadError.malformed("invalid field name") }
            let name = nameStart..<i
            i += 1
            while p[i] == sp || p[i] == htab { i += 1 }
            let valueStart = i
            var valueEnd = i
            while p[i] != cr {
                let byte = p[i]
                guard isFieldValueByte(byte) else { throw HTTP1HeadError.malformed("invalid field value") }
                i += 1
                if byte != sp && byte != htab { valueEnd = i }
            }
            i += 2
            let kind = fieldKind(p, name)
            let value = valueStart..<valueEnd
            fields.append(HTTP1Head.Field(name: name, value: value, lineEnd: i, kind: kind))
            switch kind {
            case .host:
                head.hostCount += 1
            case .contentLength:
                // llhttp takes trailing spaces after the digits but not a tab.
                for k in value.upperBound..<(i - 2) where p[k] == htab {
                    throw HTTP1HeadError.malformed("invalid Content-Length")
                }
                guard let length = parseLength(p, value) else {
                    throw HTTP1HeadError.malformed("invalid Content-Length")
                }
                if let contentLength, contentLength != length {
                    throw HTTP1HeadError.malformed("differing Content-Length")
                }
                if contentLength != nil { throw HTTP1HeadError.malformed("more than one Content-Length") }
                contentLength = length
            case .transferEncoding:
                transferEncodingCount += 1
                chunked = lastTokenIsChunked(p, value)
                if transferEncodingCount > 1 || !equalsLowercased(p, value, "chunked") {
                    head.hasUnusualTransferEncoding = true
                }
            case .connection:
                var tokenStart = value.lowerBound
                var k = value.lowerBound
                while k <= value.upperBound {
                    if k == value.upperBound || p[k] == UInt8(ascii: ",") {
                        var a = tokenStart
                        var b = k
                        while a < b, p[a] == sp || p[a] == htab { a += 1 }
                        while b > a, p[b - 1] == sp || p[b - 1] == htab { b -= 1 }
                        if a < b {
                            if equalsLowercased(p, a..<b, "close") {
                                sawClose = true
                            } else if equalsLowercased(p, a..<b, "keep-alive") {
                                sawKeepAlive = true
                            } else {
                                head.connectionTokens.append(a..<b)
                            }
                        }
                        tokenStart = k + 1
                    }
                    k += 1
                }
            case .upgrade:
                head.hasUpgrade = true
            case .expect:
                head.hasExpect = true
            default:
                break
            }
        }
        head.fields = fields
        if transferEncodingCount > 0 {
            if contentLength != nil { throw HTTP1HeadError.malformed("Content-Length with Transfer-Encoding") }
            if isRequest {
                guard chunked else { throw HTTP1HeadError.malformed("Transfer-Encoding does not end with chunked") }
                guard minor == 1 else { throw HTTP1HeadError.malformed("Transfer-Encoding in an HTTP/1.0 request") }
                head.framing = .chunked
            } else {
                head.framing = chunked ? .chunked : .untilClose
            }
        } else if let contentLength {
            head.framing = .length(contentLength)
        } else {
            head.framing = isRequest ? .none : .untilClose
        }
        if isRequest, minor == 1, head.hostCount != 1 {
            throw HTTP1HeadError.malformed(
                head.hostCount == 0 ? "no Host in an HTTP/1.1 request" : "more than one Host"
            )
        }
        if isRequest, head.hostCount > 1 { throw HTTP1HeadError.malformed("more than one Host") }
        head.keepAlive = minor == 1 ? !sawClose : (sawKeepAlive && !sawClose)
        return head
    }

    private static func version(_ p: UnsafeRawBufferPointer, at i: Int) throws -> Int {
        guard i + 8 < p.count,
            p[i] == UInt8(ascii: "H"), p[i + 1] == UInt8(ascii: "T"), p[i + 2] == UInt8(ascii: "T"),
            p[i + 3] == UInt8(ascii: "P"), p[i + 4] == UInt8(ascii: "/"), p[i + 5] == UInt8(ascii: "1"),
            p[i + 6] == UInt8(ascii: "."), p[i + 7] == UInt8(ascii: "0") || p[i + 7] == UInt8(ascii: "1")
        else { throw HTTP1HeadError.malformed("unsupported HTTP version") }
        return Int(p[i + 7] - 48)
    }

    /// A `Content-Length` value: 1 to 18 digits (no sign, no list).
    private static func parseLength(_ p: UnsafeRawBufferPointer, _ range: Range<Int>) -> UInt64? {
        guard !range.isEmpty, range.count <= 18 else { return nil }
        var value: UInt64 = 0
        for k in range {
            guard isDigit(p[k]) else { return nil }
            value = value * 10 + UInt64(p[k] - 48)
        }
        return value
    }

    /// Whether the last coding of a `Transfer-Encoding` value is `chunked`.
    private static func lastTokenIsChunked(_ p: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        var start = range.lowerBound
        for k in range where p[k] == UInt8(ascii: ",") { start = k + 1 }
        var a = start
        while a < range.upperBound, p[a] == sp || p[a] == htab { a += 1 }
        return equalsLowercased(p, a..<range.upperBound, "chunked")
    }

    static func isDigit(_ byte: UInt8) -> Bool { byte >= 48 && byte <= 57 }

    /// tchar (RFC 9110 §5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool { tokenTable[Int(byte)] }

    /// field-vchar, SP or HTAB (RFC 9110 §5.5); obs-text allowed.
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte == htab || (byte >= sp && byte != 0x7F)
    }

    private static let tokenTable: [Bool] = (0..<256).map { value in
        let byte = UInt8(value)
        if byte >= 0x30 && byte <= 0x39 { return true }
        if byte >= 0x41 && byte <= 0x5A { return true }
        if byte >= 0x61 && byte <= 0x7A { return true }
        return "!#$%&'*+-.^_`|~".utf8.contains(byte)
    }

    /// Whether the bytes in `range` equal `lowercase` (all lowercase ASCII) ignoring ASCII case.
    public static func equalsLowercased(_ p: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercase: StaticString)
        -> Bool
    {
        guard range.count == lowercase.utf8CodeUnitCount else { return false }
        let other = lowercase.utf8Start
        var k = 0
        for index in range {
            let byte = p[index]
            let folded = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
            if folded != other[k] { return false }
            k += 1
        }
        return true
    }

    /// Whether two ranges hold the same bytes ignoring ASCII case.
    public static func equalsIgnoringCase(_ p: UnsafeRawBufferPointer, _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        var j = b.lowerBound
        for index in a {
            let x = p[index]
            let y = p[j]
            if x != y {
                let lx = x >= 0x41 && x <= 0x5A ? x | 0x20 : x
                let ly = y >= 0x41 && y <= 0x5A ? y | 0x20 : y
                if lx != ly { return false }
            }
            j += 1
        }
        return true
    }

    private static func methodKind(_ p: UnsafeRawBufferPointer, _ range: Range<Int>) -> HTTP1Head.Method {
        // Methods are case-sensitive (RFC 9110 §9.1): exact bytes.
        func equals(_ name: StaticString) -> Bool {
            guard range.count == name.utf8CodeUnitCount else { return false }
            for k in 0..<range.count where p[range.lowerBound + k] != name.utf8Start[k] { return false }
            return true
        }
        switch range.count {
        case 3: return equals("GET") ? .get : equals("PUT") ? .put : .other
        case 4: return equals("HEAD") ? .head : equals("POST") ? .post : .other
        case 5: return equals("PATCH") ? .patch : equals("TRACE") ? .trace : .other
        case 6: return equals("DELETE") ? .delete : .other
        case 7: return equals("OPTIONS") ? .options : equals("CONNECT") ? .connect : .other
        default: return .other
        }
    }

    private static func fieldKind(_ p: UnsafeRawBufferPointer, _ name: Range<Int>) -> HTTP1Head.FieldKind {
        switch name.count {
        case 2: return equalsLowercased(p, name, "te") ? .te : .other
        case 4: return equalsLowercased(p, name, "host") ? .host : .other
        case 6: return equalsLowercased(p, name, "expect") ? .expect : .other
        case 7:
            if equalsLowercased(p, name, "upgrade") { return .upgrade }
            if equalsLowercased(p, name, "trailer") { return .trailer }
            return .other
        case 9: return equalsLowercased(p, name, "forwarded") ? .forwarded : .other
        case 10:
            if equalsLowercased(p, name, "connection") { return .connection }
            if equalsLowercased(p, name, "keep-alive") { return .keepAlive }
            return .other
        case 14: return equalsLowercased(p, name, "content-length") ? .contentLength : .other
        case 15:
            if equalsLowercased(p, name, "x-forwarded-for") { return .xForwardedFor }
            return .other
        case 16:
            if equalsLowercased(p, name, "proxy-connection") { return .proxyConnection }
            if equalsLowercased(p, name, "x-forwarded-host") { return .xForwardedHost }
            return .other
        case 17:
            if equalsLowercased(p, name, "transfer-encoding") { return .transferEncoding }
            if equalsLowercased(p, name, "x-forwarded-proto") { return .xForwardedProto }
            return .other
        default: return .other
        }
    }
}
