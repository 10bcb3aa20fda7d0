import NIOCore
import NIOHTTP1

/// How a session answers the client's upgrade request before the splice: the accepting answer
/// (HTTP/1.1's `101`) with the relay handlers installed behind it, or an HTTP error. This is the
/// session's transport seam: HTTP/1.1 here, an HTTP/2 stream (RFC 8441, `200` to an extended
/// CONNECT) as another conformance. A class, so that a session keeps one reference to it.
protocol ClientResponder: AnyObject {
    /// The client's channel (over HTTP/2, its stream channel).
    var channel: any Channel { get }
    /// Sends the accepting answer with `headers`, then puts `relay` in place of the HTTP handlers.
    func accept(headers: HTTPHeaders, relay: [any ChannelHandler]) throws
    /// Answers with an HTTP response of the proxy's own or a relayed one, then closes.
    func respond(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, contentType: String?)
}

/// The HTTP/1.1 client: the entry handler's context, until the pipeline switch.
final class HTTP1ClientResponder: ClientResponder {
    let context: ChannelHandlerContext

    init(context: ChannelHandlerContext) {
        self.context = context
    }

    var channel: any Channel { context.channel }

    func accept(headers: HTTPHeaders, relay: [any ChannelHandler]) throws {
        var headers = headers
        headers.add(name: "Upgrade", value: "websocket")
        headers.add(name: "Connection", value: "Upgrade")
        let head = HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
        try ClientPipeline.switchToWebSocket(context: context, relay: relay)
    }

    func respond(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, contentType: String?) {
        let channel = context.channel
        context.writeHTTPResponse(
            status: status,
            headers: headers,
            body: body,
            contentType: contentType,
            keepAlive: false
        )
        .assumeIsolated().whenComplete { _ in channel.close(promise: nil) }
        // Read on, so the close is seen even from a client that stopped being read.
        channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
    }
}

@available(*, unavailable)
extension HTTP1ClientResponder: Sendable {}
