import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

/// The sample nonce of RFC 6455 §1.3 and its accept value.
private let sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="
private let sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/// A valid upgrade request's headers, as in RFC 6455 §1.2.
private let validHeaders: HTTPHeaderList = [
    "Host": "server.example.com",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": sampleKey,
    "Origin": "http://example.com",
    "Sec-WebSocket-Protocol": "chat, superchat",
    "Sec-WebSocket-Version": "13",
]

/// `validHeaders` with the fields called `names` removed and the `extra` fields added.
private func headers(without names: [String] = [], adding extra: [(String, String)] = []) -> HTTPHeaderList {
    var list = validHeaders
    for name in names { list.remove(name) }
    for (name, value) in extra { list.add(name, value) }
    return list
}

private func validate(
    method: String = "GET",
    major: Int = 1,
    minor: Int = 1,
    _ headers: HTTPHeaderList = validHeaders
) -> Result<ClientUpgradeRequest, UpgradeRejection> {
    WebSocketHandshake.validateUpgrade(method: method, versionMajor: major, versionMinor: minor, headers: headers)
}

/// The rejection, or nil when the request was accepted.
private func rejection(_ result: Result<ClientUpgradeRequest, UpgradeRejection>) -> UpgradeRejection? {
    if case .failure(let rejection) = result { return rejection }
    return nil
}

@Suite("WebSocketHandshake")
struct HandshakeTests {
    // MARK: Accept value

