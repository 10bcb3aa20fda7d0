import NIOCore
import NIOHTTP1
import ReadyGateCore

/// Sends ReadyGate's upgrade request to the backend and reads the answer (RFC 6455 §4.1).
///
/// A `101` is reported to the session, which checks it and installs the relay; any other answer
/// is collected (head and a bounded body) so `upstream` accept mode can relay it. The session's
/// state machine decides what each answer means.
final class UpstreamHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    /// The most of a rejection's body relayed to the client.
    static let maxRelayedBodyBytes = 64 * 1024

    private let session: any UpstreamHandshakeObserver
    private let request: HTTPRequestHead
    private let attempt: Int
    private var response: HTTPResponseHead?
    private var body: ByteBuffer?
    private var finished = false

    init(session: any UpstreamHandshakeObserver, request: HTTPRequestHead, attempt: Int) {
        self.session = session
        self.request = request
        self.attempt = attempt
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { sendRequest(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendRequest(context: context)
        context.fireChannelActive()
    }

    private var sent = false
    private func sendRequest(context: ChannelHandlerContext) {
        guard !sent else { return }
        sent = true
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            response = head
        case .body(var chunk):
            if body == nil { body = context.channel.allocator.buffer(capacity: chunk.readableBytes) }
            let room = Self.maxRelayedBodyBytes - body!.readableBytes
            if room > 0, let slice = chunk.readSlice(length: min(room, chunk.readableBytes)) {
                var slice = slice
                body!.writeBuffer(&slice)
            }
        case .end:
            guard let response else { return }
            finished = true
            if response.status == .switchingProtocols {
                // The decoder stops at a 101; what the backend sent after it is forwarded as bytes
                // to the relay half once the decoder is removed.
                session.upstreamAnswered101(response, context: context, attempt: attempt)
                return
            }
            session.upstreamAnsweredNon101(response, body: body, attempt: attempt)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished {
            finished = true
            session.upstreamAttemptFailed(attempt: attempt, error: "connection closed before the upgrade answer")
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The connection allows half-closure (for the relay after the switch): before the answer,
        // the backend's end of output is the end of this attempt.
        if let event = event as? ChannelEvent, case .inputClosed = event, !finished {
            finished = true
            session.upstreamAttemptFailed(attempt: attempt, error: "connection closed before the upgrade answer")
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if !finished {
            finished = true
            session.upstreamAttemptFailed(attempt: attempt, error: "\(error)")
        }
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension UpstreamHandshakeHandler: Sendable {}
