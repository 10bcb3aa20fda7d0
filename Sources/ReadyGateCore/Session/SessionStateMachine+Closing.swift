/// The end of a session, in whatever order it comes: a close frame either way, a FIN, a reset, a
/// killed process, a protocol error, the close linger, or the proxy shutting down.
///
/// Rules (RFC 6455 §5.5.1, §7.1):
/// - A close frame from a peer is relayed to the other side, whose answer ends the handshake; the
///   proxy then closes the client's connection (it is the server there) and lets the backend close
///   its own. A peer that does not answer within the close linger is closed.
/// - A backend connection that ends without a close frame is `1011 upstream closed` to the client,
///   unless the client had started the close: then the proxy answers the client's close itself.
/// - A client connection that ends without a close frame is a client gone: the backend gets a
///   masked `1001`. A client's FIN alone (a half-close) is handed to the backend as a FIN.
/// - `closed_by` is the side whose close frame, or whose end of connection, came first.
extension SessionStateMachine {
    /// A close frame from `side`'s peer went by (`code` nil: an empty close body). Before READY the
    /// client's is answered by the proxy; from READY on, close frames are relayed.
    public mutating func closeFrame(from side: Side, code: UInt16?, nowMs: Int) -> [Action] {
        switch (state, side) {
        case (.connecting(let connecting), .client):
            return clientClosedWhileHeld(code: code, clientAccepted: connecting.clientAccepted, nowMs: nowMs)
        case (.connected, .client):
            return clientClosedWhileHeld(code: code, clientAccepted: true, nowMs: nowMs)
        case (.connected, .upstream):
            // The backend closed before the gate passed: its close frame went to the client (backend
            // bytes are never held), whose answer will finish the handshake. The held frames cannot
            // be delivered any more.
            noteCloseCode(from: .upstream, code: code)
            setCloser(.upstream)
            enter(.closed, nowMs: nowMs)
            var ending = Ending(close: CloseProgress(), upstreamLive: true, abandoned: nil, clientAccepted: true)
            ending.close.upstreamSentClose = true
            ending.close.lingerArmed = true
            state = .ending(ending)
            return [.cancelTimers] + dropHeld() + [.armCloseLinger(ms: configuration.closeLingerMs)]
        case (.relaying(var relaying), _):
            if side == .upstream && code == 1011 && replays(relaying) {
                return replay(closeCode: 1011, relaying: relaying, nowMs: nowMs)
            }
            var actions = closeReplayWindow(&relaying)
            actions += relayedCloseFrame(from: side, code: code, relaying: &relaying, nowMs: nowMs)
            state = .relaying(relaying)
            return actions
        case (.ending(var ending), _):
            noteCloseCode(from: side, code: code)
            if side == .client { ending.close.clientSentClose = true } else { ending.close.upstreamSentClose = true }
            var actions: [Action] = []
            if side == .client && ending.upstreamLive && ending.close.upstreamSentClose
                && !ending.close.proxyClosedUpstream && !ending.close.upstreamClosing
            {
                // The backend closed before READY and the client answered: the hold let go of the
                // client's bytes, so the proxy answers the backend with the client's code.
                ending.close.proxyClosedUpstream = true
                actions.append(.sendClose(to: .upstream, code: code, reason: ""))
            }
            actions += finishIfDone(&ending.close)
            state = .ending(ending)
            return actions
        case (.initializing, _), (.connecting, .upstream):
            return invalidTransition("closeFrame(from: \(side))", nowMs: nowMs)
        case (.closed, _):
            return []
        }
    }

