import Logging
import NIOCore
import ReadyGateCore

/// Transparent replay: the session's side of what the ``FrameFilterHandler`` and the client glue's
/// copy make possible.
extension WebSocketSession {
    /// From READY on, until the window closes: copy what the client sends the backend, and keep
    /// the backend's close frames back.
    func openReplayWindow(ms: Int) {
        replayWindowOpen = true
        upstreamFilter?.keepCloseBack(true)
        clientGlue?.startRecording(limit: settings.maxBufferBytes) { [weak self] in
            guard let self else { return }
            logger.debug("replay_copy_overflow", metadata: ["bound": "\(settings.maxBufferBytes)"])
            perform(machine.replayWindowEnded(nowMs: nowMs))
        }
        arm(\.replayWindow, in: ms) { $0.perform($0.machine.replayWindowEnded(nowMs: $0.nowMs)) }
    }

    /// No replay can come any more: the copy goes, and the backend's stream flows unfiltered (a
    /// close frame kept back first).
    func closeReplayWindow() {
        replayWindowOpen = false
        timers.cancelReplayWindow()
        _ = clientGlue?.stopRecording()
        if !machine.isHoldingClientFrames { handshake = nil }
        upstreamFilter?.releaseKept()
        trimUpstreamFilter()
    }

    /// Takes the backend filter out once it has nothing left to do: no pong awaited, no replay
    /// window, READY passed, no keepalive.
    func trimUpstreamFilter() {
        guard let filter = upstreamFilter, !filter.awaitsPong, !replayWindowOpen, !machine.isHoldingClientFrames,
            settings.pingIntervalMs == 0
        else { return }
        upstreamFilter = nil
        filter.leave()
    }

    /// The backend failed right after READY: its connection is let go, and the client's frames it
    /// got are held again, first, for the next backend session (the machine connects it next).
    func replayUpstream(number: Int, closeCode: UInt16) {
        replayWindowOpen = false
        timers.cancelReplayWindow()
        let copy = clientGlue?.stopRecording() ?? clientChannel.allocator.buffer(capacity: 0)
        logger.info(
            "upstream_replay",
            metadata: [
                "replay": "\(number)", "close_code": "\(closeCode)", "replayed_bytes": "\(copy.readableBytes)",
                "ms_since_start": "\(nowMs)",
            ]
        )
        if let upstreamWatcher {
            machine.upstreamReplaced(traffic: upstreamWatcher.stats)
            upstreamWatcher.detach()
        }
        upstreamFilter?.detach()
        clientGlue?.detach()
        upstreamChannel?.close(promise: nil)
        upstreamWatcher = nil
        upstreamFilter = nil
        upstreamGlue = nil
        upstreamChannel = nil

        guard let clientGlue else { return }
        let hold = ClientHoldHandler(scanner: clientScanner(), maxHeldBytes: settings.maxBufferBytes, events: self)
        do {
            try hold.prefill(copy)
            try clientChannel.pipeline.syncOperations.addHandler(hold, position: .before(clientGlue))
            clientHold = hold
        } catch {
            // The copy is what the client sent and the watcher passed: it cannot be broken.
            logger.error("replay_failed", metadata: ["error": "\(error)"])
            clientChannel.close(promise: nil)
        }
    }
}
