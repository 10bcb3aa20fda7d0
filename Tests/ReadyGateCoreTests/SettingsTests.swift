import Configuration
import Testing

@testable import ReadyGateCore

/// Reads settings from a fake environment only.
private func readSettings(_ environment: [String: String]) throws(SettingsError) -> ReadyGateSettings {
    try ReadyGateSettings(
        reader: ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: environment))
    )
}

/// The error reading `environment` throws, or nil when it reads.
private func settingsError(_ environment: [String: String]) -> SettingsError? {
    do {
        _ = try readSettings(environment)
        return nil
    } catch {
        return error
    }
}

/// One bad value and the error it must produce.
struct SettingsErrorCase: Sendable, CustomTestStringConvertible {
    var environment: [String: String]
    var variable: String
    var value: String

    init(_ variable: String, _ value: String, also extra: [String: String] = [:]) {
        self.environment = extra.merging([variable: value]) { _, new in new }
        self.variable = variable
        self.value = value
    }

    var testDescription: String { "\(variable)=\(value)" }
}

@Suite("ReadyGateSettings from the environment")
struct SettingsTests {
    // MARK: Defaults

    @Test("READYGATE_ADMIN_LISTEN=off turns the admin listener off, in any case")
    func adminOff() throws {
        #expect(try readSettings(["READYGATE_ADMIN_LISTEN": "off"]).adminListen == nil)
        #expect(try readSettings(["READYGATE_ADMIN_LISTEN": " OFF "]).adminListen == nil)
        let shown = try readSettings(["READYGATE_ADMIN_LISTEN": "off"]).effectiveValues
        #expect(shown.contains { $0 == ("READYGATE_ADMIN_LISTEN", "off") })
    }

    @Test("replay, the idle timeout and keepalive read their values; 0 turns the last two off")
    func replayIdleKeepalive() throws {
        let on = try readSettings([
            "READYGATE_REPLAY": "yes", "READYGATE_REPLAY_ATTEMPTS": "5", "READYGATE_WS_IDLE_TIMEOUT_MS": "60000",
            "READYGATE_PING_INTERVAL_MS": "100",
        ])
        #expect(on.replay && on.replayAttempts == 5 && on.wsIdleTimeoutMs == 60000 && on.pingIntervalMs == 100)
        let off = try readSettings(["READYGATE_WS_IDLE_TIMEOUT_MS": "0", "READYGATE_PING_INTERVAL_MS": "0"])
        #expect(off.wsIdleTimeoutMs == 0 && off.pingIntervalMs == 0)
    }

    /// Found by FuzzSettings (`Tests/Fuzz`, invariant: addresses print to text that parses back):
    /// `http://[[a]:8080` was accepted with host `[a`, printed as `http://[a:8080`.
    @Test("a bracketed host holding a bracket is refused", arguments: ["[[a]:8080", "[a[b]:1"])
    func bracketInBracketedHost(text: String) {
        #expect(HostAndPort.parse(text) == nil)
        #expect(UpstreamTarget.parse("http://" + text) == nil)
        #expect(HostAndPort.parse("[::1]:8080") == HostAndPort(host: "::1", port: 8080))
    }

    /// Found by FuzzSettings (`Tests/Fuzz`): `http://[::1]]` was accepted with host `::1]`,
    /// printed as `http://[::1]]:80`, which does not parse.
    @Test("an upstream host with a stray bracket is refused")
    func strayBracketInUpstream() {
        #expect(UpstreamTarget.parse("http://[::1]]") == nil)
        #expect(UpstreamTarget.parse("http://a]") == nil)
        #expect(UpstreamTarget.parse("http://[::1]") == UpstreamTarget(host: "::1", port: 80, usesTLS: false))
    }

