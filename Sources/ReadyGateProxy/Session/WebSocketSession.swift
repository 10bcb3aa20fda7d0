import Logging
import NIOCore
import NIOHTTP1
import ReadyGateCore

/// One proxied WebSocket session. It turns what happens on its channels into events of a
/// ``SessionStateMachine`` and performs the actions the machine returns (``perform(_:)-swift.method``):
/// the machine decides, the session and its handlers act.
///
/// The client's channel carries, after the upgrade, a ``FrameWatcher``, a ``ClientHoldHandler``
/// (until READY) and a ``GlueHandler``; the upstream channel a watcher and a glue. Everything runs
/// on the client channel's event loop (the upstream channel is opened on the same loop), so the
/// two relay halves call each other without locks.
final class WebSocketSession {
    let environment: ProxyEnvironment
    var settings: ReadyGateSettings { environment.settings }
    let eventLoop: any EventLoop
    private let started = NIODeadline.now()
    var machine: SessionStateMachine
    var random = SystemRandomNumberGenerator()

    /// What only the handshake needs: nil from READY on, so an idle spliced session keeps little
    /// more than its relay handlers.
    var handshake: HandshakeState?
    let clientChannel: any Channel
    /// Answers the client until its pipeline is switched to WebSocket bytes.
    var responder: (any ClientResponder)?

    var clientWatcher: FrameWatcher?
    var clientHold: ClientHoldHandler?
    var clientGlue: GlueHandler?
    var upstreamWatcher: FrameWatcher?
    /// Takes the ping gate's pong out and keeps closes back during the replay window; nil otherwise.
    var upstreamFilter: FrameFilterHandler?
    /// Keepalive: the filter that takes the client's pongs to the proxy's pings out.
    var clientFilter: FrameFilterHandler?
    /// The idle check: the traffic seen at the last check, and when it last changed.
    var idleMark: (bytes: UInt64, atMs: Int) = (0, 0)
    /// Between READY and the end of the replay window: the client's bytes are copied.
    var replayWindowOpen = false
    var upstreamGlue: GlueHandler?
    /// The switched upstream channel.
    var upstreamChannel: (any Channel)?
    /// Connects in flight or done, by attempt: dropping an attempt closes its channel.
    var attempts: [Int: EventLoopFuture<any Channel>] = [:]
    /// A `101` being acted on: the handshake handler's context, for the pipeline switch.
    var pendingUpgrade: (attempt: Int, context: ChannelHandlerContext)?
    /// Upstream channels open; the session's summary waits for them.
    var openUpstreamChannels = 0
    /// The adaptive delay heard of this session (at a failure after READY, or at its end).
    private var adaptiveDelayTold = false
    private var clientClosed = false
    private var finished = false
    /// The armed timers, boxed: a spliced session with none armed (the usual idle session) keeps a
    /// nil reference instead of eight handles inline.
    private var timerBox: Boxed<SessionTimers>?
    var timers: SessionTimers {
        get { timerBox?.value ?? SessionTimers() }
        set {
            if newValue.isEmpty {
                timerBox = nil
            } else if let timerBox {
                timerBox.value = newValue
            } else {
                timerBox = Boxed(newValue)
            }
        }
    }

    init(
        environment: ProxyEnvironment,
        request: HTTPRequestHead,
        headers: HTTPHeaderList,
        upgrade: ClientUpgradeRequest,
        responder: any ClientResponder
    ) {
        self.environment = environment
        let settings = environment.settings
        self.eventLoop = responder.channel.eventLoop
        let record = SessionRecord(
            id: String(UInt64.random(in: 0...UInt64.max), radix: 16),
            environment: settings.environment,
            acceptMode: settings.acceptMode,
            gate: settings.readyGate,
            path: request.uri
        )
        self.machine = SessionStateMachine(
            configuration: SessionStateMachine.Configuration(
                acceptMode: settings.acceptMode,
                gate: settings.readyGate,
                timeoutAction: settings.readyTimeoutAction,
                timing: settings.timing,
                closeLingerMs: settings.closeLinger,
                maxBufferBytes: settings.maxBufferBytes,
                gateDelayMs: settings.readyGate != .message ? environment.gateDelayMs : nil,
                replayAttempts: settings.replay ? settings.replayAttempts : 0
            ),
            record: record
        )
        var generator = SystemRandomNumberGenerator()
        self.handshake = HandshakeState(
            uri: request.uri,
            headers: headers,
            upgrade: upgrade,
            upstreamKey: WebSocketHandshake.makeKey(using: &generator)
        )
        self.clientChannel = responder.channel
        self.responder = responder
    }

