import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

private typealias Action = SessionStateMachine.Action

/// The testing profile: base delay 1 ms, handshake timeout 100 ms, retry cap 20 ms. Slow handshake
/// after 50 ms; `upstream_error_after_ready` within 100 ms of READY.
private let testingTiming = DeploymentEnvironment.testing.profile
private let lingerMs = 250
private let bufferBound = 4096

private func makeMachine(
    _ acceptMode: AcceptMode = .immediate,
    gate: ReadyGateMode = .delay,
    timeoutAction: ReadyTimeoutAction = .close,
    timing: TimingProfile = testingTiming
) -> SessionStateMachine {
    let configuration = SessionStateMachine.Configuration(
        acceptMode: acceptMode,
        gate: gate,
        timeoutAction: timeoutAction,
        timing: timing,
        closeLingerMs: lingerMs,
        maxBufferBytes: bufferBound
    )
    let record = SessionRecord(id: "s-1", environment: .testing, acceptMode: acceptMode, gate: gate, path: "/ws")
    return SessionStateMachine(configuration: configuration, record: record, trapsOnInvalidTransition: false)
}

/// A machine started at 0 without subprotocols: HANDSHAKE_PENDING on attempt 1.
private func startedMachine(
    _ acceptMode: AcceptMode = .immediate,
    gate: ReadyGateMode = .delay,
    timeoutAction: ReadyTimeoutAction = .close,
    timing: TimingProfile = testingTiming
) -> SessionStateMachine {
    var machine = makeMachine(acceptMode, gate: gate, timeoutAction: timeoutAction, timing: timing)
    _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
    return machine
}

/// A machine spliced at 20 (READY_FOR_MESSAGES): started at 0, upgraded at 10, gate passed at 20.
private func relayingMachine(_ acceptMode: AcceptMode = .immediate) -> SessionStateMachine {
    var machine = startedMachine(acceptMode)
    _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
    _ = machine.gatePassed(nowMs: 20)
    return machine
}

/// The machine's states (and the variants that decide differently), each reached along a legal path:
/// start at 0, a failed attempt at 5, the `101` at 10, READY at 20, shutdown at 30, closed at 40.
enum Stage: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case initializing
    case connectingImmediate = "connecting, fresh attempt, client accepted"
    case connectingUpstream = "connecting, fresh attempt, client not accepted"
    case retryPending = "connecting, retry pending"
    case connectedDelay = "connected, delay gate"
    case connectedMessage = "connected, message gate"
    case relaying
    case ending = "ending (shut down while connected)"
    case closed

    var testDescription: String { rawValue }

    /// The phase the machine reports in this stage.
    var phase: SessionState {
        switch self {
        case .initializing: .initializing
        case .connectingImmediate, .connectingUpstream, .retryPending: .handshakePending
        case .connectedDelay, .connectedMessage: .connected
        case .relaying: .readyForMessages
        case .ending: .error
        case .closed: .closed
        }
    }

    var isHolding: Bool {
        switch self {
        case .initializing, .connectingImmediate, .connectingUpstream, .retryPending, .connectedDelay,
            .connectedMessage:
            true
        case .relaying, .ending, .closed: false
        }
    }

    var isConnected: Bool { self == .connectedDelay || self == .connectedMessage }

    func machine(timeoutAction: ReadyTimeoutAction = .close) -> SessionStateMachine {
        var random = SplitMix64(seed: 7)
        var machine = makeMachine(
            self == .connectingUpstream ? .upstream : .immediate,
            gate: self == .connectedMessage ? .message : .delay,
            timeoutAction: timeoutAction
        )
        if self == .initializing { return machine }
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        switch self {
        case .initializing, .connectingImmediate, .connectingUpstream:
            return machine
        case .retryPending:
            _ = machine.upstreamConnectFailed(attempt: 1, nowMs: 5, using: &random)
            return machine
        case .connectedDelay, .connectedMessage, .relaying, .ending, .closed:
            _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        }
        switch self {
        case .ending:
            _ = machine.shutdown(nowMs: 30)
        case .relaying:
            _ = machine.gatePassed(nowMs: 20)
        case .closed:
            _ = machine.gatePassed(nowMs: 20)
            machine.closed(nowMs: 40)
        default:
            break
        }
        return machine
    }
}

/// What ``SessionStateMachine/end(_:nowMs:)`` does in `stage` (DESIGN §2's endings): before the
/// client's `101` an HTTP answer, else a close frame; a live upstream gets a masked 1001, an upgrade
/// in flight is abandoned.
/// `droppingAttempt`: the event dropped attempt 1 itself, so the ending does not abandon it.
private func expectedEnd(
    _ stage: Stage,
    _ reason: SessionCloseReason,
    nowMs: Int,
    droppingAttempt: Bool = false
) -> [Action] {
    let upstreamClose = Action.sendClose(to: .upstream, code: 1001, reason: "proxy ended session: \(reason.name)")
    let toClient: [Action] = [
        .sendClose(to: .client, code: reason.closeCode, reason: reason.reasonText),
        reason.failsClientAtOnce ? .closeChannel(.client) : .armCloseLinger(ms: lingerMs),
    ]
    let abandon = Action.abandonUpstreamAttempt(
        attempt: 1,
        withinMs: max(1, testingTiming.handshakeTimeoutMs - nowMs)
    )
    let http = Action.respondHTTP(status: reason.httpStatus, reason: reason)
    let letGo: [Action] = droppingAttempt ? [] : [abandon]
    switch stage {
    case .initializing:
        return [.cancelTimers, .dropHeldFrames, http]
    case .connectingImmediate:
        return [.cancelTimers, .dropHeldFrames] + letGo + toClient
    case .connectingUpstream:
        return [.cancelTimers, .dropHeldFrames] + letGo + [http]
    case .retryPending:
        return [.cancelTimers, .dropHeldFrames] + toClient
    case .connectedDelay, .connectedMessage:
        return [.cancelTimers, .dropHeldFrames, upstreamClose, .closeChannel(.upstream)] + toClient
    case .relaying:
        return [
            .sendClose(to: .client, code: reason.closeCode, reason: reason.reasonText), upstreamClose,
            .armCloseLinger(ms: lingerMs),
        ]
    case .ending, .closed:
        return []
    }
}

/// An event `stage` does not allow: logged, then the session ends with `1011 internal error`.
private func expectedInvalid(_ stage: Stage, _ event: String, nowMs: Int) -> [Action] {
    [.logInvalidTransition(InvalidSessionTransition(from: stage.phase, event: event))]
        + expectedEnd(stage, .internalError, nowMs: nowMs)
}

/// Checks what an event returned, and that an invalid one was recorded as such.
private func check(
    _ actions: [Action],
    _ expected: [Action],
    _ machine: SessionStateMachine,
    invalid event: String? = nil,
    in stage: Stage,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(actions == expected, sourceLocation: sourceLocation)
    if let event {
        #expect(
            machine.invalidTransitions == [InvalidSessionTransition(from: stage.phase, event: event)],
            sourceLocation: sourceLocation
        )
        if stage != .ending && stage != .closed {
            #expect(machine.record.endReason == .internalError, sourceLocation: sourceLocation)
            // After READY the proxy ends a session by closing it towards both sides: no ERROR phase.
            let phase: SessionState = stage == .relaying ? .readyForMessages : .error
            #expect(machine.phase == phase, sourceLocation: sourceLocation)
        }
    } else {
        #expect(machine.invalidTransitions.isEmpty, sourceLocation: sourceLocation)
    }
}

private func retryEvent(attempt: Int, delayMs: Int) -> Action {
    .notePattern(RaceEvent(.upstreamConnectRetry, ["attempt": String(attempt), "delay_ms": String(delayMs)]))
}

private let clientGoneEvent = Action.notePattern(
    RaceEvent(.clientGoneBeforeReady, ["held_frames": "0", "held_bytes": "0"])
)

// MARK: - Every state × event

@Suite("SessionStateMachine: every state × event")
struct SessionStateMachineMatrixTests {
    @Test("the stages are what they claim", arguments: Stage.allCases)
    func stages(_ stage: Stage) {
        let machine = stage.machine()
        #expect(machine.phase == stage.phase)
        #expect(machine.isHoldingClientFrames == stage.isHolding)
        #expect(machine.hasEnded == (stage == .ending || stage == .closed))
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test("start", arguments: Stage.allCases)
    func start(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 50)
        if stage == .initializing {
            check(
                actions,
                [.armHandshakeTimeout(ms: 100), .connectUpstream(attempt: 1), .acceptClient],
                machine,
                in: stage
            )
            #expect(machine.phase == .handshakePending)
        } else {
            check(actions, expectedInvalid(stage, "start", nowMs: 50), machine, invalid: "start", in: stage)
        }
    }

    @Test("upstreamConnectFailed for attempt 1", arguments: Stage.allCases)
    func connectFailed(_ stage: Stage) {
        var random = SplitMix64(seed: 11)
        var machine = stage.machine()
        let actions = machine.upstreamConnectFailed(attempt: 1, nowMs: 50, using: &random)
        switch stage {
        case .initializing:
            let expected = expectedInvalid(stage, "upstreamConnectFailed", nowMs: 50)
            check(actions, expected, machine, invalid: "upstreamConnectFailed", in: stage)
        case .connectingImmediate, .connectingUpstream:
            // The testing base is 1 ms: the first retry waits 1 ms whatever the draw.
            let expected: [Action] = [
                .dropUpstreamAttempt(attempt: 1), retryEvent(attempt: 1, delayMs: 1),
                .retryConnect(attempt: 2, afterMs: 1),
            ]
            check(actions, expected, machine, in: stage)
            #expect(machine.phase == .handshakePending)
            #expect(machine.record.patterns == [.upstreamConnectRetry])
        case .retryPending, .connectedDelay, .connectedMessage, .relaying, .ending, .closed:
            // Stale: attempt 1 is not the one whose answers count.
            check(actions, [.dropUpstreamAttempt(attempt: 1)], machine, in: stage)
            #expect(machine.phase == stage.phase)
        }
    }

