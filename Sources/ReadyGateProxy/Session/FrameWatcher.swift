import NIOCore
import ReadyGateCore

/// The first handler of a relay half: it scans the WebSocket frames its peer sends, passes the
/// bytes on untouched, and reports to the session what matters to it — a close frame, a protocol
/// error, the backend's ready message, and the peer's end of input or of connection. It keeps the
/// direction's traffic counters for the session summary.
///
/// Reports come after the bytes that carried them were passed on, so whatever the session does
/// about them (closing a channel, say) happens after those bytes were relayed. After a protocol
/// error it stops scanning and only counts bytes: the endpoints deal with a broken stream.
final class FrameWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let side: SessionStateMachine.Side
    /// Nil once detached: a replaced backend connection reports nothing more.
    private var events: (any SessionEvents)?
    private var scanner: WebSocketFrameScanner
    /// Set by a protocol error: from then on bytes are only counted.
    private var stopped = false
    private var bytesAfterStop: UInt64 = 0
    /// Looks for the ready message in the backend's frames (upstream half, message gate, until it
    /// matched). Boxed: a spliced session keeps a nil pointer, not a matcher's worth of bytes.
    private var readyMatch: Boxed<ReadyMessageMatcher>?
    private var sawCloseFrame = false
    /// Called once, in order, after the read that leaves the stream at a frame boundary
    /// (keepalive: a ping of the proxy's may go into this direction's stream only between frames).
    var atFrameBoundary: [() -> Void] = []
    private var reportedInputClosed = false

    init(side: SessionStateMachine.Side, scanner: WebSocketFrameScanner, events: any SessionEvents) {
        self.side = side
        self.scanner = scanner
        self.events = events
    }

    /// The counters of this direction.
    var stats: WebSocketTrafficStats {
        var stats = scanner.stats
        stats.bytes += bytesAfterStop
        return stats
    }

    /// Whether the bytes passed on so far end between two frames (false once the stream broke).
    var isAtFrameBoundary: Bool { !stopped && scanner.isAtFrameBoundary }

    /// The session no longer listens to this connection (a replay replaced it).
    func detach() {
        events = nil
    }

    /// Starts looking for the backend's ready message.
    func watchForReadyMessage(_ readyMessage: String) {
        readyMatch = Boxed(ReadyMessageMatcher(readyMessage: readyMessage))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard !stopped else {
            bytesAfterStop += UInt64(buffer.readableBytes)
            context.fireChannelRead(data)
            return
        }
        var watching = scanner
        var closeCode: UInt16??
        var ready = false
        var failure: WebSocketProtocolError?
        buffer.withUnsafeReadableBytes { bytes in
            do throws(WebSocketProtocolError) {
                try watching.scan(bytes) { event in
                    if let readyMatch {
                        readyMatch.value.observe(event, in: bytes)
                        ready = ready || readyMatch.value.matched
                    }
                    if case .frameEnd(let header, _, let code) = event, header.opcode == .close, closeCode == nil {
                        closeCode = .some(code)
                    }
                }
            } catch {
                failure = error
            }
        }
        scanner = watching
        stopped = failure != nil
        context.fireChannelRead(data)
        if ready {
            readyMatch = nil
            events?.readyMessageSeen()
        }
        if let closeCode, !sawCloseFrame {
            sawCloseFrame = true
            events?.closeFrame(from: side, code: closeCode)
        }
        if let failure { events?.protocolError(from: side, failure) }
        if !atFrameBoundary.isEmpty && isAtFrameBoundary {
            let waiting = atFrameBoundary
            atFrameBoundary = []
            for body in waiting { body() }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            reportInputClosed(gone: false)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        reportInputClosed(gone: true)
        context.fireChannelInactive()
    }

    private func reportInputClosed(gone: Bool) {
        if reportedInputClosed && !gone { return }
        reportedInputClosed = true
        events?.inputClosed(side, gone: gone)
    }
}

@available(*, unavailable)
extension FrameWatcher: Sendable {}