    /// The environment's logger with this session's id. Made when a line is logged (a few times per
    /// session), so that a live session does not keep a logger of its own with a metadata dictionary.
    var logger: Logger {
        var logger = environment.logger
        logger[metadataKey: "session"] = "\(machine.record.id)"
        return logger
    }

    /// Milliseconds since the client's request was read.
    var nowMs: Int { Int((NIODeadline.now() - started).nanoseconds / 1_000_000) }

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
        perform(actions)
    }

    // MARK: Actions

    func perform(_ actions: [SessionStateMachine.Action]) {
        for action in actions { perform(action) }
    }

    private func perform(_ action: SessionStateMachine.Action) {
        switch action {
        case .armHandshakeTimeout(let ms):
            arm(\.handshake, in: ms) { $0.perform($0.machine.handshakeTimedOut(nowMs: $0.nowMs)) }
        case .acceptClient:
            acceptClient()
        case .connectUpstream(let attempt):
            connectUpstream(attempt: attempt)
        case .retryConnect(let attempt, let afterMs):
            arm(\.retry, in: afterMs) {
                $0.perform($0.machine.retryDue(attempt: attempt, nowMs: $0.nowMs))
            }
        case .dropUpstreamAttempt(let attempt):
            dropUpstreamAttempt(attempt)
        case .abandonUpstreamAttempt(let attempt, let withinMs):
            abandonUpstreamAttempt(attempt, withinMs: withinMs)
        case .switchUpstream(let watchForReadyMessage):
            switchUpstream(watchForReadyMessage: watchForReadyMessage)
        case .armGateDelay(let ms):
            arm(\.gate, in: ms) {
                $0.perform($0.machine.gateDelayElapsed(adaptedDelayMs: $0.environment.gateDelayMs, nowMs: $0.nowMs))
            }
        case .flushAndSplice:
            // Only the handshake needed these (and a replay, while one may come); the live upstream
            // channel is `upstreamChannel`.
            if !replayWindowOpen { handshake = nil }
            attempts = [:]
            clientHold?.release()
            clientHold = nil
            trimUpstreamFilter()
            startKeepaliveAndIdleCheck()
        case .sendGatePing:
            sendOwnPing(to: .upstream)
        case .openReplayWindow(let ms):
            openReplayWindow(ms: ms)
        case .closeReplayWindow:
            closeReplayWindow()
        case .replay(let number, let closeCode):
            replayUpstream(number: number, closeCode: closeCode)
        case .dropHeldFrames:
            clientHold?.discard()
        case .cancelTimers:
            timers.cancelHandshakeTimers()
        case .respondHTTP(let status, let reason):
            respondWithError(status: status, reason: reason)
        case .relayUpstreamResponse:
            relayUpstreamRejection()
        case .sendClose(let side, let code, let reason):
            sendClose(to: side, code: code, reason: reason)
        case .closeChannel(let side):
            close(side, mode: .all)
        case .passHalfClose(let side):
            close(side, mode: .output)
        case .armCloseLinger(let ms):
            arm(\.linger, in: ms) { $0.perform($0.machine.closeLingerExpired(nowMs: $0.nowMs)) }
        case .notePattern(let event):
            logEvent(event)
            if event.pattern == .upstreamErrorAfterReady && !adaptiveDelayTold {
                // The adaptive delay learns at once, so the sessions of the same burst still
                // waiting for their gate wait longer.
                adaptiveDelayTold = true
                environment.delayGateSessionEnded(machine.record)
            }
        case .logInvalidTransition(let transition):
            logger.error("invalid_session_transition", metadata: ["transition": "\(transition)"])
        }
    }

    /// Arms the session's timer in `slot` to run `body` in `ms` milliseconds. The handle is let go of
    /// when the timer fires, so that the session never cancels a task that already ran: NIO finds a
    /// task to cancel by a linear search of its event loop's scheduled tasks, which for a task no
    /// longer there is a search of all of them.
    func arm(
        _ slot: WritableKeyPath<SessionTimers, Scheduled<Void>?>,
        in ms: Int,
        _ body: @escaping (WebSocketSession) -> Void
    ) {
        timers[keyPath: slot] = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(ms))) { [self] in
            timers[keyPath: slot] = nil
            body(self)
        }
    }

    /// Writes a close frame the proxy made to `side` (masked towards the backend, RFC 6455 §5.3);
    /// nothing is relayed to that peer after it.
    private func sendClose(to side: SessionStateMachine.Side, code: UInt16?, reason: String) {
        guard let glue = glue(side) else { return }
        let frame = WebSocketFrameWriter.frame(
            opcode: .close,
            payload: code.map { WebSocketFrameWriter.closePayload(code: $0, reason: reason) } ?? [],
            maskingKey: side == .upstream ? UInt32.random(in: 0...UInt32.max, using: &random) : nil
        )
        glue.stopRelaying()
        glue.send(clientChannel.allocator.buffer(bytes: frame))
        if side == .client && !reason.isEmpty {
            logger.info(
                "session_closed_by_proxy",
                metadata: ["close_code": "\(code.map(String.init) ?? "-")", "reason": "\(reason)"]
            )
        }
    }

    /// Closes `side`'s connection (or its output) once what was written to it is out, within the
    /// close linger.
    private func close(_ side: SessionStateMachine.Side, mode: CloseMode) {
        if let glue = glue(side) {
            glue.close(mode: mode, afterFlushWithin: .milliseconds(Int64(settings.closeLinger)))
        } else if mode == .all {
            (side == .client ? clientChannel : upstreamChannel)?.close(promise: nil)
        }
    }

    func glue(_ side: SessionStateMachine.Side) -> GlueHandler? {
        side == .client ? clientGlue : upstreamGlue
    }

    /// The filter that takes the pongs of `side`'s peer to the proxy's pings out, if there is one.
    func filter(_ side: SessionStateMachine.Side) -> FrameFilterHandler? {
        side == .client ? clientFilter : upstreamFilter
    }

    /// Writes a ping of the proxy's own to `side` (masked towards the backend) with a random 8-byte
    /// payload, whose pong that side's filter takes out: the ping gate's, or a keepalive's.
    func sendOwnPing(to side: SessionStateMachine.Side) {
        guard let filter = filter(side), let glue = glue(side) else { return }
        let payload = withUnsafeBytes(of: random.next() as UInt64) { Array($0) }
        filter.awaitPong(payload: payload)
        let frame = WebSocketFrameWriter.frame(
            opcode: .ping,
            payload: payload,
            maskingKey: side == .upstream ? UInt32.random(in: 0...UInt32.max, using: &random) : nil
        )
        glue.send(clientChannel.allocator.buffer(bytes: frame))
    }

    func logEvent(_ event: RaceEvent) {
        logInfo(
            event.pattern.rawValue,
            fields: event.fields.map { ($0.key, $0.value) } + [("pattern", event.pattern.rawValue)]
        )
    }

    /// An `info` line with the session's id and `fields`; nothing is built when the level is higher
    /// (a proxy at `warning` formats no metadata per session).
    private func logInfo(_ message: String, fields: @autoclosure () -> [(String, String)]) {
        guard environment.logger.logLevel <= .info else { return }
        var metadata = Logger.Metadata()
        for (key, value) in fields() { metadata[key] = .string(value) }
        logger.info("\(message)", metadata: metadata)
    }

    // MARK: Shutdown and the end

    /// ReadyGate is shutting down: the client gets `1001 going away` (or, before its 101, a 503).
    func shutdown() {
        guard !finished else { return }
        perform(machine.shutdown(nowMs: nowMs))
    }

    /// The client's connection closed before its pipeline was switched (the entry handler's report).
    func clientInactiveBeforeUpgrade() {
        guard !finished else { return }
        perform(machine.inputClosed(.client, gone: true, nowMs: nowMs))
    }

    private func clientChannelClosed() {
        clientClosed = true
        if !machine.hasEnded { perform(machine.inputClosed(.client, gone: true, nowMs: nowMs)) }
        // Whatever is still open upstream has the close linger to finish; then it is closed.
        if openUpstreamChannels > 0 {
            // Cancelled when the session finishes first (as it usually does), so that a burst of
            // ending sessions does not leave its timers queued on the event loop for seconds.
            let linger = settings.closeLinger + settings.timing.handshakeTimeoutMs
            arm(\.upstreamLinger, in: linger) { session in
                session.upstreamChannel?.close(promise: nil)
                for future in session.attempts.values { future.whenSuccess { $0.close(promise: nil) } }
            }
        }
        finishIfClosed()
    }

    func upstreamChannelClosed() {
        openUpstreamChannels -= 1
        finishIfClosed()
    }

    /// Both sides are closed: the record is complete, counted and logged.
    private func finishIfClosed() {
        guard clientClosed, openUpstreamChannels == 0, !finished else { return }
        finished = true
        timers.cancelAll()
        machine.closed(nowMs: nowMs)
        var record = machine.record
        record.clientToUpstream = clientWatcher?.stats ?? WebSocketTrafficStats()
        // Added to what the backend connections a replay replaced carried.
        if let upstreamWatcher { record.upstreamToClient.add(upstreamWatcher.stats) }
        // Counted before the summary is logged: whoever reads the summary finds the metrics.
        environment.metrics.sessionEnded(record)
        if !adaptiveDelayTold { environment.delayGateSessionEnded(record) }
        logInfo("session_summary", fields: record.summaryFields)
        environment.onSessionEnd?(record)
        environment.sessions.remove(self)
        clientWatcher = nil
        clientHold = nil
        clientGlue = nil
        upstreamWatcher = nil
        upstreamFilter = nil
        clientFilter = nil
        upstreamGlue = nil
        upstreamChannel = nil
        attempts = [:]
        pendingUpgrade = nil
        responder = nil
    }
}

