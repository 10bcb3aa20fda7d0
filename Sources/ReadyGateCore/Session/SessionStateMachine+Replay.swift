/// Transparent replay (`READYGATE_REPLAY`): when the backend fails a session right after READY —
/// a `1011` close or a lost connection within the error window — before any of its data reached the
/// client, the client keeps its session and a new backend session gets the client's frames again.
///
/// From READY until the window closes, the proxy keeps a copy of what it sent the backend and keeps
/// the backend's close frames back. The window closes when it times out, when a backend data frame
/// starts reaching the client, when the client closes or half-closes, or when the copy outgrows
/// `READYGATE_MAX_BUFFER_BYTES`. A replay goes back to HANDSHAKE_PENDING with a new handshake timeout;
/// the usual gate decides when the held copy is released.
extension SessionStateMachine {
    /// A data frame from the backend started reaching the client: replaying would show the client a
    /// second backend's data, so no replay for this backend session.
    public mutating func backendDataStarted(nowMs: Int) -> [Action] {
        backendDataDelivered = true
        guard case .relaying(var relaying) = state else { return [] }
        let actions = closeReplayWindow(&relaying)
        state = .relaying(relaying)
        return actions
    }

    /// The replay window timed out, or the copy of the client's frames outgrew its bound.
    public mutating func replayWindowEnded(nowMs: Int) -> [Action] {
        guard case .relaying(var relaying) = state else { return [] }
        let actions = closeReplayWindow(&relaying)
        state = .relaying(relaying)
        return actions
    }

    /// A replay let go of a backend connection that carried `traffic` to the client: it stays in the
    /// session's counts (the proxy adds the last connection's when the session ends).
    public mutating func upstreamReplaced(traffic: WebSocketTrafficStats) {
        record.upstreamToClient.add(traffic)
    }

    /// Whether a backend failure now would be replayed.
    public var isReplayWindowOpen: Bool {
        if case .relaying(let relaying) = state { return relaying.replayWindowOpen }
        return false
    }

    func closeReplayWindow(_ relaying: inout Relaying) -> [Action] {
        guard relaying.replayWindowOpen else { return [] }
        relaying.replayWindowOpen = false
        return [.closeReplayWindow]
    }

    /// Whether a backend failure in `relaying` is replayed: the window is open and the client has
    /// not started to close.
    func replays(_ relaying: Relaying) -> Bool {
        relaying.replayWindowOpen && !relaying.close.clientSentClose && !relaying.close.clientInputClosed
            && !relaying.close.upstreamSentClose && !relaying.close.proxyClosedUpstream
    }

    /// The backend failed with `closeCode` (1011, or 1006 for a lost connection): the race pattern
    /// is noted (the gate was too short, so the adaptive delay still learns), and the session goes
    /// back to HANDSHAKE_PENDING with a new upstream attempt.
    mutating func replay(closeCode: UInt16, relaying: Relaying, nowMs: Int) -> [Action] {
        var actions = errorAfterReady(code: closeCode, relaying: relaying, nowMs: nowMs, replayed: true)
        replaysDone += 1
        record.replays = replaysDone
        backendDataDelivered = false
        handshakeStartMs = nowMs
        latestAttempt += 1
        record.connectAttempts += 1
        state = .connecting(Connecting(attempt: latestAttempt, clientAccepted: true))
        enter(.handshakePending, nowMs: nowMs)
        actions += [
            .replay(number: replaysDone, closeCode: closeCode),
            .armHandshakeTimeout(ms: configuration.timing.handshakeTimeoutMs),
            .connectUpstream(attempt: latestAttempt),
        ]
        return actions
    }
}
