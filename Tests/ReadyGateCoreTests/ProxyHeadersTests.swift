import Testing

@testable import ReadyGateCore

/// A client's upgrade request headers, with some hop-by-hop and end-to-end fields.
private let clientUpgrade: HTTPHeaderList = [
    "Host": "app.example.com",
    "Upgrade": "websocket",
    "Connection": "keep-alive, Upgrade",
    "Keep-Alive": "timeout=5",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Protocol": "chat, superchat",
    "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
    "Origin": "https://app.example.com",
    "Cookie": "session=abc",
    "Authorization": "Bearer t",
]

private let freshKey = "AAECAwQFBgcICQoLDA0ODw=="

private func upgradeHeaders(
    _ client: HTTPHeaderList = clientUpgrade,
    keepExtensions: Bool,
    clientAddress: String? = "203.0.113.7"
) -> HTTPHeaderList {
    ProxyHeaders.upstreamUpgradeHeaders(
        client: client,
        key: freshKey,
        keepExtensions: keepExtensions,
        clientAddress: clientAddress,
        proto: "https"
    )
}

@Suite("ProxyHeaders")
struct ProxyHeadersTests {
    // MARK: Hop-by-hop

    @Test("hop-by-hop fields are removed, end-to-end fields kept in order")
    func stripsHopByHop() {
        let headers: HTTPHeaderList = [
            "Host": "a", "Connection": "close", "Proxy-Connection": "keep-alive", "Keep-Alive": "timeout=5",
            "TE": "trailers", "Trailer": "Expires", "Transfer-Encoding": "chunked", "Upgrade": "websocket",
            "Accept": "*/*", "X-Request-Id": "42",
        ]
        let stripped = ProxyHeaders.strippingHopByHop(headers)
        #expect(stripped == ["Host": "a", "Accept": "*/*", "X-Request-Id": "42"])
    }

    @Test("fields named in Connection are removed too, case-insensitively")
    func stripsConnectionNamed() {
        let headers: HTTPHeaderList = [
            "Connection": "X-Secret, x-hop", "connection": " Upgrade ,X-Other",
            "x-secret": "1", "X-HOP": "2", "X-Other": "3", "X-Kept": "4", "UPGRADE": "websocket",
        ]
        #expect(ProxyHeaders.strippingHopByHop(headers) == ["X-Kept": "4"])
    }

    /// Found by the FuzzUpgradeRequest target (`Tests/Fuzz`): `Connection: Upgrade, Host` made the
    /// backend's upgrade request lose its Host.
    @Test("Connection cannot remove Host or Content-Length")
    func notNominable() {
        let headers: HTTPHeaderList = [
            "Host": "a.test", "Content-Length": "3", "Connection": "Upgrade, HOST, content-length, X-Gone",
            "X-Gone": "1",
        ]
        #expect(ProxyHeaders.strippingHopByHop(headers) == ["Host": "a.test", "Content-Length": "3"])
        let upstream = ProxyHeaders.upstreamUpgradeHeaders(
            client: [
                "Host": "a.test", "Upgrade": "websocket", "Connection": "Upgrade, Host",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
            ],
            key: "AQIDBAUGBwgJCgsMDQ4PEA==",
            keepExtensions: false,
            clientAddress: "192.0.2.7",
            proto: "http"
        )
        #expect(upstream.values("host") == ["a.test"])
        let verdict = WebSocketHandshake.validateUpgrade(
            method: "GET",
            versionMajor: 1,
            versionMinor: 1,
            headers: upstream
        )
        #expect((try? verdict.get()) != nil)
    }

