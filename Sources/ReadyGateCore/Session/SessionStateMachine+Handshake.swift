/// The way to READY: start, upstream connect and retry, the backend's answer, the gate and the
/// handshake timeout, and what the client does while its frames are held.
extension SessionStateMachine {
    /// The client's upgrade request was valid. In `immediate` mode the client is accepted at once,
    /// unless it offered subprotocols and ReadyGate has none configured: then the backend chooses,
    /// so the session behaves as `upstream` (a proxy never invents a subprotocol).
    public mutating func start(clientOfferedSubprotocols: Bool, subprotocolsConfigured: Bool, nowMs: Int) -> [Action] {
        guard case .initializing = state else { return invalidTransition("start", nowMs: nowMs) }
        if configuration.acceptMode == .immediate && clientOfferedSubprotocols && !subprotocolsConfigured {
            configuration.acceptMode = .upstream
        }
        record.acceptMode = configuration.acceptMode
        record.connectAttempts = 1
        latestAttempt = 1
        let accept = configuration.acceptMode == .immediate
        state = .connecting(Connecting(attempt: 1, clientAccepted: accept))
        enter(.handshakePending, nowMs: nowMs)
        // The connect goes out before the client's 101 is written: the backend's accept and answer
        // overlap with the proxy's work for the client.
        var actions: [Action] = [
            .armHandshakeTimeout(ms: configuration.timing.handshakeTimeoutMs), .connectUpstream(attempt: 1),
        ]
        if accept { actions.append(.acceptClient) }
        return actions
    }

    /// Upstream attempt `attempt` failed in a retryable way: refused, reset, timed out, or closed
    /// before its answer. Retried with a progressive delay inside the handshake timeout.
    public mutating func upstreamConnectFailed(
        attempt: Int,
        nowMs: Int,
        using random: inout some RandomNumberGenerator
    ) -> [Action] {
        switch state {
        case .connecting(var connecting) where connecting.attempt == attempt && !connecting.retryPending:
            connecting.failures += 1
            guard
                let delay = retry.delayMs(
                    attempt: connecting.failures - 1,
                    nowMs: nowMs,
                    deadlineMs: handshakeDeadlineMs,
                    using: &random
                )
            else {
                state = .connecting(connecting)
                return [.dropUpstreamAttempt(attempt: attempt)]
                    + end(.upstreamUnavailable, nowMs: nowMs, droppingAttempt: attempt)
            }
            connecting.attempt += 1
            latestAttempt = connecting.attempt
            connecting.retryPending = true
            state = .connecting(connecting)
            return [.dropUpstreamAttempt(attempt: attempt)]
                + note(.upstreamConnectRetry, ["attempt": String(attempt), "delay_ms": String(delay)])
                + [.retryConnect(attempt: connecting.attempt, afterMs: delay)]
        case .ending(var ending) where ending.abandoned?.attempt == attempt:
            // The upgrade the session let go of failed by itself: nothing is owed to it any more.
            ending.abandoned = nil
            state = .ending(ending)
            return [.dropUpstreamAttempt(attempt: attempt)]
        case .initializing:
            return invalidTransition("upstreamConnectFailed", nowMs: nowMs)
        default:
            // A stale attempt, or one that ended with the session.
            return [.dropUpstreamAttempt(attempt: attempt)]
        }
    }

    /// The retry delay of `attempt` passed.
    public mutating func retryDue(attempt: Int, nowMs: Int) -> [Action] {
        guard case .connecting(var connecting) = state, connecting.attempt == attempt, connecting.retryPending else {
            return []
        }
        connecting.retryPending = false
        state = .connecting(connecting)
        record.connectAttempts = attempt
        return [.connectUpstream(attempt: attempt)]
    }

    /// The backend answered attempt `attempt` with a final status other than `101`. `502`, `503`
    /// and `504` are a backend not ready yet (a load balancer or a starting server), retried like a
    /// refused connect; any other status is its answer.
    public mutating func upstreamRejected(
        status: Int,
        attempt: Int,
        nowMs: Int,
        using random: inout some RandomNumberGenerator
    ) -> [Action] {
        guard case .connecting(let connecting) = state, connecting.attempt == attempt, !connecting.retryPending else {
            if case .initializing = state { return invalidTransition("upstreamRejected", nowMs: nowMs) }
            return upstreamConnectFailed(attempt: attempt, nowMs: nowMs, using: &random)
        }
        record.upstreamStatus = status
        if [502, 503, 504].contains(status) {
            return upstreamConnectFailed(attempt: attempt, nowMs: nowMs, using: &random)
        }
        let noted = note(.upstreamRejected, ["status": String(status)])
        guard !connecting.clientAccepted else {
            return noted + [.dropUpstreamAttempt(attempt: attempt)]
                + end(.upstreamRejected(status: status), nowMs: nowMs, droppingAttempt: attempt)
        }
        // `upstream` accept mode: the client gets the backend's own answer.
        record.endReason = .upstreamRejected(status: status)
        setCloser(.upstream)
        enter(.error, nowMs: nowMs)
        var close = CloseProgress()
        close.clientClosing = true
        state = .ending(Ending(close: close, upstreamLive: false, abandoned: nil, clientAccepted: false))
        return noted + [.cancelTimers] + dropHeld() + [
            .relayUpstreamResponse(status: status), .dropUpstreamAttempt(attempt: attempt),
        ]
    }

