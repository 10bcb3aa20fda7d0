/// WebSockets over HTTP/2 (RFC 8441): the validation of an extended CONNECT request, and what the
/// proxy makes of it — the request an HTTP/1.1 upgrade to the backend is built from.
///
/// The request's fields come as HTTP/2 gives them: lower-case names, pseudo-header fields
/// (`:method`, `:protocol`, `:scheme`, `:path`, `:authority`) among them. Pure, so that every
/// rejection is unit-tested.
public enum ExtendedConnect {
    /// A valid extended CONNECT for a WebSocket.
    public struct Request: Sendable, Equatable {
        /// `:path`: the request target of the upgrade to the backend.
        public var path: String
        /// The regular header fields, `host` (from `:authority`) first: what an HTTP/1.1 upgrade
        /// request would carry, without its `Upgrade`, `Connection` and `Sec-WebSocket-Key`.
        public var headers: HTTPHeaderList
        /// The client's subprotocols and extensions. No key: RFC 8441 has none, and the answer
        /// carries no `Sec-WebSocket-Accept`.
        public var upgrade: ClientUpgradeRequest
    }

    /// Whether a request's fields make an extended CONNECT (it carries `:protocol`).
    public static func isExtendedConnect(_ fields: some Sequence<(name: String, value: String)>) -> Bool {
        fields.contains { $0.name == ":protocol" }
    }

    /// Checks an extended CONNECT (RFC 8441 §4 and §5). `endStream`: the HEADERS frame ended the
    /// stream, which leaves no room for the WebSocket's bytes.
    public static func validate(
        _ fields: some Sequence<(name: String, value: String)>,
        endStream: Bool
    ) -> Result<Request, UpgradeRejection> {
        var pseudo: [String: String] = [:]
        var regular = HTTPHeaderList()
        for field in fields {
            if field.name.hasPrefix(":") {
                guard pseudo.updateValue(field.value, forKey: field.name) == nil else {
                    return .failure(.init(status: 400, reason: "pseudo-header field \(field.name) repeated"))
                }
            } else if field.name != "host" {
                regular.add(field.name, field.value)
            }
        }
        guard pseudo[":method"] == "CONNECT" else {
            return .failure(.init(status: 400, reason: ":protocol is only allowed in a CONNECT request"))
        }
        guard let proto = pseudo[":protocol"], proto.lowercased() == "websocket" else {
            return .failure(.init(status: 501, reason: "unsupported :protocol; this server speaks websocket"))
        }
        guard let scheme = pseudo[":scheme"], !scheme.isEmpty else {
            return .failure(.init(status: 400, reason: "extended CONNECT needs :scheme"))
        }
        guard let path = pseudo[":path"], path.hasPrefix("/") || path == "*" else {
            return .failure(.init(status: 400, reason: "extended CONNECT needs a :path starting with /"))
        }
        guard let authority = pseudo[":authority"], !authority.isEmpty else {
            return .failure(.init(status: 400, reason: "extended CONNECT needs :authority"))
        }
        guard !endStream else {
            return .failure(.init(status: 400, reason: "extended CONNECT must not end the stream"))
        }
        guard regular.tokens("sec-websocket-version") == ["13"] else {
            return .failure(
                .init(
                    status: 426,
                    reason: "unsupported Sec-WebSocket-Version; this server speaks 13",
                    versionHint: true
                )
            )
        }
        if let length = regular.first("content-length"), length != "0" {
            return .failure(.init(status: 400, reason: "WebSocket upgrade must not carry a body"))
        }
        // Fields of HTTP/1.1's upgrade that have no place in HTTP/2 (RFC 9113 §8.2.2).
        for name in ["connection", "upgrade", "sec-websocket-key", "transfer-encoding", "keep-alive"] {
            if !regular.values(name).isEmpty {
                return .failure(.init(status: 400, reason: "\(name) is not allowed in an HTTP/2 request"))
            }
        }
        var headers = HTTPHeaderList([(name: "host", value: authority)])
        headers.fields.append(contentsOf: regular.fields)
        return .success(
            Request(
                path: path,
                headers: headers,
                upgrade: ClientUpgradeRequest(
                    key: "",
                    subprotocols: regular.tokens("sec-websocket-protocol"),
                    extensions: regular.values("sec-websocket-extensions")
                )
            )
        )
    }
}