    @Test("the RFC 6455 §1.3 example")
    func rfcExample() {
        #expect(WebSocketHandshake.acceptValue(forKey: sampleKey) == sampleAccept)
        #expect(WebSocketHandshake.guid == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    }

    @Test("another known pair (RFC 6455 §4.2.2 style)")
    func otherKnownPair() {
        // Computed independently: base64(SHA-1("x3JJHMbDL1EzLkh9GBhXDw==" + GUID)).
        #expect(WebSocketHandshake.acceptValue(forKey: "x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
    }

    @Test("fresh keys are valid, 24 characters, and differ")
    func freshKeys() {
        var random = SplitMix64(seed: 11)
        let keys = (0..<50).map { _ in WebSocketHandshake.makeKey(using: &random) }
        for key in keys {
            #expect(key.utf8.count == 24)
            #expect(WebSocketHandshake.isValidKey(key))
        }
        #expect(Set(keys).count == keys.count)
    }

    @Test(
        "key validity",
        arguments: [
            (sampleKey, true),
            ("AAAAAAAAAAAAAAAAAAAAAA==", true),
            ("", false),
            ("short", false),
            ("dGhlIHNhbXBsZSBub25jZQ", false),
            ("dGhlIHNhbXBsZSBub25jZQ===", false),
            ("dGhlIHNhbXBsZSBub25jZQ!!", false),
            ("AAAAAAAAAAAAAAAAAAAAAAAA", false),  // 18 bytes
            ("AAAAAAAAAAAAAAAAAAAAA===", false),
        ]
    )
    func keyValidity(_ key: String, _ valid: Bool) {
        #expect(WebSocketHandshake.isValidKey(key) == valid)
    }

    // MARK: Validating the client's upgrade

    @Test("a valid request is accepted with its key and subprotocols")
    func validRequest() throws {
        let request = try validate().get()
        #expect(request.key == sampleKey)
        #expect(request.subprotocols == ["chat", "superchat"])
        #expect(request.extensions.isEmpty)
    }

    @Test("a request that is a WebSocket upgrade is recognised")
    func isUpgrade() {
        #expect(WebSocketHandshake.isWebSocketUpgrade(validHeaders))
        #expect(WebSocketHandshake.isWebSocketUpgrade(["Upgrade": "WebSocket"]))
        #expect(WebSocketHandshake.isWebSocketUpgrade(["upgrade": "h2c, websocket"]))
        #expect(!WebSocketHandshake.isWebSocketUpgrade(["Upgrade": "h2c"]))
        #expect(!WebSocketHandshake.isWebSocketUpgrade(["Host": "x"]))
    }

    @Test("header names and tokens are case-insensitive; lists may hold more tokens")
    func caseInsensitive() throws {
        let request = try validate([
            "host": "h", "upgrade": "WebSocket", "connection": "keep-alive, UPGRADE",
            "sec-websocket-key": " \(sampleKey) ", "sec-websocket-version": "13",
            "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        ]).get()
        #expect(request.key == sampleKey)
        #expect(request.subprotocols.isEmpty)
        #expect(request.extensions == ["permessage-deflate; client_max_window_bits"])
    }

    @Test("later HTTP versions are accepted", arguments: [(1, 1), (1, 2), (2, 0)])
    func httpVersions(_ major: Int, _ minor: Int) {
        #expect(rejection(validate(major: major, minor: minor)) == nil)
    }

    @Test("a zero Content-Length is not a body")
    func zeroContentLength() {
        #expect(rejection(validate(headers(adding: [("Content-Length", "0")]))) == nil)
    }

    @Test(
        "bad requests are answered 400",
        arguments: [
            ("POST", headers()),
            ("get", headers()),
            ("HEAD", headers()),
        ] as [(String, HTTPHeaderList)]
    )
    func wrongMethod(_ method: String, _ list: HTTPHeaderList) throws {
        let rejected = try #require(rejection(validate(method: method, list)))
        #expect(rejected.status == 400)
        #expect(!rejected.versionHint)
    }

    @Test("HTTP/1.0 is answered 400", arguments: [(1, 0), (0, 9)])
    func http10(_ major: Int, _ minor: Int) throws {
        let rejected = try #require(rejection(validate(major: major, minor: minor)))
        #expect(rejected.status == 400)
        #expect(rejected.reason.contains("HTTP/1.1"))
    }

    static let badHeaderCases: [(String, HTTPHeaderList)] = [
        ("missing Host", headers(without: ["Host"])),
        ("duplicate Host", headers(adding: [("Host", "other.example.com")])),
        ("missing Connection", headers(without: ["Connection"])),
        ("Connection without upgrade", headers(without: ["Connection"], adding: [("Connection", "keep-alive")])),
        ("missing key", headers(without: ["Sec-WebSocket-Key"])),
        ("short key", headers(without: ["Sec-WebSocket-Key"], adding: [("Sec-WebSocket-Key", "c2hvcnQ=")])),
        ("empty key", headers(without: ["Sec-WebSocket-Key"], adding: [("Sec-WebSocket-Key", "")])),
        (
            "not base64",
            headers(without: ["Sec-WebSocket-Key"], adding: [("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!!!")])
        ),
        ("duplicate key", headers(adding: [("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")])),
        ("same key twice", headers(adding: [("Sec-WebSocket-Key", sampleKey)])),
        (
            "two keys in one field",
            headers(without: ["Sec-WebSocket-Key"], adding: [("Sec-WebSocket-Key", "\(sampleKey), \(sampleKey)")])
        ),
        ("body by length", headers(adding: [("Content-Length", "5")])),
        ("body by chunks", headers(adding: [("Transfer-Encoding", "chunked")])),
    ]

    @Test("bad headers are answered 400", arguments: badHeaderCases)
    func badHeaders(_ name: String, _ list: HTTPHeaderList) throws {
        let rejected = try #require(rejection(validate(list)), "\(name)")
        #expect(rejected.status == 400, "\(name)")
        #expect(!rejected.versionHint, "\(name)")
        #expect(!rejected.reason.isEmpty)
    }

    @Test(
        "an unsupported version is answered 426 with a version hint",
        arguments: [
            headers(without: ["Sec-WebSocket-Version"], adding: [("Sec-WebSocket-Version", "8")]),
            headers(without: ["Sec-WebSocket-Version"]),
            headers(without: ["Sec-WebSocket-Version"], adding: [("Sec-WebSocket-Version", "13, 8")]),
            headers(without: ["Sec-WebSocket-Version"], adding: [("Sec-WebSocket-Version", "14")]),
        ]
    )
    func unsupportedVersion(_ list: HTTPHeaderList) throws {
        let rejected = try #require(rejection(validate(list)))
        #expect(rejected.status == 426)
        #expect(rejected.versionHint)
    }

    @Test("a rejection's default has no version hint")
    func rejectionDefault() {
        #expect(!UpgradeRejection(status: 400, reason: "x").versionHint)
    }

    // MARK: Subprotocols

    @Test(
        "the first offered subprotocol that is configured is chosen",
        arguments: [
            (["chat", "superchat"], ["superchat", "chat"], "chat"),
            (["v1", "superchat"], ["superchat", "chat"], "superchat"),
            (["v1", "v2"], ["chat"], nil),
            ([], ["chat"], nil),
            (["chat"], [], nil),
            (["Chat"], ["chat"], nil),
        ] as [([String], [String], String?)]
    )
    func chooseSubprotocol(_ offered: [String], _ configured: [String], _ expected: String?) {
        #expect(WebSocketHandshake.chooseSubprotocol(offered: offered, configured: configured) == expected)
    }

    // MARK: The backend's answer

    private static let goodAnswer: HTTPHeaderList = [
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": sampleAccept,
    ]

    @Test("a good answer passes")
    func goodAnswer() {
        #expect(
            WebSocketHandshake.verifyUpstreamAnswer(
                headers: Self.goodAnswer,
                sentKey: sampleKey,
                offeredSubprotocols: []
            )
                == nil
        )
        let relaxed: HTTPHeaderList = [
            "upgrade": "WebSocket", "connection": "keep-alive, upgrade", "sec-websocket-accept": " \(sampleAccept) ",
        ]
        #expect(
            WebSocketHandshake.verifyUpstreamAnswer(headers: relaxed, sentKey: sampleKey, offeredSubprotocols: [])
                == nil
        )
    }

    @Test("an offered subprotocol may be chosen")
    func offeredSubprotocol() {
        var answer = Self.goodAnswer
        answer.add("Sec-WebSocket-Protocol", "superchat")
        let result = WebSocketHandshake.verifyUpstreamAnswer(
            headers: answer,
            sentKey: sampleKey,
            offeredSubprotocols: ["chat", "superchat"]
        )
        #expect(result == nil)
    }

    @Test(
        "bad answers are refused",
        arguments: [
            ("wrong accept", [("Sec-WebSocket-Accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")], ["Sec-WebSocket-Accept"]),
            (
                "accept of another key", [("Sec-WebSocket-Accept", "HSmrc0sMlYUkAGmm5OPpG2HaGWk=")],
                ["Sec-WebSocket-Accept"]
            ),
            ("missing accept", [], ["Sec-WebSocket-Accept"]),
            ("missing upgrade", [], ["Upgrade"]),
            ("wrong upgrade", [("Upgrade", "h2c")], ["Upgrade"]),
            ("missing connection", [], ["Connection"]),
            ("wrong connection", [("Connection", "keep-alive")], ["Connection"]),
            ("unoffered subprotocol", [("Sec-WebSocket-Protocol", "superchat")], []),
        ] as [(String, [(String, String)], [String])]
    )
    func badAnswers(_ name: String, _ extra: [(String, String)], _ removed: [String]) {
        var answer = Self.goodAnswer
        for field in removed { answer.remove(field) }
        for (field, value) in extra { answer.add(field, value) }
        let problem = WebSocketHandshake.verifyUpstreamAnswer(
            headers: answer,
            sentKey: sampleKey,
            offeredSubprotocols: ["chat"]
        )
        #expect(problem != nil, "\(name)")
    }

    @Test("a subprotocol chosen when none was offered is refused, and named")
    func subprotocolNotOffered() throws {
        var answer = Self.goodAnswer
        answer.add("Sec-WebSocket-Protocol", "chat")
        let problem = try #require(
            WebSocketHandshake.verifyUpstreamAnswer(headers: answer, sentKey: sampleKey, offeredSubprotocols: [])
        )
        #expect(problem.contains("chat"))
    }

