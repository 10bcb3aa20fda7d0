import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ReadyGateCore

/// One proxied WebSocket session (DESIGN §2): it drives a ``SessionStateMachine`` and performs
/// the actions it returns — answering the client, connecting upstream with retries, holding the
/// client's frames, passing the readiness gate, splicing, and ending with the right close code.
///
/// Everything here runs on the client channel's event loop; the upstream channel is opened on
/// the same loop, so the two relay halves call each other without locks.
final class WebSocketSession {
    let environment: ProxyEnvironment
    private var settings: ReadyGateSettings { environment.settings }
    private let eventLoop: any EventLoop
    private let started = NIODeadline.now()
    private var machine: SessionStateMachine
    private(set) var record: SessionRecord
    private let detector: RaceDetector
    private var random = SystemRandomNumberGenerator()

    /// What only the handshake needs: nil from READY on, so an idle spliced session keeps little
    /// more than its two relay halves.
    private var handshake: HandshakeState?
    private let clientChannel: any Channel
    /// The HTTP entry handler's context, until the client is switched to WebSocket bytes.
    private var entryContext: ChannelHandlerContext?

    private var clientHalf: SpliceHandler?
    private var upstreamHalf: SpliceHandler?
    private var upstreamChannel: (any Channel)?
    private var attempt = 0

    private var handshakeTimer: Scheduled<Void>?
    private var gateTimer: Scheduled<Void>?
    private var retryTimer: Scheduled<Void>?
    private var finished = false
    /// The proxy's own close frame went to the client: only one ever does.
    private var clientCloseSent = false

    init(
        environment: ProxyEnvironment,
        request: HTTPRequestHead,
        headers: HTTPHeaderList,
        upgrade: ClientUpgradeRequest,
        clientContext: ChannelHandlerContext
    ) {
        self.environment = environment
        let settings = environment.settings
        let id = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        self.eventLoop = clientContext.eventLoop
        self.machine = SessionStateMachine(
            acceptMode: settings.acceptMode,
            gate: settings.readyGate,
            timeoutAction: settings.readyTimeoutAction,
            timing: settings.timing
        )
        self.record = SessionRecord(
            id: id,
            environment: settings.environment,
            acceptMode: settings.acceptMode,
            gate: settings.readyGate,
            path: request.uri
        )
        self.detector = RaceDetector(timing: settings.timing)
        var generator = SystemRandomNumberGenerator()
        self.handshake = HandshakeState(
            uri: request.uri,
            headers: headers,
            upgrade: upgrade,
            upstreamKey: WebSocketHandshake.makeKey(using: &generator)
        )
        self.clientChannel = clientContext.channel
        self.entryContext = clientContext
    }

    /// The environment's logger with this session's id. Made when a line is logged (a few times per
    /// session), so that a live session does not keep a logger of its own with a metadata dictionary.
    private var logger: Logger {
        var logger = environment.logger
        logger[metadataKey: "session"] = "\(record.id)"
        return logger
    }

    /// Milliseconds since the client's request was read.
    private var nowMs: Int { Int((NIODeadline.now() - started).nanoseconds / 1_000_000) }

    // MARK: Start

    func start() {
        environment.sessions.add(self, on: eventLoop)
        environment.metrics.sessionStarted()
        clientChannel.closeFuture.assumeIsolated().whenComplete { [self] _ in clientChannelClosed() }
        let actions = machine.start(
            clientOfferedSubprotocols: !(handshake?.upgrade.subprotocols.isEmpty ?? true),
            subprotocolsConfigured: settings.subprotocols != nil,
            nowMs: nowMs
        )
        record.acceptMode = machine.acceptMode
        if machine.acceptMode == .immediate {
            if let configured = settings.subprotocols, let offered = handshake?.upgrade.subprotocols {
                handshake?.chosenSubprotocol = WebSocketHandshake.chooseSubprotocol(
                    offered: offered,
                    configured: configured
                )
            }
        } else {
            // The backend answers first; keep the client quiet until then.
            clientChannel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        }
        handshakeTimer = eventLoop.assumeIsolated().scheduleTask(
            in: .milliseconds(Int64(settings.timing.handshakeTimeoutMs))
        ) {
            [self] in
            perform(machine.handshakeTimedOut(nowMs: nowMs))
        }
        perform(actions)
    }

