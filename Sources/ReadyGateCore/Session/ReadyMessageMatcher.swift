/// The message gate's test (DESIGN §2, "Readiness gate"): does a backend data message contain
/// the configured ready text?
///
/// It is fed the payload bytes of the backend's frames as the scanner finds them, keeps at most
/// ``maxInspectedBytes`` of each message, and answers at each message's end. Backend frames are
/// unmasked (RFC 6455 §5.1), so payload bytes are the message bytes.
public struct ReadyMessageMatcher: Sendable {
    /// How much of a message is inspected; a ready message is small.
    public static let maxInspectedBytes = 64 * 1024

    private let needle: [UInt8]
    private var collected: [UInt8] = []
    private var inMessage = false
    /// The header of the frame being fed (for callers that feed scanner events).
    public var current: WebSocketFrameHeader?
    /// Set once a message held the ready text.
    public var matched = false

    public init(readyMessage: String) {
        self.needle = Array(readyMessage.utf8)
    }

    /// A data frame of the backend began.
    public mutating func frameStarted(_ header: WebSocketFrameHeader) {
        guard !header.opcode.isControl else { return }
        if header.opcode != .continuation {
            collected.removeAll(keepingCapacity: true)
            inMessage = true
        }
    }

    /// Payload bytes of the current backend frame.
    public mutating func payload(_ bytes: UnsafeRawBufferPointer, of header: WebSocketFrameHeader) {
        guard inMessage, !header.opcode.isControl else { return }
        let room = Self.maxInspectedBytes - collected.count
        guard room > 0 else { return }
        collected.append(contentsOf: bytes.prefix(room))
    }

    /// A backend frame ended. Returns true when it completed a data message holding the ready text.
    public mutating func frameEnded(_ header: WebSocketFrameHeader) -> Bool {
        guard inMessage, !header.opcode.isControl, header.fin else { return false }
        inMessage = false
        return Self.contains(collected, needle)
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty else { return true }
        guard haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count)
        where haystack[start] == needle[0] && haystack[start..<(start + needle.count)].elementsEqual(needle) {
            return true
        }
        return false
    }
}

extension ReadyMessageMatcher {
    /// Feeds one scanner event of the backend's stream (`bytes`: the chunk the event's ranges index).
    public mutating func observe(_ event: WebSocketScanEvent, in bytes: UnsafeRawBufferPointer) {
        switch event {
        case .header(let header, _):
            current = header
            frameStarted(header)
        case .payload(let range):
            if let current { payload(UnsafeRawBufferPointer(rebasing: bytes[range]), of: current) }
        case .frameEnd(let header, _, _):
            if frameEnded(header) { matched = true }
            current = nil
        }
    }
}
