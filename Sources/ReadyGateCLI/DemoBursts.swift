import Logging
import NIOCore
import ReadyGateCore
import ReadyGateDemo
import ReadyGateProxy

/// The demo's burst part: a backend whose set-up is longer than the profile's base delay, and
/// bursts of clients that all send at once, through three ReadyGates — the fixed delay as it was,
/// the defaults (ping gate, adaptive delay), and the defaults with replay. The fixed delay loses
/// sessions in every burst; the defaults learn within the first burst; replay loses none.
struct DemoBursts {
    struct Configuration {
        var name: String
        var gate: ReadyGateMode
        var adaptive: Bool
        var replay: Bool
    }

    static let configurations = [
        Configuration(name: "fixed delay", gate: .delay, adaptive: false, replay: false),
        Configuration(name: "defaults", gate: .ping, adaptive: true, replay: false),
        Configuration(name: "defaults + replay", gate: .ping, adaptive: true, replay: true),
    ]

    let clients: Int
    let bursts: Int
    let setupMs: Int
    let environment: DeploymentEnvironment
    let logger: Logger

    /// Runs every configuration and prints the table. Returns why the demo failed, if it did: the
    /// defaults lost sessions in their last burst, or replay lost any.
    func run(group: any EventLoopGroup) async throws -> String? {
        var backendConfiguration = DemoBackendConfiguration()
        backendConfiguration.setupMs = setupMs
        backendConfiguration.sendsReadyMessage = false
        let backend = try await DemoBackend.start(configuration: backendConfiguration, group: group)
        print("")
        print(
            "Bursts: \(bursts) × \(clients) clients at once, backend set-up \(setupMs) ms "
                + "(the \(environment) profile's base delay is \(environment.profile.baseDelayMs) ms)."
        )
        var rows: [(name: String, lost: [Int])] = []
        for configuration in Self.configurations {
            var settings = DemoCommand.proxySettings(environment: environment, backendPort: backend.port)
            settings.readyGate = configuration.gate
            settings.adaptiveDelay = configuration.adaptive
            settings.replay = configuration.replay
            let proxy = try await ReadyGateServer.start(
                environment: ProxyEnvironment(settings: settings, logger: logger),
                group: group
            )
            var lost: [Int] = []
            for number in 1...bursts {
                let name = "\(configuration.name), burst \(number)"
                let run = await DemoRun.run(name: name, clients: clients, port: proxy.port, group: group)
                lost.append(run.sessions - run.ok)
            }
            try await proxy.close()
            rows.append((configuration.name, lost))
        }
        try await backend.close()
        print("")
        print(Self.table(rows, bursts: bursts))
        let defaults = rows[1].lost
        let replay = rows[2].lost
        if replay.contains(where: { $0 > 0 }) { return "replay lost sessions in a burst" }
        if defaults.last != 0 { return "the defaults still lost sessions in the last burst" }
        return nil
    }

    static func table(_ rows: [(name: String, lost: [Int])], bursts: Int) -> String {
        let header = ["sessions lost"] + (1...bursts).map { "burst \($0)" }
        let cells = rows.map { [$0.name] + $0.lost.map(String.init) }
        let widths = header.indices.map { column in ([header] + cells).map { $0[column].count }.max() ?? 0 }
        func line(_ row: [String]) -> String {
            row.enumerated().map { index, cell in
                index == 0 ? cell.padding(widths[index]) : cell.leftPadding(widths[index])
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(header), rule] + cells.map(line)).joined(separator: "\n")
    }
}
