import NIOCore
import NIOHTTP1
import NIOPosix
import ReadyGateCore

/// The upstream side: connect attempts, the backend's answer, and the pipeline switch after its `101`.
extension WebSocketSession {
    func connectUpstream(attempt: Int) {
        guard let upgradeRequest = upstreamRequest() else { return }
        let remaining = machine.remainingHandshakeMs(nowMs: nowMs)
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let target = settings.upstream
        let tls = environment.tls.upstream
        let tlsFailures = environment.tls.upstreamFailures
        let connect = ClientBootstrap(group: eventLoop)
            .connectTimeout(.milliseconds(Int64(remaining)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try ChannelTuning.applyConnectionOptions(to: channel, nodelay: false)
                    try ChannelTuning.tuneForRelay(channel)
                    let sync = channel.pipeline.syncOperations
                    // TLS below everything: the switch after the 101 and the EOF gate work on the
                    // decrypted stream; a failed handshake reaches the handshake handler as an
                    // error, a failed connect attempt.
                    if let tls {
                        try sync.addHandler(tls.makeHandler())
                        try sync.addHandler(TLSCloser())
                        try sync.addHandler(UpstreamTLSHandshakeWatch(promise: nil, failures: tlsFailures))
                    }
                    try sync.addHandler(UpstreamEOFGate())
                    try sync.addHandler(HTTPRequestEncoder())
                    try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)))
                    try sync.addHandler(
                        UpstreamHandshakeHandler(session: bound.value, request: upgradeRequest, attempt: attempt)
                    )
                }
            }
            .connect(to: target)
        attempts[attempt] = connect
        connect.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let channel):
                openUpstreamChannels += 1
                channel.closeFuture.assumeIsolated().whenComplete { [self] _ in upstreamChannelClosed() }
            case .failure(let error):
                upstreamAttemptFailed(attempt: attempt, error: "\(error)")
            }
        }
    }

    /// The upgrade request for the backend: the client's path and end-to-end headers, a fresh key,
    /// `X-Forwarded-*`. Built at the first connect (after `start` settled the accept mode and the
    /// subprotocol), the same for every attempt; nil once the handshake state is released.
    private func upstreamRequest() -> HTTPRequestHead? {
        guard let handshake else { return nil }
        if let built = handshake.upstreamRequest { return built }
        var list = ProxyHeaders.upstreamUpgradeHeaders(
            client: handshake.headers,
            key: handshake.upstreamKey,
            keepExtensions: keepsExtensions,
            clientAddress: clientChannel.remoteAddress?.ipAddress,
            proto: environment.forwardedProto
        )
        if machine.acceptMode == .immediate && settings.subprotocols != nil {
            list.remove("sec-websocket-protocol")
            if let chosen = handshake.chosenSubprotocol { list.add("Sec-WebSocket-Protocol", chosen) }
        }
        let built = HTTPRequestHead(version: .http1_1, method: .GET, uri: handshake.uri, headers: HTTPHeaders(list))
        self.handshake?.upstreamRequest = built
        return built
    }

    /// Extensions are negotiated end to end only in `upstream` mode with the delay or ping gate: the message
    /// gate must read the backend's ready frame, which permessage-deflate would compress.
    private var keepsExtensions: Bool {
        machine.acceptMode == .upstream && machine.configuration.gate != .message
    }

    /// A replay's backend in `upstream` mode, once the client has its `101` (the responder is spent):
    /// its answer must agree with the one the client was given.
    private func replacementAnswerProblem(_ head: HTTPResponseHead, state: HandshakeState) -> String? {
        guard machine.acceptMode == .upstream, responder == nil, let mirrored = state.upstreamResponse else {
            return nil
        }
        return WebSocketHandshake.replayAnswerProblem(
            mirrored: HTTPHeaderList(mirrored.headers),
            replacement: HTTPHeaderList(head.headers)
        )
    }

    func dropUpstreamAttempt(_ attempt: Int) {
        if let pending = pendingUpgrade, pending.attempt == attempt {
            pendingUpgrade = nil
            pending.context.close(promise: nil)
        }
        attempts.removeValue(forKey: attempt)?.whenSuccess { $0.close(promise: nil) }
    }

    /// The session ended while this attempt's upgrade was in flight: its answer may still come
    /// (and is then closed properly); the channel goes after `withinMs` at the latest.
    func abandonUpstreamAttempt(_ attempt: Int, withinMs: Int) {
        guard let connect = attempts[attempt] else { return }
        let loop = eventLoop
        connect.whenSuccess { channel in
            loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(withinMs))) { channel.close(promise: nil) }
        }
    }

    /// The backend's `101` is checked and turned into the upstream relay half.
    func switchUpstream(watchForReadyMessage: Bool) {
        guard let pending = pendingUpgrade else { return }
        pendingUpgrade = nil
        let watcher = FrameWatcher(
            side: .upstream,
            scanner: WebSocketFrameScanner(role: .server, allowedReservedBits: negotiatedReservedBits),
            events: self
        )
        // Watch before the switch: the backend's first frames come out of the HTTP decoder as soon
        // as it is removed.
        if watchForReadyMessage { watcher.watchForReadyMessage(settings.readyMessage) }
        // The ping gate and keepalive take their pongs out of the backend's stream; replay keeps a
        // close back.
        let filter =
            machine.configuration.gate == .ping || machine.configuration.replayAttempts > 0
                || settings.pingIntervalMs > 0
            ? FrameFilterHandler(
                side: .upstream,
                scanner: WebSocketFrameScanner(role: .server, allowedReservedBits: negotiatedReservedBits),
                events: self
            ) : nil
        let glue = GlueHandler()
        if let clientGlue { GlueHandler.pair(clientGlue, glue) }
        upstreamWatcher = watcher
        upstreamFilter = filter
        upstreamGlue = glue
        upstreamChannel = pending.context.channel
        do {
            try UpstreamPipeline.switchToWebSocket(
                context: pending.context,
                watcher: watcher,
                filter: filter,
                glue: glue
            )
        } catch {
            logger.error("pipeline_switch_failed", metadata: ["side": "upstream", "error": "\(error)"])
            pending.context.close(promise: nil)
        }
    }
}

