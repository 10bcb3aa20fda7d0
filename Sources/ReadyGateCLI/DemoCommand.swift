import ArgumentParser

/// `readygate demo`: placeholder until the demo issue lands.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Reproduce the race against an embedded backend and show ReadyGate fixing it."
    )

    func run() async throws {
        throw ValidationError("the demo is not built yet")
    }
}
