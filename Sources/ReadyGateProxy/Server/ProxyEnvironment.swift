import Logging
import NIOCore
import ReadyGateCore

/// What every connection handler of one proxy instance shares: the settings and the logger.
/// Immutable and `Sendable`, so it can be handed to every event loop.
public struct ProxyEnvironment: Sendable {
    public var settings: ReadyGateSettings
    public var logger: Logger
    /// Called with each finished session's record (tests, metrics). Runs on the session's event loop.
    public var onSessionEnd: (@Sendable (SessionRecord) -> Void)?
    /// The live sessions, for shutdown.
    public let sessions = SessionRegistry()
    /// The backend keep-alive pools for plain HTTP, one per event loop.
    var httpPools = UpstreamPools()

    public init(settings: ReadyGateSettings, logger: Logger, onSessionEnd: (@Sendable (SessionRecord) -> Void)? = nil) {
        self.settings = settings
        self.logger = logger
        self.onSessionEnd = onSessionEnd
    }
}
