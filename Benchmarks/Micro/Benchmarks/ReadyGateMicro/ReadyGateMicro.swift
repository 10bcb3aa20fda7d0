import Benchmark
import NIOCore
import NIOEmbedded
import NIOHTTP1
import ReadyGateCore
@_spi(Benchmarks) import ReadyGateProxy

// ReadyGate's allocation microbenchmarks. Each benchmark measures one batch of work between
// `startMeasurement()` and `stopMeasurement()`, after a warm-up of the same work, so the malloc
// count of an iteration is the batch's own: allocations per operation = count / batch size.
// The counts are what CI checks (`Benchmarks/micro-check.sh` against `Thresholds/`); the times
// are only for a person reading a run. Names have no spaces: package-benchmark 1.38.1 writes a
// threshold file with spaces turned into underscores but looks for it by the name as it is.

/// Messages each way, frames scanned, requests rewritten: one batch.
let batch = 1_000

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = Benchmark.Configuration(
        metrics: [.mallocCountTotal, .wallClock],
        timeUnits: .microseconds,
        warmupIterations: 2,
        scalingFactor: .one,
        maxDuration: .seconds(1),
        maxIterations: 50,
        thresholds: [.mallocCountTotal: BenchmarkThresholds(absolute: [.p90: 0])]
    )

    // MARK: Frame scanner

    Benchmark("scanner-1000-small-frames-in-one-read") { benchmark in
        let stream = smallFrames(count: batch, masked: true)
        scanAll(stream, chunk: stream.count)
        benchmark.startMeasurement()
        blackHole(scanAll(stream, chunk: stream.count))
        benchmark.stopMeasurement()
    }

    Benchmark("scanner-1000-small-frames-in-7-byte-reads") { benchmark in
        let stream = smallFrames(count: batch, masked: true)
        scanAll(stream, chunk: 7)
        benchmark.startMeasurement()
        blackHole(scanAll(stream, chunk: 7))
        benchmark.stopMeasurement()
    }

    // MARK: Head rewrites

    Benchmark("upgrade-request-headers-1000-rewrites") { benchmark in
        let client = browserUpgradeHeaders()
        blackHole(
            ProxyHeaders.upstreamUpgradeHeaders(
                client: client,
                key: upstreamKey,
                keepExtensions: false,
                clientAddress: "192.0.2.7",
                proto: "http"
            )
        )
        benchmark.startMeasurement()
        for _ in 0..<batch {
            blackHole(
                ProxyHeaders.upstreamUpgradeHeaders(
                    client: client,
                    key: upstreamKey,
                    keepExtensions: false,
                    clientAddress: "192.0.2.7",
                    proto: "http"
                )
            )
        }
        benchmark.stopMeasurement()
    }

    Benchmark("http-request-head-1000-rewrites") { benchmark in
        let head = browserRequestHead()
        let (forwardedFor, forwardedElement) = BenchmarkSupport.forwardedIdentity(clientAddress: "192.0.2.7")
        blackHole(
            BenchmarkSupport.upstreamRequestHead(head, forwardedFor: forwardedFor, forwardedElement: forwardedElement)
        )
        benchmark.startMeasurement()
        for _ in 0..<batch {
            blackHole(
                BenchmarkSupport.upstreamRequestHead(
                    head,
                    forwardedFor: forwardedFor,
                    forwardedElement: forwardedElement
                )
            )
        }
        benchmark.stopMeasurement()
    }

    Benchmark("http-response-head-1000-rewrites") { benchmark in
        let head = backendResponseHead()
        blackHole(rewriteResponse(head))
        benchmark.startMeasurement()
        for _ in 0..<batch {
            blackHole(rewriteResponse(head))
        }
        benchmark.stopMeasurement()
    }

    // MARK: Fast path heads (Core's HTTP1HeadParser and HTTP1HeadRewriter, on bytes)

    Benchmark("fast-http-request-head-1000-parses-and-rewrites") { benchmark in
        let head = browserRequestBytes()
        let (forwardedFor, forwardedElement) = BenchmarkSupport.forwardedIdentity(clientAddress: "192.0.2.7")
        var out = ByteBuffer()
        out.reserveCapacity(head.count + 256)
        parseAndRewriteRequest(head, forwardedFor: forwardedFor, forwardedElement: forwardedElement, into: &out)
        benchmark.startMeasurement()
        for _ in 0..<batch {
            parseAndRewriteRequest(head, forwardedFor: forwardedFor, forwardedElement: forwardedElement, into: &out)
        }
        benchmark.stopMeasurement()
        blackHole(out)
    }

    Benchmark("fast-http-response-head-1000-parses-and-rewrites") { benchmark in
        let head = backendResponseBytes()
        var out = ByteBuffer()
        out.reserveCapacity(head.count + 64)
        parseAndRewriteResponse(head, into: &out)
        benchmark.startMeasurement()
        for _ in 0..<batch {
            parseAndRewriteResponse(head, into: &out)
        }
        benchmark.stopMeasurement()
        blackHole(out)
    }

    // MARK: Relay

    Benchmark("relay-spliced-1000-small-messages-each-way") { benchmark in
        try! measureSplicedRelay(benchmark, framesPerRead: 1, keepaliveFilters: false)
    }

    // A busy session's reads carry several messages (50 connections x 8 in flight in `run.sh`).
    Benchmark("relay-spliced-1000-reads-of-8-messages-each-way") { benchmark in
        try! measureSplicedRelay(benchmark, framesPerRead: 8, keepaliveFilters: false)
    }

    // Keepalive keeps a frame filter on each side for a session's whole life.
    Benchmark("relay-keepalive-1000-small-messages-each-way") { benchmark in
        try! measureSplicedRelay(benchmark, framesPerRead: 1, keepaliveFilters: true)
    }

    Benchmark("relay-keepalive-1000-reads-of-8-messages-each-way") { benchmark in
        try! measureSplicedRelay(benchmark, framesPerRead: 8, keepaliveFilters: true)
    }

    Benchmark("relay-harness-alone-1000-small-messages-each-way") { benchmark in
        let rig = try! RelayRig { client, upstream in
            let clientSide = Forwarder()
            let upstreamSide = Forwarder()
            clientSide.partner = upstreamSide
            upstreamSide.partner = clientSide
            try client.pipeline.syncOperations.addHandler(clientSide)
            try upstream.pipeline.syncOperations.addHandler(upstreamSide)
        }
        try! rig.exchange(rounds: batch)
        benchmark.startMeasurement()
        try! rig.exchange(rounds: batch)
        benchmark.stopMeasurement()
        rig.finish()
    }
}

