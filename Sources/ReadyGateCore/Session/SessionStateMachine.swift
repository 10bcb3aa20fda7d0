/// The readiness protocol of one WebSocket session as a pure state machine.
///
/// The proxy's session feeds it what happened (an event per method) and performs the ``Action``s
/// it returns; it decides nothing on its own. Every decision lives here: which upstream answers
/// are retried, which attempts are stale, which HTTP status or close code an ending gets, how the
/// close handshake finishes in whatever order the two sides close, who closed, and which race
/// patterns fire. Times are milliseconds since the session started, passed in, so every path is
/// testable without a clock or a channel.
///
/// The machine keeps the session's ``SessionRecord`` up to date as it goes (state times, who
/// closed, the end reason, close codes, patterns, early and undelivered frames); the proxy adds
/// the traffic counters when the session ends.
///
/// Its shape follows NIO's `NIOTypedHTTPServerUpgraderStateMachine`: a private ``State`` enum whose
/// cases carry their own data, `mutating` event methods that return actions, and impossible
/// transitions that are named and fail loudly (``invalidTransition(_:nowMs:)``).
public struct SessionStateMachine: Sendable {
    /// One side of the session.
    public enum Side: String, Sendable, Equatable {
        case client
        case upstream
    }

    /// What the session must do next, in the order returned.
    public enum Action: Sendable, Equatable {
        /// Bound INITIALIZING → READY_FOR_MESSAGES: call ``handshakeTimedOut(nowMs:)`` after `ms`.
        case armHandshakeTimeout(ms: Int)
        /// Send the client its `101` (or, over HTTP/2, its `200`) and install the hold.
        case acceptClient
        /// Open upstream connection number `attempt` and send the upgrade request.
        case connectUpstream(attempt: Int)
        /// Call ``retryDue(attempt:nowMs:)`` after `afterMs`.
        case retryConnect(attempt: Int, afterMs: Int)
        /// Close that attempt's upstream channel: it failed, was refused, or is stale.
        case dropUpstreamAttempt(attempt: Int)
        /// The backend's verified `101`: turn its channel into a relay half. With `watchForReadyMessage`
        /// the watcher looks for the ready message from the first byte after the `101`.
        case switchUpstream(watchForReadyMessage: Bool)
        /// Call ``gateDelayElapsed(adaptedDelayMs:nowMs:)`` after `ms` (delay and ping gates).
        case armGateDelay(ms: Int)
        /// Ping gate: send the backend a ping of the proxy's own and take its pong out of the
        /// backend's stream; report the pong with ``gatePongReceived(nowMs:)``.
        case sendGatePing
        /// Replay: from now on keep a copy of what the client sends the backend (the held frames
        /// first) and keep the backend's close frames back; call ``replayWindowEnded(nowMs:)`` after
        /// `ms`. Comes before ``flushAndSplice``.
        case openReplayWindow(ms: Int)
        /// No replay can follow any more: drop the copy and let the backend's stream through unfiltered
        /// (a close frame kept back goes on to the client first).
        case closeReplayWindow
        /// The backend failed the session right after READY (`closeCode`: its 1011, or 1006 for a lost
        /// connection): let go of its connection (and of its kept-back close), and hold the copy of
        /// the client's frames again, for the next upstream attempt. Replay number `number`.
        case replay(number: Int, closeCode: UInt16)
        /// READY: hand the held client frames to the relay in order, then splice both ways.
        case flushAndSplice
        /// Let go of the held client frames (the session ended before READY); they are counted as
        /// undelivered in the record.
        case dropHeldFrames
        /// Cancel the handshake, gate and retry timers.
        case cancelTimers
        /// Answer the client over HTTP (it has no `101`) and close its connection.
        case respondHTTP(status: Int, reason: SessionCloseReason)
        /// `upstream` accept mode: relay the backend's refusal as it was, then close.
        case relayUpstreamResponse(status: Int)
        /// Write a close frame the proxy made to `side` (masked towards the upstream), with `code`
        /// (nil: an empty close body) and `reason`.
        case sendClose(to: Side, code: UInt16?, reason: String)
        /// Close `side`'s connection once what was written to it is flushed.
        case closeChannel(Side)
        /// Close `side`'s output (a TCP half-close) once what was written to it is flushed.
        case passHalfClose(to: Side)
        /// Call ``closeLingerExpired(nowMs:)`` after `ms`: the peer had that long to answer a close.
        case armCloseLinger(ms: Int)
        /// The session ended while the upgrade of `attempt` was in flight: when that channel is
        /// connected, let its answer come (``upstreamUpgraded(attempt:nowMs:)`` then closes it
        /// properly); otherwise close it. Either way, at most after `withinMs`.
        case abandonUpstreamAttempt(attempt: Int, withinMs: Int)
        /// Log and count a race pattern (noted in the record already).
        case notePattern(RaceEvent)
        /// Log a bug: an event the machine does not allow in its state (the session then ends with 1011).
        case logInvalidTransition(InvalidSessionTransition)
    }

