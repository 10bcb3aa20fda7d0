import ArgumentParser

/// The `readygate` executable.
@main
struct ReadyGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "readygate",
        abstract: "A WebSocket readiness proxy: holds a client's first frames until the backend is ready.",
        discussion: """
            Configure with READYGATE_* environment variables (see README.md); a flag wins over its variable.
            """,
        subcommands: [ServeCommand.self, CheckConfigCommand.self, DemoCommand.self, AnalyzeCommand.self],
        defaultSubcommand: ServeCommand.self
    )
}
