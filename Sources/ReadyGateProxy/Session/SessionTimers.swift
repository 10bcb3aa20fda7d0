import NIOCore

/// A session's timers. The handshake, gate and retry timers matter until READY or the end; the
/// close linger until both connections are closed.
struct SessionTimers {
    var handshake: Scheduled<Void>?
    var gate: Scheduled<Void>?
    var retry: Scheduled<Void>?
    var linger: Scheduled<Void>?
    /// Replay: when the window for a replay closes.
    var replayWindow: Scheduled<Void>?
    /// The next keepalive round and the next idle check (spliced sessions, when configured).
    var keepalive: Scheduled<Void>?
    var idleCheck: Scheduled<Void>?

    /// Cancels the handshake, gate and retry timers. A cancelled task still holds its closure
    /// while referenced, so the handles go too.
    mutating func cancelHandshakeTimers() {
        handshake?.cancel()
        gate?.cancel()
        retry?.cancel()
        handshake = nil
        gate = nil
        retry = nil
    }

    mutating func cancelReplayWindow() {
        replayWindow?.cancel()
        replayWindow = nil
    }

    mutating func cancelAll() {
        cancelHandshakeTimers()
        cancelReplayWindow()
        keepalive?.cancel()
        keepalive = nil
        idleCheck?.cancel()
        idleCheck = nil
        linger?.cancel()
        linger = nil
    }
}
