// libFuzzer target: the fast path's request-head parser and body framer (ReadyGateCore `HTTP1/`),
// differentially against NIO's `HTTPRequestDecoder` (llhttp).
//
// Input: raw bytes, one request (head and body) and maybe more behind it. The first byte picks a
// split point for feeding the framer in two pieces; the rest is the request.
//
// Checked: nothing crashes; a head the fast parser accepts as HTTP/1.1 without Upgrade/Expect/CONNECT
// (what the fast path forwards) NIO accepts too, with the same method, target and number of fields;
// when the framer finds the body's end, NIO gives the same body bytes and the request's end; the
// framer's answer does not depend on how the bytes are split; and a chunked body the framer refuses
// NIO refuses too (the fast path answers it 400, so it must not be one NIO would forward).
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

/// What NIO's decoder makes of the bytes: the first head, the body bytes, whether the request
/// ended, and whether it failed (before its end).
func decodeWithNIO(_ bytes: [UInt8]) -> (head: HTTPRequestHead?, body: [UInt8], ended: Bool, failed: Bool) {
    let channel = EmbeddedChannel()
    defer { _ = try? channel.finish() }
    try! channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
    var head: HTTPRequestHead?
    var body: [UInt8] = []
    var ended = false
    var failed = false
    do {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
    } catch {
        failed = true
    }
    while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
        switch part {
        case .head(let h): if head == nil { head = h }
        case .body(let b): if !ended { body += b.readableBytesView }
        case .end: ended = true
        }
        if ended { break }
    }
    return (head, body, ended, failed && !ended)
}

/// Feeds `body` to a framer in two pieces split at `cut`: nil when it refuses the body, or
/// `(0, false)` for the one refusal that is stricter than llhttp on purpose (a framing field in the
/// trailers, which llhttp takes when it is empty).
func frame(_ framing: HTTP1Head.Framing, _ body: ArraySlice<UInt8>, cut: Int) -> (taken: Int, complete: Bool)? {
    var framer = HTTP1BodyFramer(framing)
    let cut = min(cut, body.count)
    do {
        let first = try body[body.startIndex..<(body.startIndex + cut)].withUnsafeBytes { try framer.consume($0) }
        if first < cut || framer.isComplete { return (first, framer.isComplete) }
        let second = try body[(body.startIndex + cut)...].withUnsafeBytes { try framer.consume($0) }
        return (first + second, framer.isComplete)
    } catch HTTP1BodyFramer.Error.framingFieldInTrailer {
        return (0, false)
    } catch {
        return nil
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count > 1 else { return 0 }
    let input = Array(UnsafeRawBufferPointer(start: start, count: count))
    let cutSeed = Int(input[0])
    let bytes = Array(input[1...])
    let parsed = bytes.withUnsafeBytes { HTTP1HeadParser.parseRequest($0, limit: 16 * 1024) }
    guard case .complete(let head) = parsed else { return 0 }
    guard head.isOrdinaryRequest else { return 0 }

    let nio = decodeWithNIO(bytes)
    guard let nioHead = nio.head else {
        fatalError("invariant violated: the fast parser accepts a head NIO refuses: \(bytes)")
    }
    let method = String(decoding: bytes[head.first], as: UTF8.self)
    let target = String(decoding: bytes[head.second], as: UTF8.self)
    check(nioHead.method.rawValue == method, "method \(method) vs \(nioHead.method)")
    check(nioHead.uri == target, "target \(target) vs \(nioHead.uri)")
    check(nioHead.headers.count == head.fields.count, "fields \(head.fields.count) vs \(nioHead.headers.count)")

    let body = bytes[head.length...]
    let whole = frame(head.framing, body, cut: body.count)
    let split = frame(head.framing, body, cut: body.isEmpty ? 0 : cutSeed % (body.count + 1))
    check(whole?.taken == split?.taken && whole?.complete == split?.complete, "the split changed the framing")
    guard let whole else {
        check(nio.failed || !nio.ended, "the framer refuses a body NIO reads to its end")
        return 0
    }
    if whole.complete {
        check(nio.ended, "the framer ends a body NIO does not end")
        if head.framing != .chunked {
            check(Array(body.prefix(whole.taken)) == nio.body, "different body bytes")
        } else {
            // The framer passes chunks through as they are; NIO gives the decoded data. Decode the
            // chunked bytes the simple way and compare.
            check(dechunk(Array(body.prefix(whole.taken))) == nio.body, "different chunked body bytes")
        }
    }
    return 0
}

/// The data of a chunked body the framer accepted (sizes, extensions and trailers dropped).
func dechunk(_ bytes: [UInt8]) -> [UInt8] {
    var data: [UInt8] = []
    var i = 0
    while i < bytes.count {
        var size = 0
        while i < bytes.count, let digit = Int(String(UnicodeScalar(bytes[i])), radix: 16) {
            size = size * 16 + digit
            i += 1
        }
        while i + 1 < bytes.count, !(bytes[i] == 13 && bytes[i + 1] == 10) { i += 1 }
        i += 2
        if size == 0 { break }
        data += bytes[i..<min(bytes.count, i + size)]
        i += size + 2
    }
    return data
}
