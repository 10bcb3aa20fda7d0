import Crypto

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The arithmetic and the checks of the WebSocket opening handshake (RFC 6455 §4).
public enum WebSocketHandshake {
    /// The GUID every `Sec-WebSocket-Accept` is derived with (RFC 6455 §1.3).
    public static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// `base64(SHA-1(key + GUID))` (RFC 6455 §4.2.2 step 5.4).
    public static func acceptValue(forKey key: String) -> String {
        let digest = Insecure.SHA1.hash(data: Array((key + guid).utf8))
        return Data(digest).base64EncodedString()
    }

    /// A fresh random `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1).
    /// Two draws of the generator, not sixteen: each draw of the system generator is a syscall.
    public static func makeKey(using random: inout some RandomNumberGenerator) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        for _ in 0..<2 { withUnsafeBytes(of: random.next() as UInt64) { bytes.append(contentsOf: $0) } }
        return Data(bytes).base64EncodedString()
    }

    /// Whether a request asks for a WebSocket upgrade at all (its `Upgrade` names `websocket`).
    /// Such a request is validated by ``validateUpgrade(method:versionMajor:versionMinor:headers:)``;
    /// one that is not goes the plain-HTTP way.
    public static func isWebSocketUpgrade(_ headers: HTTPHeaderList) -> Bool {
        headers.containsToken("websocket", in: "upgrade")
    }

    /// Checks a client's upgrade request (RFC 6455 §4.2.1).
    public static func validateUpgrade(
        method: String,
        versionMajor: Int,
        versionMinor: Int,
        headers: HTTPHeaderList
    ) -> Result<ClientUpgradeRequest, UpgradeRejection> {
        guard method == "GET" else { return .failure(.init(status: 400, reason: "WebSocket upgrade must use GET")) }
        guard versionMajor > 1 || (versionMajor == 1 && versionMinor >= 1) else {
            return .failure(.init(status: 400, reason: "WebSocket upgrade needs HTTP/1.1"))
        }
        guard headers.values("host").count == 1 else {
            return .failure(.init(status: 400, reason: "exactly one Host header is required"))
        }
        guard headers.containsToken("upgrade", in: "connection") else {
            return .failure(.init(status: 400, reason: "Connection header must contain \"Upgrade\""))
        }
        let versions = headers.tokens("sec-websocket-version")
        guard versions == ["13"] else {
            return .failure(
                .init(
                    status: 426,
                    reason: "unsupported Sec-WebSocket-Version; this server speaks 13",
                    versionHint: true
                )
            )
        }
        let keys = headers.values("sec-websocket-key")
        guard keys.count == 1, let key = keys.first?.trimmingSpaces(), isValidKey(key) else {
            return .failure(.init(status: 400, reason: "Sec-WebSocket-Key must be one base64 value of 16 bytes"))
        }
        if let length = headers.first("content-length"), length != "0" {
            return .failure(.init(status: 400, reason: "WebSocket upgrade must not carry a body"))
        }
        if !headers.values("transfer-encoding").isEmpty {
            return .failure(.init(status: 400, reason: "WebSocket upgrade must not carry a body"))
        }
        return .success(
            ClientUpgradeRequest(
                key: key,
                subprotocols: headers.tokens("sec-websocket-protocol"),
                extensions: headers.values("sec-websocket-extensions")
            )
        )
    }

    /// Whether `key` is base64 of exactly 16 bytes.
    public static func isValidKey(_ key: String) -> Bool {
        guard key.utf8.count == 24, let decoded = Data(base64Encoded: key) else { return false }
        return decoded.count == 16
    }

    /// Picks the subprotocol ReadyGate answers in `immediate` mode: the first one the client offered
    /// that is configured. Nil when none matches: ReadyGate never invents one.
    public static func chooseSubprotocol(offered: [String], configured: [String]) -> String? {
        offered.first { configured.contains($0) }
    }

    /// Checks a backend's answer to our upgrade request (RFC 6455 §4.1, the client's checks).
    ///
    /// - Returns: nil when the answer is acceptable, else what is wrong.
    public static func verifyUpstreamAnswer(
        headers: HTTPHeaderList,
        sentKey: String,
        offeredSubprotocols: [String],
        extensionsOffered: Bool = true
    ) -> String? {
        guard headers.containsToken("websocket", in: "upgrade") else { return "101 without Upgrade: websocket" }
        guard headers.containsToken("upgrade", in: "connection") else { return "101 without Connection: Upgrade" }
        guard headers.first("sec-websocket-accept")?.trimmingSpaces() == acceptValue(forKey: sentKey) else {
            return "Sec-WebSocket-Accept does not match the key"
        }
        if let chosen = headers.first("sec-websocket-protocol"), !offeredSubprotocols.contains(chosen) {
            return "backend chose a subprotocol that was not offered: \(chosen)"
        }
        if !extensionsOffered, let chosen = headers.first("sec-websocket-extensions") {
            return "backend chose an extension that was not offered: \(chosen)"
        }
        return nil
    }
}

