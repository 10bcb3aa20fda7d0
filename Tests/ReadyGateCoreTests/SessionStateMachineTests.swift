import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

/// The transitions DESIGN §2 allows: the happy path, ERROR from every non-terminal state, ERROR →
/// CLOSED, and a clean CLOSED before READY (the client closed or left while its frames were held).
private let legalTransitions: Set<[SessionState]> = [
    [.initializing, .handshakePending], [.initializing, .error], [.initializing, .closed],
    [.handshakePending, .connected], [.handshakePending, .error], [.handshakePending, .closed],
    [.connected, .readyForMessages], [.connected, .error], [.connected, .closed],
    [.readyForMessages, .closed], [.readyForMessages, .error],
    [.error, .closed],
]

private let testingTiming = DeploymentEnvironment.testing.profile

private func makeMachine(
    _ acceptMode: AcceptMode = .immediate,
    gate: ReadyGateMode = .delay,
    timeoutAction: ReadyTimeoutAction = .close,
    timing: TimingProfile = testingTiming
) -> SessionStateMachine {
    SessionStateMachine(acceptMode: acceptMode, gate: gate, timeoutAction: timeoutAction, timing: timing)
}

/// A machine brought to `state` along legal transitions only.
private func sessionMachine(
    in state: SessionState,
    _ acceptMode: AcceptMode = .immediate,
    timeoutAction: ReadyTimeoutAction = .close
) -> SessionStateMachine {
    var machine = makeMachine(acceptMode, timeoutAction: timeoutAction)
    let path: [SessionState]
    switch state {
    case .initializing: path = []
    case .handshakePending: path = [.handshakePending]
    case .connected: path = [.handshakePending, .connected]
    case .readyForMessages: path = [.handshakePending, .connected, .readyForMessages]
    case .error: path = [.handshakePending, .error]
    case .closed: path = [.handshakePending, .connected, .readyForMessages, .closed]
    }
    for (index, next) in path.enumerated() {
        machine.transition(to: next, nowMs: index + 1)
    }
    return machine
}

/// A machine whose upstream answered 101 (state CONNECTED), with the actions it returned.
private func connectedMachine(
    _ acceptMode: AcceptMode = .immediate,
    gate: ReadyGateMode = .delay,
    timeoutAction: ReadyTimeoutAction = .close
) -> SessionStateMachine {
    var machine = makeMachine(acceptMode, gate: gate, timeoutAction: timeoutAction)
    _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 1)
    _ = machine.upstreamUpgraded(nowMs: 10)
    return machine
}

@Suite("SessionState transitions")
struct SessionStateTransitionTests {
    @Test(
        "canTransition allows exactly the legal set",
        arguments: SessionState.allCases,
        SessionState.allCases
    )
    func canTransition(_ from: SessionState, _ to: SessionState) {
        #expect(from.canTransition(to: to) == legalTransitions.contains([from, to]))
    }

    @Test("the table covers all 36 pairs and 12 are legal")
    func tableSize() {
        let pairs = SessionState.allCases.flatMap { from in SessionState.allCases.map { [from, $0] } }
        #expect(pairs.count == 36)
        #expect(pairs.filter { $0[0].canTransition(to: $0[1]) }.count == legalTransitions.count)
        #expect(legalTransitions.count == 12)
    }

    @Test(
        "the machine applies legal transitions and refuses illegal ones",
        arguments: SessionState.allCases,
        SessionState.allCases
    )
    func machineTransition(_ from: SessionState, _ to: SessionState) {
        var machine = sessionMachine(in: from)
        #expect(machine.state == from)
        #expect(machine.invalidTransitions.isEmpty)
        let enteredBefore = machine.enteredAt
        let applied = machine.transition(to: to, nowMs: 500)
        if legalTransitions.contains([from, to]) {
            #expect(applied)
            #expect(machine.state == to)
            #expect(machine.enteredAt[to] == 500)
            #expect(machine.invalidTransitions.isEmpty)
        } else {
            #expect(!applied)
            #expect(machine.state == from)
            #expect(machine.enteredAt == enteredBefore)
            #expect(machine.invalidTransitions == [InvalidSessionTransition(from: from, to: to)])
        }
    }

