/// When a session entered each state, in milliseconds since its start (nil: never entered).
///
/// Six inline slots instead of a dictionary: every live session keeps one, and a dictionary would
/// be a heap allocation per session for five numbers.
public struct SessionStateTimes: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    private var initializing: Int?
    private var handshakePending: Int?
    private var connected: Int?
    private var readyForMessages: Int?
    private var error: Int?
    private var closed: Int?

    public init() {}

    public init(dictionaryLiteral elements: (SessionState, Int)...) {
        for (state, ms) in elements { self[state] = ms }
    }

    public subscript(state: SessionState) -> Int? {
        get {
            switch state {
            case .initializing: initializing
            case .handshakePending: handshakePending
            case .connected: connected
            case .readyForMessages: readyForMessages
            case .error: error
            case .closed: closed
            }
        }
        set {
            switch state {
            case .initializing: initializing = newValue
            case .handshakePending: handshakePending = newValue
            case .connected: connected = newValue
            case .readyForMessages: readyForMessages = newValue
            case .error: error = newValue
            case .closed: closed = newValue
            }
        }
    }
}
