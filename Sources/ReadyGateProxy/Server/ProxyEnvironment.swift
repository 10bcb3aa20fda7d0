import Logging
import NIOConcurrencyHelpers
import NIOCore
import ReadyGateCore

/// What every connection handler of one proxy instance shares: the settings and the logger.
/// Immutable and `Sendable`, so it can be handed to every event loop.
///
/// Every session and every HTTP connection keeps a copy, so the settings live in one shared box:
/// a copy is three references, not the settings' two hundred bytes.
public struct ProxyEnvironment: Sendable {
    private final class Shared: Sendable {
        let settings: ReadyGateSettings
        let logger: Logger
        let onSessionEnd: (@Sendable (SessionRecord) -> Void)?
        let metrics = ProxyMetrics()
        let draining = NIOLockedValueBox(false)

        init(settings: ReadyGateSettings, logger: Logger, onSessionEnd: (@Sendable (SessionRecord) -> Void)?) {
            self.settings = settings
            self.logger = logger
            self.onSessionEnd = onSessionEnd
        }
    }

    private let shared: Shared

    public var settings: ReadyGateSettings { shared.settings }
    public var logger: Logger { shared.logger }
    /// Called with each finished session's record (tests, metrics). Runs on the session's event loop.
    public var onSessionEnd: (@Sendable (SessionRecord) -> Void)? { shared.onSessionEnd }
    /// This proxy's metrics, rendered by the admin listener's `/metrics`.
    public var metrics: ProxyMetrics { shared.metrics }
    /// A shutdown has begun: `/readyz` fails from then on.
    public var isDraining: Bool { shared.draining.withLockedValue { $0 } }

    /// From now on `/readyz` fails (a shutdown has begun; ``ReadyGateServer/shutdown(drain:grace:)``
    /// calls it too).
    public func beginDraining() {
        shared.draining.withLockedValue { $0 = true }
    }
    /// The live WebSocket sessions, for shutdown.
    public let sessions = ConnectionRegistry()
    /// The client connections an ``HTTPEntryHandler`` still owns (before any upgrade), for shutdown.
    public let httpConnections = ConnectionRegistry()
    /// The backend keep-alive pools for plain HTTP, one per event loop.
    var httpPools = UpstreamPools()

    public init(settings: ReadyGateSettings, logger: Logger, onSessionEnd: (@Sendable (SessionRecord) -> Void)? = nil) {
        self.shared = Shared(settings: settings, logger: logger, onSessionEnd: onSessionEnd)
    }
}
