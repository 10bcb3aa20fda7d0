import Logging
import ReadyGateCore

/// The TLS of one proxy instance: the listener's (nil: plaintext) and the backend's (nil: TCP).
struct ProxyTLS: Sendable {
    var server: ServerTLS?
    var upstream: UpstreamTLS?
    /// The listener's failed handshakes; set with `server`.
    var handshakeFailures: TLSHandshakeFailures?
    /// Failed handshakes to the backend; set with `upstream`.
    var upstreamFailures: TLSHandshakeFailures?
}

extension ProxyEnvironment {
    /// The listener's TLS; nil when it speaks plaintext.
    public var serverTLS: ServerTLS? { tls.server }

    /// Loads the TLS files the settings name: the listener's certificate and key when
    /// `READYGATE_TLS_CERT` is set, the backend's trust roots when the upstream is `https://` or
    /// `wss://`. Reads files: call it before serving.
    ///
    /// - Throws: ``TLSFileError`` naming the variable and the file that cannot be used.
    public mutating func loadTLS() throws(TLSFileError) {
        let server = try settings.tls.map { files throws(TLSFileError) in try ServerTLS(files: files) }
        let upstream =
            settings.upstream.usesTLS
            ? try UpstreamTLS(target: settings.upstream, caPath: settings.upstreamCAPath) : nil
        useTLS(server: server, upstream: upstream)
    }

    /// Reads the TLS files `settings` names as ``loadTLS()`` does, and throws what it would
    /// (`readygate check-config`).
    public static func checkTLSFiles(_ settings: ReadyGateSettings) throws(TLSFileError) {
        if let files = settings.tls { _ = try ServerTLS(files: files) }
        if settings.upstream.usesTLS { _ = try UpstreamTLS(target: settings.upstream, caPath: settings.upstreamCAPath) }
    }

    /// Uses these TLS contexts for connections from now on (``loadTLS()``, and tests with
    /// contexts of their own).
    public mutating func useTLS(server: ServerTLS?, upstream: UpstreamTLS?) {
        tls = ProxyTLS(
            server: server,
            upstream: upstream,
            handshakeFailures: server.map { [metrics] _ in
                TLSHandshakeFailures(event: "tls_handshake_failed", logger: logger) { metrics.tlsHandshakeFailed() }
            },
            upstreamFailures: upstream.map { _ in
                TLSHandshakeFailures(event: "upstream_tls_handshake_failed", logger: logger)
            }
        )
        httpPools = UpstreamPools(upstreamTLS: upstream, upstreamFailures: tls.upstreamFailures)
    }

    /// Reloads the listener's certificate and key (SIGHUP): logs `tls_reloaded`, or the error, in
    /// which case the current certificate stays; counted in the metrics. Reads files: not on an
    /// event loop. Returns whether it reloaded; false too when the listener has no TLS.
    @discardableResult
    public func reloadTLS() -> Bool {
        guard let server = tls.server else {
            logger.notice("tls_reload_skipped", metadata: ["reason": "the listener has no TLS (READYGATE_TLS_CERT)"])
            return false
        }
        do {
            try server.reload()
        } catch {
            metrics.tlsReloaded(ok: false)
            logger.error(
                "tls_reload_failed",
                metadata: ["error": "\(error)", "note": "the previous certificate stays in use"]
            )
            return false
        }
        metrics.tlsReloaded(ok: true)
        logger.info(
            "tls_reloaded",
            metadata: ["cert": "\(server.files.certificatePath)", "key": "\(server.files.keyPath)"]
        )
        return true
    }

    /// The scheme the clients used, for `X-Forwarded-Proto` and `Forwarded: proto=`.
    var forwardedProto: String { tls.server == nil ? "http" : "https" }

    /// The listener's failed handshakes (made with the TLS; a stand-in that only counts otherwise).
    var tlsHandshakeFailures: TLSHandshakeFailures {
        tls.handshakeFailures
            ?? TLSHandshakeFailures(event: "tls_handshake_failed", logger: logger) { [metrics] in
                metrics.tlsHandshakeFailed()
            }
    }
}