@available(*, unavailable)
extension WebSocketSession: Sendable {}

/// A session's handshake state: the client's request, and what the upstream upgrade produced.
/// A class, so that the session keeps a reference, not some 180 bytes of it inline, once it lets go
/// of it at READY.
final class HandshakeState {
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

    init(uri: String, headers: HTTPHeaderList, upgrade: ClientUpgradeRequest, upstreamKey: String) {
        self.uri = uri
        self.headers = headers
        self.upgrade = upgrade
        self.upstreamKey = upstreamKey
    }
}

extension WebSocketSession: ShutdownParticipant {
    /// A session runs on while the proxy drains: most end by themselves, the rest at the deadline.
    func drain() {}

    func endNow() { shutdown() }
}

extension WebSocketSession: SessionEvents {
    func closeFrame(from side: SessionStateMachine.Side, code: UInt16?) {
        perform(machine.closeFrame(from: side, code: code, nowMs: nowMs))
    }

    func protocolError(from side: SessionStateMachine.Side, _ error: WebSocketProtocolError) {
        let level: Logger.Level = machine.isHoldingClientFrames ? .warning : .notice
        logger.log(
            level: level,
            "\(side.rawValue)_protocol_error",
            metadata: ["error": "\(error)", "close_code": "\(error.closeCode)"]
        )
        perform(machine.protocolError(from: side, error, nowMs: nowMs))
    }

    func inputClosed(_ side: SessionStateMachine.Side, gone: Bool) {
        perform(machine.inputClosed(side, gone: gone, nowMs: nowMs))
    }

    func readyMessageSeen() {
        perform(machine.gatePassed(nowMs: nowMs))
    }

    func clientFramesHeld(frames: Int, bytes: Int) {
        perform(machine.clientFramesHeld(frames: frames, bytes: bytes, nowMs: nowMs))
    }

    func holdFull(bytes: Int) {
        perform(machine.holdFull(bytes: bytes))
    }

    func ownPongReceived(from side: SessionStateMachine.Side) {
        // The ping gate's pong (a keepalive's pong only clears the filter's wait).
        if side == .upstream { perform(machine.gatePongReceived(nowMs: nowMs)) }
        trimUpstreamFilter()
    }

    func backendDataStarted() {
        perform(machine.backendDataStarted(nowMs: nowMs))
    }
}
