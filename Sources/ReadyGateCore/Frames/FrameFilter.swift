import NIOCore

/// A peer's frames on their way to the other side while the proxy still has a say about two of
/// them: the pong to the proxy's own ping (the ping gate's, or a keepalive's), which is taken out,
/// and a close frame while a replay may still follow, which is kept back. Everything else passes
/// at once, byte for byte, sliced from the reads that brought it.
///
/// A frame is decided at its header: a pong (while a pong is awaited) and a close (while closes
/// are kept back) are collected whole; any other frame's bytes pass as they come, the passing
/// frames of one read together as one slice (a keepalive's filter stays in a busy session's path,
/// and a forward per frame would be a pipeline trip and a queued write per frame). Once a close is
/// kept back, whatever follows it stays behind it. ``release()`` hands over what is kept so the
/// filter can leave the stream without cutting it.
public struct FrameFilter: Sendable {
    /// What the caller does with one read's bytes, in order.
    public enum Output: Sendable, Equatable {
        /// Pass these bytes to the client.
        case forward(ByteBuffer)
        /// The peer answered the proxy's ping (the pong is not passed on).
        case ownPong
        /// A close frame with `code` (nil: none) was kept back; ``release()`` or ``discardKept()`` decides it.
        case closeKeptBack(code: UInt16?)
        /// The first data frame started passing.
        case dataStarted
    }

    private var scanner: WebSocketFrameScanner
    /// The payloads of the proxy's pings not answered yet, oldest first (at most
    /// ``maxAwaitedPongs``). A pong answers its ping and every older one: a peer may answer only
    /// the latest of several pings (RFC 6455 §5.5.3).
    public private(set) var awaitedPongs: [[UInt8]] = []
    public static let maxAwaitedPongs = 4

    /// Whether a ping of the proxy's is still unanswered.
    public var awaitsPong: Bool { !awaitedPongs.isEmpty }
    /// Whether close frames are kept back (a replay may follow).
    public var keepsCloseBack = false
    /// Whether a data frame has started passing.
    public private(set) var sawData = false
    /// Wire bytes of the pongs taken out (they are the proxy's own traffic, not the peer's).
    public private(set) var ownPongBytes = 0
    /// After a protocol error the stream is passed on unfiltered.
    private var broken = false

    /// Bytes of the current frame not passed on: its header while incomplete, or a pong or close
    /// being collected. After a kept close, every later byte too.
    private var kept: ByteBuffer?
    /// During ``receive(_:emit:)``: the passing bytes of the read not handed over yet, as offsets
    /// into its readable bytes. Any other output, or the read's end, hands them over first.
    private var passRun: Range<Int>?
    /// What happens to the current frame's bytes (nil: its header is not complete).
    private var current: Disposition?
    private var closeKept = false

    private enum Disposition {
        case pass
        case collectPong
        case collectClose
    }

    public init(scanner: WebSocketFrameScanner) {
        self.scanner = scanner
    }

    /// The proxy sent a ping with `payload`: its pong will be taken out.
    public mutating func awaitPong(payload: [UInt8]) {
        awaitedPongs.append(payload)
        if awaitedPongs.count > Self.maxAwaitedPongs { awaitedPongs.removeFirst() }
    }

    /// Whether the filter has nothing to do any more: no pong awaited, closes not kept back, and
    /// nothing kept.
    public var isIdle: Bool {
        awaitedPongs.isEmpty && !keepsCloseBack && kept == nil && current != .collectPong
    }

    /// Takes one read's bytes.
    public mutating func receive(_ buffer: ByteBuffer) -> [Output] {
        var outputs: [Output] = []
        receive(buffer) { outputs.append($0) }
        return outputs
    }