    /// `side`'s peer ended its output (a FIN), or its connection went away (`gone`: a reset, a close,
    /// a killed process).
    public mutating func inputClosed(_ side: Side, gone: Bool = false, nowMs: Int) -> [Action] {
        switch state {
        case .initializing:
            guard side == .client else { return invalidTransition("inputClosed(upstream)", nowMs: nowMs) }
            return clientGoneWhileHeld(nowMs: nowMs)
        case .connecting(var connecting):
            guard side == .client else { return invalidTransition("inputClosed(upstream)", nowMs: nowMs) }
            if gone || !connecting.clientAccepted { return clientGoneWhileHeld(nowMs: nowMs) }
            connecting.clientInputClosed = true
            state = .connecting(connecting)
            return []
        case .connected(var connected):
            if side == .upstream {
                // Lost before READY with no close frame.
                setCloser(.upstream)
                return end(.upstreamClosed, nowMs: nowMs)
            }
            if gone { return clientGoneWhileHeld(nowMs: nowMs) }
            connected.clientInputClosed = true
            state = .connected(connected)
            return []
        case .relaying(var relaying):
            if side == .upstream && replays(relaying) {
                return replay(closeCode: 1006, relaying: relaying, nowMs: nowMs)
            }
            var actions = closeReplayWindow(&relaying)
            actions += relayedInputClosed(side, gone: gone, relaying: &relaying, nowMs: nowMs)
            state = .relaying(relaying)
            return actions
        case .ending(var ending):
            if side == .client {
                ending.close.clientInputClosed = true
                ending.close.clientGone = ending.close.clientGone || gone
            } else {
                ending.close.upstreamInputClosed = true
                ending.close.upstreamGone = ending.close.upstreamGone || gone
            }
            var actions: [Action] = []
            // A peer that stopped sending will not answer a close frame: its connection may go.
            if side == .client && !ending.close.clientClosing {
                ending.close.clientClosing = true
                actions.append(.closeChannel(.client))
            }
            if side == .upstream && ending.upstreamLive && !ending.close.upstreamClosing {
                ending.close.upstreamClosing = true
                actions.append(.closeChannel(.upstream))
            }
            state = .ending(ending)
            return actions
        case .closed:
            return []
        }
    }

    /// A peer broke RFC 6455 (the watcher's scanner stopped on `error`). Before READY the proxy fails
    /// the session; from READY on the relay goes on unwatched and the endpoints deal with it.
    public mutating func protocolError(from side: Side, _ error: WebSocketProtocolError, nowMs: Int) -> [Action] {
        switch (state, side) {
        case (.connecting, .client), (.connected, .client):
            setCloser(.client)
            return end(.clientProtocolError(error), nowMs: nowMs)
        case (.connected, .upstream):
            setCloser(.upstream)
            return end(.upstreamProtocolError(error.description), nowMs: nowMs)
        case (.initializing, _), (.connecting, .upstream):
            return invalidTransition("protocolError(from: \(side))", nowMs: nowMs)
        case (.relaying(var relaying), _):
            // The relay goes on unwatched; a broken stream is not replayed.
            let actions = closeReplayWindow(&relaying)
            state = .relaying(relaying)
            return actions
        case (.ending, _), (.closed, _):
            return []
        }
    }

    /// The close linger passed: whoever has not answered is closed.
    public mutating func closeLingerExpired(nowMs: Int) -> [Action] {
        switch state {
        case .relaying(var relaying):
            let actions = closeBoth(&relaying.close, upstreamLive: true)
            state = .relaying(relaying)
            return actions
        case .ending(var ending):
            let actions = closeBoth(&ending.close, upstreamLive: ending.upstreamLive)
            state = .ending(ending)
            return actions
        case .initializing, .connecting, .connected, .closed:
            return []
        }
    }

    /// ReadyGate is shutting down: `1001 going away` to both sides (before the client's `101`, a `503`).
    public mutating func shutdown(nowMs: Int) -> [Action] {
        end(.goingAway, nowMs: nowMs)
    }

    /// Both channels are closed: the record is complete.
    public mutating func closed(nowMs: Int) {
        if case .closed = state { return }
        state = .closed
        enter(.closed, nowMs: nowMs)
    }