    @Test("terminal states")
    func terminal() {
        #expect(SessionState.allCases.filter(\.isTerminal) == [.error, .closed])
    }

    @Test("state names are the DESIGN's")
    func names() {
        #expect(
            SessionState.allCases.map(\.description) == [
                "INITIALIZING", "HANDSHAKE_PENDING", "CONNECTED", "READY_FOR_MESSAGES", "ERROR", "CLOSED",
            ]
        )
        let invalid = InvalidSessionTransition(from: .closed, to: .connected)
        #expect(invalid.description == "invalid session transition CLOSED → CONNECTED")
    }

    @Test("client frames are held until READY", arguments: SessionState.allCases)
    func holding(_ state: SessionState) {
        let holds = [SessionState.initializing, .handshakePending, .connected].contains(state)
        #expect(sessionMachine(in: state).isHoldingClientFrames == holds)
    }
}

@Suite("SessionStateMachine events")
struct SessionStateMachineTests {
    // MARK: Start

    @Test("a new machine is INITIALIZING at 0")
    func initial() {
        let machine = makeMachine()
        #expect(machine.state == .initializing)
        #expect(machine.enteredAt == [.initializing: 0])
        #expect(machine.endReason == nil)
        #expect(!machine.clientAccepted)
        #expect(machine.connectFailures == 0)
        #expect(machine.timing == testingTiming)
    }

