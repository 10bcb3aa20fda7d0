import NIOCore
import ReadyGateCore

/// Client frames held while the session is not ready (DESIGN §2, "Buffering while not ready").
///
/// Data frames are kept verbatim (still masked) in arrival order; control frames are cut out
/// whole and handed back to be answered by the proxy. Bytes are sliced from the reads that
/// brought them, never copied, except a control frame or a header that straddles two reads.
struct ClientFrameHold {
    /// What the caller must do about a control frame the client sent while held.
    enum ControlFrame: Equatable {
        /// Answer with a pong carrying this (unmasked) payload.
        case ping(payload: [UInt8])
        /// The client started the close handshake, with this code (nil: none given).
        case close(code: UInt16?)
        /// An unsolicited pong: nothing to do.
        case pong
    }

    private(set) var scanner: WebSocketFrameScanner
    private(set) var queue = CircularBuffer<ByteBuffer>(initialCapacity: 8)
    /// Bytes queued for the upstream.
    private(set) var queuedBytes = 0
    /// Complete data frames queued.
    private(set) var queuedFrames = 0
    /// The highest `queuedBytes` ever reached.
    private(set) var peakQueuedBytes = 0

    /// Bytes of the current frame whose kind is not known yet (partial header), or of a control frame.
    private var partial: ByteBuffer?
    /// Whether the current frame is a data frame (nil: its header is not complete).
    private var currentIsData: Bool?

    init(scanner: WebSocketFrameScanner) {
        self.scanner = scanner
    }

    /// Takes one read's bytes. Returns the control frames found, in order.
    mutating func receive(_ buffer: ByteBuffer) throws(WebSocketProtocolError) -> [ControlFrame] {
        var controls: [ControlFrame] = []
        try receive(buffer) { controls.append($0) }
        return controls
    }

    /// Takes one read's bytes, handing each control frame to `onControl` as it is found, so the
    /// ones before a protocol error in the same read are still answered.
    mutating func receive(
        _ buffer: ByteBuffer,
        onControl: (ControlFrame) -> Void
    ) throws(WebSocketProtocolError) {
        var cursor = 0
        var failure: WebSocketProtocolError?
        var scanner = self.scanner
        defer { self.scanner = scanner }
        buffer.withUnsafeReadableBytes { bytes in
            do throws(WebSocketProtocolError) {
                try scanner.scan(bytes) { event in
                    switch event {
                    case .header(let header, let end):
                        currentIsData = !header.opcode.isControl
                        take(buffer, upTo: end, cursor: &cursor)
                    case .payload(let range):
                        take(buffer, upTo: range.upperBound, cursor: &cursor)
                    case .frameEnd(let header, let end, let closeCode):
                        take(buffer, upTo: end, cursor: &cursor)
                        if header.opcode.isControl {
                            onControl(Self.control(header, frame: partial, closeCode: closeCode))
                            partial = nil
                        } else {
                            queuedFrames += 1
                        }
                        currentIsData = nil
                    }
                }
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        take(buffer, upTo: buffer.readableBytes, cursor: &cursor)
    }

    /// Moves `chunk[cursor..<end]` to the queue (data frame) or the partial buffer.
    private mutating func take(_ chunk: ByteBuffer, upTo end: Int, cursor: inout Int) {
        guard end > cursor else { return }
        let slice = chunk.getSlice(at: chunk.readerIndex + cursor, length: end - cursor)!
        cursor = end
        if currentIsData == true {
            if var pending = partial {
                partial = nil
                var slice = slice
                pending.writeBuffer(&slice)
                enqueue(pending)
            } else {
                enqueue(slice)
            }
        } else {
            var slice = slice
            if partial == nil {
                partial = slice
            } else {
                partial!.writeBuffer(&slice)
            }
        }
    }

    private mutating func enqueue(_ bytes: ByteBuffer) {
        queue.append(bytes)
        queuedBytes += bytes.readableBytes
        peakQueuedBytes = max(peakQueuedBytes, queuedBytes)
    }

    /// Hands over everything queued, in order, and forgets it.
    mutating func drain() -> CircularBuffer<ByteBuffer> {
        defer {
            queue = CircularBuffer(initialCapacity: 0)
            queuedBytes = 0
            queuedFrames = 0
        }
        return queue
    }

    /// Gives the scanner back (splicing goes on with the same stream position and counters).
    var scannerForSplice: WebSocketFrameScanner { scanner }

    private static func control(_ header: WebSocketFrameHeader, frame: ByteBuffer?, closeCode: UInt16?) -> ControlFrame
    {
        switch header.opcode {
        case .ping:
            var payload =
                frame.flatMap {
                    $0.getBytes(at: $0.readerIndex + header.headerLength, length: Int(header.payloadLength))
                } ?? []
            if let key = header.maskingKey { WebSocketMasking.apply(maskingKey: key, to: &payload) }
            return .ping(payload: payload)
        case .close:
            return .close(code: closeCode)
        default:
            return .pong
        }
    }
}
