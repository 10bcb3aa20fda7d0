import ArgumentParser
import Logging
import NIOCore
import NIOPosix
import ReadyGateCore
import ReadyGateProxy
import ServiceLifecycle

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `readygate serve`: run the proxy until SIGTERM or SIGINT.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the proxy (the default command)."
    )

    @OptionGroup var options: SettingsOptions

    func run() async throws {
        let settings = try loadOrExit(options)
        let logger = bootstrapLogging(settings)
        for name in ReadyGateConfigKey.unknownVariables(in: ProcessInfo.processInfo.environment.keys) {
            logger.warning("unknown_variable", metadata: ["variable": "\(name)", "note": "ignored"])
        }
        var environment = ProxyEnvironment(settings: settings, logger: logger)
        do {
            try environment.loadTLS()
        } catch {
            logger.critical("tls_config_failed", metadata: ["variable": "\(error.variable)", "error": "\(error)"])
            printError("readygate: \(error)")
            throw ExitCode(2)
        }
        let threads = settings.threads ?? System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let service = ProxyService(environment: environment, group: group, threads: threads)
        // SIGHUP is taken only with a TLS listener; without one it keeps its default action.
        let reloadServices: [ServiceGroupConfiguration.ServiceConfiguration] =
            environment.serverTLS == nil ? [] : [.init(service: TLSReloadService(environment: environment))]
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)] + reloadServices,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await serviceGroup.run()
        try await group.shutdownGracefully()
    }
}

/// The proxy as a swift-service-lifecycle service: listens until graceful shutdown, then stops accepting.
struct ProxyService: Service {
    let environment: ProxyEnvironment
    let group: MultiThreadedEventLoopGroup
    let threads: Int

    func run() async throws {
        let settings = environment.settings
        let server: ReadyGateServer
        do {
            server = try await ReadyGateServer.start(environment: environment, group: group)
        } catch {
            environment.logger.critical(
                "listen_failed",
                metadata: ["address": "\(settings.listen)", "error": "\(error)"]
            )
            printError("readygate: cannot listen on \(settings.listen): \(error)")
            throw ExitCode(1)
        }
        var admin: AdminServer?
        var adminAddress = "off"
        if let address = settings.adminListen {
            do {
                let started = try await AdminServer.start(address: address, environment: environment, group: group)
                admin = started
                adminAddress = "\(HostAndPort(host: address.host, port: started.port))"
            } catch {
                environment.logger.critical(
                    "admin_listen_failed",
                    metadata: ["address": "\(address)", "error": "\(error)"]
                )
                printError("readygate: cannot listen on \(address) (READYGATE_ADMIN_LISTEN): \(error)")
                try? await server.close()
                throw ExitCode(1)
            }
        }
        environment.logger.info(
            "listening",
            metadata: [
                "address": "\(HostAndPort(host: settings.listen.host, port: server.port))",
                "upstream": "\(settings.upstream)",
                "environment": "\(settings.environment)",
                "accept_mode": "\(settings.acceptMode.rawValue)",
                "ready_gate": "\(settings.readyGate.rawValue)",
                "base_delay_ms": "\(settings.timing.baseDelayMs)",
                "handshake_timeout_ms": "\(settings.timing.handshakeTimeoutMs)",
                "threads": "\(threads)",
                "admin": "\(adminAddress)",
                "tls": "\(environment.serverTLS == nil ? "off" : "on")",
            ]
        )
        try? await gracefulShutdown()
        environment.beginDraining()
        environment.logger.info(
            "shutting_down",
            metadata: [
                "reason": "signal", "sessions": "\(environment.sessions.count)",
                "http_connections": "\(environment.httpConnections.count)",
                "drain_timeout_ms": "\(settings.drainTimeoutMs)",
            ]
        )
        // After the drain, the sessions' close handshakes get their linger and a little more.
        try await server.shutdown(
            drain: .milliseconds(settings.drainTimeoutMs),
            grace: .milliseconds(settings.closeLinger + 250)
        )
        try? await admin?.close()
    }
}

/// Loads settings, or prints the error and exits 2: bad configuration never starts the proxy.
func loadOrExit(_ options: SettingsOptions) throws -> ReadyGateSettings {
    do {
        return try options.load()
    } catch {
        printError("readygate: \(error)")
        throw ExitCode(2)
    }
}

func bootstrapLogging(_ settings: ReadyGateSettings) -> Logger {
    let level = Logger.Level(rawValue: settings.logLevel) ?? .info
    LoggingSystem.bootstrap { label in
        StructuredLogHandler(label: label, format: settings.logFormat, level: level)
    }
    return Logger(label: "readygate")
}

func printError(_ text: String) {
    var standardError = StandardError()
    print(text, to: &standardError)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var text = string
        text.withUTF8 { bytes in _ = fwriteShim(bytes) }
    }
}