    @Test("an empty environment gives the documented defaults")
    func defaults() throws {
        let settings = try readSettings([:])
        #expect(settings.environment == .development)
        #expect(settings.environmentSource == nil)
        #expect(settings.timing == DeploymentEnvironment.development.profile)
        #expect(settings.listen == HostAndPort(host: "0.0.0.0", port: 8080))
        #expect(settings.adminListen == HostAndPort(host: "127.0.0.1", port: 9901))
        #expect(settings.upstream == UpstreamTarget(host: "127.0.0.1", port: 8000, usesTLS: false))
        #expect(settings.acceptMode == .immediate)
        #expect(settings.readyGate == .ping)
        #expect(!settings.replay)
        #expect(settings.replayAttempts == 2)
        #expect(settings.wsIdleTimeoutMs == 0)
        #expect(settings.pingIntervalMs == 0)
        #expect(settings.readyMessage == #""type":"connection_ready""#)
        #expect(settings.readyTimeoutAction == .close)
        #expect(settings.adaptiveDelay)
        #expect(settings.maxBufferBytes == 1 << 20)
        #expect(settings.maxMessageBytes == 64 << 20)
        #expect(settings.maxHeldBytesTotal == 64 << 20)
        #expect(settings.maxConnections == 0, "no limit")
        #expect(settings.subprotocols == nil)
        #expect(settings.threads == nil)
        #expect(settings.httpPoolIdleMax == 64)
        #expect(settings.httpResponseTimeoutMs == 60_000)
        #expect(settings.closeLingerMs == nil)
        #expect(settings.drainTimeoutMs == 8000)
        #expect(settings.httpIdleTimeoutMs == 620_000)
        #expect(settings.httpHeaderTimeoutMs == 60_000)
        #expect(settings.closeLinger == 200, "development's handshake timeout")
        #expect(try readSettings(["READYGATE_ENV": "production"]).closeLinger == 1000)
        let slowHandshake = ["READYGATE_ENV": "production", "READYGATE_HANDSHAKE_TIMEOUT_MS": "5000"]
        #expect(try readSettings(slowHandshake).closeLinger == 1000)
        #expect(settings.logFormat == .json)
        #expect(settings.logLevel == "info")
        #expect(settings == ReadyGateSettings())
    }

    @Test("empty and blank values count as unset")
    func blankValuesAreUnset() throws {
        let settings = try readSettings([
            "READYGATE_LISTEN": "", "PORT": "  ", "READYGATE_UPSTREAM": "", "READYGATE_ACCEPT_MODE": " ",
            "READYGATE_BASE_DELAY_MS": "", "READYGATE_SUBPROTOCOLS": "", "READYGATE_THREADS": "",
            "READYGATE_LOG_LEVEL": "", "READYGATE_ENV": "", "READYGATE_READY_MESSAGE": "",
        ])
        #expect(settings == ReadyGateSettings())
    }

    @Test("effective values list every setting with its source")
    func effectiveValues() throws {
        let values = try readSettings(["READYGATE_ENV": "staging"]).effectiveValues
        let byName = Dictionary(values.map { ($0.variable, $0.value) }, uniquingKeysWith: { first, _ in first })
        #expect(values.count == byName.count)
        #expect(byName["READYGATE_ENV"] == "staging (from READYGATE_ENV)")
        #expect(byName["READYGATE_BASE_DELAY_MS"] == "25")
        #expect(byName["READYGATE_HANDSHAKE_TIMEOUT_MS"] == "500")
        #expect(byName["READYGATE_SUBPROTOCOLS"] == "(unset)")
        #expect(byName["READYGATE_UPSTREAM"] == "http://127.0.0.1:8000")
        #expect(try readSettings([:]).effectiveValues.first?.value == "development (default)")
    }

    // MARK: Overrides