    @Test("retryDue for attempt 2", arguments: Stage.allCases)
    func retryDue(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.retryDue(attempt: 2, nowMs: 50)
        if stage == .retryPending {
            check(actions, [.connectUpstream(attempt: 2)], machine, in: stage)
            #expect(machine.record.connectAttempts == 2)
            // Only once.
            #expect(machine.retryDue(attempt: 2, nowMs: 51).isEmpty)
        } else {
            check(actions, [], machine, in: stage)
            #expect(machine.phase == stage.phase)
        }
    }

    @Test("upstreamRejected 403 for attempt 1", arguments: Stage.allCases)
    func rejected(_ stage: Stage) {
        var random = SplitMix64(seed: 12)
        var machine = stage.machine()
        let actions = machine.upstreamRejected(status: 403, attempt: 1, nowMs: 50, using: &random)
        let rejectedEvent = Action.notePattern(RaceEvent(.upstreamRejected, ["status": "403"]))
        switch stage {
        case .initializing:
            check(
                actions,
                expectedInvalid(stage, "upstreamRejected", nowMs: 50),
                machine,
                invalid: "upstreamRejected",
                in: stage
            )
        case .connectingImmediate:
            let expected =
                [rejectedEvent, .dropUpstreamAttempt(attempt: 1)]
                + expectedEnd(stage, .upstreamRejected(status: 403), nowMs: 50, droppingAttempt: true)
            check(actions, expected, machine, in: stage)
            #expect(machine.record.closer == .proxy)
        case .connectingUpstream:
            let expected: [Action] = [
                rejectedEvent, .cancelTimers, .dropHeldFrames, .relayUpstreamResponse(status: 403),
                .dropUpstreamAttempt(attempt: 1),
            ]
            check(actions, expected, machine, in: stage)
            #expect(machine.record.closer == .upstream)
        case .retryPending, .connectedDelay, .connectedMessage, .relaying, .ending, .closed:
            check(actions, [.dropUpstreamAttempt(attempt: 1)], machine, in: stage)
            #expect(machine.phase == stage.phase)
        }
    }

    @Test("upstreamHandshakeInvalid for attempt 1", arguments: Stage.allCases)
    func handshakeInvalid(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.upstreamHandshakeInvalid(problem: "bad accept", attempt: 1, nowMs: 50)
        switch stage {
        case .initializing:
            let expected = expectedInvalid(stage, "upstreamHandshakeInvalid", nowMs: 50)
            check(actions, expected, machine, invalid: "upstreamHandshakeInvalid", in: stage)
        case .connectingImmediate, .connectingUpstream:
            let reason = SessionCloseReason.upstreamProtocolError("bad accept")
            check(
                actions,
                [.dropUpstreamAttempt(attempt: 1)] + expectedEnd(stage, reason, nowMs: 50, droppingAttempt: true),
                machine,
                in: stage
            )
            #expect(machine.record.endReason == reason)
            #expect(machine.record.upstreamStatus == 101)
            #expect(machine.phase == .error)
        case .retryPending, .connectedDelay, .connectedMessage, .relaying, .ending, .closed:
            check(actions, [.dropUpstreamAttempt(attempt: 1)], machine, in: stage)
            #expect(machine.phase == stage.phase)
        }
    }

    @Test("upstreamUpgraded for attempt 1", arguments: Stage.allCases)
    func upgraded(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.upstreamUpgraded(attempt: 1, nowMs: 50)
        switch stage {
        case .initializing:
            check(
                actions,
                expectedInvalid(stage, "upstreamUpgraded", nowMs: 50),
                machine,
                invalid: "upstreamUpgraded",
                in: stage
            )
        case .connectingImmediate:
            check(actions, [.switchUpstream(watchForReadyMessage: false), .armGateDelay(ms: 1)], machine, in: stage)
            #expect(machine.phase == .connected)
        case .connectingUpstream:
            let expected: [Action] = [
                .acceptClient, .switchUpstream(watchForReadyMessage: false), .armGateDelay(ms: 1),
            ]
            check(actions, expected, machine, in: stage)
            #expect(machine.phase == .connected)
        case .retryPending, .connectedDelay, .connectedMessage, .relaying, .ending, .closed:
            check(actions, [.dropUpstreamAttempt(attempt: 1)], machine, in: stage)
            #expect(machine.phase == stage.phase)
        }
    }

    @Test("gatePassed", arguments: Stage.allCases)
    func gatePassed(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.gatePassed(nowMs: 50)
        switch stage {
        case .initializing, .connectingImmediate, .connectingUpstream, .retryPending:
            check(actions, expectedInvalid(stage, "gatePassed", nowMs: 50), machine, invalid: "gatePassed", in: stage)
        case .connectedDelay, .connectedMessage:
            check(actions, [.cancelTimers, .flushAndSplice], machine, in: stage)
            #expect(machine.phase == .readyForMessages)
            #expect(machine.record.stateTimes[.readyForMessages] == 50)
        case .relaying, .ending, .closed:
            // A timer that fired as it was cancelled, or a ready message racing the timeout.
            check(actions, [], machine, in: stage)
            #expect(machine.phase == stage.phase)
        }
    }

    @Test("handshakeTimedOut with `close`", arguments: Stage.allCases)
    func timedOutClose(_ stage: Stage) {
        var machine = stage.machine(timeoutAction: .close)
        let actions = machine.handshakeTimedOut(nowMs: 100)
        switch stage {
        case .initializing, .connectingImmediate, .connectingUpstream, .retryPending:
            check(actions, expectedEnd(stage, .upstreamUnavailable, nowMs: 100), machine, in: stage)
            #expect(machine.record.endReason == .upstreamUnavailable)
            #expect(machine.record.closer == .proxy)
            #expect(machine.phase == .error)
        case .connectedDelay, .connectedMessage:
            let expected =
                [Action.notePattern(RaceEvent(.readyTimeout, ["action": "close", "ms": "100"]))]
                + expectedEnd(stage, .upstreamNotReady, nowMs: 100)
            check(actions, expected, machine, in: stage)
            #expect(machine.record.endReason == .upstreamNotReady)
            #expect(machine.record.patterns == [.readyTimeout])
        case .relaying, .ending, .closed:
            check(actions, [], machine, in: stage)
            #expect(machine.phase == stage.phase)
        }
    }

    @Test("handshakeTimedOut with `open`", arguments: Stage.allCases)
    func timedOutOpen(_ stage: Stage) {
        var machine = stage.machine(timeoutAction: .open)
        let actions = machine.handshakeTimedOut(nowMs: 100)
        switch stage {
        case .initializing, .connectingImmediate, .connectingUpstream, .retryPending:
            // Without a 101 there is nothing to open.
            check(actions, expectedEnd(stage, .upstreamUnavailable, nowMs: 100), machine, in: stage)
        case .connectedDelay, .connectedMessage:
            let expected: [Action] = [
                .notePattern(RaceEvent(.readyTimeout, ["action": "open", "ms": "100"])), .cancelTimers, .flushAndSplice,
            ]
            check(actions, expected, machine, in: stage)
            #expect(machine.phase == .readyForMessages)
            #expect(machine.record.endReason == nil)
        case .relaying, .ending, .closed:
            check(actions, [], machine, in: stage)
        }
    }

    @Test("clientFramesHeld", arguments: Stage.allCases)
    func framesHeld(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.clientFramesHeld(frames: 2, bytes: 40, nowMs: 50)
        check(actions, [], machine, in: stage)
        if stage.isHolding {
            #expect(machine.record.earlyFrames == 2)
            #expect(machine.record.earlyBytes == 40)
            #expect(machine.record.peakHeldBytes == 40)
            #expect(machine.record.firstEarlyFrameAtMs == 50)
        } else {
            #expect(machine.record.earlyFrames == 0)
            #expect(machine.record.firstEarlyFrameAtMs == nil)
        }
    }

    @Test("holdFull", arguments: Stage.allCases)
    func holdFull(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.holdFull(bytes: 4096)
        if stage.isHolding {
            let event = RaceEvent(.bufferBackpressure, ["held_bytes": "4096", "bound": "4096"])
            check(actions, [.notePattern(event)], machine, in: stage)
            #expect(machine.record.backpressureEvents == 1)
            // Counted every time, logged once.
            #expect(machine.holdFull(bytes: 4096).isEmpty)
            #expect(machine.record.backpressureEvents == 2)
            #expect(machine.record.patterns.filter { $0 == .bufferBackpressure }.count == 1)
        } else {
            check(actions, [], machine, in: stage)
            #expect(machine.record.backpressureEvents == 0)
        }
    }

