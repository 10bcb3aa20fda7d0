/// The deployment environments ReadyGate knows, each with its own timing defaults (DESIGN §3).
public enum DeploymentEnvironment: String, Sendable, CaseIterable, CustomStringConvertible {
    case testing
    case development
    case staging
    case production

    public var description: String { rawValue }

    /// The timing defaults of this environment.
    public var profile: TimingProfile {
        switch self {
        case .testing: TimingProfile(baseDelayMs: 1, handshakeTimeoutMs: 100, retryCapMs: 20)
        case .development: TimingProfile(baseDelayMs: 10, handshakeTimeoutMs: 200, retryCapMs: 50)
        case .staging: TimingProfile(baseDelayMs: 25, handshakeTimeoutMs: 500, retryCapMs: 100)
        case .production: TimingProfile(baseDelayMs: 25, handshakeTimeoutMs: 1000, retryCapMs: 200)
        }
    }

    /// Picks the environment the way DESIGN §3 says: `READYGATE_ENV`, else `ENVIRONMENT`, else
    /// `production` when running on Cloud Run (`K_SERVICE`) or Kubernetes (`KUBERNETES_SERVICE_HOST`),
    /// else `development`.
    ///
    /// - Parameter lookup: reads one environment variable by name.
    /// - Returns: the environment and the variable it came from (nil when it was inferred).
    public static func detect(
        _ lookup: (String) -> String?
    ) throws(SettingsError) -> (environment: DeploymentEnvironment, source: String?) {
        for variable in ["READYGATE_ENV", "ENVIRONMENT"] {
            guard let raw = lookup(variable), !raw.isEmpty else { continue }
            guard let environment = DeploymentEnvironment(rawValue: raw.lowercased()) else {
                throw SettingsError(
                    variable: variable,
                    value: raw,
                    allowed: DeploymentEnvironment.allCases.map(\.rawValue).joined(separator: ", ")
                )
            }
            return (environment, variable)
        }
        for variable in ["K_SERVICE", "KUBERNETES_SERVICE_HOST"] {
            if let value = lookup(variable), !value.isEmpty { return (.production, variable) }
        }
        return (.development, nil)
    }
}

/// Timing values of one environment, in milliseconds.
public struct TimingProfile: Sendable, Equatable {
    /// The readiness delay after upstream 101 (delay gate), and the first retry step.
    public var baseDelayMs: Int
    /// Bounds INITIALIZING → READY_FOR_MESSAGES.
    public var handshakeTimeoutMs: Int
    /// The largest single retry delay.
    public var retryCapMs: Int

    public init(baseDelayMs: Int, handshakeTimeoutMs: Int, retryCapMs: Int) {
        self.baseDelayMs = baseDelayMs
        self.handshakeTimeoutMs = handshakeTimeoutMs
        self.retryCapMs = retryCapMs
    }
}
