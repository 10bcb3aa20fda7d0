/// Rewrites a client's request headers for the backend, the way a reverse proxy must.
public enum ProxyHeaders {
    /// Hop-by-hop fields that never cross a proxy (RFC 9110 §7.6.1), besides those the
    /// `Connection` field names.
    public static let hopByHop: Set<String> = [
        "connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
    ]

    /// Fields a `Connection` list cannot remove: the next hop needs them to read the same message.
    /// Without `Host` an HTTP/1.1 request is invalid (RFC 9112 §3.2: the proxy, as a client, must
    /// send it); without `Content-Length` the backend would take the request's body for the next
    /// request on the connection (RFC 9112 §6.3), a request-smuggling desync on a pooled connection.
    public static let notNominable: Set<String> = ["host", "content-length"]

    /// Removes hop-by-hop fields and every field the `Connection` field lists (RFC 9110 §7.6.1),
    /// except ``notNominable`` ones.
    public static func strippingHopByHop(_ headers: HTTPHeaderList) -> HTTPHeaderList {
        let named = headers.tokens("connection").filter { token in
            !notNominable.contains { token.equalsIgnoringASCIICase($0) }
        }
        return HTTPHeaderList(
            headers.fields.filter { field in
                !hopByHop.contains { field.name.equalsIgnoringASCIICase($0) }
                    && !named.contains { field.name.equalsIgnoringASCIICase($0) }
            }
        )
    }

    /// Appends `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`
    /// (RFC 7239), extending any the client sent.
    public static func addingForwarded(
        _ headers: HTTPHeaderList,
        clientAddress: String?,
        proto: String,
        host: String?
    ) -> HTTPHeaderList {
        var result = headers
        let forwardedFor = clientAddress ?? "unknown"
        let previousFor = headers.values("x-forwarded-for").joined(separator: ", ")
        result.replace("X-Forwarded-For", previousFor.isEmpty ? forwardedFor : previousFor + ", " + forwardedFor)
        if headers.first("x-forwarded-proto") == nil { result.add("X-Forwarded-Proto", proto) }
        if headers.first("x-forwarded-host") == nil, let host { result.add("X-Forwarded-Host", host) }
        var element = "for=\(forwardedNode(forwardedFor));proto=\(proto)"
        if let host { element += ";host=\"\(host)\"" }
        let previous = headers.values("forwarded").joined(separator: ", ")
        result.replace("Forwarded", previous.isEmpty ? element : previous + ", " + element)
        return result
    }

    /// RFC 7239 §6: IPv6 nodes are quoted and bracketed.
    public static func forwardedNode(_ address: String) -> String {
        address.contains(":") ? "\"[\(address)]\"" : address
    }

    /// The headers of the upgrade request ReadyGate sends to the backend: the client's end-to-end
    /// fields, a fresh key, the subprotocols the client offered, extensions only when `keepExtensions`
    /// (in `immediate` mode they are stripped so bytes can be relayed verbatim, DESIGN §2).
    public static func upstreamUpgradeHeaders(
        client: HTTPHeaderList,
        key: String,
        keepExtensions: Bool,
        clientAddress: String?,
        proto: String
    ) -> HTTPHeaderList {
        var headers = strippingHopByHop(client)
        for name in ["sec-websocket-key", "sec-websocket-version", "sec-websocket-accept", "content-length"] {
            headers.remove(name)
        }
        if !keepExtensions { headers.remove("sec-websocket-extensions") }
        headers = addingForwarded(headers, clientAddress: clientAddress, proto: proto, host: client.first("host"))
        headers.add("Connection", "Upgrade")
        headers.add("Upgrade", "websocket")
        headers.add("Sec-WebSocket-Key", key)
        headers.add("Sec-WebSocket-Version", "13")
        return headers
    }
}