    @Test("every setting can be overridden")
    func overrides() throws {
        let settings = try readSettings([
            "READYGATE_ENV": "testing",
            "READYGATE_LISTEN": "127.0.0.1:9000",
            "READYGATE_ADMIN_LISTEN": "[::1]:9902",
            "READYGATE_UPSTREAM": "wss://backend.internal:8443",
            "READYGATE_ACCEPT_MODE": "upstream",
            "READYGATE_READY_GATE": "message",
            "READYGATE_READY_MESSAGE": "READY",
            "READYGATE_READY_TIMEOUT_ACTION": "open",
            "READYGATE_BASE_DELAY_MS": "0",
            "READYGATE_HANDSHAKE_TIMEOUT_MS": "600000",
            "READYGATE_RETRY_CAP_MS": "60000",
            "READYGATE_MAX_BUFFER_BYTES": "1024",
            "READYGATE_MAX_MESSAGE_BYTES": "4294967296",
            "READYGATE_MAX_HELD_BYTES_TOTAL": "0",
            "READYGATE_MAX_CONNECTIONS": "1048576",
            "READYGATE_SUBPROTOCOLS": "chat, superchat ,v2.json",
            "READYGATE_THREADS": "4",
            "READYGATE_HTTP_POOL_IDLE_MAX": "0",
            "READYGATE_HTTP_RESPONSE_TIMEOUT_MS": "2500",
            "READYGATE_CLOSE_LINGER_MS": "0",
            "READYGATE_DRAIN_TIMEOUT_MS": "0",
            "READYGATE_HTTP_IDLE_TIMEOUT_MS": "3600000",
            "READYGATE_HTTP_HEADER_TIMEOUT_MS": "1",
            "READYGATE_LOG_FORMAT": "text",
            "READYGATE_LOG_LEVEL": "debug",
        ])
        #expect(settings.environment == .testing)
        #expect(settings.environmentSource == "READYGATE_ENV")
        #expect(settings.listen == HostAndPort(host: "127.0.0.1", port: 9000))
        #expect(settings.adminListen == HostAndPort(host: "::1", port: 9902))
        #expect(settings.upstream == UpstreamTarget(host: "backend.internal", port: 8443, usesTLS: true))
        #expect(settings.acceptMode == .upstream)
        #expect(settings.readyGate == .message)
        #expect(settings.readyMessage == "READY")
        #expect(settings.readyTimeoutAction == .open)
        #expect(settings.timing == TimingProfile(baseDelayMs: 0, handshakeTimeoutMs: 600_000, retryCapMs: 60_000))
        #expect(settings.maxBufferBytes == 1024)
        #expect(settings.maxMessageBytes == 1 << 32)
        #expect(settings.maxHeldBytesTotal == 0)
        #expect(settings.maxConnections == 1 << 20)
        #expect(settings.subprotocols == ["chat", "superchat", "v2.json"])
        #expect(settings.threads == 4)
        #expect(settings.httpPoolIdleMax == 0)
        #expect(settings.httpResponseTimeoutMs == 2500)
        #expect(settings.closeLingerMs == 0)
        #expect(settings.drainTimeoutMs == 0)
        #expect(settings.httpIdleTimeoutMs == 3_600_000)
        #expect(settings.httpHeaderTimeoutMs == 1)
        #expect(settings.closeLinger == 0)
        #expect(settings.logFormat == .text)
        #expect(settings.logLevel == "debug")
    }

    @Test("a single timing override keeps the environment's other values")
    func singleTimingOverride() throws {
        let settings = try readSettings(["READYGATE_ENV": "production", "READYGATE_BASE_DELAY_MS": "40"])
        #expect(settings.timing == TimingProfile(baseDelayMs: 40, handshakeTimeoutMs: 1000, retryCapMs: 200))
        let capOnly = try readSettings(["ENVIRONMENT": "staging", "READYGATE_RETRY_CAP_MS": "7"])
        #expect(capOnly.timing == TimingProfile(baseDelayMs: 25, handshakeTimeoutMs: 500, retryCapMs: 7))
        let timeoutOnly = try readSettings(["READYGATE_HANDSHAKE_TIMEOUT_MS": "1"])
        #expect(timeoutOnly.timing == TimingProfile(baseDelayMs: 10, handshakeTimeoutMs: 1, retryCapMs: 50))
    }

    @Test("the environment's profile becomes the timing", arguments: DeploymentEnvironment.allCases)
    func environmentProfile(_ environment: DeploymentEnvironment) throws {
        let settings = try readSettings(["READYGATE_ENV": environment.rawValue])
        #expect(settings.environment == environment)
        #expect(settings.timing == environment.profile)
    }

    @Test("enum values are case-insensitive and trimmed")
    func caseInsensitiveChoices() throws {
        let settings = try readSettings([
            "READYGATE_ENV": "Staging", "READYGATE_ACCEPT_MODE": " UPSTREAM ", "READYGATE_READY_GATE": "Message",
            "READYGATE_READY_TIMEOUT_ACTION": "OPEN", "READYGATE_LOG_FORMAT": "Text", "READYGATE_LOG_LEVEL": "WARNING",
        ])
        #expect(settings.environment == .staging)
        #expect(settings.acceptMode == .upstream)
        #expect(settings.readyGate == .message)
        #expect(settings.readyTimeoutAction == .open)
        #expect(settings.logFormat == .text)
        #expect(settings.logLevel == "warning")
    }

    @Test("every log level is accepted", arguments: readyGateLogLevels)
    func logLevels(_ level: String) throws {
        #expect(try readSettings(["READYGATE_LOG_LEVEL": level]).logLevel == level)
    }

