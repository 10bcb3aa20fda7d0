// libFuzzer target: the whole HTTP/1.1 entry path. Raw bytes go into the pipeline every accepted
// connection gets (`ReadyGateServer.configureHTTP1`: NIO's request decoder, the response encoder
// and `HTTPEntryHandler`) on an `EmbeddedChannel`: plain requests, upgrades, garbage.
//
// Input: two split bytes, then the client's bytes. They are written whole, then again on a fresh
// connection in three chunks cut where the split bytes say, the event loop run after each write;
// each time the clock then moves past every timeout and the channel closes.
// The embedded loop cannot make sockets, so a plain request's backend connect fails (502) and a
// valid upgrade is answered 502 before a session starts.
//
// Checked: nothing crashes; both runs get the same answer, byte for byte (everything is
// deterministic here, so the cut must not matter); what the proxy writes is a sequence of complete HTTP/1.1 responses, each
// with a `Content-Length` that matches its body; nothing follows a response that says
// `Connection: close`; when the connection is gone, the environment's connection and session
// registries are empty again (the environment is shared by every run, as a server's is).
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
import ReadyGateProxy

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

let environment = ProxyEnvironment(
    settings: ReadyGateSettings(),
    logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
)
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
        check(statusLine.hasPrefix("HTTP/1.1 "), "status line \(statusLine)")
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

/// Feeds `stream` to a fresh connection in pieces ending at `cuts`, then lets every timer fire and
/// closes. Returns what the proxy wrote before the close.
func run(_ stream: UnsafeBufferPointer<UInt8>, cuts: [Int]) -> [UInt8] {
    let channel = EmbeddedChannel()
    try! ReadyGateServer.configureHTTP1(channel: channel, environment: environment)
    try! channel.connect(to: clientAddress).wait()
    var output: [UInt8] = []
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
        channel.embeddedEventLoop.run()
        drainOutbound(channel, into: &output)
    }
    let longest = max(environment.settings.httpIdleTimeoutMs, environment.settings.httpHeaderTimeoutMs)
    channel.embeddedEventLoop.advanceTime(by: .milliseconds(Int64(longest) + 1))
    drainOutbound(channel, into: &output)

    _ = try? channel.finish(acceptAlreadyClosed: true)
    channel.embeddedEventLoop.run()
    check(environment.httpConnections.count == 0, "\(environment.httpConnections.count) HTTP connections left")
    check(environment.sessions.count == 0, "\(environment.sessions.count) sessions left")
    return output
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPEntry(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let stream = UnsafeBufferPointer(rebasing: input[2...])
    let first = Int(input[0]) % (stream.count + 1)
    let second = Int(input[1]) % (stream.count + 1)

    let whole = run(stream, cuts: [])
    _ = checkResponses(whole)
    // Everything here is deterministic (virtual time, no backend), so how the client's bytes were
    // cut into reads must not change what the proxy answers.
    let split = run(stream, cuts: [min(first, second), max(first, second)])
    check(
        split == whole,
        "answers depend on the split at \(min(first, second)), \(max(first, second)):\n"
            + "whole: \(String(decoding: whole, as: UTF8.self))\nsplit: \(String(decoding: split, as: UTF8.self))"
    )
    return 0
}
