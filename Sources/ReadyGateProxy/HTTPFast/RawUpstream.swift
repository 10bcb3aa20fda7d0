import NIOCore
import ReadyGateCore

/// The only handler of a pooled backend connection on the plain-HTTP fast path: bytes in, bytes
/// out, no codec, serving an HTTP/1.1 client's ``FastHTTP1Handler`` or an HTTP/2 stream's
/// ``HTTP2FastExchange``.
typealias RawUpstreamHandler = BackendConnectionHandler<RawUpstreamExchange>

/// What a ``RawUpstreamHandler`` hands its reads and events to while an exchange runs: an HTTP/1.1
/// client's ``FastHTTP1Handler``, or an HTTP/2 stream's ``HTTP2FastExchange``.
protocol RawUpstreamOwner: AnyObject {
    /// Whether the client side takes more bytes now (the backend is not read while it does not).
    var clientIsWritable: Bool { get }
    func upstreamRead(_ data: ByteBuffer, from connection: RawUpstreamHandler)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(_ isWritable: Bool)
    func upstreamError(_ error: any Error)
    func upstreamInactive(_ connection: RawUpstreamHandler)
}

/// A raw backend connection's exchange: whichever ``RawUpstreamOwner`` it serves. A value, so
/// attaching an owner to a connection allocates nothing.
struct RawUpstreamExchange: BackendExchange {
    typealias Response = ByteBuffer
    typealias Request = ByteBuffer

    let owner: any RawUpstreamOwner

    var clientIsWritable: Bool { owner.clientIsWritable }
    func upstreamRead(_ response: ByteBuffer, from connection: RawUpstreamHandler) {
        owner.upstreamRead(response, from: connection)
    }
    func upstreamReadComplete() { owner.upstreamReadComplete() }
    func upstreamWritabilityChanged(_ isWritable: Bool) { owner.upstreamWritabilityChanged(isWritable) }
    func upstreamError(_ error: any Error) { owner.upstreamError(error) }
    func upstreamInactive(_ connection: RawUpstreamHandler) { owner.upstreamInactive(connection) }
}

extension BackendConnectionHandler where Exchange == RawUpstreamExchange {
    func attach(_ owner: any RawUpstreamOwner) { attach(RawUpstreamExchange(owner: owner)) }
}

extension FastHTTP1Handler: RawUpstreamOwner {}

/// The fast path's pool: the same rules as ``UpstreamPool`` for connections without a codec.
typealias RawUpstreamPool = BackendPool<RawUpstreamHandler>

extension ByteBuffer {
    /// The method and target of the HTTP/1.1 request head in these bytes, for log lines (`-` for
    /// what is not there).
    func requestLineForLogs() -> (method: String, path: String) {
        let view = readableBytesView
        guard let firstSpace = view.firstIndex(of: HTTP1HeadParser.sp),
            let secondSpace = view[(firstSpace + 1)...].firstIndex(of: HTTP1HeadParser.sp)
        else { return ("-", "-") }
        return (
            String(decoding: view[view.startIndex..<firstSpace], as: UTF8.self),
            String(decoding: view[(firstSpace + 1)..<secondSpace], as: UTF8.self)
        )
    }
}
