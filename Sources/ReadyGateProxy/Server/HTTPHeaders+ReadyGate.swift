import NIOCore
import NIOHTTP1
import ReadyGateCore

extension HTTPHeaderList {
    /// Core's view of NIO's header fields, in order.
    init(_ headers: HTTPHeaders) {
        self.init(headers.map { (name: $0.name, value: $0.value) })
    }
}

extension HTTPHeaders {
    /// NIO header fields from Core's list, in order.
    init(_ list: HTTPHeaderList) {
        self.init(list.fields.map { ($0.name, $0.value) })
    }
}

extension ChannelHandlerContext {
    /// Writes a complete HTTP/1.1 response that ReadyGate answers itself (errors, a relayed
    /// rejection): `Content-Length` from the body, `Content-Type` when given, and `Connection`.
    ///
    /// The context must sit behind an `HTTPResponseEncoder`.
    /// - Parameter headOnly: the answer to a `HEAD`: the fields describe `body`, which is not sent.
    /// - Returns: the future of the last write, after which the caller may close.
    func writeHTTPResponse(
        status: HTTPResponseStatus,
        headers: HTTPHeaders = HTTPHeaders(),
        body: ByteBuffer,
        contentType: String?,
        keepAlive: Bool,
        headOnly: Bool = false
    ) -> EventLoopFuture<Void> {
        var headers = headers
        if let contentType { headers.replaceOrAdd(name: "Content-Type", value: contentType) }
        headers.remove(name: "Transfer-Encoding")
        headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
        write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        if !headOnly { write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(body))), promise: nil) }
        return writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
    }
}

/// The content type of the plain-text bodies ReadyGate writes.
let plainTextContentType = "text/plain; charset=utf-8"