    /// Fixed inputs of one session.
    public struct Configuration: Sendable, Equatable {
        public var acceptMode: AcceptMode
        public var gate: ReadyGateMode
        public var timeoutAction: ReadyTimeoutAction
        public var timing: TimingProfile
        /// How long a peer may take to answer a close frame (`READYGATE_CLOSE_LINGER_MS`).
        public var closeLingerMs: Int
        /// `READYGATE_MAX_BUFFER_BYTES`, for the backpressure event's fields.
        public var maxBufferBytes: Int
        /// The delay gate's delay for this session (adapted, or the profile's base delay).
        public var gateDelayMs: Int
        /// How many times the backend session may be replayed (0: replay off).
        public var replayAttempts: Int

        public init(
            acceptMode: AcceptMode,
            gate: ReadyGateMode,
            timeoutAction: ReadyTimeoutAction,
            timing: TimingProfile,
            closeLingerMs: Int,
            maxBufferBytes: Int,
            gateDelayMs: Int? = nil,
            replayAttempts: Int = 0
        ) {
            self.acceptMode = acceptMode
            self.gate = gate
            self.timeoutAction = timeoutAction
            self.timing = timing
            self.closeLingerMs = closeLingerMs
            self.maxBufferBytes = maxBufferBytes
            self.gateDelayMs = gateDelayMs ?? timing.baseDelayMs
            self.replayAttempts = replayAttempts
        }
    }

    // MARK: States

    /// The handshake is in flight (HANDSHAKE_PENDING).
    struct Connecting: Sendable, Equatable {
        /// The attempt whose answers count; any other is stale.
        var attempt: Int
        /// A retry is scheduled for `attempt` and has not started yet.
        var retryPending = false
        var failures = 0
        var clientAccepted: Bool
        /// The client half-closed while its frames were held: passed on after the flush.
        var clientInputClosed = false
    }

    /// The backend answered `101`; the gate has not passed (CONNECTED).
    struct Connected: Sendable, Equatable {
        var upgradedAtMs: Int
        var clientInputClosed: Bool
        /// Ping gate: the pong to the proxy's ping has not come yet.
        var awaitingPong = false
        /// When the gate's delay started (the `101`, or the pong); nil before.
        var delayStartedAtMs: Int?
    }

    /// What each side has done towards the end of the session.
    struct CloseProgress: Sendable, Equatable {
        /// A close frame from the peer on that side passed (relayed, or answered by the proxy).
        var clientSentClose = false
        var upstreamSentClose = false
        /// The proxy wrote a close frame of its own to that side.
        var proxyClosedClient = false
        var proxyClosedUpstream = false
        /// The peer on that side ended its output (FIN), or its connection is gone.
        var clientInputClosed = false
        var upstreamInputClosed = false
        var clientGone = false
        var upstreamGone = false
        /// The proxy asked for that side's connection to be closed.
        var clientClosing = false
        var upstreamClosing = false
        var lingerArmed = false

        /// Whether the client has both sent and been sent a close frame.
        var clientHandshakeDone: Bool { clientSentClose && (upstreamSentClose || proxyClosedClient) }
    }

    /// Spliced (READY_FOR_MESSAGES), possibly with a close handshake under way.
    struct Relaying: Sendable, Equatable {
        var readyAtMs: Int
        var close: CloseProgress
        /// A replay may still follow (``Action/openReplayWindow(ms:)`` was returned, its close not yet).
        var replayWindowOpen = false
    }

