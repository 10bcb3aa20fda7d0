import Testing

@testable import ReadyGateCore

@Suite("AdaptiveGateDelay")
struct AdaptiveGateDelayTests {
    let production = DeploymentEnvironment.production.profile

    /// A session that waited the current delay ended, a second after the previous one.
    func end(
        _ delay: inout AdaptiveGateDelay,
        failed: Bool,
        ready: Bool = true,
        clock: inout Int
    ) -> AdaptiveGateDelay.Change? {
        clock += 1000
        return delay.sessionEnded(waitedMs: delay.currentMs, reachedReady: ready, failedAfterReady: failed, atMs: clock)
    }

    @Test("starts at the base delay; doubles after each failure after READY, up to half the handshake timeout")
    func grows() {
        var delay = AdaptiveGateDelay(timing: production)
        var clock = 0
        #expect(delay.currentMs == 25)
        var seen: [Int] = []
        for _ in 0..<8 {
            if let change = end(&delay, failed: true, clock: &clock) {
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
        for _ in 0..<200 { _ = delay.sessionEnded(waitedMs: 25, reachedReady: true, failedAfterReady: true, atMs: 0) }
        #expect(delay.currentMs == 50)
        for _ in 0..<200 { _ = delay.sessionEnded(waitedMs: 50, reachedReady: true, failedAfterReady: true, atMs: 1) }
        #expect(delay.currentMs == 100)
        for _ in 0..<200 {
            _ = delay.sessionEnded(waitedMs: 100, reachedReady: true, failedAfterReady: false, atMs: 10_001)
        }
        #expect(delay.currentMs == 91, "one decay step: an eighth of the way back")
    }

    @Test("decays an eighth of the way back after every 20 clean sessions, never below the base")
    func decays() {
        var delay = AdaptiveGateDelay(timing: production)
        var clock = 0
        _ = end(&delay, failed: true, clock: &clock)
        _ = end(&delay, failed: true, clock: &clock)
        #expect(delay.currentMs == 100)
        for _ in 0..<19 { #expect(end(&delay, failed: false, clock: &clock) == nil) }
        #expect(
            end(&delay, failed: false, clock: &clock)
                == AdaptiveGateDelay.Change(oldMs: 100, newMs: 91, reason: "clean_sessions")
        )
        for _ in 0..<5000 { _ = end(&delay, failed: false, clock: &clock) }
        #expect(delay.currentMs == 25)
    }

    @Test("sessions that never reached READY do not decay it; a failure resets the clean streak")
    func onlyCleanSessionsDecay() {
        var delay = AdaptiveGateDelay(timing: production)
        var clock = 0
        _ = end(&delay, failed: true, clock: &clock)
        for _ in 0..<50 { #expect(end(&delay, failed: false, ready: false, clock: &clock) == nil) }
        #expect(delay.currentMs == 50)
        for _ in 0..<19 { _ = end(&delay, failed: false, clock: &clock) }
        _ = end(&delay, failed: true, clock: &clock)
        #expect(delay.currentMs == 100)
        for _ in 0..<19 { #expect(end(&delay, failed: false, clock: &clock) == nil) }
    }

    @Test("a base delay of 0 grows too")
    func fromZero() {
        var timing = production
        timing.baseDelayMs = 0
        var delay = AdaptiveGateDelay(timing: timing)
        var clock = 0
        _ = end(&delay, failed: true, clock: &clock)
        _ = end(&delay, failed: true, clock: &clock)
        #expect(delay.currentMs == 2)
    }

    @Test("a burst's clean sessions right after a change do not decay it: at most one step per interval")
    func decayWaitsForTheInterval() {
        var delay = AdaptiveGateDelay(timing: production)
        _ = delay.sessionEnded(waitedMs: 25, reachedReady: true, failedAfterReady: true, atMs: 0)
        for _ in 0..<1000 {
            #expect(delay.sessionEnded(waitedMs: 50, reachedReady: true, failedAfterReady: false, atMs: 9_999) == nil)
        }
        #expect(delay.currentMs == 50)
        #expect(delay.sessionEnded(waitedMs: 50, reachedReady: true, failedAfterReady: false, atMs: 10_000) != nil)
        #expect(delay.currentMs == 47)
        for _ in 0..<100 {
            _ = delay.sessionEnded(waitedMs: 47, reachedReady: true, failedAfterReady: false, atMs: 10_500)
        }
        #expect(delay.currentMs == 47)
    }
}