extension WebSocketHandshake {
    /// Checks a replacement backend's `101` (transparent replay, `upstream` accept mode) against
    /// the one the client was answered with: the replayed frames are the client's, framed under
    /// the subprotocol and extensions of that first answer (permessage-deflate's RSV1 and window
    /// sizes, RFC 7692 §7), so the new backend session must have chosen the same.
    ///
    /// Extensions compare element by element, their parameters ignoring spaces around `;` and the
    /// case of ASCII letters (RFC 6455 §9.1: extension and parameter names are tokens).
    ///
    /// - Returns: nil when both answers agree, else what differs.
    public static func replayAnswerProblem(mirrored: HTTPHeaderList, replacement: HTTPHeaderList) -> String? {
        let protocols = (mirrored.first("sec-websocket-protocol"), replacement.first("sec-websocket-protocol"))
        if protocols.0?.trimmingSpaces() != protocols.1?.trimmingSpaces() {
            return "replacement backend chose subprotocol \(protocols.1 ?? "none"), not \(protocols.0 ?? "none")"
        }
        let extensions = (negotiatedExtensions(mirrored), negotiatedExtensions(replacement))
        if extensions.0 != extensions.1 {
            let chosen = extensions.1.isEmpty ? "none" : extensions.1.joined(separator: ", ")
            return "replacement backend chose extensions \(chosen)"
        }
        return nil
    }

    /// The `Sec-WebSocket-Extensions` elements of an answer, each normalised as
    /// `name;param=value;…` in lowercase without spaces.
    static func negotiatedExtensions(_ headers: HTTPHeaderList) -> [String] {
        var elements: [String] = []
        headers.forEachToken(of: "sec-websocket-extensions") { element in
            let parts = element.split(separator: ";").map { part in
                part.split(separator: "=", maxSplits: 1).map { $0.trimmingSpacesSlice() }.joined(separator: "=")
            }
            elements.append(parts.joined(separator: ";").lowercased())
        }
        return elements
    }
}

/// A valid client upgrade request, as far as the proxy needs it.
public struct ClientUpgradeRequest: Sendable, Equatable {
    public var key: String
    /// `Sec-WebSocket-Protocol` values, in the client's order of preference.
    public var subprotocols: [String]
    /// Raw `Sec-WebSocket-Extensions` values.
    public var extensions: [String]
}

/// Why a client's upgrade request is refused, with the HTTP status to answer.
public struct UpgradeRejection: Error, Sendable, Equatable {
    /// 400, or 426 for a version ReadyGate does not speak.
    public var status: Int
    public var reason: String
    /// Whether the answer must carry `Sec-WebSocket-Version: 13` (RFC 6455 §4.4).
    public var versionHint: Bool

    public init(status: Int, reason: String, versionHint: Bool = false) {
        self.status = status
        self.reason = reason
        self.versionHint = versionHint
    }
}