    // MARK: Environment detection

    @Test("environment detection order through the reader")
    func environmentDetection() throws {
        let both = try readSettings(["READYGATE_ENV": "testing", "ENVIRONMENT": "staging", "K_SERVICE": "svc"])
        #expect(both.environment == .testing)
        #expect(both.environmentSource == "READYGATE_ENV")

        let fallback = try readSettings(["ENVIRONMENT": "staging", "K_SERVICE": "svc"])
        #expect(fallback.environment == .staging)
        #expect(fallback.environmentSource == "ENVIRONMENT")

        let cloudRun = try readSettings(["K_SERVICE": "my-service"])
        #expect(cloudRun.environment == .production)
        #expect(cloudRun.environmentSource == "K_SERVICE")
        #expect(cloudRun.timing == DeploymentEnvironment.production.profile)

        let kubernetes = try readSettings(["KUBERNETES_SERVICE_HOST": "10.0.0.1"])
        #expect(kubernetes.environment == .production)
        #expect(kubernetes.environmentSource == "KUBERNETES_SERVICE_HOST")

        let blankPlatform = try readSettings(["K_SERVICE": " ", "KUBERNETES_SERVICE_HOST": ""])
        #expect(blankPlatform.environment == .development)
        #expect(blankPlatform.environmentSource == nil)
    }

    // MARK: Listener

    @Test("PORT sets the port on all interfaces")
    func portOnly() throws {
        #expect(try readSettings(["PORT": "9090"]).listen == HostAndPort(host: "0.0.0.0", port: 9090))
    }

    @Test("READYGATE_LISTEN wins over PORT, even a bad PORT")
    func listenWinsOverPort() throws {
        let settings = try readSettings(["READYGATE_LISTEN": "127.0.0.1:7000", "PORT": "9090"])
        #expect(settings.listen == HostAndPort(host: "127.0.0.1", port: 7000))
        let badPort = try readSettings(["READYGATE_LISTEN": "127.0.0.1:7000", "PORT": "not-a-port"])
        #expect(badPort.listen == HostAndPort(host: "127.0.0.1", port: 7000))
    }

    @Test(
        "listen address forms",
        arguments: [
            ("0.0.0.0:8081", HostAndPort(host: "0.0.0.0", port: 8081)),
            (":9000", HostAndPort(host: "0.0.0.0", port: 9000)),
            ("[::1]:9001", HostAndPort(host: "::1", port: 9001)),
            ("[::]:9002", HostAndPort(host: "::", port: 9002)),
            ("localhost:9003", HostAndPort(host: "localhost", port: 9003)),
        ]
    )
    func listenForms(_ text: String, _ expected: HostAndPort) throws {
        #expect(try readSettings(["READYGATE_LISTEN": text]).listen == expected)
    }

    @Test("listen descriptions bracket IPv6 hosts")
    func listenDescription() {
        #expect(HostAndPort(host: "::1", port: 80).description == "[::1]:80")
        #expect(HostAndPort(host: "127.0.0.1", port: 80).description == "127.0.0.1:80")
    }

    // MARK: Upstream

    @Test(
        "upstream URL forms",
        arguments: [
            ("http://127.0.0.1:8000", UpstreamTarget(host: "127.0.0.1", port: 8000, usesTLS: false)),
            ("ws://backend:9000", UpstreamTarget(host: "backend", port: 9000, usesTLS: false)),
            ("https://backend:8443", UpstreamTarget(host: "backend", port: 8443, usesTLS: true)),
            ("wss://backend", UpstreamTarget(host: "backend", port: 443, usesTLS: true)),
            ("http://backend", UpstreamTarget(host: "backend", port: 80, usesTLS: false)),
            ("ws://backend/", UpstreamTarget(host: "backend", port: 80, usesTLS: false)),
            ("HTTP://Backend:81", UpstreamTarget(host: "Backend", port: 81, usesTLS: false)),
            ("http://[::1]:8000", UpstreamTarget(host: "::1", port: 8000, usesTLS: false)),
            ("https://[2001:db8::1]", UpstreamTarget(host: "2001:db8::1", port: 443, usesTLS: true)),
        ]
    )
    func upstreamForms(_ text: String, _ expected: UpstreamTarget) throws {
        #expect(try readSettings(["READYGATE_UPSTREAM": text]).upstream == expected)
    }

