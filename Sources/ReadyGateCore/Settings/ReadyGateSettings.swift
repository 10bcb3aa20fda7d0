/// How the client's upgrade is answered (DESIGN §2, "Accept mode").
public enum AcceptMode: String, Sendable, CaseIterable {
    /// Answer `101` at once, before the backend has answered.
    case immediate
    /// Answer only when the backend has answered, relaying a rejection as it is.
    case upstream
}

/// When a connected upstream counts as ready for the client's frames (DESIGN §2, "Readiness gate").
public enum ReadyGateMode: String, Sendable, CaseIterable {
    /// Ready when the base delay has passed since the upstream's `101`.
    case delay
    /// Load-aware: the proxy pings the backend after its `101`; ready when the base delay has
    /// passed since the backend's pong (its event loop has caught up by then).
    case ping
    /// Ready when the backend sends a data frame containing the ready message.
    case message
}

/// What happens when the handshake timeout expires before the session is ready.
public enum ReadyTimeoutAction: String, Sendable, CaseIterable {
    /// End the session with close `1013`.
    case close
    /// Splice anyway, and log it.
    case open
}

/// The log output format.
public enum LogFormat: String, Sendable, CaseIterable {
    case json
    case text
}

/// A host and port to listen on or connect to.
public struct HostAndPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses `host:port`, `[v6]:port` or `:port` (all interfaces).
    public static func parse(_ text: String, defaultHost: String = "0.0.0.0") -> HostAndPort? {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            // `[[a]:1` would give host `[a`, printed as `[a:1`, which does not parse (found by fuzzing).
            if host.contains("[") { return nil }
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        if host.isEmpty { host = Substring(defaultHost) }
        guard let port = Int(portText), (0...65535).contains(port) else { return nil }
        return HostAndPort(host: String(host), port: port)
    }
}

/// Where the backend is: `http://`/`ws://` for plain TCP, `https://`/`wss://` for TLS.
public struct UpstreamTarget: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var usesTLS: Bool

    public init(host: String, port: Int, usesTLS: Bool) {
        self.host = host
        self.port = port
        self.usesTLS = usesTLS
    }

    public var description: String {
        "\(usesTLS ? "https" : "http")://\(HostAndPort(host: host, port: port))"
    }

    /// Parses an upstream URL: scheme, host and optional port; no path, query or user info.
    public static func parse(_ text: String) -> UpstreamTarget? {
        let schemes: [(String, Bool, Int)] = [
            ("http://", false, 80), ("ws://", false, 80), ("https://", true, 443), ("wss://", true, 443),
        ]
        guard let (prefix, tls, defaultPort) = schemes.first(where: { text.lowercased().hasPrefix($0.0) }) else {
            return nil
        }
        var authority = Substring(text.dropFirst(prefix.count))
        if authority.hasSuffix("/") { authority = authority.dropLast() }
        guard !authority.isEmpty, !authority.contains("/"), !authority.contains("@"), !authority.contains("?") else {
            return nil
        }
        let hasPort = authority.hasPrefix("[") ? authority.contains("]:") : authority.contains(":")
        if hasPort {
            guard let parsed = HostAndPort.parse(String(authority), defaultHost: ""), !parsed.host.isEmpty,
                parsed.port > 0,
                !String(authority).hasPrefix(":")
            else { return nil }
            return UpstreamTarget(host: parsed.host, port: parsed.port, usesTLS: tls)
        }
        var host = String(authority)
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        // No bracket may be left: `http://[::1]]` gave host `::1]`, printed as `[::1]]:80`, which
        // does not parse (found by fuzzing).
        guard !host.isEmpty, !host.contains("["), !host.contains("]") else { return nil }
        return UpstreamTarget(host: host, port: defaultPort, usesTLS: tls)
    }
}

