import ReadyGateProxy
import ServiceLifecycle
import UnixSignals

/// Reloads the listener's certificate and key on every SIGHUP, until graceful shutdown. A reload
/// that fails keeps the current certificate (``ProxyEnvironment/reloadTLS()`` logs it).
struct TLSReloadService: Service {
    let environment: ProxyEnvironment

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            environment.reloadTLS()
        }
    }
}