    @Test("closeFrame from the client (1000)", arguments: Stage.allCases)
    func clientCloseFrame(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.closeFrame(from: .client, code: 1000, nowMs: 50)
        let echo: [Action] = [.sendClose(to: .client, code: 1000, reason: ""), .closeChannel(.client)]
        switch stage {
        case .initializing:
            let event = "closeFrame(from: client)"
            check(actions, expectedInvalid(stage, event, nowMs: 50), machine, invalid: event, in: stage)
        case .connectingUpstream:
            // No 101 yet: the client cannot have sent a frame.
            let event = "closeFrame(from: client) before 101"
            check(actions, expectedInvalid(stage, event, nowMs: 50), machine, invalid: event, in: stage)
        case .connectingImmediate:
            let expected: [Action] =
                [.cancelTimers, .dropHeldFrames, .abandonUpstreamAttempt(attempt: 1, withinMs: 50)] + echo
            check(actions, expected, machine, in: stage)
        case .retryPending:
            check(actions, [.cancelTimers, .dropHeldFrames] + echo, machine, in: stage)
        case .connectedDelay, .connectedMessage:
            let expected: [Action] =
                [
                    .cancelTimers, .dropHeldFrames, .sendClose(to: .upstream, code: 1000, reason: "client gone"),
                    .closeChannel(.upstream),
                ] + echo
            check(actions, expected, machine, in: stage)
        case .relaying:
            // Relayed by the splice; the backend's answer ends the handshake.
            check(actions, [.armCloseLinger(ms: lingerMs)], machine, in: stage)
        case .ending:
            // The answer to the proxy's own close frame.
            check(actions, [.closeChannel(.client)], machine, in: stage)
        case .closed:
            check(actions, [], machine, in: stage)
        }
        switch stage {
        case .connectingImmediate, .retryPending, .connectedDelay, .connectedMessage:
            #expect(machine.phase == .closed)
            #expect(machine.record.closer == .client)
            #expect(machine.record.endReason == nil)
        case .relaying:
            #expect(machine.record.closer == .client)
        default:
            break
        }
        if ![.initializing, .connectingUpstream, .closed].contains(stage) {
            #expect(machine.record.clientSentClose)
            #expect(machine.record.clientCloseCode == 1000)
        }
    }

    @Test("closeFrame from the upstream (1000)", arguments: Stage.allCases)
    func upstreamCloseFrame(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.closeFrame(from: .upstream, code: 1000, nowMs: 50)
        switch stage {
        case .initializing, .connectingImmediate, .connectingUpstream, .retryPending:
            let event = "closeFrame(from: upstream)"
            check(actions, expectedInvalid(stage, event, nowMs: 50), machine, invalid: event, in: stage)
        case .connectedDelay, .connectedMessage:
            // Relayed to the client already (backend bytes are never held); its answer ends it.
            check(actions, [.cancelTimers, .dropHeldFrames, .armCloseLinger(ms: lingerMs)], machine, in: stage)
            #expect(machine.phase == .closed)
            #expect(machine.record.closer == .upstream)
            #expect(machine.record.endReason == nil)
        case .relaying:
            check(actions, [.armCloseLinger(ms: lingerMs)], machine, in: stage)
            #expect(machine.record.closer == .upstream)
            #expect(machine.record.patterns.isEmpty)
        case .ending, .closed:
            check(actions, [], machine, in: stage)
        }
        if stage.isConnected || stage == .relaying || stage == .ending {
            #expect(machine.record.upstreamSentClose)
            #expect(machine.record.upstreamCloseCode == 1000)
        }
    }

    @Test("inputClosed(client), a FIN", arguments: Stage.allCases)
    func clientFin(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.inputClosed(.client, gone: false, nowMs: 50)
        switch stage {
        case .initializing:
            check(
                actions,
                [clientGoneEvent, .cancelTimers, .dropHeldFrames, .closeChannel(.client)],
                machine,
                in: stage
            )
            #expect(machine.phase == .closed)
        case .connectingUpstream:
            // Without its 101 the client has nothing to half-close: it is gone.
            let expected: [Action] = [
                clientGoneEvent, .cancelTimers, .dropHeldFrames, .abandonUpstreamAttempt(attempt: 1, withinMs: 50),
                .closeChannel(.client),
            ]
            check(actions, expected, machine, in: stage)
            #expect(machine.phase == .closed)
            #expect(machine.record.closer == .client)
        case .connectingImmediate, .retryPending, .connectedDelay, .connectedMessage:
            // Deferred until the held frames have gone.
            check(actions, [], machine, in: stage)
            #expect(machine.phase == stage.phase)
        case .relaying:
            check(actions, [.passHalfClose(to: .upstream)], machine, in: stage)
            #expect(machine.record.closer == .client)
            #expect(machine.inputClosed(.client, gone: false, nowMs: 51).isEmpty)
        case .ending:
            check(actions, [.closeChannel(.client)], machine, in: stage)
        case .closed:
            check(actions, [], machine, in: stage)
        }
    }

    @Test("inputClosed(client, gone: true)", arguments: Stage.allCases)
    func clientGone(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.inputClosed(.client, gone: true, nowMs: 50)
        let gone: [Action] = [clientGoneEvent, .cancelTimers, .dropHeldFrames]
        switch stage {
        case .initializing:
            check(actions, gone + [.closeChannel(.client)], machine, in: stage)
        case .connectingImmediate, .connectingUpstream:
            let expected = gone + [.abandonUpstreamAttempt(attempt: 1, withinMs: 50), .closeChannel(.client)]
            check(actions, expected, machine, in: stage)
        case .retryPending:
            check(actions, gone + [.closeChannel(.client)], machine, in: stage)
        case .connectedDelay, .connectedMessage:
            let expected =
                gone + [
                    .sendClose(to: .upstream, code: 1001, reason: "client gone"), .closeChannel(.upstream),
                    .closeChannel(.client),
                ]
            check(actions, expected, machine, in: stage)
        case .relaying:
            let expected: [Action] = [
                .sendClose(to: .upstream, code: 1001, reason: "client gone"), .closeChannel(.upstream),
                .closeChannel(.client),
            ]
            check(actions, expected, machine, in: stage)
            #expect(machine.record.patterns.isEmpty)
        case .ending:
            check(actions, [.closeChannel(.client)], machine, in: stage)
        case .closed:
            check(actions, [], machine, in: stage)
        }
        if stage.isHolding {
            #expect(machine.phase == .closed)
            #expect(machine.record.patterns.contains(.clientGoneBeforeReady))
        }
        if stage.isHolding || stage == .relaying {
            #expect(machine.record.closer == .client)
            #expect(machine.record.endReason == nil)
        }
    }

    @Test("inputClosed(upstream)", arguments: Stage.allCases, [false, true])
    func upstreamInputClosed(_ stage: Stage, _ gone: Bool) {
        var machine = stage.machine()
        let actions = machine.inputClosed(.upstream, gone: gone, nowMs: 50)
        switch stage {
        case .initializing, .connectingImmediate, .connectingUpstream, .retryPending:
            // Before its 101 an upstream attempt only fails (upstreamConnectFailed).
            let event = "inputClosed(upstream)"
            check(actions, expectedInvalid(stage, event, nowMs: 50), machine, invalid: event, in: stage)
        case .connectedDelay, .connectedMessage:
            check(actions, expectedEnd(stage, .upstreamClosed, nowMs: 50), machine, in: stage)
            #expect(machine.record.closer == .upstream)
            #expect(machine.record.endReason == .upstreamClosed)
            #expect(machine.phase == .error)
        case .relaying:
            let expected: [Action] = [
                .notePattern(RaceEvent(.upstreamErrorAfterReady, ["close_code": "1006", "ms_after_ready": "30"])),
                .sendClose(to: .client, code: 1011, reason: "upstream closed"), .closeChannel(.upstream),
                .armCloseLinger(ms: lingerMs),
            ]
            check(actions, expected, machine, in: stage)
            #expect(machine.record.closer == .upstream)
            #expect(machine.record.endReason == .upstreamClosed)
        case .ending, .closed:
            // The proxy closes that connection already.
            check(actions, [], machine, in: stage)
        }
    }

    @Test("protocolError from the client", arguments: Stage.allCases)
    func clientProtocolError(_ stage: Stage) {
        let error = WebSocketProtocolError(.maskingRuleViolated)
        var machine = stage.machine()
        let actions = machine.protocolError(from: .client, error, nowMs: 50)
        switch stage {
        case .initializing:
            let event = "protocolError(from: client)"
            check(actions, expectedInvalid(stage, event, nowMs: 50), machine, invalid: event, in: stage)
        case .connectingImmediate, .connectingUpstream, .retryPending, .connectedDelay, .connectedMessage:
            check(actions, expectedEnd(stage, .clientProtocolError(error), nowMs: 50), machine, in: stage)
            #expect(machine.record.closer == .client)
            #expect(machine.record.endReason == .clientProtocolError(error))
            #expect(machine.phase == .error)
        case .relaying, .ending, .closed:
            // From READY on the relay goes on unwatched.
            check(actions, [], machine, in: stage)
        }
    }

    @Test("protocolError from the upstream", arguments: Stage.allCases)
    func upstreamProtocolError(_ stage: Stage) {
        let error = WebSocketProtocolError(.reservedBitsSet)
        var machine = stage.machine()
        let actions = machine.protocolError(from: .upstream, error, nowMs: 50)
        switch stage {
        case .initializing, .connectingImmediate, .connectingUpstream, .retryPending:
            let event = "protocolError(from: upstream)"
            check(actions, expectedInvalid(stage, event, nowMs: 50), machine, invalid: event, in: stage)
        case .connectedDelay, .connectedMessage:
            let reason = SessionCloseReason.upstreamProtocolError("reserved bits set")
            check(actions, expectedEnd(stage, reason, nowMs: 50), machine, in: stage)
            #expect(machine.record.closer == .upstream)
            #expect(machine.record.endReason == reason)
        case .relaying, .ending, .closed:
            check(actions, [], machine, in: stage)
        }
    }

    @Test("closeLingerExpired", arguments: Stage.allCases)
    func lingerExpired(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.closeLingerExpired(nowMs: 50)
        switch stage {
        case .relaying:
            check(actions, [.closeChannel(.client), .closeChannel(.upstream)], machine, in: stage)
        case .ending:
            // The upstream is being closed already; the client did not answer.
            check(actions, [.closeChannel(.client)], machine, in: stage)
            #expect(machine.closeLingerExpired(nowMs: 51).isEmpty)
        default:
            check(actions, [], machine, in: stage)
        }
    }

