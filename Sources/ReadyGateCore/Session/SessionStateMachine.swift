/// The readiness protocol of one WebSocket session as a pure state machine (DESIGN §2).
///
/// The proxy's session handler feeds it what happened and performs the ``Action``s it returns;
/// it never decides on its own. Times are milliseconds since the session started, passed in,
/// so every path is testable without a clock or a channel.
public struct SessionStateMachine: Sendable {
    /// What the session handler must do next.
    public enum Action: Sendable, Equatable {
        /// Open (or re-open) the upstream connection and send the upgrade request.
        case connectUpstream
        /// Try the upstream again after a delay.
        case retryConnect(afterMs: Int)
        /// Send the client its `101 Switching Protocols`.
        case acceptClient
        /// Pass the gate after this many milliseconds (delay gate).
        case armReadyDelay(ms: Int)
        /// Watch the backend's data frames for the ready message (message gate).
        case awaitReadyMessage
        /// Flush the buffered client frames in order, then splice both ways.
        case flushAndSplice(timedOut: Bool)
        /// Relay the backend's non-101 response to the client as it is (`upstream` accept mode).
        case relayUpstreamResponse(status: Int)
        /// End the session: a close frame when the client has its 101, else an HTTP error.
        case end(SessionCloseReason)
        /// The client ended the session while not ready: finish its close handshake and abandon the
        /// upstream (with a masked close frame when it is connected).
        case abandonUpstream(clientClosedCleanly: Bool)
        /// Nothing to do.
        case none
    }

    public private(set) var state: SessionState = .initializing
    /// The accept mode in force for this session (``start(clientOfferedSubprotocols:)`` may turn
    /// `immediate` into `upstream`).
    public private(set) var acceptMode: AcceptMode
    public let gate: ReadyGateMode
    public let timeoutAction: ReadyTimeoutAction
    public let timing: TimingProfile
    /// Why the proxy ended the session, recorded once.
    public private(set) var endReason: SessionCloseReason?
    /// Whether the client has been sent its 101.
    public private(set) var clientAccepted = false
    /// Upstream connect attempts that failed.
    public private(set) var connectFailures = 0
    /// Transitions that were refused: each is a bug in the caller, logged and counted.
    public private(set) var invalidTransitions: [InvalidSessionTransition] = []
    /// Milliseconds since start at which each state was entered.
    public private(set) var enteredAt: SessionStateTimes = [.initializing: 0]

    private let retry: ProgressiveDelay

    public init(acceptMode: AcceptMode, gate: ReadyGateMode, timeoutAction: ReadyTimeoutAction, timing: TimingProfile) {
        self.acceptMode = acceptMode
        self.gate = gate
        self.timeoutAction = timeoutAction
        self.timing = timing
        self.retry = ProgressiveDelay(baseMs: timing.baseDelayMs, capMs: timing.retryCapMs)
    }

    /// Whether client frames must still be held.
    public var isHoldingClientFrames: Bool {
        state == .initializing || state == .handshakePending || state == .connected
    }

    // MARK: Events

    /// The client's upgrade request was valid. In `immediate` mode the client is accepted at once,
    /// unless it offered subprotocols and ReadyGate has none configured: then the backend chooses
    /// (DESIGN §2, "Subprotocols"), so the session behaves as `upstream`.
    public mutating func start(clientOfferedSubprotocols: Bool, subprotocolsConfigured: Bool, nowMs: Int) -> [Action] {
        guard transition(to: .handshakePending, nowMs: nowMs) else { return [] }
        if acceptMode == .immediate && clientOfferedSubprotocols && !subprotocolsConfigured {
            acceptMode = .upstream
        }
        if acceptMode == .immediate {
            clientAccepted = true
            return [.acceptClient, .connectUpstream]
        }
        return [.connectUpstream]
    }

    /// A TCP connect (or the upgrade exchange) failed in a retryable way: refused, reset, timed out,
    /// or the backend answered 502/503/504.
    public mutating func upstreamAttemptFailed(nowMs: Int, using random: inout some RandomNumberGenerator) -> Action {
        guard state == .handshakePending else { return .none }
        let attempt = connectFailures
        connectFailures += 1
        if let delay = retry.delayMs(
            attempt: attempt,
            nowMs: nowMs,
            deadlineMs: timing.handshakeTimeoutMs,
            using: &random
        ) {
            return .retryConnect(afterMs: delay)
        }
        return fail(.upstreamUnavailable, nowMs: nowMs)
    }

