import ArgumentParser
import Configuration
import ReadyGateCore

/// The command-line flags that mirror `READYGATE_*` variables. A flag given wins over its variable:
/// the flags form an in-memory provider placed before the environment provider.
struct SettingsOptions: ParsableArguments {
    @Option(help: "Environment profile: testing, development, staging, production (READYGATE_ENV).")
    var env: String?
    @Option(help: "host:port to listen on (READYGATE_LISTEN; default 0.0.0.0:$PORT, else 0.0.0.0:8080).")
    var listen: String?
    @Option(
        help: "host:port of /healthz, /readyz and /metrics, or off (READYGATE_ADMIN_LISTEN; default 127.0.0.1:9901)."
    )
    var adminListen: String?
    @Option(help: "Backend URL, http(s):// or ws(s):// (READYGATE_UPSTREAM; default http://127.0.0.1:8000).")
    var upstream: String?
    @Option(help: "immediate or upstream (READYGATE_ACCEPT_MODE).")
    var acceptMode: String?
    @Option(help: "delay, ping or message (READYGATE_READY_GATE).")
    var readyGate: String?
    @Option(help: "Text the backend's ready message contains (READYGATE_READY_MESSAGE).")
    var readyMessage: String?
    @Option(help: "close or open (READYGATE_READY_TIMEOUT_ACTION).")
    var readyTimeoutAction: String?
    @Option(help: "true or false: the delay gate's delay adapts to the backend (READYGATE_ADAPTIVE).")
    var adaptive: String?
    @Option(help: "true or false: replay a session the backend failed right after READY (READYGATE_REPLAY).")
    var replay: String?
    @Option(help: "Replays per session, 1…10 (READYGATE_REPLAY_ATTEMPTS).")
    var replayAttempts: String?
    @Option(help: "Readiness delay after the backend's 101, ms (READYGATE_BASE_DELAY_MS).")
    var baseDelayMs: String?
    @Option(help: "Bound on the whole handshake, ms (READYGATE_HANDSHAKE_TIMEOUT_MS).")
    var handshakeTimeoutMs: String?
    @Option(help: "Largest retry delay, ms (READYGATE_RETRY_CAP_MS).")
    var retryCapMs: String?
    @Option(help: "Client bytes held per session before reads stop (READYGATE_MAX_BUFFER_BYTES).")
    var maxBufferBytes: String?
    @Option(help: "Largest client message before READY (READYGATE_MAX_MESSAGE_BYTES).")
    var maxMessageBytes: String?
    @Option(help: "Client bytes held before READY across all sessions, 0 for no cap (READYGATE_MAX_HELD_BYTES_TOTAL).")
    var maxHeldBytesTotal: String?
    @Option(help: "Client connections served at once, 0 for no limit (READYGATE_MAX_CONNECTIONS).")
    var maxConnections: String?
    @Option(help: "Comma-separated subprotocols ReadyGate may choose (READYGATE_SUBPROTOCOLS).")
    var subprotocols: String?
    @Option(help: "Idle backend connections kept per event loop for plain HTTP (READYGATE_HTTP_POOL_IDLE_MAX).")
    var httpPoolIdleMax: String?
    @Option(help: "Backend connect and response-head timeout for plain HTTP, ms (READYGATE_HTTP_RESPONSE_TIMEOUT_MS).")
    var httpResponseTimeoutMs: String?
    @Option(help: "Close a client connection silent before a request after, ms (READYGATE_HTTP_IDLE_TIMEOUT_MS).")
    var httpIdleTimeoutMs: String?
    @Option(help: "Answer 408 to a request head not complete within, ms (READYGATE_HTTP_HEADER_TIMEOUT_MS).")
    var httpHeaderTimeoutMs: String?
    @Option(help: "On SIGTERM, let sessions and responses run this long, ms (READYGATE_DRAIN_TIMEOUT_MS).")
    var drainTimeoutMs: String?
    @Option(help: "Wait for a client's close frame after the proxy's, ms (READYGATE_CLOSE_LINGER_MS).")
    var closeLingerMs: String?
    @Option(help: "Close a WebSocket session idle this long with 1001, ms; 0: never (READYGATE_WS_IDLE_TIMEOUT_MS).")
    var wsIdleTimeoutMs: String?
    @Option(help: "Ping both sides of a WebSocket session this often, ms; 0: off (READYGATE_PING_INTERVAL_MS).")
    var pingIntervalMs: String?
    @Option(help: "Event loops (READYGATE_THREADS; default one per core).")
    var threads: String?
    @Option(help: "json or text (READYGATE_LOG_FORMAT).")
    var logFormat: String?
    @Option(help: "trace … critical (READYGATE_LOG_LEVEL).")
    var logLevel: String?
    @Option(help: "PEM certificate chain: the listener speaks TLS, with --tls-key (READYGATE_TLS_CERT).")
    var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert (READYGATE_TLS_KEY).")
    var tlsKey: String?
    @Option(help: "PEM trust roots for an https:// or wss:// backend (READYGATE_UPSTREAM_CA; default: the system's).")
    var upstreamCa: String?
    @Option(help: "HTTP/2 streams one connection may have open (READYGATE_HTTP2_MAX_STREAMS).")
    var http2MaxStreams: String?

