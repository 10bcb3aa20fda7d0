import Logging
import NIOCore
import ReadyGateCore

/// The timer of a client connection's ``RequestHeadDeadline``, owned by its ``HTTPEntryHandler``
/// or ``FastHTTP1Handler``.
///
/// One scheduled check serves every wait: a check due earlier than the deadline is left alone and,
/// when it fires, re-armed for the deadline then current. So a keep-alive request costs a clock
/// read, not a scheduled task. The owner passes `check`, the closure a scheduled check runs, which
/// calls ``fired()`` and then, while the connection still waits for a head, ``expiry(context:logger:check:)``.
struct RequestHeadTimer {
    enum Expiry {
        /// No byte of a request within the idle timeout: close quietly.
        case idle
        /// A head begun and not finished within the header timeout: answer `408`, then close.
        case headTooSlow
    }

    private var deadline: RequestHeadDeadline
    private let headerTimeoutMs: Int
    /// The pending check, and when it fires.
    private var pending: (task: Scheduled<Void>, at: NIODeadline)?

    init(settings: ReadyGateSettings) {
        headerTimeoutMs = settings.httpHeaderTimeoutMs
        deadline = RequestHeadDeadline(
            idleTimeout: .milliseconds(Int64(settings.httpIdleTimeoutMs)),
            headerTimeout: .milliseconds(Int64(settings.httpHeaderTimeoutMs))
        )
    }

    /// The body of the `408`.
    var timeoutMessage: String { "request head not complete within \(headerTimeoutMs) ms\n" }

    /// The connection is new or its last response is complete: the idle timeout runs.
    mutating func awaitHead(context: ChannelHandlerContext, check: @escaping () -> Void) {
        deadline.awaitHead(now: context.eventLoop.now)
        arm(context: context, check: check)
    }

    /// Bytes arrived that did not complete a head: the header timeout runs.
    mutating func bytesArrived(context: ChannelHandlerContext, check: @escaping () -> Void) {
        deadline.bytesArrived(now: context.eventLoop.now)
        arm(context: context, check: check)
    }

    /// A whole head arrived: nothing is due until the next ``awaitHead(context:check:)``.
    mutating func headReceived() {
        deadline.headReceived()
    }

    /// The connection left: no check any more.
    mutating func cancel() {
        pending?.task.cancel()
        pending = nil
    }

    /// The scheduled check runs: none is pending now.
    mutating func fired() {
        pending = nil
    }

    /// What is due for a connection still waiting for a head: nil while it may wait on (a check is
    /// armed for the deadline), else why it ends, logged.
    mutating func expiry(context: ChannelHandlerContext, logger: Logger, check: @escaping () -> Void) -> Expiry? {
        switch deadline.verdict(now: context.eventLoop.now) {
        case nil:
            return nil
        case .wait:
            arm(context: context, check: check)
            return nil
        case .idle:
            logger.debug(
                "client_idle_timeout",
                metadata: ["client": "\(context.channel.remoteAddress?.ipAddress ?? "-")"]
            )
            return .idle
        case .headTooSlow:
            logger.warning(
                "request_head_timeout",
                metadata: [
                    "status": "408", "timeout_ms": "\(headerTimeoutMs)",
                    "client": "\(context.channel.remoteAddress?.ipAddress ?? "-")",
                ]
            )
            return .headTooSlow
        }
    }

    /// Makes sure a check is due no later than the deadline. A check due earlier is left alone: it
    /// re-arms itself for the real deadline when it fires.
    private mutating func arm(context: ChannelHandlerContext, check: @escaping () -> Void) {
        guard let deadline = deadline.deadline else { return }
        if let pending {
            if pending.at <= deadline { return }
            pending.task.cancel()
        }
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { check() }
        pending = (task, deadline)
    }
}
