import NIOCore

/// The only handler of a pooled backend connection on the plain-HTTP fast path: bytes in, bytes
/// out, no codec, serving a ``FastHTTP1Handler``.
typealias RawUpstreamHandler = BackendConnectionHandler<FastHTTP1Handler>

extension FastHTTP1Handler: BackendExchange {
    typealias Response = ByteBuffer
    typealias Request = ByteBuffer
}

/// The fast path's pool: the same rules as ``UpstreamPool`` for connections without a codec.
typealias RawUpstreamPool = BackendPool<RawUpstreamHandler>