extension WebSocketSession: UpstreamHandshakeObserver {
    func upstreamAttemptFailed(attempt: Int, error: String) {
        logger.debug("upstream_attempt_failed", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
        perform(machine.upstreamConnectFailed(attempt: attempt, nowMs: nowMs, using: &random))
    }

    func upstreamAnsweredNon101(_ head: HTTPResponseHead, body: ByteBuffer?, attempt: Int) {
        handshake?.rejection = (head, body)
        perform(machine.upstreamRejected(status: Int(head.status.code), attempt: attempt, nowMs: nowMs, using: &random))
    }

    func upstreamAnswered101(
        _ head: HTTPResponseHead,
        context: ChannelHandlerContext,
        attempt: Int
    ) {
        pendingUpgrade = (attempt, context)
        if let state = handshake, let sent = state.upstreamRequest,
            let problem = WebSocketHandshake.verifyUpstreamAnswer(
                headers: HTTPHeaderList(head.headers),
                sentKey: state.upstreamKey,
                offeredSubprotocols: sent.headers[canonicalForm: "Sec-WebSocket-Protocol"].map(String.init),
                extensionsOffered: keepsExtensions && !state.upgrade.extensions.isEmpty
            ) ?? replacementAnswerProblem(head, state: state)
        {
            logger.warning("upstream_handshake_invalid", metadata: ["problem": "\(problem)"])
            perform(machine.upstreamHandshakeInvalid(problem: problem, attempt: attempt, nowMs: nowMs))
        } else {
            if machine.acceptMode == .upstream { handshake?.upstreamResponse = head }
            perform(machine.upstreamUpgraded(attempt: attempt, nowMs: nowMs))
        }
        // An answer the machine neither switched nor dropped (a stale attempt) is closed here.
        if let pending = pendingUpgrade, pending.attempt == attempt {
            pendingUpgrade = nil
            context.close(promise: nil)
        }
    }
}