    private func perform(_ actions: [SessionStateMachine.Action]) {
        for action in actions { perform(action) }
    }

    private func perform(_ action: SessionStateMachine.Action) {
        switch action {
        case .connectUpstream:
            connectUpstream()
        case .retryConnect(let delay):
            if record.note(.upstreamConnectRetry) {
                logEvent(RaceEvent(.upstreamConnectRetry, ["attempt": "\(attempt)", "delay_ms": "\(delay)"]))
            }
            retryTimer = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay))) { [self] in
                connectUpstream()
            }
        case .acceptClient:
            acceptClient()
        case .armReadyDelay(let delay):
            gateTimer = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay))) { [self] in
                perform(machine.gatePassed(nowMs: nowMs))
            }
        case .awaitReadyMessage:
            upstreamHalf?.readyMatcher = ReadyMessageMatcher(readyMessage: settings.readyMessage)
        case .flushAndSplice(let timedOut):
            becomeReady(timedOut: timedOut)
        case .relayUpstreamResponse(let status):
            noteRejected(status: status)
            relayUpstreamRejection()
        case .end(let reason):
            end(reason)
        case .abandonUpstream(let cleanly):
            abandonUpstream(clientClosedCleanly: cleanly)
        case .none:
            break
        }
    }

    // MARK: Client side

    /// Sends the client its 101 and turns its pipeline from HTTP into a relay half.
    private func acceptClient() {
        guard let context = entryContext, let handshake else { return }
        entryContext = nil
        var responseHeaders = HTTPHeaders()
        if let upstreamResponse = handshake.upstreamResponse {
            // `upstream` mode: mirror the backend's end-to-end answer (subprotocol, extensions, cookies).
            let mirrored = ProxyHeaders.strippingHopByHop(HTTPHeaderList(upstreamResponse.headers))
            for field in mirrored where field.name.lowercased() != "sec-websocket-accept" {
                responseHeaders.add(name: field.name, value: field.value)
            }
        } else if let chosenSubprotocol = handshake.chosenSubprotocol {
            responseHeaders.add(name: "Sec-WebSocket-Protocol", value: chosenSubprotocol)
        }
        responseHeaders.add(name: "Upgrade", value: "websocket")
        responseHeaders.add(name: "Connection", value: "Upgrade")
        responseHeaders.add(
            name: "Sec-WebSocket-Accept",
            value: WebSocketHandshake.acceptValue(forKey: handshake.upgrade.key)
        )
        let head = HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: responseHeaders)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)

        let half = SpliceHandler(
            side: .client,
            session: self,
            scanner: WebSocketFrameScanner(
                role: .client,
                allowedReservedBits: negotiatedReservedBits,
                maxMessageBytes: UInt64(settings.maxMessageBytes)
            ),
            holding: true,
            maxHeldBytes: settings.maxBufferBytes
        )
        clientHalf = half
        do {
            try ClientPipeline.switchToWebSocket(context: context, relay: half)
        } catch {
            logger.error("pipeline_switch_failed", metadata: ["side": "client", "error": "\(error)"])
            clientChannel.close(promise: nil)
            return
        }
        if machine.acceptMode == .upstream {
            clientChannel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        }
    }

    /// RSV bits an extension negotiated in `upstream` mode (permessage-deflate uses RSV1, RFC 7692).
    private var negotiatedReservedBits: UInt8 {
        guard let upstreamResponse = handshake?.upstreamResponse else { return 0 }
        return upstreamResponse.headers["Sec-WebSocket-Extensions"].isEmpty ? 0 : 0b100
    }

    func clientFramesHeld(frames: Int, bytes: Int) {
        if record.firstEarlyFrameAtMs == nil && frames > 0 { record.firstEarlyFrameAtMs = nowMs }
        record.earlyFrames = frames
        record.earlyBytes = bytes
    }

    func holdReachedBound(bytes: Int) {
        record.backpressureEvents += 1
        if record.note(.bufferBackpressure) {
            logEvent(RaceEvent(.bufferBackpressure, ["held_bytes": "\(bytes)", "bound": "\(settings.maxBufferBytes)"]))
        }
    }

    func clientClosedBeforeReady(code: UInt16?) {
        record.closer = .client
        // Finish the close handshake with the client (RFC 6455 §5.5.1): echo its code.
        let reply = WebSocketFrameWriter.frame(
            opcode: .close,
            payload: code.map { WebSocketFrameWriter.closePayload(code: $0, reason: "") } ?? []
        )
        // Record the clean ending first: the write below may complete (and close) at once.
        perform(machine.clientLeftBeforeReady(cleanly: true, nowMs: nowMs))
        clientHalf?.sendFrame(reply)?.assumeIsolated().whenComplete { [self] _ in clientChannel.close(promise: nil) }
    }

    func clientProtocolError(_ error: WebSocketProtocolError) {
        record.closer = .client
        logger.warning("client_protocol_error", metadata: ["error": "\(error)", "close_code": "\(error.closeCode)"])
        perform(machine.clientProtocolError(error, nowMs: nowMs))
    }

    func clientInactiveBeforeUpgrade() {
        guard !finished else { return }
        if record.closer == .none { record.closer = .client }
        perform(machine.clientLeftBeforeReady(cleanly: false, nowMs: nowMs))
    }

    // MARK: Upstream side

    private func connectUpstream() {
        guard machine.state == .handshakePending, let upgradeRequest = upstreamRequest() else { return }
        attempt += 1
        record.connectAttempts = attempt
        let remaining = max(1, settings.timing.handshakeTimeoutMs - nowMs)
        let thisAttempt = attempt
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let target = settings.upstream
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.milliseconds(Int64(remaining)))
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(ChannelOptions.recvAllocator, value: ChannelTuning.receiveAllocator)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(HTTPRequestEncoder())
                    try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)))
                    try sync.addHandler(
                        UpstreamHandshakeHandler(session: bound.value, request: upgradeRequest, attempt: thisAttempt)
                    )
                }
            }
            .connect(host: target.host, port: target.port)
            .assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    if machine.state == .handshakePending && thisAttempt == attempt {
                        upstreamChannel = channel
                    } else {
                        channel.close(promise: nil)
                    }
                case .failure(let error):
                    upstreamAttemptFailed(attempt: thisAttempt, error: "\(error)")
                }
            }
    }

    /// The upgrade request for the backend: the client's path and end-to-end headers, a fresh key,
    /// `X-Forwarded-*` (DESIGN §2, "Upstream connect and retry"). Built at the first connect (after
    /// `start` settled the accept mode and the subprotocol), the same for every attempt; nil once
    /// the handshake state is released.
    private func upstreamRequest() -> HTTPRequestHead? {
        guard let handshake else { return nil }
        if let built = handshake.upstreamRequest { return built }
        var list = ProxyHeaders.upstreamUpgradeHeaders(
            client: handshake.headers,
            key: handshake.upstreamKey,
            keepExtensions: keepsExtensions,
            clientAddress: clientChannel.remoteAddress?.ipAddress,
            proto: "http"
        )
        if machine.acceptMode == .immediate && settings.subprotocols != nil {
            list.remove("sec-websocket-protocol")
            if let chosen = handshake.chosenSubprotocol { list.add("Sec-WebSocket-Protocol", chosen) }
        }
        let built = HTTPRequestHead(version: .http1_1, method: .GET, uri: handshake.uri, headers: HTTPHeaders(list))
        self.handshake?.upstreamRequest = built
        return built
    }

    /// Extensions are negotiated end to end only in `upstream` mode with the delay gate: the message
    /// gate must read the backend's ready frame, which permessage-deflate would compress (DESIGN §2).
    private var keepsExtensions: Bool {
        machine.acceptMode == .upstream && machine.gate == .delay
    }

    func upstreamAttemptFailed(attempt failed: Int, error: String) {
        guard failed == attempt, machine.state == .handshakePending else { return }
        upstreamChannel?.close(promise: nil)
        upstreamChannel = nil
        logger.debug("upstream_attempt_failed", metadata: ["attempt": "\(failed)", "error": "\(error)"])
        perform(machine.upstreamAttemptFailed(nowMs: nowMs, using: &random))
    }

    func upstreamAnsweredNon101(_ head: HTTPResponseHead, body: ByteBuffer?, attempt answered: Int) {
        guard answered == attempt, machine.state == .handshakePending else { return }
        record.upstreamStatus = Int(head.status.code)
        if [502, 503, 504].contains(head.status.code) {
            upstreamAttemptFailed(attempt: answered, error: "backend answered \(head.status.code)")
            return
        }
        handshake?.rejection = (head, body)
        perform(machine.upstreamRejected(status: Int(head.status.code), nowMs: nowMs))
    }

    /// An upgrade still in flight when the session ended: closed cleanly once its 101 comes.
    private var abandonedUpgrade: (attempt: Int, code: UInt16, reason: String)?

    func upstreamAnswered101(
        _ head: HTTPResponseHead,
        handshake: UpstreamHandshakeHandler,
        context: ChannelHandlerContext,
        attempt answered: Int
    ) {
        if let abandoned = abandonedUpgrade, abandoned.attempt == answered {
            abandonedUpgrade = nil
            closeAbandonedUpgrade(
                handshake: handshake,
                context: context,
                code: abandoned.code,
                reason: abandoned.reason
            )
            return
        }
        guard answered == attempt, machine.state == .handshakePending, let state = self.handshake,
            let sent = state.upstreamRequest
        else {
            context.close(promise: nil)
            return
        }
        record.upstreamStatus = 101
        let answer = HTTPHeaderList(head.headers)
        let offered = sent.headers[canonicalForm: "Sec-WebSocket-Protocol"].map(String.init)
        if let problem = WebSocketHandshake.verifyUpstreamAnswer(
            headers: answer,
            sentKey: state.upstreamKey,
            offeredSubprotocols: offered,
            extensionsOffered: keepsExtensions && !state.upgrade.extensions.isEmpty
        ) {
            logger.warning("upstream_handshake_invalid", metadata: ["problem": "\(problem)"])
            context.close(promise: nil)
            perform(machine.upstreamFailedBeforeReady(.upstreamProtocolError(problem), nowMs: nowMs))
            return
        }
        self.handshake?.upstreamResponse = machine.acceptMode == .upstream ? head : nil
        let half = SpliceHandler(
            side: .upstream,
            session: self,
            scanner: WebSocketFrameScanner(role: .server, allowedReservedBits: negotiatedReservedBits),
            holding: false,
            maxHeldBytes: .max
        )
        upstreamHalf = half
        let upgradedAt = nowMs
        if let event = detector.upstreamUpgraded(atMs: upgradedAt, record: &record) { logEvent(event) }
        let actions = machine.upstreamUpgraded(nowMs: upgradedAt)
        // Accept the client first (upstream mode), so the relay has both halves before any backend byte moves.
        if actions.contains(.acceptClient) { perform(.acceptClient) }
        if let clientHalf { half.pair(with: clientHalf) }
        // Watch for the ready message before the switch: the backend's first frames come out of the
        // HTTP decoder as soon as it is removed.
        if actions.contains(.awaitReadyMessage) { perform(.awaitReadyMessage) }
        do {
            try UpstreamPipeline.switchToWebSocket(context: context, handshake: handshake, relay: half)
        } catch {
            logger.error("pipeline_switch_failed", metadata: ["side": "upstream", "error": "\(error)"])
            perform(machine.upstreamFailedBeforeReady(.upstreamClosed, nowMs: nowMs))
            return
        }
        for action in actions where action != .acceptClient && action != .awaitReadyMessage { perform(action) }
    }

    /// ReadyGate is shutting down: the client gets `1001 going away` (or, before its 101, a 503).
    func shutdown() {
        guard !finished else { return }
        perform(machine.shutdown(nowMs: nowMs))
    }

    func readyMessageSeen() {
        guard machine.state == .connected else { return }
        perform(machine.gatePassed(nowMs: nowMs))
    }

    // MARK: Ready

    private func becomeReady(timedOut: Bool) {
        cancelTimers()
        let readyAt = nowMs
        if timedOut, record.note(.readyTimeout) {
            logEvent(RaceEvent(.readyTimeout, ["action": "open", "ms": "\(readyAt)"]))
        }
        if record.earlyFrames > 0, record.note(.earlyClientFrames) {
            let earlyBy = readyAt - (record.firstEarlyFrameAtMs ?? readyAt)
            logEvent(
                RaceEvent(
                    .earlyClientFrames,
                    ["frames": "\(record.earlyFrames)", "bytes": "\(record.earlyBytes)", "early_by_ms": "\(earlyBy)"]
                )
            )
        }
        clientHalf?.flushHeldFrames()
        handshake = nil
    }

    // MARK: Relay events

    func sideInactive(_ side: SpliceHandler.Side) {
        switch side {
        case .client:
            if machine.isHoldingClientFrames {
                if record.closer == .none { record.closer = .client }
                perform(machine.clientLeftBeforeReady(cleanly: false, nowMs: nowMs))
            } else {
                if record.closer == .none { record.closer = .client }
                upstreamHalf?.close(mode: .all)
            }
        case .upstream:
            // Once the proxy ended the session it has told the client why; the upstream closing
            // afterwards is part of that ending, not news.
            guard machine.endReason == nil, machine.state != .closed else { return }
            if record.closer == .none { record.closer = .upstream }
            let stats = upstreamHalf?.trafficStats ?? WebSocketTrafficStats()
            if stats.sawClose {
                if let event = detector.upstreamClosed(code: stats.closeCode, atMs: nowMs, record: &record) {
                    logEvent(event)
                }
                // The backend's close frame was relayed: the client's answer ends the handshake.
                awaitClientClose()
            } else if machine.isHoldingClientFrames {
                perform(machine.upstreamFailedBeforeReady(.upstreamClosed, nowMs: nowMs))
            } else {
                if let event = detector.upstreamClosed(code: nil, atMs: nowMs, record: &record) { logEvent(event) }
                closeClient(with: .upstreamClosed)
            }
        }
    }

    func sideInputClosed(_ side: SpliceHandler.Side) {
        switch side {
        case .client: upstreamHalf?.close(mode: .output)
        case .upstream: clientHalf?.close(mode: .output)
        }
    }

    func sideFailed(_ side: SpliceHandler.Side, error: any Error) {
        logger.debug("relay_error", metadata: ["side": "\(side.rawValue)", "error": "\(error)"])
        switch side {
        case .client: clientChannel.close(promise: nil)
        case .upstream: upstreamChannel?.close(promise: nil)
        }
    }

    func scannerFailed(_ side: SpliceHandler.Side, error: WebSocketProtocolError) {
        if side == .upstream && machine.isHoldingClientFrames {
            perform(machine.upstreamFailedBeforeReady(.upstreamProtocolError(error.description), nowMs: nowMs))
            return
        }
        logger.notice(
            "scanner_stopped",
            metadata: ["side": "\(side.rawValue)", "error": "\(error)", "note": "relay continues unwatched"]
        )
    }

    // MARK: Ending

    /// The proxy ends the session: a close frame when the client has its 101, else an HTTP error.
    private func end(_ reason: SessionCloseReason) {
        record.endReason = reason
        if record.closer == .none { record.closer = .proxy }
        switch reason {
        case .upstreamRejected(let status): noteRejected(status: status)
        case .upstreamNotReady:
            if record.note(.readyTimeout) { logEvent(RaceEvent(.readyTimeout, ["action": "close", "ms": "\(nowMs)"])) }
        default: break
        }
        abandonUpstream(clientClosedCleanly: false)  // also counts the held frames as undelivered
        if clientHalf != nil {
            closeClient(with: reason)
        } else if let context = entryContext {
            entryContext = nil
            let status: HTTPResponseStatus =
                switch reason {
                case .upstreamUnavailable, .upstreamNotReady: .gatewayTimeout
                case .goingAway: .serviceUnavailable
                default: .badGateway
                }
            respondHTTP(
                context: context,
                status: status,
                headers: HTTPHeaders(),
                body: context.channel.allocator.buffer(string: reason.reasonText + "\n"),
                contentType: plainTextContentType
            )
        } else {
            clientChannel.close(promise: nil)
        }
    }

    private func closeClient(with reason: SessionCloseReason) {
        guard !clientCloseSent else { return }
        clientCloseSent = true
        let frame = WebSocketFrameWriter.frame(
            opcode: .close,
            payload: WebSocketFrameWriter.closePayload(code: reason.closeCode, reason: reason.reasonText)
        )
        logger.info(
            "session_closed_by_proxy",
            metadata: ["close_code": "\(reason.closeCode)", "reason": "\(reason.reasonText)"]
        )
        // A client that broke the protocol is failed at once (RFC 6455 §7.1.7); any other gets to
        // answer the close frame first.
        let failing = if case .clientProtocolError = reason { true } else { false }
        if let written = clientHalf?.sendFrame(frame) {
            written.assumeIsolated().whenComplete { [self] _ in
                if failing { clientChannel.close(promise: nil) } else { awaitClientClose() }
            }
        } else {
            clientChannel.close(promise: nil)
        }
    }

    /// After a close frame went to the client: the client answers with its own and goes, or the
    /// connection is closed after `closeLinger`.
    private func awaitClientClose() {
        guard let clientHalf else {
            clientChannel.close(promise: nil)
            return
        }
        clientHalf.closeAfterPeerClose(linger: closeLinger)
    }

    /// How long a client may take to answer a close frame: `READYGATE_CLOSE_LINGER_MS`, by default
    /// the handshake timeout, at most 1 s (a shutdown waits 2 s for all sessions).
    private var closeLinger: TimeAmount { .milliseconds(Int64(settings.closeLinger)) }

    private func noteRejected(status: Int) {
        if record.note(.upstreamRejected) { logEvent(RaceEvent(.upstreamRejected, ["status": "\(status)"])) }
    }

    /// `upstream` accept mode: the backend's refusal goes to the client as it was.
    private func relayUpstreamRejection() {
        cancelTimers()
        guard let context = entryContext, let rejection = handshake?.rejection else {
            clientChannel.close(promise: nil)
            return
        }
        entryContext = nil
        var relayed = ProxyHeaders.strippingHopByHop(HTTPHeaderList(rejection.head.headers))
        relayed.remove("content-length")
        respondHTTP(
            context: context,
            status: rejection.head.status,
            headers: HTTPHeaders(relayed),
            body: rejection.body ?? context.channel.allocator.buffer(capacity: 0),
            contentType: nil
        )
    }

    /// Answers the client over HTTP (it has no 101) and closes its connection.
    private func respondHTTP(
        context: ChannelHandlerContext,
        status: HTTPResponseStatus,
        headers: HTTPHeaders,
        body: ByteBuffer,
        contentType: String?
    ) {
        environment.metrics.httpResponse(status, fromBackend: false)
        context.writeHTTPResponse(
            status: status,
            headers: headers,
            body: body,
            contentType: contentType,
            keepAlive: false
        )
        .assumeIsolated().whenComplete { [self] _ in clientChannel.close(promise: nil) }
        clientChannel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
    }

    /// Lets go of the backend: a masked close frame when it is connected (RFC 6455 §5.5.1), else
    /// the pending connect or socket is closed.
    private func abandonUpstream(clientClosedCleanly: Bool) {
        cancelTimers()
        if !clientClosedCleanly, machine.state == .closed {
            if record.note(.clientGoneBeforeReady) {
                logEvent(
                    RaceEvent(
                        .clientGoneBeforeReady,
                        [
                            "held_frames": "\(clientHalf?.heldFrames ?? 0)",
                            "held_bytes": "\(clientHalf?.heldBytes ?? 0)",
                        ]
                    )
                )
            }
        }
        let lost = clientHalf?.dropHold() ?? (frames: 0, bytes: 0)
        record.undeliveredFrames += lost.frames
        record.undeliveredBytes += lost.bytes
        let code = clientClosedCleanly ? UInt16(1000) : 1001
        // Tell the backend why: the client left, or the proxy ended the session (and why).
        let reason = machine.endReason.map { "proxy ended session: \($0.name)" } ?? "client gone"
        if let upstreamHalf {
            closeUpstreamWebSocket(upstreamHalf, code: code, reason: reason)
        } else if let channel = upstreamChannel, channel.isActive {
            // The upgrade request is in flight: let its answer come, then close the WebSocket
            // properly (a masked close frame), within what is left of the handshake timeout.
            abandonedUpgrade = (attempt, code, reason)
            let bound = max(1, settings.timing.handshakeTimeoutMs - nowMs)
            eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(bound))) { channel.close(promise: nil) }
        } else {
            upstreamChannel?.close(promise: nil)
        }
        attempt += 1  // any connect still in flight is now stale
    }

    /// Sends the backend a masked close frame (RFC 6455 §5.3), then closes the connection.
    private func closeUpstreamWebSocket(_ half: SpliceHandler, code: UInt16, reason: String) {
        let frame = WebSocketFrameWriter.frame(
            opcode: .close,
            payload: WebSocketFrameWriter.closePayload(code: code, reason: reason),
            maskingKey: UInt32.random(in: 0...UInt32.max, using: &random)
        )
        if let written = half.sendFrame(frame) {
            let channel = upstreamChannel
            written.assumeIsolated().whenComplete { _ in channel?.close(promise: nil) }
        }
    }

    /// The session ended while this upgrade was in flight; its 101 came: close it cleanly.
    private func closeAbandonedUpgrade(
        handshake: UpstreamHandshakeHandler,
        context: ChannelHandlerContext,
        code: UInt16,
        reason: String
    ) {
        let half = SpliceHandler(
            side: .upstream,
            session: self,
            scanner: WebSocketFrameScanner(role: .server),
            holding: false,
            maxHeldBytes: .max
        )
        upstreamHalf = half
        do {
            try UpstreamPipeline.switchToWebSocket(context: context, handshake: handshake, relay: half)
        } catch {
            context.close(promise: nil)
            return
        }
        closeUpstreamWebSocket(half, code: code, reason: reason)
    }

    private func clientChannelClosed() {
        guard !finished else { return }
        finished = true
        if machine.isHoldingClientFrames {
            _ = machine.clientLeftBeforeReady(cleanly: false, nowMs: nowMs)
            abandonUpstream(clientClosedCleanly: false)
        }
        cancelTimers()
        let upstream = upstreamChannel
        if let upstream, upstream.isActive, upstreamHalf == nil, abandonedUpgrade == nil {
            upstream.close(promise: nil)
        }
        let finish = { [self] in
            machine.closed(nowMs: nowMs)
            record.stateTimes = machine.enteredAt
            if let clientHalf {
                record.clientToUpstream = clientHalf.trafficStats
                record.peakHeldBytes = clientHalf.peakHeldBytes
            }
            if let upstreamHalf { record.upstreamToClient = upstreamHalf.trafficStats }
            if record.endReason == nil { record.endReason = machine.endReason }
            for transition in machine.invalidTransitions {
                logger.error("invalid_session_transition", metadata: ["transition": "\(transition)"])
            }
            // Counted before the summary is logged: whoever reads the summary finds the metrics.
            environment.metrics.sessionEnded(record)
            var metadata = Logger.Metadata()
            for (key, value) in record.summaryFields { metadata[key] = "\(value)" }
            logger.info("session_summary", metadata: metadata)
            environment.onSessionEnd?(record)
            environment.sessions.remove(self)
            clientHalf = nil
            upstreamHalf = nil
            upstreamChannel = nil
        }
        if let upstream {
            upstream.closeFuture.assumeIsolated().whenComplete { _ in finish() }
            if upstream.isActive { upstreamHalf?.close(mode: .all) }
        } else {
            finish()
        }
    }

    /// The handshake, gate and retry timers only matter until READY or the end.
    private func cancelTimers() {
        handshakeTimer?.cancel()
        gateTimer?.cancel()
        retryTimer?.cancel()
        // A cancelled task still holds its closure and promise while referenced.
        handshakeTimer = nil
        gateTimer = nil
        retryTimer = nil
    }

    private func logEvent(_ event: RaceEvent) {
        var metadata = Logger.Metadata()
        for (key, value) in event.fields { metadata[key] = "\(value)" }
        metadata["pattern"] = "\(event.pattern.rawValue)"
        logger.info("\(event.pattern.rawValue)", metadata: metadata)
    }
}

@available(*, unavailable)
extension WebSocketSession: Sendable {}

/// A session's handshake state: the client's request, and what the upstream upgrade produced.
private struct HandshakeState {
    let uri: String
    /// The client's request headers, the source of the upstream upgrade request's.
    let headers: HTTPHeaderList
    /// The client's key, subprotocols and extensions.
    let upgrade: ClientUpgradeRequest
    /// The key of ReadyGate's own upgrade request to the backend.
    let upstreamKey: String
    /// The subprotocol ReadyGate answers in `immediate` mode.
    var chosenSubprotocol: String?
    /// The upgrade request sent to the backend (built once, at the first connect).
    var upstreamRequest: HTTPRequestHead?
    /// The backend's 101, mirrored to the client in `upstream` accept mode.
    var upstreamResponse: HTTPResponseHead?
    /// The backend's refusal, relayed as it was in `upstream` accept mode.
    var rejection: (head: HTTPResponseHead, body: ByteBuffer?)?
}

extension WebSocketSession: ShutdownParticipant {
    /// A session runs on while the proxy drains: most end by themselves, the rest at the deadline.
    func drain() {}

    func endNow() { shutdown() }
}