    /// The flags that were given, keyed like the environment variables they override.
    var flagValues: [ReadyGateConfigKey: String] {
        let pairs: [(ReadyGateConfigKey, String?)] = [
            (.env, env), (.listen, listen), (.adminListen, adminListen), (.upstream, upstream),
            (.acceptMode, acceptMode),
            (.readyGate, readyGate), (.readyMessage, readyMessage), (.readyTimeoutAction, readyTimeoutAction),
            (.adaptive, adaptive), (.replay, replay), (.replayAttempts, replayAttempts),
            (.baseDelayMs, baseDelayMs), (.handshakeTimeoutMs, handshakeTimeoutMs), (.retryCapMs, retryCapMs),
            (.maxBufferBytes, maxBufferBytes), (.maxMessageBytes, maxMessageBytes), (.subprotocols, subprotocols),
            (.maxHeldBytesTotal, maxHeldBytesTotal), (.maxConnections, maxConnections),
            (.httpPoolIdleMax, httpPoolIdleMax), (.httpResponseTimeoutMs, httpResponseTimeoutMs),
            (.httpIdleTimeoutMs, httpIdleTimeoutMs), (.httpHeaderTimeoutMs, httpHeaderTimeoutMs),
            (.drainTimeoutMs, drainTimeoutMs), (.closeLingerMs, closeLingerMs), (.threads, threads),
            (.wsIdleTimeoutMs, wsIdleTimeoutMs), (.pingIntervalMs, pingIntervalMs),
            (.logFormat, logFormat), (.logLevel, logLevel), (.http2MaxStreams, http2MaxStreams),
            (.tlsCert, tlsCert), (.tlsKey, tlsKey), (.upstreamCA, upstreamCa),
        ]
        var values: [ReadyGateConfigKey: String] = [:]
        for (key, value) in pairs { if let value { values[key] = value } }
        return values
    }

    /// Reads the settings: flags first, then the process environment.
    func load(environment: [String: String]? = nil) throws(SettingsError) -> ReadyGateSettings {
        var memory: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, value) in flagValues { memory[key.absoluteKey] = ConfigValue(.string(value), isSecret: false) }
        let environmentProvider =
            environment.map { EnvironmentVariablesProvider(environmentVariables: $0) } ?? EnvironmentVariablesProvider()
        let reader = ConfigReader(providers: [InMemoryProvider(name: "flags", values: memory), environmentProvider])
        var settings = try ReadyGateSettings(reader: reader)
        if flagValues[.env] != nil { settings.environmentSource = "--env" }
        return settings
    }
}
