import ReadyGateTestSupport
import Testing

@testable import ReadyGateCore

/// A generator that always answers the same word: 1 gives the smallest draw, `.max` the largest.
/// (0 would make the standard library's rejection sampling loop for ever on most ranges.)
struct CoreTestsConstantGenerator: RandomNumberGenerator {
    var value: UInt64
    mutating func next() -> UInt64 { value }
}

@Suite("ProgressiveDelay")
struct ProgressiveDelayTests {
    @Test("ceilings double from the base and stop at the cap")
    func ceilingsDouble() {
        let testing = ProgressiveDelay(baseMs: 1, capMs: 20)
        #expect((0..<8).map { testing.ceilingMs(attempt: $0) } == [1, 2, 4, 8, 16, 20, 20, 20])
        let production = ProgressiveDelay(baseMs: 25, capMs: 200)
        #expect((0..<6).map { production.ceilingMs(attempt: $0) } == [25, 50, 100, 200, 200, 200])
        let uncapped = ProgressiveDelay(baseMs: 3, capMs: 1 << 40)
        #expect((0..<5).map { uncapped.ceilingMs(attempt: $0) } == [3, 6, 12, 24, 48])
    }

    @Test("the ceiling never decreases and never passes the cap")
    func ceilingsAreMonotonic() {
        for (base, cap) in [(1, 20), (10, 50), (25, 100), (25, 200), (7, 1000), (300, 200)] {
            let delay = ProgressiveDelay(baseMs: base, capMs: cap)
            var previous = 0
            for attempt in 0...80 {
                let ceiling = delay.ceilingMs(attempt: attempt)
                #expect(ceiling >= previous)
                #expect(ceiling <= cap)
                #expect(ceiling >= 1)
                previous = ceiling
            }
        }
    }

    @Test("a base above the cap is capped from the first attempt")
    func baseAboveCap() {
        #expect(ProgressiveDelay(baseMs: 300, capMs: 200).ceilingMs(attempt: 0) == 200)
    }

    @Test("zero and negative values are clamped to 1 ms")
    func clamping() {
        let delay = ProgressiveDelay(baseMs: 0, capMs: -5)
        #expect(delay.baseMs == 1)
        #expect(delay.capMs == 1)
        #expect(delay.ceilingMs(attempt: 10) == 1)
        #expect(ProgressiveDelay(baseMs: 4, capMs: 100).ceilingMs(attempt: -3) == 4)
    }

    @Test(
        "large attempts and large bases do not overflow",
        arguments: [0, 1, 30, 31, 62, 63, 64, 1000, Int.max]
    )
    func overflowSafe(_ attempt: Int) {
        let huge = ProgressiveDelay(baseMs: Int.max / 2, capMs: Int.max)
        #expect(huge.ceilingMs(attempt: attempt) >= Int.max / 2)
        let normal = ProgressiveDelay(baseMs: 25, capMs: 200)
        #expect(normal.ceilingMs(attempt: attempt) == min(25 << min(attempt, 3), 200))
        let big = ProgressiveDelay(baseMs: 1 << 40, capMs: 1 << 50)
        #expect(big.ceilingMs(attempt: attempt) == (attempt >= 10 ? 1 << 50 : (1 << 40) << attempt))
        var random = SplitMix64(seed: UInt64(truncatingIfNeeded: attempt))
        let drawn = huge.delayMs(attempt: attempt, using: &random)
        #expect(drawn >= 1)
    }

    @Test("draws stay within 1...ceiling and reach both ends")
    func drawsInRange() {
        let delay = ProgressiveDelay(baseMs: 1, capMs: 20)
        var random = SplitMix64(seed: 42)
        for attempt in 0..<8 {
            let ceiling = delay.ceilingMs(attempt: attempt)
            var seen = Set<Int>()
            for _ in 0..<2000 {
                let drawn = delay.delayMs(attempt: attempt, using: &random)
                #expect((1...ceiling).contains(drawn))
                seen.insert(drawn)
            }
            // Full jitter: every value from 1 to the ceiling is drawn sooner or later.
            #expect(seen == Set(1...ceiling))
        }
    }

    @Test("the same seed gives the same delays")
    func deterministic() {
        let delay = ProgressiveDelay(baseMs: 25, capMs: 200)
        var first = SplitMix64(seed: 7)
        var second = SplitMix64(seed: 7)
        let a = (0..<20).map { delay.delayMs(attempt: $0, using: &first) }
        let b = (0..<20).map { delay.delayMs(attempt: $0, using: &second) }
        #expect(a == b)
    }

    @Test("extreme generators give the ends of the range")
    func extremes() {
        let delay = ProgressiveDelay(baseMs: 25, capMs: 200)
        var low = CoreTestsConstantGenerator(value: 1)
        var high = CoreTestsConstantGenerator(value: .max)
        #expect(delay.delayMs(attempt: 3, using: &low) == 1)
        #expect(delay.delayMs(attempt: 3, using: &high) == 200)
    }

    // MARK: Deadline

    @Test("no delay when no time remains", arguments: [(100, 100), (150, 100), (99, 100), (0, 0), (Int.max - 1, 1)])
    func noTimeLeft(_ now: Int, _ deadline: Int) {
        var random = CoreTestsConstantGenerator(value: .max)
        #expect(
            ProgressiveDelay(baseMs: 1, capMs: 20).delayMs(attempt: 0, nowMs: now, deadlineMs: deadline, using: &random)
                == nil
        )
    }

    @Test("a delay never passes the deadline")
    func neverPastDeadline() throws {
        let delay = ProgressiveDelay(baseMs: 25, capMs: 200)
        var random = SplitMix64(seed: 2024)
        for now in stride(from: 0, through: 1000, by: 7) {
            for attempt in 0..<6 {
                guard let drawn = delay.delayMs(attempt: attempt, nowMs: now, deadlineMs: 1000, using: &random) else {
                    #expect(1000 - now <= 1)
                    continue
                }
                #expect(drawn >= 1)
                #expect(drawn <= delay.ceilingMs(attempt: attempt))
                #expect(now + drawn < 1000)
            }
        }
    }

    @Test("a long delay is shortened to just before the deadline")
    func shortenedToDeadline() throws {
        let delay = ProgressiveDelay(baseMs: 25, capMs: 200)
        var high = CoreTestsConstantGenerator(value: .max)
        #expect(delay.delayMs(attempt: 5, nowMs: 950, deadlineMs: 1000, using: &high) == 49)
        #expect(delay.delayMs(attempt: 5, nowMs: 998, deadlineMs: 1000, using: &high) == 1)
        #expect(delay.delayMs(attempt: 5, nowMs: 0, deadlineMs: 1000, using: &high) == 200)
        var low = CoreTestsConstantGenerator(value: 1)
        #expect(delay.delayMs(attempt: 5, nowMs: 950, deadlineMs: 1000, using: &low) == 1)
    }

    @Test("with time left, the deadline-aware draw matches the plain one")
    func sameDrawWithTimeLeft() {
        let delay = ProgressiveDelay(baseMs: 10, capMs: 50)
        var first = SplitMix64(seed: 99)
        var second = SplitMix64(seed: 99)
        for attempt in 0..<10 {
            let plain = delay.delayMs(attempt: attempt, using: &first)
            let bounded = delay.delayMs(attempt: attempt, nowMs: 0, deadlineMs: 10_000, using: &second)
            #expect(bounded == plain)
        }
    }
}