    @Test("immediate mode accepts the client at once and connects upstream")
    func startImmediate() {
        var machine = makeMachine(.immediate)
        #expect(
            machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 2)
                == [.acceptClient, .connectUpstream]
        )
        #expect(machine.state == .handshakePending)
        #expect(machine.enteredAt[.handshakePending] == 2)
        #expect(machine.clientAccepted)
        #expect(machine.acceptMode == .immediate)
    }

    @Test("upstream mode only connects upstream")
    func startUpstream() {
        var machine = makeMachine(.upstream)
        #expect(
            machine.start(clientOfferedSubprotocols: true, subprotocolsConfigured: true, nowMs: 2) == [.connectUpstream]
        )
        #expect(machine.state == .handshakePending)
        #expect(!machine.clientAccepted)
        #expect(machine.acceptMode == .upstream)
    }

    @Test(
        "immediate mode with offered subprotocols",
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
        #expect(machine.clientAccepted == (expected == .immediate))
        #expect(actions == (expected == .immediate ? [.acceptClient, .connectUpstream] : [.connectUpstream]))
    }

    @Test("immediate turned upstream waits for the backend's 101 before accepting")
    func subprotocolsMirrorBackend() {
        var machine = makeMachine(.immediate)
        _ = machine.start(clientOfferedSubprotocols: true, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamUpgraded(nowMs: 5) == [.acceptClient, .armReadyDelay(ms: 1)])
        #expect(machine.clientAccepted)
    }

    @Test("immediate turned upstream relays a rejection")
    func subprotocolsRelayRejection() {
        var machine = makeMachine(.immediate)
        _ = machine.start(clientOfferedSubprotocols: true, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamRejected(status: 403, nowMs: 5) == .relayUpstreamResponse(status: 403))
    }

    @Test("starting twice is an invalid transition")
    func startTwice() {
        var machine = makeMachine(.immediate)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 1).isEmpty)
        #expect(
            machine.invalidTransitions == [InvalidSessionTransition(from: .handshakePending, to: .handshakePending)]
        )
        #expect(machine.state == .handshakePending)
    }

    // MARK: Retries

    @Test(
        "connect failures retry with growing delays until the deadline, then 1013",
        arguments: [UInt64(1), 2, 3, 42, 1234]
    )
    func retriesUntilDeadline(_ seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var machine = makeMachine(.immediate)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        let retry = ProgressiveDelay(baseMs: testingTiming.baseDelayMs, capMs: testingTiming.retryCapMs)
        var now = 0
        var retries = 0
        while true {
            let action = machine.upstreamAttemptFailed(nowMs: now, using: &random)
            guard case .retryConnect(let delay) = action else {
                #expect(action == .end(.upstreamUnavailable))
                break
            }
            #expect(delay >= 1)
            #expect(delay <= retry.ceilingMs(attempt: retries))
            #expect(now + delay < testingTiming.handshakeTimeoutMs)
            #expect(machine.state == .handshakePending)
            retries += 1
            now += delay + 1  // the next connect attempt takes a millisecond to fail
            try #require(retries < 1000)
        }
        #expect(retries >= 5)  // 100 ms with ceilings 1, 2, 4, 8, 16, 20… cannot end sooner
        #expect(now >= testingTiming.handshakeTimeoutMs - 1)
        #expect(machine.connectFailures == retries + 1)
        #expect(machine.state == .error)
        #expect(machine.endReason == .upstreamUnavailable)
        #expect(machine.endReason?.closeCode == 1013)
        #expect(machine.endReason?.reasonText == "upstream unavailable")
        #expect(machine.invalidTransitions.isEmpty)
        // Once ended, a late failure report changes nothing.
        #expect(machine.upstreamAttemptFailed(nowMs: now, using: &random) == .none)
        #expect(machine.connectFailures == retries + 1)
    }

    @Test("a failure reported past the deadline ends the session at once")
    func failurePastDeadline() {
        var random = SplitMix64(seed: 1)
        var machine = makeMachine(.upstream)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamAttemptFailed(nowMs: 250, using: &random) == .end(.upstreamUnavailable))
        #expect(machine.enteredAt[.error] == 250)
    }

    @Test("the first retry delay is drawn from the base", arguments: [UInt64(1), .max])
    func firstRetry(_ word: UInt64) {
        var random = CoreTestsConstantGenerator(value: word)
        var machine = makeMachine(timing: TimingProfile(baseDelayMs: 25, handshakeTimeoutMs: 1000, retryCapMs: 200))
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamAttemptFailed(nowMs: 3, using: &random) == .retryConnect(afterMs: word == 1 ? 1 : 25))
        #expect(machine.upstreamAttemptFailed(nowMs: 30, using: &random) == .retryConnect(afterMs: word == 1 ? 1 : 50))
    }

    @Test("connect failures outside HANDSHAKE_PENDING are ignored", arguments: SessionState.allCases)
    func failureOutsidePending(_ state: SessionState) {
        guard state != .handshakePending else { return }
        var random = SplitMix64(seed: 5)
        var machine = sessionMachine(in: state)
        #expect(machine.upstreamAttemptFailed(nowMs: 10, using: &random) == .none)
        #expect(machine.connectFailures == 0)
        #expect(machine.state == state)
    }

    // MARK: Upstream 101

    @Test("101 in immediate mode arms the delay gate with the base delay")
    func upgradedImmediateDelay() {
        var machine = makeMachine(.immediate, gate: .delay)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamUpgraded(nowMs: 30) == [.armReadyDelay(ms: testingTiming.baseDelayMs)])
        #expect(machine.state == .connected)
        #expect(machine.enteredAt[.connected] == 30)
        #expect(machine.isHoldingClientFrames)
        #expect(machine.gatePassed(nowMs: 31) == [.flushAndSplice(timedOut: false)])
        #expect(machine.state == .readyForMessages)
        #expect(machine.enteredAt[.readyForMessages] == 31)
        #expect(!machine.isHoldingClientFrames)
    }

    @Test("101 in upstream mode accepts the client, then arms the gate")
    func upgradedUpstreamDelay() {
        var machine = makeMachine(
            .upstream,
            timing: TimingProfile(baseDelayMs: 25, handshakeTimeoutMs: 1000, retryCapMs: 200)
        )
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamUpgraded(nowMs: 30) == [.acceptClient, .armReadyDelay(ms: 25)])
        #expect(machine.clientAccepted)
    }

    @Test("a zero base delay passes the delay gate at once", arguments: AcceptMode.allCases)
    func zeroDelay(_ mode: AcceptMode) {
        var machine = makeMachine(mode, timing: TimingProfile(baseDelayMs: 0, handshakeTimeoutMs: 100, retryCapMs: 20))
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        let expected: [SessionStateMachine.Action] =
            mode == .upstream ? [.acceptClient, .flushAndSplice(timedOut: false)] : [.flushAndSplice(timedOut: false)]
        #expect(machine.upstreamUpgraded(nowMs: 12) == expected)
        #expect(machine.state == .readyForMessages)
        #expect(machine.enteredAt[.connected] == 12)
        #expect(machine.enteredAt[.readyForMessages] == 12)
    }

    @Test("the message gate awaits the ready message", arguments: AcceptMode.allCases)
    func messageGate(_ mode: AcceptMode) {
        var machine = makeMachine(mode, gate: .message)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        let expected: [SessionStateMachine.Action] =
            mode == .upstream ? [.acceptClient, .awaitReadyMessage] : [.awaitReadyMessage]
        #expect(machine.upstreamUpgraded(nowMs: 12) == expected)
        #expect(machine.state == .connected)
        #expect(machine.gatePassed(nowMs: 40) == [.flushAndSplice(timedOut: false)])
        #expect(machine.state == .readyForMessages)
    }

    @Test("a message gate with a zero base delay still waits for the message")
    func messageGateIgnoresZeroDelay() {
        var machine = makeMachine(
            gate: .message,
            timing: TimingProfile(baseDelayMs: 0, handshakeTimeoutMs: 100, retryCapMs: 20)
        )
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamUpgraded(nowMs: 1) == [.awaitReadyMessage])
    }

    @Test("the gate passes once")
    func gatePassesOnce() {
        var machine = connectedMachine()
        #expect(machine.gatePassed(nowMs: 20) == [.flushAndSplice(timedOut: false)])
        #expect(machine.gatePassed(nowMs: 21).isEmpty)
        #expect(machine.invalidTransitions.count == 1)
    }

    @Test("a 101 before the session started is refused")
    func upgradeBeforeStart() {
        var machine = makeMachine()
        #expect(machine.upstreamUpgraded(nowMs: 1).isEmpty)
        #expect(machine.state == .initializing)
        #expect(machine.invalidTransitions == [InvalidSessionTransition(from: .initializing, to: .connected)])
        #expect(!machine.clientAccepted)
    }

    @Test("the gate cannot pass before the upstream's 101")
    func gateBeforeUpgrade() {
        var machine = makeMachine()
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.gatePassed(nowMs: 5).isEmpty)
        #expect(machine.state == .handshakePending)
        #expect(
            machine.invalidTransitions == [InvalidSessionTransition(from: .handshakePending, to: .readyForMessages)]
        )
    }

    // MARK: Rejection

    @Test(
        "a rejection in immediate mode ends the session with a close code",
        arguments: [
            (500, UInt16(1014)), (502, 1014), (503, 1014), (599, 1014),
            (401, 1008), (403, 1008),
            (400, 1011), (404, 1011), (426, 1011), (200, 1011), (302, 1011),
        ]
    )
    func rejectedImmediate(_ status: Int, _ code: UInt16) {
        var machine = makeMachine(.immediate)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamRejected(status: status, nowMs: 9) == .end(.upstreamRejected(status: status)))
        #expect(machine.state == .error)
        #expect(machine.enteredAt[.error] == 9)
        #expect(machine.endReason == .upstreamRejected(status: status))
        #expect(machine.endReason?.closeCode == code)
        #expect(machine.endReason?.reasonText == "upstream rejected: \(status)")
        #expect(machine.endReason?.name == "upstream_rejected")
    }

    @Test("a rejection in upstream mode is relayed as it is", arguments: [401, 403, 404, 500])
    func rejectedUpstream(_ status: Int) {
        var machine = makeMachine(.upstream)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.upstreamRejected(status: status, nowMs: 9) == .relayUpstreamResponse(status: status))
        #expect(machine.state == .error)
        #expect(!machine.clientAccepted)
        #expect(machine.endReason == .upstreamRejected(status: status))
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test("a rejection outside HANDSHAKE_PENDING is ignored", arguments: SessionState.allCases)
    func rejectedOutsidePending(_ state: SessionState) {
        guard state != .handshakePending else { return }
        var machine = sessionMachine(in: state)
        #expect(machine.upstreamRejected(status: 500, nowMs: 50) == .none)
        #expect(machine.state == state)
        #expect(machine.endReason == nil)
    }

    // MARK: Handshake timeout

    @Test("timeout while HANDSHAKE_PENDING: 1013 upstream unavailable", arguments: AcceptMode.allCases)
    func timeoutPending(_ mode: AcceptMode) {
        var machine = makeMachine(mode, timeoutAction: .open)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.handshakeTimedOut(nowMs: 100) == [.end(.upstreamUnavailable)])
        #expect(machine.state == .error)
        #expect(machine.endReason?.closeCode == 1013)
        #expect(machine.endReason?.reasonText == "upstream unavailable")
    }

    @Test("timeout while INITIALIZING: 1013 upstream unavailable")
    func timeoutInitializing() {
        var machine = makeMachine()
        #expect(machine.handshakeTimedOut(nowMs: 100) == [.end(.upstreamUnavailable)])
        #expect(machine.state == .error)
    }

    @Test("timeout while CONNECTED with `close`: 1013 upstream not ready", arguments: ReadyGateMode.allCases)
    func timeoutConnectedClose(_ gate: ReadyGateMode) {
        var machine = connectedMachine(gate: gate, timeoutAction: .close)
        #expect(machine.handshakeTimedOut(nowMs: 100) == [.end(.upstreamNotReady)])
        #expect(machine.state == .error)
        #expect(machine.endReason == .upstreamNotReady)
        #expect(machine.endReason?.closeCode == 1013)
        #expect(machine.endReason?.reasonText == "upstream not ready")
        // The gate can no longer pass, and a stale gate event is not logged as a bug.
        #expect(machine.gatePassed(nowMs: 101).isEmpty)
        #expect(machine.state == .error)
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test("timeout while CONNECTED with `open`: spliced anyway", arguments: ReadyGateMode.allCases)
    func timeoutConnectedOpen(_ gate: ReadyGateMode) {
        var machine = connectedMachine(gate: gate, timeoutAction: .open)
        #expect(machine.handshakeTimedOut(nowMs: 100) == [.flushAndSplice(timedOut: true)])
        #expect(machine.state == .readyForMessages)
        #expect(machine.enteredAt[.readyForMessages] == 100)
        #expect(machine.endReason == nil)
        // A late gate pass does nothing more.
        #expect(machine.gatePassed(nowMs: 101).isEmpty)
    }

    @Test(
        "timeout after READY or at the end does nothing",
        arguments: [SessionState.readyForMessages, .error, .closed],
        ReadyTimeoutAction.allCases
    )
    func timeoutLate(_ state: SessionState, _ action: ReadyTimeoutAction) {
        var machine = sessionMachine(in: state, timeoutAction: action)
        let reasonBefore = machine.endReason
        #expect(machine.handshakeTimedOut(nowMs: 100).isEmpty)
        #expect(machine.state == state)
        #expect(machine.endReason == reasonBefore)
        #expect(machine.invalidTransitions.isEmpty)
    }

    // MARK: Client leaving

    @Test(
        "a client leaving before READY abandons the upstream",
        arguments: [SessionState.initializing, .handshakePending, .connected],
        [true, false]
    )
    func clientLeft(_ state: SessionState, _ cleanly: Bool) {
        var machine = sessionMachine(in: state)
        #expect(
            machine.clientLeftBeforeReady(cleanly: cleanly, nowMs: 70) == .abandonUpstream(clientClosedCleanly: cleanly)
        )
        #expect(machine.state == .closed)
        #expect(machine.enteredAt[.closed] == 70)
        #expect(machine.endReason == nil)
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test(
        "a client leaving after READY or at the end is not handled here",
        arguments: [SessionState.readyForMessages, .error, .closed]
    )
    func clientLeftLate(_ state: SessionState) {
        var machine = sessionMachine(in: state)
        #expect(machine.clientLeftBeforeReady(cleanly: true, nowMs: 70) == .none)
        #expect(machine.state == state)
    }

    @Test("after the client left, upstream events do nothing")
    func eventsAfterClientLeft() {
        var random = SplitMix64(seed: 3)
        var machine = makeMachine(.upstream)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        _ = machine.clientLeftBeforeReady(cleanly: false, nowMs: 5)
        #expect(machine.upstreamAttemptFailed(nowMs: 6, using: &random) == .none)
        #expect(machine.upstreamRejected(status: 500, nowMs: 7) == .none)
        #expect(machine.handshakeTimedOut(nowMs: 100).isEmpty)
        #expect(machine.shutdown(nowMs: 101) == .none)
        #expect(machine.state == .closed)
        #expect(machine.endReason == nil)
    }

    // MARK: End reason

    @Test("the end reason is recorded once")
    func endReasonOnce() {
        var machine = makeMachine()
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        #expect(machine.handshakeTimedOut(nowMs: 100) == [.end(.upstreamUnavailable)])
        #expect(machine.shutdown(nowMs: 101) == .none)
        #expect(machine.upstreamFailedBeforeReady(.upstreamClosed, nowMs: 102) == .none)
        #expect(machine.clientProtocolError(WebSocketProtocolError(.reservedBitsSet), nowMs: 103) == .none)
        #expect(machine.upstreamRejected(status: 500, nowMs: 104) == .none)
        #expect(machine.handshakeTimedOut(nowMs: 105).isEmpty)
        #expect(machine.endReason == .upstreamUnavailable)
        #expect(machine.enteredAt[.error] == 100)
        machine.closed(nowMs: 110)
        #expect(machine.state == .closed)
        #expect(machine.endReason == .upstreamUnavailable)
        #expect(machine.shutdown(nowMs: 111) == .none)
        #expect(machine.endReason == .upstreamUnavailable)
    }

    @Test("a relayed rejection is the end reason; a later shutdown does not replace it")
    func relayedRejectionOnce() {
        var machine = makeMachine(.upstream)
        _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
        _ = machine.upstreamRejected(status: 404, nowMs: 1)
        #expect(machine.shutdown(nowMs: 2) == .none)
        #expect(machine.endReason == .upstreamRejected(status: 404))
    }

    // MARK: Other endings

    @Test("shutdown ends a session in any non-terminal state with 1001", arguments: SessionState.allCases)
    func shutdown(_ state: SessionState) {
        var machine = sessionMachine(in: state)
        let action = machine.shutdown(nowMs: 900)
        if state.isTerminal {
            #expect(action == .none)
            #expect(machine.state == state)
        } else {
            #expect(action == .end(.goingAway))
            #expect(machine.state == .error)
            #expect(machine.endReason?.closeCode == 1001)
            #expect(machine.endReason?.reasonText == "going away")
        }
        #expect(machine.invalidTransitions.isEmpty)
    }

    @Test("a client protocol error ends the session with the error's code")
    func clientProtocolError() {
        var machine = connectedMachine()
        let error = WebSocketProtocolError(.maskingRuleViolated)
        #expect(machine.clientProtocolError(error, nowMs: 15) == .end(.clientProtocolError(error)))
        #expect(machine.endReason?.closeCode == error.closeCode)
        #expect(machine.endReason?.name == "client_protocol_error")
        #expect(machine.state == .error)
    }

    @Test("the upstream failing before READY ends the session")
    func upstreamFailedBeforeReady() {
        var machine = connectedMachine()
        #expect(machine.upstreamFailedBeforeReady(.upstreamClosed, nowMs: 15) == .end(.upstreamClosed))
        #expect(machine.endReason?.closeCode == 1011)
        #expect(machine.endReason?.reasonText == "upstream closed")
    }

    @Test("the upstream failing after READY is not this machine's business")
    func upstreamFailedAfterReady() {
        var machine = sessionMachine(in: .readyForMessages)
        #expect(machine.upstreamFailedBeforeReady(.upstreamClosed, nowMs: 15) == .none)
        #expect(machine.state == .readyForMessages)
        #expect(machine.endReason == nil)
    }

    @Test("closed() completes the record from any state, once", arguments: SessionState.allCases)
    func closed(_ state: SessionState) {
        var machine = sessionMachine(in: state)
        machine.closed(nowMs: 999)
        #expect(machine.state == .closed)
        #expect(machine.invalidTransitions.isEmpty)
        if state != .closed { #expect(machine.enteredAt[.closed] == 999) }
        machine.closed(nowMs: 1000)
        #expect(machine.invalidTransitions.isEmpty)
        #expect(machine.enteredAt[.closed] != 1000)
    }

    @Test("a full happy session records the time of every state")
    func happyPath() {
        var machine = makeMachine(.immediate, timing: DeploymentEnvironment.production.profile)
        #expect(
            machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 1)
                == [.acceptClient, .connectUpstream]
        )
        #expect(machine.upstreamUpgraded(nowMs: 40) == [.armReadyDelay(ms: 25)])
        #expect(machine.gatePassed(nowMs: 65) == [.flushAndSplice(timedOut: false)])
        machine.closed(nowMs: 5000)
        #expect(
            machine.enteredAt == [
                .initializing: 0, .handshakePending: 1, .connected: 40, .readyForMessages: 65, .closed: 5000,
            ]
        )
        #expect(machine.endReason == nil)
        #expect(machine.invalidTransitions.isEmpty)
    }
}

