/// What one session saw, gathered as it runs; at close it becomes the summary line (DESIGN §4)
/// and the detector's verdicts.
public struct SessionRecord: Sendable {
    /// Who closed first.
    public enum Closer: String, Sendable {
        case client
        case upstream
        case proxy
        case none
    }

    public var id: String
    public var environment: DeploymentEnvironment
    public var acceptMode: AcceptMode
    public var gate: ReadyGateMode
    public var path: String
    /// The delay this session waited after the backend's `101` (delay gate) or its pong (ping gate).
    public var gateDelayMs: Int?
    /// Ping gate: milliseconds from the backend's `101` to its pong (the last backend session's).
    public var pongAfterMs: Int?
    /// How many times the backend session was replaced by a replay (`READYGATE_REPLAY`).
    public var replays = 0
    /// Milliseconds since start at which each state was entered.
    public var stateTimes = SessionStateTimes()
    public var clientToUpstream: WebSocketTrafficStats {
        get { traffic?.clientToUpstream ?? WebSocketTrafficStats() }
        set { traffic = Traffic(clientToUpstream: newValue, upstreamToClient: upstreamToClient) }
    }
    public var upstreamToClient: WebSocketTrafficStats {
        get { traffic?.upstreamToClient ?? WebSocketTrafficStats() }
        set { traffic = Traffic(clientToUpstream: clientToUpstream, upstreamToClient: newValue) }
    }
    /// The two directions' counters are set at the session's end (and when a replay lets a backend
    /// connection go), so a live record keeps a nil reference instead of 120 bytes of zeros; every
    /// set makes a new box, so copies of the record never share a change.
    private var traffic: Traffic?
    /// Client frames and bytes held before READY.
    public var earlyFrames = 0
    public var earlyBytes = 0
    /// Milliseconds since start of the first held client frame.
    public var firstEarlyFrameAtMs: Int?
    public var connectAttempts = 0
    public var upstreamStatus: Int?
    public var backpressureEvents = 0
    /// The most client bytes held at once before READY.
    public var peakHeldBytes = 0
    public var closer: Closer = .none
    /// Whether each peer sent a close frame, and its code (nil: an empty close body).
    public var clientSentClose = false
    public var clientCloseCode: UInt16?
    public var upstreamSentClose = false
    public var upstreamCloseCode: UInt16?
    public var endReason: SessionCloseReason?
    public var patterns: [RacePattern] = []
    /// Held frames that were never delivered (the session ended before READY).
    public var undeliveredFrames = 0
    public var undeliveredBytes = 0

    public init(
        id: String,
        environment: DeploymentEnvironment,
        acceptMode: AcceptMode,
        gate: ReadyGateMode,
        path: String
    ) {
        self.id = id
        self.environment = environment
        self.acceptMode = acceptMode
        self.gate = gate
        self.path = path
    }

    /// Notes a pattern once per session; returns whether it was new.
    @discardableResult
    public mutating func note(_ pattern: RacePattern) -> Bool {
        guard !patterns.contains(pattern) else { return false }
        patterns.append(pattern)
        return true
    }

    private final class Traffic: Sendable {
        let clientToUpstream: WebSocketTrafficStats
        let upstreamToClient: WebSocketTrafficStats

        init(clientToUpstream: WebSocketTrafficStats, upstreamToClient: WebSocketTrafficStats) {
            self.clientToUpstream = clientToUpstream
            self.upstreamToClient = upstreamToClient
        }
    }

    /// The summary line's fields, in a stable order.
    public var summaryFields: [(String, String)] {
        var fields: [(String, String)] = [
            ("session", id), ("environment", environment.rawValue), ("accept_mode", acceptMode.rawValue),
            ("gate", gate.rawValue), ("path", path),
        ]
        for state in SessionState.allCases {
            if let at = stateTimes[state] { fields.append(("t_\(state.rawValue.lowercased())_ms", String(at))) }
        }
        fields += [
            ("frames_in", String(clientToUpstream.frames)), ("bytes_in", String(clientToUpstream.bytes)),
            ("messages_in", String(clientToUpstream.messages)),
            ("frames_out", String(upstreamToClient.frames)), ("bytes_out", String(upstreamToClient.bytes)),
            ("messages_out", String(upstreamToClient.messages)),
            ("early_frames", String(earlyFrames)), ("early_bytes", String(earlyBytes)),
            ("peak_held_bytes", String(peakHeldBytes)),
            ("connect_attempts", String(connectAttempts)), ("replays", String(replays)),
            ("client_close_code", Self.closeCodeField(sent: clientSentClose, code: clientCloseCode)),
            ("upstream_close_code", Self.closeCodeField(sent: upstreamSentClose, code: upstreamCloseCode)),
            ("closed_by", closer.rawValue),
            ("end_reason", endReason?.name ?? "-"),
            ("patterns", patterns.map(\.rawValue).joined(separator: ",")),
        ]
        if let upstreamStatus { fields.append(("upstream_status", String(upstreamStatus))) }
        if let gateDelayMs { fields.append(("gate_delay_ms", String(gateDelayMs))) }
        if let pongAfterMs { fields.append(("pong_after_ms", String(pongAfterMs))) }
        if undeliveredFrames > 0 {
            fields.append(("undelivered_frames", String(undeliveredFrames)))
            fields.append(("undelivered_bytes", String(undeliveredBytes)))
        }
        return fields
    }

    /// `-`: no close frame; `1005`: a close frame without a code (RFC 6455 §7.4.1's name for it).
    private static func closeCodeField(sent: Bool, code: UInt16?) -> String {
        guard sent else { return "-" }
        return String(code ?? 1005)
    }
}

/// The race detector's thresholds (the session state machine decides when each pattern fires).
public struct RaceDetector: Sendable {
    public var timing: TimingProfile

    public init(timing: TimingProfile) { self.timing = timing }

    /// A 101 later than this is `upstream_slow_handshake`: half the handshake timeout.
    public var slowHandshakeThresholdMs: Int { max(1, timing.handshakeTimeoutMs / 2) }

    /// After READY, a backend close with 1011/1006 within this window means the gate was too short.
    public var errorAfterReadyWindowMs: Int { max(timing.handshakeTimeoutMs, 10 * timing.baseDelayMs) }
}