// MARK: - Inputs

let upstreamKey = "dGhlIHNhbXBsZSBub25jZQ=="

/// `count` text frames of 16 payload bytes, masked as a client's are or not as a backend's.
func smallFrames(count: Int, masked: Bool) -> [UInt8] {
    let payload = Array("{\"seq\":12345678}".utf8)
    let frame = WebSocketFrameWriter.frame(opcode: .text, payload: payload, maskingKey: masked ? 0x0A0B_0C0D : nil)
    var stream: [UInt8] = []
    stream.reserveCapacity(frame.count * count)
    for _ in 0..<count { stream += frame }
    return stream
}

/// Scans `stream` as a client's, `chunk` bytes per read; returns the frames seen.
@discardableResult
func scanAll(_ stream: [UInt8], chunk: Int) -> Int {
    var scanner = WebSocketFrameScanner(role: .client)
    var frames = 0
    stream.withUnsafeBytes { bytes in
        var start = 0
        while start < bytes.count {
            let end = min(start + chunk, bytes.count)
            try! scanner.scan(UnsafeRawBufferPointer(rebasing: bytes[start..<end])) { event in
                if case .frameEnd = event { frames += 1 }
            }
            start = end
        }
    }
    return frames
}

/// What a browser sends to open a WebSocket (Chrome's fields, a cookie, a subprotocol offer).
func browserUpgradeHeaders() -> HTTPHeaderList {
    [
        "Host": "app.example.com",
        "Connection": "Upgrade",
        "Pragma": "no-cache",
        "Cache-Control": "no-cache",
        "User-Agent":
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "Upgrade": "websocket",
        "Origin": "https://app.example.com",
        "Sec-WebSocket-Version": "13",
        "Accept-Encoding": "gzip, deflate, br",
        "Accept-Language": "en-US,en;q=0.9",
        "Cookie": "session=4f2a9c1e7b; theme=dark",
        "Sec-WebSocket-Key": "x3JJHMbDL1EzLkh9GBhXDw==",
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Protocol": "chat.v2, chat.v1",
    ]
}

/// A browser's plain GET, as NIO's decoder hands it over.
func browserRequestHead() -> HTTPRequestHead {
    let headers = HTTPHeaders([
        ("Host", "app.example.com"),
        ("Connection", "keep-alive"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
        ),
        ("Accept", "application/json, text/plain, */*"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Cookie", "session=4f2a9c1e7b; theme=dark"),
    ])
    return HTTPRequestHead(version: .http1_1, method: .GET, uri: "/api/items?page=2", headers: headers)
}

/// A backend's answer with a length-framed body.
func backendResponseHead() -> HTTPResponseHead {
    let headers = HTTPHeaders([
        ("Content-Type", "application/json"),
        ("Content-Length", "512"),
        ("Date", "Thu, 03 Dec 2026 11:00:00 GMT"),
        ("Cache-Control", "no-store"),
        ("Keep-Alive", "timeout=5"),
        ("Connection", "keep-alive"),
    ])
    return HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)
}

func rewriteResponse(_ head: HTTPResponseHead) -> HTTPResponseHead {
    BenchmarkSupport.clientResponseHead(head, requestMethod: .GET, requestVersion: .http1_1, keepAlive: true)
}

/// ``browserRequestHead()`` as the bytes a client sends.
func browserRequestBytes() -> [UInt8] {
    let head = browserRequestHead()
    var text = "GET \(head.uri) HTTP/1.1\r\n"
    for (name, value) in head.headers { text += "\(name): \(value)\r\n" }
    return Array((text + "\r\n").utf8)
}