    @Test("the hop-by-hop set is RFC 9110 §7.6.1's")
    func hopByHopSet() {
        #expect(
            ProxyHeaders.hopByHop == [
                "connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
            ]
        )
    }

    @Test("headers without hop-by-hop fields are unchanged")
    func nothingToStrip() {
        let headers: HTTPHeaderList = ["Host": "a", "Accept": "*/*", "accept": "text/html"]
        #expect(ProxyHeaders.strippingHopByHop(headers) == headers)
    }

    // MARK: Forwarded

    @Test("forwarding fields are added for a first hop")
    func firstHop() {
        let result = ProxyHeaders.addingForwarded(
            ["Host": "app.example.com"],
            clientAddress: "203.0.113.7",
            proto: "https",
            host: "app.example.com"
        )
        #expect(result.values("X-Forwarded-For") == ["203.0.113.7"])
        #expect(result.values("X-Forwarded-Proto") == ["https"])
        #expect(result.values("X-Forwarded-Host") == ["app.example.com"])
        #expect(result.values("Forwarded") == [#"for=203.0.113.7;proto=https;host="app.example.com""#])
        #expect(result.first("Host") == "app.example.com")
    }

    @Test("X-Forwarded-For is appended to what the client sent")
    func appendsForwardedFor() {
        let result = ProxyHeaders.addingForwarded(
            ["X-Forwarded-For": "198.51.100.1", "x-forwarded-for": "198.51.100.2, 198.51.100.3"],
            clientAddress: "203.0.113.7",
            proto: "http",
            host: nil
        )
        #expect(result.values("X-Forwarded-For") == ["198.51.100.1, 198.51.100.2, 198.51.100.3, 203.0.113.7"])
        #expect(result.values("X-Forwarded-Host").isEmpty)
        #expect(result.values("Forwarded") == ["for=203.0.113.7;proto=http"])
    }

    @Test("X-Forwarded-Proto and X-Forwarded-Host from an earlier proxy are kept")
    func keepsEarlierProtoAndHost() {
        let result = ProxyHeaders.addingForwarded(
            ["X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example.com"],
            clientAddress: "10.0.0.9",
            proto: "http",
            host: "internal"
        )
        #expect(result.values("X-Forwarded-Proto") == ["https"])
        #expect(result.values("X-Forwarded-Host") == ["public.example.com"])
    }

    @Test("Forwarded is appended to what the client sent")
    func appendsForwarded() {
        let result = ProxyHeaders.addingForwarded(
            ["Forwarded": "for=198.51.100.1;proto=https"],
            clientAddress: "203.0.113.7",
            proto: "http",
            host: nil
        )
        #expect(result.values("Forwarded") == ["for=198.51.100.1;proto=https, for=203.0.113.7;proto=http"])
    }

    @Test("IPv6 nodes are quoted and bracketed in Forwarded (RFC 7239 §6)")
    func ipv6Forwarded() {
        let result = ProxyHeaders.addingForwarded([:], clientAddress: "2001:db8::17", proto: "https", host: "h")
        #expect(result.values("Forwarded") == [#"for="[2001:db8::17]";proto=https;host="h""#])
        #expect(result.values("X-Forwarded-For") == ["2001:db8::17"])
        #expect(ProxyHeaders.forwardedNode("::1") == #""[::1]""#)
        #expect(ProxyHeaders.forwardedNode("192.0.2.43") == "192.0.2.43")
    }

    @Test("an unknown client address is `unknown` (RFC 7239 §6.3)")
    func unknownClient() {
        let result = ProxyHeaders.addingForwarded([:], clientAddress: nil, proto: "http", host: nil)
        #expect(result.values("X-Forwarded-For") == ["unknown"])
        #expect(result.values("Forwarded") == ["for=unknown;proto=http"])
    }

    // MARK: The upstream upgrade request

    @Test("the upstream upgrade request carries a fresh key and one Connection/Upgrade")
    func upgradeRequest() {
        let headers = upgradeHeaders(keepExtensions: false)
        #expect(headers.values("Sec-WebSocket-Key") == [freshKey])
        #expect(headers.values("Sec-WebSocket-Version") == ["13"])
        #expect(headers.values("Connection") == ["Upgrade"])
        #expect(headers.values("Upgrade") == ["websocket"])
        #expect(headers.values("Keep-Alive").isEmpty)
        #expect(headers.values("Sec-WebSocket-Extensions").isEmpty)
        #expect(headers.values("Sec-WebSocket-Protocol") == ["chat, superchat"])
        #expect(headers.values("Host") == ["app.example.com"])
        #expect(headers.values("Origin") == ["https://app.example.com"])
        #expect(headers.values("Cookie") == ["session=abc"])
        #expect(headers.values("Authorization") == ["Bearer t"])
        #expect(headers.values("X-Forwarded-For") == ["203.0.113.7"])
        #expect(headers.values("X-Forwarded-Proto") == ["https"])
        #expect(headers.values("X-Forwarded-Host") == ["app.example.com"])
        #expect(headers.values("Forwarded") == [#"for=203.0.113.7;proto=https;host="app.example.com""#])
        // The request the backend gets is itself a valid upgrade.
        let check = WebSocketHandshake.validateUpgrade(
            method: "GET",
            versionMajor: 1,
            versionMinor: 1,
            headers: headers
        )
        #expect((try? check.get())?.key == freshKey)
    }

    @Test("extensions pass through only when kept")
    func extensionsKept() {
        let headers = upgradeHeaders(keepExtensions: true)
        #expect(headers.values("Sec-WebSocket-Extensions") == ["permessage-deflate; client_max_window_bits"])
        #expect(headers.values("Sec-WebSocket-Key") == [freshKey])
        #expect(headers.values("Connection") == ["Upgrade"])
    }

    @Test("a body length, a stale accept and client-listed fields do not reach the backend")
    func dropsClientOnlyFields() {
        var client = clientUpgrade
        client.replace("Connection", "Upgrade, X-Hop")
        client.add("X-Hop", "secret")
        client.add("Content-Length", "0")
        client.add("Sec-WebSocket-Accept", "bogus")
        client.add("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")
        client.add("sec-websocket-version", "8")
        client.add("TE", "trailers")
        client.add("Proxy-Connection", "keep-alive")
        client.add("Transfer-Encoding", "chunked")
        let headers = upgradeHeaders(client, keepExtensions: true)
        #expect(headers.values("X-Hop").isEmpty)
        #expect(headers.values("Content-Length").isEmpty)
        #expect(headers.values("Sec-WebSocket-Accept").isEmpty)
        #expect(headers.values("TE").isEmpty)
        #expect(headers.values("Proxy-Connection").isEmpty)
        #expect(headers.values("Transfer-Encoding").isEmpty)
        #expect(headers.values("Sec-WebSocket-Key") == [freshKey])
        #expect(headers.values("Sec-WebSocket-Version") == ["13"])
        #expect(headers.values("Connection") == ["Upgrade"])
        #expect(headers.values("Upgrade") == ["websocket"])
    }

    @Test("a forwarded chain from the client is extended")
    func upgradeExtendsChain() {
        var client = clientUpgrade
        client.add("X-Forwarded-For", "198.51.100.1")
        let headers = upgradeHeaders(client, keepExtensions: false, clientAddress: "::1")
        #expect(headers.values("X-Forwarded-For") == ["198.51.100.1, ::1"])
        #expect(headers.values("Forwarded") == [#"for="[::1]";proto=https;host="app.example.com""#])
    }

    // MARK: HTTPHeaderList

    @Test("header lists compare names case-insensitively on lookup and split lists")
    func headerList() {
        var list: HTTPHeaderList = ["Accept": "a, b", "accept": " ,c ,", "X": "1"]
        #expect(list.values("ACCEPT") == ["a, b", " ,c ,"])
        #expect(list.tokens("accept") == ["a", "b", "c"])
        #expect(list.containsToken("C", in: "Accept"))
        #expect(!list.containsToken("d", in: "Accept"))
        #expect(list.first("x") == "1")
        list.replace("x", "2")
        #expect(list.fields.last?.name == "x")
        #expect(list.values("X") == ["2"])
        list.remove("ACCEPT")
        #expect(list.fields.count == 1)
        #expect(Array(list.map(\.value)) == ["2"])
    }

    @Test(
        "ASCII case is ignored, nothing else",
        arguments: [
            ("Upgrade", "upgrade", true), ("SEC-WEBSOCKET-KEY", "sec-websocket-key", true),
            ("upgrade", "upgrades", false), ("@", "`", false), ("[", "{", false), ("ü", "Ü", false),
            ("", "", true), ("a-b_c", "A-B_C", true), ("a", "b", false),
        ]
    )
    func asciiCaseInsensitive(left: String, right: String, equal: Bool) {
        #expect(left.equalsIgnoringASCIICase(right) == equal)
        #expect(right.equalsIgnoringASCIICase(left) == equal)
    }

    @Test("list elements are trimmed of spaces and tabs, empty ones skipped")
    func listElements() {
        let list: HTTPHeaderList = [
            "Connection": "\t keep-alive ,,\tUpgrade\t, ", "connection": "", "Other": "Upgrade",
        ]
        #expect(list.tokens("connection") == ["keep-alive", "Upgrade"])
        #expect(list.containsToken("UPGRADE", in: "Connection"))
        #expect(list.containsToken("keep-alive", in: "connection"))
        #expect(!list.containsToken("upgrad", in: "connection"))
        #expect(!list.containsToken("", in: "connection"))
        #expect(!list.containsToken("upgrade", in: "missing"))
        let single: HTTPHeaderList = ["Upgrade": "websocket"]
        #expect(single.first("UPGRADE") == "websocket")
        #expect(Substring(" \t a b \t").trimmingSpaces() == "a b")
        #expect(Substring(" \t ").trimmingSpaces() == "")
    }
}
