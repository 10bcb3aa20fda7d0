import Testing

@testable import ReadyGateCore

@Suite("AdaptiveGateDelay")
struct AdaptiveGateDelayTests {
    let production = DeploymentEnvironment.production.profile

    @Test(
        "starts at the profile's base delay; doubles after each failure after READY, up to half the handshake timeout"
    )
    func grows() {
        var delay = AdaptiveGateDelay(timing: production)
        #expect(delay.currentMs == 25)
        var seen: [Int] = []
        for _ in 0..<8 {
            if let change = delay.sessionEnded(reachedReady: true, failedAfterReady: true) {
                #expect(change.reason == "upstream_error_after_ready")
                #expect(change.oldMs == seen.last ?? 25)
                seen.append(change.newMs)
            }
        }
        #expect(seen == [50, 100, 200, 400, 500])
        #expect(delay.currentMs == delay.capMs)
        #expect(delay.capMs == production.handshakeTimeoutMs / 2)
    }

    @Test("decays a quarter of the way back after every 10 clean sessions, never below the base")
    func decays() {
        var delay = AdaptiveGateDelay(timing: production)
        _ = delay.sessionEnded(reachedReady: true, failedAfterReady: true)
        _ = delay.sessionEnded(reachedReady: true, failedAfterReady: true)
        #expect(delay.currentMs == 100)
        for _ in 0..<9 { #expect(delay.sessionEnded(reachedReady: true, failedAfterReady: false) == nil) }
        let step = delay.sessionEnded(reachedReady: true, failedAfterReady: false)
        #expect(step == AdaptiveGateDelay.Change(oldMs: 100, newMs: 82, reason: "clean_sessions"))
        for _ in 0..<1000 { _ = delay.sessionEnded(reachedReady: true, failedAfterReady: false) }
        #expect(delay.currentMs == 25)
    }

    @Test("sessions that never reached READY, or a failure that resets the streak, do not decay it")
    func onlyCleanSessionsDecay() {
        var delay = AdaptiveGateDelay(timing: production)
        _ = delay.sessionEnded(reachedReady: true, failedAfterReady: true)
        for _ in 0..<50 { #expect(delay.sessionEnded(reachedReady: false, failedAfterReady: false) == nil) }
        #expect(delay.currentMs == 50)
        for _ in 0..<9 { _ = delay.sessionEnded(reachedReady: true, failedAfterReady: false) }
        _ = delay.sessionEnded(reachedReady: true, failedAfterReady: true)
        #expect(delay.currentMs == 100)
        for _ in 0..<9 { #expect(delay.sessionEnded(reachedReady: true, failedAfterReady: false) == nil) }
    }

    @Test("a base delay of 0 grows too")
    func fromZero() {
        var timing = production
        timing.baseDelayMs = 0
        var delay = AdaptiveGateDelay(timing: timing)
        _ = delay.sessionEnded(reachedReady: true, failedAfterReady: true)
        _ = delay.sessionEnded(reachedReady: true, failedAfterReady: true)
        #expect(delay.currentMs == 2)
    }
}
