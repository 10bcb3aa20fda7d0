import Configuration

/// Every configuration key ReadyGate reads. Each is an environment variable; the CLI's flags
/// feed the same keys through an in-memory provider placed in front of the environment, so a
/// flag wins over a variable.
///
/// | variable | type | default |
/// |---|---|---|
/// | `READYGATE_ENV` / `ENVIRONMENT` | testing, development, staging, production | detected (DESIGN §3) |
/// | `READYGATE_LISTEN` | host:port | `0.0.0.0:$PORT`, else `0.0.0.0:8080` |
/// | `PORT` | port | 8080 |
/// | `READYGATE_ADMIN_LISTEN` | host:port, or `off` | `127.0.0.1:9901` |
/// | `READYGATE_UPSTREAM` | http(s):// or ws(s):// URL | `http://127.0.0.1:8000` |
/// | `READYGATE_ACCEPT_MODE` | immediate, upstream | immediate |
/// | `READYGATE_READY_GATE` | ping, delay, message | ping |
/// | `READYGATE_READY_MESSAGE` | text | `"type":"connection_ready"` |
/// | `READYGATE_READY_TIMEOUT_ACTION` | close, open | close |
/// | `READYGATE_ADAPTIVE` | true, false | true |
/// | `READYGATE_REPLAY` | true, false | false |
/// | `READYGATE_REPLAY_ATTEMPTS` | 1…10 | 2 |
/// | `READYGATE_BASE_DELAY_MS` | ms, 0…60000 | the environment's |
/// | `READYGATE_HANDSHAKE_TIMEOUT_MS` | ms, 1…600000 | the environment's |
/// | `READYGATE_RETRY_CAP_MS` | ms, 1…60000 | the environment's |
/// | `READYGATE_MAX_BUFFER_BYTES` | bytes, 1024…1 GiB | 1 MiB |
/// | `READYGATE_MAX_HELD_BYTES_TOTAL` | bytes, 0 (no cap)…1 TiB | 64 MiB |
/// | `READYGATE_MAX_CONNECTIONS` | 0 (no limit)…1048576 | 0 |
/// | `READYGATE_MAX_MESSAGE_BYTES` | bytes, 125…4 GiB | 64 MiB |
/// | `READYGATE_SUBPROTOCOLS` | comma-separated tokens | unset |
/// | `READYGATE_HTTP_POOL_IDLE_MAX` | 0…65536 idle backend connections per event loop | 64 |
/// | `READYGATE_HTTP_RESPONSE_TIMEOUT_MS` | ms, 1…3600000 | 60000 |
/// | `READYGATE_HTTP_IDLE_TIMEOUT_MS` | ms, 1…3600000 | 620000 |
/// | `READYGATE_HTTP_HEADER_TIMEOUT_MS` | ms, 1…3600000 | 60000 |
/// | `READYGATE_DRAIN_TIMEOUT_MS` | ms, 0…600000 | 8000 |
/// | `READYGATE_WS_IDLE_TIMEOUT_MS` | ms, 0 (none) or 100…86400000 | 0 |
/// | `READYGATE_PING_INTERVAL_MS` | ms, 0 (off) or 100…3600000 | 0 |
/// | `READYGATE_CLOSE_LINGER_MS` | ms, 0…60000 | the handshake timeout, at most 1000 |
/// | `READYGATE_THREADS` | 1…256 | one per core |
/// | `READYGATE_LOG_FORMAT` | json, text | json |
/// | `READYGATE_LOG_LEVEL` | trace, debug, info, notice, warning, error, critical | info |
/// | `READYGATE_TLS_CERT`, `READYGATE_TLS_KEY` | PEM file paths, both or neither | unset (plaintext) |
/// | `READYGATE_UPSTREAM_CA` | PEM file path | unset (the system trust store) |
public enum ReadyGateConfigKey: String, Sendable, CaseIterable {
    case env = "READYGATE_ENV"
    case environment = "ENVIRONMENT"
    case kService = "K_SERVICE"
    case kubernetesServiceHost = "KUBERNETES_SERVICE_HOST"
    case listen = "READYGATE_LISTEN"
    case port = "PORT"
    case adminListen = "READYGATE_ADMIN_LISTEN"
    case upstream = "READYGATE_UPSTREAM"
    case acceptMode = "READYGATE_ACCEPT_MODE"
    case readyGate = "READYGATE_READY_GATE"
    case readyMessage = "READYGATE_READY_MESSAGE"
    case readyTimeoutAction = "READYGATE_READY_TIMEOUT_ACTION"
    case adaptive = "READYGATE_ADAPTIVE"
    case replay = "READYGATE_REPLAY"
    case replayAttempts = "READYGATE_REPLAY_ATTEMPTS"
    case baseDelayMs = "READYGATE_BASE_DELAY_MS"
    case handshakeTimeoutMs = "READYGATE_HANDSHAKE_TIMEOUT_MS"
    case retryCapMs = "READYGATE_RETRY_CAP_MS"
    case maxBufferBytes = "READYGATE_MAX_BUFFER_BYTES"
    case maxMessageBytes = "READYGATE_MAX_MESSAGE_BYTES"
    case maxHeldBytesTotal = "READYGATE_MAX_HELD_BYTES_TOTAL"
    case maxConnections = "READYGATE_MAX_CONNECTIONS"
    case subprotocols = "READYGATE_SUBPROTOCOLS"
    case httpPoolIdleMax = "READYGATE_HTTP_POOL_IDLE_MAX"
    case httpResponseTimeoutMs = "READYGATE_HTTP_RESPONSE_TIMEOUT_MS"
    case httpIdleTimeoutMs = "READYGATE_HTTP_IDLE_TIMEOUT_MS"
    case httpHeaderTimeoutMs = "READYGATE_HTTP_HEADER_TIMEOUT_MS"
    case drainTimeoutMs = "READYGATE_DRAIN_TIMEOUT_MS"
    case closeLingerMs = "READYGATE_CLOSE_LINGER_MS"
    case wsIdleTimeoutMs = "READYGATE_WS_IDLE_TIMEOUT_MS"
    case pingIntervalMs = "READYGATE_PING_INTERVAL_MS"
    case threads = "READYGATE_THREADS"
    case logFormat = "READYGATE_LOG_FORMAT"
    case logLevel = "READYGATE_LOG_LEVEL"
    case tlsCert = "READYGATE_TLS_CERT"
    case tlsKey = "READYGATE_TLS_KEY"
    case upstreamCA = "READYGATE_UPSTREAM_CA"
    case http2MaxStreams = "READYGATE_HTTP2_MAX_STREAMS"

