import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

private typealias Action = SessionStateMachine.Action

/// The testing profile: base delay 1 ms, handshake timeout 100 ms, retry cap 20 ms; the replay
/// window (the error window) is 100 ms.
private let timing = DeploymentEnvironment.testing.profile

private func machine(gate: ReadyGateMode = .delay, replayAttempts: Int = 0, gateDelayMs: Int? = nil)
    -> SessionStateMachine
{
    let configuration = SessionStateMachine.Configuration(
        acceptMode: .immediate,
        gate: gate,
        timeoutAction: .close,
        timing: timing,
        closeLingerMs: 250,
        maxBufferBytes: 4096,
        gateDelayMs: gateDelayMs,
        replayAttempts: replayAttempts
    )
    let record = SessionRecord(id: "s-1", environment: .testing, acceptMode: .immediate, gate: gate, path: "/ws")
    var machine = SessionStateMachine(configuration: configuration, record: record, trapsOnInvalidTransition: false)
    _ = machine.start(clientOfferedSubprotocols: false, subprotocolsConfigured: false, nowMs: 0)
    return machine
}

/// Replay on (2 attempts): upgraded at 10, READY at 20.
private func replayingMachine(attempts: Int = 2) -> SessionStateMachine {
    var machine = machine(replayAttempts: attempts)
    _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
    _ = machine.gatePassed(nowMs: 20)
    return machine
}

private func errorAfterReady(_ code: Int, _ ms: Int, replayed: Bool = false) -> Action {
    var fields = ["close_code": String(code), "ms_after_ready": String(ms)]
    if replayed { fields["replayed"] = "true" }
    return .notePattern(RaceEvent(.upstreamErrorAfterReady, fields))
}

@Suite("SessionStateMachine: the ping gate")
struct PingGateTests {
    @Test("the ping gate pings after the 101 and counts its delay from the pong")
    func delayFromPong() {
        var machine = machine(gate: .ping, gateDelayMs: 5)
        #expect(
            machine.upstreamUpgraded(attempt: 1, nowMs: 10) == [
                .switchUpstream(watchForReadyMessage: false), .sendGatePing,
            ]
        )
        #expect(machine.phase == .connected)
        // No delay runs before the pong: a gate timer cannot be pending.
        #expect(machine.gatePongReceived(nowMs: 42) == [.armGateDelay(ms: 5)])
        #expect(machine.record.pongAfterMs == 32)
        #expect(machine.record.gateDelayMs == 5)
        #expect(machine.gatePongReceived(nowMs: 43) == [], "a second pong report is stale")
        #expect(machine.gatePassed(nowMs: 47).contains(.flushAndSplice))
        #expect(machine.phase == .readyForMessages)
    }

    @Test("with a delay of 0 the pong itself is READY")
    func zeroDelay() {
        var machine = machine(gate: .ping, gateDelayMs: 0)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(machine.gatePongReceived(nowMs: 12) == [.cancelTimers, .flushAndSplice])
    }

    @Test("a backend that never answers the ping hits the handshake timeout: 1013")
    func noPong() {
        var machine = machine(gate: .ping)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        let actions = machine.handshakeTimedOut(nowMs: 100)
        #expect(actions.contains(.sendClose(to: .client, code: 1013, reason: "upstream not ready")))
        #expect(machine.record.patterns == [.readyTimeout])
    }

    @Test("pong reports outside the ping gate's wait change nothing")
    func stalePong() {
        var delay = machine(gate: .delay)
        _ = delay.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(delay.gatePongReceived(nowMs: 11) == [])
        var early = machine(gate: .ping)
        #expect(early.gatePongReceived(nowMs: 5) == [])
        #expect(early.phase == .handshakePending)
    }
}

@Suite("SessionStateMachine: transparent replay")
struct ReplayTests {
    @Test("READY opens the replay window before the flush, only with replay on")
    func windowOpens() {
        var on = machine(replayAttempts: 2)
        _ = on.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(on.gatePassed(nowMs: 20) == [.cancelTimers, .openReplayWindow(ms: 100), .flushAndSplice])
        #expect(on.isReplayWindowOpen)
        var off = machine()
        _ = off.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(off.gatePassed(nowMs: 20) == [.cancelTimers, .flushAndSplice])
        #expect(!off.isReplayWindowOpen)
    }