    @Test("upstream descriptions use http/https")
    func upstreamDescription() {
        #expect(UpstreamTarget(host: "::1", port: 8000, usesTLS: false).description == "http://[::1]:8000")
        #expect(UpstreamTarget(host: "b", port: 443, usesTLS: true).description == "https://b:443")
    }

    // MARK: Errors

    static let errorCases: [SettingsErrorCase] = [
        // Environment.
        SettingsErrorCase("READYGATE_ENV", "prod"),
        SettingsErrorCase("ENVIRONMENT", "qa"),
        SettingsErrorCase("READYGATE_ENV", "nope", also: ["ENVIRONMENT": "staging"]),
        SettingsErrorCase("READYGATE_ADAPTIVE", "maybe"),
        SettingsErrorCase("READYGATE_REPLAY", "sometimes"),
        SettingsErrorCase("READYGATE_REPLAY_ATTEMPTS", "0"),
        SettingsErrorCase("READYGATE_REPLAY_ATTEMPTS", "11"),
        SettingsErrorCase("READYGATE_WS_IDLE_TIMEOUT_MS", "50"),
        SettingsErrorCase("READYGATE_WS_IDLE_TIMEOUT_MS", "-1"),
        SettingsErrorCase("READYGATE_PING_INTERVAL_MS", "99"),
        SettingsErrorCase("READYGATE_PING_INTERVAL_MS", "often"),
        // Listener.
        SettingsErrorCase("READYGATE_LISTEN", "nonsense"),
        SettingsErrorCase("READYGATE_ADMIN_LISTEN", "9901"),
        SettingsErrorCase("READYGATE_LISTEN", "8080"),
        SettingsErrorCase("READYGATE_LISTEN", "host:99999"),
        SettingsErrorCase("READYGATE_LISTEN", "host:-1"),
        SettingsErrorCase("READYGATE_LISTEN", "host:port"),
        SettingsErrorCase("READYGATE_LISTEN", "::1:8080"),
        SettingsErrorCase("READYGATE_LISTEN", "[::1]8080"),
        SettingsErrorCase("READYGATE_LISTEN", "[::1:8080"),
        SettingsErrorCase("PORT", "http"),
        SettingsErrorCase("PORT", "0"),
        SettingsErrorCase("PORT", "65536"),
        // Upstream.
        SettingsErrorCase("READYGATE_UPSTREAM", "ftp://x"),
        SettingsErrorCase("READYGATE_UPSTREAM", "backend:8000"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://host/path"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://host:80/ws"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://:80"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http:///"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://user@host:80"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://host?x=1"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://host:"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://host:0"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://host:70000"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://host:http"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://::1:80"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://[::1"),
        SettingsErrorCase("READYGATE_UPSTREAM", "http://[]"),
        // Choices.
        SettingsErrorCase("READYGATE_ACCEPT_MODE", "sometimes"),
        SettingsErrorCase("READYGATE_READY_GATE", "magic"),
        SettingsErrorCase("READYGATE_READY_TIMEOUT_ACTION", "retry"),
        SettingsErrorCase("READYGATE_LOG_FORMAT", "xml"),
        SettingsErrorCase("READYGATE_LOG_LEVEL", "verbose"),
        // Integers.
        SettingsErrorCase("READYGATE_BASE_DELAY_MS", "abc"),
        SettingsErrorCase("READYGATE_BASE_DELAY_MS", "1.5"),
        SettingsErrorCase("READYGATE_BASE_DELAY_MS", "-1"),
        SettingsErrorCase("READYGATE_BASE_DELAY_MS", "60001"),
        SettingsErrorCase("READYGATE_HANDSHAKE_TIMEOUT_MS", "0"),
        SettingsErrorCase("READYGATE_HANDSHAKE_TIMEOUT_MS", "600001"),
        SettingsErrorCase("READYGATE_HANDSHAKE_TIMEOUT_MS", "1s"),
        SettingsErrorCase("READYGATE_RETRY_CAP_MS", "0"),
        SettingsErrorCase("READYGATE_RETRY_CAP_MS", "60001"),
        SettingsErrorCase("READYGATE_MAX_BUFFER_BYTES", "1023"),
        SettingsErrorCase("READYGATE_MAX_BUFFER_BYTES", "1073741825"),
        SettingsErrorCase("READYGATE_MAX_BUFFER_BYTES", "1MiB"),
        SettingsErrorCase("READYGATE_MAX_MESSAGE_BYTES", "124"),
        SettingsErrorCase("READYGATE_MAX_MESSAGE_BYTES", "4294967297"),
        SettingsErrorCase("READYGATE_MAX_MESSAGE_BYTES", "99999999999999999999999"),
        SettingsErrorCase("READYGATE_MAX_HELD_BYTES_TOTAL", "-1"),
        SettingsErrorCase("READYGATE_MAX_HELD_BYTES_TOTAL", "1099511627777"),
        SettingsErrorCase("READYGATE_MAX_HELD_BYTES_TOTAL", "64MiB"),
        SettingsErrorCase("READYGATE_MAX_CONNECTIONS", "-1"),
        SettingsErrorCase("READYGATE_MAX_CONNECTIONS", "1048577"),
        SettingsErrorCase("READYGATE_MAX_CONNECTIONS", "unlimited"),
        SettingsErrorCase("READYGATE_MAX_CONNECTIONS", "10.5"),
        SettingsErrorCase("READYGATE_THREADS", "257"),
        SettingsErrorCase("READYGATE_THREADS", "many"),
        SettingsErrorCase("READYGATE_HTTP_POOL_IDLE_MAX", "-1"),
        SettingsErrorCase("READYGATE_HTTP_POOL_IDLE_MAX", "65537"),
        SettingsErrorCase("READYGATE_HTTP_RESPONSE_TIMEOUT_MS", "0"),
        SettingsErrorCase("READYGATE_HTTP_RESPONSE_TIMEOUT_MS", "3600001"),
        SettingsErrorCase("READYGATE_CLOSE_LINGER_MS", "-1"),
        SettingsErrorCase("READYGATE_DRAIN_TIMEOUT_MS", "600001"),
        SettingsErrorCase("READYGATE_HTTP_IDLE_TIMEOUT_MS", "0"),
        SettingsErrorCase("READYGATE_HTTP_HEADER_TIMEOUT_MS", "3600001"),
        SettingsErrorCase("READYGATE_CLOSE_LINGER_MS", "60001"),
        // Subprotocols.
        SettingsErrorCase("READYGATE_SUBPROTOCOLS", ","),
        SettingsErrorCase("READYGATE_SUBPROTOCOLS", " , , "),
        SettingsErrorCase("READYGATE_SUBPROTOCOLS", "chat, bad proto"),
        SettingsErrorCase("READYGATE_SUBPROTOCOLS", "chat;v=1"),
        SettingsErrorCase("READYGATE_SUBPROTOCOLS", "a/b"),
        SettingsErrorCase("READYGATE_SUBPROTOCOLS", "chät"),
    ]

    @Test("bad values throw an error naming the variable, the value and what is allowed", arguments: errorCases)
    func badValue(_ errorCase: SettingsErrorCase) throws {
        let error = try #require(settingsError(errorCase.environment))
        #expect(error.variable == errorCase.variable)
        #expect(error.value == errorCase.value.trimmingCharactersForTest())
        #expect(!error.allowed.isEmpty)
        #expect(error.description.contains(errorCase.variable))
    }

    @Test("an empty bracketed upstream host is rejected")
    func emptyBracketedUpstreamHost() throws {
        // `HostAndPort.parse` turns an empty host into 0.0.0.0 (right for a listener, wrong for a
        // connect target); `UpstreamTarget.parse` only rejects the empty host when written `:port`.
        let error = try #require(settingsError(["READYGATE_UPSTREAM": "http://[]:80"]))
        #expect(error.variable == "READYGATE_UPSTREAM")
    }

    @Test("READYGATE_MAX_CONNECTIONS: a limit, 0 or unset for none; a bad value names variable, value and range")
    func maxConnections() throws {
        #expect(try readSettings(["READYGATE_MAX_CONNECTIONS": " 250 "]).maxConnections == 250)
        #expect(try readSettings(["READYGATE_MAX_CONNECTIONS": "0"]).maxConnections == 0)
        #expect(try readSettings(["READYGATE_MAX_CONNECTIONS": ""]).maxConnections == 0)
        let shown = try readSettings([:]).effectiveValues
        #expect(shown.contains { $0 == ("READYGATE_MAX_CONNECTIONS", "0 (no limit)") })
        let error = try #require(settingsError(["READYGATE_MAX_CONNECTIONS": "lots"]))
        #expect(
            error.description == #"invalid READYGATE_MAX_CONNECTIONS="lots": expected an integer from 0 to 1048576"#
        )
    }