    /// The backend's `101` for `attempt` failed verification (`Sec-WebSocket-Accept`, a subprotocol
    /// or extension that was not offered). Not retried: the backend is up and wrong.
    public mutating func upstreamHandshakeInvalid(problem: String, attempt: Int, nowMs: Int) -> [Action] {
        guard case .connecting(let connecting) = state, connecting.attempt == attempt, !connecting.retryPending else {
            if case .initializing = state { return invalidTransition("upstreamHandshakeInvalid", nowMs: nowMs) }
            return [.dropUpstreamAttempt(attempt: attempt)]
        }
        record.upstreamStatus = 101
        return [.dropUpstreamAttempt(attempt: attempt)]
            + end(.upstreamProtocolError(problem), nowMs: nowMs, droppingAttempt: attempt)
    }

    /// The backend answered attempt `attempt` with a verified `101`.
    public mutating func upstreamUpgraded(attempt: Int, nowMs: Int) -> [Action] {
        switch state {
        case .connecting(let connecting) where connecting.attempt == attempt && !connecting.retryPending:
            record.upstreamStatus = 101
            var actions: [Action] = []
            if !connecting.clientAccepted { actions.append(.acceptClient) }
            state = .connected(
                Connected(
                    upgradedAtMs: nowMs,
                    clientInputClosed: connecting.clientInputClosed,
                    awaitingPong: configuration.gate == .ping
                )
            )
            enter(.connected, nowMs: nowMs)
            let handshakeMs = nowMs - handshakeStartMs
            if handshakeMs > detector.slowHandshakeThresholdMs {
                actions += note(
                    .upstreamSlowHandshake,
                    ["handshake_ms": String(handshakeMs), "threshold_ms": String(detector.slowHandshakeThresholdMs)]
                )
            }
            actions.append(.switchUpstream(watchForReadyMessage: configuration.gate == .message))
            switch configuration.gate {
            case .message:
                break
            case .ping:
                record.gateDelayMs = configuration.gateDelayMs
                actions.append(.sendGatePing)
            case .delay:
                record.gateDelayMs = configuration.gateDelayMs
                actions += startGateDelay(nowMs: nowMs)
            }
            return actions
        case .ending(var ending) where ending.abandoned?.attempt == attempt:
            // The upgrade the session let go of came through: close it properly (RFC 6455 §5.5.1).
            let owed = ending.abandoned!
            ending.abandoned = nil
            ending.upstreamLive = true
            ending.close.proxyClosedUpstream = true
            ending.close.upstreamClosing = true
            state = .ending(ending)
            return [
                .switchUpstream(watchForReadyMessage: false),
                .sendClose(to: .upstream, code: owed.code, reason: owed.reason), .closeChannel(.upstream),
            ]
        case .initializing:
            return invalidTransition("upstreamUpgraded", nowMs: nowMs)
        default:
            return [.dropUpstreamAttempt(attempt: attempt)]
        }
    }

    /// Ping gate: the backend answered the proxy's ping, so its event loop has caught up with the
    /// session; the gate's delay starts now.
    public mutating func gatePongReceived(nowMs: Int) -> [Action] {
        guard case .connected(var connected) = state, connected.awaitingPong else { return [] }
        connected.awaitingPong = false
        state = .connected(connected)
        record.pongAfterMs = nowMs - connected.upgradedAtMs
        return startGateDelay(nowMs: nowMs)
    }

    private mutating func startGateDelay(nowMs: Int) -> [Action] {
        let delay = gateDelayMs
        guard delay > 0, case .connected(var connected) = state else { return gatePassed(nowMs: nowMs) }
        connected.delayStartedAtMs = nowMs
        state = .connected(connected)
        return [.armGateDelay(ms: delay)]
    }

