import Logging
import NIOCore
import ReadyGateCore

/// Keepalive pings and the idle timeout of a spliced session (`READYGATE_PING_INTERVAL_MS`,
/// `READYGATE_WS_IDLE_TIMEOUT_MS`; both off by default, and then none of this runs).
///
/// Every interval the proxy pings each side, between two frames of the stream going to it, and a
/// ``FrameFilterHandler`` on that side takes the matching pong out, so the endpoints' own pings
/// and pongs pass untouched. A side whose ping is still unanswered at two rounds in a row is
/// unresponsive. The idle check looks at the bytes both watchers saw (less the proxy's own
/// pongs) every quarter of the timeout.
extension WebSocketSession {
    func startKeepaliveAndIdleCheck() {
        if settings.pingIntervalMs > 0 {
            atFrameBoundary(of: .client) { session in session.installClientFilter() }
            arm(\.keepalive, in: settings.pingIntervalMs) { $0.keepaliveRound() }
        }
        if settings.wsIdleTimeoutMs > 0 {
            idleMark = (activityBytes, nowMs)
            arm(\.idleCheck, in: idleCheckInterval) { $0.idleCheck() }
        }
    }

    /// The client's pongs are cut out from a frame boundary on: its filter starts there.
    private func installClientFilter() {
        guard clientFilter == nil, let clientGlue, machine.isSpliceOpen else { return }
        let filter = FrameFilterHandler(side: .client, scanner: clientScanner(), events: self)
        do {
            try clientChannel.pipeline.syncOperations.addHandler(filter, position: .before(clientGlue))
            clientFilter = filter
        } catch {
            logger.error("keepalive_filter_failed", metadata: ["error": "\(error)"])
        }
    }

    /// Runs `body` once the stream coming from `side`'s peer is between two frames: now, or after
    /// the read that gets it there.
    private func atFrameBoundary(of side: SessionStateMachine.Side, _ body: @escaping (WebSocketSession) -> Void) {
        guard let watcher = side == .client ? clientWatcher : upstreamWatcher else { return }
        if watcher.isAtFrameBoundary {
            body(self)
        } else {
            watcher.atFrameBoundary.append { [weak self] in if let self { body(self) } }
        }
    }

    private func keepaliveRound() {
        guard machine.isSpliceOpen else { return }
        arm(\.keepalive, in: settings.pingIntervalMs) { $0.keepaliveRound() }
        for side in [SessionStateMachine.Side.client, .upstream] {
            guard let filter = filter(side) else { continue }
            filter.unansweredRounds = filter.awaitsPong ? filter.unansweredRounds + 1 : 0
            if filter.unansweredRounds >= 2 {
                logger.notice(
                    "peer_unresponsive",
                    metadata: ["side": "\(side.rawValue)", "interval_ms": "\(settings.pingIntervalMs)"]
                )
                perform(machine.peerUnresponsive(side, nowMs: nowMs))
                return
            }
            // The ping goes into the stream towards `side`, which is what the other side's peer sends.
            atFrameBoundary(of: side == .client ? .upstream : .client) { session in
                if session.machine.isSpliceOpen { session.sendOwnPing(to: side) }
            }
        }
    }

    /// Bytes the peers sent, less the pongs to the proxy's own pings.
    private var activityBytes: UInt64 {
        let seen = (clientWatcher?.stats.bytes ?? 0) &+ (upstreamWatcher?.stats.bytes ?? 0)
        let own = UInt64((clientFilter?.ownPongBytes ?? 0) + (upstreamFilter?.ownPongBytes ?? 0))
        return seen &- own
    }

    private var idleCheckInterval: Int { max(10, settings.wsIdleTimeoutMs / 4) }

    private func idleCheck() {
        guard machine.isSpliceOpen else { return }
        let bytes = activityBytes
        if bytes != idleMark.bytes {
            idleMark = (bytes, nowMs)
        } else if nowMs - idleMark.atMs >= settings.wsIdleTimeoutMs {
            logger.info("idle_timeout", metadata: ["idle_ms": "\(nowMs - idleMark.atMs)"])
            perform(machine.idleTimedOut(nowMs: nowMs))
            return
        }
        arm(\.idleCheck, in: idleCheckInterval) { $0.idleCheck() }
    }
}
