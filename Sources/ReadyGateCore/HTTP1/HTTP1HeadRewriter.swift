import NIOCore

/// The heads a reverse proxy sends on, written from a parsed ``HTTP1Head`` and its bytes: runs of
/// field lines that stay are copied as they are, and only what changes is written anew. The rules
/// are those of the proxy's NIO path (`ForwardedMessage`): hop-by-hop fields and those the
/// `Connection` field names are removed (never `Host` or `Content-Length`, RFC 9110 §7.6.1),
/// `X-Forwarded-*` and `Forwarded` (RFC 7239) extended, and the framing chosen for each side.
public enum HTTP1HeadRewriter {
    /// Whether a field does not cross the proxy: hop-by-hop, or named by a `Connection` token.
    public static func isRemoved(_ field: HTTP1Head.Field, in head: HTTP1Head, _ p: UnsafeRawBufferPointer) -> Bool {
        if field.kind.isHopByHop { return true }
        if head.connectionTokens.isEmpty || field.kind == .host || field.kind == .contentLength { return false }
        for token in head.connectionTokens where HTTP1HeadParser.equalsIgnoringCase(p, token, field.name) {
            return true
        }
        return false
    }

    /// Writes the head the backend gets for a request parsed from `p`: the request line as
    /// HTTP/1.1, the fields that stay, then `X-Forwarded-For` (extended), `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` unless the client sent them, `Forwarded` (extended, with the host) and
    /// `Transfer-Encoding: chunked` for a chunked body.
    ///
    /// - Parameters:
    ///   - forwardedFor: the client's `X-Forwarded-For` node.
    ///   - forwardedElement: the client's `Forwarded` element without `host`.
    ///   - proto: `X-Forwarded-Proto` when the client sent none (`https` behind TLS).
    public static func writeUpstreamRequest(
        _ head: HTTP1Head,
        from p: UnsafeRawBufferPointer,
        forwardedFor: String,
        forwardedElement: String,
        proto: String = "http",
        into out: inout ByteBuffer
    ) {
        out.writeBytes(UnsafeRawBufferPointer(rebasing: p[head.first]))
        out.writeInteger(HTTP1HeadParser.sp)
        out.writeBytes(UnsafeRawBufferPointer(rebasing: p[head.second]))
        out.writeStaticString(" HTTP/1.1\r\n")
        var host: Range<Int>?
        var hadProto = false
        var hadForwardedHost = false
        var previousFor: [Range<Int>] = []
        var previousForwarded: [Range<Int>] = []
        var runStart = -1
        var runEnd = -1
        for field in head.fields {
            var keep = !isRemoved(field, in: head, p)
            if keep {
                switch field.kind {
                case .host: if host == nil { host = field.value }
                case .xForwardedProto: hadProto = true
                case .xForwardedHost: hadForwardedHost = true
                case .xForwardedFor:
                    previousFor.append(field.value)
                    keep = false
                case .forwarded:
                    previousForwarded.append(field.value)
                    keep = false
                default: break
                }
            }
            if keep {
                if runStart < 0 { runStart = field.name.lowerBound }
                runEnd = field.lineEnd
            } else if runStart >= 0 {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[runStart..<runEnd]))
                runStart = -1
            }
        }
        if runStart >= 0 { out.writeBytes(UnsafeRawBufferPointer(rebasing: p[runStart..<runEnd])) }

        out.writeStaticString("X-Forwarded-For: ")
        if writeJoined(previousFor, from: p, into: &out) { out.writeStaticString(", ") }
        out.writeString(forwardedFor)
        out.writeStaticString("\r\n")
        if !hadProto {
            out.writeStaticString("X-Forwarded-Proto: ")
            out.writeString(proto)
            out.writeStaticString("\r\n")
        }
        if !hadForwardedHost, let host {
            out.writeStaticString("X-Forwarded-Host: ")
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[host]))
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("Forwarded: ")
        if writeJoined(previousForwarded, from: p, into: &out) { out.writeStaticString(", ") }
        out.writeString(forwardedElement)
        if let host {
            out.writeStaticString(";host=\"")
            out.writeBytes(UnsafeRawBufferPointer(rebasing: p[host]))
            out.writeStaticString("\"")
        }
        out.writeStaticString("\r\n")
        if head.framing == .chunked { out.writeStaticString("Transfer-Encoding: chunked\r\n") }
        out.writeStaticString("\r\n")
    }

    /// Writes the values joined by ", "; returns whether anything was written (the join is not
    /// empty), as `values.joined(separator: ", ").isEmpty` would tell.
    private static func writeJoined(
        _ values: [Range<Int>],
        from p: UnsafeRawBufferPointer,
        into out: inout ByteBuffer
    ) -> Bool {
        var wrote = false
        for (index, value) in values.enumerated() {
            if index > 0 {
                out.writeStaticString(", ")
                wrote = true
            }
            if !value.isEmpty {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[value]))
                wrote = true
            }
        }
        return wrote
    }

    /// How the proxy passes a response body to the client.
    public struct ResponsePlan: Sendable, Equatable {
        /// How the backend's body is delimited (what a ``HTTP1BodyFramer`` follows).
        public var upstreamFraming: HTTP1Head.Framing
        /// The backend's body ends at its close and the client gets it chunked: the proxy encodes
        /// each piece as a chunk and ends with the last chunk.
        public var chunkEncode: Bool
        /// The client's connection stays open after this response.
        public var keepClient: Bool
    }

    /// Writes the head an HTTP/1.1 client gets for a backend response parsed from `p`: the fields
    /// that stay, `Transfer-Encoding: chunked` for a body with no `Content-Length`, and
    /// `Connection: close` unless the client's connection stays open.
    public static func writeClientResponse(
        _ head: HTTP1Head,
        from p: UnsafeRawBufferPointer,
        requestIsHEAD: Bool,
        keepAlive: Bool,
        into out: inout ByteBuffer
    ) -> ResponsePlan {
        out.writeStaticString("HTTP/1.1 ")
        out.writeBytes(UnsafeRawBufferPointer(rebasing: p[head.first]))
        out.writeInteger(HTTP1HeadParser.sp)
        out.writeBytes(UnsafeRawBufferPointer(rebasing: p[head.second]))
        out.writeStaticString("\r\n")
        var hasLength = false
        var runStart = -1
        var runEnd = -1
        for field in head.fields {
            if !isRemoved(field, in: head, p) {
                if field.kind == .contentLength { hasLength = true }
                if runStart < 0 { runStart = field.name.lowerBound }
                runEnd = field.lineEnd
            } else if runStart >= 0 {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: p[runStart..<runEnd]))
                runStart = -1
            }
        }
        if runStart >= 0 { out.writeBytes(UnsafeRawBufferPointer(rebasing: p[runStart..<runEnd])) }
        let framing = HTTP1HeadParser.responseFraming(head, requestIsHEAD: requestIsHEAD)
        let bodyless =
            requestIsHEAD || (100..<200).contains(head.status) || head.status == 204 || head.status == 304
        var chunkEncode = false
        if !bodyless && !hasLength {
            out.writeStaticString("Transfer-Encoding: chunked\r\n")
            chunkEncode = framing == .untilClose
        }
        if !keepAlive { out.writeStaticString("Connection: close\r\n") }
        out.writeStaticString("\r\n")
        return ResponsePlan(upstreamFraming: framing, chunkEncode: chunkEncode, keepClient: keepAlive)
    }
}