    @Test("a replacement backend's 101 agrees with the mirrored one: same subprotocol and extensions, spacing aside")
    func replayAnswerAgrees() {
        let mirrored: HTTPHeaderList = [
            "Sec-WebSocket-Protocol": "chat",
            "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits=15; server_no_context_takeover",
        ]
        let replacement: HTTPHeaderList = [
            "sec-websocket-extensions": "Permessage-Deflate;client_max_window_bits = 15;Server_No_Context_Takeover",
            "sec-websocket-protocol": " chat ",
        ]
        #expect(WebSocketHandshake.replayAnswerProblem(mirrored: mirrored, replacement: replacement) == nil)
        #expect(WebSocketHandshake.replayAnswerProblem(mirrored: [:], replacement: [:]) == nil)
    }

    @Test("a replacement backend's 101 that differs in extensions or subprotocol is a problem, saying what it chose")
    func replayAnswerDiffers() throws {
        let deflate: HTTPHeaderList = ["Sec-WebSocket-Extensions": "permessage-deflate"]
        let none: HTTPHeaderList = [:]
        let narrower: HTTPHeaderList = ["Sec-WebSocket-Extensions": "permessage-deflate; server_max_window_bits=10"]
        let dropped = try #require(WebSocketHandshake.replayAnswerProblem(mirrored: deflate, replacement: none))
        #expect(dropped.contains("extensions none"))
        let added = try #require(WebSocketHandshake.replayAnswerProblem(mirrored: none, replacement: deflate))
        #expect(added.contains("extensions permessage-deflate"))
        let window = try #require(WebSocketHandshake.replayAnswerProblem(mirrored: deflate, replacement: narrower))
        #expect(window.contains("server_max_window_bits=10"))
        let chat: HTTPHeaderList = ["Sec-WebSocket-Protocol": "chat"]
        let other: HTTPHeaderList = ["Sec-WebSocket-Protocol": "superchat"]
        let protocolProblem = try #require(WebSocketHandshake.replayAnswerProblem(mirrored: chat, replacement: other))
        #expect(protocolProblem.contains("subprotocol superchat, not chat"))
        #expect(WebSocketHandshake.replayAnswerProblem(mirrored: chat, replacement: none) != nil)
        // Short enough for a close frame's reason with the "upstream protocol error: " prefix (123 bytes).
        #expect("upstream protocol error: \(window)".utf8.count <= 123)
    }
}