    /// Ended before READY (ERROR when the proxy ended it, else CLOSED): the channels are being
    /// closed. `upstreamLive` is true when the upstream was switched to WebSocket bytes.
    struct Ending: Sendable, Equatable {
        var close: CloseProgress
        var upstreamLive: Bool
        /// The upgrade in flight when the session ended, and the close frame it owes the backend.
        var abandoned: (attempt: Int, code: UInt16, reason: String)?
        var clientAccepted: Bool

        static func == (lhs: Ending, rhs: Ending) -> Bool {
            lhs.close == rhs.close && lhs.upstreamLive == rhs.upstreamLive
                && lhs.abandoned?.attempt == rhs.abandoned?.attempt && lhs.abandoned?.code == rhs.abandoned?.code
                && lhs.abandoned?.reason == rhs.abandoned?.reason && lhs.clientAccepted == rhs.clientAccepted
        }
    }

    enum State: Sendable, Equatable {
        case initializing
        case connecting(Connecting)
        case connected(Connected)
        case relaying(Relaying)
        case ending(Ending)
        case closed
    }

    var state: State = .initializing
    /// The newest upstream attempt number handed out.
    var latestAttempt = 0
    /// When the handshake now under way began: the session's start, or its latest replay. The
    /// handshake timeout and the retry deadline count from here.
    var handshakeStartMs = 0
    /// Replays done so far.
    var replaysDone = 0
    /// A data frame of the current backend session has started reaching the client: no replay then.
    var backendDataDelivered = false

    /// The phase reported in logs and the summary (DESIGN's six states).
    public internal(set) var phase: SessionState = .initializing
    public internal(set) var configuration: Configuration
    /// The accept mode in force for this session (``start(clientOfferedSubprotocols:subprotocolsConfigured:nowMs:)``
    /// may turn `immediate` into `upstream`).
    public var acceptMode: AcceptMode { configuration.acceptMode }
    /// What the session saw, kept by the machine.
    public internal(set) var record: SessionRecord
    /// Events refused in their state: each is a bug in the caller.
    public internal(set) var invalidTransitions: [InvalidSessionTransition] = []
    /// Whether an impossible transition traps (debug builds) or ends the session with 1011 (release).
    let trapsOnInvalidTransition: Bool

    /// Made from the configuration when needed: a live session keeps one copy of its timing.
    var retry: ProgressiveDelay {
        ProgressiveDelay(baseMs: configuration.timing.baseDelayMs, capMs: configuration.timing.retryCapMs)
    }
    var detector: RaceDetector { RaceDetector(timing: configuration.timing) }

    public init(
        configuration: Configuration,
        record: SessionRecord,
        trapsOnInvalidTransition: Bool = _isDebugAssertConfiguration()
    ) {
        self.configuration = configuration
        self.record = record
        self.trapsOnInvalidTransition = trapsOnInvalidTransition
        self.record.stateTimes = [.initializing: 0]
    }

    /// Whether client frames are still held (the hold is in front of the relay).
    public var isHoldingClientFrames: Bool {
        switch state {
        case .initializing, .connecting, .connected: true
        case .relaying, .ending, .closed: false
        }
    }

    /// Whether the session is spliced and nobody has started to close it: the proxy may still
    /// write frames of its own (keepalive pings) to either side.
    public var isSpliceOpen: Bool {
        guard case .relaying(let relaying) = state else { return false }
        let close = relaying.close
        return
            !(close.clientSentClose || close.upstreamSentClose || close.proxyClosedClient
            || close.proxyClosedUpstream || close.clientInputClosed || close.upstreamInputClosed)
    }

    /// Whether the session has ended or is ending (no new upstream work starts).
    public var hasEnded: Bool {
        switch state {
        case .ending, .closed: true
        case .initializing, .connecting, .connected, .relaying: false
        }
    }

    // MARK: Shared steps

    mutating func enter(_ next: SessionState, nowMs: Int) {
        guard phase != next else { return }
        phase = next
        record.stateTimes[next] = nowMs
    }

    /// Notes `pattern` once per session; returns the action that logs it, if it is new.
    mutating func note(_ pattern: RacePattern, _ fields: [String: String] = [:]) -> [Action] {
        record.note(pattern) ? [.notePattern(RaceEvent(pattern, fields))] : []
    }

    mutating func setCloser(_ closer: SessionRecord.Closer) {
        if record.closer == .none { record.closer = closer }
    }

