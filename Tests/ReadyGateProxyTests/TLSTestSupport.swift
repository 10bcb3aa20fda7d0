import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import ReadyGateCore
import ReadyGateProxy

/// A throw-away PKI made with the `openssl` CLI in a temporary directory, once per test process:
/// a CA; server certificates it signed for `localhost` and `127.0.0.1` (serial 2, and serial 3 for
/// reloads); a second CA nobody trusts and a server certificate it signed (serial 9).
struct TestPKI: Sendable {
    let directory: String

    static let shared: Result<TestPKI, TestPKIError> = Result { () throws(TestPKIError) in try make() }

    static func get() throws -> TestPKI { try shared.get() }

    var caCertificate: String { path("ca.pem") }
    /// The server certificate and key (serial 2).
    var server: TLSFiles { TLSFiles(certificatePath: path("server.pem"), keyPath: path("server.key")) }
    /// Another certificate for the same names (serial 3).
    var renewed: TLSFiles { TLSFiles(certificatePath: path("renewed.pem"), keyPath: path("renewed.key")) }
    /// A certificate signed by the untrusted CA (serial 9).
    var untrusted: TLSFiles { TLSFiles(certificatePath: path("rogue-server.pem"), keyPath: path("rogue-server.key")) }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Writes `text` to a new file of the directory and returns its path.
    func write(_ name: String, _ text: String) throws -> String {
        try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        return path(name)
    }

    /// A copy of the server certificate and key at paths of their own (a reload test replaces them).
    func copyOfServer(prefix: String) throws -> TLSFiles {
        let files = TLSFiles(certificatePath: path("\(prefix).pem"), keyPath: path("\(prefix).key"))
        try replace(files, with: server)
        return files
    }

    /// Writes the contents of `source` over `files`.
    func replace(_ files: TLSFiles, with source: TLSFiles) throws {
        try Data(contentsOf: URL(fileURLWithPath: source.certificatePath))
            .write(to: URL(fileURLWithPath: files.certificatePath))
        try Data(contentsOf: URL(fileURLWithPath: source.keyPath)).write(to: URL(fileURLWithPath: files.keyPath))
    }

    private static func make() throws(TestPKIError) -> TestPKI {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("readygate-tls-\(UUID().uuidString)").path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                .write(toFile: directory + "/server.ext", atomically: true, encoding: .utf8)
        } catch {
            throw TestPKIError(step: "directory", output: "\(error)")
        }
        let pki = TestPKI(directory: directory)
        try pki.makeCA("ca", name: "ReadyGate Test CA")
        try pki.makeCA("rogue", name: "Untrusted Test CA")
        try pki.issue("server", ca: "ca", serial: 2)
        try pki.issue("renewed", ca: "ca", serial: 3)
        try pki.issue("rogue-server", ca: "rogue", serial: 9)
        return pki
    }

    private static let newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    private func makeCA(_ name: String, name commonName: String) throws(TestPKIError) {
        try openssl(
            ["req", "-x509"] + Self.newKey + [
                "-keyout", path("\(name).key"), "-out", path("\(name).pem"), "-days", "2", "-subj", "/CN=\(commonName)",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            ]
        )
    }

    private func issue(_ name: String, ca: String, serial: Int) throws(TestPKIError) {
        try openssl(
            ["req"] + Self.newKey + [
                "-keyout", path("\(name).key"), "-out", path("\(name).csr"), "-subj", "/CN=localhost",
            ]
        )
        try openssl([
            "x509", "-req", "-in", path("\(name).csr"), "-CA", path("\(ca).pem"), "-CAkey", path("\(ca).key"),
            "-set_serial", "\(serial)", "-days", "2", "-extfile", path("server.ext"), "-out", path("\(name).pem"),
        ])
    }

    private func openssl(_ arguments: [String]) throws(TestPKIError) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            throw TestPKIError(step: arguments.joined(separator: " "), output: "\(error)")
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestPKIError(step: "openssl " + arguments.joined(separator: " "), output: text)
        }
    }
}

struct TestPKIError: Error, CustomStringConvertible {
    var step: String
    var output: String
    var description: String { "test PKI: \(step) failed (is the openssl CLI installed?): \(output)" }
}