    /// `READYGATE_*` names in `names` that ReadyGate does not know: most likely typos, which would
    /// otherwise be ignored silently.
    public static func unknownVariables(in names: some Sequence<String>) -> [String] {
        let known = Set(allCases.map(\.rawValue))
        return names.filter { $0.hasPrefix("READYGATE_") && !known.contains($0) }.sorted()
    }

    /// The key as swift-configuration spells it: one lower-case component, which the environment
    /// provider encodes back to the variable's name.
    public var configKey: ConfigKey { ConfigKey([rawValue.lowercased()]) }

    /// The key an in-memory provider (the CLI's flags, tests) stores the value under.
    public var absoluteKey: AbsoluteConfigKey { AbsoluteConfigKey([rawValue.lowercased()]) }
}

/// The log levels `READYGATE_LOG_LEVEL` accepts (swift-log's names).
public let readyGateLogLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

extension ReadyGateSettings {
    /// Reads and validates every setting.
    ///
    /// - Throws: ``SettingsError`` naming the first variable whose value is not allowed.
    public init(reader: ConfigReader) throws(SettingsError) {
        let source = SettingsSource(reader: reader)
        self.init()

        let detected = try DeploymentEnvironment.detect { name in
            ReadyGateConfigKey(rawValue: name).flatMap { source.value($0) }
        }
        environment = detected.environment
        environmentSource = detected.source
        timing = environment.profile

        let addressForms = "host:port, [ipv6]:port or :port"
        let address: (String) -> HostAndPort? = { HostAndPort.parse($0) }
        if let parsed = try source.parsed(.listen, allowed: addressForms, address) {
            listen = parsed
        } else if source.value(.port) != nil {
            listen = HostAndPort(host: "0.0.0.0", port: try source.integer(.port, in: 1...65535))
        }
        if source.value(.adminListen)?.lowercased() == "off" {
            adminListen = nil
        } else if let parsed = try source.parsed(.adminListen, allowed: addressForms + ", or off", address) {
            adminListen = parsed
        }
        let upstreamForms = "http://host:port, ws://host:port, https://host:port or wss://host:port"
        if let parsed = try source.parsed(.upstream, allowed: upstreamForms, UpstreamTarget.parse) {
            upstream = parsed
        }
        acceptMode = try source.choice(.acceptMode, default: acceptMode)
        readyGate = try source.choice(.readyGate, default: readyGate)
        readyTimeoutAction = try source.choice(.readyTimeoutAction, default: readyTimeoutAction)
        if let message = source.raw(.readyMessage) { readyMessage = message }
        adaptiveDelay = try source.boolean(.adaptive, default: adaptiveDelay)
        replay = try source.boolean(.replay, default: replay)
        replayAttempts = try source.integer(.replayAttempts, in: 1...10, default: replayAttempts)
        timing.baseDelayMs = try source.integer(.baseDelayMs, in: 0...60_000, default: timing.baseDelayMs)
        timing.handshakeTimeoutMs = try source.integer(
            .handshakeTimeoutMs,
            in: 1...600_000,
            default: timing.handshakeTimeoutMs
        )
        timing.retryCapMs = try source.integer(.retryCapMs, in: 1...60_000, default: timing.retryCapMs)
        maxBufferBytes = try source.integer(.maxBufferBytes, in: 1024...(1 << 30), default: maxBufferBytes)
        maxMessageBytes = try source.integer(.maxMessageBytes, in: 125...(1 << 32), default: maxMessageBytes)
        maxHeldBytesTotal = try source.integer(.maxHeldBytesTotal, in: 0...(1 << 40), default: maxHeldBytesTotal)
        maxConnections = try source.integer(.maxConnections, in: 0...(1 << 20), default: maxConnections)
        if let text = source.value(.subprotocols) {
            let names = text.split(separator: ",").map { $0.trimmingSpaces() }
            guard !names.isEmpty, names.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isHTTPTokenCharacter) }) else {
                throw SettingsError(
                    variable: .subprotocols,
                    value: text,
                    allowed: "a comma-separated list of subprotocol names (RFC 6455 §4.1 tokens)"
                )
            }
            subprotocols = names
        }
        httpPoolIdleMax = try source.integer(.httpPoolIdleMax, in: 0...65_536, default: httpPoolIdleMax)
        httpResponseTimeoutMs = try source.integer(
            .httpResponseTimeoutMs,
            in: 1...3_600_000,
            default: httpResponseTimeoutMs
        )
        httpIdleTimeoutMs = try source.integer(.httpIdleTimeoutMs, in: 1...3_600_000, default: httpIdleTimeoutMs)
        httpHeaderTimeoutMs = try source.integer(
            .httpHeaderTimeoutMs,
            in: 1...3_600_000,
            default: httpHeaderTimeoutMs
        )
        drainTimeoutMs = try source.integer(.drainTimeoutMs, in: 0...600_000, default: drainTimeoutMs)
        wsIdleTimeoutMs = try source.durationOrOff(.wsIdleTimeoutMs, in: 100...86_400_000)
        pingIntervalMs = try source.durationOrOff(.pingIntervalMs, in: 100...3_600_000)
        if source.value(.closeLingerMs) != nil {
            closeLingerMs = try source.integer(.closeLingerMs, in: 0...60_000)
        }
        if source.value(.threads) != nil {
            threads = try source.integer(.threads, in: 1...256)
        }
        logFormat = try source.choice(.logFormat, default: logFormat)
        if let level = source.value(.logLevel) {
            guard readyGateLogLevels.contains(level.lowercased()) else {
                throw SettingsError(
                    variable: .logLevel,
                    value: level,
                    allowed: readyGateLogLevels.joined(separator: ", ")
                )
            }
            logLevel = level.lowercased()
        }
        try readTLS(source)
        http2MaxStreams = try source.integer(.http2MaxStreams, in: 1...65_536, default: http2MaxStreams)
    }

    /// The effective settings as `VARIABLE=value` lines, for `readygate check-config`.
    public var effectiveValues: [(variable: String, value: String)] {
        let values: [(variable: String, value: String)] = [
            ("READYGATE_ENV", environment.rawValue + (environmentSource.map { " (from \($0))" } ?? " (default)")),
            ("READYGATE_LISTEN", listen.description),
            ("READYGATE_ADMIN_LISTEN", adminListen?.description ?? "off"),
            ("READYGATE_UPSTREAM", upstream.description),
            ("READYGATE_ACCEPT_MODE", acceptMode.rawValue),
            ("READYGATE_READY_GATE", readyGate.rawValue),
            ("READYGATE_READY_MESSAGE", readyMessage),
            ("READYGATE_READY_TIMEOUT_ACTION", readyTimeoutAction.rawValue),
            ("READYGATE_ADAPTIVE", String(adaptiveDelay)),
            ("READYGATE_REPLAY", String(replay)),
            ("READYGATE_REPLAY_ATTEMPTS", String(replayAttempts)),
            ("READYGATE_BASE_DELAY_MS", String(timing.baseDelayMs)),
            ("READYGATE_HANDSHAKE_TIMEOUT_MS", String(timing.handshakeTimeoutMs)),
            ("READYGATE_RETRY_CAP_MS", String(timing.retryCapMs)),
            ("READYGATE_MAX_BUFFER_BYTES", String(maxBufferBytes)),
            ("READYGATE_MAX_MESSAGE_BYTES", String(maxMessageBytes)),
            ("READYGATE_MAX_HELD_BYTES_TOTAL", maxHeldBytesTotal == 0 ? "0 (no cap)" : String(maxHeldBytesTotal)),
            ("READYGATE_MAX_CONNECTIONS", maxConnections == 0 ? "0 (no limit)" : String(maxConnections)),
            ("READYGATE_SUBPROTOCOLS", subprotocols?.joined(separator: ",") ?? "(unset)"),
            ("READYGATE_HTTP_POOL_IDLE_MAX", String(httpPoolIdleMax)),
            ("READYGATE_HTTP_RESPONSE_TIMEOUT_MS", String(httpResponseTimeoutMs)),
            ("READYGATE_HTTP_IDLE_TIMEOUT_MS", String(httpIdleTimeoutMs)),
            ("READYGATE_HTTP_HEADER_TIMEOUT_MS", String(httpHeaderTimeoutMs)),
            ("READYGATE_DRAIN_TIMEOUT_MS", String(drainTimeoutMs)),
            ("READYGATE_WS_IDLE_TIMEOUT_MS", wsIdleTimeoutMs == 0 ? "0 (none)" : String(wsIdleTimeoutMs)),
            ("READYGATE_PING_INTERVAL_MS", pingIntervalMs == 0 ? "0 (off)" : String(pingIntervalMs)),
            ("READYGATE_CLOSE_LINGER_MS", "\(closeLinger)" + (closeLingerMs == nil ? " (handshake timeout)" : "")),
            ("READYGATE_THREADS", threads.map(String.init) ?? "(one per core)"),
            ("READYGATE_LOG_FORMAT", logFormat.rawValue),
            ("READYGATE_LOG_LEVEL", logLevel),
            ("READYGATE_HTTP2_MAX_STREAMS", String(http2MaxStreams)),
        ]
        return values + tlsEffectiveValues
    }
}

