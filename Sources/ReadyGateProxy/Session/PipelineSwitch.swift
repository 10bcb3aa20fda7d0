import NIOCore
import NIOHTTP1

/// Turns a client connection from HTTP/1.1 into WebSocket bytes once its 101 is written.
///
/// The relay half is added behind the entry handler first; then the HTTP handlers go, the request
/// decoder last, so the bytes it read past the request head (frames the client sent at once)
/// reach the relay, in order (`leftOverBytesStrategy: .forwardBytes`).
enum ClientPipeline {
    static func switchToWebSocket(context: ChannelHandlerContext, relay: SpliceHandler) throws {
        let sync = context.pipeline.syncOperations
        try sync.addHandler(relay, position: .after(context.handler))
        let encoder = try sync.handler(type: HTTPResponseEncoder.self)
        let decoder = try sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        sync.removeHandler(encoder, promise: nil)
        sync.removeHandler(context: context, promise: nil)
        sync.removeHandler(decoder, promise: nil)
    }
}

/// The same switch for the upstream connection after the backend's verified 101.
enum UpstreamPipeline {
    static func switchToWebSocket(
        context: ChannelHandlerContext,
        handshake: UpstreamHandshakeHandler,
        relay: SpliceHandler
    ) throws {
        let sync = context.pipeline.syncOperations
        relay.holdWritesUntilSwitched()
        try sync.addHandler(relay, position: .after(context.handler))
        let encoder = try sync.handler(type: HTTPRequestEncoder.self)
        let decoder = try sync.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self)
        sync.removeHandler(encoder, promise: nil)
        sync.removeHandler(context: context, promise: nil)
        sync.removeHandler(decoder).assumeIsolated().whenComplete { _ in relay.pipelineSwitched() }
    }
}