    @Test("shutdown", arguments: Stage.allCases)
    func shutdown(_ stage: Stage) {
        var machine = stage.machine()
        let actions = machine.shutdown(nowMs: 50)
        check(actions, expectedEnd(stage, .goingAway, nowMs: 50), machine, in: stage)
        switch stage {
        case .ending, .closed:
            #expect(machine.phase == stage.phase)
        case .relaying:
            #expect(machine.phase == .readyForMessages)
            #expect(machine.record.endReason == .goingAway)
            #expect(machine.record.closer == .proxy)
        default:
            #expect(machine.phase == .error)
            #expect(machine.record.endReason == .goingAway)
            #expect(machine.record.closer == .proxy)
            #expect(machine.record.stateTimes[.error] == 50)
        }
    }

    @Test("closed", arguments: Stage.allCases)
    func closed(_ stage: Stage) {
        var machine = stage.machine()
        machine.closed(nowMs: 60)
        #expect(machine.phase == .closed)
        #expect(machine.record.stateTimes[.closed] == (stage == .closed ? 40 : 60))
        #expect(machine.hasEnded)
        #expect(!machine.isHoldingClientFrames)
        machine.closed(nowMs: 70)
        #expect(machine.record.stateTimes[.closed] == (stage == .closed ? 40 : 60))
        #expect(machine.invalidTransitions.isEmpty)
        // Nothing more happens once closed.
        #expect(machine.shutdown(nowMs: 71).isEmpty)
        #expect(machine.closeFrame(from: .upstream, code: 1000, nowMs: 72).isEmpty)
        #expect(machine.inputClosed(.client, gone: true, nowMs: 73).isEmpty)
    }
}

// MARK: - Scenarios

@Suite("SessionStateMachine: handshake")
struct SessionStateMachineHandshakeTests {
    @Test("a new machine is INITIALIZING at 0")
    func initial() {
        let machine = makeMachine()
        #expect(machine.phase == .initializing)
        #expect(machine.record.stateTimes == [.initializing: 0])
        #expect(machine.record.closer == .none)
        #expect(machine.record.endReason == nil)
        #expect(machine.isHoldingClientFrames)
        #expect(!machine.hasEnded)
    }

