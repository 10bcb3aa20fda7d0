import NIOCore
import NIOHTTP1
import ReadyGateCore

/// Entry points for ReadyGate's allocation microbenchmarks (`Benchmarks/Micro`), which measure
/// internal handlers and rewrites. Those benchmarks build in release mode, where `@testable import`
/// is not available, so they reach the internals through this small surface instead. Not API: it
/// is `@_spi(Benchmarks)`, invisible to a plain `import ReadyGateProxy`, and may change at any time.
@_spi(Benchmarks)
public enum BenchmarkSupport {
    /// Turns `client` and `upstream` into the relay halves of a spliced session (one whose gate
    /// opened and whose hold is gone): a ``FrameWatcher`` then a ``GlueHandler`` on each, the two
    /// glues paired. The watchers scan as the session's do (the client's frames masked, the
    /// backend's not); what they report is dropped, as no data frame makes them report anything.
    /// Both channels must run on one event loop. With `keepaliveFilters`, a ``FrameFilterHandler``
    /// sits between watcher and glue on each side, as keepalive (`READYGATE_PING_INTERVAL_MS`)
    /// keeps one there for a session's whole life; no ping is out, so every frame passes.
    ///
    /// - Returns: the two directions' counters, to check that the frames were scanned as intended.
    public static func addSplicedRelay(
        client: any Channel,
        upstream: any Channel,
        maxMessageBytes: UInt64 = UInt64(ReadyGateSettings().maxMessageBytes),
        keepaliveFilters: Bool = false
    ) throws -> SplicedRelayCounters {
        let events = DiscardedSessionEvents()
        let clientScanner = WebSocketFrameScanner(role: .client, maxMessageBytes: maxMessageBytes)
        let upstreamScanner = WebSocketFrameScanner(role: .server)
        let clientWatcher = FrameWatcher(side: .client, scanner: clientScanner, events: events)
        let upstreamWatcher = FrameWatcher(side: .upstream, scanner: upstreamScanner, events: events)
        let clientGlue = GlueHandler()
        let upstreamGlue = GlueHandler()
        GlueHandler.pair(clientGlue, upstreamGlue)
        try client.pipeline.syncOperations.addHandlers([clientWatcher, clientGlue])
        try upstream.pipeline.syncOperations.addHandlers([upstreamWatcher, upstreamGlue])
        if keepaliveFilters {
            let clientFilter = FrameFilterHandler(side: .client, scanner: clientScanner, events: events)
            let upstreamFilter = FrameFilterHandler(side: .upstream, scanner: upstreamScanner, events: events)
            try client.pipeline.syncOperations.addHandler(clientFilter, position: .before(clientGlue))
            try upstream.pipeline.syncOperations.addHandler(upstreamFilter, position: .before(upstreamGlue))
        }
        return SplicedRelayCounters(client: clientWatcher, upstream: upstreamWatcher)
    }

    /// The forwarded identity of a client address, computed once per connection (as
    /// ``HTTPForwarder`` does): the `X-Forwarded-For` node and the `Forwarded` element.
    public static func forwardedIdentity(clientAddress: String?) -> (forwardedFor: String, forwardedElement: String) {
        ForwardedMessage.forwardedIdentity(clientAddress: clientAddress)
    }

    /// The plain-HTTP request head the backend gets, rewritten once per request.
    public static func upstreamRequestHead(
        _ head: HTTPRequestHead,
        forwardedFor: String,
        forwardedElement: String
    ) -> HTTPRequestHead {
        ForwardedMessage.upstreamRequestHead(head, forwardedFor: forwardedFor, forwardedElement: forwardedElement)
    }

    /// The plain-HTTP response head the client gets, rewritten once per response.
    public static func clientResponseHead(
        _ head: HTTPResponseHead,
        requestMethod: HTTPMethod,
        requestVersion: HTTPVersion,
        keepAlive: Bool
    ) -> HTTPResponseHead {
        ForwardedMessage.clientResponseHead(
            head,
            requestMethod: requestMethod,
            requestVersion: requestVersion,
            keepAlive: keepAlive
        ).head
    }
}

/// The traffic counters of a relay made by ``BenchmarkSupport/addSplicedRelay(client:upstream:maxMessageBytes:)``.
@_spi(Benchmarks)
public struct SplicedRelayCounters {
    private let client: FrameWatcher
    private let upstream: FrameWatcher

    fileprivate init(client: FrameWatcher, upstream: FrameWatcher) {
        self.client = client
        self.upstream = upstream
    }

    /// What the client sent, as its watcher counted it.
    public var fromClient: WebSocketTrafficStats { client.stats }
    /// What the backend sent, as its watcher counted it.
    public var fromUpstream: WebSocketTrafficStats { upstream.stats }
    /// Whether both watchers stand between two frames and still scan (false after a protocol error).
    public var bothAtFrameBoundary: Bool { client.isAtFrameBoundary && upstream.isAtFrameBoundary }
}

@available(*, unavailable)
extension SplicedRelayCounters: Sendable {}

/// Session reports that nobody listens to (the benchmarks' relay has no session).
private final class DiscardedSessionEvents: SessionEvents {
    func closeFrame(from side: SessionStateMachine.Side, code: UInt16?) {}
    func protocolError(from side: SessionStateMachine.Side, _ error: WebSocketProtocolError) {}
    func inputClosed(_ side: SessionStateMachine.Side, gone: Bool) {}
    func readyMessageSeen() {}
    func clientFramesHeld(frames: Int, bytes: Int) {}
    func holdFull(bytes: Int) {}
    func ownPongReceived(from side: SessionStateMachine.Side) {}
    func backendDataStarted() {}
}