@Suite("SessionCloseReason")
struct SessionCloseReasonTests {
    @Test(
        "codes, reason texts and names follow the DESIGN's table",
        arguments: [
            (SessionCloseReason.upstreamUnavailable, UInt16(1013), "upstream unavailable", "upstream_unavailable"),
            (.upstreamRejected(status: 503), 1014, "upstream rejected: 503", "upstream_rejected"),
            (.upstreamRejected(status: 401), 1008, "upstream rejected: 401", "upstream_rejected"),
            (.upstreamRejected(status: 403), 1008, "upstream rejected: 403", "upstream_rejected"),
            (.upstreamRejected(status: 404), 1011, "upstream rejected: 404", "upstream_rejected"),
            (.upstreamNotReady, 1013, "upstream not ready", "upstream_not_ready"),
            (.upstreamClosed, 1011, "upstream closed", "upstream_closed"),
            (.goingAway, 1001, "going away", "going_away"),
            (
                .upstreamProtocolError("bad accept"), 1011, "upstream protocol error: bad accept",
                "upstream_protocol_error"
            ),
        ]
    )
    func table(_ reason: SessionCloseReason, _ code: UInt16, _ text: String, _ name: String) {
        #expect(reason.closeCode == code)
        #expect(reason.reasonText == text)
        #expect(reason.name == name)
        #expect(reason.description == "\(code) \(text)")
        // A close frame's reason must fit a control frame: 125 bytes less the 2-byte code.
        #expect(reason.reasonText.utf8.count <= 123)
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
