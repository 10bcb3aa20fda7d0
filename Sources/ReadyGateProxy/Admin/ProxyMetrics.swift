import CoreMetrics
import NIOHTTP1
import Prometheus
import ReadyGateCore

/// The proxy's metrics (DESIGN §6, `/metrics`), made through swift-metrics with a
/// `PrometheusMetricsFactory` on a registry of this proxy's own, so that several proxies in one
/// process (the tests) keep theirs apart and nothing global is bootstrapped.
///
/// Sessions are counted once, when they end, from their ``SessionRecord``; the data path only
/// touches the active-sessions meter and, per plain HTTP response, one pre-made counter.
public final class ProxyMetrics: Sendable {
    /// What `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    private let sessionsActive: CoreMetrics.Meter
    private let sessionsByEnd: [String: CoreMetrics.Counter]
    private let patterns: [RacePattern: CoreMetrics.Counter]
    private let earlyFrames: CoreMetrics.Counter
    private let undeliveredFrames: CoreMetrics.Counter
    private let connectAttempts: CoreMetrics.Counter
    private let timeToReady: CoreMetrics.Timer
    /// Plain HTTP responses, by who made them and status class (index: class 1…5 minus 1).
    private let backendResponses: [CoreMetrics.Counter]
    private let proxyResponses: [CoreMetrics.Counter]

    static let timeToReadyLabel = "readygate_session_ready_seconds"
    /// Every `end_reason` a session can have: its ``SessionCloseReason``'s name, or `closed` when
    /// the client or the backend ended it.
    static let endReasons = [
        "closed", "upstream_unavailable", "upstream_rejected", "upstream_not_ready", "upstream_closed", "going_away",
        "client_protocol_error", "upstream_protocol_error",
    ]

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[Self.timeToReadyLabel] =
            [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500]
            .map { Duration.milliseconds($0) } + [.seconds(5), .seconds(10)]
        self.registry = registry
        self.factory = factory
        sessionsActive = CoreMetrics.Meter(label: "readygate_sessions_active", factory: factory)
        sessionsByEnd = Dictionary(
            uniqueKeysWithValues: Self.endReasons.map { reason in
                (
                    reason,
                    CoreMetrics.Counter(
                        label: "readygate_sessions_total",
                        dimensions: [("end_reason", reason)],
                        factory: factory
                    )
                )
            }
        )
        patterns = Dictionary(
            uniqueKeysWithValues: RacePattern.allCases.map { pattern in
                let dimensions = [("pattern", pattern.rawValue)]
                return (
                    pattern,
                    CoreMetrics.Counter(
                        label: "readygate_race_patterns_total",
                        dimensions: dimensions,
                        factory: factory
                    )
                )
            }
        )
        earlyFrames = CoreMetrics.Counter(label: "readygate_early_frames_total", factory: factory)
        undeliveredFrames = CoreMetrics.Counter(label: "readygate_undelivered_frames_total", factory: factory)
        connectAttempts = CoreMetrics.Counter(label: "readygate_upstream_connect_attempts_total", factory: factory)
        timeToReady = CoreMetrics.Timer(label: Self.timeToReadyLabel, factory: factory)
        func responses(_ source: String) -> [CoreMetrics.Counter] {
            (1...5).map { digit in
                let dimensions = [("source", source), ("code", "\(digit)xx")]
                return CoreMetrics.Counter(
                    label: "readygate_http_responses_total",
                    dimensions: dimensions,
                    factory: factory
                )
            }
        }
        backendResponses = responses("backend")
        proxyResponses = responses("proxy")
    }

    func sessionStarted() {
        sessionsActive.increment()
    }

    /// A finished session's record: its end, its race patterns and its counts.
    func sessionEnded(_ record: SessionRecord) {
        sessionsActive.decrement()
        let reason = record.endReason?.name ?? "closed"
        (sessionsByEnd[reason]
            ?? CoreMetrics.Counter(
                label: "readygate_sessions_total",
                dimensions: [("end_reason", reason)],
                factory: factory
            ))
            .increment()
        for pattern in record.patterns { patterns[pattern]?.increment() }
        if record.earlyFrames > 0 { earlyFrames.increment(by: record.earlyFrames) }
        if record.undeliveredFrames > 0 { undeliveredFrames.increment(by: record.undeliveredFrames) }
        if record.connectAttempts > 0 { connectAttempts.increment(by: record.connectAttempts) }
        if let readyAt = record.stateTimes[.readyForMessages] {
            timeToReady.recordMilliseconds(readyAt)
        }
    }

    /// A plain HTTP response head went to the client: relayed from the backend, or ReadyGate's own
    /// (400, 408, 502, 504, …).
    func httpResponse(_ status: HTTPResponseStatus, fromBackend: Bool) {
        let index = Int(status.code / 100) - 1
        guard (0..<5).contains(index) else { return }
        (fromBackend ? backendResponses : proxyResponses)[index].increment()
    }
}