    @Test("immediate mode accepts the client at once; upstream mode waits for the backend")
    func startModes() {
        var immediate = makeMachine(.immediate)
        #expect(
            immediate.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 2)
                == [.armHandshakeTimeout(ms: 100), .connectUpstream(attempt: 1), .acceptClient]
        )
        #expect(immediate.record.stateTimes[.handshakePending] == 2)
        #expect(immediate.record.connectAttempts == 1)
        #expect(immediate.record.acceptMode == .immediate)

        var upstream = makeMachine(.upstream)
        #expect(
            upstream.start(clientOfferedSubprotocols: true, subprotocolsConfigured: true, nowMs: 2)
                == [.armHandshakeTimeout(ms: 100), .connectUpstream(attempt: 1)]
        )
        #expect(upstream.acceptMode == .upstream)
        #expect(upstream.record.acceptMode == .upstream)
    }

    @Test(
        "immediate mode with offered subprotocols and none configured behaves as upstream",
        arguments: [
            // offered, configured, expected mode
            (false, false, AcceptMode.immediate),
            (false, true, .immediate),
            (true, true, .immediate),
            (true, false, .upstream),
        ]
    )
    func startSubprotocols(_ offered: Bool, _ configured: Bool, _ expected: AcceptMode) {
        var machine = makeMachine(.immediate)
        let actions = machine.start(clientOfferedSubprotocols: offered, subprotocolsConfigured: configured, nowMs: 0)
        #expect(machine.acceptMode == expected)
        #expect(machine.record.acceptMode == expected)
        let accept: [Action] = expected == .immediate ? [.acceptClient] : []
        #expect(actions == [.armHandshakeTimeout(ms: 100), .connectUpstream(attempt: 1)] + accept)
    }

    @Test("immediate turned upstream accepts on the 101 and relays a rejection")
    func subprotocolsMirrorBackend() {
        var upgraded = makeMachine(.immediate)
        _ = upgraded.start(clientOfferedSubprotocols: true, subprotocolsConfigured: false, nowMs: 0)
        #expect(
            upgraded.upstreamUpgraded(attempt: 1, nowMs: 5)
                == [.acceptClient, .switchUpstream(watchForReadyMessage: false), .armGateDelay(ms: 1)]
        )

        var random = SplitMix64(seed: 1)
        var rejected = makeMachine(.immediate)
        _ = rejected.start(clientOfferedSubprotocols: true, subprotocolsConfigured: false, nowMs: 0)
        let actions = rejected.upstreamRejected(status: 404, attempt: 1, nowMs: 5, using: &random)
        #expect(actions.contains(.relayUpstreamResponse(status: 404)))
        #expect(!actions.contains { if case .sendClose = $0 { true } else { false } })
    }

    // MARK: Retries

    @Test(
        "connect failures retry with seeded jittered delays until the deadline, then 1013",
        arguments: [UInt64(1), 2, 3, 42, 1234]
    )
    func retriesUntilDeadline(_ seed: UInt64) throws {
        let timing = DeploymentEnvironment.production.profile
        var random = SplitMix64(seed: seed)
        var mirror = SplitMix64(seed: seed)
        let delays = ProgressiveDelay(baseMs: timing.baseDelayMs, capMs: timing.retryCapMs)
        var machine = startedMachine(.immediate, timing: timing)
        var now = 3
        var attempt = 1
        while true {
            let actions = machine.upstreamConnectFailed(attempt: attempt, nowMs: now, using: &random)
            guard
                let delay = delays.delayMs(
                    attempt: attempt - 1,
                    nowMs: now,
                    deadlineMs: timing.handshakeTimeoutMs,
                    using: &mirror
                )
            else {
                let end: [Action] = [
                    .dropUpstreamAttempt(attempt: attempt), .cancelTimers, .dropHeldFrames,
                    .sendClose(to: .client, code: 1013, reason: "upstream unavailable"), .armCloseLinger(ms: lingerMs),
                ]
                #expect(actions == end)
                break
            }
            let noted = attempt == 1 ? [retryEvent(attempt: 1, delayMs: delay)] : []
            #expect(
                actions
                    == [.dropUpstreamAttempt(attempt: attempt)] + noted
                    + [.retryConnect(attempt: attempt + 1, afterMs: delay)]
            )
            #expect(delay >= 1 && delay <= delays.ceilingMs(attempt: attempt - 1))
            #expect(now + delay < timing.handshakeTimeoutMs)
            now += delay
            attempt += 1
            #expect(machine.retryDue(attempt: attempt, nowMs: now) == [.connectUpstream(attempt: attempt)])
            #expect(machine.record.connectAttempts == attempt)
            now += 7  // the connect takes a while to fail
            try #require(attempt < 1000)
        }
        #expect(attempt >= 5)
        #expect(machine.phase == .error)
        #expect(machine.record.endReason == .upstreamUnavailable)
        #expect(machine.record.closer == .proxy)
        #expect(machine.record.patterns == [.upstreamConnectRetry])
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test("a retry delay never passes the handshake deadline")
    func retryWithinDeadline() {
        var random = CoreTestsConstantGenerator(value: .max)
        var machine = startedMachine(timing: TimingProfile(baseDelayMs: 25, handshakeTimeoutMs: 100, retryCapMs: 200))
        #expect(
            machine.upstreamConnectFailed(attempt: 1, nowMs: 90, using: &random)
                == [
                    .dropUpstreamAttempt(attempt: 1), retryEvent(attempt: 1, delayMs: 9),
                    .retryConnect(attempt: 2, afterMs: 9),
                ]
        )
    }

    @Test("a retry that is not due, or for another attempt, does nothing")
    func retryDueStale() {
        var random = SplitMix64(seed: 3)
        var machine = startedMachine()
        #expect(machine.retryDue(attempt: 1, nowMs: 1).isEmpty)
        _ = machine.upstreamConnectFailed(attempt: 1, nowMs: 2, using: &random)
        #expect(machine.retryDue(attempt: 3, nowMs: 3).isEmpty)
        #expect(machine.retryDue(attempt: 2, nowMs: 3) == [.connectUpstream(attempt: 2)])
        #expect(machine.retryDue(attempt: 2, nowMs: 4).isEmpty)
    }

    @Test("502, 503 and 504 are a backend not ready yet: retried", arguments: [502, 503, 504])
    func rejectedRetried(_ status: Int) {
        var random = SplitMix64(seed: 4)
        var machine = startedMachine(.upstream)
        #expect(
            machine.upstreamRejected(status: status, attempt: 1, nowMs: 5, using: &random)
                == [
                    .dropUpstreamAttempt(attempt: 1), retryEvent(attempt: 1, delayMs: 1),
                    .retryConnect(attempt: 2, afterMs: 1),
                ]
        )
        #expect(machine.record.upstreamStatus == status)
        #expect(machine.record.patterns == [.upstreamConnectRetry])
        #expect(machine.record.endReason == nil)
        #expect(machine.phase == .handshakePending)
        // The retried attempt may then succeed.
        _ = machine.retryDue(attempt: 2, nowMs: 6)
        #expect(machine.upstreamUpgraded(attempt: 2, nowMs: 8).first == .acceptClient)
        #expect(machine.record.upstreamStatus == 101)
    }

    @Test("403 in immediate mode ends the session with a 1008 close to the client")
    func rejected403Immediate() {
        var random = SplitMix64(seed: 5)
        var machine = startedMachine(.immediate)
        let actions = machine.upstreamRejected(status: 403, attempt: 1, nowMs: 9, using: &random)
        #expect(
            actions == [
                .notePattern(RaceEvent(.upstreamRejected, ["status": "403"])), .dropUpstreamAttempt(attempt: 1),
                .cancelTimers, .dropHeldFrames,
                .sendClose(to: .client, code: 1008, reason: "upstream rejected: 403"), .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.phase == .error)
        #expect(machine.record.stateTimes[.error] == 9)
        #expect(machine.record.endReason == .upstreamRejected(status: 403))
        #expect(machine.record.upstreamStatus == 403)
        #expect(machine.record.closer == .proxy)
        #expect(machine.record.patterns == [.upstreamRejected])
    }

    @Test("(e) a rejection in upstream mode is relayed as it is", arguments: [401, 403, 404, 500])
    func rejectedUpstreamMode(_ status: Int) {
        var random = SplitMix64(seed: 6)
        var machine = startedMachine(.upstream)
        _ = machine.clientFramesHeld(frames: 0, bytes: 0, nowMs: 3)
        let actions = machine.upstreamRejected(status: status, attempt: 1, nowMs: 9, using: &random)
        #expect(
            actions == [
                .notePattern(RaceEvent(.upstreamRejected, ["status": String(status)])), .cancelTimers, .dropHeldFrames,
                .relayUpstreamResponse(status: status), .dropUpstreamAttempt(attempt: 1),
            ]
        )
        #expect(machine.phase == .error)
        #expect(machine.record.endReason == .upstreamRejected(status: status))
        #expect(machine.record.closer == .upstream)
        #expect(machine.record.upstreamStatus == status)
        #expect(machine.invalidTransitions.isEmpty)
        // The client is closed by the relay; a later shutdown or timeout changes nothing.
        #expect(machine.shutdown(nowMs: 10).isEmpty)
        #expect(machine.handshakeTimedOut(nowMs: 100).isEmpty)
        #expect(machine.record.endReason == .upstreamRejected(status: status))
    }

    @Test("an invalid 101 is not retried: the backend is up and wrong")
    func handshakeInvalidNotRetried() {
        var machine = startedMachine(.upstream)
        let reason = SessionCloseReason.upstreamProtocolError("unexpected subprotocol")
        #expect(
            machine.upstreamHandshakeInvalid(problem: "unexpected subprotocol", attempt: 1, nowMs: 20) == [
                .dropUpstreamAttempt(attempt: 1), .cancelTimers, .dropHeldFrames,
                .respondHTTP(status: 502, reason: reason),
            ]
        )
        #expect(reason.reasonText == "upstream protocol error: unexpected subprotocol")
        #expect(machine.record.patterns.isEmpty)
    }

    // MARK: The 101

    @Test("the delay gate arms the base delay; the message gate watches for the ready message")
    func gates() {
        var delay = startedMachine(
            gate: .delay,
            timing: TimingProfile(baseDelayMs: 25, handshakeTimeoutMs: 1000, retryCapMs: 200)
        )
        #expect(
            delay.upstreamUpgraded(attempt: 1, nowMs: 30) == [
                .switchUpstream(watchForReadyMessage: false), .armGateDelay(ms: 25),
            ]
        )
        #expect(delay.record.stateTimes[.connected] == 30)
        #expect(delay.record.upstreamStatus == 101)

        var message = startedMachine(
            gate: .message,
            timing: TimingProfile(baseDelayMs: 0, handshakeTimeoutMs: 100, retryCapMs: 20)
        )
        #expect(message.upstreamUpgraded(attempt: 1, nowMs: 30) == [.switchUpstream(watchForReadyMessage: true)])
        #expect(message.phase == .connected)
        #expect(message.gatePassed(nowMs: 40) == [.cancelTimers, .flushAndSplice])
        #expect(message.phase == .readyForMessages)
    }

    @Test("a zero base delay passes the delay gate at once", arguments: AcceptMode.allCases)
    func zeroDelay(_ mode: AcceptMode) {
        var machine = startedMachine(
            mode,
            timing: TimingProfile(baseDelayMs: 0, handshakeTimeoutMs: 100, retryCapMs: 20)
        )
        let accept: [Action] = mode == .upstream ? [.acceptClient] : []
        #expect(
            machine.upstreamUpgraded(attempt: 1, nowMs: 12)
                == accept + [.switchUpstream(watchForReadyMessage: false), .cancelTimers, .flushAndSplice]
        )
        #expect(machine.phase == .readyForMessages)
        #expect(machine.record.stateTimes[.connected] == 12)
        #expect(machine.record.stateTimes[.readyForMessages] == 12)
    }

    @Test("a 101 after half the handshake timeout is upstream_slow_handshake", arguments: [50, 51, 99])
    func slowHandshake(_ atMs: Int) {
        var machine = startedMachine()
        let actions = machine.upstreamUpgraded(attempt: 1, nowMs: atMs)
        let slow: [Action] =
            atMs > 50
            ? [.notePattern(RaceEvent(.upstreamSlowHandshake, ["handshake_ms": String(atMs), "threshold_ms": "50"]))]
            : []
        #expect(actions == slow + [.switchUpstream(watchForReadyMessage: false), .armGateDelay(ms: 1)])
        #expect(machine.record.patterns == (atMs > 50 ? [.upstreamSlowHandshake] : []))
    }

    @Test("a 101 for a superseded attempt is dropped; the current one counts")
    func staleUpgrade() {
        var random = SplitMix64(seed: 8)
        var machine = startedMachine()
        _ = machine.upstreamConnectFailed(attempt: 1, nowMs: 2, using: &random)
        #expect(machine.upstreamUpgraded(attempt: 1, nowMs: 3) == [.dropUpstreamAttempt(attempt: 1)])
        // Not started yet: its 101 cannot count either.
        #expect(machine.upstreamUpgraded(attempt: 2, nowMs: 3) == [.dropUpstreamAttempt(attempt: 2)])
        _ = machine.retryDue(attempt: 2, nowMs: 4)
        #expect(
            machine.upstreamRejected(status: 500, attempt: 1, nowMs: 5, using: &random) == [
                .dropUpstreamAttempt(attempt: 1)
            ]
        )
        #expect(
            machine.upstreamHandshakeInvalid(problem: "x", attempt: 1, nowMs: 5) == [.dropUpstreamAttempt(attempt: 1)]
        )
        #expect(
            machine.upstreamUpgraded(attempt: 2, nowMs: 6) == [
                .switchUpstream(watchForReadyMessage: false), .armGateDelay(ms: 1),
            ]
        )
        #expect(machine.phase == .connected)
        #expect(machine.record.endReason == nil)
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test(
        "an upgrade abandoned by the ending still gets a proper masked close when it comes through",
        arguments: [
            // how the session ended, the close owed to the backend
            ("shutdown", UInt16(1001), "proxy ended session: going_away"),
            ("client close frame", 1000, "client gone"),
            ("client gone", 1001, "client gone"),
            ("handshake timeout", 1001, "proxy ended session: upstream_unavailable"),
        ]
    )
    func abandonedUpgrade(_ ending: String, _ code: UInt16, _ reason: String) {
        var machine = startedMachine()
        let actions: [Action]
        switch ending {
        case "shutdown": actions = machine.shutdown(nowMs: 30)
        case "client close frame": actions = machine.closeFrame(from: .client, code: 1000, nowMs: 30)
        case "client gone": actions = machine.inputClosed(.client, gone: true, nowMs: 30)
        default: actions = machine.handshakeTimedOut(nowMs: 100)
        }
        #expect(
            actions.contains { if case .abandonUpstreamAttempt(attempt: 1, withinMs: _) = $0 { true } else { false } }
        )
        #expect(machine.hasEnded)
        #expect(
            machine.upstreamUpgraded(attempt: 1, nowMs: 40) == [
                .switchUpstream(watchForReadyMessage: false), .sendClose(to: .upstream, code: code, reason: reason),
                .closeChannel(.upstream),
            ]
        )
        // Owed once; and the upstream, live now, is closed by the linger if need be.
        #expect(machine.upstreamUpgraded(attempt: 1, nowMs: 41) == [.dropUpstreamAttempt(attempt: 1)])
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test("an abandoned upgrade that fails by itself is owed nothing")
    func abandonedUpgradeFails() {
        var random = SplitMix64(seed: 9)
        var machine = startedMachine()
        _ = machine.shutdown(nowMs: 30)
        #expect(
            machine.upstreamConnectFailed(attempt: 1, nowMs: 31, using: &random) == [.dropUpstreamAttempt(attempt: 1)]
        )
        #expect(machine.upstreamUpgraded(attempt: 1, nowMs: 32) == [.dropUpstreamAttempt(attempt: 1)])
        #expect(machine.record.patterns.isEmpty)
    }

    @Test("an ending while a retry is pending abandons nothing")
    func endingWhileRetryPending() {
        var random = SplitMix64(seed: 10)
        var machine = startedMachine()
        _ = machine.upstreamConnectFailed(attempt: 1, nowMs: 2, using: &random)
        #expect(
            machine.shutdown(nowMs: 3) == [
                .cancelTimers, .dropHeldFrames, .sendClose(to: .client, code: 1001, reason: "going away"),
                .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.retryDue(attempt: 2, nowMs: 4).isEmpty)
        #expect(machine.upstreamUpgraded(attempt: 2, nowMs: 5) == [.dropUpstreamAttempt(attempt: 2)])
    }

    // MARK: The gate and the timeout

    @Test("early client frames are noted at READY and delivered")
    func earlyFrames() {
        var machine = startedMachine()
        _ = machine.clientFramesHeld(frames: 1, bytes: 10, nowMs: 3)
        _ = machine.clientFramesHeld(frames: 2, bytes: 40, nowMs: 5)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.clientFramesHeld(frames: 3, bytes: 30, nowMs: 12)
        let event = RaceEvent(.earlyClientFrames, ["frames": "3", "bytes": "30", "early_by_ms": "17"])
        #expect(machine.gatePassed(nowMs: 20) == [.cancelTimers, .notePattern(event), .flushAndSplice])
        #expect(machine.record.firstEarlyFrameAtMs == 3)
        #expect(machine.record.peakHeldBytes == 40)
        #expect(machine.record.undeliveredFrames == 0)
        // After READY the hold is gone: nothing more is counted.
        #expect(machine.clientFramesHeld(frames: 9, bytes: 900, nowMs: 21).isEmpty)
        #expect(machine.record.earlyFrames == 3)
    }

    @Test("frames held when the session ends before READY are undelivered")
    func undelivered() {
        var machine = startedMachine()
        _ = machine.clientFramesHeld(frames: 4, bytes: 64, nowMs: 3)
        _ = machine.handshakeTimedOut(nowMs: 100)
        #expect(machine.record.undeliveredFrames == 4)
        #expect(machine.record.undeliveredBytes == 64)
        #expect(!machine.record.patterns.contains(.earlyClientFrames))
    }

    @Test("readyTimeout with `open` splices anyway, once")
    func readyTimeoutOpen() {
        var machine = startedMachine(gate: .message, timeoutAction: .open)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.clientFramesHeld(frames: 1, bytes: 6, nowMs: 11)
        #expect(
            machine.handshakeTimedOut(nowMs: 100) == [
                .notePattern(RaceEvent(.readyTimeout, ["action": "open", "ms": "100"])), .cancelTimers,
                .notePattern(RaceEvent(.earlyClientFrames, ["frames": "1", "bytes": "6", "early_by_ms": "89"])),
                .flushAndSplice,
            ]
        )
        #expect(machine.gatePassed(nowMs: 101).isEmpty)
        #expect(machine.record.patterns == [.readyTimeout, .earlyClientFrames])
        #expect(machine.record.endReason == nil)
    }

    @Test("readyTimeout with `close` ends the session with 1013 upstream not ready")
    func readyTimeoutClose() {
        var machine = startedMachine(gate: .message, timeoutAction: .close)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(
            machine.handshakeTimedOut(nowMs: 100) == [
                .notePattern(RaceEvent(.readyTimeout, ["action": "close", "ms": "100"])), .cancelTimers,
                .dropHeldFrames,
                .sendClose(to: .upstream, code: 1001, reason: "proxy ended session: upstream_not_ready"),
                .closeChannel(.upstream), .sendClose(to: .client, code: 1013, reason: "upstream not ready"),
                .armCloseLinger(ms: lingerMs),
            ]
        )
        // A ready message racing the timeout is stale, not a bug.
        #expect(machine.gatePassed(nowMs: 101).isEmpty)
        #expect(machine.invalidTransitions.isEmpty)
        #expect(machine.record.endReason == .upstreamNotReady)
    }

    @Test("a timeout before the client's 101 answers 504 over HTTP")
    func timeoutUpstreamMode() {
        var machine = startedMachine(.upstream)
        #expect(
            machine.handshakeTimedOut(nowMs: 100) == [
                .cancelTimers, .dropHeldFrames, .abandonUpstreamAttempt(attempt: 1, withinMs: 1),
                .respondHTTP(status: 504, reason: .upstreamUnavailable),
            ]
        )
    }

    // MARK: The client while held

    @Test("(c) a client FIN while held is passed on after the flush", arguments: ReadyGateMode.allCases)
    func finWhileHeld(_ gate: ReadyGateMode) {
        var machine = startedMachine(gate: gate)
        #expect(machine.inputClosed(.client, gone: false, nowMs: 5).isEmpty)
        #expect(machine.phase == .handshakePending)
        let upgraded = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(upgraded.first == .switchUpstream(watchForReadyMessage: gate == .message))
        #expect(machine.gatePassed(nowMs: 20) == [.cancelTimers, .flushAndSplice, .passHalfClose(to: .upstream)])
        #expect(machine.phase == .readyForMessages)
        // Already passed on.
        #expect(machine.inputClosed(.client, gone: false, nowMs: 21).isEmpty)
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test("a client FIN while connected is passed on after the flush too")
    func finWhileConnected() {
        var machine = startedMachine()
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(machine.inputClosed(.client, gone: false, nowMs: 12).isEmpty)
        #expect(machine.gatePassed(nowMs: 20) == [.cancelTimers, .flushAndSplice, .passHalfClose(to: .upstream)])
    }

    @Test("a client that half-closed and then went away while held is gone")
    func finThenGoneWhileHeld() {
        var machine = startedMachine()
        _ = machine.inputClosed(.client, gone: false, nowMs: 5)
        #expect(
            machine.inputClosed(.client, gone: true, nowMs: 6) == [
                clientGoneEvent, .cancelTimers, .dropHeldFrames, .abandonUpstreamAttempt(attempt: 1, withinMs: 94),
                .closeChannel(.client),
            ]
        )
        #expect(machine.phase == .closed)
    }

    @Test(
        "(d) a client close frame while held is echoed, and the backend let go with 1000",
        arguments: [UInt16(1001), 4000]
    )
    func closeWhileHeld(_ code: UInt16) {
        var machine = startedMachine()
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.clientFramesHeld(frames: 2, bytes: 22, nowMs: 11)
        #expect(
            machine.closeFrame(from: .client, code: code, nowMs: 15) == [
                .cancelTimers, .dropHeldFrames, .sendClose(to: .upstream, code: 1000, reason: "client gone"),
                .closeChannel(.upstream), .sendClose(to: .client, code: code, reason: ""), .closeChannel(.client),
            ]
        )
        #expect(machine.phase == .closed)
        #expect(machine.record.stateTimes[.closed] == 15)
        #expect(machine.record.closer == .client)
        #expect(machine.record.endReason == nil)
        #expect(machine.record.clientSentClose)
        #expect(machine.record.clientCloseCode == code)
        #expect(machine.record.undeliveredFrames == 2)
        #expect(machine.record.undeliveredBytes == 22)
        // Whatever comes after is the end of connections already being closed.
        #expect(machine.inputClosed(.client, gone: true, nowMs: 16).isEmpty)
        #expect(machine.inputClosed(.upstream, gone: true, nowMs: 17).isEmpty)
        #expect(machine.closeLingerExpired(nowMs: 300).isEmpty)
    }

    @Test("a client close frame without a code is echoed without one")
    func emptyCloseWhileHeld() {
        var machine = startedMachine()
        let actions = machine.closeFrame(from: .client, code: nil, nowMs: 5)
        #expect(actions.suffix(2) == [.sendClose(to: .client, code: nil, reason: ""), .closeChannel(.client)])
        #expect(machine.record.clientSentClose)
        #expect(machine.record.clientCloseCode == nil)
        let fields = Dictionary(machine.record.summaryFields, uniquingKeysWith: { first, _ in first })
        #expect(fields["client_close_code"] == "1005")
        #expect(fields["upstream_close_code"] == "-")
    }

    @Test("a client protocol error while held fails the client at once")
    func clientProtocolErrorWhileHeld() {
        let error = WebSocketProtocolError(.invalidCloseReason)
        var machine = startedMachine()
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(
            machine.protocolError(from: .client, error, nowMs: 12) == [
                .cancelTimers, .dropHeldFrames,
                .sendClose(to: .upstream, code: 1001, reason: "proxy ended session: client_protocol_error"),
                .closeChannel(.upstream),
                .sendClose(to: .client, code: 1007, reason: "close reason is not valid UTF-8"),
                .closeChannel(.client),
            ]
        )
        #expect(machine.record.closer == .client)
        #expect(machine.closeLingerExpired(nowMs: 300).isEmpty)
    }

    // MARK: Invalid transitions

    @Test("(f) an invalid transition is logged and ends the session with 1011 internal error")
    func invalidTransition() {
        var machine = startedMachine()
        let actions = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 3)
        let transition = InvalidSessionTransition(from: .handshakePending, event: "start")
        #expect(
            actions == [
                .logInvalidTransition(transition), .cancelTimers, .dropHeldFrames,
                .abandonUpstreamAttempt(attempt: 1, withinMs: 97),
                .sendClose(to: .client, code: 1011, reason: "internal error"), .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.invalidTransitions == [transition])
        #expect(transition.description == "invalid session event start in HANDSHAKE_PENDING")
        #expect(machine.phase == .error)
        #expect(machine.record.endReason == .internalError)
        #expect(machine.record.closer == .proxy)
        // Once ended, another bug is recorded but ends nothing twice.
        #expect(
            machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 4) == [
                .logInvalidTransition(InvalidSessionTransition(from: .error, event: "start"))
            ]
        )
        #expect(machine.invalidTransitions.count == 2)
    }

    @Test("an invalid transition before the client's 101 answers 502")
    func invalidTransitionBefore101() {
        var machine = makeMachine()
        #expect(
            machine.gatePassed(nowMs: 1) == [
                .logInvalidTransition(InvalidSessionTransition(from: .initializing, event: "gatePassed")),
                .cancelTimers, .dropHeldFrames, .respondHTTP(status: 502, reason: .internalError),
            ]
        )
    }

    @Test("an invalid transition after READY closes both sides with 1011")
    func invalidTransitionRelaying() {
        var machine = relayingMachine()
        // Not reachable through the public events (none is invalid after READY): driven directly.
        #expect(
            machine.invalidTransition("test", nowMs: 30) == [
                .logInvalidTransition(InvalidSessionTransition(from: .readyForMessages, event: "test")),
                .sendClose(to: .client, code: 1011, reason: "internal error"),
                .sendClose(to: .upstream, code: 1001, reason: "proxy ended session: internal_error"),
                .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.record.endReason == .internalError)
    }

    // MARK: A whole session

    @Test("a full happy session records the time of every state")
    func happyPath() {
        var machine = makeMachine(.immediate, timing: DeploymentEnvironment.production.profile)
        #expect(
            machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 1)
                == [.armHandshakeTimeout(ms: 1000), .connectUpstream(attempt: 1), .acceptClient]
        )
        #expect(
            machine.upstreamUpgraded(attempt: 1, nowMs: 40) == [
                .switchUpstream(watchForReadyMessage: false), .armGateDelay(ms: 25),
            ]
        )
        #expect(machine.gatePassed(nowMs: 65) == [.cancelTimers, .flushAndSplice])
        #expect(machine.closeFrame(from: .client, code: 1000, nowMs: 4000) == [.armCloseLinger(ms: lingerMs)])
        #expect(machine.closeFrame(from: .upstream, code: 1000, nowMs: 4001) == [.closeChannel(.client)])
        #expect(machine.inputClosed(.upstream, gone: true, nowMs: 4002) == [.closeChannel(.upstream)])
        machine.closed(nowMs: 5000)
        #expect(
            machine.record.stateTimes == [
                .initializing: 0, .handshakePending: 1, .connected: 40, .readyForMessages: 65, .closed: 5000,
            ]
        )
        #expect(machine.record.closer == .client)
        #expect(machine.record.endReason == nil)
        #expect(machine.record.patterns.isEmpty)
        #expect(machine.invalidTransitions.isEmpty)
    }
}

