// libFuzzer target: the whole HTTP/1.1 entry path. Raw bytes go into the pipeline every accepted
// connection gets (`ReadyGateServer.configureHTTP1`: NIO's request decoder, the response encoder
// and `HTTPEntryHandler`) on an `EmbeddedChannel`: plain requests, upgrades, garbage. Plain
// requests reach a fake backend (the pool's connector is swapped for `EmbeddedChannel`s, hence the
// `@testable` import) that answers each `200` with a 2-byte body. The embedded loop cannot make
// sockets, so a valid upgrade is answered `502` before a session starts.
//
// Input: two split bytes, then the client's bytes. They are written whole on one connection, then
// on a fresh one in three chunks cut where the split bytes say; after each write the loop runs and
// the backend answers until nothing moves. Then the clock passes every timeout and the channel closes.
//
// Checked: nothing crashes; both runs get the same answers before the timeouts, byte for byte
// (everything here is deterministic, so how the bytes were cut into reads must not matter); what the proxy writes is a
// sequence of complete HTTP/1.1 responses, each with a `Content-Length` that matches its body, and
// nothing follows one that says `Connection: close`; every request the backend gets is HTTP/1.1
// with one Host, and framing (Content-Length or chunked, not both) that delimits exactly the body
// sent after it; when the connection is gone, the connection and session registries are empty.
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore

@testable import ReadyGateProxy

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

let clientAddress = try! SocketAddress(ipAddress: "192.0.2.7", port: 40_000)

/// Splits the proxy's output into responses and checks each; returns how many there were.
func checkResponses(_ bytes: [UInt8]) -> Int {
    var rest = bytes[...]
    var count = 0
    var closed = false
    while !rest.isEmpty {
        check(!closed, "bytes after a Connection: close response: \(String(decoding: rest, as: UTF8.self))")
        guard let headEnd = firstIndex(of: Array("\r\n\r\n".utf8), in: rest) else {
            fatalError("invariant violated: incomplete response head: \(String(decoding: rest, as: UTF8.self))")
        }
        let head = String(decoding: rest[rest.startIndex..<headEnd], as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines.removeFirst()
        check(statusLine.hasPrefix("HTTP/1.1 ") || statusLine.hasPrefix("HTTP/1.0 "), "status line \(statusLine)")
        let status = Int(statusLine.dropFirst(9).prefix(3)) ?? 0
        check((200...599).contains(status), "status \(status)")
        var length: Int?
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { fatalError("invariant violated: header line \(line)") }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: " ")
            if name == "content-length" {
                check(length == nil, "two Content-Length fields")
                length = Int(value)
            }
            if name == "connection" && value.lowercased() == "close" { closed = true }
        }
        guard let length else { fatalError("invariant violated: response without Content-Length: \(head)") }
        let bodyStart = headEnd + 4
        check(rest.endIndex - bodyStart >= length, "body shorter than its Content-Length \(length)")
        rest = rest[(bodyStart + length)...]
        count += 1
    }
    return count
}

func firstIndex(of needle: [UInt8], in haystack: ArraySlice<UInt8>) -> Int? {
    guard haystack.count >= needle.count else { return nil }
    var index = haystack.startIndex
    while index + needle.count <= haystack.endIndex {
        if haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
        index += 1
    }
    return nil
}

extension Substring {
    func trimmingCharacters(in set: Character) -> Substring {
        drop { $0 == set }.reversed().drop { $0 == set }.reversed().reduce(into: "") { $0.append($1) }
    }
}

func drainOutbound(_ channel: EmbeddedChannel, into output: inout [UInt8]) {
    while let chunk = try? channel.readOutbound(as: ByteBuffer.self) {
        output.append(contentsOf: chunk.readableBytesView)
    }
}

/// The backend: every connection the pool opens is an `EmbeddedChannel` on the client's loop, fed
/// `HTTPClientRequestPart`s by `UpstreamHTTPHandler` (what NIO's request encoder would write).
final class FakeBackend: Sendable {
    let channels: NIOLoopBoundBox<[EmbeddedChannel]>
    /// Per channel: the head of the request in progress and the body bytes seen so far.
    let requests: NIOLoopBoundBox<[ObjectIdentifier: (head: HTTPRequestHead, bodyBytes: Int)]>
    let loop: EmbeddedEventLoop

    init(loop: EmbeddedEventLoop) {
        self.loop = loop
        channels = NIOLoopBoundBox([], eventLoop: loop)
        requests = NIOLoopBoundBox([:], eventLoop: loop)
    }

    func connector() -> UpstreamPool.Connector {
        { [self] eventLoop, handler in
            let channel = EmbeddedChannel(loop: loop)
            do {
                try channel.pipeline.syncOperations.addHandler(handler)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
            channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 8000), promise: nil)
            channels.value.append(channel)
            return eventLoop.makeSucceededFuture(channel)
        }
    }

    /// Reads what the proxy sent; answers every complete request `200` with a 2-byte body. Returns
    /// whether anything happened.
    func serve() -> Bool {
        var progress = false
        for channel in channels.value where channel.isActive {
            let id = ObjectIdentifier(channel)
            while let part = try? channel.readOutbound(as: HTTPClientRequestPart.self) {
                progress = true
                switch part {
                case .head(let head):
                    check(requests.value[id] == nil, "a request head before the last request ended")
                    requests.value[id] = (head, 0)
                case .body(.byteBuffer(let buffer)):
                    check(requests.value[id] != nil, "body without a head")
                    requests.value[id]!.bodyBytes += buffer.readableBytes
                case .body(.fileRegion):
                    fatalError("invariant violated: a file region sent upstream")
                case .end:
                    guard let request = requests.value.removeValue(forKey: id) else {
                        fatalError("invariant violated: end without a head")
                    }
                    checkForwarded(request.head, bodyBytes: request.bodyBytes)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Length", value: "2")
                    let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)
                    _ = try? channel.writeInbound(HTTPClientResponsePart.head(head))
                    _ = try? channel.writeInbound(HTTPClientResponsePart.body(ByteBuffer(string: "ok")))
                    _ = try? channel.writeInbound(HTTPClientResponsePart.end(nil))
                    channel.pipeline.fireChannelReadComplete()
                }
            }
        }
        return progress
    }
}