    @Test("a backend's 1011 in the window is replayed: a new attempt, the close kept from the client")
    func replayOn1011() {
        var machine = replayingMachine()
        let actions = machine.closeFrame(from: .upstream, code: 1011, nowMs: 30)
        #expect(
            actions == [
                errorAfterReady(1011, 10, replayed: true), .replay(number: 1, closeCode: 1011),
                .armHandshakeTimeout(ms: 100), .connectUpstream(attempt: 2),
            ]
        )
        #expect(machine.phase == .handshakePending)
        #expect(machine.isHoldingClientFrames)
        #expect(machine.record.replays == 1)
        #expect(machine.record.connectAttempts == 2)
        // The failed backend's close is not the session's: nothing recorded, nobody closed.
        #expect(!machine.record.upstreamSentClose)
        #expect(machine.record.closer == .none)
        #expect(machine.record.endReason == nil)
    }

    @Test("the handshake timeout and the retry deadline count from the replay")
    func deadlinesFromReplay() {
        var machine = replayingMachine()
        _ = machine.closeFrame(from: .upstream, code: 1011, nowMs: 50)
        #expect(machine.remainingHandshakeMs(nowMs: 120) == 30)
        var random = SplitMix64(seed: 1)
        let actions = machine.upstreamConnectFailed(attempt: 2, nowMs: 120, using: &random)
        #expect(actions.contains { if case .retryConnect(attempt: 3, _) = $0 { true } else { false } })
        // The slow-handshake threshold (50 ms) counts from the replay too: a 101 40 ms after it is not slow.
        var fresh = replayingMachine()
        _ = fresh.closeFrame(from: .upstream, code: 1011, nowMs: 50)
        _ = fresh.upstreamUpgraded(attempt: 2, nowMs: 90)
        #expect(!fresh.record.patterns.contains(.upstreamSlowHandshake))
    }

    @Test("a lost backend connection in the window is replayed as 1006; attempts run out")
    func replaysRunOut() {
        var machine = replayingMachine(attempts: 2)
        _ = machine.inputClosed(.upstream, gone: true, nowMs: 25)
        _ = machine.upstreamUpgraded(attempt: 2, nowMs: 30)
        #expect(machine.gatePassed(nowMs: 31).contains(.openReplayWindow(ms: 100)))
        let second = machine.inputClosed(.upstream, gone: false, nowMs: 35)
        #expect(second.contains(.replay(number: 2, closeCode: 1006)))
        #expect(second.contains(.connectUpstream(attempt: 3)))
        _ = machine.upstreamUpgraded(attempt: 3, nowMs: 40)
        let third = machine.gatePassed(nowMs: 41)
        #expect(!third.contains(.openReplayWindow(ms: 100)), "no attempts left: no window")
        // The third failure reaches the client as it would without replay.
        let failed = machine.closeFrame(from: .upstream, code: 1011, nowMs: 45)
        #expect(!failed.contains { if case .replay = $0 { true } else { false } })
        #expect(machine.record.upstreamCloseCode == 1011)
        #expect(machine.record.closer == .upstream)
        #expect(machine.record.replays == 2)
    }

    @Test("other closes in the window close it first, then go to the client as usual")
    func normalCloseClosesWindow() {
        var machine = replayingMachine()
        let actions = machine.closeFrame(from: .upstream, code: 1000, nowMs: 30)
        #expect(actions.first == .closeReplayWindow)
        #expect(actions.contains(.armCloseLinger(ms: 250)))
        #expect(machine.record.upstreamCloseCode == 1000)
        #expect(!machine.isReplayWindowOpen)
    }

    @Test("backend data reaching the client ends the window; a later 1011 is not replayed")
    func dataEndsWindow() {
        var machine = replayingMachine()
        #expect(machine.backendDataStarted(nowMs: 25) == [.closeReplayWindow])
        #expect(machine.backendDataStarted(nowMs: 26) == [])
        let actions = machine.closeFrame(from: .upstream, code: 1011, nowMs: 30)
        #expect(actions.first == errorAfterReady(1011, 10))
        #expect(machine.record.replays == 0)
    }

    @Test("backend data before READY: no window at READY")
    func dataBeforeReady() {
        var machine = machine(replayAttempts: 2)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.backendDataStarted(nowMs: 12)
        #expect(machine.gatePassed(nowMs: 20) == [.cancelTimers, .flushAndSplice])
    }

    @Test(
        "the client closing, half-closing or the window's end closes it",
        arguments: ["close", "fin", "timer", "shutdown"]
    )
    func clientOrTimerEndsWindow(_ event: String) {
        var machine = replayingMachine()
        let actions: [Action]
        switch event {
        case "close": actions = machine.closeFrame(from: .client, code: 1000, nowMs: 30)
        case "fin": actions = machine.inputClosed(.client, gone: false, nowMs: 30)
        case "timer": actions = machine.replayWindowEnded(nowMs: 120)
        default: actions = machine.shutdown(nowMs: 30)
        }
        #expect(actions.first == .closeReplayWindow)
        #expect(!machine.isReplayWindowOpen)
        #expect(
            !machine.closeFrame(from: .upstream, code: 1011, nowMs: 40).contains { action in
                if case .replay = action { true } else { false }
            }
        )
    }

    @Test("a replay's hold does not count its frames as early again")
    func earlyFramesOnce() {
        var machine = replayingMachine()
        _ = machine.clientFramesHeld(frames: 0, bytes: 0, nowMs: 5)
        _ = machine.closeFrame(from: .upstream, code: 1011, nowMs: 30)
        _ = machine.clientFramesHeld(frames: 3, bytes: 300, nowMs: 31)
        #expect(machine.record.earlyFrames == 0)
    }
}

