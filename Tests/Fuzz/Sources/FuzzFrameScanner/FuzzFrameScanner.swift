// libFuzzer target: the WebSocket frame scanner (RFC 6455 §5.2), client and server roles.
//
// Input: one option byte, two split bytes, then the byte stream. The stream is scanned whole, then
// again in three pieces cut where the split bytes say, then (for short streams) one byte at a time.
// Every scan must report the same frames at the same stream offsets, the same payload bytes, the
// same counters and the same error: the scanner promises it "reports the same frames" whatever the
// split. Any difference, or an event outside its chunk, stops the run.
import ReadyGateCore

/// One scan's result, with chunk offsets turned into stream offsets.
struct ScanOutcome: Equatable {
    /// Headers and frame ends, in order: (is header, header, end offset in the stream, close code).
    var frames: [FrameEvent] = []
    /// Payload bytes reported, as coalesced stream ranges.
    var payload: [Range<Int>] = []
    var error: WebSocketProtocolError?
    var stats = WebSocketTrafficStats()
    var atBoundary = true
    var insideMessage = false

    struct FrameEvent: Equatable {
        var isHeader: Bool
        var header: WebSocketFrameHeader
        var endOffset: Int
        var closeCode: UInt16?
    }

    mutating func addPayload(_ range: Range<Int>) {
        guard !range.isEmpty else { return }
        if let last = payload.last, last.upperBound == range.lowerBound {
            payload[payload.count - 1] = last.lowerBound..<range.upperBound
        } else {
            payload.append(range)
        }
    }
}

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

/// Scans `stream` cut at `cuts` (ascending stream offsets), stopping at the first error.
func scan(
    _ stream: UnsafeRawBufferPointer,
    cuts: [Int],
    role: WebSocketPeerRole,
    reservedBits: UInt8,
    maxMessageBytes: UInt64
) -> ScanOutcome {
    var scanner = WebSocketFrameScanner(role: role, allowedReservedBits: reservedBits, maxMessageBytes: maxMessageBytes)
    var outcome = ScanOutcome()
    var start = 0
    for end in cuts + [stream.count] where end >= start {
        let chunk = UnsafeRawBufferPointer(rebasing: stream[start..<end])
        let base = start
        var lastPayloadEnd: Int?
        do throws(WebSocketProtocolError) {
            try scanner.scan(chunk) { event in
                switch event {
                case .header(let header, let endOffset):
                    check(endOffset > 0 && endOffset <= chunk.count, "header end \(endOffset) outside chunk")
                    check(header.headerLength >= 2 && header.headerLength <= 14, "header length \(header.headerLength)")
                    outcome.frames.append(.init(isHeader: true, header: header, endOffset: base + endOffset))
                case .payload(let range):
                    check(range.lowerBound >= 0 && range.upperBound <= chunk.count, "payload \(range) outside chunk")
                    if let lastPayloadEnd { check(range.lowerBound >= lastPayloadEnd, "payload ranges overlap") }
                    lastPayloadEnd = range.upperBound
                    outcome.addPayload((base + range.lowerBound)..<(base + range.upperBound))
                case .frameEnd(let header, let endOffset, let closeCode):
                    check(endOffset >= 0 && endOffset <= chunk.count, "frame end \(endOffset) outside chunk")
                    check(closeCode == nil || header.opcode == .close, "close code on a \(header.opcode) frame")
                    if let closeCode {
                        check(WebSocketFrameScanner.isValidCloseCode(closeCode), "close code \(closeCode) passed")
                    }
                    outcome.frames.append(
                        .init(isHeader: false, header: header, endOffset: base + endOffset, closeCode: closeCode)
                    )
                }
            }
        } catch {
            outcome.error = error
            outcome.stats = scanner.stats
            return outcome
        }
        start = end
    }
    outcome.stats = scanner.stats
    outcome.atBoundary = scanner.isAtFrameBoundary
    outcome.insideMessage = scanner.isInsideMessage
    return outcome
}

