import NIOConcurrencyHelpers

/// A value behind a lock, with a way to wait for a condition on it (no polling, no sleeps).
public final class Observed<Value: Sendable>: Sendable {
    private struct State {
        var value: Value
        var waiters: [Int: (condition: @Sendable (Value) -> Bool, continuation: CheckedContinuation<Void, Never>)] = [:]
        var nextWaiter = 0
    }

    private let state: NIOLockedValueBox<State>

    public init(_ value: Value) {
        state = NIOLockedValueBox(State(value: value))
    }

    public var value: Value { state.withLockedValue { $0.value } }

    /// Changes the value and wakes the waiters whose condition now holds.
    public func update(_ change: (inout Value) -> Void) {
        let ready = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            change(&state.value)
            let value = state.value
            let done = state.waiters.filter { $0.value.condition(value) }
            for id in done.keys { state.waiters[id] = nil }
            return done.values.map(\.continuation)
        }
        for continuation in ready { continuation.resume() }
    }

    /// Returns when `condition` holds (at once if it does now); cancellation ends the wait.
    public func wait(until condition: @escaping @Sendable (Value) -> Bool) async {
        let id = state.withLockedValue { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let done = state.withLockedValue { state -> Bool in
                    if condition(state.value) || Task.isCancelled { return true }
                    state.waiters[id] = (condition, continuation)
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }
}
