/// The decisions of one client connection's plain HTTP exchanges, one at a time: when request
/// parts may go to the backend, when a request is retried, whether a backend connection goes back
/// to the pool and whether the client's connection stays open.
///
/// No I/O and no NIO: ``HTTPForwarder`` feeds it what happened and carries out the action it
/// returns, as `WebSocketSession` does with `SessionStateMachine`. Each connect is numbered
/// (`attempt`), and so is each exchange's end, so a connect or a timer that completes for an older
/// attempt is recognised.
struct HTTPExchangeStateMachine {
    enum State: Equatable {
        /// No request in flight.
        case idle
        /// Waiting for a backend connection; the forwarder buffers the request's parts.
        case connecting
        /// The head is on the backend connection; parts are written as they come.
        case exchanging
        /// The exchange failed or the client is closing; nothing more is forwarded.
        case closed
    }

    /// Why an exchange is answered with an error, before any response byte went out.
    enum Failure: Equatable {
        /// No backend connection could be opened.
        case unreachable
        /// The backend closed the connection before its response head.
        case closedBeforeAnswer
        /// The backend answered `101` to a request without `Upgrade`.
        case unexpectedSwitch
        /// No response head within the response timeout, or the backend took no more of the body
        /// for that long.
        case timedOut
        /// The client sent no more of its body for the response timeout.
        case requestTimedOut

        /// The status the client gets.
        var status: Int {
            switch self {
            case .timedOut: 504
            case .requestTimedOut: 408
            case .unreachable, .closedBeforeAnswer, .unexpectedSwitch: 502
            }
        }
    }

    /// What to do with a backend connection that just became available.
    enum ConnectedAction: Equatable {
        /// Write the head and the buffered parts, and arm the exchange's timer.
        case sendRequest
        /// It belongs to an abandoned attempt: close it.
        case closeConnection
    }

    /// What to do with a request part from the client.
    enum RequestPartAction: Equatable {
        /// Write it to the backend connection (and, for the end, flush and arm the response timer).
        case write
        /// Keep it until the backend connection is there.
        case buffer
        case drop
    }

    /// What to do with the backend's response head.
    enum ResponseHeadAction: Equatable {
        /// Relay it; the response timer now watches for a stalled body.
        case relay
        case fail(Failure)
        case ignore
    }

    /// What to do at the response's end.
    enum ResponseEndAction: Equatable {
        /// Hand the backend connection back to the pool (`poolConnection`) or close it; keep the
        /// client's connection for its next request (`keepClient`) or close it after the end.
        case finish(poolConnection: Bool, keepClient: Bool)
        case ignore
    }

    /// What to do when the response timer fires.
    enum TimeoutAction: Equatable {
        /// No response head in time: answer with this failure (504).
        case fail(Failure)
        /// The response started but no byte moved for the whole timeout: nothing more can be said to
        /// the client, so both connections are closed.
        case closeStalled
        case ignore
    }

    /// What to do when the backend connection of the exchange closed.
    enum UpstreamClosedAction: Equatable {
        /// Send the request again on a fresh connection (connect `attempt`); the buffered parts
        /// are to hold the request's end again when it had come (`resendEnd`).
        case retry(attempt: Int, resendEnd: Bool)
        case fail(Failure)
        /// The response was under way: close the client's connection.
        case closeClient
        case ignore
    }

    private(set) var state = State.idle
    /// The current connect attempt (also bumped when an exchange ends).
    private(set) var attempt = 0
    private var clientKeepAlive = false
    private(set) var requestEnded = false
    private var bodySent = false
    private var reusedConnection = false
    private var retried = false
    private(set) var responseStarted = false
    /// The backend sent an interim (`1xx`) answer: it has the request, so it is not retried.
    private var interimSeen = false
    private var upstreamKeepAlive = false
    private var closeDelimited = false

    /// Whether more of the request body may be read: not while connecting, and only into a
    /// writable backend connection.
    func canTakeBody(upstreamWritable: Bool) -> Bool {
        switch state {
        case .idle: true
        case .connecting, .closed: false
        case .exchanging: upstreamWritable
        }
    }

    // MARK: Request

    /// A request head; the forwarder takes an idle connection (``connected(attempt:reused:bufferedBodyBytes:)``
    /// with `attempt` nil) or opens one (``connectStarted()``).
    /// The client's connection must close after this response (the proxy is shutting down).
    mutating func clientMustClose() {
        clientKeepAlive = false
    }

    mutating func requestStarted(clientKeepAlive: Bool) {
        state = .connecting
        self.clientKeepAlive = clientKeepAlive
        requestEnded = false
        bodySent = false
        reusedConnection = false
        retried = false
        responseStarted = false
        interimSeen = false
        upstreamKeepAlive = false
        closeDelimited = false
    }

