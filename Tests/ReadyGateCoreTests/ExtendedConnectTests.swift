import Testing

@testable import ReadyGateCore

/// RFC 8441 §5's example request, with a subprotocol offer.
private let validFields: [(name: String, value: String)] = [
    (":method", "CONNECT"),
    (":protocol", "websocket"),
    (":scheme", "http"),
    (":path", "/chat?room=1"),
    (":authority", "server.example.com"),
    ("sec-websocket-protocol", "chat, superchat"),
    ("sec-websocket-extensions", "permessage-deflate"),
    ("sec-websocket-version", "13"),
    ("origin", "http://www.example.com"),
]

private func fields(
    replacing name: String? = nil,
    with value: String? = nil,
    adding extra: [(name: String, value: String)] = []
) -> [(name: String, value: String)] {
    var list = validFields.filter { $0.name != name }
    if let name, let value { list.append((name, value)) }
    list.append(contentsOf: extra)
    return list
}

private func rejection(_ fields: [(name: String, value: String)], endStream: Bool = false) -> UpgradeRejection? {
    if case .failure(let rejection) = ExtendedConnect.validate(fields, endStream: endStream) { return rejection }
    return nil
}

struct ExtendedConnectTests {
    @Test func aValidRequestBecomesAnUpgradeSource() throws {
        let request = try ExtendedConnect.validate(validFields, endStream: false).get()
        #expect(request.path == "/chat?room=1")
        #expect(request.headers.fields.first?.name == "host")
        #expect(request.headers.first("host") == "server.example.com")
        #expect(request.headers.first("origin") == "http://www.example.com")
        #expect(request.headers.fields.allSatisfy { !$0.name.hasPrefix(":") })
        #expect(request.upgrade.subprotocols == ["chat", "superchat"])
        #expect(request.upgrade.extensions == ["permessage-deflate"])
        #expect(request.upgrade.key.isEmpty)
    }

    @Test func itIsRecognisedByItsProtocolPseudoHeader() {
        #expect(ExtendedConnect.isExtendedConnect(validFields))
        #expect(!ExtendedConnect.isExtendedConnect(fields(replacing: ":protocol")))
    }

    @Test func aHostFieldIsReplacedByTheAuthority() throws {
        let request = try ExtendedConnect.validate(fields(adding: [("host", "other.example")]), endStream: false).get()
        #expect(request.headers.values("host") == ["server.example.com"])
    }

    @Test func anotherProtocolIsNotImplemented() throws {
        #expect(rejection(fields(replacing: ":protocol", with: "connect-udp"))?.status == 501)
        let caseInsensitive = fields(replacing: ":protocol", with: "WebSocket")
        #expect(try ExtendedConnect.validate(caseInsensitive, endStream: false).get().path == "/chat?room=1")
    }

    @Test(arguments: [
        (":method", "GET"), (":scheme", ""), (":path", ""), (":path", "chat"), (":authority", ""),
    ])
    func aMalformedPseudoHeaderIsABadRequest(name: String, value: String) {
        #expect(rejection(fields(replacing: name, with: value))?.status == 400)
    }

    @Test(arguments: [":scheme", ":path", ":authority"])
    func aMissingPseudoHeaderIsABadRequest(name: String) {
        #expect(rejection(fields(replacing: name))?.status == 400)
    }

    @Test func aRepeatedPseudoHeaderIsABadRequest() {
        #expect(rejection(fields(adding: [(":path", "/other")]))?.reason.contains("repeated") == true)
    }

    @Test func endingTheStreamIsABadRequest() {
        #expect(rejection(validFields, endStream: true)?.status == 400)
    }

    @Test func aMissingOrOtherVersionAsksFor13() {
        let missing = rejection(fields(replacing: "sec-websocket-version"))
        #expect(missing?.status == 426)
        #expect(missing?.versionHint == true)
        #expect(rejection(fields(replacing: "sec-websocket-version", with: "8"))?.status == 426)
    }

    @Test func aBodyIsABadRequest() {
        #expect(rejection(fields(adding: [("content-length", "5")]))?.status == 400)
        #expect(rejection(fields(adding: [("content-length", "0")])) == nil)
    }

    @Test(arguments: ["connection", "upgrade", "sec-websocket-key", "transfer-encoding", "keep-alive"])
    func http1UpgradeFieldsAreABadRequest(name: String) {
        #expect(rejection(fields(adding: [(name, "x")]))?.status == 400)
    }
}
