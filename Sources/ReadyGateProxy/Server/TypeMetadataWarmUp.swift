import NIOCore
import NIOHTTP1
import NIOHTTP2

/// Makes the Swift runtime instantiate, once and on one thread, the metadata of the generic types
/// every connection uses, before the listener takes connections.
///
/// Generic type metadata is instantiated lazily, at a type's first use. A CI run of the end-to-end
/// tests crashed the debug build when both event loops took their first upgrade request at the
/// same moment: the runtime dereferenced a null metadata pointer while one loop was instantiating
/// `ByteToMessageHandler<HTTPRequestDecoder>` and the other `HTTPPart`'s metadata
/// (`swift_checkMetadataState` in `swift_conformsToProtocol`, the frame of
/// swiftlang/swift#58414). The runtime should allow that race; it did not. Instantiating the types
/// at start-up takes the race away.
enum TypeMetadataWarmUp {
    /// Instantiates the metadata; returns how many values and types it touched.
    @discardableResult
    static func run() -> Int {
        let touched: [Any] = [
            // The NIO-codec path and the session's upstream handshake.
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)),
            ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)),
            HTTPResponseEncoder(),
            HTTPRequestEncoder(),
            HTTPServerRequestPart.end(nil),
            HTTPServerResponsePart.end(nil),
            HTTPClientRequestPart.end(nil),
            HTTPClientResponsePart.end(nil),
            NIOAny(HTTPServerRequestPart.end(nil)),
            NIOAny(HTTPClientResponsePart.end(nil)),
            // HTTP/2.
            HTTP2FramePayloadToHTTP1ServerCodec(),
            HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer()))),
            // The backend pools and their connections' handlers (ReadyGate's own generics).
            ObjectIdentifier(BackendConnectionHandler<HTTPForwarder>.self),
            ObjectIdentifier(BackendConnectionHandler<RawUpstreamExchange>.self),
            ObjectIdentifier(BackendPool<UpstreamHTTPHandler>.self),
            ObjectIdentifier(BackendPool<RawUpstreamHandler>.self),
        ]
        return keep(touched)
    }

    /// Not inlined, so that the values above are made, not optimised away.
    @inline(never)
    private static func keep(_ values: [Any]) -> Int {
        values.count
    }
}