@Suite("SessionStateMachine: closing")
struct SessionStateMachineClosingTests {
    // MARK: After READY

    @Test("(a) the backend lost mid-session: 1011 upstream closed to the client, error after ready")
    func upstreamLost() {
        var machine = relayingMachine()
        #expect(
            machine.inputClosed(.upstream, gone: true, nowMs: 60) == [
                .notePattern(RaceEvent(.upstreamErrorAfterReady, ["close_code": "1006", "ms_after_ready": "40"])),
                .sendClose(to: .client, code: 1011, reason: "upstream closed"), .closeChannel(.upstream),
                .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.record.endReason == .upstreamClosed)
        #expect(machine.record.closer == .upstream)
        #expect(machine.record.patterns == [.upstreamErrorAfterReady])
        #expect(!machine.record.upstreamSentClose)
        // The client's answer ends its handshake.
        #expect(machine.closeFrame(from: .client, code: 1011, nowMs: 61) == [.closeChannel(.client)])
        #expect(machine.closeLingerExpired(nowMs: 400).isEmpty)
        #expect(machine.record.closer == .upstream)
    }

    @Test("the backend lost outside the error window is not upstream_error_after_ready", arguments: [120, 121, 5000])
    func upstreamLostLate(_ atMs: Int) {
        var machine = relayingMachine()
        let actions = machine.inputClosed(.upstream, gone: false, nowMs: atMs)
        let inWindow = atMs - 20 <= 100
        #expect(
            actions.dropFirst(inWindow ? 1 : 0) == [
                .sendClose(to: .client, code: 1011, reason: "upstream closed"), .closeChannel(.upstream),
                .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.record.patterns == (inWindow ? [.upstreamErrorAfterReady] : []))
        #expect(machine.record.endReason == .upstreamClosed)
    }

