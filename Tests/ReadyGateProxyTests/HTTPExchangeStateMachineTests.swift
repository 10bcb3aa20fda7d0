import Testing

@testable import ReadyGateProxy

/// ``HTTPExchangeStateMachine`` without a channel: events in, actions out.
@Suite("HTTPExchangeStateMachine")
struct HTTPExchangeStateMachineTests {
    typealias Machine = HTTPExchangeStateMachine

    /// A machine whose GET (head and end read) is on a pooled connection.
    func exchangingOnPooledConnection(keepAlive: Bool = true) -> Machine {
        var machine = Machine()
        machine.requestStarted(clientKeepAlive: keepAlive)
        #expect(machine.connected(attempt: nil, reused: true, bufferedBodyBytes: 0) == .sendRequest)
        #expect(machine.requestEnd() == .write)
        return machine
    }

    @Test("a GET on a fresh connection: parts buffered while connecting, then sent with the timer armed")
    func freshConnection() {
        var machine = Machine()
        machine.requestStarted(clientKeepAlive: true)
        #expect(!machine.canTakeBody(upstreamWritable: true))
        let attempt = machine.connectStarted()
        #expect(machine.requestEnd() == .buffer)
        #expect(
            machine.connected(attempt: attempt, reused: false, bufferedBodyBytes: 0) == .sendRequest
        )
        #expect(machine.state == .exchanging)
        #expect(
            machine.responseHead(upstreamKeepAlive: true, isSwitchingProtocols: false, closeDelimited: false) == .relay
        )
        #expect(machine.responseEnd() == .finish(poolConnection: true, keepClient: true))
        #expect(machine.state == .idle)
    }

    @Test("body parts are written only while exchanging, and reading waits for a writable backend")
    func bodyParts() {
        var machine = Machine()
        machine.requestStarted(clientKeepAlive: true)
        #expect(machine.requestBody(byteCount: 5) == .buffer)
        #expect(machine.connected(attempt: nil, reused: true, bufferedBodyBytes: 5) == .sendRequest)
        #expect(machine.canTakeBody(upstreamWritable: true))
        #expect(!machine.canTakeBody(upstreamWritable: false))
        #expect(machine.requestBody(byteCount: 5) == .write)
        #expect(machine.requestEnd() == .write)
    }

    @Test("a reused connection closed before any answer is retried once when no body byte was sent")
    func staleRetry() {
        var machine = exchangingOnPooledConnection()
        guard case .retry(let attempt, let resendEnd) = machine.upstreamClosed() else {
            Issue.record("no retry")
            return
        }
        #expect(resendEnd)
        #expect(machine.state == .connecting)
        #expect(
            machine.connected(attempt: attempt, reused: false, bufferedBodyBytes: 0) == .sendRequest
        )
        #expect(machine.upstreamClosed() == .fail(.closedBeforeAnswer), "a fresh connection is not retried")
        #expect(machine.state == .closed)
    }

    @Test("no retry once a body byte went out, nor after a retry")
    func noRetryWithBody() {
        var machine = Machine()
        machine.requestStarted(clientKeepAlive: true)
        _ = machine.connected(attempt: nil, reused: true, bufferedBodyBytes: 0)
        #expect(machine.requestBody(byteCount: 1) == .write)
        #expect(machine.upstreamClosed() == .fail(.closedBeforeAnswer))

        var buffered = Machine()
        buffered.requestStarted(clientKeepAlive: true)
        _ = buffered.connected(attempt: nil, reused: true, bufferedBodyBytes: 3)
        #expect(buffered.upstreamClosed() == .fail(.closedBeforeAnswer))
    }

    @Test("an interim answer is relayed, is not the response, and stops the stale retry")
    func interimAnswer() {
        var machine = exchangingOnPooledConnection()
        let first = machine.interimResponse()
        let second = machine.interimResponse()
        #expect(first)
        #expect(second, "more than one 1xx may come")
        #expect(!machine.responseStarted)
        // The backend had the request: a close now is a 502, not a retry that would send it twice.
        #expect(machine.upstreamClosed() == .fail(.closedBeforeAnswer))

        var next = exchangingOnPooledConnection()
        let beforeHead = next.interimResponse()
        #expect(beforeHead)
        #expect(
            next.responseHead(upstreamKeepAlive: true, isSwitchingProtocols: false, closeDelimited: false) == .relay
        )
        let afterHead = next.interimResponse()
        #expect(!afterHead, "no interim answer after the final head")
        #expect(next.responseEnd() == .finish(poolConnection: true, keepClient: true))
        let betweenExchanges = next.interimResponse()
        #expect(!betweenExchanges, "nor between exchanges")

        // The flag is per request: the next request on the connection may be retried again.
        next.requestStarted(clientKeepAlive: true)
        _ = next.connected(attempt: nil, reused: true, bufferedBodyBytes: 0)
        guard case .retry = next.upstreamClosed() else {
            Issue.record("no retry for the next request")
            return
        }
    }

    @Test("the backend closing mid-response closes the client")
    func closedMidResponse() {
        var machine = exchangingOnPooledConnection()
        #expect(
            machine.responseHead(upstreamKeepAlive: true, isSwitchingProtocols: false, closeDelimited: false) == .relay
        )
        #expect(machine.upstreamClosed() == .closeClient)
        #expect(machine.responseEnd() == .ignore)
    }

    @Test("a 101 to a plain request fails with 502")
    func unexpectedSwitch() {
        var machine = exchangingOnPooledConnection()
        #expect(
            machine.responseHead(upstreamKeepAlive: true, isSwitchingProtocols: true, closeDelimited: false)
                == .fail(.unexpectedSwitch)
        )
        #expect(Machine.Failure.unexpectedSwitch.status == 502)
    }

    @Test("the response timer: 504 before the head, a stalled body after it, only for its own attempt")
    func timeout() {
        var machine = exchangingOnPooledConnection()
        let armedAt = machine.attempt
        #expect(machine.timedOut(attempt: armedAt - 1) == .ignore)
        #expect(machine.timedOut(attempt: armedAt) == .fail(.timedOut))
        #expect(machine.state == .closed)
        #expect(Machine.Failure.timedOut.status == 504)

        var stalled = exchangingOnPooledConnection()
        _ = stalled.responseHead(upstreamKeepAlive: true, isSwitchingProtocols: false, closeDelimited: false)
        #expect(stalled.timedOut(attempt: stalled.attempt) == .closeStalled)
        #expect(stalled.state == .closed)
        #expect(stalled.responseEnd() == .ignore, "a stalled exchange is never pooled")

        var answered = exchangingOnPooledConnection()
        _ = answered.responseHead(upstreamKeepAlive: true, isSwitchingProtocols: false, closeDelimited: false)
        _ = answered.responseEnd()
        #expect(answered.timedOut(attempt: armedAt) == .ignore, "a timer of an ended exchange is stale")
    }

    @Test("a request body that stops: 408 when the client stopped sending, 504 when the backend stopped taking it")
    func requestBodyStalls() {
        for (upstreamWritable, failure) in [(true, Machine.Failure.requestTimedOut), (false, .timedOut)] {
            var machine = Machine()
            machine.requestStarted(clientKeepAlive: true)
            #expect(machine.connected(attempt: nil, reused: true, bufferedBodyBytes: 0) == .sendRequest)
            #expect(machine.requestBody(byteCount: 10) == .write)
            #expect(machine.timedOut(attempt: machine.attempt, upstreamWritable: upstreamWritable) == .fail(failure))
            #expect(machine.state == .closed)
        }
        #expect(Machine.Failure.requestTimedOut.status == 408)
    }

    @Test("a connect that completes or fails for an abandoned attempt is closed or ignored")
    func staleConnect() {
        var machine = Machine()
        machine.requestStarted(clientKeepAlive: true)
        let attempt = machine.connectStarted()
        let abandoned = machine.clientGone()
        #expect(abandoned)
        #expect(machine.connected(attempt: attempt, reused: false, bufferedBodyBytes: 0) == .closeConnection)
        #expect(machine.connectFailed(attempt: attempt) == nil)

        var failing = Machine()
        failing.requestStarted(clientKeepAlive: true)
        let first = failing.connectStarted()
        #expect(failing.connectFailed(attempt: first) == .unreachable)
        #expect(failing.state == .closed)
    }

    @Test(
        "pooling needs the backend's keep-alive and the whole request; the client's needs its own and a framed body",
        arguments: [
            // upstreamKeepAlive, clientKeepAlive, requestEnded, closeDelimited → pool, keepClient
            (true, true, true, false, true, true),
            (false, true, true, false, false, true),
            (true, false, true, false, true, false),
            (true, true, false, false, false, false),
            (true, true, true, true, true, false),
        ]
    )
    func finishDecisions(
        upstreamKeepAlive: Bool,
        clientKeepAlive: Bool,
        requestEnded: Bool,
        closeDelimited: Bool,
        pool: Bool,
        keepClient: Bool
    ) {
        var machine = Machine()
        machine.requestStarted(clientKeepAlive: clientKeepAlive)
        _ = machine.connected(attempt: nil, reused: true, bufferedBodyBytes: 0)
        if requestEnded { _ = machine.requestEnd() }
        _ = machine.responseHead(
            upstreamKeepAlive: upstreamKeepAlive,
            isSwitchingProtocols: false,
            closeDelimited: closeDelimited
        )
        #expect(machine.responseEnd() == .finish(poolConnection: pool, keepClient: keepClient))
        #expect(machine.state == (keepClient ? .idle : .closed))
    }

    @Test("a client that leaves abandons only an exchange under way")
    func clientGone() {
        var idle = Machine()
        let idleAbandoned = idle.clientGone()
        #expect(!idleAbandoned)
        var busy = exchangingOnPooledConnection()
        let busyAbandoned = busy.clientGone()
        #expect(busyAbandoned)
        #expect(busy.requestBody(byteCount: 1) == .drop)
        #expect(busy.upstreamClosed() == .ignore)
    }
}
