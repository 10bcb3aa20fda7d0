import NIOCore
import NIOEmbedded
import Testing

@testable import ReadyGateProxy

@Suite("RequestHeadDeadline")
struct RequestHeadDeadlineTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var clock = RequestHeadDeadline(idleTimeout: .seconds(10), headerTimeout: .seconds(2))

    @Test("a silent connection is idle at the idle timeout, not before")
    mutating func idle() {
        #expect(clock.verdict(now: Self.start) == nil, "nothing awaited yet")
        clock.awaitHead(now: Self.start)
        #expect(clock.deadline == Self.start + .seconds(10))
        #expect(clock.verdict(now: Self.start + .seconds(9)) == .wait(until: Self.start + .seconds(10)))
        #expect(clock.verdict(now: Self.start + .seconds(10)) == .idle)
    }

    @Test("the header timeout runs from the first byte of a head, and a later byte does not restart it")
    mutating func headTooSlow() {
        clock.awaitHead(now: Self.start)
        clock.bytesArrived(now: Self.start + .seconds(5))
        clock.bytesArrived(now: Self.start + .seconds(6))
        #expect(clock.deadline == Self.start + .seconds(7))
        #expect(clock.verdict(now: Self.start + .seconds(6)) == .wait(until: Self.start + .seconds(7)))
        #expect(clock.verdict(now: Self.start + .seconds(7)) == .headTooSlow)
    }

    @Test("a whole head stops the clock; the next wait starts afresh")
    mutating func headReceived() {
        clock.awaitHead(now: Self.start)
        clock.bytesArrived(now: Self.start + .seconds(1))
        clock.headReceived()
        #expect(clock.deadline == nil)
        #expect(clock.verdict(now: Self.start + .seconds(100)) == nil)
        clock.bytesArrived(now: Self.start + .seconds(100))
        #expect(clock.deadline == nil, "bytes of a request body do not start a head")
        clock.awaitHead(now: Self.start + .seconds(200))
        #expect(clock.verdict(now: Self.start + .seconds(205)) == .wait(until: Self.start + .seconds(210)))
        #expect(clock.verdict(now: Self.start + .seconds(210)) == .idle)
    }
}

/// The entry handler's two bounds on waiting for a request head, on virtual time.
@Suite("Request head timeouts on an EmbeddedChannel")
struct EmbeddedRequestHeadTimeoutTests {
    static func harness() throws -> ForwardHarness {
        try ForwardHarness {
            $0.httpIdleTimeoutMs = 1000
            $0.httpHeaderTimeoutMs = 300
            $0.httpResponseTimeoutMs = 60_000
        }
    }

    @Test("a connection that sends nothing is closed at the idle timeout, with nothing written")
    func silentConnection() throws {
        let harness = try Self.harness()
        harness.loop.advanceTime(by: .milliseconds(999))
        #expect(harness.client.isActive)
        harness.loop.advanceTime(by: .milliseconds(1))
        #expect(!harness.client.isActive)
        #expect(try harness.clientText().isEmpty)
        #expect(harness.upstreams.isEmpty)
    }

    @Test("a head begun and not finished within the header timeout is answered 408")
    func slowHead() throws {
        let harness = try Self.harness()
        harness.loop.advanceTime(by: .milliseconds(500))
        try harness.send("GET / HTTP/1.1\r\nHo")
        harness.loop.advanceTime(by: .milliseconds(200))
        try harness.send("st: exam")
        harness.loop.advanceTime(by: .milliseconds(99))
        #expect(try harness.clientText().isEmpty, "300 ms from the first byte have not passed")
        harness.loop.advanceTime(by: .milliseconds(1))
        let text = try harness.clientText()
        #expect(text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
        #expect(text.contains("Connection: close\r\n"))
        #expect(!harness.client.isActive)
        #expect(harness.upstreams.isEmpty)
    }

