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
    /// Milliseconds since start at which each state was entered.
    public var stateTimes = SessionStateTimes()
    public var clientToUpstream = WebSocketTrafficStats()
    public var upstreamToClient = WebSocketTrafficStats()
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
            ("connect_attempts", String(connectAttempts)),
            ("client_close_code", clientToUpstream.closeCode.map(String.init) ?? "-"),
            ("upstream_close_code", upstreamToClient.closeCode.map(String.init) ?? "-"),
            ("closed_by", closer.rawValue),
            ("end_reason", endReason?.name ?? "-"),
            ("patterns", patterns.map(\.rawValue).joined(separator: ",")),
        ]
        if let upstreamStatus { fields.append(("upstream_status", String(upstreamStatus))) }
        if undeliveredFrames > 0 {
            fields.append(("undelivered_frames", String(undeliveredFrames)))
            fields.append(("undelivered_bytes", String(undeliveredBytes)))
        }
        return fields
    }
}

/// Turns what a session saw into named race patterns (DESIGN §4). Pure: the proxy logs and
/// counts what it returns.
public struct RaceDetector: Sendable {
    public var timing: TimingProfile

    public init(timing: TimingProfile) { self.timing = timing }

    /// A 101 later than this is `upstream_slow_handshake`: half the handshake timeout.
    public var slowHandshakeThresholdMs: Int { max(1, timing.handshakeTimeoutMs / 2) }

    /// After READY, a backend close with 1011/1006 within this window means the gate was too short.
    public var errorAfterReadyWindowMs: Int { max(timing.handshakeTimeoutMs, 10 * timing.baseDelayMs) }

    /// Verdict when the backend answered 101 at `atMs` (since start).
    public func upstreamUpgraded(atMs: Int, record: inout SessionRecord) -> RaceEvent? {
        guard atMs > slowHandshakeThresholdMs, record.note(.upstreamSlowHandshake) else { return nil }
        return RaceEvent(
            .upstreamSlowHandshake,
            ["handshake_ms": String(atMs), "threshold_ms": String(slowHandshakeThresholdMs)]
        )
    }

    /// Verdict when the backend closed after READY (code nil: the connection dropped, 1006).
    public func upstreamClosed(code: UInt16?, atMs: Int, record: inout SessionRecord) -> RaceEvent? {
        guard let readyAt = record.stateTimes[.readyForMessages] else { return nil }
        let effective = code ?? 1006
        guard effective == 1011 || effective == 1006 else { return nil }
        let since = atMs - readyAt
        guard since <= errorAfterReadyWindowMs, record.note(.upstreamErrorAfterReady) else { return nil }
        return RaceEvent(.upstreamErrorAfterReady, ["close_code": String(effective), "ms_after_ready": String(since)])
    }
}