    /// The backend answered 101 and its `Sec-WebSocket-Accept` checked out.
    public mutating func upstreamUpgraded(nowMs: Int) -> [Action] {
        guard transition(to: .connected, nowMs: nowMs) else { return [] }
        var actions: [Action] = []
        if !clientAccepted {
            clientAccepted = true
            actions.append(.acceptClient)
        }
        switch gate {
        case .delay:
            if timing.baseDelayMs == 0 {
                actions.append(contentsOf: gatePassed(nowMs: nowMs))
            } else {
                actions.append(.armReadyDelay(ms: timing.baseDelayMs))
            }
        case .message:
            actions.append(.awaitReadyMessage)
        }
        return actions
    }

    /// The backend answered with a final status other than 101 (and not a retryable 502/503/504).
    public mutating func upstreamRejected(status: Int, nowMs: Int) -> Action {
        guard state == .handshakePending else { return .none }
        if !clientAccepted {
            endReason = .upstreamRejected(status: status)
            _ = transition(to: .error, nowMs: nowMs)
            return .relayUpstreamResponse(status: status)
        }
        return fail(.upstreamRejected(status: status), nowMs: nowMs)
    }

    /// The readiness gate passed: the delay elapsed or the ready message arrived.
    ///
    /// A gate event after the session ended (a timer that fired as it was being cancelled, a ready
    /// message racing a timeout) is stale, not a bug: it is ignored without recording a transition.
    public mutating func gatePassed(nowMs: Int) -> [Action] {
        guard !state.isTerminal else { return [] }
        guard transition(to: .readyForMessages, nowMs: nowMs) else { return [] }
        return [.flushAndSplice(timedOut: false)]
    }

    /// The handshake timeout fired. It bounds INITIALIZING → READY_FOR_MESSAGES.
    public mutating func handshakeTimedOut(nowMs: Int) -> [Action] {
        switch state {
        case .initializing, .handshakePending:
            return [fail(.upstreamUnavailable, nowMs: nowMs)]
        case .connected:
            if timeoutAction == .open {
                guard transition(to: .readyForMessages, nowMs: nowMs) else { return [] }
                return [.flushAndSplice(timedOut: true)]
            }
            return [fail(.upstreamNotReady, nowMs: nowMs)]
        case .readyForMessages, .error, .closed:
            return []
        }
    }

    /// The client sent a close frame (`cleanly`) or dropped the connection while frames were held.
    public mutating func clientLeftBeforeReady(cleanly: Bool, nowMs: Int) -> Action {
        guard isHoldingClientFrames else { return .none }
        guard transition(to: .closed, nowMs: nowMs) else { return .none }
        return .abandonUpstream(clientClosedCleanly: cleanly)
    }

    /// The client broke the protocol while its frames were held.
    public mutating func clientProtocolError(_ error: WebSocketProtocolError, nowMs: Int) -> Action {
        fail(.clientProtocolError(error), nowMs: nowMs)
    }

    /// The backend connection failed before READY after it had answered 101, or broke the protocol.
    public mutating func upstreamFailedBeforeReady(_ reason: SessionCloseReason, nowMs: Int) -> Action {
        guard isHoldingClientFrames else { return .none }
        return fail(reason, nowMs: nowMs)
    }

    /// The proxy is shutting down.
    public mutating func shutdown(nowMs: Int) -> Action {
        fail(.goingAway, nowMs: nowMs)
    }

    /// The session's channels are closed; the record is complete.
    public mutating func closed(nowMs: Int) {
        guard state != .closed else { return }
        _ = transition(to: .closed, nowMs: nowMs)
    }

    // MARK: Helpers

    private mutating func fail(_ reason: SessionCloseReason, nowMs: Int) -> Action {
        guard !state.isTerminal else { return .none }
        guard transition(to: .error, nowMs: nowMs) else { return .none }
        endReason = reason
        return .end(reason)
    }

    /// Moves to `next` when allowed; otherwise records the invalid transition and stays.
    @discardableResult
    public mutating func transition(to next: SessionState, nowMs: Int) -> Bool {
        guard state.canTransition(to: next) else {
            invalidTransitions.append(InvalidSessionTransition(from: state, to: next))
            return false
        }
        state = next
        enteredAt[next] = nowMs
        return true
    }
}
