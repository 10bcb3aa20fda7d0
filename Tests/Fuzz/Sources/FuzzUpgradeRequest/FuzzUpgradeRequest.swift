// libFuzzer target: the upgrade-request checks (RFC 6455 §4.2.1) on an `HTTPRequestHead` built from
// the input.
//
// Input: text. The first line is `METHOD URI HTTP/x.y` (any of the three may be garbage: a method
// NIO does not know becomes a raw method, a version that does not parse becomes 1.1), every other
// line is `name: value`. Lines end with `\n`; a `\r` before it is dropped.
//
// Checked: validation never crashes; an accepted request really has one Host, Connection: Upgrade,
// version 13 and a key of 16 base64 bytes, and the upgrade request built from it for the backend
// (`ProxyHeaders.upstreamUpgradeHeaders`) passes the same validation with the same Host; a rejection
// is 400, or 426 with the version hint; removing hop-by-hop fields never removes Host or
// Content-Length; and the answers do not change when the header names' ASCII case is flipped (names
// are case-insensitive, RFC 9110 §5.1).
import NIOCore
import NIOHTTP1
import ReadyGateCore

let upstreamKey = "AQIDBAUGBwgJCgsMDQ4PEA=="

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

func makeHead(_ text: Substring) -> HTTPRequestHead {
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
        line.hasSuffix("\r") ? line.dropLast() : line
    }
    let requestLine = lines.isEmpty ? [] : lines.removeFirst().split(separator: " ", maxSplits: 2)
    let method = HTTPMethod(rawValue: requestLine.first.map(String.init) ?? "GET")
    let uri = requestLine.count > 1 ? String(requestLine[1]) : "/"
    var version = HTTPVersion.http1_1
    if requestLine.count > 2 {
        let digits = requestLine[2].drop { $0 != "/" }.dropFirst().split(separator: ".")
        if digits.count == 2, let major = Int(digits[0]), let minor = Int(digits[1]), (0...99).contains(major),
            (0...99).contains(minor)
        {
            version = HTTPVersion(major: major, minor: minor)
        }
    }
    var headers = HTTPHeaders()
    for line in lines {
        // NIO's parser takes only token characters in a name; `HTTPHeaders` traps on non-ASCII ones.
        guard let colon = line.firstIndex(of: ":"), line[..<colon].allSatisfy(\.isASCII) else { continue }
        headers.add(name: String(line[..<colon]), value: String(line[line.index(after: colon)...]))
    }
    return HTTPRequestHead(version: version, method: method, uri: uri, headers: headers)
}

/// The proxy's conversion (`HTTPHeaderList(_: HTTPHeaders)` in ReadyGateProxy), spelled out.
func headerList(_ headers: HTTPHeaders) -> HTTPHeaderList {
    HTTPHeaderList(headers.map { (name: $0.name, value: $0.value) })
}

func validate(_ head: HTTPRequestHead, _ headers: HTTPHeaderList) -> Result<ClientUpgradeRequest, UpgradeRejection> {
    WebSocketHandshake.validateUpgrade(
        method: head.method.rawValue,
        versionMajor: head.version.major,
        versionMinor: head.version.minor,
        headers: headers
    )
}

func flippingASCIICase(_ name: String) -> String {
    String(
        decoding: name.utf8.map { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"): byte ^ 0x20
            default: byte
            }
        },
        as: UTF8.self
    )
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUpgradeRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let head = makeHead(Substring(text))
    let headers = headerList(head.headers)
    let isUpgrade = WebSocketHandshake.isWebSocketUpgrade(headers)
    let result = validate(head, headers)

    switch result {
    case .success(let request):
        check(head.method == .GET, "accepted a \(head.method) upgrade")
        check(
            head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1),
            "accepted \(head.version)"
        )
        check(headers.values("host").count == 1, "accepted without exactly one Host")
        check(headers.containsToken("upgrade", in: "connection"), "accepted without Connection: Upgrade")
        check(headers.tokens("sec-websocket-version") == ["13"], "accepted another version")
        check(WebSocketHandshake.isValidKey(request.key), "accepted key \(request.key)")
        check(WebSocketHandshake.acceptValue(forKey: request.key).utf8.count == 28, "accept value length")
        check(request.extensions == headers.values("sec-websocket-extensions"), "extensions changed")
        check(request.subprotocols.allSatisfy { !$0.isEmpty }, "empty subprotocol")
        // The request ReadyGate sends the backend must itself be a valid upgrade with the client's Host.
        for keepExtensions in [false, true] {
            let upstream = ProxyHeaders.upstreamUpgradeHeaders(
                client: headers,
                key: upstreamKey,
                keepExtensions: keepExtensions,
                clientAddress: "192.0.2.7",
                proto: "http"
            )
            let forwarded = validate(head, upstream)
            guard case .success(let sent) = forwarded else {
                fatalError(
                    "invariant violated: the backend's upgrade request is not valid: \(forwarded)\n\(upstream.fields)"
                )
            }
            check(sent.key == upstreamKey, "the backend gets key \(sent.key)")
            check(keepExtensions || sent.extensions.isEmpty, "extensions kept: \(sent.extensions)")
            check(upstream.values("host") == headers.values("host"), "Host changed: \(upstream.values("host"))")
        }
    case .failure(let rejection):
        check(rejection.status == 400 || rejection.status == 426, "status \(rejection.status)")
        check(rejection.versionHint == (rejection.status == 426), "version hint on \(rejection.status)")
        check(!rejection.reason.isEmpty && rejection.reason.utf8.count <= 123, "reason \(rejection.reason)")
    }

    // Whatever `Connection` nominates, removing hop-by-hop fields keeps the request's Host and its
    // Content-Length: without them the backend would read a different request (RFC 9112 §3.2, §6.3).
    let stripped = ProxyHeaders.strippingHopByHop(headers)
    check(stripped.values("host") == headers.values("host"), "hop-by-hop stripping removed Host")
    check(
        stripped.values("content-length") == headers.values("content-length"),
        "hop-by-hop stripping removed Content-Length"
    )

    let flipped = HTTPHeaderList(headers.fields.map { (name: flippingASCIICase($0.name), value: $0.value) })
    check(WebSocketHandshake.isWebSocketUpgrade(flipped) == isUpgrade, "Upgrade detection depends on name case")
    check(validate(head, flipped) == result, "validation depends on header name case")
    return 0
}
