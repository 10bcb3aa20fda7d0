import ArgumentParser
import NIOCore
import NIOHTTP1
import NIOPosix

/// A plain HTTP/1.1 server on NIO's own codecs that answers every request `200 ok`, keep-alive.
///
/// It is not a proxy: `run.sh` measures it with wrk to show what one NIO HTTP/1 hop costs on this
/// machine (decode a request, encode a response). A proxy on NIO's codecs makes two such hops per
/// request (client side and backend side), so twice this is the floor for ReadyGate's plain HTTP.
@main
struct HTTPHello: ParsableCommand {
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 9002
    @Option(help: "Event loop threads.") var threads = 2
    @Option(help: "Exit after this many seconds (nothing runs forever).") var lifetime = 3600

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withPipeliningAssistance: false,
                        withErrorHandling: false
                    )
                    try channel.pipeline.syncOperations.addHandler(OKHandler())
                }
            }
            .bind(host: host, port: port).wait()
        print(#"{"event":"listening","host":"\#(host)","port":\#(port),"threads":\#(threads)}"#)
        channel.eventLoop.scheduleTask(in: .seconds(Int64(lifetime))) { channel.close(promise: nil) }
        try? channel.closeFuture.wait()
        try? group.syncShutdownGracefully()
    }
}

/// Answers each request at its end; flushes once per read batch.
final class OKHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var keepAlive = true
    private let head: HTTPResponseHead = {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: "3")
        headers.add(name: "Content-Type", value: "text/plain")
        return HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)
    }()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            keepAlive = request.isKeepAlive
        case .body:
            break
        case .end:
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok\n")))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive { done.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
        }
    }
}
