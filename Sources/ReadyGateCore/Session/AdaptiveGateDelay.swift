/// The delay gate's delay for one upstream, learned from how its sessions end.
///
/// A fixed delay counted from the backend's `101` guesses how long the backend's handler needs;
/// under a burst the backend falls behind and the guess is short. So the delay grows
/// multiplicatively each time a session's backend fails right after READY
/// (`upstream_error_after_ready`), and decays slowly — an eighth of the way back to the base
/// after every ``cleanSessionsPerStep`` clean sessions, and no sooner than ``decayIntervalMs``
/// after the last change, so that the clean sessions of one burst do not undo what the burst
/// taught — always between the profile's base delay and half the handshake timeout (the other
/// half is left for the connect and the `101`).
///
/// Only sessions that waited the current delay count: a burst of sessions that all started with
/// one delay moves it one step, not one step per session (which would double a 25 ms delay to
/// the cap on one burst's failures, and decay it back to the base on the next burst's successes).
///
/// A value type; the proxy keeps one per upstream behind a lock, shared by every event loop.
public struct AdaptiveGateDelay: Sendable, Equatable {
    /// A change of the delay, for the `gate_delay_changed` log event.
    public struct Change: Sendable, Equatable {
        public var oldMs: Int
        public var newMs: Int
        /// `upstream_error_after_ready` (grew) or `clean_sessions` (decayed).
        public var reason: String
    }

    /// Clean sessions between two decay steps.
    public static let cleanSessionsPerStep = 20
    /// The least time between a change and a decay step.
    public static let decayIntervalMs = 10_000

    public let baseMs: Int
    public let capMs: Int
    public private(set) var currentMs: Int
    private var cleanSessions = 0
    private var lastChangeAtMs: Int?

    public init(timing: TimingProfile) {
        self.baseMs = timing.baseDelayMs
        self.capMs = max(timing.baseDelayMs, timing.handshakeTimeoutMs / 2)
        self.currentMs = timing.baseDelayMs
    }

    /// A gated session that waited `waitedMs` ended (or failed: a failure is reported as soon as
    /// it is seen). `reachedReady`: its gate passed (a timeout does not count); `failedAfterReady`:
    /// its backend failed right after READY. `atMs`: a monotonic clock. Returns the change, if any.
    public mutating func sessionEnded(
        waitedMs: Int,
        reachedReady: Bool,
        failedAfterReady: Bool,
        atMs: Int
    ) -> Change? {
        guard waitedMs == currentMs else { return nil }
        if failedAfterReady {
            cleanSessions = 0
            let grown = min(capMs, max(currentMs * 2, currentMs + max(1, baseMs)))
            return set(grown, reason: "upstream_error_after_ready", atMs: atMs)
        }
        guard reachedReady, currentMs > baseMs else { return nil }
        cleanSessions += 1
        guard cleanSessions >= Self.cleanSessionsPerStep else { return nil }
        if let lastChangeAtMs, atMs - lastChangeAtMs < Self.decayIntervalMs { return nil }
        cleanSessions = 0
        return set(max(baseMs, currentMs - max(1, (currentMs - baseMs) / 8)), reason: "clean_sessions", atMs: atMs)
    }

    private mutating func set(_ newMs: Int, reason: String, atMs: Int) -> Change? {
        guard newMs != currentMs else { return nil }
        defer {
            currentMs = newMs
            lastChangeAtMs = atMs
        }
        return Change(oldMs: currentMs, newMs: newMs, reason: reason)
    }
}