    // MARK: Before READY

    /// The client sent a close frame while its frames were held: the proxy answers it (echoing its
    /// code, RFC 6455 §5.5.1), closes its connection, and lets go of the backend with `1000`.
    private mutating func clientClosedWhileHeld(code: UInt16?, clientAccepted: Bool, nowMs: Int) -> [Action] {
        guard clientAccepted else { return invalidTransition("closeFrame(from: client) before 101", nowMs: nowMs) }
        noteCloseCode(from: .client, code: code)
        setCloser(.client)
        return leaveWhileHeld(upstreamCode: 1000, nowMs: nowMs) { close in
            close.clientSentClose = true
            close.proxyClosedClient = true
            close.clientClosing = true
            return [.sendClose(to: .client, code: code, reason: ""), .closeChannel(.client)]
        }
    }

    /// The client went away while its frames were held (`client_gone_before_ready`).
    private mutating func clientGoneWhileHeld(nowMs: Int) -> [Action] {
        setCloser(.client)
        let noted = note(
            .clientGoneBeforeReady,
            ["held_frames": String(record.earlyFrames), "held_bytes": String(record.earlyBytes)]
        )
        return noted
            + leaveWhileHeld(upstreamCode: 1001, nowMs: nowMs) { close in
                close.clientGone = true
                close.clientInputClosed = true
                close.clientClosing = true
                return [.closeChannel(.client)]
            }
    }

    /// A clean end before READY (CLOSED, not ERROR): the held frames are dropped and the upstream is
    /// let go with a masked close frame (`upstreamCode`), or its pending upgrade abandoned.
    private mutating func leaveWhileHeld(
        upstreamCode: UInt16,
        nowMs: Int,
        client: (inout CloseProgress) -> [Action]
    ) -> [Action] {
        var ending = Ending(close: CloseProgress(), upstreamLive: false, abandoned: nil, clientAccepted: true)
        var upstream: [Action] = []
        switch state {
        case .connecting(let connecting):
            ending.clientAccepted = connecting.clientAccepted
            if !connecting.retryPending {
                ending.abandoned = (connecting.attempt, upstreamCode, "client gone")
                upstream = [
                    .abandonUpstreamAttempt(attempt: connecting.attempt, withinMs: remainingHandshakeMs(nowMs: nowMs))
                ]
            }
        case .connected:
            ending.upstreamLive = true
            ending.close.proxyClosedUpstream = true
            ending.close.upstreamClosing = true
            upstream = [.sendClose(to: .upstream, code: upstreamCode, reason: "client gone"), .closeChannel(.upstream)]
        default:
            break
        }
        enter(.closed, nowMs: nowMs)
        let clientActions = client(&ending.close)
        state = .ending(ending)
        return [.cancelTimers] + dropHeld() + upstream + clientActions
    }

    // MARK: After READY

    private mutating func relayedCloseFrame(
        from side: Side,
        code: UInt16?,
        relaying: inout Relaying,
        nowMs: Int
    ) -> [Action] {
        noteCloseCode(from: side, code: code)
        var actions: [Action] = []
        switch side {
        case .client:
            guard !relaying.close.clientSentClose else { return [] }
            relaying.close.clientSentClose = true
            setCloser(.client)
        case .upstream:
            guard !relaying.close.upstreamSentClose else { return [] }
            relaying.close.upstreamSentClose = true
            setCloser(.upstream)
            if code == 1011 && !relaying.close.clientSentClose {
                actions += errorAfterReady(code: 1011, relaying: relaying, nowMs: nowMs)
            }
        }
        actions += finishIfDone(&relaying.close)
        actions += closeUpstreamIfDone(&relaying.close)
        if !relaying.close.lingerArmed {
            relaying.close.lingerArmed = true
            actions.append(.armCloseLinger(ms: configuration.closeLingerMs))
        }
        return actions
    }