    @Test("READYGATE_MAX_HELD_BYTES_TOTAL: 64 MiB unless set, 0 for no cap")
    func maxHeldBytesTotal() throws {
        #expect(try readSettings(["READYGATE_MAX_HELD_BYTES_TOTAL": "1048576"]).maxHeldBytesTotal == 1 << 20)
        let shown = try readSettings(["READYGATE_MAX_HELD_BYTES_TOTAL": "0"]).effectiveValues
        #expect(shown.contains { $0 == ("READYGATE_MAX_HELD_BYTES_TOTAL", "0 (no cap)") })
        let error = try #require(settingsError(["READYGATE_MAX_HELD_BYTES_TOTAL": "-5"]))
        #expect(error.variable == "READYGATE_MAX_HELD_BYTES_TOTAL" && error.value == "-5")
        #expect(error.allowed == "an integer from 0 to 1099511627776")
    }

    @Test("error messages say what is allowed")
    func errorDescriptions() throws {
        let range = try #require(settingsError(["READYGATE_THREADS": "0"]))
        #expect(range.allowed == "an integer from 1 to 256")
        #expect(range.description == #"invalid READYGATE_THREADS="0": expected an integer from 1 to 256"#)
        let choice = try #require(settingsError(["READYGATE_ACCEPT_MODE": "x"]))
        #expect(choice.allowed.contains("immediate") && choice.allowed.contains("upstream"))
        let environment = try #require(settingsError(["READYGATE_ENV": "x"]))
        for name in DeploymentEnvironment.allCases.map(\.rawValue) {
            #expect(environment.allowed.contains(name))
        }
        let level = try #require(settingsError(["READYGATE_LOG_LEVEL": "loud"]))
        #expect(level.allowed.contains("critical"))
    }