extension SettingsError {
    init(variable: ReadyGateConfigKey, value: String, allowed: String) {
        self.init(variable: variable.rawValue, value: value, allowed: allowed)
    }
}

/// Typed reads of one key each, with errors that name the variable.
struct SettingsSource {
    var reader: ConfigReader

    /// The value exactly as given (spaces kept), nil when unset or empty.
    func raw(_ key: ReadyGateConfigKey) -> String? {
        guard let text = reader.string(forKey: key.configKey), !text.isEmpty else { return nil }
        return text
    }

    func value(_ key: ReadyGateConfigKey) -> String? {
        guard let text = reader.string(forKey: key.configKey) else { return nil }
        let trimmed = text.trimmingSpaces()
        return trimmed.isEmpty ? nil : trimmed
    }

    func integer(_ key: ReadyGateConfigKey, in range: ClosedRange<Int>, default fallback: Int) throws(SettingsError)
        -> Int
    {
        value(key) == nil ? fallback : try integer(key, in: range)
    }

    func integer(_ key: ReadyGateConfigKey, in range: ClosedRange<Int>) throws(SettingsError) -> Int {
        let text = value(key) ?? ""
        guard let number = Int(text), range.contains(number) else {
            throw SettingsError(
                variable: key,
                value: text,
                allowed: "an integer from \(range.lowerBound) to \(range.upperBound)"
            )
        }
        return number
    }

