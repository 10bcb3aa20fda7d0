import NIOConcurrencyHelpers
import NIOCore

/// The live WebSocket sessions of one proxy, so that shutting down can end each with
/// `1001 going away` (DESIGN §2) and wait for them to finish.
///
/// Sessions live on their event loops; the registry only holds loop-bound references and asks
/// each loop to act, so the data path takes no lock.
public final class SessionRegistry: Sendable {
    private struct State {
        var sessions: [ObjectIdentifier: NIOLoopBound<WebSocketSession>] = [:]
        var emptyWaiters: [Int: CheckedContinuation<Bool, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Sessions not yet finished.
    public var count: Int { state.withLockedValue { $0.sessions.count } }

    func add(_ session: WebSocketSession, on eventLoop: any EventLoop) {
        let bound = NIOLoopBound(session, eventLoop: eventLoop)
        state.withLockedValue { $0.sessions[ObjectIdentifier(session)] = bound }
    }

    func remove(_ session: WebSocketSession) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Bool, Never>] in
            state.sessions[ObjectIdentifier(session)] = nil
            guard state.sessions.isEmpty else { return [] }
            defer { state.emptyWaiters = [:] }
            return Array(state.emptyWaiters.values)
        }
        for waiter in waiters { waiter.resume(returning: true) }
    }

    /// Ends every live session with `1001 going away`.
    public func endAllGoingAway() {
        let sessions = state.withLockedValue { Array($0.sessions.values) }
        for bound in sessions {
            bound.eventLoop.execute { bound.value.shutdown() }
        }
    }

    /// Returns true once no session is live, or false when `timeout` passed first.
    public func waitUntilEmpty(timeout: Duration) async -> Bool {
        await withCheckedContinuation { continuation in
            let waiter = state.withLockedValue { state -> Int? in
                if state.sessions.isEmpty { return nil }
                state.nextWaiter += 1
                state.emptyWaiters[state.nextWaiter] = continuation
                return state.nextWaiter
            }
            guard let waiter else {
                continuation.resume(returning: true)
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                let expired = self.state.withLockedValue { $0.emptyWaiters.removeValue(forKey: waiter) }
                expired?.resume(returning: false)
            }
        }
    }
}
