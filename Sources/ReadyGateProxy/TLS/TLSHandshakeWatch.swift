import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS

/// Sits behind `NIOSSLServerHandler` until the handshake is done, then leaves the pipeline. It
/// logs a failed handshake (rate-limited: a scanner or a plaintext client can fail thousands a
/// second) and closes a connection whose handshake is not done within `timeout`, so a client that
/// never finishes its hello does not hold a connection slot. Every error goes on unchanged.
final class TLSHandshakeWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any
    typealias InboundOut = Any

    private let timeout: TimeAmount
    private let failures: TLSHandshakeFailures
    private var deadline: Scheduled<Void>?
    private var failed = false

    init(timeout: TimeAmount, failures: TLSHandshakeFailures) {
        self.timeout = timeout
        self.failures = failures
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armDeadline(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armDeadline(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    private func armDeadline(context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            let context = loopBound.value
            recordFailure(context: context, reason: "handshake not done within \(timeout.nanoseconds / 1_000_000) ms")
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            deadline?.cancel()
            deadline = nil
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        recordFailure(context: context, reason: "\(error)")
        context.fireErrorCaught(error)
    }

    private func recordFailure(context: ChannelHandlerContext, reason: String) {
        guard !failed else { return }
        failed = true
        failures.record(reason: reason, peer: context.channel.remoteAddress, on: context.eventLoop)
    }
}

@available(*, unavailable)
extension TLSHandshakeWatch: Sendable {}

/// Failed TLS handshakes of one side: counted (the listener's, in the metrics), and logged one
/// line a second at most (the latest failure of a burst with its reason, and how many there were).
final class TLSHandshakeFailures: Sendable {
    private let log: RateLimitedLog
    private let latest = NIOLockedValueBox<(reason: String, peer: String)>(("", ""))
    private let count: @Sendable () -> Void

    /// - Parameters:
    ///   - event: the log line's event name.
    ///   - count: counts one failure (the metrics).
    init(event: String, logger: Logger, count: @escaping @Sendable () -> Void = {}) {
        self.count = count
        let latest = self.latest
        self.log = RateLimitedLog { count in
            let (reason, peer) = latest.withLockedValue { $0 }
            logger.warning(
                "\(event)",
                metadata: ["failures": "\(count)", "last_error": "\(reason)", "last_peer": "\(peer)"]
            )
        }
    }

    func record(reason: String, peer: SocketAddress?, on eventLoop: any EventLoop) {
        count()
        latest.withLockedValue { $0 = (reason, peer?.description ?? "-") }
        log.record(on: eventLoop)
    }
}
