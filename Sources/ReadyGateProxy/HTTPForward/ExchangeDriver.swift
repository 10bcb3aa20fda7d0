import Logging
import NIOCore
import NIOHTTP1

/// What bounds an HTTP exchange's time without progress (`READYGATE_HTTP_RESPONSE_TIMEOUT_MS`):
/// when it last moved, and the one timer armed for it.
struct ExchangeTimer {
    let limit: TimeAmount
    /// When a request part last went to the backend or a response part came from it.
    var lastProgress: NIODeadline
    fileprivate var task: Scheduled<Void>?

    init(limit: TimeAmount, lastProgress: NIODeadline = .uptimeNanoseconds(0)) {
        self.limit = limit
        self.lastProgress = lastProgress
    }
}

/// One HTTP exchange driven through ``HTTPExchangeStateMachine`` on a pooled backend connection:
/// the NIO-codec path's ``HTTPForwarder``, the fast path's ``FastHTTP1Handler``, an HTTP/2
/// stream's ``HTTP2FastExchange``. The steps they share are written once, in the extension: a
/// fresh connect, and the progress timer with what its firing means. Each driver says how it
/// takes a connection, answers with an error, and ends a stalled exchange.
protocol ExchangeDriver: AnyObject {
    associatedtype Exchange: BackendExchange
    typealias Connection = BackendConnectionHandler<Exchange>

    var machine: HTTPExchangeStateMachine { get set }
    var exchangeTimer: ExchangeTimer { get set }
    /// The backend connection of the exchange in flight.
    var upstream: Connection? { get }
    /// Nil once the driver has left its channel: nothing more is scheduled.
    var exchangeEventLoop: (any EventLoop)? { get }
    var exchangePool: BackendPool<Connection>? { get }
    var exchangeLogger: Logger { get }
    func exchangeMetadata(_ extra: Logger.Metadata) -> Logger.Metadata
    func connected(_ connection: Connection, attempt: Int?, reused: Bool)
    /// A `502`/`504` of the proxy's own, before any response byte went out.
    func fail(_ failure: HTTPExchangeStateMachine.Failure, reason: String)
    /// The response started and then stalled: the backend connection is abandoned and the client's
    /// connection (or stream) closed.
    func closeStalledExchange()
    /// Closes the backend connection of an unfinished exchange (it is never pooled).
    func abandonUpstream()
    /// A stale pooled connection is replaced: what the retry needs besides a fresh connect (the
    /// request's end sent again, a partial response head dropped).
    func prepareRetry(resendEnd: Bool)
}

extension ExchangeDriver {
    /// An interim (`1xx`) answer came from the backend: whether to relay it (the exchange is on and
    /// its final head not yet seen). It counts as progress, and the machine remembers it (no stale
    /// retry after it). The driver writes it in its own form.
    func takeInterimAnswer() -> Bool {
        guard let eventLoop = exchangeEventLoop, machine.interimResponse() else { return false }
        exchangeTimer.lastProgress = eventLoop.now
        return true
    }

    /// The first half of every driver's `fail`: the failure is logged with the exchange's fields,
    /// the backend connection let go; returns the status to answer with.
    func logFailureAndAbandon(_ failure: HTTPExchangeStateMachine.Failure, reason: String) -> HTTPResponseStatus {
        let status = HTTPResponseStatus(statusCode: failure.status)
        exchangeLogger.warning(
            failure.logEvent,
            metadata: exchangeMetadata(["status": "\(status.code)", "reason": "\(reason)"])
        )
        abandonUpstream()
        return status
    }

    /// The exchange's backend connection closed (the driver has let go of it): the client's
    /// connection closes if the response had started, a stale pooled connection is retried once,
    /// else the exchange fails with `502`.
    func backendClosed(error: String?) {
        switch machine.upstreamClosed() {
        case .closeClient:
            exchangeLogger.warning(
                "http_upstream_closed_mid_response",
                metadata: exchangeMetadata(["error": "\(error ?? "closed")"])
            )
            closeStalledExchange()
        case .retry(let attempt, let resendEnd):
            cancelExchangeTimer()
            exchangeLogger.debug("http_upstream_stale_retry", metadata: exchangeMetadata([:]))
            prepareRetry(resendEnd: resendEnd)
            connectFresh(attempt: attempt)
        case .fail(let failure):
            fail(failure, reason: "backend closed the connection before answering: \(error ?? "EOF")")
        case .ignore:
            break
        }
    }

    /// The client left (its connection or stream closed) before the response ended: logged, and
    /// the backend connection closed, never reused.
    func clientGone() {
        let responseStarted = machine.responseStarted
        guard machine.clientGone() else { return }
        exchangeLogger.info("http_client_gone", metadata: exchangeMetadata(["response_started": "\(responseStarted)"]))
        abandonUpstream()
    }

    /// Opens a fresh backend connection for attempt `attempt`; a failed connect is the machine's to
    /// retry or fail.
    func connectFresh(attempt: Int) {
        guard let pool = exchangePool else { return }
        pool.connect().assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let connection):
                connected(connection, attempt: attempt, reused: false)
            case .failure(let error):
                if let failure = machine.connectFailed(attempt: attempt) { fail(failure, reason: "\(error)") }
            }
        }
    }

    /// Arms the timer unless it runs. It is not re-armed at each progress, nor cancelled when a
    /// fast-path response ends: when it fires it checks the exchange then in flight, which has
    /// stalled only if nothing moved for a whole limit since its last progress; otherwise the timer
    /// waits for the rest (so body parts and keep-alive requests schedule nothing).
    func armExchangeTimer() {
        guard exchangeTimer.task == nil, let loop = exchangeEventLoop else { return }
        scheduleExchangeTimer(at: loop.now + exchangeTimer.limit, on: loop)
    }

    func cancelExchangeTimer() {
        exchangeTimer.task?.cancel()
        exchangeTimer.task = nil
    }

    private func scheduleExchangeTimer(at deadline: NIODeadline, on loop: any EventLoop) {
        exchangeTimer.task = loop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            exchangeTimer.task = nil
            exchangeTimerFired()
        }
    }

    private func exchangeTimerFired() {
        guard let loop = exchangeEventLoop, machine.state == .exchanging else { return }
        let stalledAt = exchangeTimer.lastProgress + exchangeTimer.limit
        if stalledAt > loop.now {
            scheduleExchangeTimer(at: stalledAt, on: loop)
            return
        }
        switch machine.timedOut(attempt: machine.attempt, upstreamWritable: upstream?.isWritable ?? false) {
        case .fail(let failure):
            fail(
                failure,
                reason: failure == .requestTimedOut ? "no more of the request body in time" : "no response in time"
            )
        case .closeStalled:
            exchangeLogger.warning(
                "http_response_stalled",
                metadata: exchangeMetadata(["timeout_ms": "\(exchangeTimer.limit.nanoseconds / 1_000_000)"])
            )
            closeStalledExchange()
        case .ignore:
            break
        }
    }
}
