/// Why the proxy itself ended a session, with the close code and reason text sent to the client
/// (DESIGN §2, "Close codes sent to the client when the proxy ends a session").
public enum SessionCloseReason: Sendable, Equatable, CustomStringConvertible {
    /// The backend could not be reached within the handshake timeout.
    case upstreamUnavailable
    /// The backend answered the upgrade with a status other than 101.
    case upstreamRejected(status: Int)
    /// The readiness gate did not pass within the handshake timeout (`close` action).
    case upstreamNotReady
    /// The backend connection was lost mid-session without a close frame.
    case upstreamClosed
    /// ReadyGate is shutting down.
    case goingAway
    /// The client broke RFC 6455.
    case clientProtocolError(WebSocketProtocolError)
    /// The backend broke RFC 6455 (or its 101 failed verification).
    case upstreamProtocolError(String)
    /// A bug in ReadyGate (an impossible session transition in a release build).
    case internalError
    /// No bytes either way for `READYGATE_WS_IDLE_TIMEOUT_MS`.
    case idleTimeout
    /// That side missed two of the proxy's keepalive pings.
    case peerUnresponsive(SessionStateMachine.Side)

    /// The WebSocket close code (RFC 6455 §7.4.1).
    public var closeCode: UInt16 {
        switch self {
        case .upstreamUnavailable, .upstreamNotReady: 1013
        case .upstreamRejected(let status):
            switch status {
            case 500...599: 1014
            case 401, 403: 1008
            default: 1011
            }
        case .upstreamClosed, .upstreamProtocolError, .internalError: 1011
        case .goingAway, .idleTimeout, .peerUnresponsive: 1001
        case .clientProtocolError(let error): error.closeCode
        }
    }

    /// The close frame's reason text.
    public var reasonText: String {
        switch self {
        case .upstreamUnavailable: "upstream unavailable"
        case .upstreamRejected(let status): "upstream rejected: \(status)"
        case .upstreamNotReady: "upstream not ready"
        case .upstreamClosed: "upstream closed"
        case .goingAway: "going away"
        case .clientProtocolError(let error): error.description
        case .upstreamProtocolError(let what): "upstream protocol error: \(what)"
        case .internalError: "internal error"
        case .idleTimeout: "idle timeout"
        case .peerUnresponsive(let side): "\(side == .client ? "client" : "upstream") unresponsive"
        }
    }

    /// A stable name for logs and metric labels.
    public var name: String {
        switch self {
        case .upstreamUnavailable: "upstream_unavailable"
        case .upstreamRejected: "upstream_rejected"
        case .upstreamNotReady: "upstream_not_ready"
        case .upstreamClosed: "upstream_closed"
        case .goingAway: "going_away"
        case .clientProtocolError: "client_protocol_error"
        case .upstreamProtocolError: "upstream_protocol_error"
        case .internalError: "internal_error"
        case .idleTimeout: "idle_timeout"
        case .peerUnresponsive: "peer_unresponsive"
        }
    }

    /// The HTTP status a client without its `101` gets instead of a close frame: 504 when the
    /// backend was not there or not ready in time, 503 when ReadyGate is shutting down, else 502.
    public var httpStatus: Int {
        switch self {
        case .upstreamUnavailable, .upstreamNotReady: 504
        case .goingAway: 503
        default: 502
        }
    }

    /// Whether the client is failed at once, without waiting for its close answer: it broke the
    /// protocol (RFC 6455 §7.1.7).
    public var failsClientAtOnce: Bool {
        if case .clientProtocolError = self { return true }
        return false
    }

    public var description: String { "\(closeCode) \(reasonText)" }
}
