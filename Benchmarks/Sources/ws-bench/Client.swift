import Atomics
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import WSCore

/// Monotonic nanoseconds.
@inline(__always) func nowNanos() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

/// State shared by every connection of one run.
final class RunShared: Sendable {
    let received = ManagedAtomic<Int>(0)
    let stop = ManagedAtomic<Bool>(false)
    let outstanding = ManagedAtomic<Int>(0)
    let histograms = NIOLockedValueBox<[Histogram<UInt64>]>([])
}

/// What a connection does once it is upgraded.
enum ClientMode: Sendable {
    /// Closed loop: keep `inflight` frames in flight, send one more per echo.
    case throughput(inflight: Int)
    /// Open loop: wait for ``StartSchedule``, then send on that schedule.
    case latency
    /// One echo, then stay idle.
    case single
}

/// Starts an open-loop schedule on a connection (sent with `fireUserInboundEventTriggered`).
struct StartSchedule: Sendable {
    var first: UInt64
    var interval: UInt64
    var end: UInt64
    var warmupEnd: UInt64
}

/// Asks a latency connection to hand its histogram to ``RunShared/histograms``.
struct ReportNow: Sendable {}

struct HandshakeFailed: Error, CustomStringConvertible {
    var head: String
    var description: String { "upgrade refused: \(head.prefix(80))" }
}

struct ConnectionClosed: Error {}

/// A lean WebSocket client: writes a pre-encoded masked frame and counts echoed frames with
/// ``WSFrameCounter``; nothing is decoded beyond frame heads.
final class WSClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let mode: ClientMode
    private let request: String
    private let frame: ByteBuffer
    private let frameLength: Int
    private let batch: ByteBuffer
    private let shared: RunShared
    private let opened: EventLoopPromise<UInt64>
    private let echoed: EventLoopPromise<UInt64>
    private var isOpen = false
    private var didEcho = false
    private var failed = false
    private var head: ByteBuffer?
    private var counter = WSFrameCounter()
    private var wrote = false
    // Open loop.
    private var schedule: StartSchedule?
    private var nextDue: UInt64 = 0
    private var sentAt = CircularBuffer<UInt64>(initialCapacity: 64)
    private var histogram = Histogram<UInt64>(
        lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)

    init(
        mode: ClientMode, host: String, port: Int, frame: ByteBuffer, shared: RunShared,
        opened: EventLoopPromise<UInt64>, echoed: EventLoopPromise<UInt64>
    ) {
        self.mode = mode
        self.request = WSHandshake.upgradeRequest(host: host, port: port)
        self.frame = frame
        self.frameLength = frame.readableBytes
        var batch = frame
        if case .throughput(let inflight) = mode {
            batch = ByteBufferAllocator().buffer(capacity: frame.readableBytes * inflight)
            for _ in 0..<inflight {
                var f = frame
                batch.writeBuffer(&f)
            }
        }
        self.batch = batch
        self.shared = shared
        self.opened = opened
        self.echoed = echoed
    }

    func channelActive(context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: request.utf8.count)
        out.writeString(request)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        if !isOpen {
            if var h = head {
                head = nil
                h.writeBuffer(&input)
                input = h
            }
            guard let end = WSHandshake.endOfHead(in: input) else {
                head = input
                return
            }
            let status = input.readString(length: end) ?? ""
            guard status.hasPrefix("HTTP/1.1 101") else {
                fail(HandshakeFailed(head: status))
                context.close(promise: nil)
                return
            }
            isOpen = true
            opened.succeed(nowNanos())
            switch mode {
            case .throughput:
                context.write(wrapOutboundOut(batch), promise: nil)
                wrote = true
            case .single:
                context.write(wrapOutboundOut(frame), promise: nil)
                wrote = true
            case .latency:
                break
            }
            if input.readableBytes == 0 { return }
        }
        let frames = counter.feed(input)
        guard frames > 0 else { return }
        if !didEcho {
            didEcho = true
            echoed.succeed(nowNanos())
        }
        switch mode {
        case .throughput(let inflight):
            shared.received.wrappingIncrement(by: frames, ordering: .relaxed)
            if !shared.stop.load(ordering: .relaxed) {
                var left = frames
                while left > 0 {
                    let n = min(left, inflight)
                    context.write(wrapOutboundOut(batch.getSlice(at: batch.readerIndex, length: n * frameLength)!), promise: nil)
                    left -= n
                }
                wrote = true
            }
        case .latency:
            let now = nowNanos()
            let warmupEnd = schedule?.warmupEnd ?? .max
            for _ in 0..<frames {
                guard let scheduled = sentAt.popFirst() else { break }
                if scheduled >= warmupEnd {
                    _ = histogram.record(now &- scheduled)
                }
            }
        case .single:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if wrote {
            wrote = false
            context.flush()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let start = event as? StartSchedule {
            schedule = start
            nextDue = start.first
            scheduleNext(context: context)
        } else if event is ReportNow {
            shared.outstanding.wrappingIncrement(by: sentAt.count, ordering: .relaxed)
            let h = histogram
            shared.histograms.withLockedValue { $0.append(h) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func scheduleNext(context: ChannelHandlerContext) {
        guard let s = schedule, nextDue < s.end else { return }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().scheduleTask(deadline: NIODeadline.uptimeNanoseconds(nextDue)) {
            self.tick(context: loopBound.value)
        }
    }

    private func tick(context: ChannelHandlerContext) {
        guard let s = schedule, context.channel.isActive else { return }
        let now = nowNanos()
        var any = false
        while nextDue <= now, nextDue < s.end {
            context.write(wrapOutboundOut(frame), promise: nil)
            sentAt.append(nextDue)
            nextDue &+= s.interval
            any = true
        }
        if any { context.flush() }
        scheduleNext(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(ConnectionClosed())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: Error) {
        guard !failed else { return }
        failed = true
        if !isOpen { opened.fail(error) }
        if !didEcho { echoed.fail(error) }
    }
}

/// One client session: its channel, when it was upgraded, and when its first echo came back.
struct Session {
    var channel: EventLoopFuture<Channel>
    var opened: EventLoopFuture<UInt64>
    var echoed: EventLoopFuture<UInt64>
}

func openSession(
    group: EventLoopGroup, host: String, port: Int, mode: ClientMode, frame: ByteBuffer, shared: RunShared
) -> Session {
    let loop = group.next()
    let opened = loop.makePromise(of: UInt64.self)
    let echoed = loop.makePromise(of: UInt64.self)
    let channel = ClientBootstrap(group: loop)
        .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        .connectTimeout(.seconds(10))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    WSClientHandler(
                        mode: mode, host: host, port: port, frame: frame, shared: shared,
                        opened: opened, echoed: echoed))
            }
        }
        .connect(host: host, port: port)
    channel.whenFailure { error in
        opened.fail(error)
        echoed.fail(error)
    }
    return Session(channel: channel, opened: opened.futureResult, echoed: echoed.futureResult)
}
