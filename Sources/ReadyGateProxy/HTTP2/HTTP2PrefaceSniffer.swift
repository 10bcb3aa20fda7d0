import NIOCore
import NIOHTTP1

/// The first handler of a plaintext connection: tells h2c with prior knowledge (RFC 9113 §3.3) from
/// HTTP/1.1 by the connection's first bytes.
///
/// The HTTP/1.1 handlers are installed behind it from the start, so the connection is HTTP/1.1
/// unless proven otherwise: the first byte that differs from the HTTP/2 connection preface sends
/// everything read so far on to them, and the sniffer leaves. A complete preface replaces them with
/// ``HTTP2Pipeline``. While the bytes are a proper prefix of the preface, the read completions go on
/// (not the bytes), so the entry handler's request-head timeout runs as for a trickled request head:
/// a client that stalls mid-preface gets its `408` and is closed.
final class HTTP2PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// What the first bytes say.
    enum Verdict: Equatable {
        /// A proper prefix of the preface: more bytes are needed.
        case undecided
        case http2
        case http1
    }

    /// Classifies a connection's first bytes.
    static func verdict(_ bytes: ByteBuffer) -> Verdict {
        let count = min(bytes.readableBytes, preface.count)
        let matches = bytes.withUnsafeReadableBytes { raw in
            (0..<count).allSatisfy { raw[$0] == preface[$0] }
        }
        if !matches { return .http1 }
        return count == preface.count ? .http2 : .undecided
    }

    private enum State {
        case sniffing
        /// The preface is in; the HTTP/1.1 handlers are being removed (NIO removes a
        /// `ByteToMessageHandler` on a later tick). What is read meanwhile waits.
        case switching
        case decided
    }

    private let environment: ProxyEnvironment
    private var buffered: ByteBuffer?
    private var state = State.sniffing

    init(environment: ProxyEnvironment) {
        self.environment = environment
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .decided = state {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered!.writeBuffer(&bytes)
        }
        guard case .sniffing = state, let buffered else { return }
        switch Self.verdict(buffered) {
        case .undecided:
            return
        case .http1:
            hand(context: context)
        case .http2:
            state = .switching
            removeHTTP1(context: context).assumeIsolated().whenComplete { [self] result in
                switchToHTTP2(context: context, removed: result)
            }
        }
    }

    /// Sends the bytes read so far on to the protocol chosen, and leaves.
    private func hand(context: ChannelHandlerContext) {
        state = .decided
        if let bytes = buffered {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(bytes))
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func switchToHTTP2(context: ChannelHandlerContext, removed: Result<Void, any Error>) {
        do {
            try removed.get()
            try HTTP2Pipeline.configure(channel: context.channel, environment: environment)
        } catch {
            environment.logger.error("http2_setup_failed", metadata: ["error": "\(error)"])
            state = .decided
            buffered = nil
            context.close(promise: nil)
            return
        }
        hand(context: context)
        context.fireChannelReadComplete()
    }

    /// Removes the HTTP/1.1 handlers ``ReadyGateServer/configureHTTP1(channel:environment:)`` added.
    private func removeHTTP1(context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        let sync = context.pipeline.syncOperations
        // The fast path is one handler; the NIO-codec path three.
        if let fast = try? sync.handler(type: FastHTTP1Handler.self) {
            return sync.removeHandler(fast)
        }
        do {
            let entry = try sync.handler(type: HTTPEntryHandler.self)
            let encoder = try sync.handler(type: HTTPResponseEncoder.self)
            let decoder = try sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            let removals = [sync.removeHandler(entry), sync.removeHandler(encoder), sync.removeHandler(decoder)]
            return EventLoopFuture.andAllSucceed(removals, on: context.eventLoop)
        } catch {
            return context.eventLoop.makeFailedFuture(error)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Undecided: the HTTP/1.1 entry handler's head timeout hears of bytes.
        if case .switching = state { return }
        context.fireChannelReadComplete()
    }
}

@available(*, unavailable)
extension HTTP2PrefaceSniffer: Sendable {}
