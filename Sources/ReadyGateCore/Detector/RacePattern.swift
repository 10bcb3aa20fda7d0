/// The race patterns ReadyGate names (DESIGN §4). Each is a structured log event and a counter.
public enum RacePattern: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Client frames arrived before READY: each is a race the proxy prevented.
    case earlyClientFrames = "early_client_frames"
    /// An upstream connect failed and was retried.
    case upstreamConnectRetry = "upstream_connect_retry"
    /// The backend's 101 came later than the profile's slow-handshake threshold.
    case upstreamSlowHandshake = "upstream_slow_handshake"
    /// The backend answered the upgrade with a status other than 101.
    case upstreamRejected = "upstream_rejected"
    /// The readiness gate did not pass within the handshake timeout.
    case readyTimeout = "ready_timeout"
    /// The backend closed with 1011/1006 soon after READY: the gate was too short.
    case upstreamErrorAfterReady = "upstream_error_after_ready"
    /// The client left while its frames were held.
    case clientGoneBeforeReady = "client_gone_before_ready"
    /// The client's buffer reached its bound; the proxy stopped reading from it.
    case bufferBackpressure = "buffer_backpressure"

    public var description: String { rawValue }
}

/// One detected pattern with its fields, ready to be logged.
public struct RaceEvent: Sendable, Equatable {
    public var pattern: RacePattern
    public var fields: [String: String]

    public init(_ pattern: RacePattern, _ fields: [String: String] = [:]) {
        self.pattern = pattern
        self.fields = fields
    }
}