/// A request as it reaches the backend must be one the backend reads as the proxy meant: one Host
/// (RFC 9112 §3.2) and framing that delimits exactly the body that follows (RFC 9112 §6.3).
func checkForwarded(_ head: HTTPRequestHead, bodyBytes: Int) {
    let text = "\(head.method) \(head.uri) \(head.headers)"
    check(head.version == .http1_1, "forwarded as \(head.version): \(text)")
    check(head.headers["host"].count == 1, "forwarded with \(head.headers["host"].count) Host fields: \(text)")
    let lengths = head.headers["content-length"]
    let chunked = head.headers["transfer-encoding"].contains { $0.lowercased() == "chunked" }
    check(!(chunked && !lengths.isEmpty), "forwarded with Content-Length and chunked: \(text)")
    check(lengths.count <= 1, "forwarded with \(lengths.count) Content-Length fields: \(text)")
    if let length = lengths.first {
        // Optional whitespace around a field value is not part of it (RFC 9110 §5.5); NIO keeps it.
        check(
            Int(Substring(length).trimmingCharacters(in: " ").trimmingCharacters(in: "\t")) == bodyBytes,
            "Content-Length \(length) but \(bodyBytes) body bytes: \(text)"
        )
    } else if !chunked {
        check(bodyBytes == 0, "\(bodyBytes) body bytes without framing: \(text)")
    }
}

/// Feeds `stream` to a fresh connection in pieces ending at `cuts`, the backend answering each
/// request, then lets every timer fire and closes. Returns what the proxy wrote before the timers
/// fired, and everything it wrote before the close.
func run(_ stream: UnsafeBufferPointer<UInt8>, cuts: [Int]) -> (beforeTimers: [UInt8], all: [UInt8]) {
    let loop = EmbeddedEventLoop()
    let backend = FakeBackend(loop: loop)
    var environment = ProxyEnvironment(
        settings: ReadyGateSettings(),
        logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    )
    environment.httpPools = UpstreamPools(makeConnector: { _ in backend.connector() })
    let channel = EmbeddedChannel(loop: loop)
    try! ReadyGateServer.configureHTTP1(channel: channel, environment: environment)
    try! channel.connect(to: clientAddress).wait()
    var output: [UInt8] = []
    func settle() {
        var rounds = 0
        repeat {
            loop.run()
            drainOutbound(channel, into: &output)
            rounds += 1
        } while backend.serve() && rounds < 1000
    }
    var start = 0
    for end in cuts + [stream.count] where end >= start {
        guard channel.isActive else { break }
        if end > start {
            var buffer = channel.allocator.buffer(capacity: end - start)
            buffer.writeBytes(UnsafeBufferPointer(rebasing: stream[start..<end]))
            do {
                try channel.writeInbound(buffer)
            } catch {
                // NIO's decoder rethrows a parse error here, after the handler has answered it.
            }
            start = end
        }
        settle()
    }
    let beforeTimers = output
    let longest = max(environment.settings.httpIdleTimeoutMs, environment.settings.httpHeaderTimeoutMs)
    loop.advanceTime(by: .milliseconds(Int64(longest) + 1))
    settle()

    _ = try? channel.finish(acceptAlreadyClosed: true)
    settle()
    for upstream in backend.channels.value { _ = try? upstream.finish(acceptAlreadyClosed: true) }
    loop.run()
    check(environment.httpConnections.count == 0, "\(environment.httpConnections.count) HTTP connections left")
    check(environment.sessions.count == 0, "\(environment.sessions.count) sessions left")
    try? loop.syncShutdownGracefully()
    return (beforeTimers, output)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPEntry(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let stream = UnsafeBufferPointer(rebasing: input[2...])
    let first = Int(input[0]) % (stream.count + 1)
    let second = Int(input[1]) % (stream.count + 1)

    let whole = run(stream, cuts: [])
    _ = checkResponses(whole.all)
    // Everything here is deterministic (virtual time, a scripted backend), so how the client's bytes
    // were cut into reads must not change what the proxy answers. Answers after the timeouts are not
    // compared: part of a head read while a request was in flight does not start the header timeout
    // (the handler cannot see bytes NIO's decoder holds), so it gets the idle timeout's quiet close
    // where the same bytes read later get 408. docs/fuzzing.md lists it as open.
    let split = run(stream, cuts: [min(first, second), max(first, second)])
    _ = checkResponses(split.all)
    check(
        split.beforeTimers == whole.beforeTimers,
        "answers depend on the split at \(min(first, second)), \(max(first, second)):\n"
            + "whole: \(String(decoding: whole.beforeTimers, as: UTF8.self))\n"
            + "split: \(String(decoding: split.beforeTimers, as: UTF8.self))"
    )
    return 0
}
