/// The PEM files of the listener's TLS identity: the certificate chain (leaf first) and its
/// private key. Only the paths: the files are read when the proxy starts and on every reload
/// (SIGHUP), by `ReadyGateProxy`'s `ServerTLS`.
public struct TLSFiles: Sendable, Equatable {
    public var certificatePath: String
    public var keyPath: String

    public init(certificatePath: String, keyPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
    }
}

extension ReadyGateSettings {
    /// `READYGATE_TLS_CERT` and `READYGATE_TLS_KEY` (both or neither), `READYGATE_UPSTREAM_CA`.
    /// Paths only; whether the files are usable is checked when the proxy starts.
    mutating func readTLS(_ source: SettingsSource) throws(SettingsError) {
        let certificate = source.value(.tlsCert)
        let key = source.value(.tlsKey)
        switch (certificate, key) {
        case (let certificate?, let key?):
            tls = TLSFiles(certificatePath: certificate, keyPath: key)
        case (let certificate?, nil):
            throw SettingsError(
                variable: ReadyGateConfigKey.tlsKey.rawValue,
                value: "",
                allowed: "the path of the PEM private key of READYGATE_TLS_CERT=\(certificate) "
                    + "(READYGATE_TLS_CERT and READYGATE_TLS_KEY are set together or not at all)"
            )
        case (nil, let key?):
            throw SettingsError(
                variable: ReadyGateConfigKey.tlsCert.rawValue,
                value: "",
                allowed: "the path of the PEM certificate chain of READYGATE_TLS_KEY=\(key) "
                    + "(READYGATE_TLS_CERT and READYGATE_TLS_KEY are set together or not at all)"
            )
        case (nil, nil):
            tls = nil
        }
        upstreamCAPath = source.value(.upstreamCA)
    }

    /// The TLS lines of ``effectiveValues``.
    var tlsEffectiveValues: [(variable: String, value: String)] {
        [
            ("READYGATE_TLS_CERT", tls?.certificatePath ?? "(unset: plaintext listener)"),
            ("READYGATE_TLS_KEY", tls?.keyPath ?? "(unset)"),
            ("READYGATE_UPSTREAM_CA", upstreamCAPath ?? "(unset: the system trust store)"),
        ]
    }
}