    // MARK: Flags in front of the environment

    private static func flagProvider(_ values: [ReadyGateConfigKey: String]) -> InMemoryProvider {
        InMemoryProvider(
            values: Dictionary(
                uniqueKeysWithValues: values.map {
                    ($0.key.absoluteKey, ConfigValue(.string($0.value), isSecret: false))
                }
            )
        )
    }

    private static func readWithFlags(
        _ values: [ReadyGateConfigKey: String],
        environment: [String: String]
    ) throws(SettingsError) -> ReadyGateSettings {
        let reader = ConfigReader(providers: [
            flagProvider(values), EnvironmentVariablesProvider(environmentVariables: environment),
        ])
        return try ReadyGateSettings(reader: reader)
    }

    @Test("a flag provider placed first wins over the environment")
    func flagsWin() throws {
        let settings = try Self.readWithFlags(
            [
                .acceptMode: "upstream", .listen: "127.0.0.1:7001", .env: "staging", .baseDelayMs: "3",
                .upstream: "ws://flagged:1234",
            ],
            environment: [
                "READYGATE_ACCEPT_MODE": "immediate", "PORT": "9090", "READYGATE_ENV": "testing",
                "READYGATE_BASE_DELAY_MS": "5", "READYGATE_UPSTREAM": "http://env:1", "READYGATE_LOG_LEVEL": "error",
            ]
        )
        #expect(settings.acceptMode == .upstream)
        #expect(settings.listen == HostAndPort(host: "127.0.0.1", port: 7001))
        #expect(settings.environment == .staging)
        #expect(settings.timing == TimingProfile(baseDelayMs: 3, handshakeTimeoutMs: 500, retryCapMs: 100))
        #expect(settings.upstream == UpstreamTarget(host: "flagged", port: 1234, usesTLS: false))
        // A key with no flag still comes from the environment.
        #expect(settings.logLevel == "error")
    }

    @Test("a bad flag is reported under the variable's name")
    func badFlag() {
        do {
            _ = try Self.readWithFlags([.threads: "zero"], environment: ["READYGATE_THREADS": "2"])
            Issue.record("expected an error")
        } catch {
            #expect(error.variable == "READYGATE_THREADS")
            #expect(error.value == "zero")
            #expect(!error.allowed.isEmpty)
        }
    }

