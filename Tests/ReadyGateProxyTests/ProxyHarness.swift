import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOWebSocket
import ReadyGateCore
import ReadyGateDemo
import ReadyGateProxy

/// A ReadyGate listener on 127.0.0.1 with a port of its own, in front of `upstreamPort`,
/// collecting every finished session's record.
struct ProxyFixture {
    let server: ReadyGateServer
    let sessions: SessionRecords

    var port: Int { server.port }

    /// `prepare` gets the environment before the listener starts (TLS, for one).
    static func start(
        upstreamPort: Int,
        group: any EventLoopGroup = testGroup,
        _ configure: (inout ReadyGateSettings) -> Void = { _ in },
        prepare: (inout ProxyEnvironment) -> Void = { _ in }
    ) async throws -> ProxyFixture {
        var settings = ReadyGateSettings()
        settings.environment = .testing
        settings.timing = DeploymentEnvironment.testing.profile
        // The testing profile's 100 ms would let a loaded machine turn a slow session into 1013:
        // tests of the handshake timeout set their own.
        settings.timing.handshakeTimeoutMs = 10_000
        settings.listen = HostAndPort(host: "127.0.0.1", port: 0)
        settings.upstream = UpstreamTarget(host: "127.0.0.1", port: upstreamPort, usesTLS: false)
        configure(&settings)
        let sessions = SessionRecords()
        var environment = ProxyEnvironment(
            settings: settings,
            logger: testLogger(label: "readygate-test-\(upstreamPort)"),
            onSessionEnd: { record in sessions.append(record) }
        )
        prepare(&environment)
        let server = try await ReadyGateServer.start(environment: environment, group: group)
        return ProxyFixture(server: server, sessions: sessions)
    }

    func stop() async throws {
        try await server.close()
    }
}

let testGroup = MultiThreadedEventLoopGroup.singleton

