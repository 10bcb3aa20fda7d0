import ArgumentParser
import NIOCore
import NIOPosix
import WSCore

#if canImport(Glibc)
    import Glibc
#endif

/// A lean WebSocket echo backend: answers the upgrade itself, then echoes each data frame
/// (unmasked) with one write per read. Non-upgrade requests get `200 ok` (keep-alive), which
/// is what `wrk` is pointed at.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var upgraded = false
    private var cumulation: ByteBuffer?
    private var needsFlush = false
    private var closing = false
    private static let okResponse: ByteBuffer = {
        var b = ByteBufferAllocator().buffer(capacity: 64)
        b.writeString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
        return b
    }()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        if var c = cumulation {
            cumulation = nil
            c.writeBuffer(&input)
            input = c
        }
        if !upgraded {
            handleHTTP(context: context, input: &input)
        }
        if upgraded, !closing {
            handleFrames(context: context, input: &input)
        }
        if input.readableBytes > 0, !closing {
            if input.readableBytes > 1 << 24 {
                context.close(promise: nil)
                return
            }
            input.discardReadBytes()
            cumulation = input
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func handleHTTP(context: ChannelHandlerContext, input: inout ByteBuffer) {
        while !upgraded, let end = WSHandshake.endOfHead(in: input) {
            let head = input.readString(length: end) ?? ""
            var key: Substring?
            var isUpgrade = false
            for line in head.split(separator: "\r\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].lowercased()
                let value = line[line.index(after: colon)...].trimmingSpaces
                if name == "sec-websocket-key" {
                    key = value
                } else if name == "upgrade", value.lowercased().contains("websocket") {
                    isUpgrade = true
                }
            }
            if isUpgrade, let key {
                let accept = WSHandshake.accept(key: String(key))
                var out = context.channel.allocator.buffer(capacity: 160)
                out.writeString(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        + "Sec-WebSocket-Accept: \(accept)\r\n\r\n")
                context.write(wrapOutboundOut(out), promise: nil)
                upgraded = true
            } else {
                context.write(wrapOutboundOut(Self.okResponse), promise: nil)
            }
            needsFlush = true
        }
        if !upgraded, input.readableBytes > 65536 { context.close(promise: nil) }
    }

    private func handleFrames(context: ChannelHandlerContext, input: inout ByteBuffer) {
        var out: ByteBuffer?
        while let head = WSFrameHead.peek(input), input.readableBytes >= head.headLength + head.payloadLength {
            let length = head.payloadLength
            var firstByte = head.firstByte
            switch head.opcode {
            case 0x8:
                closing = true
            case 0x9:
                firstByte = (firstByte & 0xF0) | 0xA
            case 0xA:
                input.moveReaderIndex(forwardBy: head.headLength + length)
                continue
            default:
                break
            }
            if out == nil { out = context.channel.allocator.buffer(capacity: max(input.readableBytes, 64)) }
            WSFrames.writeHead(into: &out!, firstByte: firstByte, length: length, maskKey: nil)
            let start = input.readerIndex + head.headLength
            let key = head.masked ? head.maskKey : 0
            input.withUnsafeReadableBytes { src in
                let base = start - input.readerIndex
                out!.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { dst in
                    let m0 = UInt8(key >> 24)
                    let m1 = UInt8(truncatingIfNeeded: key >> 16)
                    let m2 = UInt8(truncatingIfNeeded: key >> 8)
                    let m3 = UInt8(truncatingIfNeeded: key)
                    var j = 0
                    while j + 4 <= length {
                        dst[j] = src[base + j] ^ m0
                        dst[j + 1] = src[base + j + 1] ^ m1
                        dst[j + 2] = src[base + j + 2] ^ m2
                        dst[j + 3] = src[base + j + 3] ^ m3
                        j += 4
                    }
                    let ms = [m0, m1, m2, m3]
                    while j < length {
                        dst[j] = src[base + j] ^ ms[j & 3]
                        j += 1
                    }
                    return length
                }
            }
            input.moveReaderIndex(forwardBy: head.headLength + length)
            if closing { break }
        }
        if let out {
            needsFlush = true
            if closing {
                context.writeAndFlush(wrapOutboundOut(out)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                needsFlush = false
            } else {
                context.write(wrapOutboundOut(out), promise: nil)
            }
        }
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return s
    }
}

@main
struct WSEcho: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws-echo", abstract: "A lean WebSocket echo backend for ReadyGate's benchmarks.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 9001
    @Option(help: "Event loop threads.") var threads = 2
    @Option(help: "Exit after this many seconds (nothing runs forever).") var lifetime = 3600
    @Option(help: "Initial receive buffer bytes per read (NIO's adaptive allocator; NIO's default is 2048).")
    var recvInitial = 2048

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(
                .recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: recvInitial, maximum: 65536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
            .bind(host: host, port: port).wait()
        print(#"{"event":"listening","host":"\#(host)","port":\#(port),"threads":\#(threads)}"#)
        fflush(nil)
        channel.eventLoop.scheduleTask(in: .seconds(Int64(lifetime))) { channel.close(promise: nil) }
        try? channel.closeFuture.wait()
        try? group.syncShutdownGracefully()
    }
}

