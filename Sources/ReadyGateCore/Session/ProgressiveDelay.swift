/// Retry delays for upstream connects: `base × 2^attempt`, capped, with full jitter
/// (a uniform pick between 1 ms and the capped value), so that many sessions retrying a cold
/// backend do not connect in lock-step.
public struct ProgressiveDelay: Sendable, Equatable {
    public var baseMs: Int
    public var capMs: Int

    public init(baseMs: Int, capMs: Int) {
        self.baseMs = max(1, baseMs)
        self.capMs = max(1, capMs)
    }

    /// The largest delay for a retry attempt (0-based), before jitter.
    public func ceilingMs(attempt: Int) -> Int {
        let shift = min(max(attempt, 0), 30)
        let (product, overflow) = baseMs.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? capMs : min(product, capMs)
    }

    /// The delay before retry `attempt`, drawn with `random`.
    public func delayMs(attempt: Int, using random: inout some RandomNumberGenerator) -> Int {
        Int.random(in: 1...ceilingMs(attempt: attempt), using: &random)
    }

    /// The delay before retry `attempt`, or nil when waiting it would pass `deadlineMs`
    /// (both measured from the session's start, `nowMs` being the time of the failure).
    public func delayMs(
        attempt: Int,
        nowMs: Int,
        deadlineMs: Int,
        using random: inout some RandomNumberGenerator
    ) -> Int? {
        let remaining = deadlineMs - nowMs
        guard remaining > 1 else { return nil }
        return min(delayMs(attempt: attempt, using: &random), remaining - 1)
    }
}
