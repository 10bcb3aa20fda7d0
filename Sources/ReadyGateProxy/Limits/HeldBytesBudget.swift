import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A hold that a ``HeldBytesBudget`` paused and wakes when bytes were given back.
protocol HeldBytesWaiter: AnyObject {
    /// The total held dropped below the cap. Runs on the event loop the waiter was paused on.
    func heldBytesBudgetFreed()
}

/// `READYGATE_MAX_HELD_BYTES_TOTAL`: a cap on the client bytes held before READY across all sessions
/// together, over the per-session bound (`READYGATE_MAX_BUFFER_BYTES`).
///
/// Every ``ClientHoldHandler`` charges what it keeps and gives it back when it lets go (READY, the
/// session ended before READY, the client gone). While the total is at or over the cap, a hold asking
/// to read is paused: it stops reading from its client (TCP backpressure, as at the per-session
/// bound; nothing is dropped), is counted, and is woken on its event loop when the total drops below
/// the cap. Like the per-session bound, the cap can be passed by what the paused holds read last
/// (one read of up to 64 KiB each: ``ChannelTuning/relayMessagesPerRead``).
///
/// One lock-protected state shared by every event loop; it is touched only by sessions that are not
/// ready yet, once per read.
public final class HeldBytesBudget: Sendable {
    /// The cap in bytes; 0 for none (held bytes are still counted, for the gauge).
    public let cap: Int

    private struct State {
        var held = 0
        var waiters: [ObjectIdentifier: NIOLoopBound<any HeldBytesWaiter>] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let metrics: ProxyMetrics
    private let pauses: RateLimitedLog

    init(cap: Int, metrics: ProxyMetrics, logger: Logger) {
        self.cap = cap
        self.metrics = metrics
        self.pauses = RateLimitedLog { count in
            logger.warning(
                "held_bytes_cap_reached",
                metadata: [
                    "paused": "\(count)", "cap": "\(cap)", "reason": "READYGATE_MAX_HELD_BYTES_TOTAL reached",
                ]
            )
        }
    }

    /// The client bytes held now across all sessions.
    public var heldBytes: Int { state.withLockedValue { $0.held } }

    /// Holds paused now, waiting for the total to drop.
    var pausedHolds: Int { state.withLockedValue { $0.waiters.count } }

    /// A hold keeps `delta` more bytes (negative: it gave them back). When the total drops below
    /// the cap, every paused hold is woken.
    func add(_ delta: Int) {
        guard delta != 0 else { return }
        let woken = state.withLockedValue { state -> [NIOLoopBound<any HeldBytesWaiter>] in
            state.held += delta
            guard state.held < cap, !state.waiters.isEmpty else { return [] }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        metrics.heldBytesChanged(by: delta)
        for waiter in woken {
            waiter.eventLoop.execute { waiter.value.heldBytesBudgetFreed() }
        }
    }

    /// Whether `waiter` may read from its client now. When the cap is reached it may not: it is
    /// paused (counted once per pause) until ``HeldBytesWaiter/heldBytesBudgetFreed()`` is called on
    /// `eventLoop`. Call on `eventLoop`.
    func mayRead(_ waiter: any HeldBytesWaiter, on eventLoop: any EventLoop) -> Bool {
        guard cap > 0 else { return true }
        let newlyPaused = state.withLockedValue { state -> Bool? in
            guard state.held >= cap else { return nil }
            let key = ObjectIdentifier(waiter)
            guard state.waiters[key] == nil else { return false }
            state.waiters[key] = NIOLoopBound(waiter, eventLoop: eventLoop)
            return true
        }
        guard let newlyPaused else { return true }
        if newlyPaused {
            metrics.heldBytesCapPaused()
            pauses.record(on: eventLoop)
        }
        return false
    }

    /// `waiter` keeps nothing any more (released, discarded, gone): it is not woken.
    func forget(_ waiter: any HeldBytesWaiter) {
        _ = state.withLockedValue { $0.waiters.removeValue(forKey: ObjectIdentifier(waiter)) }
    }
}

/// Whoever tells a ``ClientHoldHandler`` which budget it charges.
protocol HeldBytesBudgetSource: AnyObject {
    var heldBytesBudget: HeldBytesBudget { get }
}

/// A session's hold charges its proxy's budget. The hold finds it through the session (its
/// ``SessionEvents``), so the session's code does not change for it.
extension WebSocketSession: HeldBytesBudgetSource {
    var heldBytesBudget: HeldBytesBudget { environment.heldBytesBudget }
}
