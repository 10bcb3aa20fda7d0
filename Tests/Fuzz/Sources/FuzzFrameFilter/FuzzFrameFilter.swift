// libFuzzer target: the frame filter (`FrameFilter`, Core) that takes the proxy's own pong out of
// a peer's stream and keeps a close frame back while a replay may follow.
//
// Input: one option byte (bit 0: server role, i.e. the backend's unmasked frames; bit 1: a pong
// to the proxy's ping is awaited; bit 2: closes are kept back), two split bytes, then the stream.
// The stream goes through a filter whole, then in three pieces cut where the split bytes say.
// Both runs must give the same bytes forwarded and the same reports, and each must equal what a
// reference derives from one scan of the stream: the stream itself, less the first pong whose
// (unmasked) payload is the awaited one, cut at the first close frame when closes are kept back
// (the rest is what `release()` hands over). Nothing is lost or duplicated: forwarded bytes,
// released bytes and the own pong's bytes add up to the stream.
import NIOCore
import ReadyGateCore

let ownPayload: [UInt8] = Array("RGPING01".utf8)

struct FilterOutcome: Equatable {
    var forwarded: [UInt8] = []
    var released: [UInt8] = []
    var reports: [FrameFilter.Output] = []
    var ownPongBytes = 0
}

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

func runFilter(_ stream: [UInt8], cuts: [Int], role: WebSocketPeerRole, awaitPong: Bool, keepClose: Bool)
    -> FilterOutcome
{
    var filter = FrameFilter(scanner: WebSocketFrameScanner(role: role))
    if awaitPong { filter.awaitPong(payload: ownPayload) }
    filter.keepsCloseBack = keepClose
    var outcome = FilterOutcome()
    var start = 0
    for end in cuts + [stream.count] where end >= start {
        filter.receive(ByteBuffer(bytes: stream[start..<end])) { output in
            if case .forward(let bytes) = output {
                check(bytes.readableBytes > 0, "an empty forward")
                outcome.forwarded += Array(bytes.readableBytesView)
            } else {
                outcome.reports.append(output)
            }
        }
        start = end
    }
    if let kept = filter.release() { outcome.released = Array(kept.readableBytesView) }
    outcome.ownPongBytes = filter.ownPongBytes
    return outcome
}

/// The reference, from one scan of the whole stream up to its first protocol error (after which
/// the filter passes everything as it comes): the stream less the first pong whose unmasked
/// payload is the awaited one, and the reports in stream order. Forwarded and released bytes are
/// compared together: which of them a frame in progress at the stream's end is depends on its kind.
func expected(
    _ stream: [UInt8],
    role: WebSocketPeerRole,
    awaitPong: Bool,
    keepClose: Bool
) -> (outcome: FilterOutcome, forwardedBeforeKeptClose: Int?) {
    var scanner = WebSocketFrameScanner(role: role)
    var ownPong: Range<Int>?
    var keptClose: (start: Int, end: Int, code: UInt16?)?
    var dataAt: Int?
    var frameStart = 0
    stream.withUnsafeBytes { bytes in
        do throws(WebSocketProtocolError) {
            try scanner.scan(bytes) { event in
                switch event {
                case .header(let header, let end):
                    frameStart = end - header.headerLength
                    if keptClose == nil && !header.opcode.isControl && dataAt == nil { dataAt = frameStart }
                case .payload:
                    break
                case .frameEnd(let header, let end, let code):
                    guard keptClose == nil else { return }
                    if keepClose && header.opcode == .close {
                        keptClose = (frameStart, end, code)
                        return
                    }
                    guard awaitPong, ownPong == nil, header.opcode == .pong else { return }
                    var payload = Array(stream[(end - Int(header.payloadLength))..<end])
                    if let key = header.maskingKey { WebSocketMasking.apply(maskingKey: key, to: &payload) }
                    if payload == ownPayload { ownPong = frameStart..<end }
                }
            }
        } catch {}
    }
    var outcome = FilterOutcome()
    outcome.forwarded = stream
    if let ownPong { outcome.forwarded.removeSubrange(ownPong) }
    outcome.ownPongBytes = ownPong?.count ?? 0
    var reports: [(Int, FrameFilter.Output)] = []
    if let ownPong { reports.append((ownPong.upperBound, .ownPong)) }
    if let dataAt { reports.append((dataAt, .dataStarted)) }
    if let keptClose { reports.append((keptClose.end, .closeKeptBack(code: keptClose.code))) }
    outcome.reports = reports.sorted { $0.0 < $1.0 }.map(\.1)
    // Everything before a kept close is whole frames, forwarded but for the own pong (which can only
    // come before it); nothing after it.
    return (outcome, keptClose.map { $0.start - (ownPong?.count ?? 0) })
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 3 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let options = input[0]
    let stream = Array(input[3...])
    let role: WebSocketPeerRole = options & 1 == 0 ? .client : .server
    let awaitPong = options & 2 != 0
    let keepClose = options & 4 != 0
    let cuts = [Int(input[1]), Int(input[2])].map { stream.isEmpty ? 0 : $0 % (stream.count + 1) }.sorted()

    let whole = runFilter(stream, cuts: [], role: role, awaitPong: awaitPong, keepClose: keepClose)
    let split = runFilter(stream, cuts: cuts, role: role, awaitPong: awaitPong, keepClose: keepClose)
    check(whole == split, "split at \(cuts) differs: \(whole) vs \(split)")
    check(
        whole.forwarded.count + whole.released.count + whole.ownPongBytes == stream.count,
        "bytes lost or duplicated: \(whole.forwarded.count) + \(whole.released.count) + \(whole.ownPongBytes) != \(stream.count)"
    )
    let (reference, forwardedBeforeKeptClose) = expected(
        stream,
        role: role,
        awaitPong: awaitPong,
        keepClose: keepClose
    )
    var passed = whole
    passed.forwarded += passed.released
    passed.released = []
    check(passed == reference, "differs from the reference: \(passed) vs \(reference)")
    if let forwardedBeforeKeptClose {
        check(
            whole.forwarded.count == forwardedBeforeKeptClose,
            "forwarded \(whole.forwarded.count) bytes around a kept close, not the \(forwardedBeforeKeptClose) before it"
        )
    }
    return 0
}