@Suite("SessionStateMachine: the gate's delay after a replay")
struct ReplayDelayTests {
    @Test("each replay doubles the gate's delay, up to half the handshake timeout")
    func doubles() {
        var machine = machine(replayAttempts: 10, gateDelayMs: 20)
        var now = 0
        var delays: [Int] = []
        var attempt = 1
        for _ in 0..<4 {
            now += 1
            let actions = machine.upstreamUpgraded(attempt: attempt, nowMs: now)
            for case .armGateDelay(let ms) in actions { delays.append(ms) }
            now += 1
            _ = machine.gatePassed(nowMs: now)
            now += 1
            _ = machine.closeFrame(from: .upstream, code: 1011, nowMs: now)
            attempt += 1
        }
        #expect(delays == [20, 40, 50, 50])
    }
}

@Suite("SessionStateMachine: a delay that grew while the session waited")
struct GrownDelayTests {
    @Test("the session waits out the grown delay from its own start, and counts as having waited it")
    func extends() {
        var machine = machine(gateDelayMs: 25)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(machine.gateDelayElapsed(adaptedDelayMs: 50, nowMs: 35) == [.armGateDelay(ms: 25)])
        #expect(machine.record.gateDelayMs == 50)
        #expect(machine.gateDelayElapsed(adaptedDelayMs: 50, nowMs: 60).contains(.flushAndSplice))
    }

    @Test("an unchanged or smaller delay passes the gate; one already waited out passes at once")
    func passes() {
        for adapted in [25, 10] {
            var machine = machine(gateDelayMs: 25)
            _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
            #expect(machine.gateDelayElapsed(adaptedDelayMs: adapted, nowMs: 35).contains(.flushAndSplice))
            #expect(machine.record.gateDelayMs == 25)
        }
        var late = machine(gateDelayMs: 25)
        _ = late.upstreamUpgraded(attempt: 1, nowMs: 10)
        #expect(late.gateDelayElapsed(adaptedDelayMs: 40, nowMs: 70).contains(.flushAndSplice))
    }

    @Test("the ping gate's delay grows from the pong")
    func fromPong() {
        var machine = machine(gate: .ping, gateDelayMs: 25)
        _ = machine.upstreamUpgraded(attempt: 1, nowMs: 10)
        _ = machine.gatePongReceived(nowMs: 30)
        #expect(machine.gateDelayElapsed(adaptedDelayMs: 100, nowMs: 55) == [.armGateDelay(ms: 75)])
    }
}

@Suite("SessionStateMachine: keepalive and the idle timeout")
struct KeepaliveMachineTests {
    @Test("an unresponsive side or the idle timeout ends a spliced session with 1001 to both sides")
    func endsWith1001() {
        let cases: [(SessionCloseReason, (inout SessionStateMachine) -> [Action])] = [
            (.idleTimeout, { $0.idleTimedOut(nowMs: 500) }),
            (.peerUnresponsive(.client), { $0.peerUnresponsive(.client, nowMs: 500) }),
            (.peerUnresponsive(.upstream), { $0.peerUnresponsive(.upstream, nowMs: 500) }),
        ]
        for (reason, event) in cases {
            var machine = replayingMachine(attempts: 0)
            #expect(machine.isSpliceOpen)
            let actions = event(&machine)
            #expect(actions.contains(.sendClose(to: .client, code: 1001, reason: reason.reasonText)))
            #expect(
                actions.contains(.sendClose(to: .upstream, code: 1001, reason: "proxy ended session: \(reason.name)"))
            )
            #expect(machine.record.endReason == reason)
            #expect(machine.record.closer == .proxy)
            #expect(!machine.isSpliceOpen)
        }
    }

    @Test("before READY or once closing, neither applies, and the splice is not open for pings")
    func onlyWhileSpliced() {
        var waiting = machine()
        #expect(waiting.idleTimedOut(nowMs: 5) == [])
        #expect(waiting.peerUnresponsive(.client, nowMs: 5) == [])
        #expect(!waiting.isSpliceOpen)
        var closing = replayingMachine(attempts: 0)
        _ = closing.closeFrame(from: .client, code: 1000, nowMs: 30)
        #expect(!closing.isSpliceOpen)
    }
}

@Suite("SessionStateMachine: a client's half-close answered by the backend")
struct HalfCloseAnsweredTests {
    @Test("client FIN after READY, then the backend ends its connection: no 1011, not a failure")
    func backendAnswersFin() {
        var machine = replayingMachine(attempts: 0)
        #expect(machine.inputClosed(.client, gone: false, nowMs: 30) == [.passHalfClose(to: .upstream)])
        let actions = machine.inputClosed(.upstream, gone: false, nowMs: 35)
        #expect(actions == [.closeChannel(.client), .closeChannel(.upstream)])
        #expect(machine.record.endReason == nil)
        #expect(machine.record.closer == .client)
        #expect(machine.record.patterns.isEmpty)
    }
}
