import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import ReadyGateCore
@testable import ReadyGateProxy

/// A session's timers on an `EmbeddedEventLoop`: a handle is held only while its task is queued, so
/// the session never asks NIO to cancel a task that already ran (NIO searches its whole queue for
/// it), and nothing of a finished session stays queued.
@Suite("Session timers")
struct EmbeddedSessionTimersTests {
    /// A responder that only carries the channel: these tests never answer the client.
    final class SilentResponder: ClientResponder {
        let channel: any Channel

        init(channel: any Channel) {
            self.channel = channel
        }

        func accept(headers: HTTPHeaders, relay: [any ChannelHandler]) throws {}

        func respond(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, contentType: String?) {}
    }

    func makeSession() -> (WebSocketSession, EmbeddedEventLoop) {
        let channel = EmbeddedChannel()
        var settings = ReadyGateSettings()
        settings.environment = .testing
        settings.timing = DeploymentEnvironment.testing.profile
        let environment = ProxyEnvironment(
            settings: settings,
            logger: Logger(label: "timers", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let session = WebSocketSession(
            environment: environment,
            request: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws"),
            headers: HTTPHeaderList(),
            upgrade: ClientUpgradeRequest(key: "dGhlIHNhbXBsZSBub25jZQ==", subprotocols: [], extensions: []),
            responder: SilentResponder(channel: channel)
        )
        return (session, channel.embeddedEventLoop)
    }

    @Test("a timer that fired leaves no handle to cancel")
    func firedTimerLetsGo() {
        let (session, loop) = makeSession()
        var fired = 0
        session.arm(\.gate, in: 5) { _ in fired += 1 }
        #expect(session.timers.gate != nil)
        loop.advanceTime(by: .milliseconds(4))
        #expect(fired == 0)
        #expect(session.timers.gate != nil)
        loop.advanceTime(by: .milliseconds(1))
        #expect(fired == 1)
        #expect(session.timers.gate == nil)
    }

    @Test("a timer re-armed from its own body keeps the new handle (keepalive rounds)")
    func rearmFromBody() {
        let (session, loop) = makeSession()
        var rounds = 0
        func round(_ session: WebSocketSession) {
            rounds += 1
            session.arm(\.keepalive, in: 10, round)
        }
        session.arm(\.keepalive, in: 10, round)
        loop.advanceTime(by: .milliseconds(30))
        #expect(rounds == 3)
        #expect(session.timers.keepalive != nil)
        session.timers.cancelAll()
        loop.advanceTime(by: .milliseconds(30))
        #expect(rounds == 3)
    }

    @Test("the upstream linger armed at the client's close is cancelled with the session's timers")
    func upstreamLingerCancelled() {
        let (session, loop) = makeSession()
        var fired = false
        session.arm(\.upstreamLinger, in: 1_000) { _ in fired = true }
        session.timers.cancelAll()
        #expect(session.timers.upstreamLinger == nil)
        loop.advanceTime(by: .milliseconds(1_000))
        #expect(!fired)
    }
}