    @Test("(b) the backend's 1011 soon after READY: noted, relayed, and the client's answer closes it")
    func upstream1011AfterReady() {
        var machine = relayingMachine()
        #expect(
            machine.closeFrame(from: .upstream, code: 1011, nowMs: 25) == [
                .notePattern(RaceEvent(.upstreamErrorAfterReady, ["close_code": "1011", "ms_after_ready": "5"])),
                .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.record.closer == .upstream)
        #expect(machine.record.endReason == nil)
        #expect(machine.record.upstreamSentClose)
        #expect(machine.record.upstreamCloseCode == 1011)
        #expect(!machine.record.clientSentClose)
        #expect(machine.closeFrame(from: .client, code: 1011, nowMs: 26) == [.closeChannel(.client)])
        #expect(machine.record.clientCloseCode == 1011)
        #expect(machine.record.closer == .upstream)
        // The backend ends its output after the close handshake: its connection goes.
        #expect(machine.inputClosed(.upstream, gone: false, nowMs: 27) == [.closeChannel(.upstream)])
        #expect(machine.inputClosed(.client, gone: true, nowMs: 28).isEmpty)
        #expect(machine.closeLingerExpired(nowMs: 300).isEmpty)
        #expect(machine.record.endReason == nil)
    }

    @Test("a backend 1011 outside the window, or answering the client's close, is not an error after ready")
    func upstream1011NotNoted() {
        var late = relayingMachine()
        #expect(late.closeFrame(from: .upstream, code: 1011, nowMs: 121) == [.armCloseLinger(ms: lingerMs)])
        #expect(late.record.patterns.isEmpty)

        var answer = relayingMachine()
        _ = answer.closeFrame(from: .client, code: 1000, nowMs: 25)
        #expect(answer.closeFrame(from: .upstream, code: 1011, nowMs: 26) == [.closeChannel(.client)])
        #expect(answer.record.patterns.isEmpty)
        #expect(answer.record.closer == .client)
    }

    @Test("the client closes first: the backend's answer closes the client, the linger the rest")
    func clientClosesFirst() {
        var machine = relayingMachine()
        #expect(machine.closeFrame(from: .client, code: 4001, nowMs: 30) == [.armCloseLinger(ms: lingerMs)])
        // A second close frame from the same side is nothing new.
        #expect(machine.closeFrame(from: .client, code: 1000, nowMs: 31).isEmpty)
        #expect(machine.record.clientCloseCode == 4001)
        #expect(machine.closeFrame(from: .upstream, code: nil, nowMs: 32) == [.closeChannel(.client)])
        #expect(machine.closeFrame(from: .upstream, code: 1000, nowMs: 33).isEmpty)
        #expect(machine.record.upstreamSentClose)
        #expect(machine.record.upstreamCloseCode == nil)
        #expect(machine.record.closer == .client)
        #expect(machine.closeLingerExpired(nowMs: 300) == [.closeChannel(.upstream)])
        let fields = Dictionary(machine.record.summaryFields, uniquingKeysWith: { first, _ in first })
        #expect(fields["client_close_code"] == "4001")
        #expect(fields["upstream_close_code"] == "1005")
        #expect(fields["closed_by"] == "client")
    }

