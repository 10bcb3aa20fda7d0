import NIOHTTP1
import ReadyGateCore

/// The rewrites of a plain HTTP/1.1 exchange at the proxy: the request head for the backend and
/// the response head for the client. Message framing is decided here, explicitly, because both
/// encoders run with `automaticallySetFramingHeaders` off: `Transfer-Encoding` is hop-by-hop
/// (RFC 9112 §6.1), so each side's framing is chosen for that side.
enum ForwardedMessage {
    /// Why a request cannot be forwarded safely (answered `400`), or nil.
    ///
    /// NIO's llhttp (2.101.3) already fails the parse, so the request is answered `400` before it
    /// gets here, for `Content-Length` beside `Transfer-Encoding` (either order), two
    /// `Content-Length` fields or a list in one, a negative `Content-Length` and a
    /// `Transfer-Encoding` whose last coding is not `chunked` (`EmbeddedHTTPForwarderTests`
    /// checks each). It accepts `Transfer-Encoding: chunked` in an HTTP/1.0 request, which is
    /// refused here (RFC 9112 §6.1); the other checks are repeated on the decoded head so that no
    /// smuggling defence depends on parser flags alone (RFC 9112 §6.1, §6.3).
    /// A request whose `Host` breaks RFC 9112 §3.2: none in an HTTP/1.1 request, or more than one
    /// (any version). Such a request gets `400`.
    static func hostProblem(_ head: HTTPRequestHead) -> String? {
        // Field lines, not `canonicalForm` values: that drops empty ones, and `Host:` with an empty
        // value is a second Host all the same (found by fuzzing).
        let hosts = head.headers["host"]
        if hosts.count > 1 { return "more than one Host" }
        if hosts.isEmpty && head.version.isAtLeastHTTP11 { return "no Host in an HTTP/1.1 request" }
        return nil
    }

    static func framingProblem(_ head: HTTPRequestHead) -> String? {
        let hasTransferEncoding = head.headers.contains(name: "transfer-encoding")
        guard hasTransferEncoding || head.headers.contains(name: "content-length") else { return nil }
        let contentLength = head.headers[canonicalForm: "content-length"]
        if hasTransferEncoding {
            if !contentLength.isEmpty { return "Content-Length with Transfer-Encoding" }
            if !head.version.isAtLeastHTTP11 { return "Transfer-Encoding in an HTTP/1.0 request" }
            guard head.headers[canonicalForm: "transfer-encoding"].last?.lowercased() == "chunked" else {
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
    ///
    /// - Parameter forwardedFor: the client's address as `X-Forwarded-For` gives it (computed once
    ///   per connection, like `forwardedElement`, the `Forwarded` element without its host).
    static func upstreamRequestHead(
        _ head: HTTPRequestHead,
        forwardedFor: String,
        forwardedElement: String,
        proto: String = "http"
    ) -> HTTPRequestHead {
        var headers = head.headers
        let chunked = isChunked(head)
        if expectsContinue(head) { headers.remove(name: "expect") }
        stripHopByHop(&headers)
        addForwarded(&headers, forwardedFor: forwardedFor, forwardedElement: forwardedElement, proto: proto)
        // The request leaves as HTTP/1.1, which must carry Host (RFC 9112 §3.2); an HTTP/1.0 client
        // may have sent none, and its target has no authority: an empty Host, as §3.2 says for that.
        if !headers.contains(name: "host") { headers.add(name: "Host", value: "") }
        if chunked { headers.add(name: "Transfer-Encoding", value: "chunked") }
        return HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: headers)
    }

    /// ``ProxyHeaders/strippingHopByHop(_:)``, on NIO's headers in place.
    ///
    /// The rule is Core's (and its field names are); it is repeated here on `HTTPHeaders` because
    /// converting to Core's list and back was most of a forwarded request's CPU time. A test
    /// checks that both give the same fields.
    static func stripHopByHop(_ headers: inout HTTPHeaders) {
        if headers.contains(name: "connection") {
            for token in headers[canonicalForm: "connection"] where !token.isEmpty {
                let name = token.lowercased()
                if !ProxyHeaders.notNominable.contains(name) { headers.remove(name: name) }
            }
        }
        for name in ProxyHeaders.hopByHop where headers.contains(name: name) {
            headers.remove(name: name)
        }
    }

    /// ``ProxyHeaders/addingForwarded(_:clientAddress:proto:host:)`` on NIO's headers in place
    /// (same rule, same test); `proto` is `https` behind the TLS listener.
    static func addForwarded(
        _ headers: inout HTTPHeaders,
        forwardedFor: String,
        forwardedElement: String,
        proto: String = "http"
    ) {
        let host = headers.first(name: "host")
        let previousFor =
            headers.contains(name: "x-forwarded-for") ? headers["x-forwarded-for"].joined(separator: ", ") : ""
        let hadProto = headers.contains(name: "x-forwarded-proto")
        let hadHost = headers.contains(name: "x-forwarded-host")
        headers.replaceOrAdd(
            name: "X-Forwarded-For",
            value: previousFor.isEmpty ? forwardedFor : previousFor + ", " + forwardedFor
        )
        if !hadProto { headers.add(name: "X-Forwarded-Proto", value: proto) }
        if !hadHost, let host { headers.add(name: "X-Forwarded-Host", value: host) }
        var element = forwardedElement
        if let host { element += ";host=\"\(host)\"" }
        if headers.contains(name: "forwarded") {
            let previous = headers["forwarded"].joined(separator: ", ")
            if !previous.isEmpty { element = previous + ", " + element }
        }
        headers.replaceOrAdd(name: "Forwarded", value: element)
    }

    /// The `X-Forwarded-For` node and the `Forwarded` element (without `host`) of a client.
    static func forwardedIdentity(clientAddress: String?, proto: String = "http") -> (
        forwardedFor: String, forwardedElement: String
    ) {
        let node = clientAddress ?? "unknown"
        return (node, "for=\(ProxyHeaders.forwardedNode(node));proto=\(proto)")
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
        var headers = head.headers
        stripHopByHop(&headers)
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