    /// A fresh connection is being opened: its attempt number.
    mutating func connectStarted() -> Int {
        attempt += 1
        return attempt
    }

    /// A backend connection is there: taken from the pool (`attempt` nil) or opened for `attempt`.
    mutating func connected(attempt connectAttempt: Int?, reused: Bool, bufferedBodyBytes: Int) -> ConnectedAction {
        guard state == .connecting, connectAttempt == nil || connectAttempt == attempt else { return .closeConnection }
        state = .exchanging
        reusedConnection = reused
        if bufferedBodyBytes > 0 { bodySent = true }
        return .sendRequest
    }

    /// The connect of `attempt` failed: nil when that attempt no longer matters.
    mutating func connectFailed(attempt connectAttempt: Int) -> Failure? {
        guard state == .connecting, connectAttempt == attempt else { return nil }
        return fail(.unreachable)
    }

    mutating func requestBody(byteCount: Int) -> RequestPartAction {
        switch state {
        case .exchanging:
            if byteCount > 0 { bodySent = true }
            return .write
        case .connecting: return .buffer
        case .idle, .closed: return .drop
        }
    }

    mutating func requestEnd() -> RequestPartAction {
        switch state {
        case .exchanging:
            requestEnded = true
            return .write
        case .connecting:
            requestEnded = true
            return .buffer
        case .idle, .closed: return .drop
        }
    }

    // MARK: Response

    /// The backend's response head: whether it keeps the connection alive, whether it is a
    /// `101`, and whether its body will be delimited by closing the client's connection.
    mutating func responseHead(upstreamKeepAlive: Bool, isSwitchingProtocols: Bool, closeDelimited: Bool)
        -> ResponseHeadAction
    {
        guard state == .exchanging else { return .ignore }
        if isSwitchingProtocols { return .fail(fail(.unexpectedSwitch)) }
        responseStarted = true
        self.upstreamKeepAlive = upstreamKeepAlive
        self.closeDelimited = closeDelimited
        return .relay
    }

    /// An interim (`1xx`, not `101`) answer before the final one: relayed (a proxy forwards the 1xx
    /// it did not ask for, RFC 9110 §15.2) while the exchange runs. It does not start the response,
    /// but the backend had the request, so a close after it is not retried.
    mutating func interimResponse() -> Bool {
        guard state == .exchanging, !responseStarted else { return false }
        interimSeen = true
        return true
    }

    /// The response is complete. The backend connection is reused only if the backend allows it
    /// and the whole request went out; the client's only if it asked and the body was not
    /// delimited by close, and the whole request was read (else the rest of it is unread).
    mutating func responseEnd() -> ResponseEndAction {
        guard state == .exchanging else { return .ignore }
        attempt += 1
        let keepClient = clientKeepAlive && requestEnded && !closeDelimited
        state = keepClient ? .idle : .closed
        return .finish(poolConnection: upstreamKeepAlive && requestEnded, keepClient: keepClient)
    }

    /// The exchange's timer of `attempt` fired with nothing moving for the whole timeout. Once the
    /// response has started that is a stalled body; before, a 504 when the whole request is out (or
    /// the backend would take no more of it: `upstreamWritable` false), else a 408: the client
    /// stopped sending its body.
    mutating func timedOut(attempt timerAttempt: Int, upstreamWritable: Bool = true) -> TimeoutAction {
        guard state == .exchanging, timerAttempt == attempt else { return .ignore }
        if responseStarted {
            state = .closed
            attempt += 1
            return .closeStalled
        }
        if requestEnded || !upstreamWritable { return .fail(fail(.timedOut)) }
        return .fail(fail(.requestTimedOut))
    }

    // MARK: Closes

    /// The exchange's backend connection closed. Before any response byte (an interim answer
    /// included), a connection that was reused is retried once on a fresh one when no body byte was
    /// sent: the backend closed it while it was idle, and nothing of this request reached it
    /// (RFC 9112 §9.3.1).
    mutating func upstreamClosed() -> UpstreamClosedAction {
        guard state == .exchanging else { return .ignore }
        if responseStarted {
            state = .closed
            attempt += 1
            return .closeClient
        }
        if reusedConnection && !bodySent && !retried && !interimSeen {
            retried = true
            state = .connecting
            return .retry(attempt: connectStarted(), resendEnd: requestEnded)
        }
        return .fail(fail(.closedBeforeAnswer))
    }

    /// The client's connection closed or broke. Returns whether an exchange was under way (its
    /// backend connection is then to be closed, never pooled).
    mutating func clientGone() -> Bool {
        let abandoned = state == .connecting || state == .exchanging
        state = .closed
        attempt += 1
        return abandoned
    }

    private mutating func fail(_ failure: Failure) -> Failure {
        state = .closed
        attempt += 1
        return failure
    }
}
