import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A connection that a shutdown must end, asked on its own event loop (DESIGN §6): first to drain,
/// then, at the drain's deadline, to end.
protocol ShutdownParticipant: AnyObject {
    /// The listener has closed: finish what is in flight, take nothing new. A plain HTTP
    /// connection closes when idle or after its response; a WebSocket session runs on.
    func drain()
    /// The drain time is over: a session closes with `1001 going away`, an HTTP connection at once.
    func endNow()
}

extension ShutdownParticipant {
    /// `endNow()` of an HTTP connection that still has a request, or its answer, in flight: logged,
    /// and closed at once.
    func closeCutOffByShutdown(context: ChannelHandlerContext, logger: Logger) {
        logger.warning(
            "http_connection_ended_by_shutdown",
            metadata: ["client": "\(context.channel.remoteAddress?.ipAddress ?? "-")"]
        )
        context.close(promise: nil)
    }
}

/// The live connections of one kind, so that shutting down can end each (DESIGN §2) and wait for
/// them to finish.
///
/// Members live on their event loops; the registry only holds loop-bound references and asks
/// each loop to act, so the data path takes no lock: a member is added once and removed once.
public final class ConnectionRegistry: Sendable {
    private struct State {
        var members: [ObjectIdentifier: NIOLoopBound<any ShutdownParticipant>] = [:]
        var emptyWaiters: [Int: CheckedContinuation<Bool, Never>] = [:]
        var nextWaiter = 0
        /// How far a shutdown has come: a member added later is brought there at once.
        var phase = Phase.running
    }

    private enum Phase { case running, draining, ending }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Members not yet finished.
    public var count: Int { state.withLockedValue { $0.members.count } }

    /// The members not yet finished, each usable on its event loop (for tests that follow one).
    var members: [NIOLoopBound<any ShutdownParticipant>] { state.withLockedValue { Array($0.members.values) } }

    /// Registers a member. One added during a shutdown (a connection accepted just before the
    /// listener closed, a session whose upgrade was read meanwhile) is told at once.
    func add(_ member: any ShutdownParticipant, on eventLoop: any EventLoop) {
        let bound = NIOLoopBound(member, eventLoop: eventLoop)
        let phase = state.withLockedValue { state -> Phase in
            state.members[ObjectIdentifier(member)] = bound
            return state.phase
        }
        switch phase {
        case .running: break
        case .draining: eventLoop.execute { bound.value.drain() }
        case .ending: eventLoop.execute { bound.value.endNow() }
        }
    }

    func remove(_ member: any ShutdownParticipant) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Bool, Never>] in
            guard state.members.removeValue(forKey: ObjectIdentifier(member)) != nil, state.members.isEmpty else {
                return []
            }
            defer { state.emptyWaiters = [:] }
            return Array(state.emptyWaiters.values)
        }
        for waiter in waiters { waiter.resume(returning: true) }
    }

    /// Asks every member, on its event loop, to finish what it has in flight and take nothing new.
    public func drainAll() {
        for bound in enter(.draining) {
            bound.eventLoop.execute { bound.value.drain() }
        }
    }

    /// Asks every member, on its event loop, to end now.
    public func endAll() {
        for bound in enter(.ending) {
            bound.eventLoop.execute { bound.value.endNow() }
        }
    }

    private func enter(_ phase: Phase) -> [NIOLoopBound<any ShutdownParticipant>] {
        state.withLockedValue { state in
            state.phase = phase
            return Array(state.members.values)
        }
    }

    /// Returns true once no member is live, or false when `timeout` passed first.
    public func waitUntilEmpty(timeout: Duration) async -> Bool {
        await withCheckedContinuation { continuation in
            let waiter = state.withLockedValue { state -> Int? in
                if state.members.isEmpty { return nil }
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