/// Everything ReadyGate is tuned with. Plain values with defaults; read from a configuration
/// source by ``init(reader:)`` (see `ReadyGateSettings+ConfigReader.swift` for every key).
public struct ReadyGateSettings: Sendable, Equatable {
    public var environment: DeploymentEnvironment = .development
    /// The variable the environment came from; nil when it was the fallback.
    public var environmentSource: String?
    public var listen = HostAndPort(host: "0.0.0.0", port: 8080)
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`); nil when turned off.
    public var adminListen: HostAndPort? = HostAndPort(host: "127.0.0.1", port: 9901)
    public var upstream = UpstreamTarget(host: "127.0.0.1", port: 8000, usesTLS: false)
    public var acceptMode: AcceptMode = .immediate
    public var readyGate: ReadyGateMode = .ping
    /// The text a backend's ready frame must contain (message gate).
    public var readyMessage = #""type":"connection_ready""#
    public var readyTimeoutAction: ReadyTimeoutAction = .close
    /// Whether the delay gate's delay adapts to the backend (``AdaptiveGateDelay``); false pins the
    /// profile's base delay (`READYGATE_ADAPTIVE`).
    public var adaptiveDelay = true
    /// Transparent replay (`READYGATE_REPLAY`): a backend that fails the session right after READY,
    /// before any of its data reached the client, is replaced by a new backend session that gets
    /// the client's frames again.
    public var replay = false
    /// How many times one session may be replayed (`READYGATE_REPLAY_ATTEMPTS`).
    public var replayAttempts = 2
    public var timing: TimingProfile = DeploymentEnvironment.development.profile
    /// Client bytes held per session before the proxy stops reading from the client.
    public var maxBufferBytes = 1 << 20
    /// Client bytes held before READY across all sessions together before every holding session
    /// stops reading from its client (backpressure, like ``maxBufferBytes``); 0 for no global cap.
    public var maxHeldBytesTotal = 64 << 20
    /// Client connections the listener serves at once; past it a connection is answered `503` and
    /// closed. 0 for no limit.
    public var maxConnections = 0
    /// The largest data message accepted from a client before READY (close 1009). After READY the
    /// backend enforces its own limit; the proxy relays without reassembling messages.
    public var maxMessageBytes = 64 << 20
    /// Subprotocols ReadyGate may choose in `immediate` mode; nil when unset.
    public var subprotocols: [String]?
    /// Idle keep-alive connections to the backend kept per event loop for plain HTTP requests;
    /// 0 closes each after its response.
    public var httpPoolIdleMax = 64
    /// How long a plain HTTP request waits for the backend: to connect, and from the end of the
    /// request to the response head (`504` after it).
    public var httpResponseTimeoutMs = 60_000
    /// How long a client connection may stay without a byte of its next request (fresh, or between
    /// keep-alive requests) before it is closed. Longer than a Google Cloud load balancer's 600 s
    /// keep-alive towards its backends, so the balancer is the one that closes idle connections.
    public var httpIdleTimeoutMs = 620_000
    /// How long a request head may take from its first byte to its end (`408` after it).
    public var httpHeaderTimeoutMs = 60_000
    /// On SIGTERM, how long sessions and HTTP responses in flight may run on before the rest are
    /// ended (DESIGN §6; inside Cloud Run's 10 s).
    public var drainTimeoutMs = 8000
    /// How long the proxy waits for a client to answer its close frame before closing the TCP
    /// connection; nil means the handshake timeout, at most 1 s (see ``closeLinger``).
    public var closeLingerMs: Int?
    /// A spliced WebSocket session with no bytes either way (the proxy's keepalive traffic aside)
    /// for this long is closed with `1001` (`READYGATE_WS_IDLE_TIMEOUT_MS`); 0: never.
    public var wsIdleTimeoutMs = 0
    /// Keepalive: the proxy pings both sides of a spliced session this often, and closes a side
    /// that misses two pongs (`READYGATE_PING_INTERVAL_MS`); 0: off.
    public var pingIntervalMs = 0
    /// Event loops; nil means one per core.
    public var threads: Int?
    public var logFormat: LogFormat = .json
    public var logLevel = "info"
    /// The listener's certificate chain and key (`READYGATE_TLS_CERT`, `READYGATE_TLS_KEY`); nil:
    /// the listener speaks plaintext.
    public var tls: TLSFiles?
    /// The PEM file of the trust roots for a TLS upstream (`READYGATE_UPSTREAM_CA`); nil: the
    /// system trust store.
    public var upstreamCAPath: String?
    /// HTTP/2: streams (plain requests and RFC 8441 WebSockets) one client connection may have
    /// open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    public var http2MaxStreams = 256

    public init() {}

    /// The wait for a client's close frame after the proxy's own, in milliseconds.
    public var closeLinger: Int { closeLingerMs ?? min(timing.handshakeTimeoutMs, 1000) }
}
