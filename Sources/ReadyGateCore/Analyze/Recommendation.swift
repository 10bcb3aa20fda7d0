/// Which gate, delay and handshake timeout a log suggests, with the evidence behind each choice.
///
/// The rules, from the log's sessions:
/// - Delay- or ping-gate sessions that ended `upstream_error_after_ready` mean the delay was too
///   short; the ping gate is recommended (its delay counts from the backend's pong, which follows
///   the backend's load), and the delay:
///   start at the delay the adaptive delay ended at (every failure waited less), or, when it did
///   not move (`READYGATE_ADAPTIVE=false`), at twice the largest delay; at most half the
///   handshake timeout, with the adaptive delay and replay on. The message gate instead when the
///   log has message-gate sessions and none of them failed that way.
/// - `ready_timeout` sessions mean the timeout was too short: twice the timeout (or twice the
///   time-to-READY p99, if more), rounded up to 100 ms.
/// - A time-to-READY p99 above half the timeout: the timeout is near; twice the p99.
/// - Otherwise the gate, delay and timeout the log ran with are kept.
public struct Recommendation: Sendable, Equatable {
    public var gate: ReadyGateMode
    /// The delay gate's delay (nil for the message gate).
    public var delayMs: Int?
    /// Whether to turn the adaptive delay on (nil: no opinion, the message gate).
    public var adaptive: Bool?
    /// Whether to turn transparent replay on.
    public var replay: Bool
    public var handshakeTimeoutMs: Int
    /// The log lines' facts behind the choices, one sentence each.
    public var evidence: [String]

    public init(
        gate: ReadyGateMode,
        delayMs: Int?,
        adaptive: Bool?,
        replay: Bool,
        handshakeTimeoutMs: Int,
        evidence: [String]
    ) {
        self.gate = gate
        self.delayMs = delayMs
        self.adaptive = adaptive
        self.replay = replay
        self.handshakeTimeoutMs = handshakeTimeoutMs
        self.evidence = evidence
    }

    /// The recommendation for a log; nil when it has no session summaries.
    public init?(_ analysis: LogAnalysis) {
        guard !analysis.sessions.isEmpty else { return nil }
        var evidence: [String] = []
        let timing = Self.timing(analysis, evidence: &evidence)
        let patterns = analysis.patternsBySession
        func failedAfterReady(_ gates: Set<ReadyGateMode>) -> (failed: Int, of: Int) {
            let sessions = analysis.sessions.filter { ReadyGateMode(rawValue: $0.gate).map(gates.contains) ?? false }
            let failed = sessions.filter {
                patterns[$0.session]?.contains(RacePattern.upstreamErrorAfterReady.rawValue) == true
            }
            return (failed.count, sessions.count)
        }

        // The handshake timeout first: it bounds the delay.
        let timeout = Self.handshakeTimeout(
            analysis,
            patterns: patterns,
            currentMs: timing.timeoutMs,
            evidence: &evidence
        )

        // The gate and its delay.
        let delay = failedAfterReady([.delay, .ping])
        let message = failedAfterReady([.message])
        let largestDelay = ([timing.baseDelayMs] + analysis.delayChanges.map(\.newMs)).max()!
        let changes = analysis.delayChanges.count
        let replays = analysis.replays
        var gate = Self.mostUsedGate(analysis) ?? timing.gate
        var delayMs: Int? = gate != .message ? analysis.delayChanges.last?.newMs ?? timing.baseDelayMs : nil
        var adaptive: Bool? = gate != .message ? (changes > 0 ? true : nil) : nil
        var replay = false
        if delay.failed > 0 {
            evidence.append(
                "\(delay.failed) of \(delay.of) delay- and ping-gate sessions (\(Self.percent(delay.failed, delay.of))) ended "
                    + "upstream_error_after_ready: the backend failed right after READY, the delay was too short"
            )
            if message.of > 0 && message.failed == 0 {
                gate = .message
                delayMs = nil
                adaptive = nil
                evidence.append("none of the \(message.of) message-gate sessions failed after READY")
            } else {
                if gate != .ping {
                    evidence.append(
                        "the ping gate counts the delay from the backend's pong to a proxy ping, which comes as late "
                            + "as the backend's event loop is behind"
                    )
                }
                gate = .ping
                adaptive = true
                delayMs = Self.delay(
                    after: analysis.delayChanges,
                    largest: largestDelay,
                    capMs: max(1, timeout / 2),
                    evidence: &evidence
                )
            }
            replay = true
            if replays.total == 0 {
                evidence.append(
                    "no replays ran: READYGATE_REPLAY=true hides these failures from clients when the backend "
                        + "fails before acting on the first message"
                )
            } else {
                evidence.append(
                    "\(replays.sessions) sessions were replayed (\(replays.total) replays): "
                        + "keep READYGATE_REPLAY=true"
                )
            }
        } else if delay.of > 0 {
            evidence.append("0 of \(delay.of) delay- and ping-gate sessions failed after READY")
        }
        if message.failed > 0 {
            evidence.append(
                "\(message.failed) of \(message.of) message-gate sessions ended upstream_error_after_ready: "
                    + "the backend sends its ready message before it is ready"
            )
        }
        self.init(
            gate: gate,
            delayMs: delayMs,
            adaptive: adaptive,
            replay: replay,
            handshakeTimeoutMs: timeout,
            evidence: evidence
        )
    }

