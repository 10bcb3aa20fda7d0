/// The phases of one WebSocket session, as logs and the summary name them. The session state
/// machine's own states carry more (attempt numbers, close progress); these are what it reports.
public enum SessionState: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The request head is being read and validated.
    case initializing = "INITIALIZING"
    /// The upstream connect and upgrade are in flight (the client may already have its 101).
    case handshakePending = "HANDSHAKE_PENDING"
    /// The upstream answered 101 with a verified accept; the readiness gate has not passed yet.
    case connected = "CONNECTED"
    /// The gate passed, the buffer was flushed, the two streams are spliced.
    case readyForMessages = "READY_FOR_MESSAGES"
    /// The session failed; the reason is recorded once. Only ``closed`` follows.
    case error = "ERROR"
    /// Terminal.
    case closed = "CLOSED"

    public var description: String { rawValue }
}
