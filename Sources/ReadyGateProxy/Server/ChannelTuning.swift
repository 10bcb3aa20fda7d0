import NIOCore

/// Socket options every proxied connection gets, client side and upstream side alike.
enum ChannelTuning {
    /// Receive buffers start small and grow with the traffic (up to 64 KiB per read).
    ///
    /// Each NIO channel keeps its last receive buffer for reuse, so the initial size is paid by
    /// every idle connection, twice per spliced session. NIO's default starts at 2 KiB; chat
    /// traffic is mostly small messages, and a busy connection grows its buffer within a few reads.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65_536)
}
