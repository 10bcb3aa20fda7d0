import NIOHTTP1
import Prometheus
import ReadyGateCore

/// The proxy's metrics (DESIGN §6, `/metrics`), made on a swift-prometheus registry of this
/// proxy's own, so that several proxies in one process (the tests) keep theirs apart and nothing
/// global is bootstrapped.
///
/// Every metric is made with its help text (a `# HELP` line in `/metrics`). They are made on the
/// registry directly, not through swift-metrics: swift-prometheus 2.4.1's `PrometheusMetricsFactory`
/// registers every metric with an empty help text, and a registry refuses (traps on) one name made
/// with two help texts.
///
/// Sessions are counted once, when they end, from their ``SessionRecord``; the data path only
/// touches the active-sessions gauge and, per plain HTTP response, one pre-made counter. So the
/// relayed messages and bytes of a session are added when it ends, not while it runs.
public final class ProxyMetrics: Sendable {
    /// What `/metrics` renders.
    public let registry: PrometheusCollectorRegistry

    private let sessionsActive: Gauge
    private let gateDelaySeconds: Gauge
    private let sessionsByEnd: [String: Counter]
    private let patterns: [RacePattern: Counter]
    private let earlyFrames: Counter
    private let undeliveredFrames: Counter
    private let connectAttempts: Counter
    private let replays: Counter
    private let timeToReady: [ReadyGateMode: DurationHistogram]
    /// Relayed data messages and wire bytes, by direction.
    private let messagesToUpstream: Counter
    private let messagesToClient: Counter
    private let bytesToUpstream: Counter
    private let bytesToClient: Counter
    /// Plain HTTP responses, by who made them and status class (index: class 1…5 minus 1).
    private let backendResponses: [Counter]
    private let proxyResponses: [Counter]
    /// The limits (`READYGATE_MAX_CONNECTIONS`, `READYGATE_MAX_HELD_BYTES_TOTAL`).
    private let connectionsActive: Gauge
    private let connectionsRefused: Counter
    private let heldBytes: Gauge
    private let heldBytesCapPauses: Counter
    /// The TLS listener (`TLS/`).
    private let tlsHandshakeFailures: Counter
    private let tlsReloadsOK: Counter
    private let tlsReloadsFailed: Counter
    /// HTTP/2 (h2c with prior knowledge, or h2 by ALPN).
    private let http2Connections: Counter
    private let http2StreamsActive: Gauge
    private let http2StreamResets: Counter
    private let http2GoAways: Counter

    /// A metric's name and its `# HELP` text: one place for both, so a name is never made with
    /// two texts.
    struct Family: Sendable {
        let name: String
        let help: String

        /// The registry's description: the whole name as the base name, no unit suffix.
        var descriptor: MetricNameDescriptor {
            MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
        }
    }

    static let sessions = Family(
        name: "readygate_sessions_total",
        help: "WebSocket sessions that ended, by end reason (closed: the client or the backend ended it)."
    )
    static let active = Family(name: "readygate_sessions_active", help: "WebSocket sessions open now.")
    static let gateDelay = Family(
        name: "readygate_gate_delay_seconds",
        help:
            "The delay gate's delay after the backend's 101 that new sessions get (adapted unless READYGATE_ADAPTIVE=false)."
    )
    static let racePatterns = Family(
        name: "readygate_race_patterns_total",
        help: "WebSocket sessions that showed each race pattern (counted at most once per session)."
    )
    static let early = Family(
        name: "readygate_early_frames_total",
        help: "Client frames held because they arrived before the backend was ready."
    )
    static let undelivered = Family(
        name: "readygate_undelivered_frames_total",
        help: "Held client frames never delivered: their session ended before READY."
    )
    static let attempts = Family(
        name: "readygate_upstream_connect_attempts_total",
        help: "TCP connects to the backend for WebSocket sessions, retries included."
    )
    static let replayed = Family(
        name: "readygate_session_replays_total",
        help:
            "Backend sessions replaced by a replay (READYGATE_REPLAY): the backend failed right after READY and the client's frames went to a new one."
    )
    static let ready = Family(
        name: "readygate_session_ready_seconds",
        help: "Time from the client's upgrade request to READY (held frames released), by readiness gate."
    )
    static let messages = Family(
        name: "readygate_messages_total",
        help: "WebSocket data messages relayed, by direction; added when the session ends."
    )
    static let bytes = Family(
        name: "readygate_bytes_total",
        help: "WebSocket wire bytes (frame headers included) relayed, by direction; added when the session ends."
    )
    static let httpResponses = Family(
        name: "readygate_http_responses_total",
        help: "Plain HTTP responses by status class, relayed from the backend or made by the proxy."
    )