    /// An event that cannot happen in the current state: a bug in the caller. Traps in debug
    /// builds; in release the session ends with `1011 internal error` and the bug is logged.
    mutating func invalidTransition(_ event: String, nowMs: Int) -> [Action] {
        let transition = InvalidSessionTransition(from: phase, event: event)
        invalidTransitions.append(transition)
        if trapsOnInvalidTransition {
            preconditionFailure("\(transition)")
        }
        return [.logInvalidTransition(transition)] + end(.internalError, nowMs: nowMs)
    }

    /// The proxy ends the session (ERROR): the held frames are dropped, the upstream is let go with
    /// a close frame saying why, and the client gets an HTTP error (no `101` yet) or a close frame.
    /// `droppingAttempt`: the attempt in flight is being dropped with this ending, not abandoned.
    mutating func end(_ reason: SessionCloseReason, nowMs: Int, droppingAttempt: Int? = nil) -> [Action] {
        let clientAccepted: Bool
        var close = CloseProgress()
        var upstreamLive = false
        var actions: [Action] = []
        var abandonedAttempt: Int?
        switch state {
        case .initializing:
            clientAccepted = false
        case .connecting(let connecting):
            clientAccepted = connecting.clientAccepted
            close.clientInputClosed = connecting.clientInputClosed
            if !connecting.retryPending && connecting.attempt != droppingAttempt {
                abandonedAttempt = connecting.attempt
            }
        case .connected(let connected):
            clientAccepted = true
            close.clientInputClosed = connected.clientInputClosed
            upstreamLive = true
        case .relaying(var relaying):
            // After READY the proxy ends a session only by closing it towards both sides.
            record.endReason = record.endReason ?? reason
            setCloser(.proxy)
            actions += closeReplayWindow(&relaying)
            actions += closeRelayed(&relaying.close, reason: reason, clientCode: reason.closeCode)
            state = .relaying(relaying)
            return actions
        case .ending, .closed:
            return []
        }
        record.endReason = reason
        setCloser(.proxy)
        enter(.error, nowMs: nowMs)
        actions += [.cancelTimers] + dropHeld()
        let upstreamReason = "proxy ended session: \(reason.name)"
        var ending = Ending(close: close, upstreamLive: upstreamLive, abandoned: nil, clientAccepted: clientAccepted)
        if upstreamLive {
            ending.close.proxyClosedUpstream = true
            ending.close.upstreamClosing = true
            actions += [.sendClose(to: .upstream, code: 1001, reason: upstreamReason), .closeChannel(.upstream)]
        } else if let attempt = abandonedAttempt {
            ending.abandoned = (attempt, 1001, upstreamReason)
            actions.append(.abandonUpstreamAttempt(attempt: attempt, withinMs: remainingHandshakeMs(nowMs: nowMs)))
        }
        if clientAccepted {
            ending.close.proxyClosedClient = true
            actions.append(.sendClose(to: .client, code: reason.closeCode, reason: reason.reasonText))
            if reason.failsClientAtOnce {
                ending.close.clientClosing = true
                actions.append(.closeChannel(.client))
            } else {
                ending.close.lingerArmed = true
                actions.append(.armCloseLinger(ms: configuration.closeLingerMs))
            }
        } else {
            ending.close.clientClosing = true
            actions.append(.respondHTTP(status: reason.httpStatus, reason: reason))
        }
        state = .ending(ending)
        return actions
    }

    /// The held frames will never be delivered: counted, and the hold told to let go.
    mutating func dropHeld() -> [Action] {
        record.undeliveredFrames = record.earlyFrames
        record.undeliveredBytes = record.earlyBytes
        return [.dropHeldFrames]
    }

    /// When the handshake now under way must be done, in milliseconds since the session started.
    var handshakeDeadlineMs: Int { handshakeStartMs + configuration.timing.handshakeTimeoutMs }

    /// What is left of the handshake timeout (at least 1 ms): the bound of a connect started now.
    public func remainingHandshakeMs(nowMs: Int) -> Int {
        max(1, handshakeDeadlineMs - nowMs)
    }
}

/// An event the session state machine does not allow in the state it came in.
public struct InvalidSessionTransition: Error, Sendable, Equatable, CustomStringConvertible {
    public var from: SessionState
    public var event: String

    public init(from: SessionState, event: String) {
        self.from = from
        self.event = event
    }

    public var description: String { "invalid session event \(event) in \(from)" }
}
