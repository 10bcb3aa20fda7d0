import NIOSSL

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Reads the PEM files of the TLS settings, each into NIOSSL's types, with errors that say which
/// variable, which file and what is wrong. The file is read here (not by NIOSSL's file loaders) so
/// that a missing or unreadable file is told apart from one that is not PEM.
enum PEMFiles {
    /// Every certificate of a PEM file (a chain: leaf first); at least one.
    static func certificates(variable: String, path: String) throws(TLSFileError) -> [NIOSSLCertificate] {
        let bytes = try read(variable: variable, path: path)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(bytes)
        } catch {
            throw TLSFileError(variable: variable, path: path, problem: "not a PEM certificate file (\(error))")
        }
        guard !certificates.isEmpty else {
            throw TLSFileError(variable: variable, path: path, problem: "no PEM certificate in the file")
        }
        return certificates
    }

    /// The private key of a PEM file (unencrypted).
    static func privateKey(variable: String, path: String) throws(TLSFileError) -> NIOSSLPrivateKey {
        let bytes = try read(variable: variable, path: path)
        do {
            return try NIOSSLPrivateKey(bytes: bytes, format: .pem)
        } catch {
            throw TLSFileError(
                variable: variable,
                path: path,
                problem: "not an unencrypted PEM private key (\(error))"
            )
        }
    }

    private static func read(variable: String, path: String) throws(TLSFileError) -> [UInt8] {
        do {
            return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch let error as CocoaError {
            let problem: String
            switch error.code {
            case .fileReadNoSuchFile, .fileNoSuchFile: problem = "no such file"
            case .fileReadNoPermission: problem = "cannot read the file: permission denied"
            default: problem = "cannot read the file (\(error))"
            }
            throw TLSFileError(variable: variable, path: path, problem: problem)
        } catch {
            throw TLSFileError(variable: variable, path: path, problem: "cannot read the file (\(error))")
        }
    }
}