    /// The handshake timeout: larger after `ready_timeout`s, or when the time-to-READY p99 is near it.
    private static func handshakeTimeout(
        _ analysis: LogAnalysis,
        patterns: [String: Set<String>],
        currentMs: Int,
        evidence: inout [String]
    ) -> Int {
        let timeouts = patterns.values.filter { $0.contains(RacePattern.readyTimeout.rawValue) }.count
        let p99 = analysis.allReadyTimes?.p99
        if timeouts > 0 {
            evidence.append(
                "\(timeouts) of \(analysis.sessions.count) sessions hit ready_timeout: the gate did not pass "
                    + "within the \(currentMs) ms handshake timeout"
            )
            return roundUp(max(2 * currentMs, 2 * (p99 ?? 0)))
        }
        guard let p99 else {
            evidence.append("no session reached READY")
            return currentMs
        }
        guard 2 * p99 > currentMs else {
            evidence.append("time to READY p99 is \(p99) ms, within the \(currentMs) ms handshake timeout")
            return currentMs
        }
        evidence.append("time to READY p99 is \(p99) ms, more than half the \(currentMs) ms handshake timeout")
        return roundUp(2 * p99)
    }

    /// The delay-gate delay to start with when sessions failed after READY: where the adaptive
    /// delay ended (every failure waited less: one that waited it would have grown it again),
    /// else twice the largest delay seen; at most `capMs`.
    private static func delay(
        after changes: [DelayChange],
        largest: Int,
        capMs: Int,
        evidence: inout [String]
    ) -> Int {
        guard let last = changes.last else {
            let delay = min(capMs, 2 * largest)
            evidence.append(
                "no gate_delay_changed events (READYGATE_ADAPTIVE=false?): twice the \(largest) ms delay, \(delay) ms, "
                    + "and the adaptive delay on"
            )
            if largest >= capMs { evidence.append(cannotHelp(capMs)) }
            return delay
        }
        if last.newMs >= capMs {
            evidence.append(
                "the adaptive delay changed \(changes.count) times and reached \(last.newMs) ms (\(last.time))"
            )
            evidence.append(cannotHelp(capMs))
            return capMs
        }
        evidence.append(
            "the adaptive delay changed \(changes.count) times and ended at \(last.newMs) ms (\(last.time)); the "
                + "sessions that failed waited less (one that waited \(last.newMs) ms and failed would have grown it): "
                + "start there"
        )
        return last.newMs
    }

    private static func cannotHelp(_ capMs: Int) -> String {
        "the delay is at half the handshake timeout (\(capMs) ms): a longer delay cannot help; use the message gate "
            + "if the backend can send a ready message, or replay"
    }

    /// The timing the log ran with: its `listening` line's, else the profile of its sessions'
    /// environment (production when unknown).
    private static func timing(
        _ analysis: LogAnalysis,
        evidence: inout [String]
    ) -> (gate: ReadyGateMode, baseDelayMs: Int, timeoutMs: Int) {
        let environmentName =
            analysis.start?.environment ?? LogAnalysis.counted(analysis.sessions.map(\.environment)).first?.0
        let environment = environmentName.flatMap(DeploymentEnvironment.init(rawValue:)) ?? .production
        let profile = environment.profile
        let gate = analysis.start?.gate.flatMap(ReadyGateMode.init(rawValue:)) ?? .ping
        if let start = analysis.start, let timeout = start.handshakeTimeoutMs {
            let base = start.baseDelayMs ?? profile.baseDelayMs
            evidence.append("ran with handshake timeout \(timeout) ms, base delay \(base) ms (the listening line)")
            return (gate, base, timeout)
        }
        evidence.append(
            "no listening line: assumed the \(environment) profile (handshake timeout "
                + "\(profile.handshakeTimeoutMs) ms, base delay \(profile.baseDelayMs) ms)"
        )
        return (gate, profile.baseDelayMs, profile.handshakeTimeoutMs)
    }

    private static func mostUsedGate(_ analysis: LogAnalysis) -> ReadyGateMode? {
        LogAnalysis.counted(analysis.sessions.map(\.gate)).lazy.compactMap { ReadyGateMode(rawValue: $0.0) }.first
    }

    static func roundUp(_ ms: Int) -> Int { max(100, (ms + 99) / 100 * 100) }

    static func percent(_ part: Int, _ whole: Int) -> String {
        guard whole > 0 else { return "0%" }
        let tenths = (part * 1000 + whole / 2) / whole
        return "\(tenths / 10).\(tenths % 10)%"
    }
}