    /// The gate's delay timer fired. `adaptedDelayMs` is the adaptive delay now: when it grew while
    /// this session waited (sessions of the same burst just failed after READY), the session waits
    /// out the new delay too, and counts as having waited it.
    public mutating func gateDelayElapsed(adaptedDelayMs: Int, nowMs: Int) -> [Action] {
        guard case .connected(let connected) = state, let started = connected.delayStartedAtMs, replaysDone == 0,
            adaptedDelayMs > configuration.gateDelayMs
        else { return gatePassed(nowMs: nowMs) }
        configuration.gateDelayMs = adaptedDelayMs
        record.gateDelayMs = adaptedDelayMs
        let rest = started + adaptedDelayMs - nowMs
        return rest > 0 ? [.armGateDelay(ms: rest)] : gatePassed(nowMs: nowMs)
    }

    /// The gate's delay now: the configured one, doubled for each replay (the backend just showed
    /// that the delay was too short for it), at most half the handshake timeout.
    var gateDelayMs: Int {
        guard replaysDone > 0 else { return configuration.gateDelayMs }
        let cap = max(configuration.gateDelayMs, configuration.timing.handshakeTimeoutMs / 2)
        return min(cap, max(1, configuration.gateDelayMs) << min(replaysDone, 16))
    }

    /// The readiness gate passed: the delay elapsed, or the backend's ready message went by.
    ///
    /// A gate event after the session ended or became ready (a timer that fired as it was being
    /// cancelled, a ready message racing the timeout) is stale, not a bug.
    public mutating func gatePassed(nowMs: Int) -> [Action] {
        switch state {
        case .connected(let connected):
            return becomeReady(connected, nowMs: nowMs)
        case .initializing, .connecting:
            return invalidTransition("gatePassed", nowMs: nowMs)
        case .relaying, .ending, .closed:
            return []
        }
    }

    /// The handshake timeout fired: it bounds INITIALIZING → READY_FOR_MESSAGES.
    public mutating func handshakeTimedOut(nowMs: Int) -> [Action] {
        switch state {
        case .initializing, .connecting:
            return end(.upstreamUnavailable, nowMs: nowMs)
        case .connected(let connected):
            if configuration.timeoutAction == .open {
                return note(.readyTimeout, ["action": "open", "ms": String(nowMs)])
                    + becomeReady(connected, nowMs: nowMs)
            }
            return note(.readyTimeout, ["action": "close", "ms": String(nowMs)])
                + end(.upstreamNotReady, nowMs: nowMs)
        case .relaying, .ending, .closed:
            return []
        }
    }

    private mutating func becomeReady(_ connected: Connected, nowMs: Int) -> [Action] {
        var actions: [Action] = [.cancelTimers]
        if record.earlyFrames > 0 {
            let earlyBy = nowMs - (record.firstEarlyFrameAtMs ?? nowMs)
            actions += note(
                .earlyClientFrames,
                [
                    "frames": String(record.earlyFrames), "bytes": String(record.earlyBytes),
                    "early_by_ms": String(earlyBy),
                ]
            )
        }
        var close = CloseProgress()
        close.clientInputClosed = connected.clientInputClosed
        // A replay needs the client's frames again and a backend whose data never reached the client.
        let replayable =
            replaysDone < configuration.replayAttempts && !backendDataDelivered && !connected.clientInputClosed
        state = .relaying(Relaying(readyAtMs: nowMs, close: close, replayWindowOpen: replayable))
        enter(.readyForMessages, nowMs: nowMs)
        if replayable { actions.append(.openReplayWindow(ms: detector.errorAfterReadyWindowMs)) }
        actions.append(.flushAndSplice)
        // A client that half-closed while held: its frames went first, now its end of input.
        if connected.clientInputClosed {
            setCloser(.client)
            actions.append(.passHalfClose(to: .upstream))
        }
        return actions
    }

    // MARK: The hold

    /// The hold now keeps `frames` complete data frames, `bytes` bytes.
    public mutating func clientFramesHeld(frames: Int, bytes: Int, nowMs: Int) -> [Action] {
        guard isHoldingClientFrames else { return [] }
        // A replay's hold starts with the frames counted already.
        guard replaysDone == 0 else { return [] }
        if record.firstEarlyFrameAtMs == nil && frames > 0 { record.firstEarlyFrameAtMs = nowMs }
        record.earlyFrames = frames
        record.earlyBytes = bytes
        record.peakHeldBytes = max(record.peakHeldBytes, bytes)
        return []
    }

    /// The hold reached `READYGATE_MAX_BUFFER_BYTES`: it stopped reading from the client.
    public mutating func holdFull(bytes: Int) -> [Action] {
        guard isHoldingClientFrames else { return [] }
        record.backpressureEvents += 1
        return note(.bufferBackpressure, ["held_bytes": String(bytes), "bound": String(configuration.maxBufferBytes)])
    }
}
