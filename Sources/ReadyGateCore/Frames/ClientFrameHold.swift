import NIOCore

/// Client frames held while the session is not ready.
///
/// Data frames are kept verbatim (still masked) in arrival order; control frames are cut out
/// whole and handed back to be answered by the proxy. Bytes are sliced from the reads that
/// brought them, never copied, except a control frame or a header that straddles two reads.
///
/// When READY comes in the middle of a frame, ``drain()`` hands over the bytes of that frame
/// received so far too: a control frame cut in two by READY is then the backend's to answer,
/// and the stream the backend sees stays exactly the client's, minus the control frames the
/// proxy answered whole.
public struct ClientFrameHold: Sendable {
    /// What the caller must do about a control frame the client sent while held.
    public enum ControlFrame: Sendable, Equatable {
        /// Answer with a pong carrying this (unmasked) payload.
        case ping(payload: [UInt8])
        /// The client started the close handshake, with this code (nil: none given).
        case close(code: UInt16?)
        /// An unsolicited pong: nothing to do.
        case pong
    }

    private var scanner: WebSocketFrameScanner
    private var queue = CircularBuffer<ByteBuffer>(initialCapacity: 8)
    /// Bytes queued for the upstream.
    public private(set) var queuedBytes = 0
    /// Complete data frames queued.
    public private(set) var queuedFrames = 0
    /// The highest `queuedBytes` ever reached.
    public private(set) var peakQueuedBytes = 0

    /// Bytes of the current frame whose kind is not known yet (partial header), or of a control frame.
    private var partial: ByteBuffer?
    /// Whether the current frame is a data frame (nil: its header is not complete).
    private var currentIsData: Bool?

    public init(scanner: WebSocketFrameScanner) {
        self.scanner = scanner
    }

    /// Takes one read's bytes. Returns the control frames found, in order.
    public mutating func receive(_ buffer: ByteBuffer) throws(WebSocketProtocolError) -> [ControlFrame] {
        var controls: [ControlFrame] = []
        try receive(buffer) { controls.append($0) }
        return controls
    }

    /// Takes one read's bytes, handing each control frame to `onControl` as it is found, so the
    /// ones before a protocol error in the same read are still answered.
    public mutating func receive(
        _ buffer: ByteBuffer,
        onControl: (ControlFrame) -> Void
    ) throws(WebSocketProtocolError) {
        try receive(buffer, passingControlFrames: false, onControl: onControl)
    }

    /// Queues bytes that an earlier backend connection already got (a replay): every frame in them
    /// is kept as it is, control frames too, since that backend may have answered them; a frame cut
    /// off at their end goes on with the bytes that follow it.
    public mutating func prefill(_ buffer: ByteBuffer) throws(WebSocketProtocolError) {
        try receive(buffer, passingControlFrames: true) { _ in }
    }

    private mutating func receive(
        _ buffer: ByteBuffer,
        passingControlFrames: Bool,
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
                        currentIsData = passingControlFrames || !header.opcode.isControl
                        take(buffer, upTo: end, cursor: &cursor)
                    case .payload(let range):
                        take(buffer, upTo: range.upperBound, cursor: &cursor)
                    case .frameEnd(let header, let end, let closeCode):
                        take(buffer, upTo: end, cursor: &cursor)
                        // A control frame is answered by the proxy unless it is being passed on (a
                        // replay's, or one whose first bytes were passed on already).
                        if currentIsData == false {
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

    /// Hands over everything held, in order, and forgets it: the queued data frames, then the
    /// bytes of the frame in progress (a partial header, or a control frame not complete yet).
    public mutating func drain() -> CircularBuffer<ByteBuffer> {
        var drained = queue
        if let partial, partial.readableBytes > 0 { drained.append(partial) }
        queue = CircularBuffer(initialCapacity: 0)
        partial = nil
        currentIsData = nil
        queuedBytes = 0
        queuedFrames = 0
        return drained
    }

    /// Lets go of everything held (the session ended before READY).
    public mutating func discard() {
        queue = CircularBuffer(initialCapacity: 0)
        partial = nil
        queuedBytes = 0
        queuedFrames = 0
    }

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
