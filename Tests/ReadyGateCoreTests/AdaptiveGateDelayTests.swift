import Testing

@testable import ReadyGateCore

@Suite("AdaptiveGateDelay")
struct AdaptiveGateDelayTests {
    let production = DeploymentEnvironment.production.profile

    /// A session that waited the current delay ended.
    func end(_ delay: inout AdaptiveGateDelay, failed: Bool, ready: Bool = true) -> AdaptiveGateDelay.Change? {
        delay.sessionEnded(waitedMs: delay.currentMs, reachedReady: ready, failedAfterReady: failed)
    }

    @Test("starts at the base delay; doubles after each failure after READY, up to half the handshake timeout")
    func grows() {
        var delay = AdaptiveGateDelay(timing: production)
        #expect(delay.currentMs == 25)
        var seen: [Int] = []
        for _ in 0..<8 {
            if let change = end(&delay, failed: true) {
                #expect(change.reason == "upstream_error_after_ready")
                #expect(change.oldMs == seen.last ?? 25)
                seen.append(change.newMs)
            }
        }
        #expect(seen == [50, 100, 200, 400, 500])
        #expect(delay.currentMs == delay.capMs)
        #expect(delay.capMs == production.handshakeTimeoutMs / 2)
    }

    @Test("a burst that waited one delay moves it one step, however many of its sessions fail or succeed")
    func oneStepPerGeneration() {
        var delay = AdaptiveGateDelay(timing: production)
        for _ in 0..<200 { _ = delay.sessionEnded(waitedMs: 25, reachedReady: true, failedAfterReady: true) }
        #expect(delay.currentMs == 50)
        for _ in 0..<200 { _ = delay.sessionEnded(waitedMs: 50, reachedReady: true, failedAfterReady: true) }
        #expect(delay.currentMs == 100)
        for _ in 0..<200 { _ = delay.sessionEnded(waitedMs: 100, reachedReady: true, failedAfterReady: false) }
        #expect(delay.currentMs == 91, "one decay step: an eighth of the way back")
    }

    @Test("decays an eighth of the way back after every 20 clean sessions, never below the base")
    func decays() {
        var delay = AdaptiveGateDelay(timing: production)
        _ = end(&delay, failed: true)
        _ = end(&delay, failed: true)
        #expect(delay.currentMs == 100)
        for _ in 0..<19 { #expect(end(&delay, failed: false) == nil) }
        #expect(end(&delay, failed: false) == AdaptiveGateDelay.Change(oldMs: 100, newMs: 91, reason: "clean_sessions"))
        for _ in 0..<5000 { _ = end(&delay, failed: false) }
        #expect(delay.currentMs == 25)
    }

    @Test("sessions that never reached READY do not decay it; a failure resets the clean streak")
    func onlyCleanSessionsDecay() {
        var delay = AdaptiveGateDelay(timing: production)
        _ = end(&delay, failed: true)
        for _ in 0..<50 { #expect(end(&delay, failed: false, ready: false) == nil) }
        #expect(delay.currentMs == 50)
        for _ in 0..<19 { _ = end(&delay, failed: false) }
        _ = end(&delay, failed: true)
        #expect(delay.currentMs == 100)
        for _ in 0..<19 { #expect(end(&delay, failed: false) == nil) }
    }

    @Test("a base delay of 0 grows too")
    func fromZero() {
        var timing = production
        timing.baseDelayMs = 0
        var delay = AdaptiveGateDelay(timing: timing)
        _ = end(&delay, failed: true)
        _ = end(&delay, failed: true)
        #expect(delay.currentMs == 2)
    }
}