    @Test("the client closes and the backend leaves without answering: the proxy answers the client")
    func upstreamLeavesWithoutAnswer() {
        var machine = relayingMachine()
        _ = machine.closeFrame(from: .client, code: 4002, nowMs: 30)
        #expect(
            machine.inputClosed(.upstream, gone: false, nowMs: 31) == [
                .sendClose(to: .client, code: 4002, reason: ""), .closeChannel(.client), .closeChannel(.upstream),
            ]
        )
        #expect(machine.record.endReason == nil)
        #expect(machine.record.closer == .client)
        #expect(machine.record.patterns.isEmpty)
        #expect(machine.closeLingerExpired(nowMs: 300).isEmpty)
    }

    @Test("the client gone mid-session: the backend gets a masked 1001")
    func clientGoneMidSession() {
        var machine = relayingMachine()
        #expect(
            machine.inputClosed(.client, gone: true, nowMs: 30) == [
                .sendClose(to: .upstream, code: 1001, reason: "client gone"), .closeChannel(.upstream),
                .closeChannel(.client),
            ]
        )
        #expect(machine.record.closer == .client)
        #expect(machine.record.endReason == nil)
        #expect(machine.inputClosed(.upstream, gone: true, nowMs: 31).isEmpty)
        #expect(machine.inputClosed(.client, gone: true, nowMs: 32).isEmpty)
    }

    @Test("a half-closed client that then goes away: 1001 to the backend")
    func finThenGone() {
        var machine = relayingMachine()
        #expect(machine.inputClosed(.client, gone: false, nowMs: 30) == [.passHalfClose(to: .upstream)])
        #expect(
            machine.inputClosed(.client, gone: true, nowMs: 31) == [
                .sendClose(to: .upstream, code: 1001, reason: "client gone"), .closeChannel(.upstream),
                .closeChannel(.client),
            ]
        )
    }

    @Test("the client gone after its close frame: its connection closes; the backend's answer is awaited")
    func clientGoneAfterClose() {
        var machine = relayingMachine()
        _ = machine.closeFrame(from: .client, code: 1000, nowMs: 30)
        #expect(machine.inputClosed(.client, gone: false, nowMs: 31).isEmpty)
        #expect(machine.inputClosed(.client, gone: true, nowMs: 32) == [.closeChannel(.client)])
        #expect(machine.closeFrame(from: .upstream, code: 1000, nowMs: 33).isEmpty)
        #expect(machine.closeLingerExpired(nowMs: 300) == [.closeChannel(.upstream)])
    }

    @Test("the client gone after the backend's close frame: both connections close")
    func clientGoneAfterUpstreamClose() {
        var machine = relayingMachine()
        _ = machine.closeFrame(from: .upstream, code: 1000, nowMs: 30)
        #expect(
            machine.inputClosed(.client, gone: true, nowMs: 31) == [.closeChannel(.client), .closeChannel(.upstream)]
        )
        #expect(machine.record.closer == .upstream)
        #expect(machine.closeLingerExpired(nowMs: 300).isEmpty)
    }

    @Test("shutdown mid-session: close frames both ways, answers awaited within the linger")
    func shutdownMidSession() {
        var machine = relayingMachine()
        #expect(
            machine.shutdown(nowMs: 30) == [
                .sendClose(to: .client, code: 1001, reason: "going away"),
                .sendClose(to: .upstream, code: 1001, reason: "proxy ended session: going_away"),
                .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.shutdown(nowMs: 31).isEmpty)
        #expect(machine.closeFrame(from: .client, code: 1001, nowMs: 32) == [.closeChannel(.client)])
        #expect(machine.closeFrame(from: .upstream, code: 1001, nowMs: 33).isEmpty)
        // The backend ends its connection after the close handshake: the proxy's side goes too.
        #expect(machine.inputClosed(.upstream, gone: true, nowMs: 34) == [.closeChannel(.upstream)])
        #expect(machine.closeLingerExpired(nowMs: 300).isEmpty)
        #expect(machine.record.closer == .proxy)
        #expect(machine.record.endReason == .goingAway)
        #expect(machine.record.patterns.isEmpty)
    }

    @Test("shutdown after the backend was lost keeps upstream_closed")
    func shutdownAfterUpstreamLost() {
        var machine = relayingMachine()
        _ = machine.inputClosed(.upstream, gone: true, nowMs: 30)
        #expect(machine.shutdown(nowMs: 31).isEmpty)
        #expect(machine.record.endReason == .upstreamClosed)
        #expect(machine.record.closer == .upstream)
    }

    @Test("protocol errors after READY are the endpoints' business")
    func protocolErrorAfterReady() {
        var machine = relayingMachine()
        #expect(machine.protocolError(from: .client, WebSocketProtocolError(.reservedBitsSet), nowMs: 30).isEmpty)
        #expect(machine.protocolError(from: .upstream, WebSocketProtocolError(.reservedBitsSet), nowMs: 30).isEmpty)
        #expect(machine.record.endReason == nil)
    }

    // MARK: Before READY

    @Test("the backend's close frame before READY: its close goes to the client, whose answer closes it")
    func upstreamCloseWhileConnected() {
        var machine = startedMachine()
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.clientFramesHeld(frames: 1, bytes: 8, nowMs: 11)
        #expect(
            machine.closeFrame(from: .upstream, code: 1001, nowMs: 15) == [
                .cancelTimers, .dropHeldFrames, .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.phase == .closed)
        #expect(machine.record.closer == .upstream)
        #expect(machine.record.upstreamCloseCode == 1001)
        #expect(machine.record.undeliveredFrames == 1)
        #expect(machine.record.endReason == nil)
        // The hold let go of the client's bytes: the proxy answers the backend with the client's code.
        #expect(
            machine.closeFrame(from: .client, code: 1001, nowMs: 16) == [
                .sendClose(to: .upstream, code: 1001, reason: ""), .closeChannel(.client),
            ]
        )
        #expect(machine.inputClosed(.upstream, gone: false, nowMs: 17) == [.closeChannel(.upstream)])
        #expect(machine.closeLingerExpired(nowMs: 300).isEmpty)
        #expect(machine.gatePassed(nowMs: 301).isEmpty)
        #expect(machine.handshakeTimedOut(nowMs: 302).isEmpty)
    }

    @Test("the backend lost before READY: 1011 upstream closed, the held frames undelivered")
    func upstreamLostWhileConnected() {
        var machine = startedMachine()
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.clientFramesHeld(frames: 2, bytes: 9, nowMs: 11)
        #expect(
            machine.inputClosed(.upstream, gone: true, nowMs: 15) == [
                .cancelTimers, .dropHeldFrames,
                .sendClose(to: .upstream, code: 1001, reason: "proxy ended session: upstream_closed"),
                .closeChannel(.upstream), .sendClose(to: .client, code: 1011, reason: "upstream closed"),
                .armCloseLinger(ms: lingerMs),
            ]
        )
        #expect(machine.record.closer == .upstream)
        #expect(machine.record.endReason == .upstreamClosed)
        #expect(machine.record.undeliveredFrames == 2)
        #expect(machine.record.patterns.isEmpty)
        // The client's answer, or its FIN, lets its connection go.
        #expect(machine.inputClosed(.client, gone: false, nowMs: 16) == [.closeChannel(.client)])
        #expect(machine.closeFrame(from: .client, code: 1011, nowMs: 17).isEmpty)
    }

    @Test("ending: a peer that stops sending is closed, the linger closes the rest")
    func endingInputClosed() {
        var machine = startedMachine()
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.shutdown(nowMs: 20)
        #expect(machine.inputClosed(.upstream, gone: true, nowMs: 21).isEmpty)
        #expect(machine.inputClosed(.client, gone: false, nowMs: 22) == [.closeChannel(.client)])
        #expect(machine.inputClosed(.client, gone: true, nowMs: 23).isEmpty)
        #expect(machine.closeLingerExpired(nowMs: 300).isEmpty)
    }

    // MARK: Found by the loopback tests, fixed

    @Test("shutdown, the client answers, then the backend's close and FIN: the backend's connection goes")
    func shutdownBackendClosesLast() {
        var machine = relayingMachine()
        _ = machine.shutdown(nowMs: 20)
        #expect(machine.closeFrame(from: .client, code: 1001, nowMs: 21) == [.closeChannel(.client)])
        #expect(machine.inputClosed(.client, gone: true, nowMs: 22).isEmpty)
        #expect(machine.closeFrame(from: .upstream, code: 1001, nowMs: 23).isEmpty)
        #expect(machine.inputClosed(.upstream, gone: false, nowMs: 24) == [.closeChannel(.upstream)])
    }

    @Test("the backend's close and FIN before the client's answer: the answer is relayed, then both go")
    func backendClosesFirstThenFin() {
        var machine = relayingMachine()
        #expect(machine.closeFrame(from: .upstream, code: 1000, nowMs: 20) == [.armCloseLinger(ms: lingerMs)])
        #expect(machine.inputClosed(.upstream, gone: false, nowMs: 21).isEmpty, "the client's answer is still due")
        #expect(
            machine.closeFrame(from: .client, code: 1000, nowMs: 22) == [
                .closeChannel(.client), .closeChannel(.upstream),
            ]
        )
        #expect(machine.record.closer == .upstream)
    }

    // MARK: Found by these tests, fixed

    @Test("a client FIN while held makes the client the closer, as after READY")
    func heldFinSetsCloser() {
        var machine = startedMachine()
        _ = machine.inputClosed(.client, gone: false, nowMs: 5)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.gatePassed(nowMs: 20)
        _ = machine.inputClosed(.upstream, gone: true, nowMs: 21)
        #expect(machine.record.closer == .client)
    }

    @Test("the backend's close frame before READY is answered once the client answers")
    func connectedUpstreamCloseAnswered() {
        var machine = startedMachine()
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.closeFrame(from: .upstream, code: 1000, nowMs: 15)
        let actions = machine.closeFrame(from: .client, code: 1000, nowMs: 16)
        #expect(actions == [.sendClose(to: .upstream, code: 1000, reason: ""), .closeChannel(.client)])
    }
}

@Suite("SessionCloseReason")
struct SessionCloseReasonTests {
    @Test(
        "codes, reason texts, names and HTTP statuses follow the DESIGN's table",
        arguments: [
            (SessionCloseReason.upstreamUnavailable, UInt16(1013), "upstream unavailable", "upstream_unavailable", 504),
            (.upstreamRejected(status: 503), 1014, "upstream rejected: 503", "upstream_rejected", 502),
            (.upstreamRejected(status: 401), 1008, "upstream rejected: 401", "upstream_rejected", 502),
            (.upstreamRejected(status: 403), 1008, "upstream rejected: 403", "upstream_rejected", 502),
            (.upstreamRejected(status: 404), 1011, "upstream rejected: 404", "upstream_rejected", 502),
            (.upstreamNotReady, 1013, "upstream not ready", "upstream_not_ready", 504),
            (.upstreamClosed, 1011, "upstream closed", "upstream_closed", 502),
            (.goingAway, 1001, "going away", "going_away", 503),
            (
                .upstreamProtocolError("bad accept"), 1011, "upstream protocol error: bad accept",
                "upstream_protocol_error", 502
            ),
            (
                .clientProtocolError(WebSocketProtocolError(.maskingRuleViolated)), 1002, "masking rule violated",
                "client_protocol_error", 502
            ),
            (
                .clientProtocolError(WebSocketProtocolError(.messageTooBig(9))), 1009, "message too big (9 bytes)",
                "client_protocol_error", 502
            ),
            (.internalError, 1011, "internal error", "internal_error", 502),
            (.idleTimeout, 1001, "idle timeout", "idle_timeout", 502),
            (.peerUnresponsive(.client), 1001, "client unresponsive", "peer_unresponsive", 502),
            (.peerUnresponsive(.upstream), 1001, "upstream unresponsive", "peer_unresponsive", 502),
        ]
    )
    func table(_ reason: SessionCloseReason, _ code: UInt16, _ text: String, _ name: String, _ status: Int) {
        #expect(reason.closeCode == code)
        #expect(reason.reasonText == text)
        #expect(reason.name == name)
        #expect(reason.httpStatus == status)
        #expect(reason.description == "\(code) \(text)")
        // A close frame's reason must fit a control frame: 125 bytes less the 2-byte code.
        #expect(reason.reasonText.utf8.count <= 123)
    }

    @Test("only a client protocol error fails the client at once")
    func failsClientAtOnce() {
        #expect(SessionCloseReason.clientProtocolError(WebSocketProtocolError(.reservedBitsSet)).failsClientAtOnce)
        let others: [SessionCloseReason] = [
            .upstreamUnavailable, .upstreamRejected(status: 403), .upstreamNotReady, .upstreamClosed, .goingAway,
            .upstreamProtocolError("x"), .internalError,
        ]
        #expect(others.allSatisfy { !$0.failsClientAtOnce })
    }

    @Test("phase names are the DESIGN's")
    func phaseNames() {
        #expect(
            SessionState.allCases.map(\.description) == [
                "INITIALIZING", "HANDSHAKE_PENDING", "CONNECTED", "READY_FOR_MESSAGES", "ERROR", "CLOSED",
            ]
        )
    }
}

@Suite("Session state times")
struct SessionStateTimesTests {
    @Test("each state has its own slot, unset slots read nil")
    func slots() {
        var times: SessionStateTimes = [.initializing: 0, .connected: 30]
        #expect(times[.initializing] == 0)
        #expect(times[.connected] == 30)
        #expect(times[.handshakePending] == nil)
        for (offset, state) in SessionState.allCases.enumerated() { times[state] = offset * 10 + 1 }
        for (offset, state) in SessionState.allCases.enumerated() { #expect(times[state] == offset * 10 + 1) }
        times[.closed] = nil
        #expect(times[.closed] == nil)
        #expect(times != SessionStateTimes())
    }
}