    private mutating func relayedInputClosed(
        _ side: Side,
        gone: Bool,
        relaying: inout Relaying,
        nowMs: Int
    ) -> [Action] {
        var close = relaying.close
        defer { relaying.close = close }
        switch side {
        case .client:
            let first = !close.clientInputClosed
            close.clientInputClosed = true
            close.clientGone = close.clientGone || gone
            if close.clientSentClose || close.upstreamSentClose || close.proxyClosedClient {
                // Part of a close handshake under way: the backend's own close ends its side.
                var actions: [Action] = []
                if gone && !close.clientClosing {
                    close.clientClosing = true
                    actions.append(.closeChannel(.client))
                }
                if gone && close.upstreamSentClose && !close.upstreamClosing {
                    close.upstreamClosing = true
                    actions.append(.closeChannel(.upstream))
                }
                return actions
            }
            setCloser(.client)
            if !gone {
                // A half-close: handed to the backend as one, as a TCP relay would.
                return first ? [.passHalfClose(to: .upstream)] : []
            }
            guard !close.proxyClosedUpstream else { return [] }
            close.proxyClosedUpstream = true
            close.upstreamClosing = true
            close.clientClosing = true
            return [
                .sendClose(to: .upstream, code: 1001, reason: "client gone"), .closeChannel(.upstream),
                .closeChannel(.client),
            ]
        case .upstream:
            close.upstreamInputClosed = true
            close.upstreamGone = close.upstreamGone || gone
            if close.upstreamSentClose {
                // The backend ended after its close frame: once it has been sent a close frame too
                // (the client's, relayed, or the proxy's), nothing is left to exchange with it.
                var actions = closeUpstreamIfDone(&close)
                if gone && close.clientSentClose && !close.clientClosing {
                    close.clientClosing = true
                    actions.append(.closeChannel(.client))
                }
                return actions
            }
            if close.proxyClosedUpstream || close.proxyClosedClient {
                // The proxy is already ending the session (shutdown, a client gone).
                return closeUpstreamIfGone(&close)
            }
            setCloser(.upstream)
            if close.clientSentClose {
                // The client started the close and the backend left without answering: the proxy
                // answers the client's close itself.
                close.proxyClosedClient = true
                close.clientClosing = true
                return [
                    .sendClose(to: .client, code: record.clientCloseCode, reason: ""), .closeChannel(.client),
                ] + closeUpstreamIfGone(&close)
            }
            if close.clientInputClosed {
                // The client half-closed first (a FIN, no close frame) and the backend answered it
                // by ending its connection, as a TCP relay's peers would: not a failure. The
                // client's connection ends the same way.
                close.clientClosing = true
                return [.closeChannel(.client)] + closeUpstreamIfGone(&close, always: true)
            }
            // The backend connection was lost mid-session: `1011 upstream closed`.
            record.endReason = record.endReason ?? .upstreamClosed
            var actions = errorAfterReady(code: 1006, relaying: relaying, nowMs: nowMs)
            close.proxyClosedClient = true
            actions.append(.sendClose(to: .client, code: 1011, reason: SessionCloseReason.upstreamClosed.reasonText))
            actions += closeUpstreamIfGone(&close, always: true)
            if !close.lingerArmed {
                close.lingerArmed = true
                actions.append(.armCloseLinger(ms: configuration.closeLingerMs))
            }
            return actions
        }
    }

    /// The backend sent its close frame and ended its output, and has been sent a close frame:
    /// its connection may go.
    private func closeUpstreamIfDone(_ close: inout CloseProgress) -> [Action] {
        guard close.upstreamSentClose, close.upstreamInputClosed, close.clientSentClose || close.proxyClosedUpstream,
            !close.upstreamClosing
        else { return [] }
        close.upstreamClosing = true
        return [.closeChannel(.upstream)]
    }