    /// The value read by `parse`, nil when unset; a value `parse` rejects throws, naming `allowed`.
    func parsed<T>(_ key: ReadyGateConfigKey, allowed: String, _ parse: (String) -> T?) throws(SettingsError) -> T? {
        guard let text = value(key) else { return nil }
        guard let parsed = parse(text) else { throw SettingsError(variable: key, value: text, allowed: allowed) }
        return parsed
    }

    /// Milliseconds in `range`, or 0 for "off"; 0 when unset.
    func durationOrOff(_ key: ReadyGateConfigKey, in range: ClosedRange<Int>) throws(SettingsError) -> Int {
        guard let text = value(key) else { return 0 }
        guard let number = Int(text), number == 0 || range.contains(number) else {
            throw SettingsError(
                variable: key,
                value: text,
                allowed: "0 (off) or an integer from \(range.lowerBound) to \(range.upperBound)"
            )
        }
        return number
    }

    func boolean(_ key: ReadyGateConfigKey, default fallback: Bool) throws(SettingsError) -> Bool {
        guard let text = value(key) else { return fallback }
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw SettingsError(variable: key, value: text, allowed: "true or false")
        }
    }

    func choice<T: RawRepresentable & CaseIterable>(_ key: ReadyGateConfigKey, default fallback: T)
        throws(SettingsError)
        -> T where T.RawValue == String
    {
        guard let text = value(key) else { return fallback }
        guard let parsed = T(rawValue: text.lowercased()) else {
            throw SettingsError(
                variable: key,
                value: text,
                allowed: "one of " + T.allCases.map(\.rawValue).joined(separator: ", ")
            )
        }
        return parsed
    }
}

extension Character {
    /// RFC 9110 §5.6.2 `tchar`.
    var isHTTPTokenCharacter: Bool {
        guard isASCII, let value = asciiValue else { return false }
        if (0x30...0x39).contains(value) || (0x41...0x5A).contains(value) || (0x61...0x7A).contains(value) {
            return true
        }
        return "!#$%&'*+-.^_`|~".contains(self)
    }
}