    static let connections = Family(
        name: "readygate_connections_active",
        help: "Client connections the listener serves now (the ones READYGATE_MAX_CONNECTIONS counts)."
    )
    static let refused = Family(
        name: "readygate_connections_refused_total",
        help: "Client connections refused with 503 because READYGATE_MAX_CONNECTIONS were open."
    )
    static let held = Family(
        name: "readygate_held_bytes",
        help: "Client bytes held before READY, across all sessions (capped by READYGATE_MAX_HELD_BYTES_TOTAL)."
    )
    static let heldCapPauses = Family(
        name: "readygate_held_bytes_cap_pauses_total",
        help: "Times a session stopped reading from its client because READYGATE_MAX_HELD_BYTES_TOTAL was reached."
    )

    static let tlsHandshakeFailed = Family(
        name: "readygate_tls_handshake_failures_total",
        help: "Client connections of the TLS listener whose handshake failed or timed out."
    )
    static let tlsReloads = Family(
        name: "readygate_tls_reloads_total",
        help: "Reloads of READYGATE_TLS_CERT and READYGATE_TLS_KEY (SIGHUP), by result (ok, failed)."
    )
    static let h2Connections = Family(
        name: "readygate_http2_connections_total",
        help: "Client connections that spoke HTTP/2 (h2c with prior knowledge or h2 by ALPN)."
    )
    static let h2Streams = Family(
        name: "readygate_http2_streams_active",
        help: "HTTP/2 streams open now (plain requests and RFC 8441 WebSockets)."
    )
    static let h2Resets = Family(
        name: "readygate_http2_stream_resets_total",
        help: "HTTP/2 streams the client reset (RST_STREAM) before they ended."
    )
    static let h2GoAways = Family(
        name: "readygate_http2_goaways_total",
        help: "GOAWAY frames received from HTTP/2 clients."
    )

    /// Every family `/metrics` shows, each with its `# HELP` line.
    static let families = [
        sessions, active, gateDelay, racePatterns, early, undelivered, attempts, replayed, ready, messages, bytes,
        httpResponses, connections, refused, held, heldCapPauses, tlsHandshakeFailed, tlsReloads,
        h2Connections, h2Streams, h2Resets, h2GoAways,
    ]

