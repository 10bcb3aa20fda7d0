import ArgumentParser
import Logging
import NIOCore
import NIOPosix
import ReadyGateCore
import ReadyGateDemo
import ReadyGateProxy

/// `readygate demo`: the incident and its fix on this machine, with nothing else installed.
///
/// An embedded backend accepts WebSocket upgrades at once but needs `--setup-ms` before its handler
/// can take a message (a message sooner kills the session with 1011). Clients that send right after
/// the handshake run against it directly, then through an embedded ReadyGate with each gate. Then
/// bursts (``DemoBursts``): the same clients again and again against a longer set-up, through a
/// fixed delay, the defaults, and the defaults with replay.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Reproduce the readiness race against an embedded backend and show ReadyGate fixing it.",
        discussion: "Exits 0 only when every gated run lost no session."
    )

    @Option(help: "Clients per run; each sends a message right after its handshake.")
    var clients = 200

    @Option(help: "The backend's session set-up time (its race window), in ms.")
    var setupMs = 10

    @Option(help: "Gates to prove: ping, delay, message, both (delay and message) or all.")
    var gate: GateChoice = .all

    @Option(help: "Bursts of --clients per configuration in the burst part (0: skip it).")
    var bursts = 3

    @Option(help: "The backend's set-up time in the burst part, in ms (longer than the base delay).")
    var burstSetupMs = 40

    @Option(help: "ReadyGate's environment profile (its base delay is the delay gate's wait).")
    var env: String = "production"

    @Flag(help: "Show ReadyGate's own log lines (text format).")
    var verbose = false

    enum GateChoice: String, ExpressibleByArgument, CaseIterable {
        case ping
        case delay
        case message
        case both
        case all

        var gates: [ReadyGateMode] {
            switch self {
            case .ping: [.ping]
            case .delay: [.delay]
            case .message: [.message]
            case .both: [.delay, .message]
            case .all: [.ping, .delay, .message]
            }
        }
    }

    func validate() throws {
        guard (1...10_000).contains(clients) else { throw ValidationError("--clients must be from 1 to 10000") }
        guard (0...60_000).contains(setupMs) else { throw ValidationError("--setup-ms must be from 0 to 60000") }
        guard (0...100).contains(bursts) else { throw ValidationError("--bursts must be from 0 to 100") }
        guard (0...60_000).contains(burstSetupMs) else {
            throw ValidationError("--burst-setup-ms must be from 0 to 60000")
        }
        guard DeploymentEnvironment(rawValue: env) != nil else {
            throw ValidationError("--env must be one of testing, development, staging, production")
        }
    }

    func run() async throws {
        let environment = DeploymentEnvironment(rawValue: env)!
        let logger =
            verbose ? bootstrapDemoLogging() : Logger(label: "demo", factory: { _ in SwiftLogNoOpLogHandler() })
        let group = MultiThreadedEventLoopGroup.singleton
        var backendConfiguration = DemoBackendConfiguration()
        backendConfiguration.setupMs = setupMs
        let backend = try await DemoBackend.start(configuration: backendConfiguration, group: group)
        let profile = environment.profile

        print("ReadyGate demo: \(clients) clients send a message right after the WebSocket handshake.")
        print("Backend: 127.0.0.1:\(backend.port), session set-up \(setupMs) ms; a message before that → close 1011.")
        print(
            "ReadyGate: \(environment) profile (gate delay \(profile.baseDelayMs) ms, handshake timeout "
                + "\(profile.handshakeTimeoutMs) ms).\n"
        )

        var results = [await DemoRun.run(name: "direct", clients: clients, port: backend.port, group: group)]
        for gateMode in gate.gates {
            var settings = Self.proxySettings(environment: environment, backendPort: backend.port)
            settings.readyGate = gateMode
            let proxy = try await ReadyGateServer.start(
                environment: ProxyEnvironment(settings: settings, logger: logger),
                group: group
            )
            let name = "readygate, \(gateMode.rawValue) gate"
            results.append(await DemoRun.run(name: name, clients: clients, port: proxy.port, group: group))
            try await proxy.close()
        }
        try await backend.close()

        print("")
        print(DemoReport.table(results))
        let gated = results.dropFirst()
        let lost = gated.filter { $0.ok != $0.sessions }
        var burstFailure: String?
        if bursts > 0 {
            let burstRun = DemoBursts(
                clients: clients,
                bursts: bursts,
                setupMs: burstSetupMs,
                environment: environment,
                logger: logger
            )
            burstFailure = try await burstRun.run(group: group)
        }
        print("")
        if lost.isEmpty {
            let direct = results[0]
            print(
                "Directly, \(direct.sessions - direct.ok) of \(direct.sessions) sessions were lost; "
                    + "through ReadyGate, none."
            )
            if let burstFailure {
                print("FAILED: \(burstFailure)")
                throw ExitCode(1)
            }
        } else {
            print("FAILED: a gated run lost sessions: \(lost.map(\.name).joined(separator: ", ")).")
            if !gate.gates.contains(.message) || setupMs >= profile.baseDelayMs {
                print(
                    "(The delay gate waits \(profile.baseDelayMs) ms: a set-up longer than that needs the message gate.)"
                )
            }
            throw ExitCode(1)
        }
    }

    /// ReadyGate in front of the demo backend, on a free loopback port.
    static func proxySettings(environment: DeploymentEnvironment, backendPort: Int) -> ReadyGateSettings {
        var settings = ReadyGateSettings()
        settings.environment = environment
        settings.timing = environment.profile
        settings.listen = HostAndPort(host: "127.0.0.1", port: 0)
        settings.upstream = UpstreamTarget(host: "127.0.0.1", port: backendPort, usesTLS: false)
        return settings
    }

    private func bootstrapDemoLogging() -> Logger {
        LoggingSystem.bootstrap { label in StructuredLogHandler(label: label, format: .text, level: .info) }
        return Logger(label: "readygate")
    }
}