    @Test("a head that arrives in time is forwarded, and no timeout runs while its exchange does")
    func headInTime() throws {
        let harness = try Self.harness()
        try harness.send("GET /a HTTP/1.1\r\n")
        harness.loop.advanceTime(by: .milliseconds(299))
        try harness.send("Host: example.test\r\n\r\n")
        #expect(harness.upstreams.count == 1)
        harness.loop.advanceTime(by: .seconds(5))
        #expect(harness.client.isActive, "the backend takes its time; the response timeout governs that")
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "2")]), ForwardHarness.body("ok"), .end(nil))
        #expect(try harness.clientText().hasPrefix("HTTP/1.1 200 OK\r\n"))
    }

    @Test("between keep-alive requests the idle timeout runs from the end of the last response")
    func keepAliveIdle() throws {
        let harness = try Self.harness()
        try harness.send(EmbeddedHTTPForwarderTests.get)
        harness.loop.advanceTime(by: .milliseconds(900))
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "0")]), .end(nil))
        #expect(try harness.clientText().hasPrefix("HTTP/1.1 200 OK\r\n"))
        harness.loop.advanceTime(by: .milliseconds(999))
        #expect(harness.client.isActive, "1 s from the response's end, not from the connection's start")
        harness.loop.advanceTime(by: .milliseconds(1))
        #expect(!harness.client.isActive)
        #expect(try harness.clientText().isEmpty, "an idle connection is closed without a 408")
    }
}

/// What a shutdown does to plain HTTP connections, on virtual time.
@Suite("HTTP connections in a shutdown on an EmbeddedChannel")
struct EmbeddedHTTPDrainTests {
    @Test("the drain closes an idle connection at once")
    func idleClosed() throws {
        let harness = try ForwardHarness()
        #expect(harness.environment.httpConnections.count == 1)
        harness.environment.httpConnections.drainAll()
        harness.loop.run()
        #expect(!harness.client.isActive)
        #expect(try harness.clientText().isEmpty)
        #expect(harness.environment.httpConnections.count == 0)
    }

    @Test("a response in flight during the drain is completed, says Connection: close, and is the last")
    func inFlightCompleted() throws {
        let harness = try ForwardHarness()
        try harness.send(EmbeddedHTTPForwarderTests.get + EmbeddedHTTPForwarderTests.get)
        harness.environment.httpConnections.drainAll()
        harness.loop.run()
        #expect(harness.client.isActive, "the response in flight is waited for")
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "2")]), ForwardHarness.body("ok"), .end(nil))
        let text = try harness.clientText()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("Connection: close\r\n"))
        #expect(text.hasSuffix("\r\n\r\nok"))
        #expect(!harness.client.isActive, "the pipelined second request is not taken")
        #expect(harness.environment.httpConnections.count == 0)
        #expect(try harness.sentUpstream().count == 2, "one request went upstream: head and end")
    }

    @Test("at the end of the drain a response still in flight is cut off")
    func endNowCutsOff() throws {
        let harness = try ForwardHarness()
        try harness.send(EmbeddedHTTPForwarderTests.get)
        harness.environment.httpConnections.drainAll()
        try harness.answer(0, ForwardHarness.head(.ok, [("Content-Length", "10")]), ForwardHarness.body("part"))
        harness.environment.httpConnections.endAll()
        harness.loop.run()
        #expect(!harness.client.isActive)
        #expect(!harness.upstreams[0].isActive, "a backend connection mid-response is not pooled")
        #expect(harness.pool.idleCount == 0)
    }

    @Test("a connection opened during the drain is closed at once")
    func lateConnection() throws {
        let harness = try ForwardHarness()
        harness.environment.httpConnections.drainAll()
        harness.loop.run()
        let late = EmbeddedChannel(loop: harness.loop)
        try ReadyGateServer.configureHTTP1(channel: late, environment: harness.environment)
        try late.connect(to: SocketAddress(ipAddress: "192.0.2.8", port: 40_001)).wait()
        harness.loop.run()
        #expect(!late.isActive)
    }
}
