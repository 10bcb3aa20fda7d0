import NIOConcurrencyHelpers
import NIOSSL
import ReadyGateCore

/// The listener's TLS: the current `NIOSSLContext`, made from `READYGATE_TLS_CERT` and
/// `READYGATE_TLS_KEY`, and replaced by ``reload()`` (SIGHUP). Each new connection takes the
/// context current at its accept; connections already open keep theirs, so a reload drops nothing.
///
/// TLS 1.2 at least; ALPN offers `h2` and `http/1.1`.
public final class ServerTLS: Sendable {
    /// The ALPN protocols the listener offers, in order of preference.
    static let applicationProtocols = ["h2", "http/1.1"]

    public let files: TLSFiles
    private let current: NIOLockedValueBox<NIOSSLContext>

    /// Loads the files. Reads them from disk: call it before serving, not on an event loop.
    public init(files: TLSFiles) throws(TLSFileError) {
        self.files = files
        self.current = NIOLockedValueBox(try Self.makeContext(files: files))
    }

    /// The context for a new connection.
    var context: NIOSSLContext { current.withLockedValue { $0 } }

    /// Reads the files again and, when they make a context, uses it for every connection accepted
    /// from now on. When they do not, the current context stays and the error is thrown. Reads
    /// from disk: not on an event loop.
    public func reload() throws(TLSFileError) {
        let fresh = try Self.makeContext(files: files)
        current.withLockedValue { $0 = fresh }
    }

    /// A server context from the certificate chain and key files.
    static func makeContext(files: TLSFiles) throws(TLSFileError) -> NIOSSLContext {
        let certificateVariable = ReadyGateConfigKey.tlsCert.rawValue
        let keyVariable = ReadyGateConfigKey.tlsKey.rawValue
        let chain = try PEMFiles.certificates(variable: certificateVariable, path: files.certificatePath)
        let key = try PEMFiles.privateKey(variable: keyVariable, path: files.keyPath)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = applicationProtocols
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            // BoringSSL checks the key against the leaf certificate when the context takes it.
            throw TLSFileError(
                variable: keyVariable,
                path: files.keyPath,
                problem: "the key does not match the certificate of \(certificateVariable)=\(files.certificatePath) "
                    + "(\(error))"
            )
        }
    }
}
