import Logging
import NIOConcurrencyHelpers
import NIOCore
import ReadyGateCore

/// What every connection handler of one proxy instance shares: the settings and the logger.
/// Immutable and `Sendable`, so it can be handed to every event loop.
///
/// Every session and every HTTP connection keeps a copy, so everything but the (replaceable) pools
/// lives in one shared box: a copy is two references, not the settings' two hundred bytes.
public struct ProxyEnvironment: Sendable {
    private final class Shared: Sendable {
        let settings: ReadyGateSettings
        let logger: Logger
        let onSessionEnd: (@Sendable (SessionRecord) -> Void)?
        let metrics = ProxyMetrics()
        let draining = NIOLockedValueBox(false)
        let sessions = ConnectionRegistry()
        let httpConnections = ConnectionRegistry()
        let gateDelay: NIOLockedValueBox<AdaptiveGateDelay>
        let connectionLimit: ConnectionLimit
        let heldBytesBudget: HeldBytesBudget

        init(settings: ReadyGateSettings, logger: Logger, onSessionEnd: (@Sendable (SessionRecord) -> Void)?) {
            self.settings = settings
            self.logger = logger
            self.onSessionEnd = onSessionEnd
            self.gateDelay = NIOLockedValueBox(AdaptiveGateDelay(timing: settings.timing))
            self.connectionLimit = ConnectionLimit(limit: settings.maxConnections, metrics: metrics, logger: logger)
            self.heldBytesBudget = HeldBytesBudget(cap: settings.maxHeldBytesTotal, metrics: metrics, logger: logger)
            metrics.gateDelayChanged(ms: settings.timing.baseDelayMs)
        }
    }

    private let shared: Shared

    public var settings: ReadyGateSettings { shared.settings }
    public var logger: Logger { shared.logger }
    /// Called with each finished session's record (tests, metrics). Runs on the session's event loop.
    public var onSessionEnd: (@Sendable (SessionRecord) -> Void)? { shared.onSessionEnd }
    /// This proxy's metrics, rendered by the admin listener's `/metrics`.
    public var metrics: ProxyMetrics { shared.metrics }
    /// The live WebSocket sessions, for shutdown.
    public var sessions: ConnectionRegistry { shared.sessions }
    /// The client connections an ``HTTPEntryHandler`` still owns (before any upgrade), for shutdown.
    public var httpConnections: ConnectionRegistry { shared.httpConnections }
    /// The listener's client connections and `READYGATE_MAX_CONNECTIONS`.
    public var connectionLimit: ConnectionLimit { shared.connectionLimit }
    /// The client bytes held before READY across sessions and `READYGATE_MAX_HELD_BYTES_TOTAL`.
    public var heldBytesBudget: HeldBytesBudget { shared.heldBytesBudget }
    /// A shutdown has begun: `/readyz` fails from then on.
    public var isDraining: Bool { shared.draining.withLockedValue { $0 } }
    /// The backend keep-alive pools for plain HTTP, one per event loop (tests put in-memory ones).
    var httpPools = UpstreamPools()
    /// The listener's and the backend connections' TLS, when configured (``loadTLS()``).
    var tls = ProxyTLS()

    /// The delay a new delay-gate session waits after the backend's `101`: the adapted one, or the
    /// profile's with `READYGATE_ADAPTIVE=false`.
    var gateDelayMs: Int {
        settings.adaptiveDelay ? shared.gateDelay.withLockedValue { $0.currentMs } : settings.timing.baseDelayMs
    }

    /// A delay- or ping-gate session ended, or failed after READY: the adaptive delay learns from
    /// it. Logs and exports a change.
    func delayGateSessionEnded(_ record: SessionRecord) {
        guard settings.adaptiveDelay, record.gate != .message, let waited = record.gateDelayMs else { return }
        let reachedReady = record.stateTimes[.readyForMessages] != nil && !record.patterns.contains(.readyTimeout)
        let failed = record.patterns.contains(.upstreamErrorAfterReady)
        guard
            let change = shared.gateDelay.withLockedValue({
                $0.sessionEnded(
                    waitedMs: waited,
                    reachedReady: reachedReady,
                    failedAfterReady: failed,
                    atMs: Int(NIODeadline.now().uptimeNanoseconds / 1_000_000)
                )
            })
        else { return }
        metrics.gateDelayChanged(ms: change.newMs)
        logger.info(
            "gate_delay_changed",
            metadata: [
                "old_ms": "\(change.oldMs)", "new_ms": "\(change.newMs)", "reason": "\(change.reason)",
                "upstream": "\(settings.upstream)",
            ]
        )
    }

    public init(settings: ReadyGateSettings, logger: Logger, onSessionEnd: (@Sendable (SessionRecord) -> Void)? = nil) {
        self.shared = Shared(settings: settings, logger: logger, onSessionEnd: onSessionEnd)
    }

    /// From now on `/readyz` fails (a shutdown has begun; ``ReadyGateServer/shutdown(drain:grace:)``
    /// calls it too).
    public func beginDraining() {
        shared.draining.withLockedValue { $0 = true }
    }
}