    static let timeToReadyLabel = ready.name
    static let timeToReadyBuckets: [Duration] =
        [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000].map { Duration.milliseconds($0) }
    /// Every `end_reason` a session can have: its ``SessionCloseReason``'s name, or `closed` when
    /// the client or the backend ended it.
    static let endReasons = [
        "closed", "upstream_unavailable", "upstream_rejected", "upstream_not_ready", "upstream_closed", "going_away",
        "client_protocol_error", "upstream_protocol_error", "internal_error", "idle_timeout", "peer_unresponsive",
    ]
    /// The `direction` label's values.
    static let clientToUpstream = "client_to_upstream"
    static let upstreamToClient = "upstream_to_client"

    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        func counter(_ family: Family, _ labels: [(String, String)] = []) -> Counter {
            labels.isEmpty
                ? registry.makeCounter(descriptor: family.descriptor)
                : registry.makeCounter(descriptor: family.descriptor, labels: labels)
        }
        sessionsActive = registry.makeGauge(descriptor: Self.active.descriptor)
        gateDelaySeconds = registry.makeGauge(descriptor: Self.gateDelay.descriptor)
        sessionsByEnd = Dictionary(
            uniqueKeysWithValues: Self.endReasons.map { ($0, counter(Self.sessions, [("end_reason", $0)])) }
        )
        patterns = Dictionary(
            uniqueKeysWithValues: RacePattern.allCases.map {
                ($0, counter(Self.racePatterns, [("pattern", $0.rawValue)]))
            }
        )
        earlyFrames = counter(Self.early)
        undeliveredFrames = counter(Self.undelivered)
        connectAttempts = counter(Self.attempts)
        replays = counter(Self.replayed)
        timeToReady = Dictionary(
            uniqueKeysWithValues: ReadyGateMode.allCases.map { gate in
                (
                    gate,
                    registry.makeDurationHistogram(
                        descriptor: Self.ready.descriptor,
                        labels: [("gate", gate.rawValue)],
                        buckets: Self.timeToReadyBuckets
                    )
                )
            }
        )
        messagesToUpstream = counter(Self.messages, [("direction", Self.clientToUpstream)])
        messagesToClient = counter(Self.messages, [("direction", Self.upstreamToClient)])
        bytesToUpstream = counter(Self.bytes, [("direction", Self.clientToUpstream)])
        bytesToClient = counter(Self.bytes, [("direction", Self.upstreamToClient)])
        func responses(_ source: String) -> [Counter] {
            (1...5).map { digit in counter(Self.httpResponses, [("source", source), ("code", "\(digit)xx")]) }
        }
        backendResponses = responses("backend")
        proxyResponses = responses("proxy")
        connectionsActive = registry.makeGauge(descriptor: Self.connections.descriptor)
        connectionsRefused = counter(Self.refused)
        heldBytes = registry.makeGauge(descriptor: Self.held.descriptor)
        heldBytesCapPauses = counter(Self.heldCapPauses)
        tlsHandshakeFailures = counter(Self.tlsHandshakeFailed)
        tlsReloadsOK = counter(Self.tlsReloads, [("result", "ok")])
        tlsReloadsFailed = counter(Self.tlsReloads, [("result", "failed")])
        http2Connections = counter(Self.h2Connections)
        http2StreamsActive = registry.makeGauge(descriptor: Self.h2Streams.descriptor)
        http2StreamResets = counter(Self.h2Resets)
        http2GoAways = counter(Self.h2GoAways)
    }

    /// A TLS handshake of a client connection failed or timed out.
    func tlsHandshakeFailed() {
        tlsHandshakeFailures.increment()
    }

    /// The listener's certificate was reloaded (`ok`), or the reload failed and the old one stays.
    public func tlsReloaded(ok: Bool) {
        (ok ? tlsReloadsOK : tlsReloadsFailed).increment()
    }

    /// A connection turned out to speak HTTP/2.
    func http2ConnectionOpened() {
        http2Connections.increment()
    }

    /// An HTTP/2 stream opened (`1`) or closed (`-1`).
    func http2StreamsChanged(by delta: Int) {
        http2StreamsActive.increment(by: Double(delta))
    }

    /// The client reset a stream that had not ended.
    func http2StreamReset() {
        http2StreamResets.increment()
    }

    /// The client sent GOAWAY.
    func http2GoAwayReceived() {
        http2GoAways.increment()
    }

    /// A client connection was admitted (`1`) or has closed (`-1`).
    func connectionsChanged(by delta: Int) {
        connectionsActive.increment(by: Double(delta))
    }

    /// A client connection was refused by `READYGATE_MAX_CONNECTIONS`.
    func connectionRefused() {
        connectionsRefused.increment()
    }

    /// Holds keep `delta` more bytes (negative: bytes released, discarded or gone with their client).
    /// Added, not set, so that updates from several event loops need no order.
    func heldBytesChanged(by delta: Int) {
        heldBytes.increment(by: Double(delta))
    }

    /// A hold stopped reading because the global cap on held bytes was reached.
    func heldBytesCapPaused() {
        heldBytesCapPauses.increment()
    }

    /// The delay gate's delay is now `ms`.
    func gateDelayChanged(ms: Int) {
        gateDelaySeconds.set(Double(ms) / 1000)
    }

    func sessionStarted() {
        sessionsActive.increment()
    }

    /// A finished session's record: its end, its race patterns, its time to READY and its counts.
    func sessionEnded(_ record: SessionRecord) {
        sessionsActive.decrement()
        let reason = record.endReason?.name ?? "closed"
        (sessionsByEnd[reason]
            ?? registry.makeCounter(descriptor: Self.sessions.descriptor, labels: [("end_reason", reason)]))
            .increment()
        for pattern in record.patterns { patterns[pattern]?.increment() }
        Self.add(record.earlyFrames, to: earlyFrames)
        Self.add(record.undeliveredFrames, to: undeliveredFrames)
        Self.add(record.connectAttempts, to: connectAttempts)
        Self.add(record.replays, to: replays)
        Self.add(record.clientToUpstream.messages, to: messagesToUpstream)
        Self.add(record.upstreamToClient.messages, to: messagesToClient)
        Self.add(record.clientToUpstream.bytes, to: bytesToUpstream)
        Self.add(record.upstreamToClient.bytes, to: bytesToClient)
        if let readyAt = record.stateTimes[.readyForMessages] {
            timeToReady[record.gate]?.record(.milliseconds(readyAt))
        }
    }

    private static func add(_ amount: some BinaryInteger, to counter: Counter) {
        if amount > 0 { counter.increment(by: Int64(clamping: amount)) }
    }

    /// A plain HTTP response head went to the client: relayed from the backend, or ReadyGate's own
    /// (400, 408, 502, 504, …).
    func httpResponse(_ status: HTTPResponseStatus, fromBackend: Bool) {
        let index = Int(status.code / 100) - 1
        guard (0..<5).contains(index) else { return }
        (fromBackend ? backendResponses : proxyResponses)[index].increment()
    }
}