/// Silent, unless `READYGATE_TEST_LOG` is set: then every proxy of the tests logs at debug to
/// standard error, labelled with its backend's port (for a test that fails only under load).
func testLogger(label: String) -> Logger {
    guard ProcessInfo.processInfo.environment["READYGATE_TEST_LOG"] != nil else {
        return Logger(label: label, factory: { _ in SwiftLogNoOpLogHandler() })
    }
    var logger = Logger(label: label, factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = .debug
    return logger
}

/// Runs `body` with an event loop group of its own (two loops), shut down afterwards.
func withOwnLoops<T>(_ body: (MultiThreadedEventLoopGroup) async throws -> T) async throws -> T {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    do {
        let result = try await body(group)
        try await group.shutdownGracefully()
        return result
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
}

/// Finished sessions' records, with a way to wait for the next ones.
final class SessionRecords: Sendable {
    private struct State {
        var records: [SessionRecord] = []
        var waiters: [(count: Int, id: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = NIOLockedValueBox(State())

    func append(_ record: SessionRecord) {
        let ready = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.records.append(record)
            let count = state.records.count
            let ready = state.waiters.filter { $0.count <= count }.map(\.continuation)
            state.waiters.removeAll { $0.count <= count }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    var all: [SessionRecord] { state.withLockedValue { $0.records } }

    /// Waits until at least `count` sessions have finished; fails with ``TimedOut`` after 20 s
    /// rather than hang a broken test.
    func waitFor(_ count: Int) async throws -> [SessionRecord] {
        try await withTimeout(seconds: 20) { await self.waitForever(count) }
    }

    private func waitForever(_ count: Int) async -> [SessionRecord] {
        let id = UInt64.random(in: 0...UInt64.max)
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let done = state.withLockedValue { state -> Bool in
                    if state.records.count >= count || Task.isCancelled { return true }
                    state.waiters.append((count, id, continuation))
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            let cancelled = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            cancelled?.resume()
        }
        return all
    }
}

/// How one client session ended.
enum SessionOutcome: Equatable {
    /// The first message came back.
    case echoed
    /// The server closed first, with this code.
    case closed(UInt16?)
    case failed(String)
}

/// One early-sending client: it sends `message` the moment the 101 is in, then waits for its echo,
/// skipping the backend's ready message.
func earlyClientSession(port: Int, message: String, readyMessage: String = #"{"type":"connection_ready"}"#) async
    -> SessionOutcome
{
    do {
        return try await withTimeout(seconds: 10) {
            try await DemoWebSocketClient.withConnection(
                group: testGroup,
                port: port,
                firstFrames: [DemoWebSocketClient.text(message)]
            ) { connection in
                while let received = try await connection.next() {
                    switch received {
                    case .text(let text) where text == readyMessage:
                        continue
                    case .text(let text):
                        try? await connection.close()
                        return text == message ? .echoed : .failed("wrong echo \(text)")
                    case .close(let code, _):
                        return .closed(code)
                    default:
                        continue
                    }
                }
                return .failed("stream ended without a close frame")
            }
        }
    } catch {
        return .failed("\(error)")
    }
}

/// Runs `count` sessions at once and returns their outcomes.
func runConcurrently(_ count: Int, _ session: @escaping @Sendable (Int) async -> SessionOutcome) async
    -> [SessionOutcome]
{
    await withTaskGroup(of: SessionOutcome.self) { group in
        for index in 0..<count { group.addTask { await session(index) } }
        var outcomes: [SessionOutcome] = []
        for await outcome in group { outcomes.append(outcome) }
        return outcomes
    }
}

struct TimedOut: Error {}

/// Runs `body`, failing with ``TimedOut`` when it takes longer than `seconds`: a guard against hangs,
/// not a measurement.
func withTimeout<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            throw TimedOut()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Sends a raw request to 127.0.0.1:`port` and returns everything read until the server closes.
func rawExchange(port: Int, request: String) async throws -> String {
    String(decoding: try await rawExchange(port: port, bytes: Array(request.utf8)), as: UTF8.self)
}

/// Sends raw bytes to 127.0.0.1:`port` and returns every byte read until the server closes.
func rawExchange(port: Int, bytes: [UInt8]) async throws -> [UInt8] {
    let collected = NIOLockedValueBox(ByteBuffer())
    let channel = try await ClientBootstrap(group: testGroup)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(CollectingHandler(collected))
            }
        }
        .connect(host: "127.0.0.1", port: port)
        .get()
    // A future's `get()` ignores task cancellation, so the bound is a close scheduled on the channel.
    let timedOut = NIOLockedValueBox(false)
    let deadline = channel.eventLoop.scheduleTask(in: .seconds(10)) {
        timedOut.withLockedValue { $0 = true }
        channel.close(promise: nil)
    }
    try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    try await channel.closeFuture.get()
    deadline.cancel()
    if timedOut.withLockedValue({ $0 }) { throw TimedOut() }
    return collected.withLockedValue { Array(buffer: $0) }
}

final class CollectingHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let collected: NIOLockedValueBox<ByteBuffer>
    init(_ collected: NIOLockedValueBox<ByteBuffer>) { self.collected = collected }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        collected.withLockedValue { _ = $0.writeBuffer(&buffer) }
    }
}

/// A valid upgrade request for `path`, as raw bytes.
func upgradeRequest(
    path: String = "/ws",
    version: String = "13",
    key: String = "dGhlIHNhbXBsZSBub25jZQ==",
    extraFields: String = ""
) -> String {
    "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: \(version)\r\n\(extraFields)\r\n"
}

extension DemoBackend {
    /// ``wait(until:)`` that fails with ``TimedOut`` after 20 s rather than hang a broken test.
    func waitUntil(_ condition: @escaping @Sendable (DemoBackendCounters) -> Bool) async throws {
        try await withTimeout(seconds: 20) { await self.wait(until: condition) }
    }
}

/// Starts the demo backend and a ReadyGate in front of it, runs `body`, and stops both, even when
/// `body` throws. Both run on `group`: a test that keeps its loops busy for long (megabytes
/// masked byte by byte in a debug build) passes a group of its own, so that it does not stall
/// the loops every other test shares.
func withBackendAndProxy<T>(
    group: any EventLoopGroup = testGroup,
    backend configureBackend: (inout DemoBackendConfiguration) -> Void,
    proxy configureProxy: (inout ReadyGateSettings) -> Void,
    _ body: (DemoBackend, ProxyFixture) async throws -> T
) async throws -> T {
    var configuration = DemoBackendConfiguration()
    configureBackend(&configuration)
    let backend = try await DemoBackend.start(configuration: configuration, group: group)
    let proxy: ProxyFixture
    do {
        proxy = try await ProxyFixture.start(upstreamPort: backend.port, group: group, configureProxy)
    } catch {
        try? await backend.close()
        throw error
    }
    do {
        let result = try await body(backend, proxy)
        try await proxy.stop()
        try await backend.close()
        return result
    } catch {
        try? await proxy.stop()
        try? await backend.close()
        throw error
    }
}

/// A backend whose set-up never ends within the test, behind the message gate: the proxy stays
/// CONNECTED and holds the client's frames.
func withPendingSession<T>(
    _ configureProxy: (inout ReadyGateSettings) -> Void = { _ in },
    _ body: (DemoBackend, ProxyFixture) async throws -> T
) async throws -> T {
    try await withBackendAndProxy(
        backend: { $0.setupMs = 10_000 },
        proxy: { settings in
            settings.readyGate = .message
            settings.timing.handshakeTimeoutMs = 20_000
            configureProxy(&settings)
        },
        body
    )
}

/// A loopback port that refuses every connection while this lives: a socket bound to it and never
/// listening holds it, so no other test's server can take it (a port freed by closing a server
/// can be handed to the next `bind` to port 0 in a parallel test).
final class RefusedPort: Sendable {
    let port: Int
    private let descriptor: Int32

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw RefusedPortError() }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bind(descriptor, generic, length) == 0 && getsockname(descriptor, generic, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            throw RefusedPortError()
        }
        self.descriptor = descriptor
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit {
        close(descriptor)
    }

    struct RefusedPortError: Error {}
}

/// A backend "connection" for `EmbeddedChannel` tests of the HTTP paths: a connected
/// `EmbeddedChannel` on `loop` with `handlers` (the pool's handler last), appended to `channels`.
func embeddedBackendConnection(
    on loop: EmbeddedEventLoop,
    handlers: [any ChannelHandler],
    into channels: NIOLoopBoundBox<[EmbeddedChannel]>
) -> EventLoopFuture<any Channel> {
    let channel = EmbeddedChannel(loop: loop)
    do {
        try channel.pipeline.syncOperations.addHandlers(handlers)
    } catch {
        return loop.makeFailedFuture(error)
    }
    channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 8000), promise: nil)
    channels.value.append(channel)
    return loop.makeSucceededFuture(channel)
}
