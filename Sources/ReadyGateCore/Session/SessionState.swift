/// The life of one WebSocket session (DESIGN §2). Transitions are validated by
/// ``SessionStateMachine``; any other is a bug, reported as ``InvalidSessionTransition``.
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

    /// Whether no further transition (except ERROR → CLOSED) is allowed.
    public var isTerminal: Bool { self == .error || self == .closed }

    /// Whether `next` may follow `self`.
    public func canTransition(to next: SessionState) -> Bool {
        switch (self, next) {
        case (.initializing, .handshakePending), (.handshakePending, .connected),
            (.connected, .readyForMessages), (.readyForMessages, .closed), (.error, .closed):
            return true
        case (.initializing, .closed), (.handshakePending, .closed), (.connected, .closed):
            // A clean end before READY: the client closed or left while its frames were held.
            return true
        case (.handshakePending, .readyForMessages):
            // Never: the gate is only armed once the upstream answered 101.
            return false
        case (_, .error):
            return !isTerminal
        default:
            return false
        }
    }
}

/// A transition the session state machine does not allow.
public struct InvalidSessionTransition: Error, Sendable, Equatable, CustomStringConvertible {
    public var from: SessionState
    public var to: SessionState
    public var description: String { "invalid session transition \(from) → \(to)" }
}