    /// Takes one read's bytes, handing each output to `emit` in order.
    public mutating func receive(_ buffer: ByteBuffer, emit: (Output) -> Void) {
        guard buffer.readableBytes > 0 else { return }
        if broken || closeKept {
            append(buffer, emit: emit)
            return
        }
        var cursor = 0
        var scanner = self.scanner
        var failed = false
        buffer.withUnsafeReadableBytes { bytes in
            do throws(WebSocketProtocolError) {
                try scanner.scan(bytes) { event in
                    switch event {
                    case .header(let header, let end):
                        // Behind a kept close everything is kept, whatever it is.
                        if !closeKept { current = disposition(of: header.opcode) }
                        take(buffer, upTo: end, cursor: &cursor, emit: emit)
                        if !closeKept && current == .pass && !header.opcode.isControl && !sawData {
                            sawData = true
                            flushPassRun(buffer, emit: emit)
                            emit(.dataStarted)
                        }
                    case .payload(let range):
                        take(buffer, upTo: range.upperBound, cursor: &cursor, emit: emit)
                    case .frameEnd(let header, let end, let closeCode):
                        take(buffer, upTo: end, cursor: &cursor, emit: emit)
                        // A collected pong or close: its header's take handed the pass run over.
                        if !closeKept { finishFrame(header, closeCode: closeCode, emit: emit) }
                    }
                }
            } catch {
                failed = true
            }
        }
        self.scanner = scanner
        if failed {
            // The watcher reports the error; the rest of the stream is the client's to judge.
            broken = true
            current = .pass
        }
        take(buffer, upTo: buffer.readableBytes, cursor: &cursor, emit: emit)
        flushPassRun(buffer, emit: emit)
    }

    /// Hands over the read's passing bytes collected so far, as one slice.
    private mutating func flushPassRun(_ chunk: ByteBuffer, emit: (Output) -> Void) {
        guard let run = passRun else { return }
        passRun = nil
        emit(.forward(chunk.getSlice(at: chunk.readerIndex + run.lowerBound, length: run.count)!))
    }

    /// Hands over everything kept, in stream order, and stops keeping closes back: a kept close
    /// (and what followed it), or the bytes of the frame in progress.
    public mutating func release() -> ByteBuffer? {
        keepsCloseBack = false
        closeKept = false
        defer { kept = nil }
        if current != nil { current = .pass }
        return kept
    }

    /// Forgets what is kept (the backend connection is being replaced).
    public mutating func discardKept() {
        kept = nil
        closeKept = false
        broken = true
    }

    private func disposition(of opcode: WebSocketOpcode) -> Disposition {
        if opcode == .pong && !awaitedPongs.isEmpty { return .collectPong }
        if opcode == .close && keepsCloseBack { return .collectClose }
        return .pass
    }

    private mutating func finishFrame(_ header: WebSocketFrameHeader, closeCode: UInt16?, emit: (Output) -> Void) {
        switch current {
        case .collectPong:
            let frame = kept
            kept = nil
            current = nil
            var payload =
                frame?.getBytes(at: frame!.readerIndex + header.headerLength, length: Int(header.payloadLength)) ?? []
            if let key = header.maskingKey { WebSocketMasking.apply(maskingKey: key, to: &payload) }
            if let answered = awaitedPongs.lastIndex(of: payload) {
                awaitedPongs.removeFirst(answered + 1)
                ownPongBytes += frame?.readableBytes ?? 0
                emit(.ownPong)
            } else if let frame {
                // Someone else's pong: it goes on as it came.
                emit(.forward(frame))
            }
        case .collectClose:
            closeKept = true
            emit(.closeKeptBack(code: closeCode))
        case .pass, nil:
            current = nil
        }
    }

    /// Moves `chunk[cursor..<end]` on (a passing frame: into the read's pass run) or into `kept`.
    private mutating func take(_ chunk: ByteBuffer, upTo end: Int, cursor: inout Int, emit: (Output) -> Void) {
        guard end > cursor else { return }
        let start = cursor
        cursor = end
        if current == .pass && !closeKept && kept == nil {
            // Takes are contiguous within a read, and whatever breaks a run hands it over first.
            passRun = (passRun?.lowerBound ?? start)..<end
            return
        }
        flushPassRun(chunk, emit: emit)
        let slice = chunk.getSlice(at: chunk.readerIndex + start, length: end - start)!
        if current == .pass && !closeKept, var pending = kept {
            // A header that straddled two reads.
            kept = nil
            var slice = slice
            pending.writeBuffer(&slice)
            emit(.forward(pending))
        } else {
            append(slice, emit: emit)
        }
    }

    private mutating func append(_ slice: ByteBuffer, emit: (Output) -> Void) {
        var slice = slice
        if broken && !closeKept {
            if var pending = kept {
                kept = nil
                pending.writeBuffer(&slice)
                emit(.forward(pending))
            } else {
                emit(.forward(slice))
            }
            return
        }
        if kept == nil {
            kept = slice
        } else {
            kept!.writeBuffer(&slice)
        }
    }
}
