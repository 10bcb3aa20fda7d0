import NIOCore

/// Socket options every proxied connection gets, client side and upstream side alike.
enum ChannelTuning {
    /// Receive buffers start small and grow with the traffic (up to 64 KiB per read).
    ///
    /// Each NIO channel keeps its last receive buffer for reuse, so the initial size is paid by
    /// every idle connection, twice per spliced session. NIO's default starts at 2 KiB; chat
    /// traffic is mostly small messages, and a busy connection grows its buffer within a few reads.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65_536)

    /// A relay half reads once per read event (NIO's default is up to 4 reads), so that its partner
    /// is asked about writability between any two reads.
    ///
    /// The glue reads only while its partner's channel is writable, but it is asked once per read
    /// event: with 4 reads per event a direction whose reader is slow could hold the partner's write
    /// buffer (64 KiB high-water mark) plus 4 receive buffers of up to 64 KiB each. With one read,
    /// the bound is the write buffer plus one receive buffer per direction.
    static let relayMessagesPerRead: UInt = 1

    /// Sets what every proxied connection gets: its peer may half-close (a WebSocket or HTTP peer that
    /// ends its output still reads the answer), no Nagle delay, and ``receiveAllocator``. Called at
    /// the start of a channel initializer, so before the channel registers or connects.
    ///
    /// Set through `syncOptions` rather than as bootstrap options: a bootstrap applies its options
    /// one after another through a chain of futures, per connection, which cost about 5 % of the
    /// user-space CPU of a new WebSocket session (two connections) in a `perf` profile of
    /// `ws-bench sessions`. `ClientBootstrap` also sets `TCP_NODELAY` by default: `nodelay: false`
    /// leaves that one to it and saves a second `setsockopt`.
    static func applyConnectionOptions(to channel: any Channel, nodelay: Bool = true) throws {
        guard let options = channel.syncOptions else { return }
        try options.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        if nodelay { try options.setOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1) }
        try options.setOption(ChannelOptions.recvAllocator, value: receiveAllocator)
    }

    /// Applies ``relayMessagesPerRead`` to a socket channel that is becoming a relay half.
    static func tuneForRelay(_ channel: any Channel) throws {
        try channel.syncOptions?.setOption(ChannelOptions.maxMessagesPerRead, value: relayMessagesPerRead)
    }
}