/// TLS clients of the tests.
enum TLSTestClient {
    /// A client context trusting the test CA (or nothing but `trusting`), offering `alpn`.
    static func context(
        pki: TestPKI,
        alpn: [String] = ["http/1.1"],
        verification: CertificateVerification = .fullVerification
    ) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .file(pki.caCertificate)
        configuration.applicationProtocols = alpn
        configuration.certificateVerification = verification
        return try NIOSSLContext(configuration: configuration)
    }

    /// A TLS connection to 127.0.0.1:`port`, and its handshake's result (the negotiated ALPN
    /// protocol, nil for none; a failed handshake fails it).
    static func connect(
        port: Int,
        context: NIOSSLContext,
        serverHostname: String? = "localhost",
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> (channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, handshake: EventLoopFuture<String?>) {
        let handshake = NIOLockedValueBox<EventLoopFuture<String?>?>(nil)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let recorder = HandshakeRecorder(promise: channel.eventLoop.makePromise())
                    handshake.withLockedValue { $0 = recorder.promise.futureResult }
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverHostname))
                    try sync.addHandler(recorder)
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return (channel, handshake.withLockedValue { $0! })
    }

    /// Sends `request` over TLS and returns everything read until the server closes.
    static func exchange(port: Int, context: NIOSSLContext, request: String) async throws -> String {
        let (channel, handshake) = try await connect(port: port, context: context)
        return try await withTimeout(seconds: 10) {
            try await channel.executeThenClose { inbound, outbound in
                _ = try await handshake.get()
                try await outbound.write(ByteBuffer(string: request))
                var collected = ByteBuffer()
                do {
                    for try await var part in inbound { collected.writeBuffer(&part) }
                } catch let error as NIOSSLError where error == .uncleanShutdown {
                    // The proxy closed without close_notify: what came before counts.
                }
                return String(buffer: collected)
            }
        }
    }

    /// Connects over TLS, upgrades and runs `body` with the connection after the `101`.
    static func session<T: Sendable>(
        port: Int,
        context: NIOSSLContext,
        _ body: @escaping @Sendable (inout ScriptedConnection) async throws -> T
    ) async throws -> T {
        let (channel, handshake) = try await connect(port: port, context: context)
        return try await channel.executeThenClose { inbound, outbound in
            _ = try await handshake.get()
            var connection = ScriptedConnection(channel: channel, inbound: inbound, outbound: outbound)
            try await connection.write(upgradeRequest())
            guard let head = try await connection.readHead(), head.hasPrefix("HTTP/1.1 101") else {
                throw ScriptError.ended("no 101")
            }
            return try await body(&connection)
        }
    }
}

/// Completes its promise with the negotiated ALPN protocol when the TLS handshake is done, or
/// with the error that ended it.
final class HandshakeRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let promise: EventLoopPromise<String?>

    init(promise: EventLoopPromise<String?>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = event {
            promise.succeed(negotiated)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.eof)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise.fail(ChannelError.ioOnClosedChannel)
    }
}

extension ProxyFixture {
    /// A proxy whose listener speaks TLS with `server`, in front of `upstreamPort` (over TLS with
    /// `upstream`).
    static func startTLS(
        upstreamPort: Int,
        server: ServerTLS?,
        upstream: UpstreamTLS? = nil,
        group: any EventLoopGroup = testGroup,
        _ configure: (inout ReadyGateSettings) -> Void = { _ in }
    ) async throws -> ProxyFixture {
        try await start(
            upstreamPort: upstreamPort,
            group: group,
            { settings in
                settings.upstream.usesTLS = upstream != nil
                configure(&settings)
            },
            prepare: { $0.useTLS(server: server, upstream: upstream) }
        )
    }
}

/// A backend on 127.0.0.1 speaking TLS with `files`, whose every connection runs `script` (like
/// ``ScriptedBackend``); it records the SNI name of every client hello.
final class TLSScriptedBackend: Sendable {
    private let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let task: Task<Void, Never>
    private let names = NIOLockedValueBox<[String?]>([])
    let port: Int

    /// The SNI names the clients sent, in order (nil: none).
    var serverNames: [String?] { names.withLockedValue { $0 } }

    init(files: TLSFiles, script: @escaping @Sendable (Int, inout ScriptedConnection) async throws -> Void)
        async throws
    {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(files.certificatePath).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: files.keyPath, format: .pem))
        )
        let names = self.names
        configuration.sslContextCallback = { values, promise in
            names.withLockedValue { $0.append(values.serverHostname) }
            promise.succeed(.noChanges)
        }
        let context = try NIOSSLContext(configuration: configuration)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        self.server = server
        self.port = server.channel.localAddress?.port ?? 0
        self.task = ScriptedBackend.serve(server, script: script)
    }

    func close() async {
        try? await server.channel.close()
        task.cancel()
        await task.value
    }
}

/// Waits until `condition` holds, checking every 10 ms, for 10 s at most. Only for what has no
/// event to await: the proxy's connection count changes on its own loop when a client went away.
func eventually(_ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut() }
        try await Task.sleep(for: .milliseconds(10))
    }
}
