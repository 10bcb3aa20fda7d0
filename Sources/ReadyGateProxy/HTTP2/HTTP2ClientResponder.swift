import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The client of a WebSocket over HTTP/2 (RFC 8441): an extended CONNECT's stream. The accepting
/// answer is `200` (no `Sec-WebSocket-Accept`: RFC 8441 has no key), after which the stream's DATA
/// frames carry the WebSocket's bytes through the ``HTTP2StreamRouter`` (in its byte mode) to the
/// relay handlers.
final class HTTP2ClientResponder: ClientResponder {
    private let router: HTTP2StreamRouter
    private let context: ChannelHandlerContext

    init(router: HTTP2StreamRouter, context: ChannelHandlerContext) {
        self.router = router
        self.context = context
    }

    var channel: any Channel { context.channel }

    func accept(headers: HTTPHeaders, relay: [any ChannelHandler]) throws {
        var headers = headers
        headers.remove(name: "sec-websocket-accept")
        let block = Self.responseHeaders(status: .ok, headers: headers)
        context.writeAndFlush(router.wrapOutboundOut(.headers(.init(headers: block))), promise: nil)
        try router.switchToBytes(context: context, relay: relay)
    }

    func respond(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, contentType: String?) {
        router.respond(context: context, status: status, headers: headers, body: body, contentType: contentType)
    }

    /// A response's header block: `:status` first, then `headers` normalised for HTTP/2 (lower-case
    /// names; connection-specific fields, RFC 9113 §8.2.2, removed).
    static func responseHeaders(status: HTTPResponseStatus, headers: HTTPHeaders) -> HPACKHeaders {
        var block = HPACKHeaders([(":status", String(status.code))])
        block.add(contentsOf: HPACKHeaders(httpHeaders: headers, normalizeHTTPHeaders: true))
        return block
    }
}

@available(*, unavailable)
extension HTTP2ClientResponder: Sendable {}
