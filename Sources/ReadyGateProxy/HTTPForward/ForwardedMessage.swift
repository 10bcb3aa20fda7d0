import NIOHTTP1
import ReadyGateCore

/// The rewrites of a plain HTTP/1.1 exchange at the proxy: the request head for the backend and
/// the response head for the client. Message framing is decided here, explicitly, because both
/// encoders run with `automaticallySetFramingHeaders` off: `Transfer-Encoding` is hop-by-hop
/// (RFC 9112 §6.1), so each side's framing is chosen for that side.
enum ForwardedMessage {
    /// Why a request cannot be forwarded safely (answered `400`), or nil.
    ///
    /// llhttp already refuses `Content-Length` beside `Transfer-Encoding`, two `Content-Length`
    /// fields and a `Transfer-Encoding` whose last coding is not `chunked`; this repeats the checks
    /// on the decoded head so that no smuggling defence depends on parser flags alone
    /// (RFC 9112 §6.1, §6.3).
    static func framingProblem(_ head: HTTPRequestHead) -> String? {
        let transferEncoding = head.headers[canonicalForm: "transfer-encoding"]
        let contentLength = head.headers[canonicalForm: "content-length"]
        if !transferEncoding.isEmpty {
            if !contentLength.isEmpty { return "Content-Length with Transfer-Encoding" }
            if !head.version.isAtLeastHTTP11 { return "Transfer-Encoding in an HTTP/1.0 request" }
            guard transferEncoding.last?.lowercased() == "chunked" else {
                return "Transfer-Encoding does not end with chunked"
            }
        }
        if contentLength.count > 1 { return "more than one Content-Length" }
        if let length = contentLength.first, UInt64(length) == nil { return "invalid Content-Length" }
        return nil
    }

    /// Whether the request's body is chunked (checked by ``framingProblem(_:)`` first).
    static func isChunked(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "transfer-encoding")
    }

    /// The head sent to the backend: HTTP/1.1 (so the connection can be kept), hop-by-hop fields
    /// removed (RFC 9110 §7.6.1), `X-Forwarded-*` and `Forwarded` added, `Host` kept, and the
    /// body framed as the client framed it. `Expect: 100-continue` is answered by the proxy and
    /// not passed on.
    static func upstreamRequestHead(_ head: HTTPRequestHead, clientAddress: String?) -> HTTPRequestHead {
        let client = HTTPHeaderList(head.headers)
        var headers = ProxyHeaders.strippingHopByHop(client)
        if expectsContinue(head) { headers.remove("expect") }
        headers = ProxyHeaders.addingForwarded(
            headers,
            clientAddress: clientAddress,
            proto: "http",
            host: client.first("host")
        )
        if isChunked(head) { headers.add("Transfer-Encoding", "chunked") }
        return HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: HTTPHeaders(headers))
    }

    /// An HTTP/1.1 request with `Expect: 100-continue` (RFC 9110 §10.1.1).
    static func expectsContinue(_ head: HTTPRequestHead) -> Bool {
        head.version.isAtLeastHTTP11
            && head.headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
    }

    /// The head for the client, and whether the body is delimited by closing the connection
    /// (an HTTP/1.0 client and no `Content-Length`).
    static func clientResponseHead(
        _ head: HTTPResponseHead,
        requestMethod: HTTPMethod,
        requestVersion: HTTPVersion,
        keepAlive: Bool
    ) -> (head: HTTPResponseHead, closeDelimited: Bool) {
        var headers = HTTPHeaders(ProxyHeaders.strippingHopByHop(HTTPHeaderList(head.headers)))
        let code = head.status.code
        let bodyless = requestMethod == .HEAD || (100..<200).contains(code) || code == 204 || code == 304
        var closeDelimited = false
        if !bodyless && !headers.contains(name: "content-length") {
            if requestVersion.isAtLeastHTTP11 {
                headers.add(name: "Transfer-Encoding", value: "chunked")
            } else {
                closeDelimited = true
            }
        }
        let keep = keepAlive && !closeDelimited
        if !keep {
            headers.add(name: "Connection", value: "close")
        } else if !requestVersion.isAtLeastHTTP11 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        let version: HTTPVersion = requestVersion.isAtLeastHTTP11 ? .http1_1 : .http1_0
        return (HTTPResponseHead(version: version, status: head.status, headers: headers), closeDelimited)
    }
}

extension HTTPVersion {
    /// HTTP/1.1 or later: persistent connections and chunked coding by default.
    var isAtLeastHTTP11: Bool { major > 1 || (major == 1 && minor >= 1) }
}