    @Test("READYGATE_HTTP2_MAX_STREAMS: 256 by default, 1…65536")
    func http2MaxStreams() throws {
        #expect(ReadyGateSettings().http2MaxStreams == 256)
        #expect(try readSettings(["READYGATE_HTTP2_MAX_STREAMS": "1000"]).http2MaxStreams == 1000)
        for bad in ["0", "65537", "many"] {
            #expect(throws: SettingsError.self) { try readSettings(["READYGATE_HTTP2_MAX_STREAMS": bad]) }
        }
    }

    @Test("config keys map to the variable names")
    func configKeys() {
        for key in ReadyGateConfigKey.allCases {
            #expect(key.configKey.components == [key.rawValue.lowercased()])
            #expect(key.absoluteKey.components == [key.rawValue.lowercased()])
        }
    }
}

extension String {
    /// The value as the settings reader sees it: spaces and tabs at both ends removed.
    fileprivate func trimmingCharactersForTest() -> String {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return String(text)
    }

    @Test("unknown READYGATE_ variables are reported, others are not")
    func unknownVariables() {
        let names = ["READYGATE_UPSTREAM", "READYGATE_UPSTRAEM", "PATH", "READYGATE_LOG_LEVEL", "READYGATE_X"]
        #expect(ReadyGateConfigKey.unknownVariables(in: names) == ["READYGATE_UPSTRAEM", "READYGATE_X"])
    }
}

@Suite("READYGATE_ADAPTIVE")
struct AdaptiveSettingTests {
    @Test(
        "true and false in their usual spellings",
        arguments: [("false", false), ("OFF", false), ("0", false), ("true", true), ("yes", true)]
    )
    func spellings(text: String, expected: Bool) throws {
        #expect(try readSettings(["READYGATE_ADAPTIVE": text]).adaptiveDelay == expected)
    }
}

@Suite("READYGATE_TLS_CERT, READYGATE_TLS_KEY, READYGATE_UPSTREAM_CA")
struct TLSSettingsTests {
    @Test("unset: a plaintext listener and the system trust store")
    func unset() throws {
        let settings = try readSettings([:])
        #expect(settings.tls == nil && settings.upstreamCAPath == nil)
        let shown = settings.effectiveValues
        #expect(shown.contains { $0 == ("READYGATE_TLS_CERT", "(unset: plaintext listener)") })
        #expect(shown.contains { $0 == ("READYGATE_UPSTREAM_CA", "(unset: the system trust store)") })
    }

    @Test("both paths are read, spaces around them dropped; the CA path on its own")
    func both() throws {
        let settings = try readSettings([
            "READYGATE_TLS_CERT": " /etc/tls/chain.pem ", "READYGATE_TLS_KEY": "/etc/tls/key.pem",
            "READYGATE_UPSTREAM_CA": "/etc/tls/ca.pem",
        ])
        #expect(settings.tls == TLSFiles(certificatePath: "/etc/tls/chain.pem", keyPath: "/etc/tls/key.pem"))
        #expect(settings.upstreamCAPath == "/etc/tls/ca.pem")
        #expect(settings.effectiveValues.contains { $0 == ("READYGATE_TLS_KEY", "/etc/tls/key.pem") })
    }

    @Test("a certificate without a key names the missing key and the certificate")
    func certificateAlone() {
        let error = settingsError(["READYGATE_TLS_CERT": "/etc/tls/chain.pem"])
        #expect(error?.variable == "READYGATE_TLS_KEY")
        #expect(error?.allowed.contains("READYGATE_TLS_CERT=/etc/tls/chain.pem") == true)
        #expect(error?.allowed.contains("together or not at all") == true)
    }

    @Test("a key without a certificate names the missing certificate; an empty one counts as unset")
    func keyAlone() {
        let error = settingsError(["READYGATE_TLS_KEY": "/etc/tls/key.pem", "READYGATE_TLS_CERT": " "])
        #expect(error?.variable == "READYGATE_TLS_CERT")
        #expect(error?.allowed.contains("READYGATE_TLS_KEY=/etc/tls/key.pem") == true)
    }

    @Test("the variables are known ones")
    func known() {
        let names = ["READYGATE_TLS_CERT", "READYGATE_TLS_KEY", "READYGATE_UPSTREAM_CA"]
        #expect(ReadyGateConfigKey.unknownVariables(in: names).isEmpty)
    }
}