/// What two scans of the same stream must agree on. After an error, the events reported before it
/// depend on the split (a chunk's payload is reported before the next chunk shows the close reason
/// bad), so only the frames, the error and the frame counters are compared then.
func checkSame(_ whole: ScanOutcome, _ split: ScanOutcome, _ label: String) {
    check(
        whole.error == split.error,
        "\(label): error \(String(describing: whole.error)) vs \(String(describing: split.error))"
    )
    check(whole.frames == split.frames, "\(label): frames differ\n\(whole.frames)\n\(split.frames)")
    var wholeStats = whole.stats
    var splitStats = split.stats
    if whole.error != nil {
        // `bytes` counts what was handed over, which stops at the chunk that failed.
        wholeStats.bytes = 0
        splitStats.bytes = 0
    } else {
        check(whole.payload == split.payload, "\(label): payload differs \(whole.payload) vs \(split.payload)")
        check(whole.atBoundary == split.atBoundary, "\(label): boundary differs")
        check(whole.insideMessage == split.insideMessage, "\(label): inside-message differs")
    }
    check(wholeStats == splitStats, "\(label): stats differ \(wholeStats) vs \(splitStats)")
}

/// Checks one complete scan against the stream it read.
func checkConsistent(_ outcome: ScanOutcome, streamLength: Int) {
    let headers = outcome.frames.filter(\.isHeader)
    let ends = outcome.frames.filter { !$0.isHeader }
    check(UInt64(ends.count) == outcome.stats.frames, "frame count \(ends.count) vs \(outcome.stats.frames)")
    check(headers.count == ends.count || headers.count == ends.count + 1, "headers and ends out of step")
    for (index, end) in ends.enumerated() {
        let header = headers[index]
        check(header.header == end.header, "frame end for another header")
        let expected = UInt64(header.endOffset) + header.header.payloadLength
        check(UInt64(end.endOffset) == expected, "frame ends at \(end.endOffset), header says \(expected)")
    }
    guard outcome.error == nil else { return }
    check(outcome.stats.bytes == UInt64(streamLength), "bytes \(outcome.stats.bytes) vs \(streamLength)")
    // Payload bytes plus header bytes cover the stream up to the last frame end exactly.
    let payloadBytes = outcome.payload.reduce(0) { $0 + $1.count }
    let headerBytes = headers.reduce(0) { $0 + $1.header.headerLength }
    if outcome.atBoundary {
        check(
            payloadBytes + headerBytes == streamLength,
            "payload \(payloadBytes) + headers \(headerBytes) ≠ \(streamLength)"
        )
    } else {
        check(payloadBytes + headerBytes <= streamLength, "more bytes reported than scanned")
    }
    if outcome.stats.sawClose {
        let firstClose = ends.first { $0.header.opcode == .close }
        check(firstClose?.closeCode == outcome.stats.closeCode, "stats close code differs from the first close frame")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameScanner(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 3 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let options = input[0]
    let stream = UnsafeRawBufferPointer(rebasing: input[3...])
    let role: WebSocketPeerRole = options & 1 == 0 ? .client : .server
    let reservedBits: UInt8 = options & 2 == 0 ? 0 : 0b100
    let maxMessageBytes: UInt64 = options & 4 == 0 ? .max : UInt64(options >> 3) * 8

    let whole = scan(stream, cuts: [], role: role, reservedBits: reservedBits, maxMessageBytes: maxMessageBytes)
    checkConsistent(whole, streamLength: stream.count)

    let first = stream.isEmpty ? 0 : Int(input[1]) % (stream.count + 1)
    let second = stream.isEmpty ? 0 : Int(input[2]) % (stream.count + 1)
    let split = scan(
        stream,
        cuts: [min(first, second), max(first, second)],
        role: role,
        reservedBits: reservedBits,
        maxMessageBytes: maxMessageBytes
    )
    checkSame(whole, split, "split at \(min(first, second)), \(max(first, second))")

    if stream.count <= 256 {
        let bytewise = scan(
            stream,
            cuts: Array(0..<stream.count),
            role: role,
            reservedBits: reservedBits,
            maxMessageBytes: maxMessageBytes
        )
        checkSame(whole, bytewise, "byte by byte")
    }
    return 0
}
