import NIOConcurrencyHelpers
import NIOCore

/// A log line about something that can happen thousands of times a second (a refused connection, a
/// session paused by the global cap on held bytes). The first occurrence is logged at once; later
/// ones are counted and logged together, one line per `interval` at most, each line carrying how
/// many happened since the previous one. So a flood costs a line a second, and every occurrence is
/// in some line. Safe to use from every event loop.
final class RateLimitedLog: Sendable {
    private struct State {
        var pending = 0
        /// A line was logged less than `interval` ago: occurrences wait for the next one.
        var waiting = false
    }

    private let state = NIOLockedValueBox(State())
    private let interval: TimeAmount
    private let emit: @Sendable (_ count: Int) -> Void

    /// - Parameter emit: logs one line for `count` occurrences. Called outside any lock.
    init(interval: TimeAmount = .seconds(1), emit: @escaping @Sendable (_ count: Int) -> Void) {
        self.interval = interval
        self.emit = emit
    }

    /// Counts one occurrence and logs now if no line was logged in the last `interval`. The next line,
    /// if one becomes due, is scheduled on `eventLoop`.
    func record(on eventLoop: any EventLoop) {
        let count = state.withLockedValue { state -> Int? in
            state.pending += 1
            guard !state.waiting else { return nil }
            state.waiting = true
            defer { state.pending = 0 }
            return state.pending
        }
        guard let count else { return }
        emit(count)
        scheduleNext(on: eventLoop)
    }

    private func scheduleNext(on eventLoop: any EventLoop) {
        eventLoop.scheduleTask(in: interval) { self.intervalPassed(on: eventLoop) }
    }

    /// Logs what was counted since the last line, if anything; else the next occurrence logs at once.
    private func intervalPassed(on eventLoop: any EventLoop) {
        let count = state.withLockedValue { state -> Int? in
            guard state.pending > 0 else {
                state.waiting = false
                return nil
            }
            defer { state.pending = 0 }
            return state.pending
        }
        guard let count else { return }
        emit(count)
        scheduleNext(on: eventLoop)
    }
}