    private func closeUpstreamIfGone(_ close: inout CloseProgress, always: Bool = false) -> [Action] {
        guard (always || close.upstreamGone || close.upstreamInputClosed) && !close.upstreamClosing else { return [] }
        close.upstreamClosing = true
        return [.closeChannel(.upstream)]
    }

    /// `upstream_error_after_ready`: the backend failed (1011, or 1006 for a lost connection) within
    /// the error window after READY — the gate was too short for it.
    mutating func errorAfterReady(code: UInt16, relaying: Relaying, nowMs: Int, replayed: Bool = false) -> [Action] {
        let since = nowMs - relaying.readyAtMs
        guard since <= detector.errorAfterReadyWindowMs else { return [] }
        var fields = ["close_code": String(code), "ms_after_ready": String(since)]
        if replayed { fields["replayed"] = "true" }
        return note(.upstreamErrorAfterReady, fields)
    }

    /// The proxy ends a spliced session (shutdown, an internal error): a close frame to each side,
    /// then the close linger for their answers.
    mutating func closeRelayed(_ close: inout CloseProgress, reason: SessionCloseReason, clientCode: UInt16) -> [Action]
    {
        var actions: [Action] = []
        if !close.proxyClosedClient && !close.clientClosing && !close.clientSentClose && !close.upstreamSentClose {
            close.proxyClosedClient = true
            actions.append(.sendClose(to: .client, code: clientCode, reason: reason.reasonText))
        }
        if !close.proxyClosedUpstream && !close.upstreamClosing && !close.upstreamSentClose && !close.clientSentClose {
            close.proxyClosedUpstream = true
            actions.append(.sendClose(to: .upstream, code: 1001, reason: "proxy ended session: \(reason.name)"))
        }
        if !close.lingerArmed {
            close.lingerArmed = true
            actions.append(.armCloseLinger(ms: configuration.closeLingerMs))
        }
        return actions
    }

    // MARK: Shared

    /// Records the first close frame each peer sent.
    private mutating func noteCloseCode(from side: Side, code: UInt16?) {
        switch side {
        case .client:
            guard !record.clientSentClose else { return }
            record.clientSentClose = true
            record.clientCloseCode = code
        case .upstream:
            guard !record.upstreamSentClose else { return }
            record.upstreamSentClose = true
            record.upstreamCloseCode = code
        }
    }

    /// The client's close handshake is complete: the proxy, the server on that connection, closes it
    /// (RFC 6455 §7.1.1). The backend closes its own.
    private func finishIfDone(_ close: inout CloseProgress) -> [Action] {
        guard close.clientHandshakeDone, !close.clientClosing else { return [] }
        close.clientClosing = true
        return [.closeChannel(.client)]
    }

    private func closeBoth(_ close: inout CloseProgress, upstreamLive: Bool) -> [Action] {
        var actions: [Action] = []
        if !close.clientClosing {
            close.clientClosing = true
            actions.append(.closeChannel(.client))
        }
        if upstreamLive && !close.upstreamClosing {
            close.upstreamClosing = true
            actions.append(.closeChannel(.upstream))
        }
        return actions
    }
}

/// Keepalive and the idle timeout (`READYGATE_PING_INTERVAL_MS`, `READYGATE_WS_IDLE_TIMEOUT_MS`):
/// both apply to a spliced session only.
extension SessionStateMachine {
    /// No bytes either way for the idle timeout: `1001 idle timeout` to both sides.
    public mutating func idleTimedOut(nowMs: Int) -> [Action] {
        guard case .relaying = state else { return [] }
        return end(.idleTimeout, nowMs: nowMs)
    }

    /// `side`'s peer missed two keepalive pongs: `1001` to both sides, the client told which side
    /// did not answer.
    public mutating func peerUnresponsive(_ side: Side, nowMs: Int) -> [Action] {
        guard case .relaying = state else { return [] }
        return end(.peerUnresponsive(side), nowMs: nowMs)
    }
}