/// ``backendResponseHead()`` as the bytes a backend sends.
func backendResponseBytes() -> [UInt8] {
    var text = "HTTP/1.1 200 OK\r\n"
    for (name, value) in backendResponseHead().headers { text += "\(name): \(value)\r\n" }
    return Array((text + "\r\n").utf8)
}

/// What the fast path does with a request head: parse it, then write the backend's head into
/// `out` (emptied first, so its storage is reused as a channel's buffer would not be: the counts
/// are the parser's and the rewriter's own).
func parseAndRewriteRequest(
    _ bytes: [UInt8],
    forwardedFor: String,
    forwardedElement: String,
    into out: inout ByteBuffer
) {
    out.clear()
    bytes.withUnsafeBytes { p in
        guard case .complete(let head) = HTTP1HeadParser.parseRequest(p, limit: 16 * 1024) else {
            fatalError("the request head did not parse")
        }
        HTTP1HeadRewriter.writeUpstreamRequest(
            head,
            from: p,
            forwardedFor: forwardedFor,
            forwardedElement: forwardedElement,
            into: &out
        )
    }
}

/// What the fast path does with a response head: parse it, then write the client's head into `out`.
func parseAndRewriteResponse(_ bytes: [UInt8], into out: inout ByteBuffer) {
    out.clear()
    bytes.withUnsafeBytes { p in
        guard case .complete(let head) = HTTP1HeadParser.parseResponse(p, limit: 64 * 1024) else {
            fatalError("the response head did not parse")
        }
        blackHole(
            HTTP1HeadRewriter.writeClientResponse(head, from: p, requestIsHEAD: false, keepAlive: true, into: &out)
        )
    }
}

// MARK: - Relay rig

/// A spliced relay on a ``RelayRig``: `batch` reads each way (after as many to warm up), each of
/// `framesPerRead` small messages.
func measureSplicedRelay(_ benchmark: Benchmark, framesPerRead: Int, keepaliveFilters: Bool) throws {
    var counters: SplicedRelayCounters?
    let rig = try RelayRig(framesPerRead: framesPerRead) { client, upstream in
        counters = try BenchmarkSupport.addSplicedRelay(
            client: client,
            upstream: upstream,
            keepaliveFilters: keepaliveFilters
        )
    }
    try rig.exchange(rounds: batch)
    benchmark.startMeasurement()
    try rig.exchange(rounds: batch)
    benchmark.stopMeasurement()
    rig.finish()
    // The watchers scanned every frame (a protocol error would have stopped them quietly).
    let messages = UInt64(2 * batch * framesPerRead)
    guard let counters, counters.bothAtFrameBoundary, counters.fromClient.messages == messages,
        counters.fromUpstream.messages == messages
    else { fatalError("the relay did not scan the frames it relayed") }
}

/// A client channel and an upstream channel on one `EmbeddedEventLoop`, their relay handlers
/// added by `install`, and one read's worth of small frames each way prepared as a buffer.
final class RelayRig {
    let client: EmbeddedChannel
    let upstream: EmbeddedChannel
    let clientFrames: ByteBuffer
    let upstreamFrames: ByteBuffer

    init(framesPerRead: Int = 1, install: (EmbeddedChannel, EmbeddedChannel) throws -> Void) throws {
        let loop = EmbeddedEventLoop()
        client = EmbeddedChannel(loop: loop)
        upstream = EmbeddedChannel(loop: loop)
        try install(client, upstream)
        clientFrames = ByteBuffer(bytes: smallFrames(count: framesPerRead, masked: true))
        upstreamFrames = ByteBuffer(bytes: smallFrames(count: framesPerRead, masked: false))
    }

    /// `rounds` times: the client sends its frames (one read), the backend answers (one read);
    /// what was relayed is taken off the other channel as it arrives, all of it.
    func exchange(rounds: Int) throws {
        let clientPipeline = client.pipeline.syncOperations
        let upstreamPipeline = upstream.pipeline.syncOperations
        for _ in 0..<rounds {
            clientPipeline.fireChannelRead(NIOAny(clientFrames))
            clientPipeline.fireChannelReadComplete()
            guard try Self.drain(upstream) else { fatalError("nothing relayed upstream") }
            upstreamPipeline.fireChannelRead(NIOAny(upstreamFrames))
            upstreamPipeline.fireChannelReadComplete()
            guard try Self.drain(client) else { fatalError("nothing relayed to the client") }
        }
    }

    /// Takes every buffer written to `channel`; whether there was one.
    private static func drain(_ channel: EmbeddedChannel) throws -> Bool {
        var any = false
        while try channel.readOutbound(as: ByteBuffer.self) != nil { any = true }
        return any
    }

    func finish() {
        _ = try? client.finish()
        _ = try? upstream.finish()
    }
}

/// The least a relay can do with NIO's public API: write what is read to the partner's channel,
/// flush at read-complete. Measures what the `EmbeddedChannel` harness itself allocates.
final class Forwarder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    var partner: Forwarder?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.context?.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }
}
